"""Invoice rules: line amounts, per-line tax rounded half-up, totals, status from payments."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from clinic_payments.domain.errors import ConflictError, ValidationError
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Actor,
    BillTo,
    ClinicSettings,
    Invoice,
    InvoiceLine,
    InvoicePaymentRef,
    InvoiceStatus,
)
from clinic_payments.domain.money import MAX_AMOUNT, line_tax

MAX_LINES = 100


@dataclass(frozen=True)
class NewLine:
    description: str
    quantity: int
    unit_amount: int
    service_date: str | None = None
    tax_rate_id: str | None = None


@dataclass(frozen=True)
class NewInvoice:
    lines: list[NewLine]
    currency: str | None = None
    due_date: str | None = None
    memo: str | None = None
    bill_to: BillTo | None = None


def build_invoice(
    clinic_id: str,
    patient_id: str,
    request: NewInvoice,
    settings: ClinicSettings,
    number: int,
    actor: Actor,
    now: str,
) -> Invoice:
    if not 1 <= len(request.lines) <= MAX_LINES:
        raise ValidationError(f"An invoice has 1 to {MAX_LINES} lines.")
    currency = (request.currency or settings.currency).lower()
    lines: list[InvoiceLine] = []
    problems: list[dict[str, Any]] = []
    for index, new in enumerate(request.lines):
        amount = new.quantity * new.unit_amount
        tax_amount = 0
        if new.tax_rate_id is not None:
            rate = settings.tax_rate(new.tax_rate_id)
            if rate is None:
                problems.append(
                    {"field": f"lines.{index}.tax_rate_id", "issue": "unknown tax rate"}
                )
                continue
            tax_amount = line_tax(amount, rate.percent)
        lines.append(
            InvoiceLine(
                id=f"line_{index + 1}",
                description=new.description,
                service_date=new.service_date,
                quantity=new.quantity,
                unit_amount=new.unit_amount,
                amount=amount,
                tax_rate_id=new.tax_rate_id,
                tax_amount=tax_amount,
            )
        )
    if problems:
        raise ValidationError("The invoice has invalid lines.", problems)
    subtotal = sum(line.amount for line in lines)
    tax = sum(line.tax_amount for line in lines)
    total = subtotal + tax
    if total > MAX_AMOUNT:
        raise ValidationError(f"An invoice total may not exceed {MAX_AMOUNT}.")
    return Invoice(
        id=new_id("inv"),
        number=f"{number:06d}",
        clinic_id=clinic_id,
        patient_id=patient_id,
        status=InvoiceStatus.OPEN,
        currency=currency,
        lines=lines,
        subtotal=subtotal,
        tax=tax,
        total=total,
        amount_paid=0,
        due_date=request.due_date,
        memo=request.memo,
        created_at=now,
        created_by=actor,
        bill_to=request.bill_to,
    )


def status_after(total: int, amount_paid: int) -> InvoiceStatus:
    if amount_paid <= 0:
        return InvoiceStatus.OPEN
    if amount_paid >= total:
        return InvoiceStatus.PAID
    return InvoiceStatus.PARTIALLY_PAID


def with_payment(invoice: Invoice, ref: InvoicePaymentRef, status: InvoiceStatus) -> Invoice:
    """The invoice as a write that pays `ref.amount` onto it leaves it (what reading it again
    would give): amount paid, status, the payment listed, the date it was paid in full."""
    return replace(
        invoice,
        amount_paid=invoice.amount_paid + ref.amount,
        status=status,
        payments=[*invoice.payments, ref],
        paid_at=ref.at if status is InvoiceStatus.PAID else invoice.paid_at,
    )


def ensure_voidable(invoice: Invoice) -> None:
    if invoice.status is InvoiceStatus.VOID:
        raise ConflictError("The invoice is already void.")
    if invoice.amount_paid > 0:
        raise ConflictError("An invoice with payments on it cannot be voided.")
