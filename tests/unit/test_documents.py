"""Receipts and invoice documents: pure composition, amounts per currency, and the PDF writer."""

from __future__ import annotations

import io
from dataclasses import replace
from decimal import Decimal

import pypdf
import pytest
from clinic_payments.adapters.pdf import PdfRenderer, encode, text_width, wrap
from clinic_payments.api.routes.documents import prefers_pdf
from clinic_payments.domain.documents import (
    ReceiptLine,
    compose_receipt,
    compose_refund_receipt,
    invoice_document,
    receipt_document,
    receipt_email,
    refund_receipt_document,
)
from clinic_payments.domain.errors import ConflictError, NotFoundError, PaymentNotSucceededError
from clinic_payments.domain.ids import confirmation_number
from clinic_payments.domain.model import (
    Actor,
    Allocation,
    BillTo,
    CardSummary,
    ClinicProfile,
    ClinicSettings,
    Credit,
    Invoice,
    InvoiceLine,
    InvoicePaymentRef,
    InvoiceStatus,
    Location,
    Payer,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    RefundRecord,
    Role,
    TaxRate,
)
from clinic_payments.domain.money import format_amount, format_money
from clinic_payments.domain.printable import Table, Totals, plain_text
from clinic_payments.domain.timeutil import is_timezone

pytestmark = pytest.mark.unit

SETTINGS = ClinicSettings(
    clinic_id="c1",
    clinic_name="Clinique Physio Étoile",
    tax_rates=[TaxRate("tax_hst", "HST", Decimal(13))],
    locations=[Location("loc_main", "Main Street")],
)
STAFF = Actor("staff-1", Role.STAFF)


def invoice(**changes: object) -> Invoice:
    lines = [
        InvoiceLine(
            "line_1", "Physiotherapy session", "2026-11-20", 1, 12000, 12000, "tax_hst", 1560
        ),
        InvoiceLine("line_2", "Resistance band", "2026-11-20", 2, 2500, 5000, None, 0),
        InvoiceLine("line_3", "Massage therapy", "2026-11-21", 1, 9000, 9000, "tax_hst", 1170),
    ]
    base = Invoice(
        id="inv_1",
        number="000123",
        clinic_id="c1",
        patient_id="p1",
        status=InvoiceStatus.PARTIALLY_PAID,
        currency="usd",
        lines=lines,
        subtotal=26000,
        tax=2730,
        total=28730,
        amount_paid=5000,
        due_date="2026-12-01",
        memo="November visits",
        created_at="2026-11-20T10:00:00.000Z",
        created_by=STAFF,
        payments=[
            InvoicePaymentRef("pay_01kq3abcdefghjkmn", 5000, "cash", "2026-11-21T09:00:00.000Z")
        ],
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def card_payment(**changes: object) -> Payment:
    base = Payment(
        id="pay_01kq3zzzzzzmnpqrst",
        clinic_id="c1",
        patient_id="p1",
        status=PaymentStatus.SUCCEEDED,
        method=PaymentMethodType.CARD,
        purpose=PaymentPurpose.INVOICE,
        amount=30000,
        fee_amount=924,
        currency="usd",
        allocations=[Allocation("inv_1", 23730)],
        credit_amount=6270,
        created_by=Actor("patient-1", Role.PATIENT),
        created_at="2026-11-22T23:59:00.000Z",
        payer=Payer.COPAY,
        reference="1.1.2026 1000 CC",
        note="DOS 90837",  # a staff note: never on the receipt
        receipt_email="patient@example.com",
        location_id="loc_main",
        payment_method=CardSummary("pm_1", "visa", "4242"),
        confirmation_number="ZZZMNPQRST",
        succeeded_at="2026-11-23T00:00:01.000Z",
        amount_received=30924,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- amounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (135600, "usd", "1,356.00"),
        (5, "usd", "0.05"),
        (0, "cad", "0.00"),
        (-2550, "eur", "-25.50"),
        (1500, "jpy", "1,500"),  # zero-decimal: no minor unit
        (1234567, "krw", "1,234,567"),
        (1500, "kwd", "1.500"),  # three decimals
        (99_999_999, "usd", "999,999.99"),
    ],
)
def test_amounts_are_written_in_the_currencys_minor_unit(
    amount: int, currency: str, expected: str
) -> None:
    assert format_amount(amount, currency) == expected


def test_money_carries_its_iso_code() -> None:
    assert format_money(13560, "usd") == "USD 135.60"
    assert format_money(1500, "JPY") == "JPY 1,500"


