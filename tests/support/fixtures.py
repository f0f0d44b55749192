"""Stripe's own fixture objects (tests/fixtures/stripe/fixtures3.json, from stripe/openapi,
MIT licence beside it): real shapes of the objects and events the local fake does not send."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "stripe" / "fixtures3.json"


@cache
def _resources() -> dict[str, Any]:
    return dict(json.loads(FIXTURES_PATH.read_text())["resources"])


def stripe_resources() -> dict[str, Any]:
    """A fresh copy of every fixture, by object type (callers may change what they get)."""
    return json.loads(json.dumps(_resources()))
