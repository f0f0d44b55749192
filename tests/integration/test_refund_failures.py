"""Refunds that fail after they succeeded, and webhook edge cases, through the handlers, moto
and the Stripe fake: Stripe's refund shape (tests/fixtures/stripe/fixtures3.json) and the
fake's own events for its failing-refund card 4000000000005126, signed as Stripe signs them."""

from __future__ import annotations

import copy
import json
import secrets
import time
from typing import Any

import pytest
from clinic_payments.wiring import container

from tests.integration.test_payments import deliver, portal_pays, start_card_payment
from tests.integration.test_refunds import charge_event, refund
from tests.support import stripe_control
from tests.support.fixtures import stripe_resources
from tests.support.portal import VISA

pytestmark = pytest.mark.integration

REFUND_FAILS_LATER = "4000000000005126"
REFUND = stripe_resources()["refund"]


def card_paid(clinic, amount, number=VISA):
    invoice = clinic.create_invoice("pat_a", amount)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    code, intent = portal_pays(clinic, payment, number)
    assert code == 200, intent
    deliver(clinic, intent["id"])
    return invoice, clinic.payment("pat_a", payment["id"]), intent["id"]


def refund_object(refund_id, amount, intent_id, status, **fields) -> dict[str, Any]:
    r = copy.deepcopy(REFUND)
    r.update(id=refund_id, amount=amount, payment_intent=intent_id, status=status, **fields)
    return r


def refund_event(obj: dict[str, Any], event_type: str) -> dict[str, Any]:
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {"object": obj},
    }


def failed(refund_id, amount, intent_id, **fields):
    return refund_object(
        refund_id,
        amount,
        intent_id,
        "failed",
        failure_reason="expired_or_canceled_card",
        **fields,
    )


def test_a_refund_that_fails_later_puts_the_invoice_back_once(clinic):
    invoice, payment, intent_id = card_paid(clinic, 4000)
    status, refunded = refund(clinic, payment["id"], {"reason": "requested_by_customer"})
    assert status == 201, refunded
    stripe_id = refunded["refunds"][0]["stripe_refund_id"]
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"

    obj = failed(stripe_id, 4000, intent_id)
    events = [refund_event(obj, t) for t in ("charge.refund.updated", "refund.failed")]
    for event in events + events:
        assert clinic.signed_webhook(event) == (200, {"received": True})

    after = clinic.payment("pat_a", payment["id"])
    [record] = after["refunds"]
    assert (record["status"], record["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert record["returned_to_invoices"] == [{"invoice_id": invoice["id"], "amount": 4000}]
    assert after["refunded_amount"] == 0
    again = clinic.invoice("pat_a", invoice["id"])
    assert (again["status"], again["amount_paid"]) == ("paid", 4000)
    assert [p["amount"] for p in again["payments"]] == [4000, -4000, 4000]
    clinic.check_invariant("pat_a")


def test_the_fakes_failing_refund_card_reports_the_failure_in_stripes_events(clinic):
    invoice, payment, _ = card_paid(clinic, 3000, REFUND_FAILS_LATER)
    status, refunded = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"})
    assert status == 201, refunded
    stripe_id = refunded["refunds"][0]["stripe_refund_id"]
    assert refunded["refunds"][0]["status"] == "succeeded"  # as Stripe first says

    deadline = time.monotonic() + 10
    at_stripe = clinic.stripe().v1.refunds.retrieve(stripe_id)
    while at_stripe.status != "failed" and time.monotonic() < deadline:
        time.sleep(0.2)
        at_stripe = clinic.stripe().v1.refunds.retrieve(stripe_id)
    assert (at_stripe.status, at_stripe.failure_reason) == ("failed", "expired_or_canceled_card")
    charge = clinic.stripe().v1.charges.retrieve(str(at_stripe.charge))
    assert charge.amount_refunded == 0  # the money is back in the balance

    # The fake's own events about this refund, oldest first, delivered as Stripe would.
    listed = [e.to_dict() for e in clinic.stripe().v1.events.list(params={"limit": 100}).data]
    about = [e for e in reversed(listed) if e["data"]["object"]["id"] in (stripe_id, charge.id)]
    assert [e["type"] for e in about] == [
        "charge.succeeded",  # the payment's own charge, before its refund
        "refund.created",
        "charge.refunded",
        "charge.refund.updated",
        "refund.updated",
        "refund.failed",
    ]
    for event in about:
        assert clinic.signed_webhook(event) == (200, {"received": True})
    after = clinic.payment("pat_a", payment["id"])
    assert [r["status"] for r in after["refunds"]] == ["failed"]
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")
    # The whole payment may be refunded again, at Stripe too.
    status, again = refund(clinic, payment["id"], {"reason": "x"})
    assert status == 201, again
    assert (again["refunded_amount"], again["refunds"][1]["amount"]) == (3000, 3000)
    clinic.check_invariant("pat_a")


def test_a_failure_that_arrives_before_our_confirmation_releases_the_reservation(
    clinic, no_faults_left
):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/refunds",
        mode="error_after",  # Stripe refunds, then the answer is lost
        status=500,
        times=3,
    )
    status, _ = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"}, key="r-early")
    assert status == 503
    stripe_control.clear_faults(clinic.stack.stripe_url)
    [made] = clinic.stripe().v1.refunds.list(params={"payment_intent": intent_id}).data
    obj = failed(made.id, 1200, intent_id, metadata=made.metadata.to_dict())
    assert clinic.signed_webhook(refund_event(obj, "refund.failed"))[0] == 200
    recorded = clinic.payment("pat_a", payment["id"])
    [record] = recorded["refunds"]
    taken = [{"invoice_id": invoice["id"], "amount": 1200}]
    assert (record["status"], record["stripe_refund_id"]) == ("failed", made.id)
    assert (record["from_invoices"], record["returned_to_invoices"]) == (taken, taken)
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 3000

    # The client's retry, and Stripe's late charge.refunded listing it succeeded, change nothing.
    status, done = refund(clinic, payment["id"], {"amount": 1200, "reason": "x"}, key="r-early")
    assert status == 201, done
    late = refund_object(made.id, 1200, intent_id, "succeeded")
    assert clinic.signed_webhook(charge_event(intent_id, [late], "charge.refunded"))[0] == 200
    after = clinic.payment("pat_a", payment["id"])
    assert after["refunds"] == done["refunds"] == recorded["refunds"]
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 3000
    clinic.check_invariant("pat_a")


def test_a_dashboard_refund_that_fails_is_given_back(clinic):
    invoice, payment, intent_id = card_paid(clinic, 3000)
    made = clinic.stripe().v1.refunds.create(params={"payment_intent": intent_id, "amount": 3000})
    listed = refund_object(made.id, 3000, intent_id, "succeeded")
    assert clinic.signed_webhook(charge_event(intent_id, [listed], "charge.refunded"))[0] == 200
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"
    # charge.refunded delivered again, now listing the refund failed.
    gone = failed(made.id, 3000, intent_id)
    assert clinic.signed_webhook(charge_event(intent_id, [gone], "charge.refunded"))[0] == 200
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    assert clinic.payment("pat_a", payment["id"])["refunds"][0]["actor"]["sub"] == "stripe"
    clinic.check_invariant("pat_a")


def test_a_failed_refund_whose_invoice_was_voided_goes_to_credit(clinic):
    invoice, payment, intent_id = card_paid(clinic, 2500)
    _, refunded = refund(clinic, payment["id"], {"reason": "x"})
    status, _ = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void",
        {"patient_id": "pat_a", "invoice_id": invoice["id"]},
        role="staff",
    )
    assert status == 200
    obj = failed(refunded["refunds"][0]["stripe_refund_id"], 2500, intent_id)
    assert clinic.signed_webhook(refund_event(obj, "charge.refund.updated"))[0] == 200
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "void"
    assert clinic.invoices("pat_a")["summary"]["available_credit"] == 2500
    record = clinic.payment("pat_a", payment["id"])["refunds"][0]
    assert (record["returned_to_credit"], record["returned_to_invoices"]) == (2500, [])
    clinic.check_invariant("pat_a")