# -- receipts ---------------------------------------------------------------------------------


def test_a_receipt_says_what_was_charged_applied_and_left_as_credit() -> None:
    receipt = compose_receipt(
        card_payment(), {"inv_1": invoice()}, SETTINGS, Credit(8000, "usd", 3)
    )
    assert receipt.confirmation_number == "ZZZMNPQRST"
    assert receipt.clinic_name == "Clinique Physio Étoile"
    assert receipt.date_posted == "2026-11-23"  # the UTC date it succeeded, not created
    assert (receipt.amount, receipt.fee_amount, receipt.total_charged) == (30000, 924, 30924)
    assert [(line.invoice_number, line.amount) for line in receipt.paid] == [("000123", 23730)]
    assert (receipt.credit_added, receipt.credit_balance) == (6270, 8000)
    assert receipt.card == CardSummary("pm_1", "visa", "4242")
    assert receipt.location_name == "Main Street"


def test_a_cash_receipt_has_no_card_and_totals_what_was_received() -> None:
    payment = card_payment(
        method=PaymentMethodType.CASH,
        fee_amount=0,
        amount=2000,
        amount_received=2000,
        allocations=[Allocation("inv_1", 2000)],
        credit_amount=0,
        payment_method=None,
    )
    receipt = compose_receipt(payment, {"inv_1": invoice()}, SETTINGS, Credit(0, "usd", 0))
    assert receipt.card is None
    assert (receipt.amount, receipt.total_charged) == (2000, 2000)
    assert receipt_document(receipt).facts[2] == ("Payment method", "Cash")


@pytest.mark.parametrize(
    "status", [s for s in PaymentStatus if s is not PaymentStatus.SUCCEEDED], ids=str
)
def test_only_a_succeeded_payment_has_a_receipt(status: PaymentStatus) -> None:
    payment = card_payment(status=status, succeeded_at=None, confirmation_number=None)
    with pytest.raises(PaymentNotSucceededError, match=status.value):
        compose_receipt(payment, {}, SETTINGS, Credit(0, "usd", 0))


def test_the_receipt_document_reads_the_same_as_text_and_leaves_staff_notes_out() -> None:
    receipt = compose_receipt(
        card_payment(), {"inv_1": invoice()}, SETTINGS, Credit(8000, "usd", 3)
    )
    document = receipt_document(receipt)
    text = plain_text(document)
    for expected in (
        "Confirmation #: ZZZMNPQRST",
        "Date posted: 2026-11-23",
        "Payment method: Visa ending 4242",
        "Payer: Co-pay",
        "Reference: 1.1.2026 1000 CC",
        "Invoice 000123 | 237.30",
        "Total charged: USD 309.24",
        "Processing fee: USD 9.24",
        "Credit added: USD 62.70",
        "Account credit balance: USD 80.00",
    ):
        assert expected in text, text
    assert "DOS 90837" not in text
    assert document.filename == "receipt-ZZZMNPQRST.pdf"


@pytest.mark.parametrize(
    ("card", "label"),
    [
        (CardSummary("pm_1", "visa", "4242", wallet="apple_pay"), "Apple Pay (Visa ending 4242)"),
        (
            CardSummary("pm_1", "mastercard", "4444", wallet="google_pay"),
            "Google Pay (Mastercard ending 4444)",
        ),
        # Another wallet Stripe reports is named as Stripe names it.
        (
            CardSummary("pm_1", "visa", "4242", wallet="samsung_pay"),
            "Samsung Pay (Visa ending 4242)",
        ),
        # Before charge.succeeded names the card: the wallet alone.
        (CardSummary("pm_1", None, None, wallet="apple_pay"), "Apple Pay"),
        (CardSummary("pm_1", "visa", "4242"), "Visa ending 4242"),
        (CardSummary("pm_1", None, None), "Card"),
    ],
)
def test_a_card_paid_through_a_wallet_is_named_with_its_wallet(
    card: CardSummary, label: str
) -> None:
    receipt = compose_receipt(
        card_payment(payment_method=card), {"inv_1": invoice()}, SETTINGS, Credit(0, "usd", 0)
    )
    assert receipt.card == card
    document = receipt_document(receipt)
    assert ("Payment method", label) in document.facts
    email = receipt_email(receipt, document, b"%PDF-1.7 ...", "patient@example.com")
    assert f"Payment method: {label}\n" in email.text


