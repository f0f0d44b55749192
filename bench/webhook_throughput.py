"""Webhook throughput, warm, in this process: signed payment_intent.succeeded events, each
settling a payment its patient confirmed in the portal, beside the floor measured in the same
run on the same events: verifying the signature (the project's StripeWebhookVerifier, on
stripe.WebhookSignature) and writing one item to the same moto table with PutItem."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient
from stripe import WebhookSignature

from bench.request_costs import Patient
from tests.conftest import Api

GOAL = 0.3


@dataclass
class Timed:
    """Seconds spent in a loop of events, and how much of it waiting on AWS (moto) calls."""

    events: int
    seconds: float = 0.0
    in_aws: float = 0.0
    operations: set[str] = field(default_factory=set)

    @property
    def per_s(self) -> float:
        return self.events / self.seconds

    def ms_each(self, seconds: float) -> float:
        return seconds / self.events * 1000


@contextmanager
def timed(events: int) -> Iterator[Timed]:
    result = Timed(events)
    original = BaseClient._make_api_call

    def call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        start = time.perf_counter()
        try:
            return original(client, operation, params)
        finally:
            result.in_aws += time.perf_counter() - start
            result.operations.add(operation)

    BaseClient._make_api_call = call  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - start
        BaseClient._make_api_call = original  # type: ignore[method-assign]


@dataclass(frozen=True)
class Throughput:
    webhook: Timed
    floor: Timed


def signed(event: dict[str, Any], secret: str) -> tuple[str, str]:
    """The body and Stripe-Signature header Stripe would send."""
    payload = json.dumps(event)
    timestamp = int(time.time())
    signature = WebhookSignature._compute_signature(f"{timestamp}.{payload}", secret)
    return payload, f"t={timestamp},v1={signature}"


def measure(clinic: Api, table: str, events: int = 30) -> Throughput:
    from clinic_payments.adapters.stripe_gateway import StripeWebhookVerifier
    from clinic_payments.wiring import container

    patient = Patient(clinic, "pat_throughput")
    patient.save_card()  # a Stripe customer, and the webhook route warm
    deliveries = []
    for _ in range(events):
        intent = patient.confirm_in_portal(patient.start_card_payment(patient.invoice()))
        deliveries.append(signed(clinic.intent_event(intent), clinic.webhook_secret))

    with timed(events) as webhook:
        for payload, signature in deliveries:
            deliver(clinic, payload, signature)

    verifier = StripeWebhookVerifier()
    dynamodb = container().dynamodb  # the handlers' own client and configuration
    with timed(events) as floor:
        for n, (payload, signature) in enumerate(deliveries):
            verifier.verify(payload.encode(), signature, clinic.webhook_secret)
            dynamodb.put_item(
                TableName=table,
                Item={
                    "pk": {"S": "BENCH#floor"},
                    "sk": {"S": f"EVENT#{n}"},
                    "body": {"S": payload},
                },
            )
    return Throughput(webhook, floor)


def deliver(clinic: Api, payload: str, signature: str) -> None:
    status, body = clinic.call(
        "POST",
        "/v1/webhooks/stripe/{clinic_id}/{account_id}",
        {"account_id": "main"},
        raw_body=payload,
        headers={"Stripe-Signature": signature},
        authenticated=False,
    )
    if status != 200:
        raise SystemExit(f"make bench: the webhook answered {status}: {body}")


def report(result: Throughput) -> list[str]:
    webhook, floor = result.webhook, result.floor
    ratio = webhook.per_s / floor.per_s
    lines = []
    for label, loop in (
        ("webhook payment_intent.succeeded", webhook),
        ("floor: verify, then one PutItem", floor),
    ):
        operations = ", ".join(sorted(loop.operations))
        lines.append(
            f"{label:<34}{loop.per_s:7.1f} events/s: {loop.ms_each(loop.seconds):5.1f} ms an "
            f"event, {loop.ms_each(loop.in_aws):5.1f} of it in moto ({operations})"
        )
    lines += [
        f"ratio {ratio:.2f}, goal >= {GOAL}: {'met' if ratio >= GOAL else 'not met'} "
        f"({webhook.events} events, each settling a payment confirmed in the portal)",
        f"the handler's own work, moto's time taken out: "
        f"{webhook.ms_each(webhook.seconds) - webhook.ms_each(webhook.in_aws):.1f} ms an event, "
        f"the floor's {floor.ms_each(floor.seconds) - floor.ms_each(floor.in_aws):.1f} ms",
    ]
    return lines
