"""What one request costs in calls, on a warm container: the round-trip floor of each money
path, asserted (a change that adds a call fails here), and the same at 5 and at 300 invoices
of history. Counted through botocore and the Stripe fake (tests/support/calls.py); times are
`make bench`'s."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import pytest
from clinic_payments.wiring import container

from tests.integration.test_documents import pdf_of, raw_get
from tests.integration.test_payments import portal_pays, saved_card
from tests.support.calls import Calls, counting

pytestmark = pytest.mark.integration

PATIENT = "pat_a"
RECEIPT = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/receipt"
APPLY = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/apply-credit"
INVOICES = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices"
CREDIT = "/v1/clinics/{clinic_id}/patients/{patient_id}/credit"


def measured(clinic: Any, request: Callable[[], tuple[int, Any]]) -> tuple[Calls, Any]:
    with counting(clinic.stack.stripe_url) as calls:
        status, body = request()
    assert status in (200, 201), body
    return calls, body


def older_invoices(clinic: Any, count: int) -> None:
    """History: `count` paid invoices the requests below do not concern."""
    for i in range(count):
        invoice = clinic.create_invoice(PATIENT, 1000 + i)
        status, body = clinic.pay(
            PATIENT,
            {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]},
            role="staff",
        )
        assert status == 201, body


class Paths:
    """Each budgeted request once to warm the container, then measured."""

    def __init__(self, clinic: Any) -> None:
        self.clinic = clinic
        self.card = saved_card(clinic, PATIENT)  # the patient has a Stripe customer now

    def off_session(self) -> tuple[Calls, Any]:
        invoice = self.clinic.create_invoice(PATIENT, 4000)
        body = {
            "method": "card",
            "payment_method_id": self.card,
            "off_session": True,
            "allocations": [{"invoice_id": invoice["id"]}],
        }
        return measured(self.clinic, lambda: self.clinic.pay(PATIENT, body, role="staff"))

    def portal_start(self) -> tuple[Calls, Any]:
        invoice = self.clinic.create_invoice(PATIENT, 4100)
        body = {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
        return measured(self.clinic, lambda: self.clinic.pay(PATIENT, body))

    def cash(self) -> tuple[Calls, Any]:
        invoice = self.clinic.create_invoice(PATIENT, 4200)
        body = {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}
        return measured(self.clinic, lambda: self.clinic.pay(PATIENT, body, role="staff"))

    def webhook(self) -> tuple[Calls, Calls]:
        _, payment = self.portal_start()
        code, intent = portal_pays(self.clinic, payment)
        assert code == 200, intent
        event = self.clinic.intent_event(self.clinic.intent(intent["id"]))
        first, _ = measured(self.clinic, lambda: self.clinic.signed_webhook(event))
        again, _ = measured(self.clinic, lambda: self.clinic.signed_webhook(event))
        assert self.clinic.payment(PATIENT, payment["id"])["status"] == "succeeded"
        return first, again

    def list_invoices(self, **query: str) -> tuple[Calls, Any]:
        return measured(
            self.clinic,
            lambda: self.clinic.call("GET", INVOICES, {"patient_id": PATIENT}, query=query),
        )

    def receipt(self, payment_id: str) -> tuple[Calls, Any]:
        return measured(
            self.clinic,
            lambda: self.clinic.call(
                "GET", RECEIPT, {"patient_id": PATIENT, "payment_id": payment_id}
            ),
        )

    def receipt_pdf(self, payment_id: str) -> tuple[Calls, bytes]:
        params = {"patient_id": PATIENT, "payment_id": payment_id}
        with counting(self.clinic.stack.stripe_url) as calls:
            response = raw_get(self.clinic, RECEIPT, params, headers={"Accept": "application/pdf"})
        return calls, pdf_of(response)

    def apply_credit(self) -> tuple[Calls, Any]:
        # 900 of credit: the overflow of a cash payment
        small = self.clinic.create_invoice(PATIENT, 100)
        status, body = self.clinic.pay(
            PATIENT,
            {"method": "cash", "amount": 1000, "allocations": [{"invoice_id": small["id"]}]},
            role="staff",
        )
        assert status == 201, body
        invoice = self.clinic.create_invoice(PATIENT, 4300)
        return measured(
            self.clinic,
            lambda: self.clinic.call(
                "POST",
                APPLY,
                {"patient_id": PATIENT, "invoice_id": invoice["id"]},
                body={"amount": 900},
                headers={"Idempotency-Key": secrets.token_hex(8)},
            ),
        )


@pytest.fixture
def paths(clinic: Any) -> Paths:
    paths = Paths(clinic)
    # Warm: settings, accounts, secrets and the Stripe client are cached per container.
    paths.off_session()
    paths.portal_start()
    paths.cash()
    paths.list_invoices()
    paths.apply_credit()  # the patient has a credit item from now on
    return paths


def test_a_staff_charge_of_a_saved_card_is_one_stripe_call_and_four_dynamodb(paths):
    calls, payment = paths.off_session()
    assert payment["status"] == "succeeded"
    assert payment["payment_method"]["last4"] == "4242"  # from the intent, not asked again
    assert calls.stripe == {"POST /v1/payment_intents": 1}, calls.summary()
    # claim the key, read invoice+credit+customer, record the payment, settle (+answer)
    assert calls.dynamodb() == ["PutItem", "BatchGetItem", "PutItem", "TransactWriteItems"]
    assert calls.other_aws() == []
    paths.clinic.check_invariant(PATIENT)


def test_starting_a_portal_card_payment_is_one_stripe_call_and_four_dynamodb(paths):
    calls, payment = paths.portal_start()
    assert payment["status"] == "requires_payment_method"
    assert payment["client_secret"]
    assert calls.stripe == {"POST /v1/payment_intents": 1}, calls.summary()
    # claim the key, read, record the payment, link the intent (+answer)
    assert calls.dynamodb() == ["PutItem", "BatchGetItem", "PutItem", "TransactWriteItems"]


def test_a_cash_payment_is_three_dynamodb_calls(paths):
    calls, payment = paths.cash()
    assert payment["status"] == "succeeded"
    assert calls.stripe == {}
    # claim the key, read the invoice and the credit, write it settled (+answer)
    assert calls.dynamodb() == ["PutItem", "BatchGetItem", "TransactWriteItems"]
    paths.clinic.check_invariant(PATIENT)


def test_the_succeeded_webhook_is_two_dynamodb_calls_and_a_duplicate_one(paths):
    first, again = paths.webhook()
    assert first.stripe == {}
    assert again.stripe == {}
    # read payment+invoice+credit+the event's mark; settle and mark in one transaction
    assert first.dynamodb() == ["BatchGetItem", "TransactWriteItems"], first.summary()
    assert again.dynamodb() == ["BatchGetItem"], again.summary()
    paths.clinic.check_invariant(PATIENT)


def test_a_list_of_invoices_is_one_query_with_its_summary(paths):
    calls, listed = paths.list_invoices()
    assert calls.dynamodb() == ["Query"], calls.summary()
    open_ones = [i for i in paths.clinic.invoices(PATIENT, status="all", limit="100")["items"]]
    payable = [i for i in open_ones if i["status"] in ("open", "partially_paid")]
    assert listed["summary"]["outstanding_count"] == len(payable)
    assert listed["summary"]["outstanding_amount"] == sum(i["balance_due"] for i in payable)
    credit = paths.clinic.call(
        "GET", INVOICES.replace("invoices", "credit"), {"patient_id": PATIENT}
    )
    assert listed["summary"]["available_credit"] == credit[1]["balance"]
    # a filtered page is one Query as well; a later page reads the summary by its key
    calls, _ = measured(
        paths.clinic,
        lambda: paths.clinic.call(
            "GET", INVOICES, {"patient_id": PATIENT}, query={"status": "open"}
        ),
    )
    assert calls.dynamodb() == ["Query"], calls.summary()
    cursor = paths.clinic.invoices(PATIENT, limit="1")["next_cursor"]
    calls, _ = measured(
        paths.clinic,
        lambda: paths.clinic.call(
            "GET", INVOICES, {"patient_id": PATIENT}, query={"limit": "1", "cursor": cursor}
        ),
    )
    assert calls.dynamodb() == ["Query", "GetItem"], calls.summary()


def test_a_receipt_is_one_round_trip_as_json_and_as_pdf(paths):
    _, payment = paths.cash()
    calls, receipt = paths.receipt(payment["id"])
    assert receipt["paid"][0]["invoice_number"]
    assert calls.dynamodb() == ["BatchGetItem"], calls.summary()
    calls, _ = paths.receipt_pdf(payment["id"])
    assert calls.dynamodb() == ["BatchGetItem"], calls.summary()


def test_applying_credit_is_three_dynamodb_calls(paths):
    calls, invoice = paths.apply_credit()
    assert invoice["amount_paid"] == 900
    # claim the key, read invoice+credit, move the credit (+answer)
    assert calls.dynamodb() == ["PutItem", "BatchGetItem", "TransactWriteItems"]
    # what was answered is what the table holds
    assert paths.clinic.invoice(PATIENT, invoice["id"]) == invoice
    paths.clinic.check_invariant(PATIENT)


def test_the_cost_of_a_request_does_not_grow_with_the_patients_history(paths):
    def costs() -> dict[str, tuple[list[str], int]]:
        out: dict[str, tuple[list[str], int]] = {}
        for name, calls in [
            ("off_session", paths.off_session()[0]),
            ("portal_start", paths.portal_start()[0]),
            ("cash", paths.cash()[0]),
            ("apply_credit", paths.apply_credit()[0]),
            ("webhook", paths.webhook()[0]),
            ("list_invoices", paths.list_invoices(limit="5")[0]),  # a page of a longer list
        ]:
            out[name] = (calls.dynamodb(), calls.items_read)
        return out

    small = costs()
    older_invoices(paths.clinic, 60)
    assert costs() == small


def test_a_payment_without_allocations_reads_the_open_invoices_never_the_paid_ones(paths):
    older_invoices(paths.clinic, 20)
    listed = paths.clinic.invoices(PATIENT, status="open", limit="100")
    open_ids = {i["id"] for i in listed["items"]}
    assert open_ids  # left open by the portal payments above
    body = {"method": "cash", "amount": 1}
    calls, payment = measured(paths.clinic, lambda: paths.clinic.pay(PATIENT, body, role="staff"))
    # the summary names the open invoices (read with the credit), then those, by key
    assert calls.dynamodb() == ["PutItem", "BatchGetItem", "BatchGetItem", "TransactWriteItems"]
    assert calls.items_read == 2 + len(open_ids)
    oldest = min(listed["items"], key=lambda i: (i["created_at"], i["id"]))
    assert payment["allocations"] == [{"invoice_id": oldest["id"], "amount": 1}]
    paths.clinic.check_invariant(PATIENT)


def test_answers_recorded_with_the_write_replay_verbatim(paths):
    invoice = paths.clinic.create_invoice(PATIENT, 4400)
    body = {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}
    first = paths.clinic.pay(PATIENT, body, key="budget-replay", role="staff")
    with counting(paths.clinic.stack.stripe_url) as calls:
        again = paths.clinic.pay(PATIENT, body, key="budget-replay", role="staff")
    assert again == first
    assert calls.dynamodb() == ["PutItem", "GetItem"]  # the claim refused, the record read
    assert (
        container().repository.get_payment(paths.clinic.clinic_id, PATIENT, first[1]["id"])
        is not None
    )
