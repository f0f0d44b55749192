"""localstripe-compat behaves like Stripe where the project depends on it.

Checked against Stripe's documentation: idempotent requests
(https://docs.stripe.com/api/idempotent_requests), error objects and decline codes
(https://docs.stripe.com/api/errors, https://docs.stripe.com/declines/codes), test cards
(https://docs.stripe.com/testing), setup_future_usage and off-session payments
(https://docs.stripe.com/payments/save-during-payment).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe

from local.stripe_compat.process import StripeHandle, free_port, start_stripe

pytestmark = pytest.mark.integration

SECRET_KEY = "sk_test_compat"
PUBLISHABLE_KEY = "pk_test_compat"
PICKLE = Path("/tmp/localstripe.pickle")  # where plain localstripe keeps its state

VISA = "4242424242424242"
DECLINED = "4000000000000002"
CHARGE_DECLINED = "4000000000000341"  # attaching succeeds, charging fails
THREE_DS = "4000002500003155"  # authenticate unless set up for off-session use


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_mtime_ns, stat.st_size


@pytest.fixture(scope="module")
def pickle_before() -> tuple[int, int] | None:
    return _file_state(PICKLE)


@pytest.fixture(scope="module")
def compat(pickle_before: tuple[int, int] | None) -> Iterator[StripeHandle]:
    handle = start_stripe()
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(compat: StripeHandle) -> stripe.StripeClient:
    return stripe.StripeClient(
        SECRET_KEY, base_addresses={"api": compat.url}, max_network_retries=0
    )


# --- helpers -------------------------------------------------------------------------------


def card(number: str) -> dict[str, Any]:
    return {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}


def stripe_js_card(number: str) -> dict[str, str]:
    """`payment_method_data` as Stripe.js form-encodes it, telemetry included."""
    return {
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": number,
        "payment_method_data[card][exp_month]": "12",
        "payment_method_data[card][exp_year]": "34",
        "payment_method_data[card][cvc]": "123",
        "payment_method_data[billing_details][address][postal_code]": "94107",
        "payment_method_data[guid]": "NA",
        "payment_method_data[payment_user_agent]": "stripe.js/test",
    }


def stripe_js_confirm(
    compat: StripeHandle, intent: Any, fields: dict[str, str], kind: str = "payment_intents"
) -> requests.Response:
    """A confirm as Stripe.js sends it: publishable key and client secret, no secret key."""
    return requests.post(
        f"{compat.url}/v1/{kind}/{intent.id}/confirm",
        data={
            "key": PUBLISHABLE_KEY,
            "client_secret": intent.client_secret,
            "use_stripe_sdk": "true",
            **fields,
        },
        timeout=10,
    )


def authenticate(compat: StripeHandle, intent: Any, *, success: bool = True) -> requests.Response:
    """The customer completes (or fails) 3D Secure: localstripe's test hook."""
    return requests.post(
        f"{compat.url}/v1/payment_intents/{intent.id}/_authenticate",
        params={"success": "true" if success else "false"},
        data={"key": PUBLISHABLE_KEY, "client_secret": intent.client_secret},
        timeout=10,
    )


def counts(compat: StripeHandle) -> dict[str, int]:
    response = requests.get(f"{compat.url}/_compat/requests", timeout=10)
    response.raise_for_status()
    result: dict[str, int] = response.json()
    return result


def reset_counts(compat: StripeHandle) -> None:
    requests.delete(f"{compat.url}/_compat/requests", timeout=10).raise_for_status()


def add_fault(compat: StripeHandle, **fault: Any) -> None:
    requests.post(f"{compat.url}/_compat/faults", json=fault, timeout=10).raise_for_status()


def saved_card(client: stripe.StripeClient, customer: str, number: str) -> str:
    """A card attached to the customer (not set up for off-session use)."""
    payment_method = client.v1.payment_methods.create(params={"type": "card", "card": card(number)})
    client.v1.payment_methods.attach(payment_method.id, params={"customer": customer})
    return payment_method.id


def new_customer(client: stripe.StripeClient) -> str:
    return client.v1.customers.create(params={"email": "patient@example.com"}).id


# Cards only, no redirects: without it, Stripe (API versions since 2023-08-16) needs a
# return_url on every confirm (tests/integration/test_stripe_rules.py).
NO_REDIRECTS = {"enabled": True, "allow_redirects": "never"}


