"""Stripe webhooks: verify, deduplicate, settle through the one settlement path; reconcile
saved cards (setup_intent.succeeded); record refunds and their failures.

A correctly signed event whose shape this API does not understand is answered 2xx and marked
processed like any other: any other answer and Stripe retries it for days, then disables the
endpoint, and no retry would make it readable."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Protocol

from clinic_payments.domain.errors import WebhookSignatureError
from clinic_payments.domain.model import (
    ChargeSnapshot,
    DisputeSnapshot,
    IntentSnapshot,
    RefundSnapshot,
    WebhookEvent,
)
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.ports import (
    ClinicSecrets,
    EventMark,
    PaymentStore,
    SettleResult,
    StripeGateways,
    StripeObjectLink,
    WebhookEventLog,
    WebhookVerifier,
)
from clinic_payments.domain.refunds.service import RefundService
from clinic_payments.domain.saved_cards import SavedCardService

log = logging.getLogger(__name__)

INTENT_EVENTS = frozenset(
    {
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.processing",
        "payment_intent.requires_action",
        "payment_intent.canceled",
        "payment_intent.created",
        "payment_intent.amount_capturable_updated",
    }
)


DISPUTE_EVENTS = frozenset(
    {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
)

# Events carrying one refund object: a refund made (in the dashboard too) or its state moved.
REFUND_EVENTS = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)


class WebhookOutcome(StrEnum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # an object this API does not know, or a type it does not handle
    UNEXPECTED_SHAPE = "unexpected_shape"  # signed, but not an object shape this API reads


class WebhookStores(WebhookEventLog, PaymentStore, Protocol):
    """What the webhook touches itself (settlement goes through the payment service): event
    marks, and the payments Stripe's objects point to."""


