"""Account credit: its balance and activity, applying it to an invoice, staff adjustments.

Top-ups are payments (purpose credit_topup) and settle through PaymentService like any other.
Every movement is an append-only ledger entry written in the same transaction as the balance,
so the balance is always the sum of its entries.
"""

from __future__ import annotations

from typing import Final

from clinic_payments.domain.errors import (
    ConflictError,
    InsufficientCreditError,
    NotFoundError,
    StaleWriteError,
    ValidationError,
)
from clinic_payments.domain.invoices import status_after
from clinic_payments.domain.model import (
    Caller,
    Credit,
    Invoice,
    InvoicePaymentRef,
    LedgerEntry,
    LedgerEntryType,
    Page,
)
from clinic_payments.domain.money import MAX_AMOUNT
from clinic_payments.domain.ports import Clock, CreditApplication, PaymentsRepository

APPLY_ATTEMPTS: Final = 8


class CreditService:
    def __init__(self, repository: PaymentsRepository, clock: Clock) -> None:
        self._repo = repository
        self._clock = clock

    def _currency(self, clinic_id: str, currency: str | None) -> str:
        if currency:
            return currency
        settings = self._repo.get_settings(clinic_id)
        if settings is None:
            raise NotFoundError("This clinic is not set up for payments yet.")
        return settings.currency

    def view(
        self,
        clinic_id: str,
        patient_id: str,
        currency: str | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[Credit, Page[LedgerEntry]]:
        chosen = self._currency(clinic_id, currency)
        credit = self._repo.get_credit(clinic_id, patient_id, chosen)
        activity = self._repo.list_ledger(clinic_id, patient_id, chosen, limit, cursor)
        return credit, activity

    def apply(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        amount: int | None,
        application_id: str,
    ) -> Invoice:
        """Move credit to an invoice: never more than the credit, never more than its balance."""
        for _ in range(APPLY_ATTEMPTS):
            invoice = self._repo.get_invoice(clinic_id, patient_id, invoice_id)
            if invoice is None:
                raise NotFoundError("Invoice not found.")
            if self._repo.ledger_entry_exists(clinic_id, patient_id, application_id):
                return invoice  # this application is done: a retry changes nothing
            if not invoice.is_payable:
                raise ConflictError(
                    f"The invoice has nothing left to pay ({invoice.status.value})."
                )
            credit = self._repo.get_credit(clinic_id, patient_id, invoice.currency)
            take = min(credit.balance, invoice.balance_due) if amount is None else amount
            if amount is not None and amount > invoice.balance_due:
                raise ValidationError(
                    f"The amount exceeds the invoice's balance due ({invoice.balance_due}).",
                    [{"field": "amount", "issue": "exceeds balance due"}],
                )
            if take <= 0 or take > credit.balance:
                raise InsufficientCreditError(
                    f"Available credit is {credit.balance}; {take or 'some'} was asked for.",
                    [{"field": "amount", "issue": "more than the available credit"}],
                )
            now = self._clock.now()
            write = CreditApplication(
                invoice_id=invoice.id,
                amount=take,
                seen_amount_paid=invoice.amount_paid,
                new_status=status_after(invoice.total, invoice.amount_paid + take),
                ref=InvoicePaymentRef(application_id, take, "credit", now),
                entry=LedgerEntry(
                    id=application_id,
                    type=LedgerEntryType.APPLIED,
                    amount=-take,
                    currency=invoice.currency,
                    at=now,
                    actor=caller.actor(),
                    invoice_id=invoice.id,
                ),
            )
            try:
                self._repo.apply_credit(clinic_id, patient_id, write)
            except StaleWriteError:
                continue  # the invoice moved (a payment landed): read again
            return self._repo.get_invoice(clinic_id, patient_id, invoice_id) or invoice
        raise ConflictError("The invoice is changing too fast; try again.")

    def adjust(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        amount: int,
        reason: str,
        currency: str | None,
        entry_id: str,
    ) -> LedgerEntry:
        """A staff goodwill credit or correction. Never takes the balance below zero."""
        if amount == 0 or abs(amount) > MAX_AMOUNT:
            raise ValidationError(
                "An adjustment is a non-zero amount within 99999999 minor units.",
                [{"field": "amount", "issue": "zero or out of range"}],
            )
        entry = LedgerEntry(
            id=entry_id,
            type=LedgerEntryType.ADJUSTMENT,
            amount=amount,
            currency=self._currency(clinic_id, currency),
            at=self._clock.now(),
            actor=caller.actor(),
            reason=reason,
        )
        return self._repo.adjust_credit(clinic_id, patient_id, entry)
