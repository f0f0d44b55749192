"""Cards presented through Apple Pay or Google Pay: `card.wallet`, and the token they come from.

What Stripe does (https://docs.stripe.com/api/payment_methods/object#payment_method_object-card-wallet,
https://docs.stripe.com/api/charges/object#charge_object-payment_method_details-card-wallet,
https://docs.stripe.com/api/tokens/object#token_object-card-tokenization_method):
- every card PaymentMethod has `card.wallet`: null for a card entered as it is, else
  `{"type": ..., <type>: {...}, "dynamic_last4": ...}` (`type` apple_pay, google_pay, link,
  samsung_pay...; `dynamic_last4` the last four of the device account number); a charge's
  `payment_method_details.card.wallet` has the same shape;
- a wallet's payment data reaches Stripe as a card token whose `card.tokenization_method` says
  the wallet (`apple_pay`; `android_pay` for Google Pay), and `POST /v1/payment_methods` takes a
  token in place of card details, `card[token]`, for Apple Pay among others
  (https://docs.stripe.com/api/payment_methods/create#create_payment_method-card); a token is
  used once (https://docs.stripe.com/error-codes/token-already-used).

Stripe publishes no test token or test PaymentMethod for a wallet: in test mode the wallet sheet
of a real device returns a test card. The fake therefore makes the token a device would, with a
test control (`POST /_compat/wallet_tokens`, see `controls.py`); from there on the requests are
Stripe's own (`card[token]`), so nothing Stripe refuses is accepted.
"""

from __future__ import annotations

from typing import Any

from localstripe.errors import UserError
from localstripe.resources import PaymentMethod, Token

from local.stripe_compat.cards import invalid_request, payment_method_params

# The wallet as a PaymentMethod names it -> the token's tokenization_method (Stripe's names).
TOKENIZATION_METHODS: dict[str, str] = {"apple_pay": "apple_pay", "google_pay": "android_pay"}
WALLET_OF_TOKENIZATION = {method: wallet for wallet, method in TOKENIZATION_METHODS.items()}

_installed = False


def install() -> None:
    """Every card PaymentMethod carries `card.wallet` (null unless made from a wallet token)."""
    global _installed
    if _installed:
        return
    _installed = True
    original_init = PaymentMethod.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if self.type == "card":
            self.card["wallet"] = None

    PaymentMethod.__init__ = init


def wallet_token(wallet: str, number: str, dynamic_last4: str | None = None) -> Any:
    """The card token a wallet's payment data becomes (what Stripe.js or a mobile SDK gets back
    from Stripe after the customer approves the wallet sheet), for one of Stripe's test cards."""
    token = Token(card={"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"})
    token.card.tokenization_method = TOKENIZATION_METHODS[wallet]
    token.card.dynamic_last4 = dynamic_last4 or number[-4:]
    return token


def names_a_token(card: Any) -> bool:
    return isinstance(card, dict) and "token" in card


def payment_method_from_token(data: dict[str, Any]) -> Any:
    """POST /v1/payment_methods with `card[token]`: a card PaymentMethod of the token's card,
    with the wallet the token came from. The token is used up."""
    card = data["card"]
    if set(card) != {"token"}:
        raise invalid_request(
            "You cannot provide card details together with card[token].", "card[token]"
        )
    token_id = card["token"]
    if not isinstance(token_id, str) or not token_id.startswith("tok_"):
        raise invalid_request(f"No such token: '{token_id}'", "card[token]", "resource_missing")
    try:
        token = Token._api_retrieve(token_id)
    except UserError:
        raise invalid_request(
            f"No such token: '{token_id}'", "card[token]", "resource_missing"
        ) from None
    if getattr(token, "_compat_used", False):
        raise invalid_request(
            f"You cannot use a Stripe token more than once: {token_id}.",
            "card[token]",
            "token_already_used",
        )
    tokenized = token.card
    params = payment_method_params(
        {
            **data,
            "card": {
                "number": tokenized._card_number,
                "exp_month": tokenized.exp_month,
                "exp_year": tokenized.exp_year,
            },
        }
    )
    payment_method = PaymentMethod(**params)
    token._compat_used = True
    wallet = WALLET_OF_TOKENIZATION.get(tokenized.tokenization_method or "")
    if wallet is not None:
        payment_method.card["wallet"] = {
            "type": wallet,
            wallet: {},
            "dynamic_last4": tokenized.dynamic_last4,
        }
    return payment_method
