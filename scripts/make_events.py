"""Write events/: one sample invocation event per route, for `sam local invoke <Function> -e ...`.

HTTP events are API Gateway HTTP API payload v2.0 events as the JWT authorizer hands them to a
function: claims sit in requestContext.authorizer.jwt.claims, every value a string, and an array
claim flattened to "[a b]". They carry a fixed date so that regenerating them changes nothing.

The exception is events/stripe_webhook_signed.json: a Stripe `payment_intent.succeeded` event
(shaped after Stripe's own fixtures) signed now with the local test secret. The webhook accepts a
signature for 300 s, so regenerate it right before use: `python scripts/make_events.py`.

Usage: python scripts/make_events.py [--fixtures tests/fixtures/stripe/fixtures3.json]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = ROOT / "events"
DEFAULT_FIXTURES = ROOT / "tests" / "fixtures" / "stripe" / "fixtures3.json"

# The documented webhook secret of the local demo clinic's Stripe account (test mode only).
WEBHOOK_SECRET = "whsec_test_local_demo_secret"  # noqa: S105 - public, test mode only

CLINIC = "demo"
PATIENT = "pat_1"
ACCOUNT = "main"
PAYMENT = "pay_example"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
API_ID = "a1b2c3d4e5"
DOMAIN = f"{API_ID}.execute-api.{REGION}.amazonaws.com"
ISSUER = f"https://cognito-idp.{REGION}.amazonaws.com/{REGION}_EXAMPLE"
AUDIENCE = "example-portal-client-id"
# Fixed request time of the JWT-authorised samples: 2026-11-20T15:30:00Z.
SAMPLE_TIME = datetime(2026, 11, 20, 15, 30, tzinfo=UTC)
# Signs the sample pay link only: no deployment has this key, so the sample's token is a 404
# anywhere (a real link comes from POST .../payment-requests).
SAMPLE_PAY_LINK_KEY = b"sample-events-only-not-a-deployed-signing-key"


def _use_layer() -> None:
    layer = str(ROOT / "layers" / "shared")
    if layer not in sys.path:
        sys.path.insert(0, layer)


def stripe_api_version() -> str:
    """The version the adapter pins: a sample event is what a webhook endpoint of it sends."""
    _use_layer()
    from clinic_payments.adapters.stripe_gateway import STRIPE_API_VERSION

    return STRIPE_API_VERSION


def sample_pay_link_token() -> str:
    """A pay link for invoice inv_1 of demo/pat_1, expiring 14 days after SAMPLE_TIME."""
    _use_layer()
    from clinic_payments.domain.paylinks import PayLink, sign_pay_link

    expires = int((SAMPLE_TIME + timedelta(days=14)).timestamp())
    return sign_pay_link(PayLink(CLINIC, PATIENT, "inv_1", expires), SAMPLE_PAY_LINK_KEY)


def claims(sub: str, role: str, patient_ids: list[str] | None = None) -> dict[str, str]:
    """Claims as the HTTP API JWT authorizer passes them on: strings only."""
    issued = int(SAMPLE_TIME.timestamp()) - 600
    out = {
        "sub": sub,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "token_use": "id",
        "iat": str(issued),
        "exp": str(issued + 3600),
        "clinic_id": CLINIC,
        "role": role,
    }
    if patient_ids is not None:
        out["patient_ids"] = "[" + " ".join(patient_ids) + "]"
    return out


# A parent who may act for themselves (pat_1) and a child (pat_2); a front-desk user; an admin.
PATIENT_CALLER = claims("6f1c2b8e-3d4a-4e5f-9a0b-1c2d3e4f5a6b", "patient", [PATIENT, "pat_2"])
STAFF_CALLER = claims("0b7e9d42-8c1f-4a3b-b5d6-e7f8a9b0c1d2", "staff")
ADMIN_CALLER = claims("c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f", "admin")


@dataclass(frozen=True)
class Sample:
    file: str
    method: str
    route: str
    caller: dict[str, str] | None  # None: a public route, no authorizer
    params: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)
    idempotency_key: bool = False


INVOICES = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices"
PAYMENT_METHODS = "/v1/clinics/{clinic_id}/patients/{patient_id}/payment-methods"
PATIENT_PARAMS = {"clinic_id": CLINIC, "patient_id": PATIENT}

SAMPLES = [
    Sample("get_health.json", "GET", "/v1/health", None),
    Sample("get_openapi_document.json", "GET", "/v1/openapi.json", None),
    Sample("get_docs.json", "GET", "/v1/docs", None),
    Sample(
        "create_invoice.json",
        "POST",
        INVOICES,
        STAFF_CALLER,
        PATIENT_PARAMS,
        body={
            "currency": "usd",
            "due_date": "2026-12-01",
            "memo": "November visits",
            "lines": [
                {
                    "description": "Physiotherapy session",
                    "service_date": "2026-11-20",
                    "quantity": 1,
                    "unit_amount": 12000,
                    "tax_rate_id": None,
                },
                {
                    "description": "Resistance band",
                    "service_date": "2026-11-20",
                    "quantity": 2,
                    "unit_amount": 2500,
                    "tax_rate_id": "tax_hst",
                },
            ],
        },
        idempotency_key=True,
    ),
    Sample(
        "void_invoice.json",
        "POST",
        INVOICES + "/{invoice_id}/void",
        STAFF_CALLER,
        {**PATIENT_PARAMS, "invoice_id": "inv_2"},
        body={},
    ),
    Sample(
        "list_invoices.json",
        "GET",
        INVOICES,
        PATIENT_CALLER,
        PATIENT_PARAMS,
        query={"status": "open", "limit": "25"},
    ),
    Sample(
        "get_invoice.json",
        "GET",
        INVOICES + "/{invoice_id}",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "invoice_id": "inv_1"},
    ),
    Sample(
        "get_payment.json",
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "payment_id": PAYMENT},
    ),
    Sample(
        "list_payments.json",
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments",
        PATIENT_CALLER,
        PATIENT_PARAMS,
        query={"limit": "25"},
    ),
    Sample(
        "pay_invoice.json",
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments",
        PATIENT_CALLER,
        PATIENT_PARAMS,
        body={
            "method": "card",
            "allocations": [{"invoice_id": "inv_1", "amount": 5000}, {"invoice_id": "inv_3"}],
            "amount": 17000,
            "save_card": True,
            "consent": {"agreed": True, "wording_version": "2026-11-01"},
            "payer": "self",
        },
        idempotency_key=True,
    ),
    Sample(
        "topup_credit.json",
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/credit/topups",
        PATIENT_CALLER,
        PATIENT_PARAMS,
        body={
            "amount": 5000,
            "location_id": "loc_main",
            "consent": {"agreed": True, "wording_version": "2026-11-01"},
        },
        idempotency_key=True,
    ),
    Sample(
        "get_credit.json",
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/credit",
        PATIENT_CALLER,
        PATIENT_PARAMS,
    ),
    Sample(
        "apply_credit.json",
        "POST",
        INVOICES + "/{invoice_id}/apply-credit",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "invoice_id": "inv_1"},
        body={"amount": 3000},
        idempotency_key=True,
    ),
    Sample(
        "adjust_credit.json",
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/credit/adjustments",
        STAFF_CALLER,
        PATIENT_PARAMS,
        body={"amount": 1000, "reason": "goodwill"},
        idempotency_key=True,
    ),
    Sample(
        "refund_payment.json",
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/refunds",
        STAFF_CALLER,
        {**PATIENT_PARAMS, "payment_id": PAYMENT},
        body={"amount": 2000, "reason": "requested_by_customer"},
        idempotency_key=True,
    ),
    Sample(
        "list_stripe_accounts.json",
        "GET",
        "/v1/clinics/{clinic_id}/stripe-accounts",
        ADMIN_CALLER,
        {"clinic_id": CLINIC},
    ),
    Sample(
        "put_stripe_account.json",
        "PUT",
        "/v1/clinics/{clinic_id}/stripe-accounts/{account_id}",
        ADMIN_CALLER,
        {"clinic_id": CLINIC, "account_id": ACCOUNT},
        body={
            "name": "Main location",
            "secret_key": "sk_test_replace_with_the_clinic_secret_key",
            "publishable_key": "pk_test_replace_with_the_clinic_publishable_key",
            "webhook_secret": WEBHOOK_SECRET,
            "status": "active",
            "admin_default": True,
            "portal_default": True,
            "primary": True,
        },
    ),
    Sample(
        "get_settings.json",
        "GET",
        "/v1/clinics/{clinic_id}/settings",
        ADMIN_CALLER,
        {"clinic_id": CLINIC},
    ),
    Sample(
        "put_settings.json",
        "PUT",
        "/v1/clinics/{clinic_id}/settings",
        ADMIN_CALLER,
        {"clinic_id": CLINIC},
        body={
            "currency": "usd",
            "accept_portal_payments": True,
            "allow_credit_topups": True,
            "email_pay_online_requests": True,
            "pass_processing_fees": False,
            "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": 13}],
            "locations": [{"id": "loc_main", "name": "Main clinic"}],
        },
    ),
    Sample(
        "list_payment_methods.json",
        "GET",
        PAYMENT_METHODS,
        PATIENT_CALLER,
        PATIENT_PARAMS,
    ),
    Sample(
        "add_payment_method.json",
        "POST",
        PAYMENT_METHODS,
        PATIENT_CALLER,
        PATIENT_PARAMS,
        body={"consent": {"agreed": True, "wording_version": "2026-11-01"}},
        idempotency_key=True,
    ),
    Sample(
        "remove_payment_method.json",
        "DELETE",
        PAYMENT_METHODS + "/{pm_id}",
        STAFF_CALLER,
        {**PATIENT_PARAMS, "pm_id": "pm_1QexampleVisa4242"},
    ),
    Sample(
        "get_card_on_file_terms.json",
        "GET",
        "/v1/clinics/{clinic_id}/card-on-file-terms",
        PATIENT_CALLER,
        {"clinic_id": CLINIC},
    ),
    Sample(
        "get_receipt.json",
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/receipt",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "payment_id": PAYMENT},
        query={"format": "pdf"},
    ),
    Sample(
        "get_refund_receipt.json",
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/refunds/{refund_id}"
        "/receipt",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "payment_id": PAYMENT, "refund_id": "ref_01kq3zzzzzzrefund00001"},
        query={"format": "json"},
    ),
    Sample(
        "get_invoice_pdf.json",
        "GET",
        INVOICES + "/{invoice_id}/pdf",
        PATIENT_CALLER,
        {**PATIENT_PARAMS, "invoice_id": "inv_1"},
    ),
    Sample(
        "create_payment_request.json",
        "POST",
        INVOICES + "/{invoice_id}/payment-requests",
        STAFF_CALLER,
        {**PATIENT_PARAMS, "invoice_id": "inv_1"},
        body={"email": "patient@example.com", "expires_in_days": 14},
        idempotency_key=True,
    ),
    Sample(
        "view_pay_link.json",
        "GET",
        "/v1/pay/{token}",
        None,
        {"token": sample_pay_link_token()},
    ),
    Sample(
        "pay_with_link.json",
        "POST",
        "/v1/pay/{token}/payments",
        None,
        {"token": sample_pay_link_token()},
        body={"receipt_email": "patient@example.com"},
        idempotency_key=True,
    ),
]


def _stable_id(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "clinic-payments-sample:" + ":".join(parts)))


def http_event(
    method: str,
    route: str,
    params: dict[str, str],
    *,
    at: datetime,
    headers: dict[str, str],
    body: str | None,
    query: dict[str, str] | None = None,
    caller: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API payload v2.0 event for `method route` on the $default stage."""
    path = route.format(**params)
    raw_query = "&".join(f"{k}={v}" for k, v in (query or {}).items())
    request_id = _stable_id(method, path, str(at.timestamp()))
    all_headers = {
        "accept": "application/json",
        "host": DOMAIN,
        "user-agent": "clinic-portal/1.0",
        "x-amzn-trace-id": f"Root=1-{int(at.timestamp()):08x}-{request_id.replace('-', '')[:24]}",
        "x-forwarded-for": "203.0.113.10",
        "x-forwarded-port": "443",
        "x-forwarded-proto": "https",
        **headers,
    }
    if body is not None:
        all_headers["content-length"] = str(len(body.encode()))
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT_ID,
        "apiId": API_ID,
        "domainName": DOMAIN,
        "domainPrefix": API_ID,
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": all_headers["x-forwarded-for"],
            "userAgent": all_headers["user-agent"],
        },
        "requestId": request_id,
        "routeKey": f"{method} {route}",
        "stage": "$default",
        "time": at.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(at.timestamp() * 1000),
    }
    if caller is not None:
        request_context["authorizer"] = {"jwt": {"claims": caller, "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": all_headers,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if params:
        event["pathParameters"] = dict(params)
    if body is not None:
        event["body"] = body
    return event


def sample_event(sample: Sample) -> dict[str, Any]:
    headers: dict[str, str] = {}
    if sample.caller is not None:
        # API Gateway already verified the token; the handler reads only the claims.
        headers["authorization"] = "Bearer <id token verified by the JWT authorizer>"
    body = None
    if sample.body is not None:
        headers["content-type"] = "application/json"
        body = json.dumps(sample.body)
    if sample.idempotency_key:
        headers["idempotency-key"] = _stable_id("idempotency", sample.file)
    return http_event(
        sample.method,
        sample.route,
        sample.params,
        at=SAMPLE_TIME,
        headers=headers,
        body=body,
        query=sample.query,
        caller=sample.caller,
    )


def stripe_signature(payload: str, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header Stripe would send: HMAC-SHA256 of "{t}.{payload}"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def payment_intent_succeeded(fixtures: dict[str, Any], now: int) -> dict[str, Any]:
    """A `payment_intent.succeeded` event built on Stripe's fixture objects."""
    resources = fixtures["resources"]
    intent = copy.deepcopy(resources["payment_intent"])
    intent_id = "pi_3QexampleDemoClinic01"
    intent.update(
        {
            "id": intent_id,
            "amount": 17000,
            "amount_received": 17000,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "client_secret": f"{intent_id}_secret_exampleOnly",
            "created": now - 8,
            "customer": "cus_QexampleDemoPat1",
            "description": "Clinic payment",
            "last_payment_error": None,
            "latest_charge": "ch_3QexampleDemoClinic01",
            "metadata": {"clinic_id": CLINIC, "patient_id": PATIENT, "payment_id": PAYMENT},
            "next_action": None,
            "payment_method": "pm_1QexampleVisa4242",
            "payment_method_configuration_details": None,
            "processing": None,
            "setup_future_usage": "off_session",
            "status": "succeeded",
            "transfer_data": None,
        }
    )
    event = copy.deepcopy(resources["event"])
    event.update(
        {
            "id": "evt_3QexampleDemoClinic01",
            "api_version": stripe_api_version(),
            "created": now - 1,
            "data": {"object": intent},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": "req_exampleConfirm01", "idempotency_key": None},
            "type": "payment_intent.succeeded",
        }
    )
    return event


def signed_webhook_event(fixtures: dict[str, Any], now: int) -> dict[str, Any]:
    # Stripe posts the event pretty-printed; the signature covers exactly these bytes.
    body = json.dumps(payment_intent_succeeded(fixtures, now), indent=2)
    return http_event(
        "POST",
        "/v1/webhooks/stripe/{clinic_id}/{account_id}",
        {"clinic_id": CLINIC, "account_id": ACCOUNT},
        at=datetime.fromtimestamp(now, UTC),
        headers={
            "accept": "*/*; q=0.5, application/xml",
            "cache-control": "no-cache",
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": stripe_signature(body, WEBHOOK_SECRET, now),
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "x-forwarded-for": "3.18.12.63",
        },
        body=body,
    )


def schedule_event(kind: str, rule_name: str) -> dict[str, Any]:
    """The event an EventBridge schedule rule sends its function."""
    return {
        "version": "0",
        "id": _stable_id(kind, SAMPLE_TIME.isoformat()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": SAMPLE_TIME.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule_name}"],
        "detail": {},
    }


def reconcile_schedule_event() -> dict[str, Any]:
    """The EventBridge event that the `rate(5 minutes)` rule sends the reconciler."""
    return schedule_event(
        "schedule", "clinic-payments-ReconcilePaymentsFunctionEveryFi-1A2B3C4D5E6F"
    )


def daily_audit_schedule_event() -> dict[str, Any]:
    """The EventBridge event that the daily rule sends the audit."""
    return schedule_event("daily-audit", "clinic-payments-DailyAuditFunctionDaily-1A2B3C4D5E6F")


def build_all(fixtures: dict[str, Any], now: int) -> dict[str, dict[str, Any]]:
    events = {sample.file: sample_event(sample) for sample in SAMPLES}
    events["stripe_webhook_signed.json"] = signed_webhook_event(fixtures, now)
    events["reconcile_schedule.json"] = reconcile_schedule_event()
    events["daily_audit_schedule.json"] = daily_audit_schedule_event()
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    parser.add_argument("--out", type=Path, default=EVENTS_DIR)
    args = parser.parse_args()
    fixtures = json.loads(args.fixtures.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, event in build_all(fixtures, int(time.time())).items():
        (args.out / name).write_text(json.dumps(event, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out / name}")


if __name__ == "__main__":
    main()
