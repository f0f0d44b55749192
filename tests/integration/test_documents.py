"""Receipts, invoice PDFs and receipt emails through the handlers, against moto (DynamoDB, SES,
Secrets Manager) and the Stripe fake."""

from __future__ import annotations

import base64
import io
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any

import pypdf
import pytest
from clinic_payments.domain.reconciling import Reconciler
from clinic_payments.domain.timeutil import to_iso
from clinic_payments.wiring import RuntimeSettings, build_container, container

from local.aws import RECEIPTS_FROM, client
from local.template import routes
from tests.integration.test_payments import deliver, portal_pays, saved_card, start_card_payment
from tests.support.apigw import claims_for, context, http_event
from tests.support.mailbox import attachments, body_text, sent_emails

pytestmark = pytest.mark.integration

RECEIPT = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/receipt"
INVOICE_PDF = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/pdf"
MODULES = {(r.method, r.path): r.module for r in routes()}


# -- helpers ------------------------------------------------------------------------------------


def raw_get(
    clinic: Any,
    route: str,
    params: dict[str, str],
    *,
    role: str = "patient",
    patient_ids: tuple[str, ...] = ("pat_a",),
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Lambda's own response (a PDF stays base64, as API Gateway receives it)."""
    event = http_event(
        "GET",
        route,
        {"clinic_id": clinic.clinic_id, **params},
        claims=claims_for(role, clinic.clinic_id, patient_ids if role == "patient" else ()),
        headers=headers,
        query=query,
    )
    response: dict[str, Any] = import_module(MODULES[("GET", route)]).lambda_handler(
        event, context()
    )
    return response


def pdf_of(response: dict[str, Any]) -> bytes:
    assert response["statusCode"] == 200, response
    assert response["headers"]["Content-Type"] == "application/pdf"
    assert response["isBase64Encoded"] is True
    data = base64.b64decode(response["body"])
    assert data.startswith(b"%PDF-")
    return data


def pdf_text(data: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages)


def receipt(clinic: Any, payment_id: str, patient: str = "pat_a") -> tuple[int, Any]:
    return clinic.call(
        "GET",
        RECEIPT,
        {"patient_id": patient, "payment_id": payment_id},
        role="patient",
        patient_ids=(patient,),
    )


def mailbox() -> str:
    """A fresh recipient, so a test counts only its own emails in moto's shared SES."""
    return f"patient-{secrets.token_hex(6)}@example.com"


def paid_in_portal(clinic: Any, payment: dict[str, Any]) -> dict[str, Any]:
    code, intent = portal_pays(clinic, payment)
    assert (code, intent["status"]) == (200, "succeeded"), intent
    return dict(intent)


def delivered(clinic: Any, intent_id: str, times: int = 1) -> None:
    assert deliver(clinic, intent_id, times=times) == [(200, {"received": True})] * times


def cash(clinic: Any, patient: str, body: dict[str, Any]) -> dict[str, Any]:
    status, payment = clinic.pay(patient, {"method": "cash", **body}, role="staff")
    assert status == 201, payment
    assert payment["status"] == "succeeded", payment
    return dict(payment)


class _Later:
    """A clock some minutes ahead, so what just happened counts as left behind."""

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes

    def now(self) -> str:
        return to_iso(datetime.now(UTC) + timedelta(minutes=self.minutes))


def reconcile() -> Any:
    c = container()
    return Reconciler(
        c.repository, c.payments, c.stripe, _Later(minutes=10), receipts=c.receipts
    ).run(limit=1000)


@pytest.fixture
def ses_refuses(stack: Any) -> Iterator[None]:
    """SES refuses our sender for the test (as it does an unverified identity), then accepts it
    again."""
    ses = client("ses", stack.moto_url)
    ses.delete_identity(Identity=RECEIPTS_FROM)
    try:
        yield
    finally:
        ses.verify_email_identity(EmailAddress=RECEIPTS_FROM)


# -- receipts as JSON ---------------------------------------------------------------------------


def test_a_card_payment_has_its_receipt_once_it_has_succeeded(clinic):
    invoice = clinic.create_invoice("pat_a", 12000, 3000)
    payment = start_card_payment(
        clinic, "pat_a", invoice["id"], payer="copay", reference="1.1.2026 1000 CC"
    )
    status, body = receipt(clinic, payment["id"])
    assert (status, body["error"]["code"]) == (409, "payment_not_succeeded")
    assert "requires_payment_method" in body["error"]["message"]

    intent = paid_in_portal(clinic, payment)
    delivered(clinic, intent["id"])
    settled = clinic.payment("pat_a", payment["id"])
    status, body = receipt(clinic, payment["id"])
    assert status == 200, body
    assert (
        body
        == {
            "payment_id": payment["id"],
            "confirmation_number": settled["confirmation_number"],
            "clinic_name": "Test Clinic",
            "clinic_profile": {  # a clinic that never gave its profile
                "legal_name": "",
                "address": "",
                "phone": "",
                "email": "",
                "tax_registration_number": "",
            },
            "date_posted": settled["succeeded_at"][:10],  # a clinic in UTC
            "succeeded_at": settled["succeeded_at"],
            "purpose": "invoice",
            "amount": 15000,
            "fee_amount": 0,
            "total_charged": 15000,
            "currency": "usd",
            "method": "card",
            "card": {"brand": "visa", "last4": "4242", "wallet": None},
            "paid": [
                {"invoice_id": invoice["id"], "invoice_number": invoice["number"], "amount": 15000}
            ],
            "credit_added": 0,
            "credit_balance": 0,
            "payer": "copay",
            "reference": "1.1.2026 1000 CC",
            "location_id": None,
            "location_name": None,
            "refunds": [],
        }
    )
    clinic.check_invariant("pat_a")


def test_a_cash_receipt_shows_the_credit_added_and_the_credit_left(clinic):
    first = clinic.create_invoice("pat_a", 3000)
    second = clinic.create_invoice("pat_a", 2000)
    earlier = cash(  # pays the first, 500 to credit
        clinic, "pat_a", {"amount": 3500, "allocations": [{"invoice_id": first["id"]}]}
    )
    payment = cash(
        clinic,
        "pat_a",
        {
            "amount": 4000,
            "allocations": [{"invoice_id": second["id"]}],
            "location_id": "loc_main",
        },
    )
    status, body = receipt(clinic, payment["id"])
    assert status == 200, body
    assert body["method"] == "cash"
    assert body["card"] is None
    assert body["paid"] == [
        {"invoice_id": second["id"], "invoice_number": second["number"], "amount": 2000}
    ]
    assert (body["amount"], body["total_charged"], body["credit_added"]) == (4000, 4000, 2000)
    assert body["credit_balance"] == 2500  # the credit now, both payments' overflow
    assert body["location_name"] == "Main Street"
    status, body = receipt(clinic, earlier["id"])
    assert body["paid"][0]["invoice_id"] == first["id"]
    clinic.check_invariant("pat_a")


def test_a_receipt_shows_the_credit_balance_as_it_was_right_after_its_payment(clinic):
    """A receipt is a snapshot: credit spent or added later does not change what an earlier
    receipt says was left (it used to read the balance of the moment it was asked for)."""
    first = clinic.create_invoice("pat_a", 3000)
    earlier = cash(  # pays the first, 500 to credit
        clinic, "pat_a", {"amount": 3500, "allocations": [{"invoice_id": first["id"]}]}
    )
    second = clinic.create_invoice("pat_a", 2000)
    later = cash(  # pays the second, 2000 more to credit: 2500 in all
        clinic, "pat_a", {"amount": 4000, "allocations": [{"invoice_id": second["id"]}]}
    )
    third = clinic.create_invoice("pat_a", 2500)
    status, body = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/apply-credit",
        {"patient_id": "pat_a", "invoice_id": third["id"]},
        body={"amount": 2500},
        headers={"Idempotency-Key": "spend-it-all"},
    )
    assert status == 200, body  # every credit spent: the balance now is 0

    status, body = receipt(clinic, earlier["id"])
    assert (status, body["credit_added"], body["credit_balance"]) == (200, 500, 500), body
    status, body = receipt(clinic, later["id"])
    assert (status, body["credit_added"], body["credit_balance"]) == (200, 2000, 2500), body
    pdf = pdf_text(
        pdf_of(
            raw_get(
                clinic,
                RECEIPT,
                {"patient_id": "pat_a", "payment_id": later["id"]},
                headers={"Accept": "application/pdf"},
            )
        )
    )
    assert "25.00" in pdf
    clinic.check_invariant("pat_a")


