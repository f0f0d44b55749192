"""WebhookEventLog: which Stripe events were processed, kept 30 days (the table's TTL).

A settlement marks its event inside its own transaction (`event_put`, conditional: a second
delivery of the event finds it and settles nothing); events that move no money are marked after.
"""

from __future__ import annotations

import time
from typing import Any

from clinic_payments.adapters.dynamo.table import OnTable, dump
from clinic_payments.domain.ports import EventMark

EVENT_RETENTION_SECONDS = 60 * 60 * 24 * 30


def event_key(account_key: str, event_id: str) -> tuple[str, str]:
    return f"STRIPE_EVENT#{account_key}#{event_id}", "EVENT"


def event_put(table_name: str, mark: EventMark) -> dict[str, Any]:
    pk, sk = event_key(mark.account_key, mark.event_id)
    return {
        "TableName": table_name,
        "Item": dump(
            {
                "pk": pk,
                "sk": sk,
                "type": "stripe_event",
                "event_type": mark.event_type,
                "expires_at": int(time.time()) + EVENT_RETENTION_SECONDS,
            }
        ),
        "ConditionExpression": "attribute_not_exists(pk)",
    }


class DynamoWebhookEvents(OnTable):
    def event_processed(self, account_key: str, event_id: str) -> bool:
        return self._t.get(*event_key(account_key, event_id)) is not None

    def mark_event_processed(self, account_key: str, event_id: str, event_type: str) -> None:
        put = event_put(self._t.name, EventMark(account_key, event_id, event_type))
        del put["ConditionExpression"]  # marking twice is harmless
        self._t.client.put_item(**put)
