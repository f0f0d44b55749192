"""Payment state rules: states only move forward, whatever order Stripe's events arrive in."""

from __future__ import annotations

from clinic_payments.domain.model import Payment, PaymentStatus

# Stripe PaymentIntent status -> our payment status.
_FROM_INTENT = {
    "requires_payment_method": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_confirmation": PaymentStatus.REQUIRES_PAYMENT_METHOD,
    "requires_action": PaymentStatus.REQUIRES_ACTION,
    "processing": PaymentStatus.PROCESSING,
    "requires_capture": PaymentStatus.PROCESSING,
    "succeeded": PaymentStatus.SUCCEEDED,
    "canceled": PaymentStatus.CANCELED,
}

# How far along a payment is. A move to a lower rank is an out-of-order event and is ignored,
# except that a failed attempt may be retried (Stripe returns the intent to
# requires_payment_method, and the portal confirms again).
_RANK = {
    PaymentStatus.REQUIRES_PAYMENT_METHOD: 0,
    PaymentStatus.FAILED: 0,
    # Both in flight: a saved-card charge is recorded as processing (outcome unknown) before
    # Stripe answers, and may then need the cardholder's action. Either may follow the other.
    PaymentStatus.REQUIRES_ACTION: 2,
    PaymentStatus.PROCESSING: 2,
    PaymentStatus.SUCCEEDED: 3,
    PaymentStatus.CANCELED: 3,
}


def status_from_intent(intent_status: str) -> PaymentStatus:
    return _FROM_INTENT.get(intent_status, PaymentStatus.PROCESSING)


def may_move(current: PaymentStatus, new: PaymentStatus) -> bool:
    """True when `new` is progress from `current` (final states never move)."""
    if current in (PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED):
        return False
    if new == current:
        return False
    if new is PaymentStatus.FAILED:
        return current in (
            PaymentStatus.REQUIRES_PAYMENT_METHOD,
            PaymentStatus.REQUIRES_ACTION,
            PaymentStatus.PROCESSING,
        )
    return _RANK[new] >= _RANK[current]


def statuses_before(new: PaymentStatus) -> list[PaymentStatus]:
    """Every status from which `new` is a forward move (the write's condition)."""
    return [s for s in PaymentStatus if may_move(s, new)]


def awaits_outcome(payment: Payment) -> bool:
    """Whether the reconciler keeps an eye on this payment (the pending index).

    Every non-final payment, including a failed attempt on an intent: failed is not final, the
    payer may confirm the same intent again, and if that webhook is lost only the reconciler
    settles it. A failure Stripe never saw (no intent) has nothing left to wait for.
    """
    if payment.is_final:
        return False
    if payment.status is PaymentStatus.FAILED:
        return payment.stripe_payment_intent_id is not None
    return True