def test_a_check_payment_has_a_receipt_with_its_reference(clinic):
    invoice = clinic.create_invoice("pat_a", 8000)
    status, payment = clinic.pay(
        "pat_a",
        {
            "method": "check",
            "allocations": [{"invoice_id": invoice["id"]}],
            "reference": "Check #1042",
            "payer": "deductible",
        },
        role="staff",
    )
    assert status == 201, payment
    status, body = receipt(clinic, payment["id"])
    assert status == 200, body
    assert (body["method"], body["reference"], body["payer"]) == (
        "check",
        "Check #1042",
        "deductible",
    )
    assert body["paid"][0]["amount"] == 8000
    clinic.check_invariant("pat_a")


def test_a_receipt_is_found_only_by_its_patient_and_clinic(clinic, stack):
    payment = cash(clinic, "pat_a", {"amount": 1000})
    status, _ = clinic.call(
        "GET",
        RECEIPT,
        {"patient_id": "pat_a", "payment_id": payment["id"]},
        role="patient",
        patient_ids=("pat_b",),
    )
    assert status == 404
    status, _ = receipt(clinic, "pay_unknown")
    assert status == 404
    status, _ = clinic.call(
        "GET",
        RECEIPT,
        {"patient_id": "pat_a", "payment_id": payment["id"]},
        claims=claims_for("staff", "another_clinic"),
    )
    assert status == 403


