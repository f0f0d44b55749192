"""Domain objects -> response models. The one place that decides what a caller may see."""

from __future__ import annotations

from typing import Any

from clinic_payments.api.models import (
    ActivityOut,
    ActorOut,
    AllocationOut,
    AmountOwedOut,
    CardOut,
    ConsentOut,
    DisputeOut,
    FailureOut,
    InvoiceLineOut,
    InvoiceOut,
    InvoicePaymentOut,
    PayLinkPaymentOut,
    PaymentOut,
    PaymentRequestOut,
    ReceiptCardOut,
    ReceiptLineOut,
    ReceiptOut,
    RefundOut,
    SavedCardConsentOut,
    SavedCardOut,
    SettingsOut,
    StripeAccountOut,
)
from clinic_payments.domain.documents import Receipt
from clinic_payments.domain.model import (
    Actor,
    Caller,
    ClinicSettings,
    Invoice,
    LedgerEntry,
    Payment,
    Role,
    SavedCard,
    StripeAccount,
)
from clinic_payments.domain.paylinks import AmountOwed
from clinic_payments.domain.ports import PaymentRequestRecord


def actor_out(actor: Actor) -> ActorOut:
    return ActorOut(sub=actor.sub, role=actor.role.value)


def invoice_out(inv: Invoice) -> InvoiceOut:
    return InvoiceOut(
        id=inv.id,
        number=inv.number,
        clinic_id=inv.clinic_id,
        patient_id=inv.patient_id,
        status=inv.status.value,
        currency=inv.currency,
        lines=[
            InvoiceLineOut(
                id=line.id,
                description=line.description,
                service_date=line.service_date,
                quantity=line.quantity,
                unit_amount=line.unit_amount,
                amount=line.amount,
                tax_rate_id=line.tax_rate_id,
                tax_amount=line.tax_amount,
            )
            for line in inv.lines
        ],
        subtotal=inv.subtotal,
        tax=inv.tax,
        total=inv.total,
        amount_paid=inv.amount_paid,
        balance_due=inv.balance_due,
        due_date=inv.due_date,
        memo=inv.memo,
        created_at=inv.created_at,
        paid_at=inv.paid_at,
        voided_at=inv.voided_at,
        payments=[
            InvoicePaymentOut(payment_id=p.payment_id, amount=p.amount, method=p.method, at=p.at)
            for p in inv.payments
        ],
        amount_at_risk=inv.amount_at_risk,
    )


def may_see_client_secret(payment: Payment, caller: Any) -> bool:
    """The client secret completes a card payment: only its owner sees it, only while open.

    The owner is the patient the payment belongs to (or their representative), or the staff
    member who started it at the front desk; never another staff member reading it later.
    """
    if payment.is_final or not isinstance(caller, Caller):
        return False
    if caller.role is Role.PATIENT:
        return payment.patient_id in caller.patient_ids
    return caller.sub == payment.created_by.sub


def payment_out(payment: Payment, caller: Any, publishable_key: str | None = None) -> PaymentOut:
    show_secret = may_see_client_secret(payment, caller)
    return PaymentOut(
        id=payment.id,
        status=payment.status.value,
        method=payment.method.value,
        purpose=payment.purpose.value,
        amount=payment.amount,
        fee_amount=payment.fee_amount,
        charge_amount=payment.charge_amount,
        currency=payment.currency,
        allocations=[
            AllocationOut(invoice_id=a.invoice_id, amount=a.amount) for a in payment.allocations
        ],
        credit_amount=payment.credit_amount,
        client_secret=payment.client_secret if show_secret else None,
        publishable_key=publishable_key if show_secret else None,
        confirmation_number=payment.confirmation_number,
        payment_method=(
            CardOut(
                id=payment.payment_method.id,
                brand=payment.payment_method.brand,
                last4=payment.payment_method.last4,
            )
            if payment.payment_method
            else None
        ),
        failure=(
            FailureOut(
                code=payment.failure.code,
                decline_code=payment.failure.decline_code,
                message=payment.failure.message,
            )
            if payment.failure
            else None
        ),
        payer=payment.payer.value,
        reference=payment.reference,
        note=payment.note,
        receipt_email=payment.receipt_email,
        location_id=payment.location_id,
        consent=(
            ConsentOut(
                agreed=payment.consent.agreed,
                wording_version=payment.consent.wording_version,
                by=actor_out(payment.consent.by),
                at=payment.consent.at,
            )
            if payment.consent
            else None
        ),
        created_by=actor_out(payment.created_by),
        created_at=payment.created_at,
        succeeded_at=payment.succeeded_at,
        refunded_amount=payment.refunded_amount,
        refunds=[
            RefundOut(
                id=r.id,
                amount=r.amount,
                reason=r.reason,
                from_credit=r.from_credit,
                from_invoices=[
                    AllocationOut(invoice_id=a.invoice_id, amount=a.amount) for a in r.from_invoices
                ],
                from_fee=r.from_fee,
                stripe_refund_id=r.stripe_refund_id,
                actor=actor_out(r.actor),
                at=r.at,
                status=r.status,
                failure_reason=r.failure_reason,
                failed_at=r.failed_at,
                returned_to_invoices=[
                    AllocationOut(invoice_id=a.invoice_id, amount=a.amount)
                    for a in r.returned_to_invoices
                ],
                returned_to_credit=r.returned_to_credit,
            )
            for r in payment.refunds
        ],
        dispute=(
            DisputeOut(
                id=payment.dispute.id,
                amount=payment.dispute.amount,
                status=payment.dispute.status,
                reason=payment.dispute.reason,
                opened_at=payment.dispute.opened_at,
            )
            if payment.dispute
            else None
        ),
    )


