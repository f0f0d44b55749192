"""Refunds and disputes through the handlers and Stripe's events (real object shapes from
tests/fixtures/stripe/fixtures3.json, signed like Stripe signs them). The money invariant after
each."""

from __future__ import annotations

import copy
import secrets
from typing import Any

import pytest
from clinic_payments.wiring import container

from tests.integration.test_payments import deliver, portal_pays, start_card_payment
from tests.support import stripe_control
from tests.support.fixtures import stripe_resources

pytestmark = pytest.mark.integration

REFUNDS = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/refunds"
FIXTURES = stripe_resources()


def refund(clinic, payment_id, body, *, key=None, role="staff"):
    return clinic.call(
        "POST",
        REFUNDS,
        {"patient_id": "pat_a", "payment_id": payment_id},
        role=role,
        body=body,
        headers={"Idempotency-Key": key or secrets.token_hex(8)},
    )


def card_paid(clinic, *amounts):
    invoice = clinic.create_invoice("pat_a", *amounts)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"])
    return invoice, clinic.payment("pat_a", payment["id"]), intent["id"]


def charge_event(intent_id: str, refunds: list[dict[str, Any]] | None, event_type: str) -> dict:
    charge = copy.deepcopy(FIXTURES["charge"])
    charge.update(id=f"ch_{secrets.token_hex(6)}", payment_intent=intent_id, refunded=True)
    charge["refunds"] = {"object": "list", "data": refunds or [], "has_more": False}
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "type": event_type,
        "data": {"object": charge},
    }


def refund_object(
    refund_id: str, amount: int, intent_id: str, metadata: dict[str, str] | None = None
) -> dict[str, Any]:
    r = copy.deepcopy(FIXTURES["refund"])
    r.update(id=refund_id, amount=amount, payment_intent=intent_id, status="succeeded")
    if metadata is not None:
        r["metadata"] = metadata  # Stripe lists a refund with the metadata it was made with
    return r


def dispute_event(intent_id: str, dispute_id: str, amount: int, status: str, kind: str) -> dict:
    d = copy.deepcopy(FIXTURES["dispute"])
    d.update(id=dispute_id, payment_intent=intent_id, amount=amount, status=status)
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "type": f"charge.dispute.{kind}",
        "data": {"object": d},
    }


def test_a_full_card_refund_goes_through_stripe_and_reopens_the_invoice(clinic):
    invoice, payment, intent_id = card_paid(clinic, 4000)
    status, refunded = refund(clinic, payment["id"], {"reason": "requested_by_customer"})
    assert status == 201, refunded
    assert refunded["refunded_amount"] == 4000
    [record] = refunded["refunds"]
    assert record["from_invoices"] == [{"invoice_id": invoice["id"], "amount": 4000}]
    assert record["stripe_refund_id"].startswith("re_")
    stripe_refunds = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    assert [r.id for r in stripe_refunds] == [record["stripe_refund_id"]]
    reopened = clinic.invoice("pat_a", invoice["id"])
    assert (reopened["status"], reopened["balance_due"]) == ("open", 4000)
    assert reopened["payments"][-1]["amount"] == -4000
    clinic.check_invariant("pat_a")


def test_a_partial_refund_takes_credit_first_then_the_newest_invoice(clinic):
    older = clinic.create_invoice("pat_a", 1000)
    newer = clinic.create_invoice("pat_a", 2000)
    status, payment = clinic.pay("pat_a", {"method": "cash", "amount": 3600}, role="staff")
    assert (status, payment["credit_amount"]) == (201, 600)
    status, refunded = refund(clinic, payment["id"], {"amount": 1100, "reason": "overcharged"})
    assert status == 201, refunded
    [record] = refunded["refunds"]
    assert record["from_credit"] == 600
    assert record["from_invoices"] == [{"invoice_id": newer["id"], "amount": 500}]
    assert clinic.invoice("pat_a", newer["id"])["status"] == "partially_paid"
    assert clinic.invoice("pat_a", older["id"])["status"] == "paid"
    assert clinic.invoices("pat_a")["summary"]["available_credit"] == 0
    clinic.check_invariant("pat_a")