# -- PDFs ---------------------------------------------------------------------------------------


def test_a_receipt_is_a_pdf_when_asked_by_accept_or_by_format(clinic):
    payment = cash(clinic, "pat_a", {"amount": 2500})
    params = {"patient_id": "pat_a", "payment_id": payment["id"]}
    by_accept = pdf_of(raw_get(clinic, RECEIPT, params, headers={"Accept": "application/pdf"}))
    by_query = pdf_of(raw_get(clinic, RECEIPT, params, query={"format": "pdf"}))
    assert by_accept == by_query
    confirmation = clinic.payment("pat_a", payment["id"])["confirmation_number"]
    text = pdf_text(by_accept)
    for expected in ("Payment receipt", "Test Clinic", confirmation, "USD 25.00", "Cash"):
        assert expected in text, text
    response = raw_get(clinic, RECEIPT, params, query={"format": "pdf"})
    assert response["headers"]["Content-Disposition"] == (
        f'inline; filename="receipt-{confirmation}.pdf"'
    )
    # ?format wins over Accept; a browser's Accept gets JSON.
    as_json = raw_get(
        clinic, RECEIPT, params, headers={"Accept": "application/pdf"}, query={"format": "json"}
    )
    assert as_json["headers"]["Content-Type"] == "application/json"
    browser = raw_get(clinic, RECEIPT, params, headers={"Accept": "text/html,*/*;q=0.8"})
    assert browser["headers"]["Content-Type"] == "application/json"
    bad = raw_get(clinic, RECEIPT, params, query={"format": "docx"})
    assert bad["statusCode"] == 422


PROFILE = {
    "legal_name": "Test Clinic Professional Corporation",
    "address": "120 King St W\nToronto ON  M5H 1J9",
    "phone": "416-555-0142",
    "email": "billing@clinic.example",
    "tax_registration_number": "123456789 RT0001",
}