class WebhookService:
    def __init__(
        self,
        repository: WebhookStores,
        payments: PaymentService,
        secrets: ClinicSecrets,
        verifier: WebhookVerifier,
        refunds: RefundService,
        stripe: StripeGateways,
        saved_cards: SavedCardService,
    ) -> None:
        self._repo = repository
        self._payments = payments
        self._secrets = secrets
        self._verifier = verifier
        self._refunds = refunds
        self._stripe = stripe
        self._saved_cards = saved_cards

    def handle(
        self, clinic_id: str, account_id: str, payload: bytes, signature: str | None
    ) -> WebhookOutcome:
        keys = self._secrets.get_keys(clinic_id, account_id)
        if keys is None or not signature:
            raise WebhookSignatureError("Unknown clinic account or missing signature.")
        event = self._verifier.verify(payload, signature, keys.webhook_secret)
        account_key = f"{clinic_id}#{account_id}"
        if event.type == "payment_intent.succeeded" and event.intent is not None:
            settled = self._intent_succeeded(clinic_id, account_id, event, account_key)
            if settled is not None:
                return settled
        if self._repo.event_processed(account_key, event.id):
            return WebhookOutcome.DUPLICATE
        if event.unexpected_shape is not None:
            log.warning(
                "stripe event of an unexpected shape",
                extra={"event_type": event.type, "problem": event.unexpected_shape},
            )
            outcome = WebhookOutcome.UNEXPECTED_SHAPE
        else:
            outcome = self._dispatch(clinic_id, account_id, event)
        # Marked only now that its effects have committed: a failure above answers 5xx and
        # Stripe delivers the event again.
        self._repo.mark_event_processed(account_key, event.id, event.type)
        return outcome

    def _intent_succeeded(
        self, clinic_id: str, account_id: str, event: WebhookEvent, account_key: str
    ) -> WebhookOutcome | None:
        """The money event, in two round trips: the ids in the intent's metadata (signed by
        Stripe) name what to read, and the settlement marks the event in its own transaction.
        None: not an intent of ours by its metadata; the general path looks it up."""
        intent = event.intent
        meta = intent.metadata if intent is not None else {}
        if intent is None or meta.get("clinic_id") != clinic_id:
            return None
        if not meta.get("patient_id") or not meta.get("payment_id"):
            return None
        link = StripeObjectLink(clinic_id, meta["patient_id"], meta["payment_id"], account_id)
        mark = EventMark(account_key, event.id, event.type)
        result = self._payments.settle_event(link, intent, mark)
        if result is None:
            return None
        if result is SettleResult.DUPLICATE_EVENT:
            return WebhookOutcome.DUPLICATE
        if result is SettleResult.NOT_SETTLEABLE:
            # Settled before (the synchronous answer, or the reconciler): marked alone.
            self._repo.mark_event_processed(account_key, event.id, event.type)
        return WebhookOutcome.PROCESSED

    def _dispatch(self, clinic_id: str, account_id: str, event: WebhookEvent) -> WebhookOutcome:
        if event.type == "charge.refunded" and event.charge is not None:
            return self._charge_refunded(clinic_id, account_id, event.charge)
        if event.type == "charge.succeeded" and event.charge is not None:
            return self._charge_succeeded(clinic_id, account_id, event.charge)
        if event.type in REFUND_EVENTS and event.refund is not None:
            return self._refund(clinic_id, account_id, event.refund)
        if event.type in DISPUTE_EVENTS and event.dispute is not None:
            return self._dispute(clinic_id, account_id, event.dispute)
        if event.type == "setup_intent.succeeded" and event.setup_intent is not None:
            known = self._saved_cards.record_setup(clinic_id, account_id, event.setup_intent)
            return WebhookOutcome.PROCESSED if known else WebhookOutcome.IGNORED
        if event.type not in INTENT_EVENTS or event.intent is None:
            return WebhookOutcome.IGNORED
        link = self._link(clinic_id, account_id, event.intent)
        if link is None:
            return WebhookOutcome.IGNORED
        if event.type == "payment_intent.payment_failed":
            self._payments.record_failure(link, event.intent)
        else:
            self._payments.settle_intent(link, event.intent)
        return WebhookOutcome.PROCESSED

    def _charge_refunded(
        self, clinic_id: str, account_id: str, charge: ChargeSnapshot
    ) -> WebhookOutcome:
        link = self._link_intent_id(clinic_id, account_id, charge.payment_intent_id)
        if link is None:
            return WebhookOutcome.IGNORED
        refunds = charge.refunds
        if refunds is None:
            gateway = self._stripe.for_account(clinic_id, account_id)
            refunds = gateway.list_refunds(str(charge.payment_intent_id))
        self._refunds.charge_refunded(link, refunds)
        return WebhookOutcome.PROCESSED

    def _charge_succeeded(
        self, clinic_id: str, account_id: str, charge: ChargeSnapshot
    ) -> WebhookOutcome:
        """The card as charged (brand, last four) for the payment and its receipt: a payment
        confirmed in the portal learns it here, never by asking Stripe again."""
        link = self._link_intent_id(clinic_id, account_id, charge.payment_intent_id)
        if link is None or charge.card is None or charge.payment_intent_id is None:
            return WebhookOutcome.IGNORED
        if not self._repo.record_card_details(link, charge.payment_intent_id, charge.card):
            return WebhookOutcome.IGNORED
        return WebhookOutcome.PROCESSED

    def _refund(self, clinic_id: str, account_id: str, refund: RefundSnapshot) -> WebhookOutcome:
        link = self._link_of_charge(
            clinic_id, account_id, refund.payment_intent_id, refund.charge_id
        )
        if link is None:
            return WebhookOutcome.IGNORED
        self._refunds.refund_changed(link, refund)
        return WebhookOutcome.PROCESSED

    def _dispute(self, clinic_id: str, account_id: str, dispute: DisputeSnapshot) -> WebhookOutcome:
        link = self._link_of_charge(
            clinic_id, account_id, dispute.payment_intent_id, dispute.charge_id
        )
        if link is None:
            return WebhookOutcome.IGNORED
        self._refunds.dispute_changed(link, dispute)
        return WebhookOutcome.PROCESSED

    def _link_of_charge(
        self, clinic_id: str, account_id: str, intent_id: str | None, charge_id: str | None
    ) -> StripeObjectLink | None:
        """Refunds and disputes name their intent, or only their charge (asked of Stripe)."""
        if intent_id is None and charge_id:
            gateway = self._stripe.for_account(clinic_id, account_id)
            intent_id = gateway.payment_intent_of_charge(charge_id)
        return self._link_intent_id(clinic_id, account_id, intent_id)

    def _link_intent_id(
        self, clinic_id: str, account_id: str, intent_id: str | None
    ) -> StripeObjectLink | None:
        if not intent_id:
            return None
        link = self._repo.get_stripe_link(intent_id)
        if link is None or link.clinic_id != clinic_id or link.account_id != account_id:
            return None
        return link

    def _link(
        self, clinic_id: str, account_id: str, intent: IntentSnapshot
    ) -> StripeObjectLink | None:
        link = self._repo.get_stripe_link(intent.id)
        if link is None:
            # The request that created this intent may have died before recording it: the
            # intent's metadata (ids only, signed by Stripe) says which payment it is.
            meta = intent.metadata
            if meta.get("clinic_id") != clinic_id or not meta.get("payment_id"):
                return None
            link = StripeObjectLink(
                clinic_id, meta.get("patient_id", ""), meta["payment_id"], account_id
            )
        if link.clinic_id != clinic_id or link.account_id != account_id:
            return None
        return link