def test_a_cash_refund_is_recorded_without_calling_stripe(clinic):
    invoice = clinic.create_invoice("pat_a", 1500)
    _, payment = clinic.pay(
        "pat_a", {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}, role="staff"
    )
    before = stripe_control.count(clinic.stack.stripe_url, "POST /v1/refunds")
    status, refunded = refund(clinic, payment["id"], {"amount": 500, "reason": "cash back"})
    assert status == 201, refunded
    assert refunded["refunds"][0]["stripe_refund_id"] is None
    assert stripe_control.count(clinic.stack.stripe_url, "POST /v1/refunds") == before
    clinic.check_invariant("pat_a")


def test_a_refund_beyond_what_is_left_is_a_409(clinic):
    _, payment, _ = card_paid(clinic, 3000)
    status, body = refund(clinic, payment["id"], {"amount": 3001, "reason": "x"})
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert refund(clinic, payment["id"], {"amount": 2000, "reason": "x"})[0] == 201
    status, body = refund(clinic, payment["id"], {"amount": 1001, "reason": "x"})
    assert status == 409
    assert "1000" in body["error"]["message"]
    clinic.check_invariant("pat_a")


def test_a_replayed_refund_key_refunds_once(clinic):
    _, payment, _ = card_paid(clinic, 3000)
    before = stripe_control.count(clinic.stack.stripe_url, "POST /v1/refunds")
    first = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"}, key="refund-1")
    second = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"}, key="refund-1")
    assert first == second
    assert stripe_control.count(clinic.stack.stripe_url, "POST /v1/refunds") == before + 1
    assert clinic.payment("pat_a", payment["id"])["refunded_amount"] == 1000


