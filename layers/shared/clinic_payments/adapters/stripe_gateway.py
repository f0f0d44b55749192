"""Stripe, through each clinic account's own key: one StripeClient per key, never stripe.api_key.

Every call's parameters are stripe-python's own TypedDicts, so mypy checks each name we send.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import stripe
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from clinic_payments.domain.errors import (
    AmountTooSmallError,
    CardDeclinedError,
    ConflictError,
    DomainError,
    NotFoundError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
    WebhookSignatureError,
)
from clinic_payments.domain.model import (
    CardSummary,
    ChargeSnapshot,
    DisputeSnapshot,
    Failure,
    IntentSnapshot,
    RefundSnapshot,
    SetupIntentSnapshot,
    WebhookEvent,
)

if TYPE_CHECKING:
    # TypedDicts, for mypy only: at run time stripe.params (an index of thousands of names,
    # compiled on every cold start) would be imported for nothing.
    from stripe.params import (
        CustomerCreateParams,
        PaymentIntentCreateParams,
        PaymentIntentCreateParamsAutomaticPaymentMethods,
        PaymentMethodListParams,
        RefundCreateParams,
        RefundListParams,
        SetupIntentCreateParams,
        SetupIntentCreateParamsAutomaticPaymentMethods,
    )

# The one place the Stripe API version is chosen: every request sends it, and each clinic's
# webhook endpoint must be created with it (docs/deploy.md), so events arrive in the shapes this
# adapter reads. It is the version stripe-python was generated for (its `stripe.params` types);
# a unit test fails when an SDK upgrade moves it, so that the change is made here on purpose.
STRIPE_API_VERSION = "2026-10-28.endive"
# Since 2023-08-16 an intent without payment method types takes the methods enabled in the
# Dashboard, redirects allowed, and a confirm with the secret key (a card on file) or by
# Stripe.js then needs a `return_url`; since 2026-09-30.endive `payment_method_types` cannot be
# written at all. A card never redirects: `allow_redirects=never` is Stripe's documented way to
# confirm without a return URL (docs/stripe-fidelity.md).
NO_REDIRECTS: PaymentIntentCreateParamsAutomaticPaymentMethods = {
    "enabled": True,
    "allow_redirects": "never",
}
SETUP_NO_REDIRECTS: SetupIntentCreateParamsAutomaticPaymentMethods = {
    "enabled": True,
    "allow_redirects": "never",
}
WEBHOOK_TOLERANCE_SECONDS = 300
# Stripe's own advice is to retry with the same idempotency key; the SDK does so for network
# errors and 5xx/409. Connect fast, allow a charge time to answer, stay inside API Gateway's 29 s.
_TIMEOUT = (3.05, 12.0)
_RETRIES = 2
GENERIC_DESCRIPTION = "Clinic services"  # never names a service, a diagnosis or a patient
# One page of a customer's cards: a patient keeps a handful, so one page lists them all.
CARDS_PAGE_SIZE = 100


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _wallet(card: dict[str, Any]) -> str | None:
    """`card.wallet.type`, the same on a PaymentMethod and in a charge's
    payment_method_details: apple_pay, google_pay, or another wallet Stripe reports (kept as
    it is); None for a card not presented through a wallet."""
    wallet = card.get("wallet")
    return _text(wallet.get("type")) if isinstance(wallet, dict) else None


def _card(pm: Any) -> CardSummary | None:
    if not pm or not isinstance(pm, dict):
        return None
    card = pm.get("card")
    if not isinstance(card, dict):
        card = {}
    # Only values of the types stored: a signed event of another shape must not become a
    # record that cannot be read back.
    return CardSummary(
        id=str(pm["id"]),
        brand=_text(card.get("brand")),
        last4=_text(card.get("last4")),
        exp_month=_number(card.get("exp_month")),
        exp_year=_number(card.get("exp_year")),
        wallet=_wallet(card),
    )


def _failure(error: Any) -> Failure | None:
    if not error or not isinstance(error, dict):
        return None
    return Failure(
        code=error.get("code"),
        decline_code=error.get("decline_code"),
        message=str(error.get("message") or "The payment failed."),
    )


def intent_snapshot(data: dict[str, Any]) -> IntentSnapshot:
    """A PaymentIntent (from the API or an event) as the domain sees it."""
    pm = data.get("payment_method")
    customer = data.get("customer")
    status = str(data.get("status"))
    amount = int(data.get("amount") or 0)
    received = data.get("amount_received")
    if received is None:
        # Stripe always sends it; a succeeded intent without it captured its whole amount.
        received = amount if status == "succeeded" else 0
    return IntentSnapshot(
        id=str(data["id"]),
        status=status,
        amount=amount,
        amount_received=int(received),
        currency=str(data.get("currency") or ""),
        client_secret=data.get("client_secret"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
        payment_method=_card(pm)
        if isinstance(pm, dict)
        else (CardSummary(pm, None, None) if pm else None),
        last_error=_failure(data.get("last_payment_error")),
        customer=customer if isinstance(customer, str) else (customer or {}).get("id"),
    )


def _id_of(value: Any) -> str | None:
    """An expandable field: the object's id whether Stripe sent the id or the object."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("id"):
        return str(value["id"])
    return None


