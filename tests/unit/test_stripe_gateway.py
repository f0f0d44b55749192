"""The Stripe adapter without a network: Stripe's real object shapes (shared/stripe/
fixtures3.json) read into the domain, errors translated, webhook signatures checked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import stripe
from clinic_payments.adapters.stripe_gateway import (
    StripeWebhookVerifier,
    _translate,
    intent_snapshot,
)
from clinic_payments.domain.errors import (
    CardDeclinedError,
    ConflictError,
    NotFoundError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
    WebhookSignatureError,
)

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "stripe" / "fixtures3.json"


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    return dict(json.loads(FIXTURES.read_text())["resources"])


def test_a_real_payment_intent_reads_into_a_snapshot(resources):
    intent = resources["payment_intent"]
    snapshot = intent_snapshot(intent)
    assert snapshot.id == intent["id"]
    assert (snapshot.amount, snapshot.currency) == (intent["amount"], intent["currency"])
    assert snapshot.amount_received == intent["amount_received"]
    assert snapshot.client_secret == intent["client_secret"]
    assert snapshot.payment_method is None


def test_a_succeeded_intent_with_an_expanded_card_carries_brand_and_last4(resources):
    card = resources["payment_method"]
    intent = {
        **resources["payment_intent"],
        "status": "succeeded",
        "amount_received": 1099,
        "payment_method": card,
        "metadata": {"clinic_id": "c", "patient_id": "p", "payment_id": "pay_1"},
    }
    snapshot = intent_snapshot(intent)
    assert snapshot.payment_method is not None
    assert snapshot.payment_method.last4 == card["card"]["last4"]
    assert snapshot.metadata["payment_id"] == "pay_1"


def test_a_succeeded_intent_without_amount_received_counts_its_amount(resources):
    intent = {**resources["payment_intent"], "status": "succeeded", "amount_received": None}
    assert intent_snapshot(intent).amount_received == intent["amount"]


def test_a_last_payment_error_becomes_the_failure():
    intent = {
        "id": "pi_1",
        "status": "requires_payment_method",
        "amount": 500,
        "last_payment_error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
        },
    }
    failure = intent_snapshot(intent).last_error
    assert failure is not None
    assert (failure.code, failure.decline_code) == ("card_declined", "insufficient_funds")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (stripe.APIConnectionError("timed out"), PaymentProviderUnavailableError),
        (stripe.APIError("boom", http_status=500), PaymentProviderUnavailableError),
        (stripe.RateLimitError("slow down", http_status=429), PaymentProviderUnavailableError),
        (stripe.AuthenticationError("bad key", http_status=401), PaymentProviderUnavailableError),
        (stripe.IdempotencyError("other params", http_status=400), ConflictError),
        (
            stripe.InvalidRequestError("No such pm", "payment_method", code="resource_missing"),
            NotFoundError,
        ),
        (stripe.InvalidRequestError("Bad amount", "amount"), PaymentFailedError),
    ],
    ids=["timeout", "5xx", "rate-limit", "auth", "idempotency", "missing", "invalid"],
)
def test_stripe_errors_translate_to_one_domain_error_each(error, expected):
    translated = _translate(error)
    assert type(translated) is expected
    assert "sk_" not in translated.message


def test_a_card_error_keeps_stripes_codes():
    body = {
        "error": {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "generic_decline",
            "message": "Your card was declined.",
        }
    }
    error = stripe.CardError(
        "Your card was declined.", None, "card_declined", http_status=402, json_body=body
    )
    translated = _translate(error)
    assert isinstance(translated, CardDeclinedError)
    assert translated.details[0]["code"] == "card_declined"
    assert translated.details[0]["decline_code"] == "generic_decline"


def _signed(payload: str, secret: str, at: int) -> str:
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", secret)
    return f"t={at},v1={signature}"


def test_a_signed_real_event_verifies_and_carries_its_intent(resources):
    event = {**resources["event"], "type": "payment_intent.succeeded"}
    event["data"] = {"object": {**resources["payment_intent"], "status": "succeeded"}}
    payload = json.dumps(event)
    verified = StripeWebhookVerifier().verify(
        payload.encode(), _signed(payload, "whsec_test", int(time.time())), "whsec_test"
    )
    assert (verified.id, verified.type) == (event["id"], "payment_intent.succeeded")
    assert verified.intent is not None
    assert verified.intent.id == resources["payment_intent"]["id"]


@pytest.mark.parametrize(
    ("secret", "age"),
    [("whsec_other", 0), ("whsec_test", 301)],
    ids=["wrong-secret", "older-than-300s"],
)
def test_a_forged_or_stale_signature_is_refused(resources, secret, age):
    payload = json.dumps(resources["event"])
    header = _signed(payload, secret, int(time.time()) - age)
    with pytest.raises(WebhookSignatureError):
        StripeWebhookVerifier().verify(payload.encode(), header, "whsec_test")


def test_a_signed_body_that_is_not_an_event_is_refused():
    payload = json.dumps(["not", "an", "event"])
    with pytest.raises(WebhookSignatureError):
        StripeWebhookVerifier().verify(
            payload.encode(), _signed(payload, "whsec_test", int(time.time())), "whsec_test"
        )