def with_profile(clinic: Any) -> None:
    settings = clinic.call("GET", "/v1/clinics/{clinic_id}/settings", role="admin")[1]
    body = {k: v for k, v in settings.items() if k != "clinic_id"}
    status, saved = clinic.call(
        "PUT", "/v1/clinics/{clinic_id}/settings", role="admin", body={**body, "profile": PROFILE}
    )
    assert (status, saved["profile"]) == (200, PROFILE), saved


def test_the_clinics_profile_is_on_its_receipts_and_invoices(clinic):
    with_profile(clinic)
    invoice = clinic.create_invoice(
        "pat_a", 2500, bill_to={"name": "Jordan Lee (parent)", "address": "9 Elm St\nOakville ON"}
    )
    assert invoice["bill_to"] == {"name": "Jordan Lee (parent)", "address": "9 Elm St\nOakville ON"}
    assert clinic.invoice("pat_a", invoice["id"])["bill_to"] == invoice["bill_to"]
    payment = cash(clinic, "pat_a", {"allocations": [{"invoice_id": invoice["id"]}]})

    status, body = receipt(clinic, payment["id"])
    assert (status, body["clinic_profile"]) == (200, PROFILE), body
    params = {"patient_id": "pat_a", "payment_id": payment["id"]}
    text = pdf_text(pdf_of(raw_get(clinic, RECEIPT, params, query={"format": "pdf"})))
    for expected in ("Test Clinic Professional Corporation", "Tax registration no. 123456789"):
        assert expected in text, text
    invoice_pdf = pdf_text(
        pdf_of(
            raw_get(
                clinic,
                "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/pdf",
                {"patient_id": "pat_a", "invoice_id": invoice["id"]},
            )
        )
    )
    for expected in ("Bill to", "Jordan Lee (parent), 9 Elm St, Oakville ON", "RT0001"):
        assert expected in invoice_pdf, invoice_pdf


