"""Refunds and disputes over HTTP: a card payment settled by the Stripe fake's signed webhook,
refunded by staff through the API (a real refund at the fake), then a dispute (Stripe's real
dispute shape, signed) that is lost and reversed once."""

from __future__ import annotations

import copy
import json
import secrets

import pytest

from tests.e2e.conftest import HttpClinic, new_patient, sign
from tests.e2e.test_http_payments import (
    SESSION_TOTAL,
    intent_id_of,
    start_card_payment,
    wait_paid,
)
from tests.support.fixtures import stripe_resources
from tests.support.portal import VISA, confirm_card

pytestmark = pytest.mark.e2e

DISPUTE = stripe_resources()["dispute"]


def paid_by_card(clinic: HttpClinic, patient: str) -> tuple[dict, dict]:
    invoice, payment = start_card_payment(clinic, patient)
    code, _ = confirm_card(
        clinic.stripe_url,
        intent_id_of(payment),
        payment["client_secret"],
        payment["publishable_key"],
        VISA,
    )
    assert code == 200
    wait_paid(clinic, patient, invoice["id"])
    return invoice, payment


def test_staff_refund_part_of_a_card_payment_over_http(http_clinic: HttpClinic) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice, payment = paid_by_card(clinic, patient)
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/payments/{payment['id']}/refunds"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": 3560, "reason": "requested_by_customer"},
    )
    assert reply.status == 201, reply
    assert reply.body["refunded_amount"] == 3560
    refund_id = reply.body["refunds"][0]["stripe_refund_id"]
    at_stripe = clinic.stripe_get(f"/v1/refunds/{refund_id}")
    assert (at_stripe["amount"], at_stripe["reason"]) == (3560, "requested_by_customer")
    reopened = clinic.invoice(patient, invoice["id"])
    assert (reopened["status"], reopened["balance_due"]) == ("partially_paid", 3560)
    # More than is left to refund: a 409 that says how much is left.
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/payments/{payment['id']}/refunds"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": SESSION_TOTAL, "reason": "requested_by_customer"},
    )
    assert reply.status == 409, reply
    assert str(SESSION_TOTAL - 3560) in reply.body["error"]["message"]


def test_a_lost_dispute_over_http_reopens_the_invoice_once(http_clinic: HttpClinic) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice, payment = paid_by_card(clinic, patient)

    def deliver(status: str, kind: str) -> None:
        dispute = copy.deepcopy(DISPUTE)
        dispute.update(
            id="dp_e2e_" + payment["id"][-8:],
            payment_intent=intent_id_of(payment),
            amount=SESSION_TOTAL,
            status=status,
        )
        event = {
            "id": f"evt_{secrets.token_hex(8)}",
            "object": "event",
            "type": f"charge.dispute.{kind}",
            "data": {"object": dispute},
        }
        payload = json.dumps(event)
        reply = clinic.post_webhook(payload, sign(payload, clinic.webhook_secret))
        assert reply.status == 200, reply

    deliver("needs_response", "created")
    assert clinic.invoice(patient, invoice["id"])["amount_at_risk"] == SESSION_TOTAL
    for _ in range(2):
        deliver("lost", "closed")
    after = clinic.payment(patient, payment["id"])
    assert (after["refunded_amount"], after["dispute"]["status"]) == (SESSION_TOTAL, "lost")
    reopened = clinic.invoice(patient, invoice["id"])
    assert (reopened["status"], reopened["amount_at_risk"]) == ("open", 0)
