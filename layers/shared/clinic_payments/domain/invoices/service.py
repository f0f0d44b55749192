"""Invoice workflows: create, read, list, void."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from clinic_payments.domain.errors import NotFoundError, ValidationError
from clinic_payments.domain.invoices.rules import NewInvoice, build_invoice, ensure_voidable
from clinic_payments.domain.model import Caller, ClinicSettings, Credit, Invoice, Page
from clinic_payments.domain.ports import (
    ClinicConfigStore,
    Clock,
    CreditLedger,
    InvoiceStore,
    PatientSummary,
)

STATUS_FILTERS = ("open", "paid", "void", "all")


@dataclass(frozen=True)
class InvoiceSummary:
    outstanding_count: int
    outstanding_amount: int
    currency: str
    available_credit: int


class InvoiceStores(InvoiceStore, CreditLedger, ClinicConfigStore, Protocol):
    """What invoicing touches: invoices and their summary, the credit shown beside them, and
    the clinic's settings."""


class InvoiceService:
    def __init__(self, repository: InvoiceStores, clock: Clock) -> None:
        self._repo = repository
        self._clock = clock

    def settings(self, clinic_id: str, *, cached: bool = False) -> ClinicSettings:
        settings = self._repo.get_settings(clinic_id, cached=cached)
        if settings is None:
            raise NotFoundError("This clinic is not set up for payments yet.")
        return settings

    def create(
        self, caller: Caller, clinic_id: str, patient_id: str, request: NewInvoice
    ) -> Invoice:
        settings = self.settings(clinic_id)
        number = self._repo.next_invoice_number(clinic_id)
        invoice = build_invoice(
            clinic_id, patient_id, request, settings, number, caller.actor(), self._clock.now()
        )
        self._repo.put_new_invoice(invoice)
        return invoice

    def get(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice:
        invoice = self._repo.get_invoice(clinic_id, patient_id, invoice_id)
        if invoice is None:
            raise NotFoundError("Invoice not found.")
        return invoice

    def list(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> tuple[Page[Invoice], InvoiceSummary]:
        if status not in STATUS_FILTERS:
            raise ValidationError(
                "status must be one of open, paid, void, all.",
                [{"field": "status", "issue": "unknown status"}],
            )
        page, kept = self._repo.list_invoices_summarized(
            clinic_id, patient_id, status, limit, cursor
        )
        settings = self.settings(clinic_id, cached=True)  # its currency only
        if kept is None or not kept.established:
            # Not kept from the start (a new account, or one from before summaries): the
            # account itself, read after the summary was, and the summary established from it.
            kept = self._establish_summary(clinic_id, patient_id, kept)
        return page, InvoiceSummary(
            outstanding_count=kept.outstanding_count,
            outstanding_amount=kept.outstanding_amount,
            currency=settings.currency,
            available_credit=kept.credits.get(settings.currency, 0),
        )

    def _establish_summary(
        self, clinic_id: str, patient_id: str, seen: PatientSummary | None
    ) -> PatientSummary:
        payable = [i for i in self._repo.all_invoices(clinic_id, patient_id) if i.is_payable]
        credits: dict[str, Credit] = self._repo.list_credits(clinic_id, patient_id)
        summary = PatientSummary(
            outstanding_count=len(payable),
            outstanding_amount=sum(i.balance_due for i in payable),
            credits={c: credit.balance for c, credit in credits.items()},
            open_invoice_ids=frozenset(i.id for i in payable),
        )
        self._repo.establish_summary(clinic_id, patient_id, summary, seen)
        return summary

    def void(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice:
        invoice = self.get(clinic_id, patient_id, invoice_id)
        ensure_voidable(invoice)
        self._repo.void_invoice(invoice, self._clock.now())
        return self.get(clinic_id, patient_id, invoice_id)