def test_an_invoice_without_bill_to_has_none_and_a_bad_one_is_422(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    assert invoice["bill_to"] is None
    for bill_to in (
        {"name": ""},
        {"name": "A", "address": "1\n2\n3\n4\n5\n6\n7"},
        {"name": "A\u0000"},
    ):
        status, body = clinic.call(
            "POST",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
            {"patient_id": "pat_a"},
            body={
                "lines": [{"description": "x", "unit_amount": 100, "quantity": 1}],
                "bill_to": bill_to,
            },
        )
        assert (status, body["error"]["code"]) == (422, "validation_error"), body


def test_a_bad_profile_is_422_and_changes_nothing(clinic):
    for profile in ({"email": "not an email"}, {"phone": "x" * 201}, {"legal_name": "a\tb"}):
        status, body = clinic.call(
            "PUT", "/v1/clinics/{clinic_id}/settings", role="admin", body={"profile": profile}
        )
        assert (status, body["error"]["code"]) == (422, "validation_error"), body
    settings = clinic.call("GET", "/v1/clinics/{clinic_id}/settings", role="admin")[1]
    assert settings["profile"]["legal_name"] == ""


def test_a_receipt_pdf_of_a_payment_not_succeeded_is_a_409_in_json(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    response = raw_get(
        clinic,
        RECEIPT,
        {"patient_id": "pat_a", "payment_id": payment["id"]},
        query={"format": "pdf"},
    )
    assert response["statusCode"] == 409
    assert response["headers"]["Content-Type"] == "application/json"


def test_the_invoice_pdf_has_its_lines_tax_payments_and_balance_due(clinic):
    status, invoice = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
        {"patient_id": "pat_a"},
        body={
            "due_date": "2026-12-01",
            "memo": "November visits",
            "lines": [
                {
                    "description": "Physiotherapy session",
                    "service_date": "2026-11-20",
                    "quantity": 1,
                    "unit_amount": 12000,
                    "tax_rate_id": "tax_hst",
                },
                {
                    "description": "Resistance band",
                    "service_date": "2026-11-20",
                    "quantity": 2,
                    "unit_amount": 2500,
                },
                {
                    "description": "Massage therapy",
                    "service_date": "2026-11-21",
                    "quantity": 1,
                    "unit_amount": 9000,
                    "tax_rate_id": "tax_hst",
                },
            ],
        },
    )
    assert status == 201, invoice
    assert invoice["total"] == 28730
    payment = cash(
        clinic, "pat_a", {"allocations": [{"invoice_id": invoice["id"], "amount": 5000}]}
    )
    data = pdf_of(
        raw_get(clinic, INVOICE_PDF, {"patient_id": "pat_a", "invoice_id": invoice["id"]})
    )
    assert invoice["number"].encode() in data  # the text streams are searchable as they are
    text = pdf_text(data)
    expected = [
        f"Invoice {invoice['number']}",
        "Test Clinic",
        "2026-12-01",
        "Partially paid",
        "Physiotherapy session",
        "2026-11-21",
        "HST 15.60",
        "120.00",
        "USD 260.00",  # subtotal
        "USD 27.30",  # tax
        "USD 287.30",  # total
        "USD 50.00",  # paid
        "USD 237.30",  # balance due
        clinic.payment("pat_a", payment["id"])["confirmation_number"],
        "Memo: November visits",
    ]
    for item in expected:
        assert item in text, (item, text)
    assert len(data) < 20_000


def test_the_invoice_pdf_is_refused_to_another_patient_and_another_clinic(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    params = {"patient_id": "pat_a", "invoice_id": invoice["id"]}
    assert raw_get(clinic, INVOICE_PDF, params, patient_ids=("pat_b",))["statusCode"] == 404
    other = http_event(
        "GET",
        INVOICE_PDF,
        {"clinic_id": clinic.clinic_id, **params},
        claims=claims_for("staff", "another_clinic"),
    )
    response = import_module(MODULES[("GET", INVOICE_PDF)]).lambda_handler(other, context())
    assert response["statusCode"] == 403
    missing = raw_get(clinic, INVOICE_PDF, {"patient_id": "pat_a", "invoice_id": "inv_nope"})
    assert missing["statusCode"] == 404


# -- receipt emails -----------------------------------------------------------------------------


def test_a_cash_payment_with_receipt_email_sends_the_receipt_with_its_pdf(clinic, stack):
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 4200)
    payment = cash(
        clinic, "pat_a", {"allocations": [{"invoice_id": invoice["id"]}], "receipt_email": to}
    )
    confirmation = clinic.payment("pat_a", payment["id"])["confirmation_number"]
    [message] = sent_emails(stack.moto_url, to)
    assert message["From"] == f"Test Clinic <{RECEIPTS_FROM}>"
    assert confirmation in message["Subject"]
    assert "USD 42.00" in message["Subject"]
    text = body_text(message)
    assert f"Invoice {invoice['number']}" in text
    assert "Total charged: USD 42.00" in text
    [(filename, content_type, data)] = attachments(message)
    assert (filename, content_type) == (f"receipt-{confirmation}.pdf", "application/pdf")
    assert data.startswith(b"%PDF-")
    assert confirmation in pdf_text(data)
    clinic.check_invariant("pat_a")


def test_no_email_without_receipt_email_and_none_given_to_stripe(clinic, stack):
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 1500)
    payment = start_card_payment(clinic, "pat_a", invoice["id"], receipt_email=to)
    # Our receipt replaces Stripe's: the patient's address never reaches Stripe.
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    assert intent.get("receipt_email") is None
    assert sent_emails(stack.moto_url, to) == []  # not succeeded: nothing to send yet
    before = len(sent_emails(stack.moto_url))
    cash(clinic, "pat_a", {"amount": 700})
    assert len(sent_emails(stack.moto_url)) == before