def test_patients_cannot_refund_and_unpaid_payments_cannot_be_refunded(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    assert refund(clinic, payment["id"], {"reason": "x"}, role="patient")[0] == 403
    status, body = refund(clinic, payment["id"], {"reason": "x"})
    assert (status, body["error"]["code"]) == (409, "conflict")


def test_our_own_refund_reported_back_by_charge_refunded_counts_once(clinic):
    _, payment, intent_id = card_paid(clinic, 3000)
    _, refunded = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"})
    stripe_id = refunded["refunds"][0]["stripe_refund_id"]
    event = charge_event(intent_id, [refund_object(stripe_id, 1200, intent_id)], "charge.refunded")
    for _ in range(3):
        assert clinic.signed_webhook(event)[0] == 200
    assert clinic.payment("pat_a", payment["id"])["refunded_amount"] == 1200
    clinic.check_invariant("pat_a")


def test_a_dashboard_refund_arrives_by_webhook_and_is_recorded_once(clinic):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    made_at_stripe = clinic.stripe().v1.refunds.create(
        params={"payment_intent": intent_id, "amount": 700}
    )
    # Once listed in the event, once only in Stripe (fetched), delivered again and again.
    listed = charge_event(
        intent_id, [refund_object(made_at_stripe.id, 700, intent_id)], "charge.refunded"
    )
    unlisted = charge_event(intent_id, None, "charge.refunded")
    for event in (listed, unlisted, listed, unlisted):
        assert clinic.signed_webhook(event)[0] == 200
    after = clinic.payment("pat_a", payment["id"])
    assert after["refunded_amount"] == 700
    assert after["refunds"][0]["actor"] == {"sub": "stripe", "role": "staff"}
    assert clinic.invoice("pat_a", invoice["id"])["balance_due"] == 700
    clinic.check_invariant("pat_a")


def test_a_dispute_puts_money_at_risk_and_blocks_refunds_until_won(clinic):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    opened = dispute_event(intent_id, "dp_won_1", 3000, "needs_response", "created")
    assert clinic.signed_webhook(opened)[0] == 200
    assert clinic.payment("pat_a", payment["id"])["dispute"]["status"] == "needs_response"
    assert clinic.invoice("pat_a", invoice["id"])["amount_at_risk"] == 3000
    status, body = refund(clinic, payment["id"], {"reason": "x"})
    assert (status, body["error"]["code"]) == (409, "conflict")
    assert "disputed" in body["error"]["message"]
    won = dispute_event(intent_id, "dp_won_1", 3000, "won", "closed")
    for _ in range(2):
        assert clinic.signed_webhook(won)[0] == 200
    after = clinic.invoice("pat_a", invoice["id"])
    assert (after["status"], after["amount_at_risk"]) == ("paid", 0)
    assert refund(clinic, payment["id"], {"amount": 100, "reason": "x"})[0] == 201
    clinic.check_invariant("pat_a")


def test_a_lost_dispute_is_reversed_like_a_refund_once(clinic):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    clinic.signed_webhook(dispute_event(intent_id, "dp_lost_1", 3000, "needs_response", "created"))
    lost = dispute_event(intent_id, "dp_lost_1", 3000, "lost", "closed")
    for _ in range(3):
        assert clinic.signed_webhook(lost)[0] == 200
    after = clinic.payment("pat_a", payment["id"])
    assert after["refunded_amount"] == 3000
    assert after["refunds"][0]["reason"] == "dispute_lost"
    reopened = clinic.invoice("pat_a", invoice["id"])
    assert (reopened["status"], reopened["amount_at_risk"]) == ("open", 0)
    clinic.check_invariant("pat_a")


def test_a_lost_dispute_on_credit_spent_elsewhere_reopens_what_that_credit_paid(clinic):
    """The bank takes the whole charge back although its overpayment was applied to another
    invoice meanwhile: nothing can refuse it, so the other invoice reopens (the patient owes
    it again), and every account adds up."""
    first = clinic.create_invoice("pat_a", 1000)
    payment = start_card_payment(clinic, "pat_a", first["id"], amount=3000)
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"])
    assert clinic.payment("pat_a", payment["id"])["credit_amount"] == 2000
    second = clinic.create_invoice("pat_a", 5000)
    status, applied = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/apply-credit",
        {"patient_id": "pat_a", "invoice_id": second["id"]},
        role="staff",
        body={},
        headers={"Idempotency-Key": "apply-all"},
    )
    assert (status, applied["amount_paid"]) == (200, 2000), applied
    opened = dispute_event(intent["id"], "dp_spent", 3000, "needs_response", "created")
    assert clinic.signed_webhook(opened)[0] == 200
    lost = dispute_event(intent["id"], "dp_spent", 3000, "lost", "closed")
    for _ in range(2):
        assert clinic.signed_webhook(lost)[0] == 200
    after = clinic.payment("pat_a", payment["id"])
    assert after["refunded_amount"] == 3000
    assert clinic.invoice("pat_a", first["id"])["amount_paid"] == 0
    assert clinic.invoice("pat_a", second["id"])["amount_paid"] == 0
    clinic.check_invariant("pat_a")


def test_a_dispute_about_an_unknown_payment_is_ignored(clinic):
    event = dispute_event("pi_unknown", "dp_x", 100, "needs_response", "created")
    assert clinic.signed_webhook(event) == (200, {"received": True})


def test_a_refund_that_cannot_be_taken_back_is_refused(clinic):
    # 1000 paid, 400 of it credit, and that credit already applied to another invoice.
    first = clinic.create_invoice("pat_a", 600)
    _, payment = clinic.pay(
        "pat_a",
        {"method": "cash", "amount": 1000, "allocations": [{"invoice_id": first["id"]}]},
        role="staff",
    )
    other = clinic.create_invoice("pat_a", 400)
    c = container()
    from clinic_payments.domain.model import Caller, Role

    staff = Caller(sub="s", role=Role.STAFF, clinic_id=clinic.clinic_id)
    c.credit.apply(staff, clinic.clinic_id, "pat_a", other["id"], None, "cra_t1")
    status, body = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"})
    assert status == 409, body
    assert "600" in body["error"]["message"]
    assert refund(clinic, payment["id"], {"amount": 600, "reason": "x"})[0] == 201
    clinic.check_invariant("pat_a")


