"""Counting what one request costs: every AWS call the handlers make (botocore's `before-call`
and `after-call` events, with the items each DynamoDB answer carries) and every request the
Stripe fake receives. Counts are deterministic, so tests assert them; times belong in
`make bench`."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from botocore.client import BaseClient

from tests.support import stripe_control


def items_in(operation: str, parsed: dict[str, Any]) -> int:
    """How many items a DynamoDB answer carries (what a request read)."""
    if operation == "GetItem":
        return 1 if parsed.get("Item") else 0
    if operation in ("Query", "Scan"):
        return len(parsed.get("Items", []))
    if operation == "BatchGetItem":
        return sum(len(items) for items in parsed.get("Responses", {}).values())
    if operation == "TransactGetItems":
        return sum(1 for response in parsed.get("Responses", []) if response.get("Item"))
    return 0


@dataclass
class Calls:
    aws: list[tuple[str, str]] = field(default_factory=list)  # (service, operation)
    items_read: int = 0
    stripe: dict[str, int] = field(default_factory=dict)  # "POST /v1/payment_intents": n

    def dynamodb(self) -> list[str]:
        return [operation for service, operation in self.aws if service == "dynamodb"]

    def other_aws(self) -> list[tuple[str, str]]:
        return [call for call in self.aws if call[0] != "dynamodb"]

    def stripe_total(self) -> int:
        return sum(self.stripe.values())

    def summary(self) -> str:
        return (
            f"dynamodb {len(self.dynamodb())} {Counter(self.dynamodb())}, items {self.items_read},"
            f" other aws {self.other_aws()}, stripe {self.stripe}"
        )


@contextmanager
def counting(stripe_url: str) -> Iterator[Calls]:
    """Count the calls made inside the block, by every botocore client of this process."""
    calls = Calls()
    original = BaseClient._make_api_call

    def counted(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        service = client.meta.service_model.service_name
        calls.aws.append((service, operation))
        parsed = original(client, operation, params)
        if service == "dynamodb":
            calls.items_read += items_in(operation, parsed)
        return parsed

    before = stripe_control.requests(stripe_url)
    BaseClient._make_api_call = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        BaseClient._make_api_call = original  # type: ignore[method-assign]
        after = stripe_control.requests(stripe_url)
        calls.stripe = {
            label: after[label] - before.get(label, 0)
            for label in after
            if after[label] != before.get(label, 0)
        }
