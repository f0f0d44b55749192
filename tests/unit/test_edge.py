"""The JSON edge's depth check: linear, and blind to brackets inside strings."""

from __future__ import annotations

import json

import pytest
from clinic_payments.api.edge import MAX_JSON_DEPTH, nests_too_deep

pytestmark = pytest.mark.unit


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "too_deep"),
    [
        (nested(MAX_JSON_DEPTH), False),
        (nested(MAX_JSON_DEPTH + 1), True),
        (nested(10_000), True),
        ('{"a": ' * 40 + "1" + "}" * 40, True),
        # Many brackets side by side, or inside strings, are not depth.
        (json.dumps([[1]] * 500), False),
        (json.dumps({"memo": "[" * 1000}), False),
        (json.dumps({"memo": '\\"' + "{" * 100}), False),
        ('{"lines": [' + "{}," * 100 + "{}]}", False),
    ],
    ids=["at-limit", "one-over", "ten-thousand", "objects", "wide", "in-string", "escaped", "list"],
)
def test_depth_is_counted_outside_strings(text: str, too_deep: bool) -> None:
    assert nests_too_deep(text) is too_deep
