"""One driver for the money-path e2e tests, two Stripes: the strict local fake (`make test`) and
a real Stripe test-mode account (`make test-stripe`, `E2E_STRIPE=live`).

The tests make the same requests in both modes; the driver holds only what differs:

- where the clinic's keys come from: generated `sk_test_`/`pk_test_` keys for the fake, the
  developer's STRIPE_TEST_SECRET_KEY / STRIPE_TEST_PUBLISHABLE_KEY for the real account;
- how the portal confirms: in both modes the call Stripe.js makes (`POST .../confirm` with the
  publishable key and the client secret), with one of Stripe's test PaymentMethod ids
  (`pm_card_visa`...). Stripe asks test code to use those rather than card numbers
  (https://docs.stripe.com/testing), and the fake knows the same ids
  (local/stripe_compat/aliases.py);
- how 3D Secure is completed: the fake's `_authenticate` control; real test mode has no API
  for the challenge (Stripe.js shows it in the browser), so the live driver cannot pass it and
  the test asserts what it can (`can_authenticate`);
- how webhooks arrive: the fake posts them to a registered URL; the real account's events are
  read by `local/relay.py` and posted to the local webhook, signed with the clinic's local
  endpoint secret.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from local.relay import STRIPE_API, Relay, RelayError, require_test_key
from local.seed import register_webhook

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from local.gateway import LocalGateway
    from tests.conftest import Stack
    from tests.e2e.conftest import HttpClinic

MODE_VARIABLE = "E2E_STRIPE"
MODES = ("fake", "live")
KEY_VARIABLES = ("STRIPE_TEST_SECRET_KEY", "STRIPE_TEST_PUBLISHABLE_KEY")
LIVE_HELP = (
    "E2E_STRIPE=live runs against a real Stripe account in test mode: set "
    "STRIPE_TEST_SECRET_KEY=sk_test_... and STRIPE_TEST_PUBLISHABLE_KEY=pk_test_... "
    "(Dashboard > Developers > API keys, test mode)."
)


@dataclass(frozen=True)
class TestCard:
    """One of Stripe's test PaymentMethod ids and the last four digits of its card."""

    __test__ = False  # not a pytest test class

    payment_method: str
    last4: str


VISA = TestCard("pm_card_visa", "4242")
DECLINED = TestCard("pm_card_chargeDeclined", "0002")  # card_declined, generic_decline
THREE_D_SECURE = TestCard("pm_card_threeDSecure2Required", "3220")  # 3DS2 on every payment
CHARGE_DECLINED = TestCard("pm_card_chargeCustomerFail", "0341")  # saves, then every charge fails


