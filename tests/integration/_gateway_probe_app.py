"""A Lambda handler for the local gateway's tests: it echoes the event and context it got.

A few paths behave differently, to exercise the gateway's response mapping, its errors and its
containers (each a process of its own, one event at a time, several of one function at once).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Module state lives as long as the container: it counts the events this process has run.
events_seen = 0


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


def _json(payload: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(payload),
    }


def _meet(query: dict[str, str]) -> dict[str, Any]:
    """Arrive at a rendezvous (a folder) and wait, at most `wait` seconds, until `n` callers
    are there: `met` says whether they were all in flight at the same time as this one."""
    folder, name = Path(query["dir"]), query["name"]
    (folder / name).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(query.get("wait", "10"))
    while True:
        arrived = sorted(p.name for p in folder.iterdir())
        if len(arrived) >= int(query["n"]) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    return {"met": len(arrived) >= int(query["n"]), "arrived": arrived, "pid": os.getpid()}


def lambda_handler(event: dict[str, Any], context: Any) -> Any:
    global events_seen
    events_seen += 1
    query = event.get("queryStringParameters") or {}
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
    if last in ("meet", "meet-too"):
        return _json(_meet(query))
    if last == "container":
        return _json(
            {
                "pid": os.getpid(),
                "events_seen": events_seen,
                "env": os.environ.get("GATEWAY_PROBE_SETTING"),
            }
        )
    if last == "print":
        print(f"probe-stdout-marker {context.aws_request_id}")  # noqa: T201 - output is the point
        sys.stderr.write("probe-stderr-marker\n")
        return {"printed": True}
    if last == "sleep":
        time.sleep(float(query.get("seconds", "5")))
        return {"slept": True}
    if last == "exit":
        os._exit(3)
    if last == "not-json":
        return {"value": object()}
    return _json({"event": event, "context": _context(context)})
