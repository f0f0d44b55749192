"""The strict fake refuses what Stripe refuses, with Stripe's status, type, code and param, and
accepts the corrected request. One test per rule of local/stripe_compat/rules.py; the sources
of each rule are in docs/stripe-fidelity.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import stripe

from local.stripe_compat.process import StripeHandle, start_stripe

pytestmark = pytest.mark.integration

SECRET_KEY = "sk_test_rules"
PUBLISHABLE_KEY = "pk_test_rules"
NO_REDIRECTS = {"enabled": True, "allow_redirects": "never"}
RETURN_URL = "https://portal.example.com/paid"


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeHandle]:
    handle = start_stripe()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(fake: StripeHandle) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.url}, max_network_retries=0)


# --- helpers -------------------------------------------------------------------------------


def post(
    fake: StripeHandle,
    path: str,
    data: dict[str, str] | list[tuple[str, str]],
    *,
    key: str | None = SECRET_KEY,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """A raw form POST, for what stripe-python would not send."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(
        fake.url + path, data=data, headers={**auth, **(headers or {})}, timeout=10
    )


def get(fake: StripeHandle, path: str, params: dict[str, str]) -> requests.Response:
    return requests.get(
        fake.url + path,
        params=params,
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
        timeout=10,
    )


def assert_refused(
    response: requests.Response,
    *,
    param: str | None,
    code: str | None = None,
    status: int = 400,
    error_type: str = "invalid_request_error",
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type
    assert error.get("param") == param
    assert error.get("code") == code
    assert error["message"]
    if code is not None:
        assert error["doc_url"] == "https://stripe.com/docs/error-codes/" + code.replace("_", "-")
    return error


def refused(call: Callable[[], Any]) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        call()
    return raised.value


def customer(client: stripe.StripeClient) -> str:
    return client.v1.customers.create(params={"metadata": {"patient_id": "pat_1"}}).id


def saved_card(client: stripe.StripeClient, owner: str) -> str:
    payment_method = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )
    client.v1.payment_methods.attach(payment_method.id, params={"customer": owner})
    return payment_method.id


def intent(**extra: Any) -> dict[str, Any]:
    return {"amount": 12_50, "currency": "usd", "automatic_payment_methods": NO_REDIRECTS, **extra}


def stripe_js_confirm(
    fake: StripeHandle, kind: str, obj: Any, extra: dict[str, str] | None = None
) -> requests.Response:
    """confirmCardPayment / confirmCardSetup with a new card, as Stripe.js sends them."""
    return post(
        fake,
        f"/v1/{kind}/{obj.id}/confirm",
        {
            "key": PUBLISHABLE_KEY,
            "client_secret": obj.client_secret,
            "use_stripe_sdk": "true",
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": "4242424242424242",
            "payment_method_data[card][exp_month]": "12",
            "payment_method_data[card][exp_year]": "34",
            "payment_method_data[card][cvc]": "123",
            "payment_method_data[guid]": "NA",
            "payment_method_data[payment_user_agent]": "stripe.js/test",
            **(extra or {}),
        },
        key=None,
    )


def request_counts(fake: StripeHandle) -> dict[str, int]:
    counts: dict[str, int] = requests.get(f"{fake.url}/_compat/requests", timeout=10).json()
    return counts


# --- parameter_unknown ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fields", "unknown"),
    [
        ("/v1/customers", {"foo": "1"}, "foo"),
        # A client option of stripe-python is never a parameter.
        ("/v1/customers", {"idempotency_key": "k"}, "idempotency_key"),
        (
            "/v1/payment_methods",
            {
                "type": "card",
                "card[number]": "4242424242424242",
                "card[exp_month]": "12",
                "card[exp_year]": "2034",
                "card[foo]": "1",
            },
            "card[foo]",
        ),
        (
            "/v1/payment_intents",
            {"amount": "1250", "currency": "usd", "statement": "x"},
            "statement",
        ),
    ],
)
def test_unknown_parameter_is_refused_and_the_known_ones_accepted(
    fake: StripeHandle, path: str, fields: dict[str, str], unknown: str
) -> None:
    error = assert_refused(post(fake, path, fields), param=unknown, code="parameter_unknown")
    assert error["message"] == f"Received unknown parameter: {unknown}"

    known = [(name, value) for name, value in fields.items() if name != unknown]
    accepted = post(fake, path, known)
    assert accepted.status_code == 200, accepted.text


def test_expand_is_known_everywhere(fake: StripeHandle, client: stripe.StripeClient) -> None:
    owner = customer(client)
    response = get(fake, f"/v1/customers/{owner}", {"expand[]": "default_source"})
    assert response.status_code == 200, response.text
    assert_refused(
        get(fake, f"/v1/customers/{owner}", {"foo": "1"}), param="foo", code="parameter_unknown"
    )


