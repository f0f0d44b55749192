"""A pay-online request over HTTP: staff send it, the patient opens the link with no login and
pays by card in the portal; the Stripe fake's signed webhook settles the invoice."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import HttpClinic, assert_envelope, new_patient, poll
from tests.e2e.test_http_payments import SESSION_LINE, SESSION_TOTAL
from tests.support.mailbox import attachments, body_text, sent_emails
from tests.support.portal import VISA, confirm_card

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e


def enable_pay_requests(clinic: HttpClinic) -> None:
    reply = clinic.request(
        "PUT",
        f"/v1/clinics/{clinic.clinic_id}/settings",
        token=clinic.token("admin", sub="e2e-admin"),
        body={
            "clinic_name": "E2E Physiotherapy",
            "currency": "usd",
            "accept_portal_payments": True,
            "allow_credit_topups": True,
            "email_pay_online_requests": True,
            "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": "13"}],
            "locations": [{"id": "loc_main", "name": "Main Street"}],
        },
    )
    assert reply.status == 200, reply


def test_a_patient_pays_an_invoice_through_an_emailed_link(
    stack: Stack, http_clinic: HttpClinic, capfd: pytest.CaptureFixture[str]
) -> None:
    clinic, patient = http_clinic, new_patient()
    enable_pay_requests(clinic)
    invoice = clinic.create_invoice(patient, [SESSION_LINE], due_date="2026-12-01")
    to = f"{patient}-{secrets.token_hex(4)}@example.com"

    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/invoices/{invoice['id']}/payment-requests"),
        body={"email": to},
        token=clinic.staff_token(),
        headers={"Idempotency-Key": f"e2e-{secrets.token_hex(8)}"},
    )
    assert reply.status == 201, reply
    url = reply.body["url"]
    [request_email] = sent_emails(stack.moto_url, to)
    assert url in body_text(request_email)
    token = url.rsplit("/pay/", 1)[1]

    # The pay page: no Authorization header at all.
    reply = clinic.request("GET", f"/v1/pay/{token}")
    assert reply.status == 200, reply
    assert reply.body == {
        "clinic_name": "E2E Physiotherapy",
        "invoice_number": invoice["number"],
        "balance_due": SESSION_TOTAL,
        "currency": "usd",
        "due_date": "2026-12-01",
    }
    reply = clinic.request(
        "POST",
        f"/v1/pay/{token}/payments",
        body={"receipt_email": to},
        headers={"Idempotency-Key": f"e2e-{secrets.token_hex(8)}"},
    )
    assert reply.status == 201, reply
    started: dict[str, Any] = reply.body
    intent_id = started["client_secret"].split("_secret_")[0]
    code, confirmed = confirm_card(
        clinic.stripe_url, intent_id, started["client_secret"], started["publishable_key"], VISA
    )
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed

    # The Stripe fake posts the signed webhook to the gateway about a second later.
    paid = poll(lambda: clinic.invoice(patient, invoice["id"]), lambda i: i["status"] == "paid")
    assert (paid["status"], paid["amount_paid"], paid["balance_due"]) == (
        "paid",
        SESSION_TOTAL,
        0,
    ), paid
    assert [p["payment_id"] for p in paid["payments"]] == [started["payment_id"]]

    reply = clinic.request("GET", f"/v1/pay/{token}")
    error = assert_envelope(reply, 409, "invoice_not_payable")
    assert error["details"] == [{"field": "invoice.status", "issue": "paid"}]

    # The receipt was emailed once, with its PDF; and is there to download as a PDF.
    receipts = poll(
        lambda: [m for m in sent_emails(stack.moto_url, to) if "receipt" in m["Subject"]],
        lambda found: len(found) >= 1,
    )
    [receipt_email] = receipts
    [(_, content_type, pdf)] = attachments(receipt_email)
    assert (content_type, pdf[:5]) == ("application/pdf", b"%PDF-")
    reply = clinic.request(
        "GET",
        clinic.patient_path(patient, f"/payments/{started['payment_id']}/receipt"),
        token=clinic.patient_token(patient),
        headers={"accept": "application/pdf"},
    )
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "application/pdf"
    assert reply.raw.startswith(b"%PDF-")

    # A tampered link is a 404, and no token ever reached the gateway's access log.
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert_envelope(clinic.request("GET", f"/v1/pay/{tampered}"), 404, "not_found")
    log = capfd.readouterr().err
    assert "/v1/pay/***" in log
    assert token not in log
    assert tampered not in log
