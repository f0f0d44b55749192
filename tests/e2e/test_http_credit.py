"""Account credit over HTTP: a portal top-up with a new card settled by the signed webhook the
Stripe fake delivers, applied to an invoice, and the activity telling who did what."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.e2e.conftest import HttpClinic, new_patient, poll
from tests.support.portal import VISA, confirm_card

pytestmark = pytest.mark.e2e

CONSENT = {"agreed": True, "wording_version": "2026-11-01"}


def credit(clinic: HttpClinic, patient: str) -> Any:
    reply = clinic.request(
        "GET", clinic.patient_path(patient, "/credit"), token=clinic.patient_token(patient)
    )
    assert reply.status == 200, reply
    return reply.body


def test_a_portal_topup_settles_by_webhook_and_pays_an_invoice_later(http_clinic: HttpClinic):
    clinic, patient = http_clinic, new_patient()
    token = clinic.patient_token(patient)
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/credit/topups"),
        token=token,
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": 5000, "location_id": "loc_main", "consent": CONSENT},
    )
    assert reply.status == 201, reply
    payment = reply.body
    assert (payment["purpose"], payment["status"]) == ("credit_topup", "requires_payment_method")
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, confirmed = confirm_card(
        clinic.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"], VISA
    )
    assert (code, confirmed["status"]) == (200, "succeeded")

    view = poll(lambda: credit(clinic, patient), lambda v: v["balance"] == 5000)
    [entry] = view["activity"]
    assert (entry["type"], entry["location_id"]) == ("topup", "loc_main")
    assert entry["actor"]["role"] == "patient"  # collected by the patient, not by staff

    invoice = clinic.create_invoice(
        patient, [{"description": "Session", "quantity": 1, "unit_amount": 3000}]
    )
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/invoices/{invoice['id']}/apply-credit"),
        token=token,
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={},
    )
    assert reply.status == 200, reply
    assert (reply.body["status"], reply.body["balance_due"]) == ("paid", 0)
    view = credit(clinic, patient)
    assert view["balance"] == 2000
    assert [e["type"] for e in view["activity"]] == ["applied", "topup"]


def test_an_adjustment_below_zero_is_refused_over_http(http_clinic: HttpClinic):
    clinic, patient = http_clinic, new_patient()
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/credit/adjustments"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": -100, "reason": "correction"},
    )
    assert reply.status == 409, reply
    assert reply.body["error"]["code"] == "insufficient_credit"
    assert credit(clinic, patient)["balance"] == 0
