"""The patient's account summary (what a list of invoices shows): the audit holds it to the
invoices and credit it summarizes, whatever moved them."""

from __future__ import annotations

from dataclasses import replace

from clinic_payments.domain.audit import audit_summary
from clinic_payments.domain.model import Credit, InvoiceStatus
from clinic_payments.domain.ports import PatientSummary

from tests.unit.fakes import make_invoice


def test_a_summary_that_matches_its_account_has_no_difference() -> None:
    open_one = make_invoice(5000)
    partly = replace(make_invoice(3000), amount_paid=1000, status=InvoiceStatus.PARTIALLY_PAID)
    paid = replace(make_invoice(2000), amount_paid=2000, status=InvoiceStatus.PAID)
    void = replace(make_invoice(900), status=InvoiceStatus.VOID)
    credits = {"usd": Credit(balance=700, currency="usd", version=3)}
    summary = PatientSummary(
        outstanding_count=2,
        outstanding_amount=7000,
        credits={"usd": 700},
        open_invoice_ids=frozenset({open_one.id, partly.id}),
    )

    assert audit_summary(summary, [open_one, partly, paid, void], credits) == []


def test_each_way_a_summary_can_drift_is_a_difference() -> None:
    invoices = [make_invoice(5000)]
    credits = {"usd": Credit(balance=700, currency="usd", version=3)}
    right = PatientSummary(
        outstanding_count=1,
        outstanding_amount=5000,
        credits={"usd": 700},
        open_invoice_ids=frozenset({invoices[0].id}),
    )
    assert audit_summary(right, invoices, credits) == []
    for wrong in (
        replace(right, open_invoice_ids=frozenset()),
        replace(right, outstanding_count=2),
        replace(right, outstanding_amount=4999),
        replace(right, credits={"usd": 600}),
        replace(right, credits={"usd": 700, "cad": 5}),
    ):
        assert [d.subject for d in audit_summary(wrong, invoices, credits)] == ["summary"]


def test_a_summary_not_established_yet_is_not_held_to_the_account() -> None:
    # Written by the moves since it first was (an account from before summaries were kept):
    # nothing reads it as the account's until a list of invoices establishes it.
    partial = PatientSummary(
        outstanding_count=0, outstanding_amount=0, credits={"usd": 700}, established=False
    )
    credits = {"usd": Credit(balance=2200, currency="usd", version=3)}
    assert audit_summary(partial, [make_invoice(100)], credits) == []
    assert audit_summary(None, [make_invoice(100)], credits) == []
