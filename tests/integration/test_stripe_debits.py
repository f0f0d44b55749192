"""Bank debits in the strict fake: ACH (`us_bank_account`), Bacs, SEPA and BECS as Stripe runs
them. Each refusal is shown refused and then accepted once corrected (as in
test_stripe_rules.py), then each debit's happy and failure paths through stripe-python's
StripeClient, and the publishable-key confirms Stripe.js sends. Sources: docs/stripe-fidelity.md,
"Bank debits".

Deterministic: the module turns the fake's "days later" off (`settle_after_seconds: null`) and
settles pending debits with `POST /_compat/debits/settle` when a test says so; one test checks
the timer itself with a short delay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe

from local.stripe_compat.process import StripeHandle, start_stripe
from tests.support.fixtures import stripe_resources

pytestmark = pytest.mark.integration

SECRET_KEY = "sk_test_debits"
PUBLISHABLE_KEY = "pk_test_debits"

SEPA_OK = "DE89370400440532013000"
SEPA_FAILS = "DE62370400440532013001"
ACH_ROUTING = "110000000"
ACH_OK = "000123456789"
ACH_NO_ACCOUNT = "000111111116"
BACS_SORT_CODE = "108800"
BECS_BSB = "000000"

NAME, EMAIL = "Jenny Rosen", "jenny.rosen@example.com"
ADDRESS = {"line1": "1 High Street", "city": "London", "postal_code": "EC1A 1BB", "country": "GB"}
ONLINE = {
    "customer_acceptance": {
        "type": "online",
        "online": {"ip_address": "203.0.113.7", "user_agent": "Mozilla/5.0 (clinic portal)"},
    }
}
# Each debit with its currency and an account that succeeds.
ACCOUNTS: dict[str, tuple[str, dict[str, str]]] = {
    "sepa_debit": ("eur", {"iban": SEPA_OK}),
    "us_bank_account": ("usd", {"routing_number": ACH_ROUTING, "account_number": ACH_OK}),
    "bacs_debit": ("gbp", {"sort_code": BACS_SORT_CODE, "account_number": "00012345"}),
    "au_becs_debit": ("aud", {"bsb_number": BECS_BSB, "account_number": "000123456"}),
}


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeHandle]:
    handle = start_stripe()
    # Debits settle only when a test settles them.
    controls(handle, "POST", "debits", {"settle_after_seconds": None})
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(fake: StripeHandle) -> stripe.StripeClient:
    return stripe.StripeClient(SECRET_KEY, base_addresses={"api": fake.url}, max_network_retries=0)


# --- helpers -------------------------------------------------------------------------------


def controls(fake: StripeHandle, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, f"{fake.url}/_compat/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def settle(fake: StripeHandle, intent_id: str) -> None:
    assert controls(fake, "POST", "debits/settle", {"payment_intent": intent_id}) == {
        "settled": [intent_id]
    }


def post(
    fake: StripeHandle, path: str, data: dict[str, str], *, key: str | None = SECRET_KEY
) -> requests.Response:
    """A raw form POST: what Stripe.js sends, or what stripe-python would not."""
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(fake.url + path, data=data, headers=auth, timeout=10)


def flat(prefix: str, value: Any) -> dict[str, str]:
    """Form-encode a nested dict the way Stripe.js does."""
    if isinstance(value, dict):
        result: dict[str, str] = {}
        for key, child in value.items():
            result |= flat(f"{prefix}[{key}]", child)
        return result
    return {prefix: str(value)}


def billing(kind: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": NAME, "email": EMAIL}
    if kind == "bacs_debit":
        details["address"] = ADDRESS
    return details


def stripe_js_confirm(
    fake: StripeHandle,
    kind: str,
    intent: Any,
    account: dict[str, str],
    *,
    billing_details: dict[str, Any] | None = None,
    mandate: bool = True,
    path: str = "payment_intents",
) -> requests.Response:
    """confirmPayment / confirmSetup with a new bank account, as Stripe.js sends them: the
    publishable key, the client secret, and the mandate accepted in the browser."""
    data = {
        "key": PUBLISHABLE_KEY,
        "client_secret": intent.client_secret,
        "payment_method_data[type]": kind,
        "payment_method_data[guid]": "NA",
        "payment_method_data[payment_user_agent]": "stripe.js/test",
        **flat(f"payment_method_data[{kind}]", account),
        **flat(
            "payment_method_data[billing_details]",
            billing(kind) if billing_details is None else billing_details,
        ),
    }
    if mandate:
        data["mandate_data[customer_acceptance][type]"] = "online"
        data["mandate_data[customer_acceptance][online][infer_from_client]"] = "true"
    return post(fake, f"/v1/{path}/{intent.id}/confirm", data, key=None)


def assert_error(
    response: requests.Response, *, param: str | None, code: str | None = None
) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error.get("param") == param
    assert error.get("code") == code
    assert error["message"]
    return error


def refused(call: Any) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        call()
    assert raised.value.http_status == 400
    return raised.value


def customer(client: stripe.StripeClient) -> str:
    return client.v1.customers.create(params={"email": EMAIL}).id


def debit_intent(client: stripe.StripeClient, kind: str, **extra: Any) -> Any:
    currency = ACCOUNTS[kind][0]
    return client.v1.payment_intents.create(
        params={
            "amount": 20_00,
            "currency": currency,
            "allowed_payment_method_types": [kind],
            **extra,
        }
    )


def confirmed_debit(client: stripe.StripeClient, kind: str, payment_method: str) -> Any:
    """A debit created and confirmed on the server with the customer's mandate."""
    return debit_intent(
        client, kind, payment_method=payment_method, mandate_data=ONLINE, confirm=True
    )


