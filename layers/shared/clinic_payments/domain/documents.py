"""Receipts and invoice documents: what they say, composed by pure functions.

A document is described here as text in blocks (facts, tables, totals); an adapter lays it out
as a PDF and the same description reads as the plain-text body of an email. Amounts are written
in the currency's own minor unit (money.format_amount). These documents are ours: nothing in
them goes to Stripe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from clinic_payments.domain.errors import ConflictError, NotFoundError, PaymentNotSucceededError
from clinic_payments.domain.ids import confirmation_number
from clinic_payments.domain.model import (
    CardSummary,
    ClinicProfile,
    ClinicSettings,
    Credit,
    Invoice,
    InvoiceStatus,
    Payer,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
)
from clinic_payments.domain.money import format_amount, format_money
from clinic_payments.domain.ports import (
    Attachment,
    ClinicConfigStore,
    DocumentRenderer,
    InvoiceStore,
    OutgoingEmail,
    PaymentStore,
)
from clinic_payments.domain.printable import (
    Align,
    Block,
    Column,
    Paragraph,
    PrintableDocument,
    Table,
    TotalRow,
    Totals,
    plain_text,
)
from clinic_payments.domain.timeutil import local_date

# -- receipts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiptLine:
    invoice_id: str
    invoice_number: str | None
    amount: int


@dataclass(frozen=True)
class ReceiptRefund:
    """A refund made after the payment, as its receipt lists it (failed ones gave nothing back
    and are not listed)."""

    id: str
    amount: int
    reason: str
    at: str
    date: str  # the clinic's local date of the refund
    status: str


@dataclass(frozen=True)
class Receipt:
    payment_id: str
    clinic_id: str
    patient_id: str
    clinic_name: str
    clinic_profile: ClinicProfile
    confirmation_number: str
    date_posted: str  # the clinic's local date the payment succeeded, YYYY-MM-DD
    succeeded_at: str
    purpose: PaymentPurpose
    amount: int  # applied to invoices and credit
    fee_amount: int
    total_charged: int  # amount + fee: what the card was charged or the clinic received
    currency: str
    method: PaymentMethodType
    card: CardSummary | None
    paid: list[ReceiptLine]
    credit_added: int
    credit_balance: int  # the patient's credit in this currency right after the payment
    payer: Payer
    reference: str | None
    location_id: str | None
    location_name: str | None
    refunds: list[ReceiptRefund] = field(default_factory=list)


@dataclass(frozen=True)
class RefundReceipt:
    """What one refund gave back, and what it took back from the patient's account."""

    refund_id: str
    payment_id: str
    clinic_id: str
    patient_id: str
    clinic_name: str
    clinic_profile: ClinicProfile
    confirmation_number: str  # the payment's
    date: str  # the clinic's local date of the refund
    at: str
    amount: int
    currency: str
    reason: str
    status: str
    method: PaymentMethodType
    card: CardSummary | None
    from_invoices: list[ReceiptLine]
    from_credit: int
    from_fee: int


def issuer_details(clinic_name: str, profile: ClinicProfile) -> list[str]:
    """The lines under a clinic's name on its paperwork, as its profile gives them."""
    lines = []
    if profile.legal_name and profile.legal_name != clinic_name:
        lines.append(profile.legal_name)
    lines += [line for line in profile.address.splitlines() if line.strip()]
    contact = " - ".join(part for part in (profile.phone, profile.email) if part)
    if contact:
        lines.append(contact)
    if profile.tax_registration_number:
        lines.append(f"Tax registration no. {profile.tax_registration_number}")
    return lines


def compose_receipt(
    payment: Payment,
    invoices: Mapping[str, Invoice],
    settings: ClinicSettings,
    credit: Credit,
) -> Receipt:
    """The receipt of a succeeded payment; any other payment has none (yet)."""
    if payment.status is not PaymentStatus.SUCCEEDED or payment.succeeded_at is None:
        raise PaymentNotSucceededError(
            f"This payment has not succeeded (status: {payment.status.value}); its receipt "
            "exists once it has."
        )
    location = next((loc for loc in settings.locations if loc.id == payment.location_id), None)
    total = payment.amount_received or payment.charge_amount
    return Receipt(
        payment_id=payment.id,
        clinic_id=payment.clinic_id,
        patient_id=payment.patient_id,
        clinic_name=settings.clinic_name,
        clinic_profile=settings.profile,
        confirmation_number=payment.confirmation_number or confirmation_number(payment.id),
        date_posted=local_date(payment.succeeded_at, settings.timezone),
        succeeded_at=payment.succeeded_at,
        purpose=payment.purpose,
        amount=total - payment.fee_amount,
        fee_amount=payment.fee_amount,
        total_charged=total,
        currency=payment.currency,
        method=payment.method,
        card=payment.payment_method if payment.method is PaymentMethodType.CARD else None,
        paid=[
            ReceiptLine(
                a.invoice_id,
                a.invoice_number
                or (invoices[a.invoice_id].number if a.invoice_id in invoices else None),
                a.amount,
            )
            for a in payment.allocations
        ],
        credit_added=payment.credit_amount,
        credit_balance=(
            payment.credit_balance_after
            if payment.credit_balance_after is not None
            else credit.balance  # settled before the balance was kept with the payment
        ),
        payer=payment.payer,
        reference=payment.reference,
        location_id=payment.location_id,
        location_name=location.name if location else None,
        refunds=[
            ReceiptRefund(
                r.id, r.amount, r.reason, r.at, local_date(r.at, settings.timezone), r.status
            )
            for r in payment.refunds
            if not r.has_failed
        ],
    )


