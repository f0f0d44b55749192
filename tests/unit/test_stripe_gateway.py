"""The Stripe adapter without a network: Stripe's real object shapes (tests/fixtures/
stripe/fixtures3.json) read into the domain, errors translated, webhook signatures checked."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import stripe
from clinic_payments.adapters.stripe_accounts import StripeGateways
from clinic_payments.adapters.stripe_gateway import (
    STRIPE_API_VERSION,
    StripeGateway,
    StripeWebhookVerifier,
    _translate,
    intent_snapshot,
    setup_intent_snapshot,
)
from clinic_payments.domain.errors import (
    AmountTooSmallError,
    CardDeclinedError,
    ConflictError,
    NotFoundError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
    WebhookSignatureError,
)
from clinic_payments.domain.model import StripeKeys

from tests.support.fixtures import FIXTURES_PATH
from tests.unit.fakes import FakeClinicSecrets

pytestmark = pytest.mark.unit

FIXTURES = FIXTURES_PATH


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


def with_wallet(payment_method: dict[str, Any], wallet: dict[str, Any] | None) -> dict[str, Any]:
    """A PaymentMethod (or a charge's payment_method_details) whose card.wallet is `wallet`."""
    return {**payment_method, "card": {**payment_method["card"], "wallet": wallet}}


APPLE_PAY = {"type": "apple_pay", "apple_pay": {}, "dynamic_last4": "9999"}


@pytest.mark.parametrize(
    ("wallet", "expected"),
    [
        (APPLE_PAY, "apple_pay"),
        ({"type": "google_pay", "google_pay": {}, "dynamic_last4": None}, "google_pay"),
        (None, None),  # a plain card: Stripe sends wallet null
        ("apple_pay", None),  # not Stripe's shape: no wallet read, nothing raised
        ({"type": 7}, None),
    ],
)
def test_the_expanded_card_of_an_intent_names_its_wallet(resources, wallet, expected):
    intent = {
        **resources["payment_intent"],
        "status": "succeeded",
        "payment_method": with_wallet(resources["payment_method"], wallet),
    }
    card = intent_snapshot(intent).payment_method
    assert card is not None
    assert (card.brand, card.last4, card.wallet) == ("visa", "4242", expected)


def test_a_wallet_type_stripe_adds_is_kept_as_stripe_names_it(resources):
    # Stripe's own fixture card is a Link wallet card.
    assert resources["payment_method"]["card"]["wallet"]["type"] == "link"
    snapshot = intent_snapshot(
        {**resources["payment_intent"], "payment_method": resources["payment_method"]}
    )
    assert snapshot.payment_method is not None
    assert snapshot.payment_method.wallet == "link"


def test_a_charge_event_names_the_wallet_its_card_was_charged_through(resources):
    charge = {
        **resources["charge"],
        "payment_method": "pm_wallet",
        "payment_method_details": with_wallet(
            resources["charge"]["payment_method_details"], APPLE_PAY
        ),
    }
    event = {**resources["event"], "type": "charge.succeeded", "data": {"object": charge}}
    payload = json.dumps(event)
    verified = StripeWebhookVerifier().verify(
        payload.encode(), _signed(payload, "whsec_test", int(time.time())), "whsec_test"
    )
    assert verified.charge is not None
    assert verified.charge.card is not None
    assert (verified.charge.card.id, verified.charge.card.wallet) == ("pm_wallet", "apple_pay")
    assert (verified.charge.card.brand, verified.charge.card.last4) == ("visa", "4242")


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
        (
            stripe.InvalidRequestError("Too small", "amount", code="amount_too_small"),
            AmountTooSmallError,
        ),
        (
            stripe.InvalidRequestError("Too large", "amount", code="amount_too_large"),
            AmountTooSmallError,
        ),
    ],
    ids=[
        "timeout",
        "5xx",
        "rate-limit",
        "auth",
        "idempotency",
        "missing",
        "invalid",
        "below-minimum",
        "above-maximum",
    ],
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


# -- saved cards: SetupIntents, listing and detaching cards -------------------------------------


