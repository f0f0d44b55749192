"""IdempotencyStore: the Idempotency-Key records of money requests, kept a day (the table's TTL).

A claim holds a lock; the request's answer is written by its last transaction (`answer_update`)
or by complete_request; a request whose outcome is unknown releases its lock for the retry.
"""

from __future__ import annotations

import time
from typing import Any

from clinic_payments.adapters.dynamo.table import OnTable, dump, values
from clinic_payments.domain.ports import IdempotencyRecord, RequestAnswer

IDEMPOTENCY_RETENTION_SECONDS = 60 * 60 * 24


def request_key(scope: str) -> dict[str, str]:
    return {"pk": f"IDEMPOTENCY#{scope}", "sk": "REQUEST"}


def answer_update(table_name: str, answer: RequestAnswer) -> dict[str, Any]:
    """The request's record completed with its answer, as an item of the request's transaction."""
    return {
        "TableName": table_name,
        "Key": dump(request_key(answer.scope)),
        "UpdateExpression": "SET completed = :true, status_code = :status, body = :body",
        "ExpressionAttributeValues": values(
            {":true": True, ":status": answer.status_code, ":body": answer.body}
        ),
    }


class DynamoIdempotency(OnTable):
    def begin_request(
        self, scope: str, request_hash: str, resource_id: str, lock_seconds: int
    ) -> tuple[IdempotencyRecord, bool]:
        now = int(time.time())
        key = request_key(scope)
        claimed = self._t.put_if_absent(
            {
                **key,
                "type": "idempotency",
                "request_hash": request_hash,
                "resource_id": resource_id,
                "completed": False,
                "lock_until": now + lock_seconds,
                "expires_at": now + IDEMPOTENCY_RETENTION_SECONDS,
            }
        )
        if claimed:
            return IdempotencyRecord(request_hash, resource_id, completed=False, fresh=True), True
        item = self._t.get(key["pk"], key["sk"])
        if item is None:  # expired and removed between the two calls: claim it again
            return self.begin_request(scope, request_hash, resource_id, lock_seconds)
        record = IdempotencyRecord(
            request_hash=str(item["request_hash"]),
            resource_id=str(item["resource_id"]),
            completed=bool(item["completed"]),
            status_code=int(item["status_code"]) if item.get("status_code") is not None else None,
            body=item.get("body"),
        )
        if record.completed or record.request_hash != request_hash or int(item["lock_until"]) > now:
            return record, False
        # The previous attempt died holding the lock: take it over, keeping its resource id so
        # the retry resumes the same payment instead of starting another.
        taken = self._t.update_if(
            Key=dump(key),
            UpdateExpression="SET lock_until = :new",
            ConditionExpression="lock_until = :old AND completed = :false",
            ExpressionAttributeValues=values(
                {":new": now + lock_seconds, ":old": int(item["lock_until"]), ":false": False}
            ),
        )
        return record, taken

    def complete_request(self, scope: str, status_code: int, body: str) -> None:
        """The answer of a request this key claimed (begin_request); a key never claimed, or
        expired, is left alone (an update would create a record with no hash and no lock)."""
        update = answer_update(self._t.name, RequestAnswer(scope, status_code, body))
        self._t.update_if(
            **{k: v for k, v in update.items() if k != "TableName"},
            ConditionExpression="attribute_exists(pk)",
        )

    def release_request(self, scope: str) -> None:
        # Unknown outcome (a 5xx): let the client's retry run again, on the same resource id.
        # A completed request keeps its answer (the condition fails, and that is fine).
        self._t.update_if(
            Key=dump(request_key(scope)),
            UpdateExpression="SET lock_until = :zero",
            ConditionExpression="completed = :false",
            ExpressionAttributeValues=values({":zero": 0, ":false": False}),
        )
