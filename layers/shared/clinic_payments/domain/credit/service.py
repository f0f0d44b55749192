"""Account credit: its balance and activity, applying it to an invoice, staff adjustments.

Top-ups are payments (purpose credit_topup) and settle through PaymentService like any other.
Every movement is an append-only ledger entry written in the same transaction as the balance
and its lots (credit/lots.py), conditioned on the credit as read, so the balance is always the
sum of its entries and never spent twice. Spending takes the oldest lots first.
"""

from __future__ import annotations

from typing import Protocol

from clinic_payments.domain.contention import until_written
from clinic_payments.domain.credit.lots import add_to_lot, plan_oldest_first, take
from clinic_payments.domain.errors import (
    InsufficientCreditError,
    InvoiceNotPayableError,
    NotFoundError,
    ValidationError,
)
from clinic_payments.domain.invoices.rules import with_payment
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
from clinic_payments.domain.ports import (
    Answering,
    ClinicConfigStore,
    Clock,
    CreditApplication,
    CreditChange,
    CreditLedger,
    InvoiceAmountChange,
    InvoiceStore,
    PaymentStore,
)


class CreditStores(CreditLedger, InvoiceStore, PaymentStore, ClinicConfigStore, Protocol):
    """What moving credit touches: the ledger, the invoice it pays, the patient's reads, and
    the clinic's settings."""


class CreditService:
    def __init__(self, repository: CreditStores, clock: Clock) -> None:
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
        *,
        fresh: bool = False,
        answer: Answering[Invoice] | None = None,
    ) -> Invoice:
        """Move credit to an invoice: never more than the credit, never more than its balance.

        One read (the invoice and the credit of the clinic's currency) and one transaction
        (which records the request's answer too). `fresh`: a first attempt, so this
        application cannot have been made already."""
        settings = self._repo.get_settings(clinic_id, cached=True)
        currencies = (settings.currency,) if settings else ()
        if not fresh and self._repo.ledger_entry_exists(clinic_id, patient_id, application_id):
            # This application is done: a retry changes nothing.
            return self._invoice(clinic_id, patient_id, invoice_id)

        def attempt(_: int) -> Invoice:
            # Read last, right before the write: the shorter the time between, the fewer
            # writers of the same credit make each other read again.
            reads = self._repo.read_patient(
                clinic_id, patient_id, invoice_ids=(invoice_id,), currencies=currencies
            )
            invoice = reads.invoices.get(invoice_id)
            if invoice is None:
                raise NotFoundError("Invoice not found.")
            if not invoice.is_payable:
                raise InvoiceNotPayableError(
                    f"The invoice has nothing left to pay ({invoice.status.value})."
                )
            credit = reads.credits.get(invoice.currency) or self._repo.get_credit(
                clinic_id, patient_id, invoice.currency
            )
            wanted = min(credit.balance, invoice.balance_due) if amount is None else amount
            if amount is not None and amount > invoice.balance_due:
                raise ValidationError(
                    f"The amount exceeds the invoice's balance due ({invoice.balance_due}).",
                    [{"field": "amount", "issue": "exceeds balance due"}],
                )
            if wanted <= 0 or wanted > credit.balance:
                raise InsufficientCreditError(
                    f"Available credit is {credit.balance}; {wanted or 'some'} was asked for.",
                    [{"field": "amount", "issue": "more than the available credit"}],
                )
            now = self._clock.now()
            entry = LedgerEntry(
                id=application_id,
                type=LedgerEntryType.APPLIED,
                amount=-wanted,
                currency=invoice.currency,
                at=now,
                actor=caller.actor(),
                invoice_id=invoice.id,
            )
            write = CreditApplication(
                invoice=InvoiceAmountChange.of(
                    invoice, wanted, InvoicePaymentRef(application_id, wanted, "credit", now)
                ),
                credit=CreditChange(entry, credit, take(credit, plan_oldest_first(credit, wanted))),
            )
            applied = with_payment(invoice, write.invoice.ref, write.invoice.new_status)
            recorded = answer(applied) if answer is not None else None
            # StaleWriteError: the invoice or the credit moved (a payment, a refund): read again
            written = self._repo.apply_credit(clinic_id, patient_id, write, recorded)
            if not written:  # made already by an earlier attempt of this request
                return self._invoice(clinic_id, patient_id, invoice_id)
            if answer is not None and recorded is not None:
                answer.committed(recorded)
            return applied

        return until_written(attempt, "The invoice is changing too fast; try again.")

    def _invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice:
        invoice = self._repo.get_invoice(clinic_id, patient_id, invoice_id)
        if invoice is None:
            raise NotFoundError("Invoice not found.")
        return invoice

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
        """A staff goodwill credit (its own lot) or a correction (from the oldest lots first).
        Never takes the balance below zero."""
        if amount == 0 or abs(amount) > MAX_AMOUNT:
            raise ValidationError(
                "An adjustment is a non-zero amount within 99999999 minor units.",
                [{"field": "amount", "issue": "zero or out of range"}],
            )
        chosen = self._currency(clinic_id, currency)

        def attempt(_: int) -> LedgerEntry:
            entry = LedgerEntry(
                id=entry_id,
                type=LedgerEntryType.ADJUSTMENT,
                amount=amount,
                currency=chosen,
                at=self._clock.now(),
                actor=caller.actor(),
                reason=reason,
            )
            credit = self._repo.get_credit(clinic_id, patient_id, chosen)
            if amount > 0:
                new = add_to_lot(credit, entry_id, amount, entry.at)
            elif credit.balance + amount < 0:
                if self._repo.ledger_entry_exists(clinic_id, patient_id, entry_id):
                    return self._repo.adjust_credit(
                        clinic_id, patient_id, CreditChange(entry, credit, credit)
                    )  # recorded already: the repository answers the first entry
                raise InsufficientCreditError("The adjustment would take the credit below zero.")
            else:
                new = take(credit, plan_oldest_first(credit, -amount))
            return self._repo.adjust_credit(clinic_id, patient_id, CreditChange(entry, credit, new))

        return until_written(attempt, "The credit is changing too fast; try again.")
