"""What the patient portal does with Stripe.js, as plain HTTP against the Stripe fake:
confirm a PaymentIntent (confirmCardPayment) or a SetupIntent (confirmCardSetup) with a new card
using its client secret and the publishable key."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

VISA = "4242424242424242"
DECLINED = "4000000000000002"
CHARGE_DECLINED = "4000000000000341"
THREE_D_SECURE = "4000002500003155"


def _post(url: str, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
    data = urllib.parse.urlencode(fields).encode()
    request = urllib.request.Request(url, data=data, method="POST")  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _new_card(publishable_key: str, client_secret: str, number: str) -> dict[str, str]:
    return {
        "key": publishable_key,
        "client_secret": client_secret,
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": number,
        "payment_method_data[card][exp_month]": "12",
        "payment_method_data[card][exp_year]": "2030",
        "payment_method_data[card][cvc]": "123",
    }


def confirm_card(
    stripe_url: str, intent_id: str, client_secret: str, publishable_key: str, number: str = VISA
) -> tuple[int, dict[str, Any]]:
    return _post(
        f"{stripe_url}/v1/payment_intents/{intent_id}/confirm",
        _new_card(publishable_key, client_secret, number),
    )


def confirm_card_setup(
    stripe_url: str, setup_intent_id: str, client_secret: str, publishable_key: str, number: str
) -> tuple[int, dict[str, Any]]:
    """Stripe.js's confirmCardSetup: save a card without paying."""
    return _post(
        f"{stripe_url}/v1/setup_intents/{setup_intent_id}/confirm",
        _new_card(publishable_key, client_secret, number),
    )


def authenticate(stripe_url: str, intent_id: str, client_secret: str, publishable_key: str) -> int:
    status, _ = _post(
        f"{stripe_url}/v1/payment_intents/{intent_id}/_authenticate?success=true",
        {"key": publishable_key, "client_secret": client_secret},
    )
    return status


def wallet_card(
    stripe_url: str, publishable_key: str, wallet: str, number: str = VISA
) -> dict[str, Any]:
    """The portal's Apple Pay / Google Pay button: the wallet sheet's card token (the fake's
    control stands in for the device), made a PaymentMethod by Stripe.js with the publishable
    key (`card[token]`). The PaymentMethod, as Stripe answers it."""
    request = urllib.request.Request(  # noqa: S310 - loopback Stripe fake
        f"{stripe_url}/_compat/wallet_tokens",
        data=json.dumps({"wallet": wallet, "number": number}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
        token = json.loads(response.read())
    status, payment_method = _post(
        f"{stripe_url}/v1/payment_methods",
        {"key": publishable_key, "type": "card", "card[token]": token["id"]},
    )
    assert status == 200, payment_method
    return payment_method


def confirm_with(
    stripe_url: str,
    kind: str,
    intent_id: str,
    client_secret: str,
    publishable_key: str,
    payment_method: str,
) -> tuple[int, dict[str, Any]]:
    """confirmCardPayment / confirmCardSetup with a PaymentMethod made already (a wallet's):
    `kind` is `payment_intents` or `setup_intents`."""
    return _post(
        f"{stripe_url}/v1/{kind}/{intent_id}/confirm",
        {"key": publishable_key, "client_secret": client_secret, "payment_method": payment_method},
    )
