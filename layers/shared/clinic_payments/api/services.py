"""The services routes depend on, through Powertools' `Depends`: each built on first use by
the container (wiring.py), once per container, and handed to the routes that name it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clinic_payments.wiring import container

if TYPE_CHECKING:
    from clinic_payments.domain.administering import AdminService
    from clinic_payments.domain.credit.service import CreditService
    from clinic_payments.domain.documents import DocumentService
    from clinic_payments.domain.invoices.service import InvoiceService
    from clinic_payments.domain.paylinks import PayLinkService
    from clinic_payments.domain.payments.service import PaymentService
    from clinic_payments.domain.ports import PaymentsRepository
    from clinic_payments.domain.refunds.service import RefundService
    from clinic_payments.domain.saved_cards import SavedCardService
    from clinic_payments.domain.webhooks import WebhookService


def invoices() -> InvoiceService:
    return container().invoices


def payments() -> PaymentService:
    return container().payments


def refunds() -> RefundService:
    return container().refunds


def credit() -> CreditService:
    return container().credit


def documents() -> DocumentService:
    return container().documents


def admin() -> AdminService:
    return container().admin


def webhooks() -> WebhookService:
    return container().webhooks


def saved_cards() -> SavedCardService:
    return container().saved_cards


def pay_links() -> PayLinkService:
    return container().pay_links


def repository() -> PaymentsRepository:
    return container().repository