def new_payment_method(client: stripe.StripeClient, kind: str, account: dict[str, str]) -> str:
    """A debit PaymentMethod created with the secret key (SEPA, ACH, BECS)."""
    params: Any = {"type": kind, kind: account, "billing_details": billing(kind)}
    return client.v1.payment_methods.create(params=params).id


def events_about(client: stripe.StripeClient, object_id: str) -> list[str]:
    """Types of the events about an object, oldest first."""
    events = client.v1.events.list(params={"limit": 100}).data
    return [event.type for event in reversed(events) if event.data.object["id"] == object_id]


def charge_of(intent: Any) -> Any:
    charge = intent.latest_charge
    assert charge is not None
    return charge


def verify(client: stripe.StripeClient, intent_id: str) -> Any:
    return client.v1.payment_intents.verify_microdeposits(
        intent_id, params={"descriptor_code": "SM11AA"}
    )


# --- allowed_payment_method_types ----------------------------------------------------------


def test_allowed_payment_method_types_exclude_automatic_payment_methods(
    client: stripe.StripeClient,
) -> None:
    params: Any = {
        "amount": 20_00,
        "currency": "eur",
        "allowed_payment_method_types": ["sepa_debit"],
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
    }
    error = refused(lambda: client.v1.payment_intents.create(params=params))
    assert error.param == "allowed_payment_method_types"

    del params["automatic_payment_methods"]
    created = client.v1.payment_intents.create(params=params)
    assert created.payment_method_types == ["sepa_debit"]
    assert created.allowed_payment_method_types == ["sepa_debit"]
    assert created.automatic_payment_methods is None
    error = refused(
        lambda: client.v1.setup_intents.create(
            params={
                "allowed_payment_method_types": ["sepa_debit"],
                "excluded_payment_method_types": ["card"],
            }
        )
    )
    assert error.param == "allowed_payment_method_types"


def test_allowed_payment_method_types_must_be_stripe_types(client: stripe.StripeClient) -> None:
    error = refused(
        lambda: client.v1.payment_intents.create(
            params={
                "amount": 20_00,
                "currency": "usd",
                "allowed_payment_method_types": ["card", "bank_debit"],
            }
        )
    )
    assert error.param == "allowed_payment_method_types[1]"
    # A Stripe type the fake's account has not activated is filtered out, as Stripe does.
    created = client.v1.payment_intents.create(
        params={
            "amount": 20_00,
            "currency": "usd",
            "allowed_payment_method_types": ["card", "cashapp"],
        }
    )
    assert created.payment_method_types == ["card"]


@pytest.mark.parametrize(("kind", "wrong"), [(kind, "jpy") for kind in ACCOUNTS])
def test_a_debit_type_needs_its_own_currency(
    client: stripe.StripeClient, kind: str, wrong: str
) -> None:
    right = ACCOUNTS[kind][0]
    error = refused(
        lambda: client.v1.payment_intents.create(
            params={"amount": 2000, "currency": wrong, "allowed_payment_method_types": [kind]}
        )
    )
    assert error.param == "allowed_payment_method_types"
    assert error.user_message is not None
    assert f"{kind} takes {right} only" in error.user_message

    created = client.v1.payment_intents.create(
        params={"amount": 2000, "currency": right, "allowed_payment_method_types": [kind]}
    )
    assert created.payment_method_types == [kind]