def compose_refund_receipt(
    payment: Payment, refund_id: str, settings: ClinicSettings
) -> RefundReceipt:
    """The receipt of one refund of the payment; a refund that failed gave nothing back and has
    none."""
    refund = next((r for r in payment.refunds if r.id == refund_id), None)
    if refund is None:
        raise NotFoundError("Refund not found.")
    if refund.has_failed:
        raise ConflictError(
            f"The refund {refund.status}: nothing was given back, so it has no receipt."
        )
    numbers = {a.invoice_id: a.invoice_number for a in payment.allocations}
    return RefundReceipt(
        refund_id=refund.id,
        payment_id=payment.id,
        clinic_id=payment.clinic_id,
        patient_id=payment.patient_id,
        clinic_name=settings.clinic_name,
        clinic_profile=settings.profile,
        confirmation_number=payment.confirmation_number or confirmation_number(payment.id),
        date=local_date(refund.at, settings.timezone),
        at=refund.at,
        amount=refund.amount,
        currency=payment.currency,
        reason=refund.reason,
        status=refund.status,
        method=payment.method,
        card=payment.payment_method if payment.method is PaymentMethodType.CARD else None,
        from_invoices=[
            ReceiptLine(a.invoice_id, numbers.get(a.invoice_id), a.amount)
            for a in refund.from_invoices
        ],
        from_credit=refund.from_credit,
        from_fee=refund.from_fee,
    )


PAYER_LABELS = {
    Payer.SELF: "Self",
    Payer.COPAY: "Co-pay",
    Payer.COINSURANCE: "Co-insurance",
    Payer.DEDUCTIBLE: "Deductible",
}


def _words(name: str) -> str:
    """Stripe's snake_case names as printed: `american_express` -> `American Express`."""
    return name.replace("_", " ").title()


def method_label(method: PaymentMethodType, card: CardSummary | None) -> str:
    """`Visa ending 4242`; through a wallet `Apple Pay (Visa ending 4242)`."""
    if method is not PaymentMethodType.CARD:
        return method.value.capitalize()
    if card is None:
        return "Card"
    plain = f"{_words(card.brand or 'card')} ending {card.last4}" if card.last4 else None
    if card.wallet is None:
        return plain or "Card"
    wallet = _words(card.wallet)
    return f"{wallet} ({plain})" if plain else wallet


def receipt_document(receipt: Receipt) -> PrintableDocument:
    cur = receipt.currency
    facts = [
        ("Confirmation #", receipt.confirmation_number),
        ("Date posted", receipt.date_posted),
        ("Payment method", method_label(receipt.method, receipt.card)),
        ("Payer", PAYER_LABELS[receipt.payer]),
    ]
    if receipt.reference:
        facts.append(("Reference", receipt.reference))
    if receipt.location_name:
        facts.append(("Location", receipt.location_name))
    applied = Table(
        heading="Applied to",
        columns=[Column("Invoice", 0.7), Column(f"Amount ({cur.upper()})", 0.3, Align.RIGHT)],
        rows=[
            [f"Invoice {line.invoice_number or line.invoice_id}", format_amount(line.amount, cur)]
            for line in receipt.paid
        ],
        empty=(
            "Account credit top-up"
            if receipt.purpose is PaymentPurpose.CREDIT_TOPUP
            else "No invoice: the payment was added to account credit"
        ),
    )
    totals = [
        TotalRow("Amount", format_money(receipt.amount, cur)),
        TotalRow("Processing fee", format_money(receipt.fee_amount, cur)),
        TotalRow("Total charged", format_money(receipt.total_charged, cur), bold=True),
        TotalRow("Credit added", format_money(receipt.credit_added, cur)),
        TotalRow("Account credit balance", format_money(receipt.credit_balance, cur)),
    ]
    return PrintableDocument(
        filename=f"receipt-{receipt.confirmation_number}.pdf",
        issuer=receipt.clinic_name or "Clinic",
        issuer_details=issuer_details(receipt.clinic_name, receipt.clinic_profile),
        title="Payment receipt",
        facts=facts,
        blocks=[
            applied,
            Totals(totals),
            *_refunds_block(receipt),
            Paragraph("Thank you for your payment."),
        ],
    )


