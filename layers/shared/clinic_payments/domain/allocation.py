"""Which invoices a payment pays, before the charge and again at settlement.

Nothing is lost: whatever cannot be applied to an invoice becomes the patient's credit.
"""

from __future__ import annotations

from dataclasses import dataclass

from clinic_payments.domain.errors import InvoiceNotPayableError, NotFoundError, ValidationError
from clinic_payments.domain.model import Allocation, Invoice

MAX_ALLOCATIONS = 50  # a settlement is one DynamoDB transaction (100 items at most)


@dataclass(frozen=True)
class RequestedAllocation:
    invoice_id: str
    amount: int | None = None


@dataclass(frozen=True)
class PaymentPlan:
    allocations: list[Allocation]
    credit_amount: int
    currency: str | None

    @property
    def amount(self) -> int:
        return sum(a.amount for a in self.allocations) + self.credit_amount


def plan_payment(
    requested: list[RequestedAllocation] | None,
    amount: int | None,
    invoices: list[Invoice],
) -> PaymentPlan:
    """Resolve a payment request against the patient's invoices (read consistently).

    - allocations only: each takes its amount, or the invoice's balance due;
    - allocations and amount: amount must cover them; the rest becomes credit;
    - amount only: applied to payable invoices oldest first; the rest becomes credit.
    """
    by_id = {inv.id: inv for inv in invoices}
    if requested:
        if len(requested) > MAX_ALLOCATIONS:
            raise ValidationError(f"A payment pays at most {MAX_ALLOCATIONS} invoices.")
        seen: set[str] = set()
        allocations: list[Allocation] = []
        currencies: set[str] = set()
        for index, req in enumerate(requested):
            field = f"allocations.{index}"
            if req.invoice_id in seen:
                raise ValidationError(
                    "An invoice appears twice in allocations.",
                    [{"field": f"{field}.invoice_id", "issue": "duplicate invoice"}],
                )
            seen.add(req.invoice_id)
            invoice = by_id.get(req.invoice_id)
            if invoice is None:
                raise NotFoundError(f"Invoice {req.invoice_id} was not found.")
            if not invoice.is_payable:
                raise InvoiceNotPayableError(
                    f"Invoice {invoice.id} has nothing left to pay ({invoice.status.value}).",
                    [{"field": f"{field}.invoice_id", "issue": "invoice not payable"}],
                )
            take = invoice.balance_due if req.amount is None else req.amount
            if take > invoice.balance_due:
                raise ValidationError(
                    f"The amount for invoice {invoice.id} exceeds its balance due "
                    f"({invoice.balance_due}).",
                    [{"field": f"{field}.amount", "issue": "exceeds balance due"}],
                )
            allocations.append(Allocation(invoice.id, take))
            currencies.add(invoice.currency)
        if len(currencies) > 1:
            raise ValidationError("All invoices of one payment must share a currency.")
        allocated = sum(a.amount for a in allocations)
        if amount is not None and amount < allocated:
            raise ValidationError(
                f"amount ({amount}) does not cover the allocations ({allocated}).",
                [{"field": "amount", "issue": "less than the allocations"}],
            )
        credit = 0 if amount is None else amount - allocated
        return PaymentPlan(allocations, credit, currencies.pop())
    if amount is None:
        raise ValidationError(
            "Give allocations, an amount, or both.",
            [{"field": "amount", "issue": "required without allocations"}],
        )
    payable = sorted((i for i in invoices if i.is_payable), key=lambda i: (i.created_at, i.id))
    remaining = amount
    allocations = []
    currency: str | None = None
    for invoice in payable:
        if remaining == 0 or len(allocations) == MAX_ALLOCATIONS:
            break
        if currency is not None and invoice.currency != currency:
            continue
        currency = invoice.currency
        take = min(remaining, invoice.balance_due)
        allocations.append(Allocation(invoice.id, take))
        remaining -= take
    return PaymentPlan(allocations, remaining, currency)


@dataclass(frozen=True)
class Settlement:
    applied: list[Allocation]  # what each invoice actually receives (no zero entries)
    credit: int  # what goes to the patient's credit


def plan_settlement(
    amount: int, intended: list[Allocation], current: dict[str, Invoice]
) -> Settlement:
    """Apply `amount` as intended, capped by each invoice's balance due right now.

    An invoice paid or voided meanwhile takes less (or nothing); the rest becomes credit.
    """
    remaining = amount
    applied: list[Allocation] = []
    for alloc in intended:
        invoice = current.get(alloc.invoice_id)
        due = invoice.balance_due if invoice is not None else 0
        take = max(0, min(alloc.amount, due, remaining))
        if take and invoice is not None:
            applied.append(Allocation(alloc.invoice_id, take, invoice.number))
            remaining -= take
    return Settlement(applied, remaining)