def test_a_payment_method_the_intent_cannot_use_is_refused(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    # usd: SEPA is filtered out, only cards are left.
    mixed = client.v1.payment_intents.create(
        params={
            "amount": 20_00,
            "currency": "usd",
            "allowed_payment_method_types": ["card", "sepa_debit"],
        }
    )
    assert mixed.payment_method_types == ["card"]
    response = stripe_js_confirm(fake, "sepa_debit", mixed, {"iban": SEPA_OK})
    error = assert_error(response, param="payment_method")
    assert error["message"].startswith(
        "The PaymentMethod provided (sepa_debit) is not allowed for this PaymentIntent."
    )
    # Automatic payment methods: the fake's account offers cards only.
    cards_only = client.v1.payment_intents.create(
        params={
            "amount": 20_00,
            "currency": "eur",
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
    )
    assert_error(
        stripe_js_confirm(fake, "sepa_debit", cards_only, {"iban": SEPA_OK}),
        param="payment_method",
    )

    sepa = debit_intent(client, "sepa_debit")
    confirmed = stripe_js_confirm(fake, "sepa_debit", sepa, {"iban": SEPA_OK})
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "processing"


# --- new bank-account PaymentMethods -------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "needed"),
    [
        ("sepa_debit", "email"),
        ("au_becs_debit", "email"),
        ("us_bank_account", "name"),
        ("bacs_debit", "address"),
    ],
)
def test_a_debit_needs_the_billing_details_of_its_mandate(
    fake: StripeHandle, client: stripe.StripeClient, kind: str, needed: str
) -> None:
    account = ACCOUNTS[kind][1]
    details = billing(kind)
    details.pop(needed)
    intent = debit_intent(client, kind)
    expected = {
        "email": "payment_method_data[billing_details][email]",
        "name": "payment_method_data[billing_details][name]",
        "address": "payment_method_data[billing_details][address][line1]",
    }[needed]
    response = stripe_js_confirm(fake, kind, intent, account, billing_details=details)
    error = assert_error(response, param=expected, code="parameter_missing")
    assert error["message"] == f"Missing required param: {expected}."

    accepted = stripe_js_confirm(fake, kind, intent, account)
    assert accepted.status_code == 200, accepted.text


def test_a_payment_method_created_with_the_secret_key_needs_them_too(
    client: stripe.StripeClient,
) -> None:
    error = refused(
        lambda: client.v1.payment_methods.create(
            params={"type": "sepa_debit", "sepa_debit": {"iban": SEPA_OK}}
        )
    )
    assert (error.code, error.param) == ("parameter_missing", "billing_details[name]")
    created = client.v1.payment_methods.create(
        params={
            "type": "sepa_debit",
            "sepa_debit": {"iban": SEPA_OK},
            "billing_details": {"name": NAME, "email": EMAIL},
        }
    )
    assert created.sepa_debit is not None
    assert (created.sepa_debit.last4, created.sepa_debit.country) == ("3000", "DE")
    assert created.sepa_debit.bank_code == "37040044"
    assert created.billing_details.name == NAME


def test_an_iban_from_outside_the_eea_needs_the_address(client: stripe.StripeClient) -> None:
    gb_iban = "GB82WEST12345698765432"
    error = refused(
        lambda: client.v1.payment_methods.create(
            params={
                "type": "sepa_debit",
                "sepa_debit": {"iban": gb_iban},
                "billing_details": {"name": NAME, "email": EMAIL},
            }
        )
    )
    assert (error.code, error.param) == ("parameter_missing", "billing_details[address][line1]")
    created = client.v1.payment_methods.create(
        params={
            "type": "sepa_debit",
            "sepa_debit": {"iban": gb_iban},
            "billing_details": {"name": NAME, "email": EMAIL, "address": ADDRESS},
        }
    )
    assert created.sepa_debit is not None
    assert created.sepa_debit.country == "GB"


@pytest.mark.parametrize(
    ("kind", "bad", "param", "code"),
    [
        (
            "sepa_debit",
            {"iban": "DE89370400440532013001"},
            "sepa_debit[iban]",
            "invalid_bank_account_iban",
        ),
        (
            "us_bank_account",
            {"routing_number": "110000001", "account_number": ACH_OK},
            "us_bank_account[routing_number]",
            "routing_number_invalid",
        ),
        (
            "us_bank_account",
            {"routing_number": ACH_ROUTING, "account_number": "12"},
            "us_bank_account[account_number]",
            "account_number_invalid",
        ),
        (
            "au_becs_debit",
            {"bsb_number": BECS_BSB, "account_number": "12"},
            "au_becs_debit[account_number]",
            "account_number_invalid",
        ),
        ("au_becs_debit", {"account_number": "000123456"}, "au_becs_debit[bsb_number]", None),
    ],
)
def test_invalid_bank_details_are_refused(
    client: stripe.StripeClient, kind: str, bad: dict[str, str], param: str, code: str | None
) -> None:
    params: Any = {"type": kind, kind: bad, "billing_details": billing(kind)}
    error = refused(lambda: client.v1.payment_methods.create(params=params))
    assert error.param == param
    assert error.code == (code or "parameter_missing")
    assert new_payment_method(client, kind, ACCOUNTS[kind][1]).startswith("pm_")


def test_bacs_details_are_collected_by_stripe_js_not_the_secret_key(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    account = ACCOUNTS["bacs_debit"][1]
    error = refused(
        lambda: client.v1.payment_methods.create(
            params={
                "type": "bacs_debit",
                "bacs_debit": account,
                "billing_details": billing("bacs_debit"),
            }
        )
    )
    assert error.param == "type"
    created = post(
        fake,
        "/v1/payment_methods",
        {
            "key": PUBLISHABLE_KEY,
            "type": "bacs_debit",
            **flat("bacs_debit", account),
            **flat("billing_details", billing("bacs_debit")),
        },
        key=None,
    )
    assert created.status_code == 200, created.text
    assert created.json()["bacs_debit"] == {
        "fingerprint": created.json()["bacs_debit"]["fingerprint"],
        "last4": "2345",
        "sort_code": BACS_SORT_CODE,
    }
    # Bacs's invalid test account number is refused when the details are collected.
    invalid = {**account, "account_number": "00044444"}
    intent = debit_intent(client, "bacs_debit")
    assert_error(
        stripe_js_confirm(fake, "bacs_debit", intent, invalid),
        param="payment_method_data[bacs_debit][account_number]",
        code="account_number_invalid",
    )


def test_a_test_number_whose_behaviour_the_fake_does_not_model_is_refused(
    client: stripe.StripeClient,
) -> None:
    error = refused(
        lambda: client.v1.payment_methods.create(
            params={
                "type": "sepa_debit",
                "sepa_debit": {"iban": "DE35370400440532013002"},  # a dispute
                "billing_details": billing("sepa_debit"),
            }
        )
    )
    assert error.param == "sepa_debit[iban]"


# --- mandates ------------------------------------------------------------------------------


def test_confirming_a_debit_needs_the_customers_mandate(client: stripe.StripeClient) -> None:
    intent = debit_intent(client, "sepa_debit")
    payment_method = new_payment_method(client, "sepa_debit", {"iban": SEPA_OK})
    error = refused(
        lambda: client.v1.payment_intents.confirm(
            intent.id, params={"payment_method": payment_method}
        )
    )
    assert (error.code, error.param) == ("parameter_missing", "mandate_data")
    no_agent: Any = {
        "customer_acceptance": {"type": "online", "online": {"ip_address": "203.0.113.7"}}
    }
    error = refused(
        lambda: client.v1.payment_intents.confirm(
            intent.id, params={"payment_method": payment_method, "mandate_data": no_agent}
        )
    )
    assert error.code == "parameter_missing"
    assert error.param == "mandate_data[customer_acceptance][online][user_agent]"
    # Inferring the acceptance from the browser is Stripe.js's, with the publishable key only.
    inferred: Any = {
        "customer_acceptance": {"type": "online", "online": {"infer_from_client": True}}
    }
    error = refused(
        lambda: client.v1.payment_intents.confirm(
            intent.id, params={"payment_method": payment_method, "mandate_data": inferred}
        )
    )
    assert (error.code, error.param) == (
        "parameter_unknown",
        "mandate_data[customer_acceptance][online][infer_from_client]",
    )

    confirmed = client.v1.payment_intents.confirm(
        intent.id, params={"payment_method": payment_method, "mandate_data": ONLINE}
    )
    assert confirmed.status == "processing"
    mandate = client.v1.mandates.retrieve(
        charge_of(confirmed).payment_method_details.sepa_debit.mandate
    )
    assert (mandate.status, mandate.type, mandate.payment_method) == (
        "active",
        "single_use",
        payment_method,
    )
    assert mandate.customer_acceptance.online is not None
    assert mandate.customer_acceptance.online.ip_address == "203.0.113.7"
    assert mandate.single_use is not None
    assert (mandate.single_use.amount, mandate.single_use.currency) == (20_00, "eur")


def test_a_mandate_has_the_shape_of_stripes_own_fixture(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    """Stripe's fixture mandate (tests/fixtures/stripe/fixtures3.json, a SEPA one): every field
    it shows, the fake's mandate shows too, and so does a debit PaymentMethod."""
    fixtures = stripe_resources()
    _owner, saved, mandate_id = save_bank_account(fake, client, "sepa_debit", {"iban": SEPA_OK})
    mandate = client.v1.mandates.retrieve(mandate_id).to_dict()
    expected = fixtures["mandate"]
    assert set(expected) <= set(mandate)
    assert set(expected["customer_acceptance"]) <= set(mandate["customer_acceptance"])
    assert set(expected["payment_method_details"]["sepa_debit"]) == set(
        mandate["payment_method_details"]["sepa_debit"]
    )
    assert (mandate["object"], mandate["type"], mandate["payment_method"]) == (
        "mandate",
        "multi_use",
        saved,
    )
    payment_method = client.v1.payment_methods.retrieve(saved).to_dict()
    fixture_method = fixtures["payment_method"]
    common = set(fixture_method) - {"card", "customer_account"}
    assert common <= set(payment_method)
    assert set(fixture_method["billing_details"]) <= set(payment_method["billing_details"])


def test_mandate_and_mandate_data_only_with_confirm_at_creation(
    client: stripe.StripeClient,
) -> None:
    payment_method = new_payment_method(client, "sepa_debit", {"iban": SEPA_OK})
    base: Any = {
        "amount": 20_00,
        "currency": "eur",
        "allowed_payment_method_types": ["sepa_debit"],
        "payment_method": payment_method,
        "mandate_data": ONLINE,
    }
    error = refused(lambda: client.v1.payment_intents.create(params=base))
    assert error.param == "mandate_data"
    created = client.v1.payment_intents.create(params={**base, "confirm": True})
    assert created.status == "processing"


def test_a_debit_is_saved_for_off_session_use_only(client: stripe.StripeClient) -> None:
    owner = customer(client)
    payment_method = new_payment_method(client, "sepa_debit", {"iban": SEPA_OK})
    base: Any = {
        "amount": 20_00,
        "currency": "eur",
        "customer": owner,
        "allowed_payment_method_types": ["sepa_debit"],
        "payment_method": payment_method,
        "mandate_data": ONLINE,
        "confirm": True,
    }
    error = refused(
        lambda: client.v1.payment_intents.create(
            params={**base, "setup_future_usage": "on_session"}
        )
    )
    assert error.param == "setup_future_usage"
    saved = client.v1.payment_intents.create(params={**base, "setup_future_usage": "off_session"})
    assert saved.status == "processing"
    # Attached to the customer as the payment enters processing, with a multi-use mandate.
    assert client.v1.payment_methods.retrieve(payment_method).customer == owner
    mandate = client.v1.mandates.retrieve(
        charge_of(saved).payment_method_details.sepa_debit.mandate
    )
    assert mandate.type == "multi_use"


def test_instant_verification_needs_financial_connections(client: stripe.StripeClient) -> None:
    payment_method = new_payment_method(client, "us_bank_account", ACCOUNTS["us_bank_account"][1])
    base: Any = {
        "amount": 20_00,
        "currency": "usd",
        "allowed_payment_method_types": ["us_bank_account"],
        "payment_method": payment_method,
        "mandate_data": ONLINE,
        "confirm": True,
    }
    instant: Any = {"us_bank_account": {"verification_method": "instant"}}
    error = refused(
        lambda: client.v1.payment_intents.create(params={**base, "payment_method_options": instant})
    )
    assert error.param == "payment_method_options[us_bank_account][verification_method]"
    # Account numbers are verified with microdeposits.
    created = client.v1.payment_intents.create(params=base)
    assert created.status == "requires_action"
    assert created.next_action is not None
    assert created.next_action.type == "verify_with_microdeposits"


def save_bank_account(
    fake: StripeHandle, client: stripe.StripeClient, kind: str, account: dict[str, str]
) -> tuple[str, str, str]:
    """A bank account saved with a SetupIntent as the portal would (Stripe.js): the customer,
    the PaymentMethod and its mandate."""
    owner = customer(client)
    setup = client.v1.setup_intents.create(
        params={"customer": owner, "usage": "off_session", "allowed_payment_method_types": [kind]}
    )
    response = stripe_js_confirm(fake, kind, setup, account, path="setup_intents")
    assert response.status_code == 200, response.text
    body = response.json()
    if kind == "us_bank_account":
        assert body["status"] == "requires_action"
        verified = client.v1.setup_intents.verify_microdeposits(
            setup.id, params={"amounts": [32, 45]}
        )
        assert verified.status == "succeeded"
        body = verified.to_dict()
    assert body["status"] == "succeeded"
    assert body["mandate"] is not None
    return owner, body["payment_method"], body["mandate"]


def charge_off_session(
    client: stripe.StripeClient, kind: str, owner: str, payment_method: str, **extra: Any
) -> Any:
    return client.v1.payment_intents.create(
        params={
            "amount": 45_00,
            "currency": ACCOUNTS[kind][0],
            "customer": owner,
            "allowed_payment_method_types": [kind],
            "payment_method": payment_method,
            "confirm": True,
            "off_session": True,
            **extra,
        }
    )


def test_off_session_needs_a_saved_mandate(fake: StripeHandle, client: stripe.StripeClient) -> None:
    # Attached without a mandate: nothing authorizes a debit.
    owner = customer(client)
    attached = new_payment_method(client, "sepa_debit", {"iban": SEPA_OK})
    client.v1.payment_methods.attach(attached, params={"customer": owner})
    error = refused(lambda: charge_off_session(client, "sepa_debit", owner, attached))
    assert (error.code, error.param) == ("parameter_missing", "mandate_data")

    owner, saved, mandate = save_bank_account(fake, client, "sepa_debit", {"iban": SEPA_OK})
    charged = charge_off_session(client, "sepa_debit", owner, saved)
    assert charged.status == "processing"
    assert charge_of(charged).payment_method_details.sepa_debit.mandate == mandate
    settle(fake, charged.id)
    assert client.v1.payment_intents.retrieve(charged.id).status == "succeeded"


@pytest.mark.parametrize("kind", list(ACCOUNTS))
def test_each_saved_bank_account_is_charged_off_session(
    fake: StripeHandle, client: stripe.StripeClient, kind: str
) -> None:
    owner, saved, mandate = save_bank_account(fake, client, kind, ACCOUNTS[kind][1])
    assert client.v1.payment_methods.retrieve(saved).customer == owner
    assert client.v1.mandates.retrieve(mandate).status == "active"
    listed = client.v1.payment_methods.list(params={"customer": owner, "type": kind})
    assert [item.id for item in listed.data] == [saved]
    charged = charge_off_session(client, kind, owner, saved, mandate=mandate)
    assert charged.status == "processing"
    settle(fake, charged.id)
    assert client.v1.payment_intents.retrieve(charged.id).status == "succeeded"


def test_a_returned_bacs_debit_makes_its_mandate_inactive(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    account = {"sort_code": BACS_SORT_CODE, "account_number": "33333335"}  # debit_not_authorized
    owner, saved, mandate = save_bank_account(fake, client, "bacs_debit", account)
    charged = charge_off_session(client, "bacs_debit", owner, saved)
    settle(fake, charged.id)
    failed = client.v1.payment_intents.retrieve(charged.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "debit_not_authorized"
    inactive = client.v1.mandates.retrieve(mandate)
    assert inactive.status == "inactive"
    assert inactive.payment_method_details.bacs_debit is not None
    assert inactive.payment_method_details.bacs_debit.network_status == "revoked"
    assert "mandate.updated" in events_about(client, mandate)

    # The PaymentMethod can't be used again: no usable mandate, off session or by id.
    error = refused(lambda: charge_off_session(client, "bacs_debit", owner, saved))
    assert (error.code, error.param) == ("parameter_missing", "mandate_data")
    assert error.user_message is not None
    assert "no longer active" in error.user_message
    error = refused(lambda: charge_off_session(client, "bacs_debit", owner, saved, mandate=mandate))
    assert error.param == "mandate"


def test_detaching_a_bank_account_cancels_its_mandate(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    _owner, saved, mandate = save_bank_account(
        fake, client, "au_becs_debit", ACCOUNTS["au_becs_debit"][1]
    )
    client.v1.payment_methods.detach(saved)
    assert client.v1.mandates.retrieve(mandate).status == "inactive"
    assert "mandate.updated" in events_about(client, mandate)


# --- the debit goes processing, then succeeds or comes back ----------------------------------


@pytest.mark.parametrize("kind", ["sepa_debit", "bacs_debit", "au_becs_debit"])
def test_a_debit_is_processing_then_succeeds(
    fake: StripeHandle, client: stripe.StripeClient, kind: str
) -> None:
    intent = debit_intent(client, kind)
    response = stripe_js_confirm(fake, kind, intent, ACCOUNTS[kind][1])
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "processing"
    processing = client.v1.payment_intents.retrieve(intent.id)
    charge = charge_of(processing)
    assert (charge.status, charge.paid) == ("pending", False)
    assert controls(fake, "GET", "debits")["pending"].count(intent.id) == 1
    assert events_about(client, intent.id) == ["payment_intent.processing"]
    assert events_about(client, charge.id) == ["charge.pending"]

    settle(fake, intent.id)
    succeeded = client.v1.payment_intents.retrieve(intent.id)
    assert (succeeded.status, succeeded.amount_received) == ("succeeded", 20_00)
    charge = charge_of(succeeded)
    assert (charge.status, charge.paid) == ("succeeded", True)
    details = charge.payment_method_details
    assert details.type == kind
    shown = details.to_dict()[kind]
    payment_method = client.v1.payment_methods.retrieve(charge.payment_method).to_dict()
    assert shown["last4"] == payment_method[kind]["last4"]
    assert client.v1.mandates.retrieve(shown["mandate"]).status == "active"
    expected = {
        "sepa_debit": {"bank_code", "branch_code", "country", "fingerprint", "last4"},
        "bacs_debit": {"sort_code", "fingerprint", "last4"},
        "au_becs_debit": {"bsb_number", "fingerprint", "last4"},
    }[kind]
    assert expected <= set(shown)
    assert expected <= set(payment_method[kind])
    assert events_about(client, intent.id)[-1] == "payment_intent.succeeded"
    assert events_about(client, charge.id) == ["charge.pending", "charge.succeeded"]


@pytest.mark.parametrize(
    ("kind", "account", "code", "mandate_after"),
    [
        ("sepa_debit", {"iban": SEPA_FAILS}, "generic_could_not_process", "active"),
        (
            "bacs_debit",
            {"sort_code": BACS_SORT_CODE, "account_number": "22222227"},
            "insufficient_funds",
            "active",
        ),
        (
            "au_becs_debit",
            {"bsb_number": BECS_BSB, "account_number": "111111113"},
            "account_closed",
            "inactive",
        ),
    ],
)
def test_a_returned_debit_fails_the_payment(
    fake: StripeHandle,
    client: stripe.StripeClient,
    kind: str,
    account: dict[str, str],
    code: str,
    mandate_after: str,
) -> None:
    intent = debit_intent(client, kind)
    response = stripe_js_confirm(fake, kind, intent, account)
    assert response.json()["status"] == "processing"
    settle(fake, intent.id)

    failed = client.v1.payment_intents.retrieve(intent.id)
    assert (failed.status, failed.payment_method) == ("requires_payment_method", None)
    error = failed.last_payment_error
    assert error is not None
    assert (error.code, error.type) == (code, "invalid_request_error")
    assert error.message
    assert error.payment_method is not None
    assert error.payment_method.type == kind
    charge = charge_of(failed)
    assert (charge.status, charge.failure_code) == ("failed", code)
    assert events_about(client, intent.id)[-1] == "payment_intent.payment_failed"
    assert events_about(client, charge.id) == ["charge.pending", "charge.failed"]
    mandate = charge.payment_method_details.to_dict()[kind]["mandate"]
    assert client.v1.mandates.retrieve(mandate).status == mandate_after


def test_ach_is_verified_with_microdeposits_then_debited(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = debit_intent(client, "us_bank_account")
    response = stripe_js_confirm(fake, "us_bank_account", intent, ACCOUNTS["us_bank_account"][1])
    body = response.json()
    assert body["status"] == "requires_action", response.text
    action = body["next_action"]
    assert action["type"] == "verify_with_microdeposits"
    assert action["verify_with_microdeposits"]["microdeposit_type"] == "descriptor_code"
    assert action["verify_with_microdeposits"]["arrival_date"] > time.time()

    # Stripe.js verifies with the publishable key and the client secret.
    wrong = post(
        fake,
        f"/v1/payment_intents/{intent.id}/verify_microdeposits",
        {
            "key": PUBLISHABLE_KEY,
            "client_secret": intent.client_secret,
            "descriptor_code": "SM00XX",
        },
        key=None,
    )
    assert_error(
        wrong,
        param="descriptor_code",
        code="payment_method_microdeposit_verification_descriptor_code_mismatch",
    )
    assert client.v1.payment_intents.retrieve(intent.id).status == "requires_action"

    verified = verify(client, intent.id)
    assert verified.status == "processing"
    assert verified.next_action is None
    settle(fake, intent.id)
    succeeded = client.v1.payment_intents.retrieve(intent.id)
    assert succeeded.status == "succeeded"
    details = charge_of(succeeded).payment_method_details.us_bank_account
    assert details is not None
    assert (details.routing_number, details.last4, details.account_type) == (
        ACH_ROUTING,
        "6789",
        "checking",
    )
    assert details.bank_name
    assert details.payment_reference  # available once the payment succeeded
    payment_method = client.v1.payment_methods.retrieve(charge_of(succeeded).payment_method)
    assert payment_method.us_bank_account is not None
    assert payment_method.us_bank_account.networks is not None
    assert payment_method.us_bank_account.networks.preferred == "ach"


def test_a_returned_ach_debit_fails_the_payment(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    account = {"routing_number": ACH_ROUTING, "account_number": ACH_NO_ACCOUNT}
    payment_method = new_payment_method(client, "us_bank_account", account)
    intent = confirmed_debit(client, "us_bank_account", payment_method)
    assert intent.status == "requires_action"
    assert verify(client, intent.id).status == "processing"
    settle(fake, intent.id)
    failed = client.v1.payment_intents.retrieve(intent.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "no_account"
    assert charge_of(failed).failure_code == "no_account"


def test_ach_microdeposits_that_fail_or_run_out_of_attempts(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    exceeded = debit_intent(client, "us_bank_account")
    stripe_js_confirm(fake, "us_bank_account", exceeded, ACCOUNTS["us_bank_account"][1])
    error = refused(
        lambda: client.v1.payment_intents.verify_microdeposits(
            exceeded.id, params={"descriptor_code": "SM33CC"}
        )
    )
    assert error.code == "payment_method_microdeposit_verification_attempts_exceeded"
    after = client.v1.payment_intents.retrieve(exceeded.id)
    assert after.status == "requires_payment_method"
    assert after.last_payment_error is not None
    assert after.last_payment_error.code == error.code
    assert events_about(client, exceeded.id) == ["payment_intent.payment_failed"]

    # Microdeposits that cannot be sent: the payment fails later.
    never_sent = confirmed_debit(client, "us_bank_account", "pm_usBankAccount_failMicrodeposits")
    assert never_sent.status == "requires_action"
    settle(fake, never_sent.id)
    failed = client.v1.payment_intents.retrieve(never_sent.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_method_microdeposit_failed"


def test_stripe_test_payment_methods_stand_for_their_accounts(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    # Bacs on the server: only through its test PaymentMethods.
    bacs = confirmed_debit(client, "bacs_debit", "pm_bacsDebit_success")
    assert bacs.status == "processing"
    becs = confirmed_debit(client, "au_becs_debit", "pm_auBecsDebit_debitNotAuthorized")
    settle(fake, bacs.id)
    settle(fake, becs.id)
    assert client.v1.payment_intents.retrieve(bacs.id).status == "succeeded"
    failed = client.v1.payment_intents.retrieve(becs.id)
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "debit_not_authorized"
    # This one stays processing: nothing to settle.
    forever = confirmed_debit(client, "us_bank_account", "pm_usBankAccount_processing")
    assert verify(client, forever.id).status == "processing"
    assert forever.id not in controls(fake, "GET", "debits")["pending"]


# --- refunds -------------------------------------------------------------------------------


def test_a_debit_still_processing_cannot_be_refunded(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    intent = confirmed_debit(client, "sepa_debit", "pm_success_de")
    charge = charge_of(intent)
    error = refused(lambda: client.v1.refunds.create(params={"payment_intent": intent.id}))
    assert error.param == "payment_intent"
    error = refused(lambda: client.v1.refunds.create(params={"charge": charge.id}))
    assert error.param == "charge"

    settle(fake, intent.id)
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 5_00})
    assert (refund.amount, refund.status, refund.charge) == (5_00, "succeeded", charge.id)
    rest = client.v1.refunds.create(params={"charge": charge.id, "amount": 15_00})
    assert rest.amount == 15_00
    assert client.v1.charges.retrieve(charge.id).refunded


# --- the fake's "later" --------------------------------------------------------------------


def test_pending_debits_settle_by_themselves_after_the_configured_delay(
    fake: StripeHandle, client: stripe.StripeClient
) -> None:
    assert controls(fake, "POST", "debits", {"settle_after_seconds": 0.2}) == {
        "settle_after_seconds": 0.2,
        "pending": controls(fake, "GET", "debits")["pending"],
    }
    try:
        intent = confirmed_debit(client, "sepa_debit", "pm_success_de")
        assert intent.status == "processing"
        deadline = time.monotonic() + 5
        while client.v1.payment_intents.retrieve(intent.id).status == "processing":
            assert time.monotonic() < deadline, "the debit did not settle by itself"
            time.sleep(0.1)
        assert client.v1.payment_intents.retrieve(intent.id).status == "succeeded"
    finally:
        controls(fake, "POST", "debits", {"settle_after_seconds": None})


def test_debit_controls_refuse_what_they_cannot_do(fake: StripeHandle) -> None:
    bad = requests.post(
        f"{fake.url}/_compat/debits", json={"settle_after_seconds": "soon"}, timeout=10
    )
    assert bad.status_code == 400
    missing = requests.post(
        f"{fake.url}/_compat/debits/settle", json={"payment_intent": "pi_nothing"}, timeout=10
    )
    assert missing.status_code == 404
    assert controls(fake, "GET", "debits")["settle_after_seconds"] is None