def intent_params(**extra: Any) -> dict[str, Any]:
    return {
        "amount": 12_50,
        "currency": "usd",
        "metadata": {"payment_id": "pay_1"},
        "automatic_payment_methods": NO_REDIRECTS,
        **extra,
    }


# --- process and listening -----------------------------------------------------------------


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6} (Linux)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        lines = Path(table).read_text().splitlines()[1:] if Path(table).exists() else []
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_listens_on_127_0_0_1_only(compat: StripeHandle) -> None:
    assert compat.url == f"http://127.0.0.1:{compat.port}"
    with socket.create_connection(("127.0.0.1", compat.port), timeout=2) as conn:
        assert conn.getpeername()[1] == compat.port
    # Another loopback address of this machine: reachable if the server bound 0.0.0.0 or ::.
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.2", compat.port), timeout=2),
    ):
        pytest.fail("the fake answered on 127.0.0.2: it listens beyond 127.0.0.1")
    if Path("/proc/net/tcp").exists():
        assert _listening_addresses(compat.port) == ["0100007F"]  # 127.0.0.1, no IPv6


def test_start_stripe_reports_a_server_that_cannot_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="exited with"):
            start_stripe(port, timeout=15)


# --- PaymentIntent parameters --------------------------------------------------------------


def test_create_accepts_and_returns_stripe_optional_fields(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    intent = client.v1.payment_intents.create(
        params=intent_params(
            customer=customer,
            description="Clinic services",
            receipt_email="patient@example.com",
            statement_descriptor_suffix="CLINIC",
            setup_future_usage="off_session",
            automatic_payment_methods={"enabled": True},
            expand=["customer"],
        )
    )
    assert intent.status == "requires_payment_method"
    assert intent.description == "Clinic services"
    assert intent.receipt_email == "patient@example.com"
    assert intent.statement_descriptor_suffix == "CLINIC"
    assert intent.setup_future_usage == "off_session"
    assert intent.automatic_payment_methods is not None
    assert intent.automatic_payment_methods.enabled is True
    assert intent.metadata.to_dict() == {"payment_id": "pay_1"}

    fetched = client.v1.payment_intents.retrieve(intent.id)
    assert fetched.description == "Clinic services"
    assert fetched.setup_future_usage == "off_session"

    plain = client.v1.payment_intents.create(params=intent_params())
    assert plain.description is None
    assert plain.setup_future_usage is None

    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.payment_intents.create(params=intent_params(setup_future_usage="sometimes"))
    assert bad.value.param == "setup_future_usage"


def test_list_filters_by_customer_newest_first(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    first = client.v1.payment_intents.create(params=intent_params(customer=customer))
    second = client.v1.payment_intents.create(params=intent_params(customer=customer))
    client.v1.payment_intents.create(params=intent_params())
    listed = client.v1.payment_intents.list(params={"customer": customer})
    assert [intent.id for intent in listed.data] == [second.id, first.id]


def test_setup_future_usage_attaches_the_card_to_the_customer_on_success(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    intent = client.v1.payment_intents.create(
        params=intent_params(customer=customer, setup_future_usage="off_session")
    )
    response = stripe_js_confirm(compat, intent, stripe_js_card(VISA))
    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert confirmed["status"] == "succeeded"

    saved = client.v1.payment_methods.list(params={"customer": customer, "type": "card"})
    assert [pm.id for pm in saved.data] == [confirmed["payment_method"]]
    assert saved.data[0].card is not None
    assert saved.data[0].card.last4 == "4242"


def test_without_setup_future_usage_the_card_is_not_saved(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    intent = client.v1.payment_intents.create(params=intent_params(customer=customer))
    assert stripe_js_confirm(compat, intent, stripe_js_card(VISA)).json()["status"] == "succeeded"
    assert client.v1.payment_methods.list(params={"customer": customer, "type": "card"}).data == []


# --- confirm with a payment method ---------------------------------------------------------


def test_confirm_with_payment_method_id(compat: StripeHandle, client: stripe.StripeClient) -> None:
    # Server side, with the secret key.
    intent = client.v1.payment_intents.create(params=intent_params())
    confirmed = client.v1.payment_intents.confirm(
        intent.id, params={"payment_method": "pm_card_visa"}
    )
    assert confirmed.status == "succeeded"
    assert confirmed.payment_method is not None
    assert str(confirmed.payment_method).startswith("pm_")

    # Browser side, as Stripe.js confirmCardPayment(clientSecret, {payment_method: id}).
    payment_method = client.v1.payment_methods.create(params={"type": "card", "card": card(VISA)})
    intent = client.v1.payment_intents.create(params=intent_params())
    response = stripe_js_confirm(compat, intent, {"payment_method": payment_method.id})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["payment_method"] == payment_method.id


def test_confirm_with_payment_method_data_succeeds(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    response = stripe_js_confirm(compat, intent, stripe_js_card(VISA))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["amount_received"] == intent.amount
    assert body["last_payment_error"] is None
    payment_method = client.v1.payment_methods.retrieve(body["payment_method"])
    assert payment_method.card is not None
    assert payment_method.card.last4 == "4242"


def test_publishable_key_needs_the_client_secret(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    url = f"{compat.url}/v1/payment_intents/{intent.id}/confirm"
    wrong = requests.post(
        url,
        data={
            "key": PUBLISHABLE_KEY,
            "client_secret": "pi_x_secret_y",
            "payment_method": "pm_card_visa",
        },
        timeout=10,
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["param"] == "client_secret"
    no_key = requests.post(url, data={"payment_method": "pm_card_visa"}, timeout=10)
    assert no_key.status_code == 401
    assert client.v1.payment_intents.retrieve(intent.id).status == "requires_payment_method"

    # Stripe.js's retrievePaymentIntent(clientSecret).
    fetched = requests.get(
        f"{compat.url}/v1/payment_intents/{intent.id}",
        params={"key": PUBLISHABLE_KEY, "client_secret": intent.client_secret},
        timeout=10,
    )
    assert fetched.status_code == 200
    assert fetched.json()["id"] == intent.id


def test_declined_card_is_a_card_error_and_the_intent_can_be_retried(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    response = stripe_js_confirm(compat, intent, stripe_js_card(DECLINED))
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["type"] == "card_error"
    assert error["code"] == "card_declined"
    assert error["decline_code"] == "generic_decline"
    assert error["message"] == "Your card was declined."
    assert error["charge"].startswith("ch_")
    assert error["payment_method"]["card"]["last4"] == "0002"
    assert error["payment_intent"]["id"] == intent.id
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["amount_received"] == 0

    failed = client.v1.payment_intents.retrieve(intent.id)
    assert failed.status == "requires_payment_method"
    assert failed.payment_method is None
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.type == "card_error"
    assert failed.last_payment_error.decline_code == "generic_decline"

    # Stripe keeps the intent: the customer tries another card.
    retry = stripe_js_confirm(compat, intent, stripe_js_card(VISA))
    assert retry.status_code == 200, retry.text
    assert retry.json()["status"] == "succeeded"


def test_charge_time_decline(compat: StripeHandle, client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    payment_method = saved_card(client, customer, CHARGE_DECLINED)  # attaching succeeds
    intent = client.v1.payment_intents.create(
        params=intent_params(customer=customer, payment_method=payment_method)
    )
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.confirm(intent.id)
    assert declined.value.http_status == 402
    assert declined.value.code == "card_declined"
    assert declined.value.error is not None
    assert declined.value.error.decline_code == "generic_decline"

    # The same through Stripe's test payment method alias.
    intent = client.v1.payment_intents.create(params=intent_params())
    with pytest.raises(stripe.CardError) as alias:
        client.v1.payment_intents.confirm(
            intent.id, params={"payment_method": "pm_card_chargeCustomerFail"}
        )
    assert alias.value.code == "card_declined"


def test_declining_test_cards_carry_their_decline_codes(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    expected = {
        "4000000000009995": ("card_declined", "insufficient_funds"),
        "4000000000000069": ("expired_card", "expired_card"),
        "4000000000000127": ("incorrect_cvc", "incorrect_cvc"),
    }
    for number, (code, decline_code) in expected.items():
        intent = client.v1.payment_intents.create(params=intent_params())
        # Card numbers in payment_method_data come from Stripe.js (publishable key): Stripe's
        # server-side confirm knows no payment_method_data[card].
        declined = stripe_js_confirm(compat, intent, stripe_js_card(number))
        assert declined.status_code == 402
        error = declined.json()["error"]
        assert (error["code"], error["decline_code"]) == (code, decline_code)


def test_3ds_card_requires_action_then_authenticates(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    response = stripe_js_confirm(compat, intent, stripe_js_card(THREE_DS))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "requires_action"
    assert response.json()["next_action"]["type"] == "use_stripe_sdk"

    done = authenticate(compat, intent)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "succeeded"
    assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_failed_3ds_returns_to_requires_payment_method(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    assert stripe_js_confirm(compat, intent, stripe_js_card(THREE_DS)).status_code == 200
    failed = authenticate(compat, intent, success=False).json()
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"


def test_confirm_true_at_creation_with_a_saved_card(client: stripe.StripeClient) -> None:
    customer = new_customer(client)
    payment_method = saved_card(client, customer, VISA)
    intent = client.v1.payment_intents.create(
        params=intent_params(
            customer=customer, payment_method=payment_method, confirm=True, off_session=True
        )
    )
    assert intent.status == "succeeded"
    assert intent.payment_method == payment_method

    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.create(
            params=intent_params(payment_method="pm_card_visa_chargeDeclined", confirm=True)
        )
    assert declined.value.code == "card_declined"
    assert declined.value.json_body is not None
    assert declined.value.json_body["error"]["payment_intent"]["status"] == (
        "requires_payment_method"
    )


def test_off_session_payment_needing_authentication_is_declined(
    client: stripe.StripeClient,
) -> None:
    customer = new_customer(client)
    payment_method = saved_card(client, customer, THREE_DS)
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_intents.create(
            params=intent_params(
                customer=customer, payment_method=payment_method, confirm=True, off_session=True
            )
        )
    error = declined.value
    assert error.http_status == 402
    assert error.code == "authentication_required"
    assert error.error is not None
    assert error.error.decline_code == "authentication_required"
    assert error.json_body is not None
    intent = error.json_body["error"]["payment_intent"]
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == "authentication_required"

    # Also when an existing intent is confirmed off-session.
    pending = client.v1.payment_intents.create(
        params=intent_params(customer=customer, payment_method=payment_method)
    )
    with pytest.raises(stripe.CardError) as again:
        client.v1.payment_intents.confirm(pending.id, params={"off_session": True})
    assert again.value.code == "authentication_required"


def test_card_set_up_for_off_session_use_needs_no_authentication_off_session(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    first = client.v1.payment_intents.create(
        params=intent_params(customer=customer, setup_future_usage="off_session")
    )
    assert stripe_js_confirm(compat, first, stripe_js_card(THREE_DS)).json()["status"] == (
        "requires_action"
    )
    payment_method = authenticate(compat, first).json()["payment_method"]

    later = client.v1.payment_intents.create(
        params=intent_params(
            customer=customer, payment_method=payment_method, confirm=True, off_session=True
        )
    )
    assert later.status == "succeeded"


def test_setup_intent_confirm_with_payment_method_data(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    customer = new_customer(client)
    setup = client.v1.setup_intents.create(
        params={"customer": customer, "automatic_payment_methods": NO_REDIRECTS}
    )

    declined = stripe_js_confirm(compat, setup, stripe_js_card(DECLINED), kind="setup_intents")
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert (error["type"], error["code"], error["decline_code"]) == (
        "card_error",
        "card_declined",
        "generic_decline",
    )
    assert error["setup_intent"]["status"] == "requires_payment_method"

    response = stripe_js_confirm(compat, setup, stripe_js_card(VISA), kind="setup_intents")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    saved = client.v1.payment_methods.list(params={"customer": customer, "type": "card"})
    assert [pm.id for pm in saved.data] == [response.json()["payment_method"]]


# --- Idempotency-Key -----------------------------------------------------------------------


def test_same_key_and_parameters_replay_the_first_response(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    key = f"pay-{uuid.uuid4()}"
    params = intent_params(description="Invoice INV-1", confirm=True, payment_method="pm_card_visa")
    reset_counts(compat)

    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    second = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})

    assert second.id == first.id
    assert second.to_dict() == first.to_dict()
    assert first.last_response is not None
    assert second.last_response is not None
    assert "Idempotent-Replayed" not in first.last_response.headers
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert second.last_response.code == first.last_response.code == 200
    assert counts(compat)["POST /v1/payment_intents"] == 1  # one PaymentIntent, not two


def test_declines_are_replayed_too(compat: StripeHandle, client: stripe.StripeClient) -> None:
    intent = client.v1.payment_intents.create(params=intent_params())
    key = f"confirm-{uuid.uuid4()}"
    params = {"payment_method": "pm_card_visa_chargeDeclined"}
    reset_counts(compat)

    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as declined:
            client.v1.payment_intents.confirm(
                intent.id, params=params, options={"idempotency_key": key}
            )
        errors.append(declined.value)
    assert errors[0].http_status == errors[1].http_status == 402
    assert errors[1].http_body == errors[0].http_body
    assert errors[1].headers["Idempotent-Replayed"] == "true"
    assert counts(compat)["POST /v1/payment_intents/{id}/confirm"] == 1


def test_same_key_with_other_parameters_is_an_idempotency_error(
    client: stripe.StripeClient,
) -> None:
    key = f"pay-{uuid.uuid4()}"
    client.v1.payment_intents.create(params=intent_params(), options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as reused:
        client.v1.payment_intents.create(
            params=intent_params(amount=99_00), options={"idempotency_key": key}
        )
    assert reused.value.http_status == 400
    assert reused.value.json_body == {
        "error": {
            "type": "idempotency_error",
            "message": "Keys for idempotent requests can only be used with the same parameters "
            f"they were first used with. Try using a key other than '{key}' if you meant to "
            "execute a different request.",
        }
    }


def test_keys_are_scoped_to_the_api_key(compat: StripeHandle, client: stripe.StripeClient) -> None:
    other_account = stripe.StripeClient(
        "sk_test_other_clinic", base_addresses={"api": compat.url}, max_network_retries=0
    )
    key = f"pay-{uuid.uuid4()}"
    mine = client.v1.payment_intents.create(
        params=intent_params(), options={"idempotency_key": key}
    )
    theirs = other_account.v1.payment_intents.create(
        params=intent_params(), options={"idempotency_key": key}
    )
    assert theirs.id != mine.id


def test_rejected_parameters_are_not_saved(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    # Stripe saves a result only once the endpoint started executing: a request rejected for
    # its parameters can be retried with the same key.
    key = f"pay-{uuid.uuid4()}"
    params = intent_params(currency="usd", setup_future_usage="sometimes")
    for _ in range(2):
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.payment_intents.create(params=params, options={"idempotency_key": key})


# --- faults --------------------------------------------------------------------------------


def test_error_before_fails_without_executing(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    reset_counts(compat)
    add_fault(compat, method="POST", path_prefix="/v1/customers", mode="error_before", status=503)
    key = f"cus-{uuid.uuid4()}"
    with pytest.raises(stripe.APIError) as failed:
        client.v1.customers.create(
            params={"email": "a@example.com"}, options={"idempotency_key": key}
        )
    assert failed.value.http_status == 503
    assert failed.value.json_body is not None
    assert failed.value.json_body["error"]["type"] == "api_error"
    assert "POST /v1/customers" not in counts(compat)

    # Nothing was saved under the key: the retry executes.
    retried = client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": key}
    )
    assert retried.last_response is not None
    assert "Idempotent-Replayed" not in retried.last_response.headers
    assert counts(compat)["POST /v1/customers"] == 1


def test_error_after_executes_and_the_retry_replays_the_real_result(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    reset_counts(compat)
    add_fault(compat, method="POST", path_prefix="/v1/payment_intents", mode="error_after")
    key = f"pay-{uuid.uuid4()}"
    params = intent_params(confirm=True, payment_method="pm_card_visa")
    with pytest.raises(stripe.APIError) as unknown:
        client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert unknown.value.http_status == 500
    assert counts(compat)["POST /v1/payment_intents"] == 1  # Stripe did the work

    retried = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert retried.status == "succeeded"
    assert retried.last_response is not None
    assert retried.last_response.headers["Idempotent-Replayed"] == "true"
    assert counts(compat)["POST /v1/payment_intents"] == 1
    assert client.v1.payment_intents.retrieve(retried.id).status == "succeeded"


def test_delay_times_out_the_client_and_the_work_still_happens_once(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    reset_counts(compat)
    add_fault(compat, method="POST", path_prefix="/v1/payment_intents", mode="delay", seconds=1.0)
    impatient = stripe.StripeClient(
        SECRET_KEY,
        base_addresses={"api": compat.url},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=0.3),
    )
    key = f"pay-{uuid.uuid4()}"
    params = intent_params()
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.payment_intents.create(params=params, options={"idempotency_key": key})

    # While the first request is still going through, the key is in use.
    with pytest.raises(stripe.APIError) as in_use:
        client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert in_use.value.http_status == 409
    assert in_use.value.json_body is not None
    assert in_use.value.json_body["error"]["code"] == "idempotency_key_in_use"

    time.sleep(max(0.0, 1.3 - (time.monotonic() - started)))
    replayed = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert replayed.last_response is not None
    assert replayed.last_response.headers["Idempotent-Replayed"] == "true"
    assert counts(compat)["POST /v1/payment_intents"] == 1


def test_fault_controls(compat: StripeHandle) -> None:
    url = f"{compat.url}/_compat/faults"
    assert requests.post(url, json={"mode": "explode"}, timeout=10).status_code == 400
    add_fault(compat, path_prefix="/v1/refunds", mode="error_before", times=2)
    assert requests.get(url, timeout=10).json()[0]["times"] == 2
    assert requests.delete(url, timeout=10).status_code == 204
    assert requests.get(url, timeout=10).json() == []


# --- wallets (Apple Pay, Google Pay) --------------------------------------------------------


def wallet_token(compat: StripeHandle, **spec: Any) -> requests.Response:
    """The token a wallet's payment sheet gives (the fake's control: Stripe has no API for it)."""
    return requests.post(f"{compat.url}/_compat/wallet_tokens", json=spec, timeout=10)


def card_wallet(payment_method: Any) -> Any:
    return payment_method.to_dict()["card"]["wallet"]


@pytest.mark.parametrize(
    ("wallet", "tokenization_method"), [("apple_pay", "apple_pay"), ("google_pay", "android_pay")]
)
def test_a_wallet_token_becomes_a_card_payment_method_with_its_wallet(
    compat: StripeHandle, client: stripe.StripeClient, wallet: str, tokenization_method: str
) -> None:
    response = wallet_token(compat, wallet=wallet, number="5555555555554444", dynamic_last4="9999")
    assert response.status_code == 200, response.text
    token = response.json()
    assert (token["object"], token["type"]) == ("token", "card")
    assert token["id"].startswith("tok_")
    assert token["card"]["tokenization_method"] == tokenization_method  # Stripe's names
    assert (token["card"]["last4"], token["card"]["dynamic_last4"]) == ("4444", "9999")

    payment_method = client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": token["id"]}}
    )
    assert payment_method.type == "card"
    assert payment_method.card is not None
    assert (payment_method.card.last4, payment_method.card.exp_year) == ("4444", 2034)
    assert card_wallet(payment_method) == {"type": wallet, wallet: {}, "dynamic_last4": "9999"}
    retrieved = client.v1.payment_methods.retrieve(payment_method.id)
    assert card_wallet(retrieved) == card_wallet(payment_method)


def test_a_card_entered_as_it_is_has_wallet_null(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    by_number = client.v1.payment_methods.create(params={"type": "card", "card": card(VISA)})
    by_alias = client.v1.payment_methods.retrieve("pm_card_visa_debit")
    plain_token = requests.post(
        f"{compat.url}/v1/tokens",
        data={f"card[{k}]": str(v) for k, v in card(VISA).items()},
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
        timeout=10,
    ).json()
    assert plain_token["card"]["tokenization_method"] is None
    by_token = client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": plain_token["id"]}}
    )
    for payment_method in (by_number, by_alias, by_token):
        assert "wallet" in payment_method.to_dict()["card"]  # present, as Stripe sends it
        assert card_wallet(payment_method) is None


def test_a_charge_of_a_wallet_card_names_the_wallet_in_its_payment_method_details(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    token = wallet_token(compat, wallet="apple_pay").json()
    # The portal, as Stripe.js does it: the PaymentMethod made with the publishable key, then
    # confirmCardPayment(clientSecret, {payment_method: id}).
    created = requests.post(
        f"{compat.url}/v1/payment_methods",
        data={"key": PUBLISHABLE_KEY, "type": "card", "card[token]": token["id"]},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    intent = client.v1.payment_intents.create(params=intent_params())
    confirmed = stripe_js_confirm(compat, intent, {"payment_method": created.json()["id"]})
    assert confirmed.status_code == 200, confirmed.text
    charge_id = confirmed.json()["latest_charge"]["id"]
    charge = client.v1.charges.retrieve(charge_id).to_dict()
    details = charge["payment_method_details"]
    assert details["type"] == "card"
    assert details["card"]["last4"] == "4242"
    assert details["card"]["wallet"] == {
        "type": "apple_pay",
        "apple_pay": {},
        "dynamic_last4": "4242",  # the control's default: the card's own last four
    }

    plain = client.v1.payment_intents.create(
        params=intent_params(payment_method="pm_card_visa", confirm=True)
    )
    assert plain.latest_charge is not None
    plain_charge = client.v1.charges.retrieve(str(plain.to_dict()["latest_charge"]["id"]))
    assert plain_charge.to_dict()["payment_method_details"]["card"]["wallet"] is None


def test_a_token_is_used_once_and_what_is_not_a_token_is_refused(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    token = wallet_token(compat, wallet="google_pay").json()["id"]
    client.v1.payment_methods.create(params={"type": "card", "card": {"token": token}})
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.payment_methods.create(params={"type": "card", "card": {"token": token}})
    assert (again.value.http_status, again.value.code) == (400, "token_already_used")
    assert again.value.param == "card[token]"

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_nope"}})
    assert (unknown.value.http_status, unknown.value.code) == (400, "resource_missing")

    fresh = wallet_token(compat, wallet="apple_pay").json()["id"]
    with pytest.raises(stripe.InvalidRequestError) as both:
        client.v1.payment_methods.create(
            params={"type": "card", "card": {"token": fresh, "number": VISA}}
        )
    assert (both.value.http_status, both.value.param) == (400, "card[token]")
    # Refused before it was used: the token still makes its one PaymentMethod.
    made = client.v1.payment_methods.create(params={"type": "card", "card": {"token": fresh}})
    assert card_wallet(made)["type"] == "apple_pay"


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"wallet": "samsung_pay"},
        {"wallet": "apple_pay", "number": "4242"},
        {"wallet": "apple_pay", "dynamic_last4": "12345"},
        {"wallet": "apple_pay", "customer": "cus_1"},
    ],
)
def test_the_wallet_token_control_refuses_what_it_does_not_know(
    compat: StripeHandle, spec: dict[str, Any]
) -> None:
    response = wallet_token(compat, **spec)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("Invalid wallet token")


# --- webhooks ------------------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: queue.Queue[tuple[bytes, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads the deliveries, not the server's log."""


def test_registered_webhook_receives_a_signed_payment_intent_succeeded(
    compat: StripeHandle, client: stripe.StripeClient
) -> None:
    secret = "whsec_compat_test"
    hook_id = f"hook_{uuid.uuid4().hex}"
    received: queue.Queue[tuple[bytes, str]] = queue.Queue()
    handler = type("Receiver", (_Receiver,), {"received": received})
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    config = f"{compat.url}/_config/webhooks/{hook_id}"
    try:
        registered = requests.post(
            config,
            data={
                "url": f"http://127.0.0.1:{receiver.server_port}/stripe",
                "secret": secret,
                "events[]": ["payment_intent.succeeded"],
            },
            timeout=10,
        )
        assert registered.status_code == 200
        intent = client.v1.payment_intents.create(
            params=intent_params(description="Clinic services")
        )
        assert stripe_js_confirm(compat, intent, stripe_js_card(VISA)).status_code == 200

        deadline = time.monotonic() + 10
        while True:
            payload, signature = received.get(timeout=max(0.1, deadline - time.monotonic()))
            event = stripe.Webhook.construct_event(payload, signature, secret)
            if event["data"]["object"]["id"] == intent.id:
                break
        assert event["type"] == "payment_intent.succeeded"
        assert event["data"]["object"]["status"] == "succeeded"
        assert event["data"]["object"]["description"] == "Clinic services"
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.Webhook.construct_event(payload, signature, "whsec_other")
    finally:
        # localstripe cannot unregister a webhook: subscribe it to nothing.
        requests.post(
            config, json={"url": "http://127.0.0.1:9/", "secret": secret, "events": []}, timeout=10
        )
        receiver.shutdown()
        receiver.server_close()
        thread.join(timeout=5)


# --- state ---------------------------------------------------------------------------------


def test_no_state_is_written_to_disk(
    compat: StripeHandle, client: stripe.StripeClient, pickle_before: tuple[int, int] | None
) -> None:
    # Runs last: every test before it wrote to the store. Plain localstripe would have
    # (re)written its pickle on each of those writes.
    client.v1.customers.create(params={"email": "disk@example.com"})
    assert _file_state(PICKLE) == pickle_before
