"""Refund events as Stripe sends them, and Stripe's refund that fails after it succeeded.

localstripe creates a refund `succeeded` and says nothing about it. Stripe
(https://docs.stripe.com/api/events/types, https://docs.stripe.com/refunds#failed-refunds):
- a refund emits `refund.created` and `charge.refunded` (with the charge);
- a refund whose state changes emits `charge.refund.updated` and `refund.updated`, and
  `refund.failed` when it fails; a failed refund has a `failure_reason`, and its money is back
  in the balance, so the charge's `amount_refunded` no longer counts it;
- the test card 4000000000005126 (https://docs.stripe.com/testing#refunds) charges fine, and
  its refunds start `succeeded` and turn `failed` with `expired_or_canceled_card` shortly after.

Events go through localstripe's own `schedule_webhook`, delivered about 1 s after scheduling.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from localstripe.resources import Charge, Event, PaymentMethod, Refund
from localstripe.webhooks import schedule_webhook

from local.stripe_compat.cards import card_number

REFUND_FAILS_LATER = "4000000000005126"
FAILURE_REASON = "expired_or_canceled_card"
# After refund.created is scheduled: an observer sees the refund succeeded before it fails.
FAILURE_DELAY_SECONDS = 1.5
FAILED_STATUSES = ("failed", "canceled")

log = logging.getLogger(__name__)
_installed = False
_original: dict[str, Any] = {}


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    _original["refund_create"] = Refund._api_create.__func__
    Refund._api_create = classmethod(_refund_create)
    Charge.amount_refunded = property(_charge_amount_refunded)


def _refund_create(cls: type, **data: Any) -> Any:
    refund = _original["refund_create"](cls, **data)
    charge = Charge._api_retrieve(refund.charge)
    # Fields of every Stripe refund that localstripe leaves out.
    refund.failure_reason = None
    if refund.payment_intent is None:
        refund.payment_intent = charge.payment_intent
    schedule_webhook(Event("refund.created", refund))
    schedule_webhook(Event("charge.refunded", charge))
    if _charged_card(charge) == REFUND_FAILS_LATER:
        _later(FAILURE_DELAY_SECONDS, lambda: fail(refund, FAILURE_REASON))
    return refund


def fail(refund: Any, reason: str, status: str = "failed") -> None:
    """The refund fails at the card's bank: Stripe's three events about it."""
    if refund.status in FAILED_STATUSES:
        return
    refund.status = status
    refund.failure_reason = reason
    schedule_webhook(Event("charge.refund.updated", refund))
    schedule_webhook(Event("refund.updated", refund))
    if status == "failed":
        schedule_webhook(Event("refund.failed", refund))


def _charged_card(charge: Any) -> str | None:
    payment_method = getattr(charge, "payment_method", None)
    if not payment_method:
        return None
    return card_number(PaymentMethod._api_retrieve(payment_method))


def _later(delay: float, action: Any) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # Outside the server (a refund made in a unit of the fake itself): nobody to tell.
        log.warning("no event loop: the refund's later failure is not scheduled")
        return
    loop.call_later(delay, action)


def _charge_amount_refunded(self: Any) -> int:
    # A failed or canceled refund's money is back: the charge no longer counts it.
    refunds = Refund._api_list_all("/v1/charges/" + self.id + "/refunds", charge=self.id)
    return sum(int(r.amount) for r in refunds._list if r.status not in FAILED_STATUSES)
