"""Payments over HTTP: the local gateway, real JWTs, the Stripe fake and its signed webhooks."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import pytest

from local.tokens import LOCAL_ISSUER, generate_key
from tests.e2e.conftest import (
    POLL_TIMEOUT,
    HttpClinic,
    Reply,
    assert_envelope,
    http,
    new_patient,
    poll,
    sign,
)
from tests.support.portal import VISA, confirm_card

pytestmark = pytest.mark.e2e

SESSION_LINE = {
    "description": "Physiotherapy session",
    "service_date": "2026-11-20",
    "quantity": 1,
    "unit_amount": 12000,
    "tax_rate_id": "tax_hst",
}
SESSION_TOTAL = 13560  # 12000 + 13 % HST (1560)
UNAUTHORIZED = {"message": "Unauthorized"}


def intent_id_of(payment: dict[str, Any]) -> str:
    secret = payment["client_secret"]
    assert isinstance(secret, str), payment
    assert "_secret_" in secret, payment
    return secret.split("_secret_")[0]


def start_card_payment(clinic: HttpClinic, patient: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Staff invoices one taxed session; the patient starts paying it by card."""
    invoice = clinic.create_invoice(patient, [SESSION_LINE], due_date="2026-12-01")
    reply = clinic.pay(patient, {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]})
    assert reply.status == 201, reply
    return invoice, reply.body


def wait_paid(
    clinic: HttpClinic, patient: str, invoice_id: str, timeout: float = POLL_TIMEOUT
) -> dict[str, Any]:
    invoice = poll(
        lambda: clinic.invoice(patient, invoice_id), lambda inv: inv["status"] == "paid", timeout
    )
    assert invoice["status"] == "paid", f"the webhook did not settle the invoice: {invoice}"
    return dict(invoice)


def assert_settled_once(
    clinic: HttpClinic, patient: str, invoice_id: str, payment_id: str, total: int
) -> None:
    invoice = clinic.invoice(patient, invoice_id)
    assert invoice["status"] == "paid", invoice
    assert invoice["amount_paid"] == total, invoice
    assert invoice["balance_due"] == 0, invoice
    assert [(p["payment_id"], p["amount"]) for p in invoice["payments"]] == [(payment_id, total)], (
        invoice
    )
    payment = clinic.payment(patient, payment_id)
    assert payment["status"] == "succeeded", payment
    assert payment["allocations"] == [{"invoice_id": invoice_id, "amount": total}], payment
    assert payment["credit_amount"] == 0, payment
    summary = clinic.invoices(patient)["summary"]
    assert summary["outstanding_count"] == 0, summary
    assert summary["outstanding_amount"] == 0, summary
    assert summary["available_credit"] == 0, summary


# -- the README walk-through, a decline and 3-D Secure: tests/e2e/test_money_paths.py ------------


# -- 4. a webhook delivered many times -------------------------------------------------------


def test_succeeded_event_delivered_many_times_is_counted_once(http_clinic: HttpClinic) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice, payment = start_card_payment(clinic, patient)
    intent_id = intent_id_of(payment)
    code, confirmed = confirm_card(
        clinic.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"], VISA
    )
    assert code == 200, confirmed
    wait_paid(clinic, patient, invoice["id"])
    assert_settled_once(clinic, patient, invoice["id"], payment["id"], SESSION_TOTAL)

    intent = clinic.stripe_get(f"/v1/payment_intents/{intent_id}")
    assert intent["status"] == "succeeded", intent
    assert intent["metadata"]["payment_id"] == payment["id"], intent
    event = {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": "payment_intent.succeeded",
        "data": {"object": intent},
    }
    payload = json.dumps(event)
    signature = sign(payload, clinic.webhook_secret)
    for attempt in range(10):
        reply = clinic.post_webhook(payload, signature)
        assert reply.status == 200, (attempt, reply)
        assert reply.body == {"received": True}, (attempt, reply)
    # The same PaymentIntent under other event ids (a settlement replayed) changes nothing.
    for _ in range(3):
        other = json.dumps({**event, "id": f"evt_{secrets.token_hex(12)}"})
        reply = clinic.post_webhook(other, sign(other, clinic.webhook_secret))
        assert reply.status == 200, reply

    assert_settled_once(clinic, patient, invoice["id"], payment["id"], SESSION_TOTAL)


# -- 5. webhook signatures and unknown objects -----------------------------------------------


def test_webhook_rejects_forged_and_stale_signatures_and_unknown_accounts(
    http_clinic: HttpClinic,
) -> None:
    clinic = http_clinic
    intent = {
        "id": f"pi_{secrets.token_hex(12)}",
        "object": "payment_intent",
        "amount": 5000,
        "amount_received": 5000,
        "currency": "usd",
        "status": "succeeded",
        "metadata": {},
        "client_secret": None,
        "payment_method": None,
        "last_payment_error": None,
    }
    event = {
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "created": int(time.time()),
        "livemode": False,
        "type": "payment_intent.succeeded",
        "data": {"object": intent},
    }
    payload = json.dumps(event)

    forged = sign(payload, "whsec_forged_" + secrets.token_hex(8))
    assert_envelope(clinic.post_webhook(payload, forged), 400)
    stale = sign(payload, clinic.webhook_secret, timestamp=int(time.time()) - 600)
    assert_envelope(clinic.post_webhook(payload, stale), 400)
    assert_envelope(clinic.post_webhook(payload, None), 400)  # no signature at all
    tampered = payload.replace('"amount": 5000', '"amount": 1')
    valid = sign(payload, clinic.webhook_secret)
    assert_envelope(clinic.post_webhook(tampered, valid), 400)

    unknown_clinic = f"e2e_{secrets.token_hex(4)}"
    assert_envelope(clinic.post_webhook(payload, valid, clinic_id=unknown_clinic), 400)
    assert_envelope(clinic.post_webhook(payload, valid, account_id="nosuchaccount"), 400)

    # Signed correctly, about a PaymentIntent this API never created: acknowledged, ignored.
    reply = clinic.post_webhook(payload, valid)
    assert reply.status == 200, reply
    assert reply.body == {"received": True}, reply