def test_stripe_failing_before_a_refund_keeps_it_reserved_and_the_retry_refunds_once(
    clinic, no_faults_left
):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/refunds",
        mode="error_before",
        status=500,
        times=3,  # the SDK retries twice with the same idempotency key
    )
    status, body = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"}, key="r-503")
    assert (status, body["error"]["code"]) == (503, "payment_provider_unavailable")
    # The outcome is unknown: what the refund takes back stays reserved, nothing more.
    [reserved] = clinic.payment("pat_a", payment["id"])["refunds"]
    assert (reserved["status"], reserved["stripe_refund_id"]) == ("reserved", None)
    assert clinic.invoice("pat_a", invoice["id"])["balance_due"] == 1000
    clinic.check_invariant("pat_a")
    stripe_control.clear_faults(clinic.stack.stripe_url)
    status, done = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"}, key="r-503")
    assert (status, done["refunded_amount"]) == (201, 1000)
    assert done["refunds"][0]["status"] == "succeeded"
    at_stripe = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    assert [r.amount for r in at_stripe] == [1000]
    clinic.check_invariant("pat_a")


def test_a_refund_whose_answer_was_lost_is_not_made_twice(clinic, no_faults_left):
    _, payment, intent_id = card_paid(clinic, 3000)
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/refunds",
        mode="error_after",  # Stripe refunds, then the answer is lost
        status=500,
        times=3,
    )
    status, _ = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"}, key="r-lost")
    assert status == 503
    stripe_control.clear_faults(clinic.stack.stripe_url)
    [made] = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    # Stripe's charge.refunded arrives before the client retries: it confirms our reservation
    # (its metadata names our refund), so the refund counts once.
    listed = refund_object(made.id, 1200, intent_id, made.metadata.to_dict())
    event = charge_event(intent_id, [listed], "charge.refunded")
    assert clinic.signed_webhook(event)[0] == 200
    status, done = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"}, key="r-lost")
    assert status == 201, done
    assert done["refunded_amount"] == 1200
    assert [r["stripe_refund_id"] for r in done["refunds"]] == [made.id]
    at_stripe = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    assert len(at_stripe) == 1
    clinic.check_invariant("pat_a")


def test_stripe_refusing_a_refund_releases_its_reservation_at_once(clinic, no_faults_left):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/refunds",
        mode="error_before",
        status=400,  # Stripe refuses the request: no refund exists there
    )
    status, body = refund(clinic, payment["id"], {"amount": 1000, "reason": "x"})
    assert (status, body["error"]["code"]) == (402, "payment_failed")
    [released] = clinic.payment("pat_a", payment["id"])["refunds"]
    assert (released["status"], released["stripe_refund_id"]) == ("canceled", None)
    assert released["returned_to_invoices"] == [{"invoice_id": invoice["id"], "amount": 1000}]
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    assert clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data == []
    assert refund(clinic, payment["id"], {"amount": 3000, "reason": "x"})[0] == 201
    clinic.check_invariant("pat_a")


def test_the_reconciler_finishes_a_reserved_refund_nobody_retried(clinic, no_faults_left):

    from clinic_payments.domain.reconciling import Reconciler

    from tests.integration.test_payments import _Later

    invoice, payment, intent_id = card_paid(clinic, 3000)
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/refunds",
        mode="error_before",
        status=500,
        times=3,
    )
    assert refund(clinic, payment["id"], {"amount": 1000, "reason": "x"})[0] == 503
    stripe_control.clear_faults(clinic.stack.stripe_url)
    c = container()
    reconciler = Reconciler(
        c.repository, c.payments, c.stripe, _Later(minutes=10), refunds=c.refunds
    )
    report = reconciler.run(limit=1000)
    assert report.refunds_confirmed >= 1, report
    [record] = clinic.payment("pat_a", payment["id"])["refunds"]
    assert record["status"] == "succeeded"
    [made] = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    assert (made.id, made.amount) == (record["stripe_refund_id"], 1000)
    assert clinic.invoice("pat_a", invoice["id"])["balance_due"] == 1000
    clinic.check_invariant("pat_a")
