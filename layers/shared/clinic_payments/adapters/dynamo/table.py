"""One DynamoDB table: reads, conditional writes, transactions, and what a refusal means.

Every adapter of the payments table goes through `Table`, and every refused write is read by
`refusal`: which items' conditions failed, or none (a concurrent transaction on the same items).
"""

from __future__ import annotations

import base64
import binascii
import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from clinic_payments.adapters.codec import Item
from clinic_payments.domain.errors import (
    ServiceUnavailableError,
    StaleWriteError,
    ValidationError,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

_ser = TypeSerializer()
_de = TypeDeserializer()

# A transaction item may carry a change to another item (the patient's summary), kept beside it
# until the transaction is sent: the changes of one key are merged into one write, last.
CARRIED = "_carried"


def dump(item: Item) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def load(raw: dict[str, Any]) -> Item:
    return {k: _de.deserialize(v) for k, v in raw.items()}


def values(named: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in named.items()}


@dataclass(frozen=True)
class Refusal:
    """A conditional write or transaction DynamoDB refused; nothing of it was written.

    `conditions[i]`: the condition of the transaction's item i failed (a single write is item
    0). No failed condition: a concurrent transaction touched the same items.
    """

    conditions: tuple[bool, ...]

    def failed(self, index: int) -> bool:
        return index < len(self.conditions) and self.conditions[index]

    @property
    def concurrent(self) -> bool:
        return not any(self.conditions)


def refusal(error: ClientError) -> Refusal | None:
    """The one translation of DynamoDB's refusals. None: not a refusal (throttling, a bad
    request, an outage), which the caller raises as it is."""
    code = error.response["Error"]["Code"]
    if code == "ConditionalCheckFailedException":
        return Refusal((True,))
    if code == "TransactionCanceledException":
        reasons = error.response.get("CancellationReasons") or []
        return Refusal(tuple(r.get("Code") == "ConditionalCheckFailed" for r in reasons))
    if code in ("TransactionConflictException", "TransactionInProgressException"):
        return Refusal(())
    return None


def encode_cursor(sk: str) -> str:
    return base64.urlsafe_b64encode(sk.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str) -> str:
    # Only the sort key travels in a cursor; the partition is always the caller's own.
    try:
        sk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}]) from exc
    if not sk.startswith(prefix):
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}])
    return sk


class CarriedChange(Protocol):
    """A change to another item, carried by a transaction item (see CARRIED)."""

    @property
    def key(self) -> str: ...
    def add(self, other: Any) -> None: ...
    def write(self, table_name: str) -> dict[str, Any] | None:
        """The Update of the item changed, or None when the changes cancel out."""
        ...


