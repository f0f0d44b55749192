"""events/ holds what `sam local invoke -e` feeds the functions: it must match the template."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import stripe

from local.template import ROOT, routes
from scripts import make_events

pytestmark = pytest.mark.unit

EVENTS_DIR = ROOT / "events"
EVENT_FILES = sorted(EVENTS_DIR.glob("*.json"))
ROUTES = {f"{r.method} {r.path}": r for r in routes()}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def http_events() -> list[tuple[str, dict[str, Any]]]:
    events = [(path.name, load(path)) for path in EVENT_FILES]
    return [(name, event) for name, event in events if "routeKey" in event]


def webhook_timestamp(event: dict[str, Any]) -> int:
    fields = dict(part.split("=", 1) for part in event["headers"]["stripe-signature"].split(","))
    return int(fields["t"])


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.name)
def test_event_is_a_json_object(path: Path) -> None:
    assert isinstance(load(path), dict)


@pytest.mark.parametrize(("name", "event"), http_events(), ids=lambda v: str(v)[:40])
def test_http_event_is_a_v2_event_of_a_template_route(name: str, event: dict[str, Any]) -> None:
    assert event["version"] == "2.0"
    route = ROUTES.get(event["routeKey"])
    assert route is not None, f"{name}: {event['routeKey']} is not a route of template.yaml"
    context = event["requestContext"]
    assert context["routeKey"] == event["routeKey"]
    assert context["http"]["method"] == route.method
    assert event["rawPath"] == context["http"]["path"]
    assert event["rawPath"] == route.path.format(**event.get("pathParameters", {}))
    if "body" in event:
        assert event["headers"]["content-type"].startswith("application/json")
        assert isinstance(json.loads(event["body"]), dict)


@pytest.mark.parametrize(("name", "event"), http_events(), ids=lambda v: str(v)[:40])
def test_claims_are_where_and_how_the_jwt_authorizer_puts_them(
    name: str, event: dict[str, Any]
) -> None:
    route = ROUTES[event["routeKey"]]
    authorizer = event["requestContext"].get("authorizer")
    if route.public:
        assert authorizer is None, name
        assert "authorization" not in event["headers"], name
        return
    claims = authorizer["jwt"]["claims"]
    assert all(isinstance(value, str) for value in claims.values()), name
    assert claims["clinic_id"] == event["pathParameters"]["clinic_id"]
    assert claims["role"] in {"patient", "staff", "admin"}
    if claims["role"] == "patient":
        assert re.fullmatch(r"\[[A-Za-z0-9_-]+( [A-Za-z0-9_-]+)*\]", claims["patient_ids"])


def test_every_route_has_a_sample_event() -> None:
    assert {event["routeKey"] for _, event in http_events()} == set(ROUTES)


def test_money_posts_carry_an_idempotency_key() -> None:
    pay = [
        e
        for _, e in http_events()
        if e["routeKey"].startswith("POST ") and e["routeKey"].endswith("/payments")
    ]
    assert pay
    assert all(1 <= len(e["headers"]["idempotency-key"]) <= 255 for e in pay)


def test_signed_webhook_verifies_with_the_test_secret() -> None:
    event = load(EVENTS_DIR / "stripe_webhook_signed.json")
    header = event["headers"]["stripe-signature"]
    # Stripe's own verifier, without its clock check: the file's timestamp is allowed to be stale.
    assert stripe.WebhookSignature.verify_header(
        event["body"], header, make_events.WEBHOOK_SECRET, tolerance=None
    )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(
            event["body"] + " ", header, make_events.WEBHOOK_SECRET, tolerance=None
        )
    stripe_event = json.loads(event["body"])
    assert stripe_event["type"] == "payment_intent.succeeded"
    intent = stripe_event["data"]["object"]
    assert intent["object"] == "payment_intent"
    assert intent["status"] == "succeeded"
    assert intent["metadata"] == {
        "clinic_id": "demo",
        "patient_id": "pat_1",
        "payment_id": "pay_example",
    }


@pytest.mark.parametrize("name", ["reconcile_schedule.json", "daily_audit_schedule.json"])
def test_scheduled_events_are_eventbridge_schedules(name: str) -> None:
    event = load(EVENTS_DIR / name)
    assert event["source"] == "aws.events"
    assert event["detail-type"] == "Scheduled Event"


def test_events_are_what_the_generator_writes() -> None:
    fixtures = json.loads(make_events.DEFAULT_FIXTURES.read_text(encoding="utf-8"))
    signed_at = webhook_timestamp(load(EVENTS_DIR / "stripe_webhook_signed.json"))
    expected = make_events.build_all(fixtures, signed_at)
    assert {path.name for path in EVENT_FILES} == set(expected)
    for path in EVENT_FILES:
        assert load(path) == expected[path.name], f"{path.name}: run scripts/make_events.py"


def test_readme_lists_every_event() -> None:
    readme = (EVENTS_DIR / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in EVENT_FILES if p.name not in readme] == []
