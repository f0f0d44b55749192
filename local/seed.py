"""Seed the demo clinic through the real HTTP API (so seeding exercises the real code)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEMO_CLINIC = "demo"
DEMO_ACCOUNT = "main"
DEMO_PATIENTS = ("pat_1", "pat_2")
DEMO_WEBHOOK_SECRET = "whsec_test_local_demo_secret"

DEMO_STRIPE_ACCOUNT: dict[str, Any] = {
    "name": "Demo Clinic (test mode)",
    "secret_key": "sk_test_demo_local",
    "publishable_key": "pk_test_demo_local",
    "webhook_secret": DEMO_WEBHOOK_SECRET,
    "status": "active",
    "admin_default": True,
    "portal_default": True,
    "primary": True,
}

DEMO_SETTINGS: dict[str, Any] = {
    "clinic_name": "Demo Physiotherapy Clinic",
    # An Ontario clinic: Canadian dollars, HST, and the dates on its paperwork in Toronto time.
    "currency": "cad",
    "timezone": "America/Toronto",
    "accept_portal_payments": True,
    "allow_credit_topups": True,
    "email_pay_online_requests": True,
    "pass_processing_fees": False,
    "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": "13"}],
    "locations": [{"id": "loc_main", "name": "Main Street"}],
    # Printed on its invoices and receipts (made-up details; an Ontario invoice shows the HST
    # registration number).
    "profile": {
        "legal_name": "Demo Physiotherapy Clinic Professional Corporation",
        "address": "100 Main Street\nToronto ON  M5V 0A1",
        "phone": "416-555-0100",
        "email": "billing@demo-clinic.example",
        "tax_registration_number": "000000000 RT0001",
    },
}


class SeedError(RuntimeError):
    """A seeding call failed; the message names the call, its status and the response body."""


def _call(
    method: str, url: str, body: bytes, headers: dict[str, str], timeout: float = 30.0
) -> None:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")[:2000]
        raise SeedError(f"seeding failed: {method} {url} -> {err.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as err:
        raise SeedError(f"seeding failed: {method} {url} -> {err}") from None


def _put_json(api_url: str, path: str, payload: dict[str, Any], token: str) -> None:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    _call("PUT", api_url.rstrip("/") + path, json.dumps(payload).encode(), headers)


def seed_clinic_account(
    api_url: str,
    clinic_id: str,
    account_id: str,
    admin_token: str,
    *,
    secret_key: str,
    publishable_key: str,
    webhook_secret: str,
) -> None:
    """A clinic with one Stripe account (every default) and the demo clinic's settings."""
    account = {
        **DEMO_STRIPE_ACCOUNT,
        "name": f"{clinic_id} (test mode)",
        "secret_key": secret_key,
        "publishable_key": publishable_key,
        "webhook_secret": webhook_secret,
    }
    _put_json(
        api_url, f"/v1/clinics/{clinic_id}/stripe-accounts/{account_id}", account, admin_token
    )
    _put_json(api_url, f"/v1/clinics/{clinic_id}/settings", DEMO_SETTINGS, admin_token)


def register_webhook(
    stripe_url: str, hook_id: str, target_url: str, secret: str, events: tuple[str, ...] = ()
) -> None:
    """Register a webhook endpoint with the Stripe fake (no `events[]`: every event)."""
    fields = [("url", target_url), ("secret", secret), *(("events[]", e) for e in events)]
    _call(
        "POST",
        f"{stripe_url.rstrip('/')}/_config/webhooks/{urllib.parse.quote(hook_id)}",
        urllib.parse.urlencode(fields).encode(),
        {"content-type": "application/x-www-form-urlencoded"},
    )


def seed_demo(
    api_url: str,
    stripe_url: str | None,
    admin_token: str,
    *,
    stripe_account: dict[str, Any] | None = None,
) -> None:
    """The demo clinic: its Stripe account, its settings, and its webhook at the Stripe fake.

    With `stripe_account` (a real test account's keys and a local endpoint secret) and no
    `stripe_url`, no webhook is registered: the relay delivers that account's events."""
    clinic, account = DEMO_CLINIC, DEMO_ACCOUNT
    account_path = f"/v1/clinics/{clinic}/stripe-accounts/{account}"
    _put_json(api_url, account_path, stripe_account or DEMO_STRIPE_ACCOUNT, admin_token)
    _put_json(api_url, f"/v1/clinics/{clinic}/settings", DEMO_SETTINGS, admin_token)
    if stripe_url is None:
        return
    register_webhook(
        stripe_url,
        f"{clinic}-{account}",
        f"{api_url.rstrip('/')}/v1/webhooks/stripe/{clinic}/{account}",
        DEMO_WEBHOOK_SECRET,
    )
