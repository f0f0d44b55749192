"""The e2e stack: the local gateway over HTTP on top of `stack` (moto + the Stripe fake), and a
clinic seeded through the HTTP API with its own Stripe keys and a registered webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local.gateway import LocalGateway
from local.seed import register_webhook
from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, generate_key, issue_token, public_key
from tests.support.stripe_driver import LiveModeError, StripeDriver, driver_for

if TYPE_CHECKING:
    from tests.conftest import Stack

ACCOUNT_ID = "main"
POLL_TIMEOUT = 15.0
POLL_STEP = 0.2
# Nothing the API answers may carry a stack trace or a secret key. A key is its prefix and more:
# a message that names the prefix ("must start with whsec_.") carries no key.
FORBIDDEN_IN_BODIES = re.compile(r"Traceback|(sk|rk)_(test|live)_\w|whsec_\w")

T = TypeVar("T")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", "replace")

    @property
    def body(self) -> Any:
        return json.loads(self.raw) if self.raw else None

    def __repr__(self) -> str:  # what an assertion message shows
        return f"<{self.status} {self.text[:2000]}>"


def assert_envelope(reply: Reply, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error envelope: {"error": {"code", "message", "details"}} and nothing else."""
    assert reply.status == status, reply
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    body = reply.body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str), body
    assert error["code"], body
    assert isinstance(error["message"], str), body
    assert error["message"], body
    assert isinstance(error["details"], list), body
    if code is not None:
        assert error["code"] == code, body
    return dict(error)


