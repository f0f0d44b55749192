"""A Lambda handler for the local gateway's tests: it echoes the event and context it got.

A few paths behave differently, to exercise the gateway's response mapping and its
one-event-at-a-time-per-function rule.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

waiting = threading.Event()  # set while a /wait call is in progress
signal = threading.Event()  # set by /signal; /wait returns when it is


def reset() -> None:
    waiting.clear()
    signal.clear()


def _context(context: Any) -> dict[str, Any]:
    return {
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "aws_request_id": context.aws_request_id,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
    }


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    last = event["rawPath"].rstrip("/").rsplit("/", 1)[-1]
    if last == "boom":
        raise RuntimeError("probe-traceback-marker: handler blew up")
    if last == "plain":
        return {"hello": "world"}
    if last == "cookies":
        return {
            "statusCode": 201,
            "headers": {"content-type": "text/plain", "x-probe": "yes"},
            "cookies": ["a=1; Path=/; HttpOnly", "b=2"],
            "body": "created",
        }
    if last == "binary":
        return {
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": base64.b64encode(b"\x00\xffbinary").decode(),
            "isBase64Encoded": True,
        }
    if last == "wait":
        waiting.set()
        timeout = float((event.get("queryStringParameters") or {}).get("timeout", "5"))
        return {"statusCode": 200, "body": json.dumps({"signalled": signal.wait(timeout)})}
    if last == "signal":
        signal.set()
        return {"statusCode": 200, "body": json.dumps({"ok": True})}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"event": event, "context": _context(context)}),
    }