def test_the_receipt_is_emailed_once_though_every_path_reaches_settlement(clinic, stack):
    card = saved_card(clinic, "pat_a")
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 6400)
    # A saved-card charge settles inside the request (the synchronous path)...
    status, payment = clinic.pay(
        "pat_a",
        {
            "method": "card",
            "payment_method_id": card,
            "allocations": [{"invoice_id": invoice["id"]}],
            "receipt_email": to,
        },
    )
    assert (status, payment["status"]) == (201, "succeeded"), payment
    assert len(sent_emails(stack.moto_url, to)) == 1
    # ... then Stripe delivers its event three times, a retried request replays, and the
    # reconciler runs twice.
    intent_id = (
        container()
        .repository.get_payment(clinic.clinic_id, "pat_a", payment["id"])
        .stripe_payment_intent_id
    )
    delivered(clinic, intent_id, times=3)
    reconcile()
    reconcile()
    [message] = sent_emails(stack.moto_url, to)
    assert payment["confirmation_number"] in message["Subject"]
    clinic.check_invariant("pat_a")


def test_concurrent_settlements_send_one_receipt(clinic, stack):
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 3100)
    payment = start_card_payment(clinic, "pat_a", invoice["id"], receipt_email=to)
    intent = paid_in_portal(clinic, payment)
    # Four webhook deliveries settle at once, each through its own container (own clients).
    containers = [build_container(RuntimeSettings.from_environ()) for _ in range(4)]
    link = containers[0].repository.get_stripe_link(intent["id"])
    snapshot = (
        containers[0]
        .stripe.for_account(clinic.clinic_id, "main")
        .retrieve_payment_intent(intent["id"])
    )
    barrier = threading.Barrier(len(containers))
    errors: list[BaseException] = []

    def settle(index: int) -> None:
        try:
            barrier.wait()
            containers[index].payments.settle_intent(link, snapshot)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(len(containers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    assert len(sent_emails(stack.moto_url, to)) == 1
    clinic.check_invariant("pat_a")


def test_a_failed_email_never_blocks_settlement_and_is_sent_later(clinic, stack, ses_refuses):
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 5300)
    payment = cash(
        clinic, "pat_a", {"allocations": [{"invoice_id": invoice["id"]}], "receipt_email": to}
    )
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    assert sent_emails(stack.moto_url, to) == []
    clinic.check_invariant("pat_a")
    # Still refused: the reconciler tries, counts the attempt, and leaves it for next time.
    report = reconcile()
    assert report.receipts_failed >= 1
    assert sent_emails(stack.moto_url, to) == []
    # SES accepts the sender again: the next run sends it, once.
    client("ses", stack.moto_url).verify_email_identity(EmailAddress=RECEIPTS_FROM)
    report = reconcile()
    assert report.receipts_sent >= 1
    reconcile()
    [message] = sent_emails(stack.moto_url, to)
    assert clinic.payment("pat_a", payment["id"])["confirmation_number"] in message["Subject"]
    clinic.check_invariant("pat_a")


def test_a_failed_email_never_fails_the_webhook_either(clinic, stack, ses_refuses):
    to = mailbox()
    invoice = clinic.create_invoice("pat_a", 2900)
    payment = start_card_payment(clinic, "pat_a", invoice["id"], receipt_email=to)
    intent = paid_in_portal(clinic, payment)
    delivered(clinic, intent["id"])  # answers 200: the settlement stands
    assert clinic.payment("pat_a", payment["id"])["status"] == "succeeded"
    assert sent_emails(stack.moto_url, to) == []
    client("ses", stack.moto_url).verify_email_identity(EmailAddress=RECEIPTS_FROM)
    # Stripe's next event about the intent reaches settlement again, and the receipt goes.
    delivered(clinic, intent["id"])
    assert len(sent_emails(stack.moto_url, to)) == 1
    clinic.check_invariant("pat_a")


REFUND_RECEIPT = RECEIPT.replace("/receipt", "/refunds/{refund_id}/receipt")


def refunded_cash(clinic: Any, *amounts: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A cash payment of an invoice, and the payment after each refund of `amounts`."""
    invoice = clinic.create_invoice("pat_a", 3000)
    payment = cash(clinic, "pat_a", {"allocations": [{"invoice_id": invoice["id"]}]})
    for n, amount in enumerate(amounts):
        status, payment = clinic.call(
            "POST",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/refunds",
            {"patient_id": "pat_a", "payment_id": payment["id"]},
            body={"amount": amount, "reason": "requested_by_customer"},
            headers={"Idempotency-Key": f"refund-{payment['id']}-{n}"},
        )
        assert status == 201, payment
    return invoice, payment


def test_a_receipt_lists_the_refunds_made_since(clinic):
    _, payment = refunded_cash(clinic, 500, 700)
    status, body = receipt(clinic, payment["id"])
    assert status == 200, body
    assert body["amount"] == 3000  # what was paid, as it was
    assert [(r["amount"], r["reason"]) for r in body["refunds"]] == [
        (500, "requested_by_customer"),
        (700, "requested_by_customer"),
    ]
    assert [r["id"] for r in body["refunds"]] == [r["id"] for r in payment["refunds"]]
    params = {"patient_id": "pat_a", "payment_id": payment["id"]}
    text = pdf_text(pdf_of(raw_get(clinic, RECEIPT, params, query={"format": "pdf"})))
    assert "Refunded since" in text, text
    assert "7.00" in text, text


def test_each_refund_has_a_receipt_of_its_own(clinic):
    invoice, payment = refunded_cash(clinic, 1200)
    [made] = payment["refunds"]
    params = {"patient_id": "pat_a", "payment_id": payment["id"], "refund_id": made["id"]}
    status, body = clinic.call("GET", REFUND_RECEIPT, params)
    assert status == 200, body
    assert (body["refund_id"], body["payment_id"], body["amount"]) == (
        made["id"],
        payment["id"],
        1200,
    )
    assert body["confirmation_number"] == payment["confirmation_number"]
    assert body["from_invoices"] == [
        {"invoice_id": invoice["id"], "invoice_number": invoice["number"], "amount": 1200}
    ]
    assert (body["method"], body["card"], body["status"]) == ("cash", None, "succeeded")
    pdf = raw_get(clinic, REFUND_RECEIPT, params, headers={"Accept": "application/pdf"})
    text = pdf_text(pdf_of(pdf))
    for expected in ("Refund receipt", payment["confirmation_number"], "12.00", invoice["number"]):
        assert expected in text, text
    assert pdf["headers"]["Content-Disposition"].startswith('inline; filename="refund-')


def test_a_refund_receipt_is_found_only_for_its_own_payment_and_patient(clinic):
    _, payment = refunded_cash(clinic, 300)
    _, other = refunded_cash(clinic, 400)
    [made] = payment["refunds"]
    cases = [
        ({"payment_id": other["id"], "refund_id": made["id"]}, "staff", 404),  # another payment
        ({"payment_id": payment["id"], "refund_id": "ref_unknown"}, "staff", 404),
        ({"payment_id": payment["id"], "refund_id": made["id"]}, "other-patient", 404),
    ]
    for params, who, expected in cases:
        role, patients = ("patient", ("pat_b",)) if who == "other-patient" else ("staff", ())
        status, body = clinic.call(
            "GET",
            REFUND_RECEIPT,
            {"patient_id": "pat_a", **params},
            role=role,
            patient_ids=patients,
        )
        assert (status, body["error"]["code"]) == (expected, "not_found"), (params, who, body)
    status, body = clinic.call(
        "GET",
        REFUND_RECEIPT,
        {"patient_id": "pat_a", "payment_id": payment["id"], "refund_id": made["id"]},
        claims={"sub": "intruder", "role": "staff", "clinic_id": "another-clinic"},
    )
    assert status == 403, body