# -- webhook edge cases ----------------------------------------------------------------------


def _unexpected() -> dict[str, dict[str, Any]]:
    base = refund_event(failed("re_odd", 100, "pi_odd"), "refund.failed")
    without_id = copy.deepcopy(base)
    del without_id["id"]
    shapes = {
        "data-is-a-number": {**base, "data": 5},
        "object-is-a-list": {**base, "data": {"object": []}},
        "amount-is-not-a-number": {**base, "data": {"object": {**base["data"]["object"]}}},
        "event-without-id": without_id,
    }
    shapes["amount-is-not-a-number"]["data"]["object"]["amount"] = "ten"
    return shapes


UNEXPECTED = _unexpected()


@pytest.mark.parametrize("name", UNEXPECTED)
def test_a_signed_event_of_an_unexpected_shape_is_200_recorded_and_counted(clinic, capsys, name):
    event = copy.deepcopy(UNEXPECTED[name])
    if "id" in event:
        event["id"] = f"evt_{secrets.token_hex(8)}"
    capsys.readouterr()
    assert clinic.signed_webhook(event) == (200, {"received": True})
    assert metric_outcomes(capsys.readouterr().out) == ["unexpected_shape"]
    # Redelivered (Stripe signs again, the body is the same): a duplicate.
    assert clinic.signed_webhook(event) == (200, {"received": True})
    assert metric_outcomes(capsys.readouterr().out) == ["duplicate"]


def test_an_event_of_an_unexpected_shape_is_marked_processed_with_its_type(clinic):
    event = {**UNEXPECTED["data-is-a-number"], "id": f"evt_{secrets.token_hex(8)}"}
    assert clinic.signed_webhook(event)[0] == 200
    repository = container().repository
    assert repository.event_processed(f"{clinic.clinic_id}#main", event["id"])


def metric_outcomes(stdout: str) -> list[str]:
    """The `outcome` of each WebhookEvents metric (CloudWatch embedded metric format)."""
    found = []
    for line in stdout.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        names = [m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        if "WebhookEvents" in names:
            assert blob["WebhookEvents"] == [1.0] or blob["WebhookEvents"] == 1.0
            found.append(blob["outcome"])
    return found


def test_each_handled_event_is_counted_by_outcome(clinic, capsys):
    _, _, intent_id = card_paid(clinic, 1000)
    capsys.readouterr()
    stranger = refund_event(failed("re_stranger", 100, "pi_unknown"), "refund.failed")
    assert clinic.signed_webhook(stranger)[0] == 200
    assert metric_outcomes(capsys.readouterr().out) == ["ignored"]
    deliver(clinic, intent_id)  # payment_intent.succeeded, then its charge.succeeded
    assert metric_outcomes(capsys.readouterr().out) == ["processed", "processed"]


@pytest.mark.parametrize(("skew", "status"), [(400, 400), (-400, 400), (120, 200)])
def test_a_timestamp_beyond_300s_either_way_is_refused(clinic, skew, status):
    event = refund_event(failed("re_time", 100, "pi_unknown"), "refund.failed")
    code, body = clinic.signed_webhook(event, timestamp=int(time.time()) + skew)
    assert code == status
    if status == 400:
        assert body["error"]["code"] == "invalid_signature"