def activity_out(entry: LedgerEntry) -> ActivityOut:
    return ActivityOut(
        id=entry.id,
        type=entry.type.value,
        amount=entry.amount,
        currency=entry.currency,
        invoice_id=entry.invoice_id,
        payment_id=entry.payment_id,
        location_id=entry.location_id,
        reason=entry.reason,
        actor=actor_out(entry.actor),
        at=entry.at,
    )


def saved_card_out(saved: SavedCard) -> SavedCardOut:
    card, consent = saved.card, saved.consent
    return SavedCardOut(
        id=card.id,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        consent=(
            SavedCardConsentOut(
                wording_version=consent.wording_version, by=actor_out(consent.by), at=consent.at
            )
            if consent
            else None
        ),
    )


def account_out(account: StripeAccount) -> StripeAccountOut:
    return StripeAccountOut(
        account_id=account.account_id,
        name=account.name,
        status=account.status.value,
        admin_default=account.admin_default,
        portal_default=account.portal_default,
        primary=account.primary,
        secret_key_last4=account.secret_key_last4,
        publishable_key_last4=account.publishable_key_last4,
        webhook_secret_last4=account.webhook_secret_last4,
        updated_at=account.updated_at,
        updated_by=actor_out(account.updated_by),
    )


def settings_out(s: ClinicSettings) -> SettingsOut:
    return SettingsOut(
        clinic_id=s.clinic_id,
        clinic_name=s.clinic_name,
        currency=s.currency,
        accept_portal_payments=s.accept_portal_payments,
        allow_credit_topups=s.allow_credit_topups,
        email_pay_online_requests=s.email_pay_online_requests,
        pass_processing_fees=s.pass_processing_fees,
        fee_schedule={
            m: {"percent": str(r.percent), "fixed": r.fixed} for m, r in s.fee_schedule.items()
        },
        tax_rates=[{"id": t.id, "name": t.name, "percent": str(t.percent)} for t in s.tax_rates],
        locations=[{"id": loc.id, "name": loc.name} for loc in s.locations],
        card_on_file_wording_version=s.card_on_file_wording_version,
    )


def receipt_out(receipt: Receipt) -> ReceiptOut:
    return ReceiptOut(
        payment_id=receipt.payment_id,
        confirmation_number=receipt.confirmation_number,
        clinic_name=receipt.clinic_name,
        date_posted=receipt.date_posted,
        succeeded_at=receipt.succeeded_at,
        purpose=receipt.purpose.value,
        amount=receipt.amount,
        fee_amount=receipt.fee_amount,
        total_charged=receipt.total_charged,
        currency=receipt.currency,
        method=receipt.method.value,
        card=(
            ReceiptCardOut(brand=receipt.card.brand, last4=receipt.card.last4)
            if receipt.card
            else None
        ),
        paid=[
            ReceiptLineOut(
                invoice_id=line.invoice_id, invoice_number=line.invoice_number, amount=line.amount
            )
            for line in receipt.paid
        ],
        credit_added=receipt.credit_added,
        credit_balance=receipt.credit_balance,
        payer=receipt.payer.value,
        reference=receipt.reference,
        location_id=receipt.location_id,
        location_name=receipt.location_name,
    )


def payment_request_out(record: PaymentRequestRecord, url: str) -> PaymentRequestOut:
    return PaymentRequestOut(
        id=record.id,
        invoice_id=record.invoice_id,
        email=record.email,
        url=url,
        expires_at=record.expires_at,
        created_by=actor_out(record.created_by),
        created_at=record.created_at,
    )


def amount_owed_out(owed: AmountOwed) -> AmountOwedOut:
    return AmountOwedOut(
        clinic_name=owed.clinic_name,
        invoice_number=owed.invoice_number,
        balance_due=owed.balance_due,
        currency=owed.currency,
        due_date=owed.due_date,
    )


def pay_link_payment_out(
    payment: Payment, caller: Caller, publishable_key: str | None
) -> PayLinkPaymentOut:
    """What the pay page needs to confirm the card with Stripe.js: no more of the payment."""
    show_secret = may_see_client_secret(payment, caller)
    return PayLinkPaymentOut(
        payment_id=payment.id,
        status=payment.status.value,
        amount=payment.amount,
        fee_amount=payment.fee_amount,
        charge_amount=payment.charge_amount,
        currency=payment.currency,
        client_secret=payment.client_secret if show_secret else None,
        publishable_key=publishable_key if show_secret else None,
    )
