"""Identifiers: a prefix and a time-ordered random part, so newest-first is a key order."""

from __future__ import annotations

import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def _base32(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_CROCKFORD[rem])
    return "".join(reversed(chars))


def new_id(prefix: str, now_ms: int | None = None) -> str:
    """`{prefix}_` + 10 chars of millisecond time + 16 random chars (a ULID in lower case)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{prefix}_{_base32(ms, 10)}{_base32(secrets.randbits(80), 16)}"


def confirmation_number(payment_id: str) -> str:
    """A short, human-readable confirmation number derived from the payment id."""
    return payment_id.removeprefix("pay_")[-10:].upper()