# -- 6. tenancy over HTTP --------------------------------------------------------------------


def test_tenancy_tokens_clinics_and_patients_over_http(http_clinic: HttpClinic) -> None:
    clinic = http_clinic
    pat_1, pat_2 = new_patient(), new_patient()
    invoice = clinic.create_invoice(pat_2, [SESSION_LINE])
    path = clinic.patient_path(pat_1, "/invoices")
    other_path = clinic.patient_path(pat_2, "/invoices")

    def get(p: str, token: str | None) -> Reply:
        return clinic.request("GET", p, token=token)

    # API Gateway's JWT authorizer: the handler is never reached.
    assert_unauthorized(get(path, None))
    expired = clinic.token("patient", (pat_1,), ttl_seconds=60, now=int(time.time()) - 3600)
    assert_unauthorized(get(path, expired))
    assert_unauthorized(get(path, clinic.token("patient", (pat_1,), audience="another-api")))
    assert_unauthorized(get(path, clinic.token("patient", (pat_1,), issuer=LOCAL_ISSUER + "x")))
    assert_unauthorized(get(path, clinic.token("patient", (pat_1,), key=generate_key())))
    assert_unauthorized(get(path, "not-a-jwt"))
    raw = http("GET", clinic.api_url + path, headers={"authorization": "Basic dXNlcjpwYXNz"})
    assert_unauthorized(raw)

    # Another clinic's staff: 403 envelope, for reads and writes alike.
    foreign = clinic.token("staff", clinic_id=f"e2e_{secrets.token_hex(4)}", sub="other-staff")
    assert_envelope(get(path, foreign), 403, "forbidden")
    assert_envelope(get(other_path + f"/{invoice['id']}", foreign), 403, "forbidden")
    reply = clinic.request("POST", path, token=foreign, body={"lines": [SESSION_LINE]})
    assert_envelope(reply, 403, "forbidden")

    # A patient reading another patient's account learns nothing: 404.
    patient_1 = clinic.patient_token(pat_1)
    assert_envelope(get(other_path, patient_1), 404, "not_found")
    assert_envelope(get(other_path + f"/{invoice['id']}", patient_1), 404, "not_found")
    # ... and may not invoice, even themselves.
    reply = clinic.request("POST", path, token=patient_1, body={"lines": [SESSION_LINE]})
    assert_envelope(reply, 403, "forbidden")
    # Their own (empty) account is fine; the invoice of pat_2 is still only pat_2's.
    assert clinic.invoices(pat_1, token=patient_1)["items"] == []
    assert [i["id"] for i in clinic.invoices(pat_2)["items"]] == [invoice["id"]]


def assert_unauthorized(reply: Reply) -> None:
    assert reply.status == 401, reply
    assert reply.body == UNAUTHORIZED, reply


# -- 7. idempotency over HTTP ----------------------------------------------------------------


def intent_creations(clinic: HttpClinic) -> int:
    counts = http("GET", f"{clinic.stripe_url}/_compat/requests", check=False).body
    return int(counts.get("POST /v1/payment_intents", 0))


def test_idempotency_key_replays_the_first_response_and_charges_once(
    http_clinic: HttpClinic,
) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice = clinic.create_invoice(patient, [SESSION_LINE])
    body = {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    key = f"e2e-idem-{secrets.token_hex(8)}"
    before = intent_creations(clinic)

    first = clinic.pay(patient, body, key=key)
    assert first.status == 201, first
    second = clinic.pay(patient, body, key=key)
    assert second.status == first.status, second
    assert second.body == first.body, (first, second)
    assert second.raw == first.raw
    assert intent_creations(clinic) - before == 1

    other_body = {**body, "note": "a different request"}
    reply = clinic.pay(patient, other_body, key=key)
    assert_envelope(reply, 422, "idempotency_key_reused")

    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/payments"),
        body=body,
        token=clinic.patient_token(patient),
    )
    assert_envelope(reply, 400, "idempotency_key_required")
    assert intent_creations(clinic) - before == 1

    # Keys are scoped to the caller: the same key from the front desk is another request.
    staff = clinic.pay(patient, body, key=key, token=clinic.staff_token())
    assert staff.status == 201, staff
    assert staff.body["id"] != first.body["id"], (first, staff)
    assert intent_creations(clinic) - before == 2


def test_tenancy_is_checked_before_the_body_is_validated(http_clinic: HttpClinic) -> None:
    """Another clinic's token or a patient gets 403 whatever the body: the API says nothing
    about a route's body to someone who may not call it."""
    clinic, patient = http_clinic, new_patient()
    path = clinic.patient_path(patient, "/invoices")
    invalid = {"lines": [{**SESSION_LINE, "unit_amount": 1.5}]}
    foreign = clinic.token("staff", clinic_id=f"e2e_{secrets.token_hex(4)}", sub="other-staff")
    assert_envelope(clinic.request("POST", path, token=foreign, body=invalid), 403, "forbidden")
    patient_token = clinic.patient_token(patient)
    reply = clinic.request("POST", path, token=patient_token, body=invalid)
    assert_envelope(reply, 403, "forbidden")