def _assert_clean(method: str, url: str, reply: Reply) -> None:
    found = FORBIDDEN_IN_BODIES.search(reply.text)
    assert found is None, f"{method} {url} answered {found.group(0)!r} in its body: {reply!r}"


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str | None = "application/json",
    received: list[Reply] | None = None,
    check: bool = True,
) -> Reply:
    """One request with urllib; HTTP errors are replies too. Every reply of the API is checked
    for tracebacks and keys (`check`), and recorded in `received`."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    all_headers = {"accept": "application/json"}
    if data is not None and content_type:
        all_headers["content-type"] = content_type
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    all_headers.update(headers or {})
    request = urllib.request.Request(  # noqa: S310 - loopback servers started by fixtures
        url, data=data, method=method, headers=all_headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            reply = Reply(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as err:
        reply = Reply(err.code, dict(err.headers.items()), err.read())
    if received is not None:
        received.append(reply)
    if check:
        _assert_clean(method, url, reply)
    return reply


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = POLL_TIMEOUT) -> T:
    """Call `fetch` every 0.2 s until `done(value)` (at most `timeout` s); the last value."""
    deadline = time.monotonic() + timeout
    value = fetch()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(POLL_STEP)
        value = fetch()
    return value


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A `Stripe-Signature` header for `payload`, as Stripe computes it."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass
class HttpClinic:
    """One clinic seeded through the HTTP API, and an HTTP client for its users."""

    api_url: str
    stripe_url: str
    clinic_id: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    jwt_key: rsa.RSAPrivateKey
    received: list[Reply] = field(default_factory=list)

    # -- tokens ------------------------------------------------------------------------------

    def token(
        self,
        role: str = "staff",
        patient_ids: tuple[str, ...] = (),
        *,
        clinic_id: str | None = None,
        sub: str | None = None,
        **kwargs: Any,
    ) -> str:
        kwargs.setdefault("key", self.jwt_key)
        return issue_token(role, clinic_id or self.clinic_id, patient_ids, sub=sub, **kwargs)

    def patient_token(self, patient_id: str) -> str:
        return self.token("patient", (patient_id,), sub=f"e2e-patient-{patient_id}")

    def staff_token(self) -> str:
        return self.token("staff", sub="e2e-staff")

    # -- HTTP ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        return http(method, self.api_url + path, received=self.received, **kwargs)

    def patient_path(self, patient_id: str, rest: str = "") -> str:
        return f"/v1/clinics/{self.clinic_id}/patients/{patient_id}{rest}"

    def webhook_url(self, clinic_id: str | None = None, account_id: str = ACCOUNT_ID) -> str:
        return f"{self.api_url}/v1/webhooks/stripe/{clinic_id or self.clinic_id}/{account_id}"

    def create_invoice(self, patient_id: str, lines: list[dict[str, Any]], **extra: Any) -> Any:
        reply = self.request(
            "POST",
            self.patient_path(patient_id, "/invoices"),
            body={"lines": lines, **extra},
            token=self.staff_token(),
        )
        assert reply.status == 201, reply
        return reply.body

    def invoices(self, patient_id: str, token: str | None = None, query: str = "") -> Any:
        reply = self.request(
            "GET",
            self.patient_path(patient_id, "/invoices") + query,
            token=token or self.patient_token(patient_id),
        )
        assert reply.status == 200, reply
        return reply.body

    def invoice(self, patient_id: str, invoice_id: str) -> Any:
        reply = self.request(
            "GET",
            self.patient_path(patient_id, f"/invoices/{invoice_id}"),
            token=self.patient_token(patient_id),
        )
        assert reply.status == 200, reply
        return reply.body

    def pay(
        self,
        patient_id: str,
        body: dict[str, Any],
        *,
        key: str | None = None,
        token: str | None = None,
    ) -> Reply:
        return self.request(
            "POST",
            self.patient_path(patient_id, "/payments"),
            body=body,
            token=token or self.patient_token(patient_id),
            headers={"Idempotency-Key": key or f"e2e-{secrets.token_hex(8)}"},
        )

    def payment(self, patient_id: str, payment_id: str) -> Any:
        reply = self.request(
            "GET",
            self.patient_path(patient_id, f"/payments/{payment_id}"),
            token=self.patient_token(patient_id),
        )
        assert reply.status == 200, reply
        return reply.body

    def post_webhook(
        self,
        payload: str,
        signature: str | None,
        *,
        clinic_id: str | None = None,
        account_id: str = ACCOUNT_ID,
    ) -> Reply:
        headers = {"Stripe-Signature": signature} if signature is not None else {}
        return http(
            "POST",
            self.webhook_url(clinic_id, account_id),
            raw=payload.encode(),
            headers=headers,
            received=self.received,
        )

    # -- the Stripe fake, as the clinic's server and as the portal ----------------------------

    def stripe_get(self, path: str) -> Any:
        reply = http(
            "GET",
            self.stripe_url + path,
            headers={"authorization": f"Bearer {self.secret_key}"},
            content_type=None,
            check=False,  # the Stripe fake, not the API
        )
        assert reply.status == 200, reply
        return reply.body


@pytest.fixture(scope="session")
def jwt_key() -> rsa.RSAPrivateKey:
    """The test issuer's signing key (never the developer's .local-state key)."""
    return generate_key()


@pytest.fixture(scope="session")
def gateway(stack: Stack, jwt_key: rsa.RSAPrivateKey) -> Iterator[LocalGateway]:
    gw = LocalGateway(
        port=0, issuer=LOCAL_ISSUER, audience=LOCAL_AUDIENCE, public_key=public_key(jwt_key)
    ).start()
    try:
        yield gw
    finally:
        gw.stop()


def seed_clinic(
    stack: Stack,
    gw: LocalGateway,
    key: rsa.RSAPrivateKey,
    *,
    clinic_id: str | None = None,
    keys: tuple[str, str] | None = None,
    stripe_url: str | None = None,
    register_at_fake: bool = True,
) -> HttpClinic:
    """A clinic with the fake's generated keys and its webhook registered at the fake, unless
    `keys` (secret, publishable), `stripe_url` and `register_at_fake` say otherwise (the
    money-path driver seeds a real test account's keys and relays its events)."""
    clinic_id = clinic_id or f"e2e_{secrets.token_hex(4)}"
    suffix = secrets.token_hex(6)
    secret_key, publishable_key = keys or (
        f"sk_test_{clinic_id}_{suffix}",
        f"pk_test_{clinic_id}_{suffix}",
    )
    clinic = HttpClinic(
        api_url=gw.url,
        stripe_url=stripe_url or stack.stripe_url,
        clinic_id=clinic_id,
        secret_key=secret_key,
        publishable_key=publishable_key,
        webhook_secret=f"whsec_test_{clinic_id}_{suffix}",
        jwt_key=key,
    )
    admin = clinic.token("admin", sub="e2e-admin")
    reply = clinic.request(
        "PUT",
        f"/v1/clinics/{clinic_id}/stripe-accounts/{ACCOUNT_ID}",
        token=admin,
        body={
            "name": "E2E clinic (test mode)",
            "secret_key": clinic.secret_key,
            "publishable_key": clinic.publishable_key,
            "webhook_secret": clinic.webhook_secret,
            "status": "active",
            "admin_default": True,
            "portal_default": True,
            "primary": True,
        },
    )
    assert reply.status == 200, reply
    reply = clinic.request(
        "PUT",
        f"/v1/clinics/{clinic_id}/settings",
        token=admin,
        body={
            "clinic_name": "E2E Physiotherapy",
            "currency": "usd",
            "accept_portal_payments": True,
            "allow_credit_topups": True,
            "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": "13"}],
            "locations": [{"id": "loc_main", "name": "Main Street"}],
        },
    )
    assert reply.status == 200, reply
    if not register_at_fake:
        return clinic
    register_webhook(
        stack.stripe_url,
        f"e2e-{clinic_id}-{ACCOUNT_ID}",
        clinic.webhook_url(),
        clinic.webhook_secret,
    )
    return clinic


@pytest.fixture(scope="module")
def http_clinic(stack: Stack, gateway: LocalGateway, jwt_key: rsa.RSAPrivateKey) -> HttpClinic:
    """A fresh clinic per test module, seeded through the HTTP API."""
    return seed_clinic(stack, gateway, jwt_key)


@pytest.fixture(scope="module")
def stripe_driver(stack: Stack) -> Iterator[StripeDriver]:
    """The Stripe the money-path tests run against: the strict fake, or with E2E_STRIPE=live
    a real test-mode account (`make test-stripe`). Live mode without its keys fails, loudly."""
    problem = None
    try:
        driver = driver_for(stack)
    except LiveModeError as err:
        problem = str(err)
    if problem is not None:
        pytest.fail(problem, pytrace=False)
    try:
        yield driver
    finally:
        driver.close()


@pytest.fixture(scope="module")
def money_clinic(
    stripe_driver: StripeDriver, stack: Stack, gateway: LocalGateway, jwt_key: rsa.RSAPrivateKey
) -> HttpClinic:
    """A fresh clinic per module on the driver's Stripe, its webhooks delivered."""
    return stripe_driver.seed(stack, gateway, jwt_key)


def new_patient() -> str:
    return f"pat_{secrets.token_hex(4)}"