def test_the_receipt_pdf_names_the_wallet() -> None:
    card = CardSummary("pm_1", "visa", "4242", wallet="google_pay")
    receipt = compose_receipt(
        card_payment(payment_method=card), {"inv_1": invoice()}, SETTINGS, Credit(0, "usd", 0)
    )
    assert "Google Pay (Visa ending 4242)" in read(PdfRenderer().render(receipt_document(receipt)))


def test_a_top_up_receipt_says_so_instead_of_listing_invoices() -> None:
    payment = card_payment(purpose=PaymentPurpose.CREDIT_TOPUP, allocations=[], credit_amount=30000)
    receipt = compose_receipt(payment, {}, SETTINGS, Credit(30000, "usd", 1))
    [applied] = [b for b in receipt_document(receipt).blocks if isinstance(b, Table)]
    assert (applied.rows, applied.empty) == ([], "Account credit top-up")


def test_the_receipt_email_attaches_the_pdf_and_names_the_clinic() -> None:
    receipt = compose_receipt(card_payment(), {"inv_1": invoice()}, SETTINGS, Credit(0, "usd", 0))
    document = receipt_document(receipt)
    email = receipt_email(receipt, document, b"%PDF-1.7 ...", "patient@example.com")
    assert email.to == "patient@example.com"
    assert email.sender_name == "Clinique Physio Étoile"
    assert email.subject == (
        "Your receipt from Clinique Physio Étoile: USD 309.24 (confirmation ZZZMNPQRST)"
    )
    assert [(a.filename, a.content_type) for a in email.attachments] == [
        ("receipt-ZZZMNPQRST.pdf", "application/pdf")
    ]
    assert "Total charged: USD 309.24" in email.text


# -- invoices ---------------------------------------------------------------------------------


def test_the_invoice_document_has_lines_tax_totals_and_payments() -> None:
    document = invoice_document(invoice(), SETTINGS)
    services, totals, payments = document.blocks[:3]
    assert isinstance(services, Table)
    assert services.rows == [
        ["2026-11-20", "Physiotherapy session", "1", "120.00", "HST 15.60", "120.00"],
        ["2026-11-20", "Resistance band", "2", "25.00", "", "50.00"],
        ["2026-11-21", "Massage therapy", "1", "90.00", "HST 11.70", "90.00"],
    ]
    assert isinstance(totals, Totals)
    assert [(r.label, r.value, r.bold) for r in totals.rows] == [
        ("Subtotal", "USD 260.00", False),
        ("Tax", "USD 27.30", False),
        ("Total", "USD 287.30", False),
        ("Paid", "USD 50.00", False),
        ("Balance due", "USD 237.30", True),
    ]
    assert isinstance(payments, Table)
    assert payments.rows == [
        ["2026-11-21", "Cash", confirmation_number("pay_01kq3abcdefghjkmn"), "50.00"]
    ]
    assert ("Due date", "2026-12-01") in document.facts
    assert ("Status", "Partially paid") in document.facts
    assert document.title == "Invoice 000123"
    assert document.filename == "invoice-000123.pdf"


def test_a_void_invoice_says_so_and_owes_nothing() -> None:
    document = invoice_document(
        invoice(
            status=InvoiceStatus.VOID,
            amount_paid=0,
            payments=[],
            voided_at="2026-11-25T00:00:00.000Z",
        ),
        SETTINGS,
    )
    assert ("Status", "Void") in document.facts
    assert ("Voided on", "2026-11-25") in document.facts
    totals = next(b for b in document.blocks if isinstance(b, Totals))
    assert totals.rows[-1].value == "USD 0.00"


# -- the PDF ----------------------------------------------------------------------------------