def test_stripe_js_fields_only_with_the_publishable_key(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    created = client.v1.payment_intents.create(params=intent())
    # With the secret key, Stripe.js's client_secret and raw card fields are unknown.
    assert_refused(
        post(
            fake,
            f"/v1/payment_intents/{created.id}/confirm",
            {"client_secret": created.client_secret, "payment_method": "pm_card_visa"},
        ),
        param="client_secret",
        code="parameter_unknown",
    )
    # Stripe.js's own fields pass with the publishable key, anything else does not.
    assert_refused(
        stripe_js_confirm(fake, "payment_intents", created, {"foo": "1"}),
        param="foo",
        code="parameter_unknown",
    )
    confirmed = stripe_js_confirm(fake, "payment_intents", created)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"


def test_payment_method_types_is_no_longer_supported(fake: StripeHandle) -> None:
    # stripe-python 16 pins an API version that made payment_method_types read-only.
    fields = {"amount": "1250", "currency": "usd", "payment_method_types[]": "card"}
    assert_refused(
        post(fake, "/v1/payment_intents", fields),
        param="payment_method_types",
        code="payment_method_types_no_longer_supported",
    )
    assert_refused(
        post(fake, "/v1/setup_intents", {"payment_method_types[]": "card"}),
        param="payment_method_types",
        code="payment_method_types_no_longer_supported",
    )
    fields.pop("payment_method_types[]")
    fields["automatic_payment_methods[enabled]"] = "true"
    fields["automatic_payment_methods[allow_redirects]"] = "never"
    accepted = post(fake, "/v1/payment_intents", fields)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["automatic_payment_methods"] == NO_REDIRECTS


# --- return_url under automatic payment methods ---------------------------------------------


def test_server_side_confirm_at_creation_needs_a_return_url_unless_redirects_are_off(
    client: stripe.StripeClient,
) -> None:
    owner = customer(client)
    card = saved_card(client, owner)
    plain = {"amount": 12_50, "currency": "usd", "customer": owner, "payment_method": card}
    error = refused(lambda: client.v1.payment_intents.create(params={**plain, "confirm": True}))
    assert (error.http_status, error.param, error.code) == (400, "return_url", None)
    assert error.user_message is not None
    assert error.user_message.startswith("A `return_url` must be specified because this Payment")

    with_url = client.v1.payment_intents.create(
        params={**plain, "confirm": True, "return_url": RETURN_URL}
    )
    assert with_url.status == "succeeded"
    assert with_url.automatic_payment_methods is not None
    assert with_url.automatic_payment_methods.allow_redirects == "always"
    no_redirects = client.v1.payment_intents.create(
        params={**plain, "confirm": True, "automatic_payment_methods": NO_REDIRECTS}
    )
    assert no_redirects.status == "succeeded"
    # The changelog's exception: an off-session confirm needs no return_url.
    off_session = client.v1.payment_intents.create(
        params={**plain, "confirm": True, "off_session": True}
    )
    assert off_session.status == "succeeded"


def test_confirm_endpoint_needs_a_return_url_also_from_stripe_js(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    redirects = client.v1.payment_intents.create(params={"amount": 12_50, "currency": "usd"})
    error = refused(
        lambda: client.v1.payment_intents.confirm(
            redirects.id, params={"payment_method": "pm_card_visa"}
        )
    )
    assert error.param == "return_url"
    assert_refused(stripe_js_confirm(fake, "payment_intents", redirects), param="return_url")

    confirmed = stripe_js_confirm(fake, "payment_intents", redirects, {"return_url": RETURN_URL})
    assert confirmed.status_code == 200, confirmed.text
    cards_only = client.v1.payment_intents.create(params=intent())
    assert stripe_js_confirm(fake, "payment_intents", cards_only).status_code == 200


def test_setup_intent_confirm_needs_a_return_url_unless_redirects_are_off(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    owner = customer(client)
    redirects = client.v1.setup_intents.create(params={"customer": owner, "usage": "off_session"})
    error = assert_refused(stripe_js_confirm(fake, "setup_intents", redirects), param="return_url")
    assert "this Setup Intent is configured" in error["message"]
    with_url = stripe_js_confirm(fake, "setup_intents", redirects, {"return_url": RETURN_URL})
    assert with_url.status_code == 200, with_url.text

    cards_only = client.v1.setup_intents.create(
        params={
            "customer": owner,
            "usage": "off_session",
            "automatic_payment_methods": NO_REDIRECTS,
        }
    )
    confirmed = stripe_js_confirm(fake, "setup_intents", cards_only)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "succeeded"


# --- off_session ---------------------------------------------------------------------------


def test_off_session_needs_confirm_and_excludes_setup_future_usage(
    client: stripe.StripeClient,
) -> None:
    owner = customer(client)
    card = saved_card(client, owner)
    base = intent(customer=owner, payment_method=card)
    error = refused(lambda: client.v1.payment_intents.create(params={**base, "off_session": True}))
    assert (error.http_status, error.param) == (400, "off_session")

    both = {**base, "confirm": True, "off_session": True, "setup_future_usage": "off_session"}
    error = refused(lambda: client.v1.payment_intents.create(params=both))
    assert error.param == "off_session"
    assert error.user_message is not None
    assert "setup_future_usage" in error.user_message

    # Also when the intent already carries setup_future_usage and is confirmed off-session.
    saving = client.v1.payment_intents.create(params={**base, "setup_future_usage": "off_session"})
    error = refused(
        lambda: client.v1.payment_intents.confirm(saving.id, params={"off_session": True})
    )
    assert error.param == "off_session"

    accepted = client.v1.payment_intents.create(
        params={**base, "confirm": True, "off_session": True}
    )
    assert accepted.status == "succeeded"
    assert client.v1.payment_intents.confirm(saving.id).status == "succeeded"


# --- amounts and currencies ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "too_small", "smallest"),
    [("usd", 49, 50), ("eur", 49, 50), ("jpy", 49, 50), ("gbp", 29, 30)],
)
def test_amount_under_the_minimum_charge_is_amount_too_small(
    client: stripe.StripeClient, currency: str, too_small: int, smallest: int
) -> None:
    error = refused(
        lambda: client.v1.payment_intents.create(params=intent(amount=too_small, currency=currency))
    )
    assert (error.http_status, error.code, error.param) == (400, "amount_too_small", "amount")
    accepted = client.v1.payment_intents.create(params=intent(amount=smallest, currency=currency))
    assert accepted.amount == smallest


def test_amount_over_eight_digits_is_amount_too_large(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.payment_intents.create(params=intent(amount=100_000_000)))
    assert (error.http_status, error.code, error.param) == (400, "amount_too_large", "amount")
    assert client.v1.payment_intents.create(params=intent(amount=99_999_999)).amount == 99_999_999


def test_currency_stripe_does_not_support_is_refused(client: stripe.StripeClient) -> None:
    error = refused(lambda: client.v1.payment_intents.create(params=intent(currency="xxx")))
    assert (error.http_status, error.param) == (400, "currency")
    assert error.user_message is not None
    assert error.user_message.startswith("Invalid currency: xxx.")
    assert client.v1.payment_intents.create(params=intent(currency="cad")).currency == "cad"


# --- metadata ------------------------------------------------------------------------------

OVER_LIMITS = {
    "too many keys": {f"k{i}": "v" for i in range(51)},
    "key too long": {"k" * 41: "v"},
    "value too long": {"k": "v" * 501},
}
AT_LIMITS = {f"k{i:02d}" + "x" * 37: "v" * 500 for i in range(50)}  # 50 keys of 40, values 500


def _creates(client: stripe.StripeClient, fake: StripeHandle) -> dict[str, Callable[..., Any]]:
    """Every object the project sends metadata with."""
    owner = customer(client)
    paid = client.v1.payment_intents.create(
        params=intent(payment_method="pm_card_visa", confirm=True)
    )
    return {
        "payment intent": lambda m: client.v1.payment_intents.create(params=intent(metadata=m)),
        "setup intent": lambda m: client.v1.setup_intents.create(
            params={"customer": owner, "metadata": m}
        ),
        "customer": lambda m: client.v1.customers.create(params={"metadata": m}),
        "refund": lambda m: client.v1.refunds.create(
            params={"payment_intent": paid.id, "amount": 1, "metadata": m}
        ),
    }


def test_metadata_beyond_stripe_limits_is_refused_on_every_object(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    for kind, create in _creates(client, fake).items():
        for limit, metadata in OVER_LIMITS.items():
            error = refused(lambda create=create, metadata=metadata: create(metadata))
            assert (error.http_status, error.param) == (400, "metadata"), (kind, limit)
        created = create(AT_LIMITS)
        assert len(created.metadata.to_dict()) == 50, kind


def test_metadata_keys_cannot_hold_square_brackets(fake: StripeHandle) -> None:
    assert_refused(post(fake, "/v1/customers", {"metadata[a[b]]": "1"}), param="metadata")
    assert post(fake, "/v1/customers", {"metadata[a_b]": "1"}).status_code == 200


# --- Idempotency-Key -----------------------------------------------------------------------


def test_idempotency_key_reused_with_other_parameters_or_too_long(
    client: stripe.StripeClient,
) -> None:
    key = f"pay-{uuid.uuid4()}"
    first = client.v1.payment_intents.create(params=intent(), options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as reused:
        client.v1.payment_intents.create(
            params=intent(amount=99_00), options={"idempotency_key": key}
        )
    assert reused.value.http_status == 400
    assert reused.value.json_body is not None
    assert reused.value.json_body["error"]["type"] == "idempotency_error"
    again = client.v1.payment_intents.create(params=intent(), options={"idempotency_key": key})
    assert again.id == first.id

    error = refused(lambda: client.v1.customers.create(options={"idempotency_key": "k" * 256}))
    assert error.http_status == 400
    assert client.v1.customers.create(options={"idempotency_key": "k" * 255}).id


def test_a_refused_request_is_neither_executed_nor_saved_for_replay(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    key = f"pay-{uuid.uuid4()}"
    before = request_counts(fake).get("POST /v1/payment_intents", 0)
    refused(
        lambda: client.v1.payment_intents.create(
            params=intent(amount=1), options={"idempotency_key": key}
        )
    )
    assert request_counts(fake).get("POST /v1/payment_intents", 0) == before
    # Nothing was saved under the key: the corrected request is a new one, not a replay.
    corrected = client.v1.payment_intents.create(params=intent(), options={"idempotency_key": key})
    assert corrected.last_response is not None
    assert "Idempotent-Replayed" not in corrected.last_response.headers
    assert request_counts(fake)["POST /v1/payment_intents"] == before + 1


# --- refunds -------------------------------------------------------------------------------


def test_refund_beyond_what_is_left_on_the_charge_is_refused(client: stripe.StripeClient) -> None:
    paid = client.v1.payment_intents.create(
        params=intent(payment_method="pm_card_visa", confirm=True)
    )
    error = refused(
        lambda: client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 12_51})
    )
    assert (error.http_status, error.code, error.param) == (400, "amount_too_large", "amount")

    assert client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 10_00}).amount
    error = refused(
        lambda: client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 2_51})
    )
    assert error.code == "amount_too_large"
    assert error.user_message is not None
    assert "(2.50 usd)" in error.user_message
    assert client.v1.refunds.create(params={"payment_intent": paid.id, "amount": 2_50}).amount

    error = refused(lambda: client.v1.refunds.create(params={"payment_intent": paid.id}))
    assert (error.code, error.param) == ("charge_already_refunded", None)