class Table:
    def __init__(self, client: DynamoDBClient, name: str) -> None:
        self.client = client
        self.name = name

    def key(self, pk: str, sk: str) -> dict[str, Any]:
        return dump({"pk": pk, "sk": sk})

    def get(self, pk: str, sk: str) -> Item | None:
        raw = self.client.get_item(
            TableName=self.name, Key=self.key(pk, sk), ConsistentRead=True
        ).get("Item")
        return load(raw) if raw else None

    def put_if(
        self,
        item: Item,
        condition: str = "attribute_not_exists(pk)",
        named: dict[str, Any] | None = None,
    ) -> bool:
        """A conditional put_item: False (and nothing written) when its condition fails."""
        extra: dict[str, Any] = {"ExpressionAttributeValues": values(named)} if named else {}
        try:
            self.client.put_item(
                TableName=self.name, Item=dump(item), ConditionExpression=condition, **extra
            )
        except ClientError as exc:
            if (refused := refusal(exc)) is not None and refused.failed(0):
                return False
            raise
        return True

    def put_if_absent(self, item: Item) -> bool:
        """Put a new item; False (and nothing written) when its key exists already."""
        return self.put_if(item)

    def update_if(self, **update: Any) -> bool:
        """A conditional update_item: False (and nothing written) when its condition fails."""
        try:
            self.client.update_item(TableName=self.name, **update)
        except ClientError as exc:
            if (refused := refusal(exc)) is not None and refused.failed(0):
                return False
            raise
        return True

    def transact(self, items: list[Any]) -> None:
        """One transaction. The changes its items carry are merged per key and written last
        (the items' indexes in a cancellation stay theirs)."""
        carried: dict[str, CarriedChange] = {}
        sent: list[Any] = []
        for item in items:
            ((kind, body),) = item.items()
            change = body.get(CARRIED)
            if change is not None:
                body = {k: v for k, v in body.items() if k != CARRIED}
                if change.key in carried:
                    carried[change.key].add(change)
                else:
                    carried[change.key] = copy.deepcopy(change)
            sent.append({kind: body})
        for change in carried.values():
            update = change.write(self.name)
            if update is not None:
                sent.append({"Update": update})
        self.client.transact_write_items(TransactItems=sent)

    def transact_or_stale(self, items: list[Any], moved: str) -> None:
        """One transaction whose conditions are what the caller read: a failed condition, or
        a concurrent transaction on the same items, is StaleWriteError (read and plan again)."""
        try:
            self.transact(items)
        except ClientError as exc:
            if refusal(exc) is not None:
                raise StaleWriteError(moved) from exc
            raise

    def page(
        self,
        kwargs: dict[str, Any],
        pk: str,
        prefix: str,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Item], str | None]:
        """Newest-first items of one partition under a key prefix, `limit` at a time, filters
        included (a filtered page is topped up until full); the cursor carries only a sort key."""
        kwargs = {
            **kwargs,
            "TableName": self.name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        start = decode_cursor(cursor, prefix) if cursor else None
        found: list[Item] = []
        while True:
            if start:
                kwargs["ExclusiveStartKey"] = self.key(pk, start)
            kwargs["Limit"] = limit - len(found) + 1
            page = self.client.query(**kwargs)
            for raw in page.get("Items", []):
                found.append(load(raw))
                if len(found) > limit:
                    return found[:limit], encode_cursor(str(found[limit - 1]["sk"]))
            if "LastEvaluatedKey" not in page:
                return found, None
            start = str(load(page["LastEvaluatedKey"])["sk"])

    def query_all(self, pk: str, prefix: str) -> list[Item]:
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": values({":pk": pk, ":prefix": prefix}),
            "ConsistentRead": True,
        }
        while True:
            page = self.client.query(**kwargs)
            items.extend(load(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def batch_get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Item]:
        """Consistent reads of up to any number of keys: 100 a call, unprocessed ones again."""
        found: dict[tuple[str, str], Item] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self.name: {
                    "Keys": [self.key(pk, sk) for pk, sk in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            attempt = 0
            while request:
                out = self.client.batch_get_item(RequestItems=request)
                for raw in out.get("Responses", {}).get(self.name, []):
                    item = load(raw)
                    found[(str(item["pk"]), str(item["sk"]))] = item
                request = dict(out.get("UnprocessedKeys") or {})
                if request:
                    attempt += 1
                    if attempt >= 5:
                        raise ServiceUnavailableError(
                            "The service is busy; nothing was changed. Retry shortly."
                        )
                    time.sleep(0.05 * 2**attempt)
        return found

    def older_in_index(self, index_pk: str, older_than: str, limit: int) -> list[Item]:
        """Up to `limit` items of one GSI1 partition whose sort key (a time) is before
        `older_than`, oldest first, across pages."""
        found: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self.name,
            "IndexName": "GSI1",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk < :cutoff",
            "ExpressionAttributeValues": values({":pk": index_pk, ":cutoff": older_than}),
        }
        while len(found) < limit:
            page = self.client.query(**kwargs, Limit=limit - len(found))
            found += [load(raw) for raw in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found


class OnTable:
    """An aggregate's adapter: its port's methods over the shared table."""

    def __init__(self, table: Table) -> None:
        self._t = table
