"""Disputes over HTTP: a card payment settled by the Stripe fake's signed webhook, then a dispute
(Stripe's real dispute shape, signed) that is lost and reversed once. A staff refund through the
API is a money path: tests/e2e/test_money_paths.py, against the fake and real Stripe."""

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