def _refunds_block(receipt: Receipt) -> list[Table]:
    if not receipt.refunds:
        return []
    cur = receipt.currency
    return [
        Table(
            heading="Refunded since",
            columns=[
                Column("Date", 0.2),
                Column("Reason", 0.55),
                Column(f"Amount ({cur.upper()})", 0.25, Align.RIGHT),
            ],
            rows=[
                [r.date, REFUND_REASON_LABELS.get(r.reason, r.reason), format_amount(r.amount, cur)]
                for r in receipt.refunds
            ],
        )
    ]


REFUND_REASON_LABELS = {
    "requested_by_customer": "Requested by the patient",
    "duplicate": "Duplicate payment",
    "fraudulent": "Fraudulent payment",
}


def refund_receipt_document(receipt: RefundReceipt) -> PrintableDocument:
    cur = receipt.currency
    facts = [
        ("Refund of", f"Payment {receipt.confirmation_number}"),
        ("Date", receipt.date),
        ("Refunded to", method_label(receipt.method, receipt.card)),
        ("Reason", REFUND_REASON_LABELS.get(receipt.reason, receipt.reason)),
    ]
    if receipt.status != "succeeded":
        # Taken back from the account, not yet confirmed by the card network (Stripe).
        facts.append(("Status", "In progress"))
    rows = [
        [f"Invoice {line.invoice_number or line.invoice_id}", format_amount(line.amount, cur)]
        for line in receipt.from_invoices
    ]
    if receipt.from_credit:
        rows.append(["Account credit", format_amount(receipt.from_credit, cur)])
    if receipt.from_fee:
        rows.append(["Processing fee", format_amount(receipt.from_fee, cur)])
    taken = Table(
        heading="Taken back from",
        columns=[Column("", 0.7), Column(f"Amount ({cur.upper()})", 0.3, Align.RIGHT)],
        rows=rows,
    )
    refunded = TotalRow("Amount refunded", format_money(receipt.amount, cur), bold=True)
    return PrintableDocument(
        filename=f"refund-{receipt.confirmation_number}-{receipt.refund_id}.pdf",
        issuer=receipt.clinic_name or "Clinic",
        issuer_details=issuer_details(receipt.clinic_name, receipt.clinic_profile),
        title="Refund receipt",
        facts=facts,
        blocks=[taken, Totals([refunded])],
    )


# -- invoices -------------------------------------------------------------------------------

STATUS_LABELS = {
    InvoiceStatus.OPEN: "Open",
    InvoiceStatus.PARTIALLY_PAID: "Partially paid",
    InvoiceStatus.PAID: "Paid",
    InvoiceStatus.VOID: "Void",
}


def invoice_document(invoice: Invoice, settings: ClinicSettings) -> PrintableDocument:
    cur = invoice.currency

    def day(at: str) -> str:
        return local_date(at, settings.timezone)

    facts = [
        ("Invoice number", invoice.number),
        ("Date issued", day(invoice.created_at)),
        ("Due date", invoice.due_date or "On receipt"),
        ("Status", STATUS_LABELS[invoice.status]),
        ("Currency", cur.upper()),
    ]
    if invoice.bill_to is not None:
        addressed = [invoice.bill_to.name, *invoice.bill_to.address.splitlines()]
        facts.insert(0, ("Bill to", ", ".join(line for line in addressed if line.strip())))
    if invoice.paid_at:
        facts.append(("Paid on", day(invoice.paid_at)))
    if invoice.voided_at:
        facts.append(("Voided on", day(invoice.voided_at)))
    rows = []
    for line in invoice.lines:
        tax = ""
        if line.tax_rate_id is not None:
            rate = settings.tax_rate(line.tax_rate_id)
            tax = f"{rate.name if rate else 'Tax'} {format_amount(line.tax_amount, cur)}"
        rows.append(
            [
                line.service_date or "",
                line.description,
                str(line.quantity),
                format_amount(line.unit_amount, cur),
                tax,
                format_amount(line.amount, cur),
            ]
        )
    services = Table(
        heading="Services",
        columns=[
            Column("Date", 0.13),
            Column("Description", 0.37),
            Column("Qty", 0.07, Align.RIGHT),
            Column("Unit price", 0.14, Align.RIGHT),
            Column("Tax", 0.14, Align.RIGHT),
            Column("Amount", 0.15, Align.RIGHT),
        ],
        rows=rows,
    )
    totals = Totals(
        [
            TotalRow("Subtotal", format_money(invoice.subtotal, cur)),
            TotalRow("Tax", format_money(invoice.tax, cur)),
            TotalRow("Total", format_money(invoice.total, cur)),
            TotalRow("Paid", format_money(invoice.amount_paid, cur)),
            TotalRow("Balance due", format_money(invoice.balance_due, cur), bold=True),
        ]
    )
    payments = Table(
        heading="Payments",
        columns=[
            Column("Date", 0.2),
            Column("Method", 0.25),
            Column("Confirmation #", 0.3),
            Column(f"Amount ({cur.upper()})", 0.25, Align.RIGHT),
        ],
        rows=[
            [
                day(ref.at),
                ref.method.capitalize(),
                confirmation_number(ref.payment_id),
                format_amount(ref.amount, cur),
            ]
            for ref in invoice.payments
        ],
        empty="No payments yet.",
    )
    blocks: list[Block] = [services, totals, payments]
    if invoice.memo:
        blocks.append(Paragraph(f"Memo: {invoice.memo}"))
    return PrintableDocument(
        filename=f"invoice-{invoice.number}.pdf",
        issuer=settings.clinic_name or "Clinic",
        issuer_details=issuer_details(settings.clinic_name, settings.profile),
        title=f"Invoice {invoice.number}",
        facts=facts,
        blocks=blocks,
    )