class CannedHttp(stripe.HTTPClient):
    """Stripe's HTTP layer answering canned (status, body) replies: the real SDK builds and
    encodes each request, which is recorded as (method, url, headers, form body)."""

    name = "canned"

    def __init__(self, *replies: tuple[int, dict[str, Any]]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[tuple[str, str, dict[str, str], str | None]] = []

    def request(self, method, url, headers, post_data=None):
        self.requests.append((method, url, dict(headers or {}), post_data))
        status, body = self.replies.pop(0)
        return json.dumps(body), status, {"request-id": "req_test"}

    def close(self) -> None:
        return None


def gateway_answering(*replies: tuple[int, dict[str, Any]]) -> tuple[StripeGateway, CannedHttp]:
    http = CannedHttp(*replies)
    client = stripe.StripeClient("sk_test_unit", http_client=http, max_network_retries=0)
    return StripeGateway(client), http


def _error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    }


def test_a_real_setup_intent_reads_into_a_snapshot(resources):
    setup = resources["setup_intent"]
    snapshot = setup_intent_snapshot(setup)
    assert (snapshot.id, snapshot.status) == (setup["id"], "requires_payment_method")
    assert snapshot.client_secret == setup["client_secret"]
    assert (snapshot.customer, snapshot.payment_method, snapshot.metadata) == (None, None, {})


def test_a_succeeded_setup_intent_names_its_card_and_customer_expanded_or_not(resources):
    card, setup = resources["payment_method"], resources["setup_intent"]
    for expanded in (False, True):
        snapshot = setup_intent_snapshot(
            {
                **setup,
                "status": "succeeded",
                "customer": {"id": "cus_1", "object": "customer"} if expanded else "cus_1",
                "payment_method": card if expanded else card["id"],
                "metadata": {"clinic_id": "c", "patient_id": "p", "setup_id": "cset_1"},
            }
        )
        assert (snapshot.customer, snapshot.payment_method) == ("cus_1", card["id"])
        assert snapshot.metadata["setup_id"] == "cset_1"


def test_a_signed_setup_intent_event_carries_its_setup_intent(resources):
    event = {**resources["event"], "type": "setup_intent.succeeded"}
    event["data"] = {"object": {**resources["setup_intent"], "status": "succeeded"}}
    payload = json.dumps(event)
    verified = StripeWebhookVerifier().verify(
        payload.encode(), _signed(payload, "whsec_test", int(time.time())), "whsec_test"
    )
    assert (verified.type, verified.object_type) == ("setup_intent.succeeded", "setup_intent")
    assert verified.intent is None
    assert verified.setup_intent is not None
    assert verified.setup_intent.id == resources["setup_intent"]["id"]


def test_a_setup_intent_is_created_for_off_session_use_with_the_idempotency_key(resources):
    reply = {**resources["setup_intent"], "customer": "cus_1", "metadata": {"setup_id": "cset_1"}}
    gateway, http = gateway_answering((200, reply))
    snapshot = gateway.create_setup_intent(
        customer="cus_1", metadata={"setup_id": "cset_1"}, idempotency_key="cset_1:create"
    )
    [(method, url, headers, body)] = http.requests
    assert (method, url) == ("post", "https://api.stripe.com/v1/setup_intents")
    assert headers["Idempotency-Key"] == "cset_1:create"
    assert body == (
        "customer=cus_1&usage=off_session&metadata[setup_id]=cset_1"
        "&automatic_payment_methods[enabled]=true&automatic_payment_methods[allow_redirects]=never"
    )
    assert (snapshot.id, snapshot.customer) == (reply["id"], "cus_1")


def test_cards_are_listed_for_the_customer_type_card_one_page(resources):
    card = resources["payment_method"]
    listing = {"object": "list", "url": "/v1/payment_methods", "has_more": False, "data": [card]}
    gateway, http = gateway_answering((200, listing))
    [summary] = gateway.list_cards("cus_1")
    [(method, url, _headers, _body)] = http.requests
    assert method == "get"
    assert url == "https://api.stripe.com/v1/payment_methods?customer=cus_1&type=card&limit=100"
    assert (summary.id, summary.brand, summary.last4) == (card["id"], "visa", "4242")
    assert (summary.exp_month, summary.exp_year) == (card["card"]["exp_month"], 2030)
    assert summary.wallet == "link"  # Stripe's fixture card is a Link wallet card


def test_listed_cards_name_their_wallets_and_a_plain_card_none(resources):
    card = resources["payment_method"]
    cards = [
        {**with_wallet(card, APPLE_PAY), "id": "pm_apple"},
        {**with_wallet(card, {"type": "google_pay", "google_pay": {}}), "id": "pm_google"},
        {**with_wallet(card, None), "id": "pm_plain"},
    ]
    listing = {"object": "list", "url": "/v1/payment_methods", "has_more": False, "data": cards}
    gateway, _http = gateway_answering((200, listing))
    assert [(c.id, c.wallet) for c in gateway.list_cards("cus_1")] == [
        ("pm_apple", "apple_pay"),
        ("pm_google", "google_pay"),
        ("pm_plain", None),
    ]