def read(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    return "\n".join(page.extract_text() for page in reader.pages)


def test_the_pdf_is_a_valid_document_with_the_invoice_in_it() -> None:
    pdf = PdfRenderer().render(invoice_document(invoice(), SETTINGS))
    assert pdf.startswith(b"%PDF-1.7")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert b"(Invoice 000123) Tj" in pdf  # uncompressed: the text is searchable as it is
    text = read(pdf)
    for expected in ("Clinique Physio Étoile", "Invoice 000123", "USD 237.30", "Massage therapy"):
        assert expected in text, text
    assert len(pdf) < 10_000


def test_a_long_invoice_runs_over_pages_with_its_table_header_repeated() -> None:
    lines = [
        InvoiceLine(f"line_{i}", f"Session {i}", "2026-11-20", 1, 1000, 1000, None, 0)
        for i in range(100)
    ]
    long = invoice(lines=lines, subtotal=100000, tax=0, total=100000, currency="jpy")
    pdf = PdfRenderer().render(invoice_document(long, SETTINGS))
    reader = pypdf.PdfReader(io.BytesIO(pdf), strict=True)
    assert len(reader.pages) >= 3
    second = reader.pages[1].extract_text()
    assert "Services (continued)" in second
    assert "page 2 of" in second
    assert "Session 99" in reader.pages[-1].extract_text()


def test_text_outside_winansi_prints_as_a_question_mark_never_fails() -> None:
    assert encode("Café \u2013 5 €") == b"Caf\xe9 \x96 5 \x80"  # WinAnsi: é, en dash, euro
    assert encode("诊所") == b"??"
    assert encode("a\tb\x00c") == b"a b c"
    pdf = PdfRenderer().render(invoice_document(invoice(memo="诊所 (clinic) ) \\ ("), SETTINGS))
    assert "(clinic)" in read(pdf)


def test_wrapping_keeps_every_line_within_its_width() -> None:
    text = "Physiotherapy " * 20 + "Supercalifragilisticexpialidocious" * 3
    lines = wrap(text, "F1", 9, 120)
    assert len(lines) > 5
    assert all(text_width(line, "F1", 9) <= 120 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


@pytest.mark.parametrize(
    ("accept", "pdf"),
    [
        ("application/pdf", True),
        ("application/json", False),
        ("", False),
        ("*/*", False),
        ("text/html,application/xhtml+xml,*/*;q=0.8", False),
        ("application/pdf, application/json", True),
        ("application/json, application/pdf;q=0.5", False),
        ("application/json;q=0.4, application/pdf;q=0.9", True),
        ("Application/PDF", True),
        ("application/pdf;q=0", False),
        ("application/pdf;q=nonsense", False),
    ],
)
def test_a_receipt_is_a_pdf_only_when_accept_prefers_one(accept: str, pdf: bool) -> None:
    assert prefers_pdf(accept) is pdf


# -- the clinic's local date -------------------------------------------------------------------

TORONTO = replace(SETTINGS, timezone="America/Toronto")


def test_a_receipt_is_dated_on_the_clinics_local_day() -> None:
    """A card taken at 8 pm in Toronto (01:00 UTC the next day) is posted that evening's date."""
    evening = card_payment(succeeded_at="2026-11-21T01:00:00.000Z")
    credit = Credit(0, "usd", 0)

    assert compose_receipt(evening, {"inv_1": invoice()}, TORONTO, credit).date_posted == (
        "2026-11-20"
    )
    assert compose_receipt(evening, {"inv_1": invoice()}, SETTINGS, credit).date_posted == (
        "2026-11-21"
    )
    # The moment itself is kept as it was, in UTC.
    receipt = compose_receipt(evening, {"inv_1": invoice()}, TORONTO, credit)
    assert receipt.succeeded_at == "2026-11-21T01:00:00.000Z"


def test_an_invoices_dates_are_the_clinics_local_days() -> None:
    late = invoice(
        created_at="2026-11-20T03:00:00.000Z",  # 22:00 on the 19th in Toronto
        payments=[
            InvoicePaymentRef("pay_01kq3abcdefghjkmn", 5000, "cash", "2026-11-22T04:30:00.000Z")
        ],
        status=InvoiceStatus.PAID,
        paid_at="2026-11-22T04:30:00.000Z",
    )
    document = invoice_document(late, TORONTO)
    assert ("Date issued", "2026-11-19") in document.facts
    assert ("Paid on", "2026-11-21") in document.facts
    payments = document.blocks[2]
    assert isinstance(payments, Table)
    assert payments.rows[0][0] == "2026-11-21"
    # Service dates are the dates staff wrote: never moved.
    services = document.blocks[0]
    assert isinstance(services, Table)
    assert services.rows[0][0] == "2026-11-20"


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("America/Toronto", True),
        ("Europe/Paris", True),
        ("UTC", True),
        ("Mars/Olympus_Mons", False),
        ("EST5EDT ", False),
        ("../etc/passwd", False),
        ("/usr/share/zoneinfo/UTC", False),
        ("", False),
    ],
)
def test_only_iana_time_zone_names_are_taken(name: str, known: bool) -> None:
    assert is_timezone(name) is known


# -- the clinic's profile and who an invoice is addressed to -----------------------------------

ONTARIO = replace(
    SETTINGS,
    profile=ClinicProfile(
        legal_name="Étoile Physiotherapy Inc.",
        address="120 King St W\nSuite 400\nToronto ON  M5H 1J9",
        phone="416-555-0142",
        email="billing@etoile.example",
        tax_registration_number="123456789 RT0001",
    ),
)


