"""Invoice rules: totals from per-line tax rounded half-up, limits, status, voiding."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from clinic_payments.domain.errors import ConflictError, ValidationError
from clinic_payments.domain.invoices.rules import (
    MAX_LINES,
    NewInvoice,
    NewLine,
    build_invoice,
    ensure_voidable,
    status_after,
)
from clinic_payments.domain.model import (
    Actor,
    ClinicSettings,
    Invoice,
    InvoiceStatus,
    Role,
    TaxRate,
)
from clinic_payments.domain.money import MAX_AMOUNT, line_tax
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

STAFF = Actor("staff-1", Role.STAFF)
NOW = "2026-03-02T09:00:00.000Z"
SETTINGS = ClinicSettings(
    clinic_id="clinic_a",
    currency="cad",
    tax_rates=[
        TaxRate("tax_hst", "HST", Decimal("13")),
        TaxRate("tax_odd", "Odd", Decimal("8.875")),
        TaxRate("tax_half", "Half", Decimal("0.5")),
    ],
)


def build(*lines: NewLine, **request: str | None) -> Invoice:
    return build_invoice(
        "clinic_a", "pat_1", NewInvoice(list(lines), **request), SETTINGS, 7, STAFF, NOW
    )


def test_an_invoice_without_tax_totals_its_lines() -> None:
    invoice = build(NewLine("Assessment", 1, 12000), NewLine("Follow-up", 2, 4550))
    assert [line.amount for line in invoice.lines] == [12000, 9100]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (21100, 0, 21100)
    assert invoice.amount_paid == 0
    assert invoice.balance_due == 21100


def test_tax_is_rounded_per_line_then_summed() -> None:
    # 8.875% of 100 is 8.875 -> 9 per line; on the sum (300 -> 26.625) it would be 27.
    invoice = build(*(NewLine(f"Session {i}", 1, 100, tax_rate_id="tax_odd") for i in range(3)))
    assert [line.tax_amount for line in invoice.lines] == [9, 9, 9]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (300, 27, 327)


def test_tax_rounds_half_up_at_exactly_one_half() -> None:
    # 0.5% of 100 is exactly 0.5: half-up gives 1 (banker's rounding would give 0).
    invoice = build(NewLine("Supply", 1, 100, tax_rate_id="tax_half"))
    assert invoice.lines[0].tax_amount == 1
    assert invoice.total == 101


def test_lines_with_and_without_tax_mix() -> None:
    invoice = build(NewLine("Taxed", 3, 3333, tax_rate_id="tax_hst"), NewLine("Exempt", 1, 5000))
    # 13% of 9999 = 1299.87 -> 1300
    assert [line.tax_amount for line in invoice.lines] == [1300, 0]
    assert (invoice.subtotal, invoice.tax, invoice.total) == (14999, 1300, 16299)


def test_a_new_invoice_is_open_numbered_and_records_who_created_it() -> None:
    invoice = build(NewLine("Assessment", 1, 100), due_date="2026-04-01", memo="Thanks")
    assert invoice.status is InvoiceStatus.OPEN
    assert invoice.number == "000007"
    assert invoice.id.startswith("inv_")
    assert invoice.created_by == STAFF
    assert invoice.created_at == NOW
    assert (invoice.due_date, invoice.memo) == ("2026-04-01", "Thanks")
    assert [line.id for line in invoice.lines] == ["line_1"]


def test_the_currency_defaults_to_the_clinics_and_is_lower_case() -> None:
    assert build(NewLine("A", 1, 100)).currency == "cad"
    assert build(NewLine("A", 1, 100), currency="USD").currency == "usd"


def test_an_unknown_tax_rate_is_a_validation_error_naming_the_line() -> None:
    with pytest.raises(ValidationError) as caught:
        build(
            NewLine("Fine", 1, 100, tax_rate_id="tax_hst"),
            NewLine("Bad", 1, 100, tax_rate_id="tax_nope"),
            NewLine("Also bad", 1, 100, tax_rate_id="tax_gone"),
        )
    assert caught.value.details == [
        {"field": "lines.1.tax_rate_id", "issue": "unknown tax rate"},
        {"field": "lines.2.tax_rate_id", "issue": "unknown tax rate"},
    ]


def test_an_invoice_without_lines_is_refused() -> None:
    with pytest.raises(ValidationError, match="1 to 100 lines"):
        build()


def test_an_invoice_of_more_than_100_lines_is_refused() -> None:
    with pytest.raises(ValidationError, match="1 to 100 lines"):
        build(*(NewLine(f"L{i}", 1, 1) for i in range(MAX_LINES + 1)))


def test_an_invoice_of_exactly_100_lines_is_accepted() -> None:
    invoice = build(*(NewLine(f"L{i}", 1, 1) for i in range(MAX_LINES)))
    assert invoice.total == MAX_LINES


def test_a_total_above_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="may not exceed"):
        build(NewLine("A", 1, MAX_AMOUNT), NewLine("B", 1, 1))


def test_tax_pushing_the_total_above_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError, match="may not exceed"):
        build(NewLine("A", 1, MAX_AMOUNT - 10, tax_rate_id="tax_hst"))


def test_a_total_of_exactly_the_limit_is_accepted() -> None:
    assert build(NewLine("A", 1, MAX_AMOUNT - 1), NewLine("B", 1, 1)).total == MAX_AMOUNT


@given(
    lines=st.lists(
        st.tuples(
            st.integers(1, 20),
            st.integers(1, 100_000),
            st.sampled_from([None, "tax_hst", "tax_odd", "tax_half"]),
        ),
        min_size=1,
        max_size=MAX_LINES,
    )
)
@settings(max_examples=200)
def test_the_total_is_the_sum_of_rounded_lines(
    lines: list[tuple[int, int, str | None]],
) -> None:
    invoice = build(*(NewLine("x", q, u, tax_rate_id=t) for q, u, t in lines))
    for line, (quantity, unit, tax_id) in zip(invoice.lines, lines, strict=True):
        assert line.amount == quantity * unit
        rate = SETTINGS.tax_rate(tax_id) if tax_id else None
        assert line.tax_amount == (line_tax(line.amount, rate.percent) if rate else 0)
    assert invoice.subtotal == sum(line.amount for line in invoice.lines)
    assert invoice.tax == sum(line.tax_amount for line in invoice.lines)
    assert invoice.total == invoice.subtotal + invoice.tax


# -- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "paid", "status"),
    [
        (1000, 0, InvoiceStatus.OPEN),
        (1000, 1, InvoiceStatus.PARTIALLY_PAID),
        (1000, 999, InvoiceStatus.PARTIALLY_PAID),
        (1000, 1000, InvoiceStatus.PAID),
    ],
)
def test_status_after_follows_the_amount_paid(total: int, paid: int, status: InvoiceStatus) -> None:
    assert status_after(total, paid) is status


def test_an_open_unpaid_invoice_is_voidable() -> None:
    ensure_voidable(build(NewLine("A", 1, 100)))  # raises nothing


def test_a_void_invoice_cannot_be_voided_again() -> None:
    invoice = replace(build(NewLine("A", 1, 100)), status=InvoiceStatus.VOID)
    with pytest.raises(ConflictError, match="already void"):
        ensure_voidable(invoice)


@pytest.mark.parametrize("paid", [1, 100])
def test_an_invoice_with_payments_cannot_be_voided(paid: int) -> None:
    invoice = build(NewLine("A", 1, 100))
    invoice = replace(invoice, amount_paid=paid, status=status_after(invoice.total, paid))
    with pytest.raises(ConflictError, match="payments on it"):
        ensure_voidable(invoice)


def test_a_void_invoice_has_nothing_due() -> None:
    invoice = replace(build(NewLine("A", 1, 100)), status=InvoiceStatus.VOID)
    assert invoice.balance_due == 0
    assert not invoice.is_payable