def test_detaching_posts_to_the_card(resources):
    gateway, http = gateway_answering((200, {**resources["payment_method"], "customer": None}))
    gateway.detach_payment_method("pm_1")
    [(method, url, _headers, _body)] = http.requests
    assert (method, url) == ("post", "https://api.stripe.com/v1/payment_methods/pm_1/detach")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ((404, _error("resource_missing", "No such PaymentMethod", "id")), NotFoundError),
        (
            (400, _error("", "The payment method is not attached to a customer")),
            NotFoundError,
        ),
        (
            (500, {"error": {"type": "api_error", "message": "boom"}}),
            PaymentProviderUnavailableError,
        ),
    ],
    ids=["unknown", "not-attached", "stripe-down"],
)
def test_a_detach_stripe_refuses_is_not_found_and_an_outage_is_unavailable(reply, expected):
    gateway, _http = gateway_answering(reply)
    with pytest.raises(expected):
        gateway.detach_payment_method("pm_1")


def test_stripe_down_while_listing_or_setting_up_is_unavailable():
    down = (503, {"error": {"type": "api_error", "message": "down"}})
    gateway, _ = gateway_answering(down, down)
    with pytest.raises(PaymentProviderUnavailableError):
        gateway.list_cards("cus_1")
    with pytest.raises(PaymentProviderUnavailableError):
        gateway.create_setup_intent(customer="cus_1", metadata={}, idempotency_key="k")


# -- PaymentIntents as real Stripe takes them -------------------------------------------------


def _created_intent(resources: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, str]]:
    reply = {**resources["payment_intent"], "status": "succeeded", "customer": "cus_1"}
    gateway, http = gateway_answering((200, reply))
    arguments: dict[str, Any] = {
        "amount": 5000,
        "currency": "usd",
        "customer": "cus_1",
        "metadata": {"payment_id": "pay_1"},
        "idempotency_key": "pay_1:create",
        "payment_method": None,
        "confirm": False,
        "off_session": False,
        "save_card": False,
        "receipt_email": None,
    }
    gateway.create_payment_intent(**{**arguments, **kwargs})
    [(_method, _url, headers, body)] = http.requests
    return str(body), headers


def test_a_card_on_file_charged_off_session_is_confirmed_as_stripe_requires(resources):
    # Stripe refuses a server-side confirm of an intent with automatic payment methods and no
    # return_url, and setup_future_usage beside off_session: card only, nothing to save.
    body, _ = _created_intent(
        resources, payment_method="pm_1", confirm=True, off_session=True, save_card=True
    )
    assert "automatic_payment_methods[allow_redirects]=never" in body
    assert "payment_method_types" not in body
    assert "return_url" not in body
    assert "confirm=true" in body
    assert "off_session=true" in body
    assert "setup_future_usage" not in body


def test_a_portal_payment_that_saves_the_card_names_card_and_future_use(resources):
    body, _ = _created_intent(resources, save_card=True)
    assert "automatic_payment_methods[allow_redirects]=never" in body
    assert "setup_future_usage=off_session" in body
    assert "confirm" not in body


def test_every_clinic_client_is_built_with_the_one_pinned_api_version(monkeypatch):
    built: list[dict[str, Any]] = []
    real_client = stripe.StripeClient

    def recording_client(key: str, **options: Any) -> stripe.StripeClient:
        built.append(options)
        return real_client(key, **options)

    monkeypatch.setattr(stripe, "StripeClient", recording_client)
    secrets = FakeClinicSecrets()
    secrets.put_keys("c", "main", StripeKeys("sk_test_unit", "pk_test_unit", "whsec_unit"))
    StripeGateways(secrets).for_account("c", "main")
    [options] = built
    assert options["stripe_version"] == STRIPE_API_VERSION


def test_the_pinned_api_version_is_the_one_the_sdk_was_generated_for():
    # stripe.params (which mypy checks every call against) describes this version: an SDK
    # upgrade that moves it fails here, so the pin and docs/deploy.md move on purpose.
    assert stripe.api_version == STRIPE_API_VERSION