def test_invoices_and_receipts_carry_the_clinics_profile_under_its_name() -> None:
    expected = [
        "Étoile Physiotherapy Inc.",
        "120 King St W",
        "Suite 400",
        "Toronto ON  M5H 1J9",
        "416-555-0142 - billing@etoile.example",
        "Tax registration no. 123456789 RT0001",
    ]
    assert invoice_document(invoice(), ONTARIO).issuer_details == expected
    receipt = compose_receipt(card_payment(), {"inv_1": invoice()}, ONTARIO, Credit(0, "usd", 0))
    assert receipt_document(receipt).issuer_details == expected
    text = plain_text(receipt_document(receipt))
    assert text.startswith("Clinique Physio Étoile\nÉtoile Physiotherapy Inc.\n120 King St W\n")
    # A clinic without a profile prints its name alone, as before.
    assert invoice_document(invoice(), SETTINGS).issuer_details == []


def test_an_invoice_addressed_by_staff_says_to_whom() -> None:
    addressed = invoice(bill_to=BillTo("Jordan Lee (parent)", "9 Elm St\nOakville ON"))
    document = invoice_document(addressed, SETTINGS)
    assert document.facts[0] == ("Bill to", "Jordan Lee (parent), 9 Elm St, Oakville ON")
    assert not any(label == "Bill to" for label, _ in invoice_document(invoice(), SETTINGS).facts)


def test_the_pdf_prints_the_profile_and_the_bill_to() -> None:
    addressed = invoice(bill_to=BillTo("Jordan Lee", "9 Elm St"))
    text = read(PdfRenderer().render(invoice_document(addressed, ONTARIO)))
    for words in ("Tax registration no. 123456789 RT0001", "Suite 400", "Bill to", "Jordan Lee"):
        assert words in text


# -- refunds on receipts, and a refund's own receipt -------------------------------------------


def refund(refund_id: str, amount: int, at: str, status: str = "succeeded") -> RefundRecord:
    return RefundRecord(
        id=refund_id,
        key=refund_id,
        amount=amount,
        from_credit=0,
        from_invoices=[Allocation("inv_1", amount)],
        from_fee=0,
        reason="requested_by_customer",
        at=at,
        actor=STAFF,
        status=status,
    )


REFUNDED = card_payment(
    allocations=[Allocation("inv_1", 23730, "000123")],
    refunds=[
        refund("ref_1", 1000, "2026-11-25T02:00:00.000Z"),  # the 24th in Toronto
        refund("ref_2", 500, "2026-11-26T15:00:00.000Z", status="failed"),
        refund("ref_3", 700, "2026-11-27T15:00:00.000Z", status="pending"),
    ],
)


def test_a_receipt_lists_later_refunds_but_not_failed_ones() -> None:
    receipt = compose_receipt(REFUNDED, {"inv_1": invoice()}, TORONTO, Credit(0, "usd", 0))
    assert [(r.id, r.date, r.status) for r in receipt.refunds] == [
        ("ref_1", "2026-11-24", "succeeded"),
        ("ref_3", "2026-11-27", "pending"),
    ]
    assert receipt.total_charged == 30924  # what was paid is not rewritten
    text = plain_text(receipt_document(receipt))
    assert "Refunded since" in text
    assert "2026-11-24 | Requested by the patient | 10.00" in text


def test_a_refund_receipt_says_what_was_given_back_and_taken_back() -> None:
    receipt = compose_refund_receipt(REFUNDED, "ref_1", TORONTO)
    assert (receipt.amount, receipt.date, receipt.confirmation_number) == (
        1000,
        "2026-11-24",
        "ZZZMNPQRST",
    )
    assert receipt.from_invoices == [ReceiptLine("inv_1", "000123", 1000)]
    text = plain_text(refund_receipt_document(receipt))
    assert "Refund receipt" in text
    assert "Refunded to: Visa ending 4242" in text
    assert "Invoice 000123 | 10.00" in text
    assert "Status" not in text
    pending = plain_text(
        refund_receipt_document(compose_refund_receipt(REFUNDED, "ref_3", TORONTO))
    )
    assert "Status: In progress" in pending


def test_a_failed_or_unknown_refund_has_no_receipt() -> None:
    with pytest.raises(ConflictError):
        compose_refund_receipt(REFUNDED, "ref_2", TORONTO)
    with pytest.raises(NotFoundError):
        compose_refund_receipt(REFUNDED, "ref_9", TORONTO)