# -- the service ------------------------------------------------------------------------------


class DocumentReads(InvoiceStore, PaymentStore, ClinicConfigStore, Protocol):
    """What documents read: invoices, payments (with their credit), the clinic's settings."""


class DocumentService:
    def __init__(self, repository: DocumentReads, renderer: DocumentRenderer) -> None:
        self._repo = repository
        self._renderer = renderer

    def _settings(self, clinic_id: str) -> ClinicSettings:
        found = self._repo.get_settings(clinic_id, cached=True)
        return found or ClinicSettings(clinic_id=clinic_id)

    def receipt(self, clinic_id: str, patient_id: str, payment_id: str) -> Receipt:
        """One round trip: the payment (its allocations name their invoices) and the credit of
        the clinic's currency, read together."""
        settings = self._settings(clinic_id)
        reads = self._repo.read_patient(
            clinic_id, patient_id, payment_id=payment_id, currencies=(settings.currency,)
        )
        if reads.payment is None:
            raise NotFoundError("Payment not found.")
        return self.receipt_of(reads.payment, reads.credits.get(reads.payment.currency))

    def receipt_of(self, payment: Payment, credit: Credit | None = None) -> Receipt:
        unnamed = tuple(a.invoice_id for a in payment.allocations if a.invoice_number is None)
        currencies = () if credit is not None else (payment.currency,)
        invoices: dict[str, Invoice] = {}
        if unnamed or credit is None:
            # Settled before allocations kept their invoice's number, or another currency.
            reads = self._repo.read_patient(
                payment.clinic_id, payment.patient_id, invoice_ids=unnamed, currencies=currencies
            )
            invoices = reads.invoices
            credit = credit or reads.credits[payment.currency]
        return compose_receipt(payment, invoices, self._settings(payment.clinic_id), credit)

    def refund_receipt(
        self, clinic_id: str, patient_id: str, payment_id: str, refund_id: str
    ) -> RefundReceipt:
        payment = self._repo.get_payment(clinic_id, patient_id, payment_id)
        if payment is None:
            raise NotFoundError("Payment not found.")
        return compose_refund_receipt(payment, refund_id, self._settings(clinic_id))

    def refund_receipt_pdf(self, receipt: RefundReceipt) -> tuple[PrintableDocument, bytes]:
        document = refund_receipt_document(receipt)
        return document, self._renderer.render(document)

    def receipt_pdf(self, receipt: Receipt) -> tuple[PrintableDocument, bytes]:
        document = receipt_document(receipt)
        return document, self._renderer.render(document)

    def invoice_pdf(
        self, clinic_id: str, patient_id: str, invoice_id: str
    ) -> tuple[PrintableDocument, bytes]:
        invoice = self._repo.get_invoice(clinic_id, patient_id, invoice_id)
        if invoice is None:
            raise NotFoundError("Invoice not found.")
        document = invoice_document(invoice, self._settings(clinic_id))
        return document, self._renderer.render(document)


def receipt_email(
    receipt: Receipt, document: PrintableDocument, pdf: bytes, to: str
) -> OutgoingEmail:
    """The receipt by email: its text in the body, the PDF attached."""
    clinic = receipt.clinic_name or "your clinic"
    total = format_money(receipt.total_charged, receipt.currency)
    return OutgoingEmail(
        to=to,
        subject=f"Your receipt from {clinic}: {total} (confirmation {receipt.confirmation_number})",
        text=plain_text(document) + "\nThe receipt is attached as a PDF.\n",
        sender_name=receipt.clinic_name,
        attachments=(Attachment(document.filename, "application/pdf", pdf),),
    )
