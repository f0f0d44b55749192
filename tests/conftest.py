"""Shared fixtures: moto server and the Stripe fake on loopback, a fresh clinic per test."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

import pytest
import stripe

from local.aws import (
    aws_env,
    create_pay_link_signing_key,
    create_payments_table,
    start_moto,
    verify_receipts_sender,
)
from local.template import routes
from tests.support.apigw import body_of, claims_for, context, http_event

# Before any handler is imported: the tracer stays off and patches nothing (no X-Ray here).
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")

# Handlers are imported once per process; the container is rebuilt when the env changes.
_ROUTE_MODULES = {(r.method, r.path): r.module for r in routes()}


@dataclass
class Stack:
    moto_url: str
    stripe_url: str
    table_name: str


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    from clinic_payments.wiring import reset_container

    from local.stripe_compat.process import start_stripe

    moto = start_moto()
    fake = start_stripe()
    table = "PaymentsTable-test"
    saved = dict(os.environ)
    os.environ.update(aws_env(moto.url, table, "clinic-payments-test"))
    os.environ["STRIPE_API_BASE"] = fake.url
    os.environ["POWERTOOLS_METRICS_NAMESPACE"] = "ClinicPaymentsTest"
    create_payments_table(moto.url, table)
    verify_receipts_sender(moto.url)
    create_pay_link_signing_key(moto.url, "clinic-payments-test")
    reset_container()
    try:
        yield Stack(moto.url, fake.url, table)
    finally:
        reset_container()
        os.environ.clear()
        os.environ.update(saved)
        fake.stop()
        moto.stop()


@dataclass
class Api:
    """Calls handlers the way API Gateway does, as one clinic's users."""

    stack: Stack
    clinic_id: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    patients: tuple[str, ...] = ("pat_a", "pat_b")
    calls: list[tuple[str, str]] = field(default_factory=list)

    def call(
        self,
        method: str,
        route: str,
        params: dict[str, str] | None = None,
        *,
        role: str = "staff",
        patient_ids: tuple[str, ...] = (),
        sub: str | None = None,
        body: Any = None,
        raw_body: str | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
        claims: dict[str, Any] | None = None,
        authenticated: bool = True,
    ) -> tuple[int, Any]:
        params = {"clinic_id": self.clinic_id, **(params or {})}
        if claims is None and authenticated:
            claims = claims_for(role, self.clinic_id, patient_ids, sub)
        event = http_event(
            method,
            route,
            params,
            body=body,
            raw_body=raw_body,
            claims=claims,
            headers=headers,
            query=query,
        )
        module = import_module(_ROUTE_MODULES[(method, route)])
        response = module.lambda_handler(event, context())
        return int(response["statusCode"]), body_of(response)

    # -- the routes tests use most ------------------------------------------------------

    def create_invoice(self, patient_id: str, *amounts: int, **extra: Any) -> dict[str, Any]:
        status, body = self.call(
            "POST",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
            {"patient_id": patient_id},
            body={
                "lines": [
                    {"description": f"Session {i}", "unit_amount": a, "quantity": 1}
                    for i, a in enumerate(amounts)
                ],
                **extra,
            },
        )
        assert status == 201, body
        return dict(body)

    def pay(
        self,
        patient_id: str,
        body: dict[str, Any],
        *,
        key: str | None = None,
        role: str = "patient",
        sub: str | None = None,
    ) -> tuple[int, Any]:
        return self.call(
            "POST",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/payments",
            {"patient_id": patient_id},
            role=role,
            patient_ids=(patient_id,) if role == "patient" else (),
            sub=sub,
            body=body,
            headers={"Idempotency-Key": key or secrets.token_hex(8)},
        )

    def invoice(self, patient_id: str, invoice_id: str) -> dict[str, Any]:
        status, body = self.call(
            "GET",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}",
            {"patient_id": patient_id, "invoice_id": invoice_id},
        )
        assert status == 200, body
        return dict(body)

    def payment(self, patient_id: str, payment_id: str) -> dict[str, Any]:
        status, body = self.call(
            "GET",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}",
            {"patient_id": patient_id, "payment_id": payment_id},
        )
        assert status == 200, body
        return dict(body)

    def invoices(self, patient_id: str, **query: str) -> dict[str, Any]:
        status, body = self.call(
            "GET",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
            {"patient_id": patient_id},
            query=query or None,
        )
        assert status == 200, body
        return dict(body)

    def stripe(self) -> stripe.StripeClient:
        return stripe.StripeClient(
            self.secret_key, base_addresses={"api": self.stack.stripe_url}, max_network_retries=0
        )

    def signed_webhook(
        self, event: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None
    ) -> tuple[int, Any]:
        import time

        from stripe import WebhookSignature

        payload = json.dumps(event)
        ts = int(time.time()) if timestamp is None else timestamp
        signature = WebhookSignature._compute_signature(
            f"{ts}.{payload}", secret or self.webhook_secret
        )
        return self.call(
            "POST",
            "/v1/webhooks/stripe/{clinic_id}/{account_id}",
            {"account_id": "main"},
            raw_body=payload,
            headers={"Stripe-Signature": f"t={ts},v1={signature}"},
            authenticated=False,
        )

    def intent(self, intent_id: str) -> dict[str, Any]:
        """A PaymentIntent as Stripe's JSON (what a webhook event carries)."""
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - loopback Stripe fake
            f"{self.stack.stripe_url}/v1/payment_intents/{intent_id}",
            headers={"Authorization": f"Bearer {self.secret_key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return dict(json.loads(response.read()))

    def setup_intent(self, setup_intent_id: str) -> dict[str, Any]:
        """A SetupIntent as Stripe's JSON (what a setup_intent.* event carries)."""
        import urllib.request

        request = urllib.request.Request(  # noqa: S310 - loopback Stripe fake
            f"{self.stack.stripe_url}/v1/setup_intents/{setup_intent_id}",
            headers={"Authorization": f"Bearer {self.secret_key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return dict(json.loads(response.read()))

    def intent_event(
        self, intent: dict[str, Any], event_type: str = "payment_intent.succeeded"
    ) -> dict[str, Any]:
        import time

        return {
            "id": f"evt_{secrets.token_hex(8)}",
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": intent},
        }

    def charge_event(
        self, intent: dict[str, Any], event_type: str = "charge.succeeded"
    ) -> dict[str, Any]:
        """The event of an intent's latest charge (Stripe's charge.succeeded carries the card's
        brand and last four in payment_method_details)."""
        import urllib.request

        charge = intent.get("latest_charge")
        if isinstance(charge, str):
            request = urllib.request.Request(  # noqa: S310 - loopback Stripe fake
                f"{self.stack.stripe_url}/v1/charges/{charge}",
                headers={"Authorization": f"Bearer {self.secret_key}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                charge = json.loads(response.read())
        assert isinstance(charge, dict), intent
        return self.intent_event(charge, event_type)

    def check_invariant(self, patient_id: str) -> None:
        from tests.support.invariant import assert_money_invariant

        assert_money_invariant(
            self.stack.moto_url, self.stack.table_name, self.clinic_id, patient_id
        )


def make_clinic(stack: Stack, **settings: Any) -> Api:
    clinic_id = f"clinic_{secrets.token_hex(4)}"
    api = Api(
        stack,
        clinic_id,
        secret_key=f"sk_test_{clinic_id}",
        publishable_key=f"pk_test_{clinic_id}",
        webhook_secret=f"whsec_test_{clinic_id}",
    )
    status, body = api.call(
        "PUT",
        "/v1/clinics/{clinic_id}/stripe-accounts/{account_id}",
        {"account_id": "main"},
        role="admin",
        body={
            "name": "Main (test)",
            "secret_key": api.secret_key,
            "publishable_key": api.publishable_key,
            "webhook_secret": api.webhook_secret,
            "status": "active",
            "admin_default": True,
            "portal_default": True,
            "primary": True,
        },
    )
    assert status == 200, body
    status, body = api.call(
        "PUT",
        "/v1/clinics/{clinic_id}/settings",
        role="admin",
        body={
            "clinic_name": "Test Clinic",
            "currency": "usd",
            "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": "13"}],
            "locations": [{"id": "loc_main", "name": "Main Street"}],
            **settings,
        },
    )
    assert status == 200, body
    return api


@pytest.fixture
def clinic(stack: Stack) -> Api:
    return make_clinic(stack)


@pytest.fixture
def no_faults_left(stack: Stack) -> Iterator[None]:
    """Clears the Stripe fake's injected faults after the test, used or not."""
    yield
    from tests.support import stripe_control

    stripe_control.clear_faults(stack.stripe_url)
