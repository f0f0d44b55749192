"""A card refund that fails after it succeeded, over HTTP: the portal pays with Stripe's
failing-refund test card 4000000000005126, staff refund it through the API, and the Stripe
fake's own webhooks (charge.refunded, refund.created, then charge.refund.updated, refund.updated
and refund.failed) put the money back on the invoice, once, with the money invariant true."""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import HttpClinic, new_patient, poll, sign
from tests.support.invariant import assert_money_invariant
from tests.support.portal import confirm_card

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e

REFUND_FAILS_LATER = "4000000000005126"
LINE = {"description": "Physiotherapy session", "quantity": 1, "unit_amount": 8000}


def paid_with(clinic: HttpClinic, patient: str, number: str) -> tuple[dict[str, Any], dict]:
    invoice = clinic.create_invoice(patient, [LINE])
    reply = clinic.pay(patient, {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]})
    assert reply.status == 201, reply
    payment = reply.body
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, intent = confirm_card(
        clinic.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"], number
    )
    assert code == 200, intent
    paid = poll(lambda: clinic.invoice(patient, invoice["id"]), lambda i: i["status"] == "paid")
    assert paid["status"] == "paid", f"the webhook did not settle the invoice: {paid}"
    return invoice, payment


def staff_refund(clinic: HttpClinic, patient: str, payment_id: str) -> Any:
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/payments/{payment_id}/refunds"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"reason": "requested_by_customer"},
    )
    assert reply.status == 201, reply
    return reply.body


def test_a_refund_that_fails_at_the_bank_puts_the_invoice_back_over_http(
    http_clinic: HttpClinic, stack: Stack
) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice, payment = paid_with(clinic, patient, REFUND_FAILS_LATER)
    refunded = staff_refund(clinic, patient, payment["id"])
    [record] = refunded["refunds"]
    assert (record["status"], refunded["refunded_amount"]) == ("succeeded", LINE["unit_amount"])
    assert clinic.invoice(patient, invoice["id"])["status"] == "open"

    after = poll(
        lambda: clinic.payment(patient, payment["id"]),
        lambda p: p["refunds"][0]["status"] == "failed",
    )
    [record] = after["refunds"]
    assert (record["status"], record["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert after["refunded_amount"] == 0
    again = poll(lambda: clinic.invoice(patient, invoice["id"]), lambda i: i["status"] == "paid")
    assert (again["status"], again["amount_paid"], again["balance_due"]) == ("paid", 8000, 0)
    at_stripe = clinic.stripe_get(f"/v1/refunds/{record['stripe_refund_id']}")
    assert at_stripe["status"] == "failed"
    # Every event about it has arrived (five, the failure's three included); none counted twice.
    time.sleep(2.5)
    assert clinic.payment(patient, payment["id"])["refunds"] == after["refunds"]
    assert [p["amount"] for p in clinic.invoice(patient, invoice["id"])["payments"]] == [
        8000,
        -8000,
        8000,
    ]
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


def test_a_refund_on_a_good_card_stays_refunded_over_http(
    http_clinic: HttpClinic, stack: Stack
) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice, payment = paid_with(clinic, patient, "4242424242424242")
    refunded = staff_refund(clinic, patient, payment["id"])
    time.sleep(2.5)  # the fake's refund.created and charge.refunded have been delivered
    after = clinic.payment(patient, payment["id"])
    assert after["refunds"] == refunded["refunds"]
    assert after["refunds"][0]["status"] == "succeeded"
    assert clinic.invoice(patient, invoice["id"])["status"] == "open"
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


def test_a_signed_event_of_an_unexpected_shape_is_acknowledged_over_http(
    http_clinic: HttpClinic,
) -> None:
    clinic = http_clinic
    payload = json.dumps({"id": f"evt_{secrets.token_hex(6)}", "type": "refund.failed", "data": 5})
    for _ in range(2):  # delivered, then redelivered: 200 both times, never a 500
        reply = clinic.post_webhook(payload, sign(payload, clinic.webhook_secret))
        assert reply.status == 200, reply
    future = sign(payload, clinic.webhook_secret, timestamp=int(time.time()) + 400)
    reply = clinic.post_webhook(payload, future)
    assert reply.status == 400, reply
    assert reply.body["error"]["code"] == "invalid_signature"
