"""Pay-online requests and the signed pay links, through the handlers against moto (DynamoDB,
SES, Secrets Manager) and the Stripe fake."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clinic_payments.domain.paylinks import PayLink, sign_pay_link

from local.aws import RECEIPTS_FROM, client, pay_link_key_name
from tests.conftest import Api, make_clinic
from tests.support import stripe_control
from tests.support.mailbox import body_text, sent_emails
from tests.support.portal import VISA, confirm_card

pytestmark = pytest.mark.integration

REQUESTS = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/payment-requests"
VIEW = "/v1/pay/{token}"
PAY = "/v1/pay/{token}/payments"
SECRETS_PREFIX = "clinic-payments-test"  # tests/conftest.py's


@pytest.fixture
def clinic(stack: Any) -> Api:
    """A clinic that sends pay-online requests (the Juvonno setting)."""
    return make_clinic(stack, email_pay_online_requests=True)


@pytest.fixture
def ses_refuses(stack: Any) -> Iterator[None]:
    ses = client("ses", stack.moto_url)
    ses.delete_identity(Identity=RECEIPTS_FROM)
    try:
        yield
    finally:
        ses.verify_email_identity(EmailAddress=RECEIPTS_FROM)


def mailbox() -> str:
    return f"patient-{secrets.token_hex(6)}@example.com"


def request_link(
    clinic: Api,
    invoice_id: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    role: str = "staff",
    patient: str = "pat_a",
) -> tuple[int, Any]:
    return clinic.call(
        "POST",
        REQUESTS,
        {"patient_id": patient, "invoice_id": invoice_id},
        role=role,
        patient_ids=(patient,) if role == "patient" else (),
        body=body if body is not None else {"email": mailbox()},
        headers={"Idempotency-Key": key or secrets.token_hex(8)},
    )


def token_of(url: str) -> str:
    return url.rsplit("/pay/", 1)[1]


def new_link(clinic: Api, invoice_id: str, **body: Any) -> str:
    status, created = request_link(clinic, invoice_id, {"email": mailbox(), **body})
    assert status == 201, created
    return token_of(created["url"])


def view(clinic: Api, token: str) -> tuple[int, Any]:
    return clinic.call("GET", VIEW, {"token": token}, authenticated=False)


def pay(
    clinic: Api,
    token: str,
    body: Any = None,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    raw_body: str | None = None,
) -> tuple[int, Any]:
    return clinic.call(
        "POST",
        PAY,
        {"token": token},
        body=body,
        raw_body=raw_body,
        headers=headers
        if headers is not None
        else {"Idempotency-Key": key or secrets.token_hex(8)},
        authenticated=False,
    )


def signing_key(stack: Any) -> bytes:
    secret = client("secretsmanager", stack.moto_url).get_secret_value(
        SecretId=pay_link_key_name(SECRETS_PREFIX)
    )
    return str(secret["SecretString"]).encode()


def cash(clinic: Api, invoice_id: str, amount: int | None = None) -> None:
    allocation: dict[str, Any] = {"invoice_id": invoice_id}
    if amount is not None:
        allocation["amount"] = amount
    status, body = clinic.pay(
        "pat_a", {"method": "cash", "allocations": [allocation]}, role="staff"
    )
    assert status == 201, body


# -- sending a request ------------------------------------------------------------------------


def test_staff_email_a_link_and_the_patient_pays_the_invoice_with_it(clinic, stack):
    invoice = clinic.create_invoice("pat_a", 12000, 3000, due_date="2026-12-01")
    to = mailbox()
    status, created = request_link(clinic, invoice["id"], {"email": to, "expires_in_days": 7})
    assert status == 201, created
    assert created["invoice_id"] == invoice["id"]
    assert created["email"] == to
    assert created["created_by"] == {"sub": "test-staff", "role": "staff"}
    assert created["url"].startswith("https://portal.clinic-payments.test/pay/")
    expires = datetime.fromisoformat(created["expires_at"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    [message] = sent_emails(stack.moto_url, to)
    assert message["From"] == f"Test Clinic <{RECEIPTS_FROM}>"
    assert invoice["number"] in message["Subject"]
    text = body_text(message)
    assert created["url"] in text
    assert "USD 150.00, due 2026-12-01" in text

    # The patient opens the link: what is owed, and nothing else.
    token = token_of(created["url"])
    status, owed = view(clinic, token)
    assert status == 200, owed
    assert owed == {
        "clinic_name": "Test Clinic",
        "invoice_number": invoice["number"],
        "balance_due": 15000,
        "currency": "usd",
        "due_date": "2026-12-01",
    }

    # ... and pays it: a new card, confirmed with Stripe.js in the portal.
    status, started = pay(clinic, token, {"receipt_email": to})
    assert status == 201, started
    assert set(started) == {
        "payment_id",
        "status",
        "amount",
        "fee_amount",
        "charge_amount",
        "currency",
        "client_secret",
        "publishable_key",
    }
    assert (started["status"], started["amount"], started["currency"]) == (
        "requires_payment_method",
        15000,
        "usd",
    )
    assert started["publishable_key"] == clinic.publishable_key
    intent_id = started["client_secret"].split("_secret_")[0]
    code, intent = confirm_card(
        stack.stripe_url, intent_id, started["client_secret"], started["publishable_key"], VISA
    )
    assert (code, intent["status"]) == (200, "succeeded"), intent
    event = clinic.intent_event(clinic.intent(intent_id))
    assert clinic.signed_webhook(event) == (200, {"received": True})

    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["status"], paid["amount_paid"], paid["balance_due"]) == ("paid", 15000, 0)
    payment = clinic.payment("pat_a", started["payment_id"])
    assert payment["created_by"] == {"sub": "pay-link", "role": "patient"}
    assert payment["status"] == "succeeded"
    status, body = view(clinic, token)
    assert (status, body["error"]["code"]) == (409, "invoice_not_payable")
    assert body["error"]["details"] == [{"field": "invoice.status", "issue": "paid"}]
    # The receipt went to the address the patient gave on the pay page.
    receipts = [m for m in sent_emails(stack.moto_url, to) if "receipt" in m["Subject"]]
    assert len(receipts) == 1
    clinic.check_invariant("pat_a")


def test_requests_need_the_clinic_setting(stack):
    clinic = make_clinic(stack)  # email_pay_online_requests is off by default
    invoice = clinic.create_invoice("pat_a", 5000)
    to = mailbox()
    status, body = request_link(clinic, invoice["id"], {"email": to})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert "email_pay_online_requests" in body["error"]["message"]
    assert sent_emails(stack.moto_url, to) == []


def test_only_staff_send_requests(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    status, body = request_link(clinic, invoice["id"], role="patient")
    assert (status, body["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "not-an-email"},
        {"email": "a@example.com", "expires_in_days": 0},
        {"email": "a@example.com", "expires_in_days": 61},
        {"email": "a@example.com", "expires_in_days": "14"},
        {"email": "a@example.com", "expires_in_days": 1.5},
        {"email": "a@example.com", "amount": 100},
    ],
    ids=["no-email", "bad-email", "zero-days", "61-days", "string-days", "float-days", "extra"],
)
def test_a_request_body_is_validated(clinic, body):
    invoice = clinic.create_invoice("pat_a", 5000)
    status, answer = request_link(clinic, invoice["id"], body)
    assert (status, answer["error"]["code"]) == (422, "validation_error"), answer


def test_a_request_needs_an_idempotency_key_and_a_replay_sends_nothing_more(clinic, stack):
    invoice = clinic.create_invoice("pat_a", 5000)
    to = mailbox()
    status, body = clinic.call(
        "POST",
        REQUESTS,
        {"patient_id": "pat_a", "invoice_id": invoice["id"]},
        body={"email": to},
    )
    assert (status, body["error"]["code"]) == (400, "idempotency_key_required")
    first = request_link(clinic, invoice["id"], {"email": to}, key="send-1")
    again = request_link(clinic, invoice["id"], {"email": to}, key="send-1")
    assert first == again
    assert first[0] == 201
    assert len(sent_emails(stack.moto_url, to)) == 1


def test_no_request_for_a_paid_void_or_unknown_invoice(clinic):
    paid = clinic.create_invoice("pat_a", 2000)
    cash(clinic, paid["id"])
    status, body = request_link(clinic, paid["id"])
    assert (status, body["error"]["code"]) == (409, "invoice_not_payable")
    void = clinic.create_invoice("pat_a", 2000)
    status, _ = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void",
        {"patient_id": "pat_a", "invoice_id": void["id"]},
    )
    assert status == 200
    status, body = request_link(clinic, void["id"])
    assert (status, body["error"]["details"]) == (
        409,
        [{"field": "invoice.status", "issue": "void"}],
    )
    status, body = request_link(clinic, "inv_unknown")
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_a_refused_email_is_a_503_and_the_retry_sends_it(clinic, stack, ses_refuses):
    invoice = clinic.create_invoice("pat_a", 5000)
    to = mailbox()
    status, body = request_link(clinic, invoice["id"], {"email": to}, key="retry-me")
    assert (status, body["error"]["code"]) == (503, "email_unavailable")
    assert sent_emails(stack.moto_url, to) == []
    client("ses", stack.moto_url).verify_email_identity(EmailAddress=RECEIPTS_FROM)
    status, body = request_link(clinic, invoice["id"], {"email": to}, key="retry-me")
    assert status == 201, body
    assert len(sent_emails(stack.moto_url, to)) == 1


# -- using a link -----------------------------------------------------------------------------


def test_a_tampered_foreign_or_mangled_link_is_not_found(clinic, stack):
    invoice = clinic.create_invoice("pat_a", 5000)
    token = new_link(clinic, invoice["id"])
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    expires = int((datetime.now(UTC) + timedelta(days=3)).timestamp())
    foreign = sign_pay_link(
        PayLink(clinic.clinic_id, "pat_a", invoice["id"], expires), b"not-our-key" * 4
    )
    # Signed with our key, for an invoice that does not exist.
    unknown = sign_pay_link(
        PayLink(clinic.clinic_id, "pat_a", "inv_unknown", expires), signing_key(stack)
    )
    for bad in (flipped, token[:-3], foreign, "x" * 600, "not!a!token!at!all!!", unknown):
        status, body = view(clinic, bad)
        assert (status, body["error"]["code"]) == (404, "not_found"), bad
        status, body = pay(clinic, bad, {})
        assert (status, body["error"]["code"]) == (404, "not_found"), bad
    assert view(clinic, token)[0] == 200


def test_an_expired_link_is_410_gone(clinic, stack):
    invoice = clinic.create_invoice("pat_a", 5000)
    past = int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())
    token = sign_pay_link(
        PayLink(clinic.clinic_id, "pat_a", invoice["id"], past), signing_key(stack)
    )
    status, body = view(clinic, token)
    assert (status, body["error"]["code"]) == (410, "pay_link_expired")
    assert "expired" in body["error"]["message"]
    status, body = pay(clinic, token, {})
    assert (status, body["error"]["code"]) == (410, "pay_link_expired")


def test_a_link_to_a_void_invoice_says_so(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    token = new_link(clinic, invoice["id"])
    status, _ = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void",
        {"patient_id": "pat_a", "invoice_id": invoice["id"]},
    )
    assert status == 200
    for status, body in (view(clinic, token), pay(clinic, token, {})):
        assert (status, body["error"]["code"]) == (409, "invoice_not_payable")
        assert body["error"]["details"] == [{"field": "invoice.status", "issue": "void"}]


def test_a_link_pays_only_what_is_still_due(clinic):
    invoice = clinic.create_invoice("pat_a", 9000)
    token = new_link(clinic, invoice["id"])
    cash(clinic, invoice["id"], 4000)  # the front desk took part of it meanwhile
    assert view(clinic, token)[1]["balance_due"] == 5000
    status, started = pay(clinic, token)
    assert (status, started["amount"]) == (201, 5000)
    clinic.check_invariant("pat_a")


def test_paying_needs_an_idempotency_key_scoped_to_the_link(clinic, stack):
    first = clinic.create_invoice("pat_a", 3000)
    second = clinic.create_invoice("pat_a", 4000)
    token, other = new_link(clinic, first["id"]), new_link(clinic, second["id"])
    status, body = pay(clinic, token, {}, headers={})
    assert (status, body["error"]["code"]) == (400, "idempotency_key_required")
    before = stripe_control.count(stack.stripe_url)
    one = pay(clinic, token, {}, key="pay-1")
    again = pay(clinic, token, {}, key="pay-1")
    assert one == again
    assert one[0] == 201
    assert stripe_control.count(stack.stripe_url) == before + 1  # one PaymentIntent
    # The same key on another link is another request: keys are scoped by the token.
    status, elsewhere = pay(clinic, other, {}, key="pay-1")
    assert status == 201, elsewhere
    assert (elsewhere["payment_id"], elsewhere["amount"]) != (one[1]["payment_id"], 3000)
    status, body = pay(clinic, token, {"receipt_email": "x@example.com"}, key="pay-1")
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")


def test_the_payment_body_is_optional_and_validated(clinic):
    invoice = clinic.create_invoice("pat_a", 3000)
    token = new_link(clinic, invoice["id"])
    status, started = pay(clinic, token)  # no body at all
    assert (status, started["status"]) == (201, "requires_payment_method")
    for body in ({"amount": 1}, {"receipt_email": "nope"}, {"save_card": True}):
        status, answer = pay(clinic, token, body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), body
    status, answer = pay(
        clinic,
        token,
        raw_body="receipt_email=a@example.com",
        headers={"Idempotency-Key": "form", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, answer["error"]["code"]) == (415, "unsupported_media_type")


def test_a_clinic_without_portal_payments_refuses_links_too(stack):
    clinic = make_clinic(stack, email_pay_online_requests=True, accept_portal_payments=False)
    invoice = clinic.create_invoice("pat_a", 3000)
    token = new_link(clinic, invoice["id"])
    assert view(clinic, token)[0] == 200
    status, body = pay(clinic, token, {})
    assert (status, body["error"]["code"]) == (403, "forbidden")
