"""The Stripe fake's test controls: request counts and injected faults."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def _call(url: str, method: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 - loopback Stripe fake
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        raw = response.read()
        return json.loads(raw) if raw else None


def requests(stripe_url: str) -> dict[str, int]:
    """Requests the fake executed so far, by `METHOD /path/{template}`."""
    return {label: int(n) for label, n in _call(f"{stripe_url}/_compat/requests", "GET").items()}


def count(stripe_url: str, label: str = "POST /v1/payment_intents") -> int:
    return requests(stripe_url).get(label, 0)


def fault(stripe_url: str, **spec: Any) -> None:
    _call(f"{stripe_url}/_compat/faults", "POST", spec)


def clear_faults(stripe_url: str) -> None:
    _call(f"{stripe_url}/_compat/faults", "DELETE")
