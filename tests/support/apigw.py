"""API Gateway HTTP API (payload 2.0) events for calling handlers directly, as API Gateway
would: claims as strings, an array claim as "[a b]"."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from local.gateway import LambdaContext, stringify_claim


def claims_for(
    role: str, clinic_id: str, patient_ids: tuple[str, ...] = (), sub: str | None = None
) -> dict[str, Any]:
    return {
        "sub": sub or f"test-{role}",
        "clinic_id": clinic_id,
        "role": role,
        "patient_ids": list(patient_ids),
    }


def http_event(
    method: str,
    route: str,
    path_params: dict[str, str] | None = None,
    *,
    body: Any = None,
    raw_body: str | None = None,
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`route` is the template's path, e.g. /v1/clinics/{clinic_id}/invoices."""
    params = path_params or {}
    path = re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], route)
    all_headers = {"content-type": "application/json"} if (body is not None or raw_body) else {}
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    text = raw_body if raw_body is not None else (json.dumps(body) if body is not None else None)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {route}",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "test",
            "domainName": "test.local",
            "domainPrefix": "test",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {route}",
            "stage": "$default",
            "time": "22/Nov/2026:04:00:00 +0000",
            "timeEpoch": 0,
        },
        "isBase64Encoded": False,
    }
    if params:
        event["pathParameters"] = params
    if query:
        event["queryStringParameters"] = query
    if text is not None:
        event["body"] = text
    if claims is not None:
        event["requestContext"]["authorizer"] = {
            "jwt": {"claims": {k: stringify_claim(v) for k, v in claims.items()}, "scopes": None}
        }
    return event


def context(function_name: str = "TestFunction") -> LambdaContext:
    return LambdaContext(function_name, str(uuid.uuid4()))


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"]) if response.get("body") else None
