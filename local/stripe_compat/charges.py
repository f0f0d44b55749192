"""A charge as Stripe shows it: `payment_method_details`, and the `charge.succeeded` event.

localstripe's charges name their payment method only, and a succeeded payment emits
`payment_intent.succeeded` alone. Stripe (https://docs.stripe.com/api/charges/object,
https://docs.stripe.com/api/events/types):
- a charge carries `payment_method_details` with the card's `brand`, `last4`, `exp_month`,
  `exp_year`, `funding`, `country` and `wallet` (null unless Apple Pay, Google Pay...: then the
  PaymentMethod's `card.wallet`, same shape, see `wallets.py`), as they were when it was
  charged: what a receipt needs, without asking for the payment method;
- a successful charge emits `charge.succeeded` beside the intent's `payment_intent.succeeded`
  (their order is not guaranteed).

A bank debit's charge shows its type's details and mandate instead (`debits.charge_details`).
"""

from __future__ import annotations

import copy
from typing import Any

from localstripe.resources import Charge, Event, PaymentMethod
from localstripe.webhooks import schedule_webhook

from local.stripe_compat import debits

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    Charge.payment_method_details = property(_payment_method_details)


def _payment_method_details(charge: Any) -> dict[str, Any] | None:
    payment_method = PaymentMethod._api_retrieve(charge.payment_method)
    if debits.is_debit(payment_method):
        return debits.charge_details(charge, payment_method)
    card = getattr(payment_method, "card", None)
    if payment_method.type != "card" or not isinstance(card, dict):
        return {"type": payment_method.type}
    return {
        "type": "card",
        "card": {
            "brand": card.get("brand"),
            "last4": card.get("last4"),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
            "funding": card.get("funding", "credit"),
            "country": card.get("country", "US"),
            "wallet": copy.deepcopy(card.get("wallet")),
        },
    }


def succeeded(charge: Any) -> None:
    """`charge.succeeded`, scheduled with the intent's own event."""
    schedule_webhook(Event("charge.succeeded", charge))
