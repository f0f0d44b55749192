"""Stripe's test-card outcomes and its `card_error` shape, which localstripe only approximates.

localstripe answers every decline with `{"type": "invalid_request_error", "code":
"card_declined"}`. Stripe answers `type: card_error` with the decline code of the test card
(https://docs.stripe.com/testing#declined-payments, https://docs.stripe.com/api/errors), and the
objects involved (`payment_intent`, `setup_intent`, `payment_method`, `charge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from localstripe.errors import UserError


@dataclass(frozen=True)
class Decline:
    code: str
    decline_code: str
    message: str
    param: str | None = None


GENERIC_DECLINE = Decline("card_declined", "generic_decline", "Your card was declined.")

# Stripe's declining test cards. localstripe declines all of these when they are attached to a
# customer; Stripe also declines them when they are charged, with these codes.
DECLINES: dict[str, Decline] = {
    "4000000000000002": GENERIC_DECLINE,
    "4000000000000341": GENERIC_DECLINE,  # attaches fine, every charge declines
    "4000000000009995": Decline(
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "4000000000009987": Decline("card_declined", "lost_card", "Your card was declined."),
    "4000000000009979": Decline("card_declined", "stolen_card", "Your card was declined."),
    "4000000000000069": Decline(
        "expired_card", "expired_card", "Your card has expired.", "exp_month"
    ),
    "4000000000000127": Decline(
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", "cvc"
    ),
    "4000000000000119": Decline(
        "processing_error",
        "processing_error",
        "An error occurred while processing your card. Try again in a little bit.",
    ),
    "4242424242424241": Decline(
        "incorrect_number", "incorrect_number", "Your card number is incorrect.", "number"
    ),
    # 3DS cards that decline after a successful authentication.
    "4000008260003178": Decline(
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "4000008400001629": GENERIC_DECLINE,
}

# An off-session payment that the issuer wants authenticated: Stripe cannot ask the customer,
# so it declines with this code (https://docs.stripe.com/declines/codes).
AUTHENTICATION_REQUIRED = Decline(
    "authentication_required",
    "authentication_required",
    "Your card was declined. This transaction requires authentication.",
)

# 4000002500003155 needs authentication unless it was set up for off-session use
# (SetupIntent, or setup_future_usage=off_session); then off-session payments go through.
AUTHENTICATE_UNLESS_SET_UP = "4000002500003155"

# Fields Stripe.js adds to `payment_method_data` (telemetry) that the API accepts and ignores.
STRIPE_JS_TELEMETRY = (
    "guid",
    "muid",
    "sid",
    "payment_user_agent",
    "time_on_page",
    "referrer",
    "pasted_fields",
    "client_attribution_metadata",
)


def card_number(payment_method: Any) -> str | None:
    number = getattr(payment_method, "_card_number", None)
    return number if isinstance(number, str) else None


def decline_for(payment_method: Any) -> Decline:
    return DECLINES.get(card_number(payment_method) or "", GENERIC_DECLINE)


def card_error(
    decline: Decline,
    *,
    charge: str | None = None,
    payment_intent: Any = None,
    setup_intent: Any = None,
    payment_method: Any = None,
) -> UserError:
    """A 402 with Stripe's error object for a card decline."""
    contents: dict[str, Any] = {
        "code": decline.code,
        "decline_code": decline.decline_code,
        "doc_url": "https://stripe.com/docs/error-codes/" + decline.code.replace("_", "-"),
    }
    if decline.param:
        contents["param"] = decline.param
    if charge:
        contents["charge"] = charge
    if payment_method is not None:
        contents["payment_method"] = payment_method._export()
    if payment_intent is not None:
        contents["payment_intent"] = payment_intent._export()
    if setup_intent is not None:
        contents["setup_intent"] = setup_intent._export()
    error = UserError(402, decline.message, contents)
    # UserError always says invalid_request_error; a decline is a card_error.
    error.body["error"]["type"] = "card_error"
    return error


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> UserError:
    contents: dict[str, Any] = {}
    if param:
        contents["param"] = param
    if code:
        contents["code"] = code
    return UserError(400, message, contents)


def payment_method_params(data: Any) -> dict[str, Any]:
    """`payment_method_data` as Stripe.js sends it, reduced to what localstripe's PaymentMethod
    takes. Stripe ignores Stripe.js telemetry and treats `card[cvc]` as optional; localstripe
    rejects both, so telemetry is dropped and a missing CVC gets a placeholder."""
    if not isinstance(data, dict):
        raise invalid_request("Invalid payment_method_data: must be a hash", "payment_method_data")
    params = {key: value for key, value in data.items() if key not in STRIPE_JS_TELEMETRY}
    card = params.get("card")
    if isinstance(card, dict):
        params.setdefault("type", "card")
        params["card"] = {
            "number": str(card.get("number", "")).replace(" ", ""),
            "exp_month": card.get("exp_month"),
            "exp_year": card.get("exp_year"),
            "cvc": card.get("cvc") or "123",
        }
    return params
