"""Stripe's `Idempotency-Key` semantics (https://docs.stripe.com/api/idempotent_requests).

- POST requests with a secret key; keys are scoped to the API key and kept 24 hours.
- The first response whose endpoint started executing is saved, errors included (a 402
  decline, a 500), and returned again for the same key and parameters, with
  `Idempotent-Replayed: true`, without executing again.
- The same key with other parameters (or another endpoint): 400 `idempotency_error`.
- While the first request still runs, a retry gets 409 `idempotency_key_in_use`.
- Nothing is saved when the request was not executed: authentication failures (401) and
  rejected parameters (400, localstripe's validation errors), so such requests can be retried.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web
from localstripe.server import get_api_key

KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL_SECONDS = 24 * 3600
MAX_KEY_LENGTH = 255
NOT_EXECUTED = (400, 401)


def stripe_error(status: int, error_type: str, message: str, **fields: str) -> web.Response:
    return web.json_response(
        {"error": {"type": error_type, "message": message, **fields}}, status=status
    )


@dataclass(frozen=True)
class _Saved:
    fingerprint: str
    status: int
    body: bytes
    content_type: str
    saved_at: float


class IdempotencyCache:
    def __init__(self) -> None:
        self._saved: dict[tuple[str, str], _Saved] = {}
        self._running: set[tuple[str, str]] = set()

    def clear(self) -> None:
        self._saved.clear()

    async def handle(
        self, request: web.Request, execute: Callable[[], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key = request.headers.get(KEY_HEADER)
        api_key = get_api_key(request)
        if request.method != "POST" or not key or api_key is None:
            return await execute()
        if len(key) > MAX_KEY_LENGTH:
            return stripe_error(
                400,
                "invalid_request_error",
                f"Invalid idempotency key: keys can be at most {MAX_KEY_LENGTH} characters.",
            )

        slot = (api_key, key)
        fingerprint = await _fingerprint(request)
        self._forget_expired()
        saved = self._saved.get(slot)
        if saved is not None:
            if saved.fingerprint != fingerprint:
                return stripe_error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with. Try using a key other than '{key}' if you "
                    "meant to execute a different request.",
                )
            return _replay(saved, key)
        if slot in self._running:
            return stripe_error(
                409,
                "invalid_request_error",
                "There is currently another in-progress request using this Idempotent Key "
                "(that probably means you submitted twice, and the other request is still "
                f"going through): {key}. Please try again later.",
                code="idempotency_key_in_use",
            )

        self._running.add(slot)
        try:
            response = await execute()
        finally:
            self._running.discard(slot)
        if isinstance(response, web.Response) and response.status not in NOT_EXECUTED:
            self._saved[slot] = _Saved(
                fingerprint=fingerprint,
                status=response.status,
                body=response.body if isinstance(response.body, bytes) else b"",
                content_type=response.headers.get("Content-Type", "application/json"),
                saved_at=time.monotonic(),
            )
        response.headers[KEY_HEADER] = key
        return response

    def _forget_expired(self) -> None:
        cutoff = time.monotonic() - TTL_SECONDS
        for slot in [slot for slot, saved in self._saved.items() if saved.saved_at < cutoff]:
            del self._saved[slot]


def _replay(saved: _Saved, key: str) -> web.Response:
    return web.Response(
        status=saved.status,
        body=saved.body,
        headers={"Content-Type": saved.content_type, KEY_HEADER: key, REPLAYED_HEADER: "true"},
    )


async def _fingerprint(request: web.Request) -> str:
    """The endpoint and its parameters, independent of their order in the request."""
    body = await request.read()
    params: object = body.hex()
    if request.content_type == "application/x-www-form-urlencoded":
        params = sorted(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
    elif request.content_type == "application/json":
        with contextlib.suppress(ValueError):
            params = json.loads(body)
    query = sorted(request.query.items())
    return json.dumps([request.method, request.path, query, params], sort_keys=True)
