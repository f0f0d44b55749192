"""Signed Stripe events of shapes this API does not read, and timestamps from the future: the
adapter's parsing (Stripe's real shapes from tests/fixtures/stripe/fixtures3.json) and the
service's answer on the fakes."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import stripe
from clinic_payments.adapters.stripe_gateway import StripeWebhookVerifier, parse_event
from clinic_payments.domain.errors import WebhookSignatureError
from clinic_payments.domain.model import CardSummary, RefundSnapshot, WebhookEvent
from clinic_payments.domain.webhooks import WebhookOutcome

from tests.support.fixtures import stripe_resources
from tests.unit.fakes import ACCOUNT, CLINIC, make_world

pytestmark = pytest.mark.unit

SECRET = "whsec_test"
NOW = 1_800_000_000


def event_of(obj: Any, event_type: str = "refund.failed") -> dict[str, Any]:
    return {
        "id": "evt_shape_1",
        "object": "event",
        "type": event_type,
        "created": NOW,
        "data": {"object": obj},
    }


def failed_refund() -> dict[str, Any]:
    refund = copy.deepcopy(stripe_resources()["refund"])
    refund.update(
        status="failed",
        failure_reason="expired_or_canceled_card",
        payment_intent="pi_123",
        metadata={"clinic_id": "c1", "payment_id": "pay_1", "refund_id": "ref_1"},
    )
    return refund


def parsed(event: Any) -> WebhookEvent:
    return parse_event(json.dumps(event).encode())


def test_a_refund_event_carries_stripes_refund_with_its_status() -> None:
    refund = failed_refund()
    event = parsed(event_of(refund))
    assert event.unexpected_shape is None
    assert event.refund == RefundSnapshot(
        id=refund["id"],
        amount=refund["amount"],
        status="failed",
        failure_reason="expired_or_canceled_card",
        payment_intent_id="pi_123",
        charge_id=refund["charge"],
        metadata={"clinic_id": "c1", "payment_id": "pay_1", "refund_id": "ref_1"},
    )


def test_a_charge_lists_its_refunds_with_their_statuses() -> None:
    charge = copy.deepcopy(stripe_resources()["charge"])
    charge["refunds"] = {"object": "list", "data": [failed_refund()], "has_more": False}
    event = parsed(event_of(charge, "charge.refunded"))
    assert event.charge is not None
    assert event.charge.refunds is not None
    assert [(r.status, r.failure_reason) for r in event.charge.refunds] == [
        ("failed", "expired_or_canceled_card")
    ]


def charge_with_card(card: Any) -> dict[str, Any]:
    charge = copy.deepcopy(stripe_resources()["charge"])
    charge.update(payment_method="pm_1", payment_method_details={"type": "card", "card": card})
    return charge


def test_a_charges_card_of_another_shape_is_read_for_what_it_has_never_raised() -> None:
    # The card details only name the card on receipts: the event is still the charge's.
    event = parsed(event_of(charge_with_card("visa"), "charge.succeeded"))
    assert event.unexpected_shape is None
    assert event.charge is not None
    assert event.charge.card is None

    odd = {"brand": 5, "last4": "4242", "exp_month": "12", "wallet": {"type": ["apple_pay"]}}
    event = parsed(event_of(charge_with_card(odd), "charge.succeeded"))
    assert event.charge is not None
    assert event.charge.card == CardSummary("pm_1", None, "4242", None, None, wallet=None)

    wallet_as_text = {"brand": "visa", "last4": "4242", "wallet": "apple_pay"}
    event = parsed(event_of(charge_with_card(wallet_as_text), "charge.succeeded"))
    assert event.charge is not None
    assert event.charge.card == CardSummary("pm_1", "visa", "4242", wallet=None)


def _with(change: Any) -> dict[str, Any]:
    event = event_of(failed_refund())
    change(event)
    return event


UNEXPECTED = {
    "data-is-a-number": _with(lambda e: e.update(data=5)),
    "object-is-a-list": _with(lambda e: e["data"].update(object=[])),
    "amount-is-a-string": _with(lambda e: e["data"]["object"].update(amount="12.50")),
    "amount-is-a-float": _with(lambda e: e["data"]["object"].update(amount=12.5)),
    "amount-is-negative": _with(lambda e: e["data"]["object"].update(amount=-1)),
    "object-without-id": _with(lambda e: e["data"]["object"].pop("id")),
    "status-is-a-number": _with(lambda e: e["data"]["object"].update(status=1)),
    "refund-list-is-a-string": {
        **event_of({**stripe_resources()["charge"], "refunds": "all"}, "charge.refunded")
    },
    "intent-metadata-is-a-list": event_of(
        {**stripe_resources()["payment_intent"], "metadata": ["x"]}, "payment_intent.succeeded"
    ),
    "dispute-amount-is-null": event_of(
        {**stripe_resources()["dispute"], "amount": None}, "charge.dispute.created"
    ),
}


@pytest.mark.parametrize("event", UNEXPECTED.values(), ids=UNEXPECTED.keys())
def test_an_object_of_an_unexpected_shape_is_said_so_not_raised(event: dict[str, Any]) -> None:
    result = parsed(event)
    assert result.unexpected_shape is not None
    assert (result.id, result.type) == ("evt_shape_1", event["type"])
    assert (result.intent, result.charge, result.refund, result.dispute) == (None,) * 4


def test_the_reason_names_where_the_shape_differs_never_a_value() -> None:
    event = event_of({**failed_refund(), "amount": "4111111111111111"})
    reason = parsed(event).unexpected_shape
    assert reason is not None
    assert "amount" in reason
    assert "4111" not in reason


@pytest.mark.parametrize(
    "event",
    [{"object": "event", "type": "refund.failed", "data": {}}, {"id": 5, "type": None}],
    ids=["no-id", "id-not-a-string"],
)
def test_an_event_without_a_usable_id_is_known_by_its_payload(event: dict[str, Any]) -> None:
    first, again = parsed(event), parsed(copy.deepcopy(event))
    assert first.unexpected_shape is not None
    assert first.id.startswith("unparsed_")
    assert first.id == again.id
    assert parsed({**event, "x": 1}).id != first.id


def test_an_object_type_this_api_does_not_read_is_not_checked() -> None:
    event = parsed(event_of({"object": "plan", "id": "plan_1", "amount": "lots"}, "plan.created"))
    assert event.unexpected_shape is None
    assert (event.object_type, event.object_id) == ("plan", "plan_1")


def _signed(payload: str, at: int) -> str:
    signature = stripe.WebhookSignature._compute_signature(f"{at}.{payload}", SECRET)
    return f"t={at},v1={signature}"


@pytest.mark.parametrize(("skew", "accepted"), [(-299, True), (299, True), (301, False)])
def test_a_timestamp_more_than_300s_in_the_future_is_refused(skew: int, accepted: bool) -> None:
    payload = json.dumps(event_of(failed_refund()))
    now = time.time()
    verifier = StripeWebhookVerifier(now=lambda: now)
    header = _signed(payload, int(now) + skew)
    if accepted:
        assert verifier.verify(payload.encode(), header, SECRET).id == "evt_shape_1"
    else:
        with pytest.raises(WebhookSignatureError):
            verifier.verify(payload.encode(), header, SECRET)


def test_a_signed_event_of_an_unexpected_shape_verifies() -> None:
    payload = json.dumps(UNEXPECTED["data-is-a-number"])
    event = StripeWebhookVerifier().verify(
        payload.encode(), _signed(payload, int(time.time())), SECRET
    )
    assert event.unexpected_shape is not None


# -- the service -----------------------------------------------------------------------------


def test_an_event_of_an_unexpected_shape_is_recorded_and_its_redelivery_is_a_duplicate() -> None:
    world = make_world()
    event = WebhookEvent(
        "evt_odd", "refund.failed", None, None, None, unexpected_shape="unexpected data"
    )
    assert world.deliver(event) is WebhookOutcome.UNEXPECTED_SHAPE
    assert world.repo.events[(f"{CLINIC}#{ACCOUNT}", "evt_odd")] == "refund.failed"
    assert world.deliver(event) is WebhookOutcome.DUPLICATE