def setup_intent_snapshot(data: dict[str, Any]) -> SetupIntentSnapshot:
    """A SetupIntent (from the API or an event) as the domain sees it."""
    return SetupIntentSnapshot(
        id=str(data["id"]),
        status=str(data.get("status")),
        client_secret=data.get("client_secret"),
        customer=_id_of(data.get("customer")),
        payment_method=_id_of(data.get("payment_method")),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


STRIPE_AMOUNT_LIMITS = ("amount_too_small", "amount_too_large")


def _translate(exc: stripe.StripeError) -> DomainError:
    if isinstance(exc, stripe.CardError):
        error = exc.error
        return CardDeclinedError(
            exc.user_message or "The card was declined.",
            [
                {
                    "code": exc.code,
                    "decline_code": getattr(error, "decline_code", None),
                    "message": exc.user_message,
                }
            ],
        )
    if isinstance(exc, (stripe.APIConnectionError, stripe.APIError, stripe.RateLimitError)):
        return PaymentProviderUnavailableError(
            "Stripe did not answer in time; the payment's outcome will be confirmed shortly."
        )
    if isinstance(exc, (stripe.AuthenticationError, stripe.PermissionError)):
        return PaymentProviderUnavailableError(
            "The clinic's Stripe account did not accept our credentials."
        )
    if isinstance(exc, stripe.IdempotencyError):
        return ConflictError("A retried request differed from the first; nothing was charged.")
    if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing":
        return NotFoundError("Not found at Stripe.")
    if isinstance(exc, stripe.InvalidRequestError) and exc.code in STRIPE_AMOUNT_LIMITS:
        # Stripe's limits in a currency this API has no table for (money.MINIMUM_CHARGE).
        return AmountTooSmallError(
            exc.user_message or "Stripe refused this amount for the currency.",
            [{"field": "amount", "issue": str(exc.code), "code": str(exc.code)}],
        )
    return PaymentFailedError(exc.user_message or "Stripe refused the payment request.")


class StripeGateway:
    """The StripeGateway port for one clinic account."""

    def __init__(self, client: stripe.StripeClient) -> None:
        self._client = client

    def create_customer(self, clinic_id: str, patient_id: str, idempotency_key: str) -> str:
        # Ids only: Stripe is not a HIPAA business associate, so no name, no email.
        params: CustomerCreateParams = {
            "metadata": {"clinic_id": clinic_id, "patient_id": patient_id},
        }
        try:
            customer = self._client.v1.customers.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return str(customer.id)

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str,
        metadata: dict[str, str],
        idempotency_key: str,
        payment_method: str | None,
        confirm: bool,
        off_session: bool,
        save_card: bool,
        receipt_email: str | None,
    ) -> IntentSnapshot:
        params: PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "metadata": metadata,
            "description": GENERIC_DESCRIPTION,
            "automatic_payment_methods": NO_REDIRECTS,
        }
        if payment_method:
            params["payment_method"] = payment_method
            # The card's brand and last four come back with the intent: no second request.
            params["expand"] = ["payment_method"]
        if confirm:
            params["confirm"] = True
            if off_session:
                params["off_session"] = True
        if save_card and not off_session:
            # Stripe refuses setup_future_usage beside off_session=true: a card charged while
            # the patient is away is already saved.
            params["setup_future_usage"] = "off_session"
        if receipt_email:
            params["receipt_email"] = receipt_email
        try:
            intent = self._client.v1.payment_intents.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.CardError as exc:
            # A confirm-time decline still created an intent: keep it, Stripe recorded it.
            failed_intent = getattr(exc.error, "payment_intent", None)
            if failed_intent is not None:
                return intent_snapshot(failed_intent.to_dict())
            raise _translate(exc) from exc
        except stripe.InvalidRequestError as exc:
            if payment_method and (exc.param == "payment_method" or exc.code == "resource_missing"):
                # Stripe's own rule: a card attached to another customer, detached, or unknown.
                raise NotFoundError("That saved card was not found for this patient.") from exc
            raise _translate(exc) from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return intent_snapshot(intent.to_dict())

    def retrieve_payment_intent(self, intent_id: str) -> IntentSnapshot:
        try:
            intent = self._client.v1.payment_intents.retrieve(
                intent_id, params={"expand": ["payment_method"]}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return intent_snapshot(intent.to_dict())

    def retrieve_payment_method(self, payment_method_id: str) -> tuple[CardSummary, str | None]:
        try:
            pm = self._client.v1.payment_methods.retrieve(payment_method_id)
        except stripe.InvalidRequestError as exc:
            raise NotFoundError("That saved card was not found for this patient.") from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        data = pm.to_dict()
        card = _card(data) or CardSummary(payment_method_id, None, None)
        customer = data.get("customer")
        owner = customer if isinstance(customer, str) else (customer or {}).get("id")
        return card, owner

    def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundSnapshot:
        params: RefundCreateParams = {
            "payment_intent": payment_intent_id,
            "amount": amount,
            "metadata": metadata,
        }
        if reason in ("duplicate", "fraudulent", "requested_by_customer"):
            params["reason"] = reason
        try:
            refund = self._client.v1.refunds.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return refund_snapshot(refund.to_dict())

    def list_refunds(self, payment_intent_id: str) -> list[RefundSnapshot]:
        params: RefundListParams = {"payment_intent": payment_intent_id, "limit": 100}
        try:
            refunds = self._client.v1.refunds.list(params=params)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return [refund_snapshot(r.to_dict()) for r in refunds.data]

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        try:
            charge = self._client.v1.charges.retrieve(charge_id)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        intent = charge.payment_intent
        return intent if isinstance(intent, str) or intent is None else str(intent.id)

    def create_setup_intent(
        self, *, customer: str, metadata: dict[str, str], idempotency_key: str
    ) -> SetupIntentSnapshot:
        params: SetupIntentCreateParams = {
            "customer": customer,
            # Saved to be charged later, also while the patient is away (staff, off-session).
            "usage": "off_session",
            "metadata": metadata,
            "automatic_payment_methods": SETUP_NO_REDIRECTS,
        }
        try:
            intent = self._client.v1.setup_intents.create(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        return setup_intent_snapshot(intent.to_dict())

    def list_cards(self, customer: str) -> list[CardSummary]:
        params: PaymentMethodListParams = {
            "customer": customer,
            "type": "card",
            "limit": CARDS_PAGE_SIZE,
        }
        try:
            page = self._client.v1.payment_methods.list(params=params)
        except stripe.StripeError as exc:
            raise _translate(exc) from exc
        cards = (_card(pm.to_dict()) for pm in page.data)
        return [card for card in cards if card is not None]

    def detach_payment_method(self, payment_method_id: str) -> None:
        try:
            self._client.v1.payment_methods.detach(payment_method_id)
        except stripe.InvalidRequestError as exc:
            # Unknown, or not attached to a customer (removed meanwhile): not found either way.
            raise NotFoundError("That saved card was not found for this patient.") from exc
        except stripe.StripeError as exc:
            raise _translate(exc) from exc


def new_client(secret_key: str, api_base: str | None) -> stripe.StripeClient:
    """The client of one clinic key: our API version, timeouts and retries."""
    return stripe.StripeClient(
        secret_key,
        stripe_version=STRIPE_API_VERSION,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=_RETRIES,
        http_client=stripe.RequestsClient(timeout=_TIMEOUT),
    )


class StripeWebhookVerifier:
    """WebhookVerifier port: Stripe's signature scheme, checked on the raw body."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now

    def verify(self, payload: bytes, signature: str, secret: str) -> WebhookEvent:
        try:
            text = payload.decode("utf-8")
            stripe.WebhookSignature.verify_header(
                text, signature, secret, tolerance=WEBHOOK_TOLERANCE_SECONDS
            )
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise WebhookSignatureError("The webhook signature did not verify.") from exc
        # stripe-python refuses only old timestamps; one from the future is as suspect (a
        # signature made to be replayed later), with the same tolerance.
        if _signed_at(signature) > self._now() + WEBHOOK_TOLERANCE_SECONDS:
            raise WebhookSignatureError("The webhook signature did not verify.")
        return parse_event(payload)


def _signed_at(header: str) -> int:
    """The header's timestamp, read as stripe-python reads it (it verified the header)."""
    pairs = [item.split("=", 1) for item in header.split(",")]
    return int(next(pair[1] for pair in pairs if pair[0] == "t" and len(pair) == 2))


# -- events: the shapes read, checked before anything reads them -------------------------------
# A signed event is Stripe's, but its object may still not be what this API reads (another API
# version, a new field type, a bug): it is then an event of an unexpected shape, acknowledged
# and recorded, never a 500 that Stripe would retry for days.

_Id = Annotated[StrictStr, Field(min_length=1)]
_Amount = Annotated[StrictInt, Field(ge=0)]
_Expandable = StrictStr | dict[str, Any] | None  # an id, or the object when expanded
_Metadata = dict[str, Any] | None


class _Shape(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _StripeObjectShape(_Shape):
    id: _Id


class _EventDataShape(_Shape):
    object: dict[str, Any]


class _EventShape(_Shape):
    id: _Id
    type: _Id
    data: _EventDataShape


class _IntentShape(_StripeObjectShape):
    status: StrictStr
    amount: _Amount | None = None
    amount_received: _Amount | None = None
    currency: StrictStr | None = None
    client_secret: StrictStr | None = None
    metadata: _Metadata = None
    payment_method: _Expandable = None
    last_payment_error: dict[str, Any] | None = None
    customer: _Expandable = None


class _SetupIntentShape(_StripeObjectShape):
    status: StrictStr
    client_secret: StrictStr | None = None
    customer: _Expandable = None
    payment_method: _Expandable = None
    metadata: _Metadata = None


class _RefundShape(_StripeObjectShape):
    amount: _Amount
    status: StrictStr
    charge: _Expandable = None
    payment_intent: _Expandable = None
    failure_reason: StrictStr | None = None
    metadata: _Metadata = None


class _RefundListShape(_Shape):
    data: list[_RefundShape]


class _ChargeShape(_StripeObjectShape):
    payment_intent: _Expandable = None
    refunds: _RefundListShape | None = None
    payment_method: StrictStr | None = None
    payment_method_details: dict[str, Any] | None = None


class _DisputeShape(_StripeObjectShape):
    amount: _Amount
    status: StrictStr
    charge: _Expandable = None
    payment_intent: _Expandable = None
    reason: StrictStr | None = None


_OBJECT_SHAPES: dict[str, type[_StripeObjectShape]] = {
    "payment_intent": _IntentShape,
    "setup_intent": _SetupIntentShape,
    "charge": _ChargeShape,
    "refund": _RefundShape,
    "dispute": _DisputeShape,
}


def _problem(error: ValidationError) -> str:
    """Where the shape differs, without the values (an event may carry personal data)."""
    places = sorted({".".join(str(part) for part in e["loc"]) or "event" for e in error.errors()})
    return "unexpected " + ", ".join(places[:5])


def parse_event(payload: bytes) -> WebhookEvent:
    """A verified event as the domain sees it: its object's snapshot, or why its shape is not
    one this API reads (then it carries no object, and an id made of the payload if it has none,
    so that Stripe's redelivery of it is a duplicate). A body that is not even a JSON object is
    no Stripe event at all: refused like a bad signature."""
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise WebhookSignatureError("The webhook body is not a Stripe event.") from exc
    if not isinstance(data, dict):
        raise WebhookSignatureError("The webhook body is not a Stripe event.")
    try:
        event = _EventShape.model_validate(data)
    except ValidationError as exc:
        return _unexpected(data, payload, _problem(exc))
    obj = event.data.object
    object_type = obj.get("object")
    shape = _OBJECT_SHAPES.get(object_type) if isinstance(object_type, str) else None
    if shape is not None:
        try:
            shape.model_validate(obj)
        except ValidationError as exc:
            return _unexpected(data, payload, _problem(exc))
    return WebhookEvent(
        id=event.id,
        type=event.type,
        object_type=object_type if isinstance(object_type, str) else None,
        object_id=obj.get("id") if isinstance(obj.get("id"), str) else None,
        intent=intent_snapshot(obj) if object_type == "payment_intent" else None,
        charge=charge_snapshot(obj) if object_type == "charge" else None,
        dispute=dispute_snapshot(obj) if object_type == "dispute" else None,
        setup_intent=setup_intent_snapshot(obj) if object_type == "setup_intent" else None,
        refund=refund_snapshot(obj) if object_type == "refund" else None,
    )


def _unexpected(data: dict[str, Any], payload: bytes, problem: str) -> WebhookEvent:
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not event_id:
        event_id = "unparsed_" + hashlib.sha256(payload).hexdigest()[:32]
    return WebhookEvent(
        id=event_id,
        type=event_type if isinstance(event_type, str) and event_type else "unknown",
        object_type=None,
        object_id=None,
        intent=None,
        unexpected_shape=problem,
    )


def refund_snapshot(data: dict[str, Any]) -> RefundSnapshot:
    """A Refund (from the API or an event) as the domain sees it."""
    return RefundSnapshot(
        id=str(data["id"]),
        amount=int(data.get("amount") or 0),
        status=str(data.get("status")),
        failure_reason=data.get("failure_reason"),
        payment_intent_id=_id_of(data.get("payment_intent")),
        charge_id=_id_of(data.get("charge")),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def charge_snapshot(data: dict[str, Any]) -> ChargeSnapshot:
    listed = data.get("refunds")
    refunds = None
    # Stripe lists a charge's refunds only when asked (expand); without them, they are fetched.
    if isinstance(listed, dict) and isinstance(listed.get("data"), list) and listed["data"]:
        refunds = [refund_snapshot(r) for r in listed["data"]]
    details = data.get("payment_method_details") or {}
    card = details.get("card") if isinstance(details, dict) else None
    pm = data.get("payment_method")
    return ChargeSnapshot(
        id=str(data["id"]),
        payment_intent_id=_id_of(data.get("payment_intent")),
        refunds=refunds,
        card=_card({"id": pm, "card": card})
        if isinstance(pm, str) and isinstance(card, dict) and card
        else None,
    )


def dispute_snapshot(data: dict[str, Any]) -> DisputeSnapshot:
    return DisputeSnapshot(
        id=str(data["id"]),
        charge_id=_id_of(data.get("charge")),
        payment_intent_id=_id_of(data.get("payment_intent")),
        amount=int(data.get("amount") or 0),
        status=str(data.get("status")),
        reason=data.get("reason"),
    )
