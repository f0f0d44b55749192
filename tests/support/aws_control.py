"""The local moto server's fault control: DynamoDB throttling and transaction conflicts."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from local.aws import DYNAMODB_FAULTS_PATH


def _call(url: str, method: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def dynamodb_fault(moto_url: str, operation: str, error: str = "throttle", times: int = 1) -> None:
    _call(
        moto_url + DYNAMODB_FAULTS_PATH,
        "POST",
        {"operation": operation, "error": error, "times": times},
    )


def dynamodb_faults(moto_url: str) -> dict[str, Any]:
    """{"pending": [...], "injected": {"TransactWriteItems:throttle": 3, ...}}"""
    return dict(_call(moto_url + DYNAMODB_FAULTS_PATH, "GET"))


def clear_dynamodb_faults(moto_url: str) -> None:
    _call(moto_url + DYNAMODB_FAULTS_PATH, "DELETE")