def test_refund_of_an_intent_that_has_not_succeeded_is_refused(
    client: stripe.StripeClient,
) -> None:
    unpaid = client.v1.payment_intents.create(params=intent())
    error = refused(lambda: client.v1.refunds.create(params={"payment_intent": unpaid.id}))
    assert (error.http_status, error.param) == (400, "payment_intent")

    client.v1.payment_intents.confirm(unpaid.id, params={"payment_method": "pm_card_visa"})
    assert client.v1.refunds.create(params={"payment_intent": unpaid.id}).amount == 12_50


# --- payment methods and their customer ----------------------------------------------------


def test_a_card_is_charged_only_for_the_customer_it_is_attached_to(
    client: stripe.StripeClient,
) -> None:
    owner, other = customer(client), customer(client)
    card = saved_card(client, owner)
    for wrong in ({"customer": other}, {}):
        error = refused(
            lambda wrong=wrong: client.v1.payment_intents.create(
                params=intent(payment_method=card, confirm=True, **wrong)
            )
        )
        assert (error.http_status, error.param) == (400, "payment_method")
    # The same at /confirm, for an intent of another customer.
    pending = client.v1.payment_intents.create(params=intent(customer=other))
    error = refused(
        lambda: client.v1.payment_intents.confirm(pending.id, params={"payment_method": card})
    )
    assert error.param == "payment_method"

    paid = client.v1.payment_intents.create(
        params=intent(customer=owner, payment_method=card, confirm=True)
    )
    assert paid.status == "succeeded"


def test_a_detached_card_may_not_be_used_again_and_detach_checks_no_owner(
    client: stripe.StripeClient,
) -> None:
    owner = customer(client)
    card = saved_card(client, owner)
    # Detach takes no customer and refuses nothing: ownership is the application's check.
    detached = client.v1.payment_methods.detach(card)
    assert detached.customer is None

    error = refused(
        lambda: client.v1.payment_intents.create(
            params=intent(customer=owner, payment_method=card, confirm=True)
        )
    )
    assert (error.http_status, error.param) == (400, "payment_method")
    error = refused(lambda: client.v1.payment_methods.attach(card, params={"customer": owner}))
    assert error.param == "payment_method"

    fresh = saved_card(client, owner)
    paid = client.v1.payment_intents.create(
        params=intent(customer=owner, payment_method=fresh, confirm=True)
    )
    assert paid.status == "succeeded"


# --- lists ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "101"])
def test_list_limit_outside_1_to_100_is_refused(fake: StripeHandle, limit: str) -> None:
    assert_refused(get(fake, "/v1/payment_intents", {"limit": limit}), param="limit")
    assert get(fake, "/v1/payment_intents", {"limit": "100"}).status_code == 200
