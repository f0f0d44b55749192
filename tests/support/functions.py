"""Which functions call Stripe (by the services their routes or schedules use), for the cold-start
test and `make bench`: those import stripe-python at init, the others never import it."""

from __future__ import annotations

CALLS_STRIPE = frozenset(
    {
        "pay_invoice",
        "pay_links",  # a pay link starts a card payment
        "refund_payment",
        "reconcile_payments",
        "saved_cards",
        "stripe_webhook",
        "topup_credit",
    }
)
