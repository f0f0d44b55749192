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