class StripeDriver:
    """What the tests ask of a Stripe; subclasses say how each Stripe does it."""

    mode: str
    api_url: str
    can_authenticate: bool
    webhook_timeout: float  # how long a webhook's effect may take to show

    def keys(self, clinic_id: str) -> tuple[str, str]:
        """(secret key, publishable key) for a new clinic."""
        raise NotImplementedError

    def deliver_webhooks(self, clinic: HttpClinic) -> None:
        """From now on, the account's events reach the clinic's webhook, signed."""
        raise NotImplementedError

    def authenticate(self, intent_id: str, client_secret: str, publishable_key: str) -> None:
        """Pass the 3D Secure challenge of a PaymentIntent (only if `can_authenticate`)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the driver started."""

    # -- the same in both modes ----------------------------------------------------------------

    def seed(self, stack: Stack, gateway: LocalGateway, jwt_key: rsa.RSAPrivateKey) -> HttpClinic:
        """A clinic seeded through the HTTP API with this Stripe's keys, its webhooks flowing."""
        from tests.e2e.conftest import seed_clinic

        clinic_id = f"e2e_{secrets.token_hex(4)}"
        clinic = seed_clinic(
            stack,
            gateway,
            jwt_key,
            clinic_id=clinic_id,
            keys=self.keys(clinic_id),
            stripe_url=self.api_url,
            register_at_fake=False,
        )
        self.deliver_webhooks(clinic)
        return clinic

    def confirm_payment(self, payment: dict[str, Any], card: TestCard) -> tuple[int, Any]:
        """Stripe.js's confirmCardPayment for a payment the API started (client secret and
        publishable key from its response)."""
        return self._confirm("payment_intents", payment["client_secret"], payment, card)

    def confirm_setup(self, setup: dict[str, Any], card: TestCard) -> tuple[int, Any]:
        """Stripe.js's confirmCardSetup for a card the API is saving."""
        return self._confirm("setup_intents", setup["client_secret"], setup, card)

    def _confirm(
        self, kind: str, client_secret: str, started: dict[str, Any], card: TestCard
    ) -> tuple[int, Any]:
        object_id = client_secret.split("_secret_")[0]
        fields = {
            "key": started["publishable_key"],
            "client_secret": client_secret,
            "payment_method": card.payment_method,
        }
        return self._request("POST", f"/v1/{kind}/{object_id}/confirm", fields=fields)

    def retrieve(self, path: str, secret_key: str) -> Any:
        """GET an object with the clinic's secret key (what the clinic's server may read)."""
        status, body = self._request("GET", path, secret_key=secret_key)
        assert status == 200, (status, body)
        return body

    def _request(
        self,
        method: str,
        path: str,
        *,
        fields: dict[str, str] | None = None,
        secret_key: str | None = None,
    ) -> tuple[int, Any]:
        data = urllib.parse.urlencode(fields).encode() if fields is not None else None
        headers = {"Authorization": f"Bearer {secret_key}"} if secret_key else {}
        request = urllib.request.Request(  # noqa: S310 - the fake on loopback, or api.stripe.com
            self.api_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return int(response.status), json.loads(response.read())
        except urllib.error.HTTPError as err:
            return int(err.code), json.loads(err.read() or b"null")


class FakeStripe(StripeDriver):
    """The strict local fake that `stack` started."""

    mode = "fake"
    can_authenticate = True
    webhook_timeout = 15.0

    def __init__(self, stack: Stack) -> None:
        self.api_url = stack.stripe_url

    def keys(self, clinic_id: str) -> tuple[str, str]:
        suffix = secrets.token_hex(6)
        return f"sk_test_{clinic_id}_{suffix}", f"pk_test_{clinic_id}_{suffix}"

    def deliver_webhooks(self, clinic: HttpClinic) -> None:
        register_webhook(
            self.api_url, f"e2e-{clinic.clinic_id}", clinic.webhook_url(), clinic.webhook_secret
        )

    def authenticate(self, intent_id: str, client_secret: str, publishable_key: str) -> None:
        status, body = self._request(
            "POST",
            f"/v1/payment_intents/{intent_id}/_authenticate?success=true",
            fields={"key": publishable_key, "client_secret": client_secret},
        )
        assert status == 200, (status, body)


class LiveStripe(StripeDriver):
    """A real Stripe account in test mode, its events relayed to the local webhook.

    The handlers call api.stripe.com as in AWS (no STRIPE_API_BASE) while the driver is open."""

    mode = "live"
    can_authenticate = False
    webhook_timeout = 60.0

    def __init__(self, environ: dict[str, str]) -> None:
        try:
            self._secret_key = require_test_key(
                environ.get(KEY_VARIABLES[0], ""), "sk_test_", KEY_VARIABLES[0]
            )
            self._publishable_key = require_test_key(
                environ.get(KEY_VARIABLES[1], ""), "pk_test_", KEY_VARIABLES[1]
            )
        except RelayError as err:
            raise LiveModeError(f"{err}. {LIVE_HELP}") from None
        self.api_url = STRIPE_API
        self._relays: list[Relay] = []
        self._saved_base = os.environ.pop("STRIPE_API_BASE", None)
        _rebuild_container()

    def keys(self, clinic_id: str) -> tuple[str, str]:
        return self._secret_key, self._publishable_key

    def deliver_webhooks(self, clinic: HttpClinic) -> None:
        relay = Relay(
            webhook_url=clinic.webhook_url(),
            webhook_secret=clinic.webhook_secret,
            secret_key=self._secret_key,
            interval=1.0,
        )
        self._relays.append(relay.start())

    def authenticate(self, intent_id: str, client_secret: str, publishable_key: str) -> None:
        raise AssertionError(
            "real test mode has no API to pass a 3D Secure challenge (Stripe.js shows it)"
        )

    def close(self) -> None:
        for relay in self._relays:
            relay.stop()
        if self._saved_base is not None:
            os.environ["STRIPE_API_BASE"] = self._saved_base
        _rebuild_container()


class LiveModeError(Exception):
    """Live mode cannot start: the message says what to set."""


def _rebuild_container() -> None:
    from clinic_payments.wiring import reset_container

    reset_container()


def driver_for(stack: Stack, environ: dict[str, str] | None = None) -> StripeDriver:
    """The driver E2E_STRIPE selects (default: the fake)."""
    environ = dict(os.environ if environ is None else environ)
    mode = environ.get(MODE_VARIABLE, "").strip() or "fake"
    if mode == "fake":
        return FakeStripe(stack)
    if mode == "live":
        return LiveStripe(environ)
    raise LiveModeError(f"{MODE_VARIABLE}={mode!r}: expected one of {', '.join(MODES)}")
