"""Domain objects -> response models. The one place that decides what a caller may see."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from clinic_payments.api.models import (
    ActivityOut,
    ActorOut,
    AllocationOut,
    AmountOwedOut,
    CardOut,
    ConsentOut,
    DisputeOut,
    FailureOut,
    InvoiceOut,
    PayLinkPaymentOut,
    PaymentOut,
    PaymentRequestOut,
    ProfileOut,
    ReceiptOut,
    RefundOut,
    RefundReceiptOut,
    SavedCardConsentOut,
    SavedCardOut,
    SettingsOut,
    StripeAccountOut,
)
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
from clinic_payments.domain.ports import PaymentRequestRecord

if TYPE_CHECKING:
    # Named for typing only: a function that renders no receipt or pay link loads neither.
    from clinic_payments.domain.documents import Receipt, RefundReceipt
    from clinic_payments.domain.paylinks import AmountOwed

_M = TypeVar("_M", bound=BaseModel)


def copied(model: type[_M], source: object) -> _M:
    """A straight copy: each field of the response read from the attribute of the same name
    (nested models too; enums become their values). Where a field is hidden from some callers
    or computed for the response, the presenter says so by hand instead."""
    return model.model_validate(source, from_attributes=True)


def actor_out(actor: Actor) -> ActorOut:
    return copied(ActorOut, actor)


def invoice_out(inv: Invoice) -> InvoiceOut:
    return copied(InvoiceOut, inv)


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
        allocations=[copied(AllocationOut, a) for a in payment.allocations],
        credit_amount=payment.credit_amount,
        client_secret=payment.client_secret if show_secret else None,
        publishable_key=publishable_key if show_secret else None,
        confirmation_number=payment.confirmation_number,
        payment_method=copied(CardOut, payment.payment_method) if payment.payment_method else None,
        failure=copied(FailureOut, payment.failure) if payment.failure else None,
        payer=payment.payer.value,
        reference=payment.reference,
        note=payment.note,
        receipt_email=payment.receipt_email,
        location_id=payment.location_id,
        consent=copied(ConsentOut, payment.consent) if payment.consent else None,
        created_by=actor_out(payment.created_by),
        created_at=payment.created_at,
        succeeded_at=payment.succeeded_at,
        refunded_amount=payment.refunded_amount,
        refunds=[copied(RefundOut, r) for r in payment.refunds],
        dispute=copied(DisputeOut, payment.dispute) if payment.dispute else None,
    )


def activity_out(entry: LedgerEntry) -> ActivityOut:
    return copied(ActivityOut, entry)


def saved_card_out(saved: SavedCard) -> SavedCardOut:
    card, consent = saved.card, saved.consent
    return SavedCardOut(
        id=card.id,
        brand=card.brand,
        last4=card.last4,
        exp_month=card.exp_month,
        exp_year=card.exp_year,
        wallet=card.wallet,
        consent=copied(SavedCardConsentOut, consent) if consent else None,
    )


def account_out(account: StripeAccount) -> StripeAccountOut:
    return copied(StripeAccountOut, account)


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
        timezone=s.timezone,
        profile=copied(ProfileOut, s.profile),
    )


def receipt_out(receipt: Receipt) -> ReceiptOut:
    return copied(ReceiptOut, receipt)


def refund_receipt_out(receipt: RefundReceipt) -> RefundReceiptOut:
    return copied(RefundReceiptOut, receipt)


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
    return copied(AmountOwedOut, owed)


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
