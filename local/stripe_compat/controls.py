"""Test-only controls under `/_compat/` (no authentication).

- `GET /_compat/requests`: how many requests were executed, by `METHOD /path/{template}`
  (idempotent replays and injected `error_before` failures are not executed, so not counted);
  `DELETE /_compat/requests` resets the counts.
- `POST /_compat/faults` with JSON `{"method": "POST", "path_prefix": "/v1/payment_intents",
  "mode": "error_before" | "error_after" | "delay", "status": 500, "seconds": 3.0, "times": 1}`:
  the next `times` matching requests fail before executing, execute and then fail (the caller
  cannot know the outcome, as after a timeout), or are delayed before executing.
  `GET /_compat/faults` lists the pending ones, `DELETE /_compat/faults` clears them.
- `POST /_compat/wallet_tokens` with JSON `{"wallet": "apple_pay" | "google_pay", "number":
  "4242424242424242", "dynamic_last4": "9999"}` (`number` one of Stripe's 16-digit test cards,
  default Visa 4242; `dynamic_last4` optional): the card token that wallet's payment sheet would
  give (`wallets.py`), to be made a PaymentMethod with Stripe's own `card[token]`. Stripe has
  no API for this step (a real device's wallet does it), hence a control.
- Bank debits (`debits.py`), the fake's "days later": `GET /_compat/debits` ->
  `{"settle_after_seconds": 1.5, "pending": ["pi_..."]}`; `POST /_compat/debits` with JSON
  `{"settle_after_seconds": 0.2}` (or `null`: pending debits wait to be settled by hand);
  `POST /_compat/debits/settle` with `{}` settles every pending debit now, with
  `{"payment_intent": "pi_..."}` that one (404 if nothing is pending for it) ->
  `{"settled": ["pi_..."]}`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from local.stripe_compat import debits, wallets
from local.stripe_compat.idempotency import IdempotencyCache, stripe_error

PREFIX = "/_compat/"
MODES = ("error_before", "error_after", "delay")


@dataclass
class Fault:
    mode: str
    path_prefix: str = "/"
    method: str | None = None
    status: int = 500
    seconds: float = 0.0
    times: int = 1

    def matches(self, request: web.Request) -> bool:
        method_ok = self.method is None or self.method.upper() == request.method
        return method_ok and request.path.startswith(self.path_prefix)

    def response(self) -> web.Response:
        """An error in Stripe's shape, so clients classify it as they would Stripe's."""
        message = f"Injected fault ({self.mode}) from localstripe-compat."
        if self.status == 429:
            return stripe_error(429, "invalid_request_error", message, code="rate_limit")
        if self.status >= 500:
            return stripe_error(self.status, "api_error", message)
        return stripe_error(self.status, "invalid_request_error", message)

    @classmethod
    def parse(cls, data: Any) -> Fault:
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        unknown = set(data) - {"mode", "path_prefix", "method", "status", "seconds", "times"}
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
        fault = cls(**data)
        if fault.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not isinstance(fault.path_prefix, str) or not fault.path_prefix.startswith("/"):
            raise ValueError("path_prefix must start with /")
        if fault.method is not None and not isinstance(fault.method, str):
            raise ValueError("method must be a string")
        if not isinstance(fault.status, int) or not 400 <= fault.status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        seconds_ok = isinstance(fault.seconds, int | float) and math.isfinite(fault.seconds)
        if not seconds_ok or not 0 <= fault.seconds <= 300:
            raise ValueError("seconds must be between 0 and 300")
        if not isinstance(fault.times, int) or fault.times < 1:
            raise ValueError("times must be a positive integer")
        return fault


@dataclass
class CompatState:
    counts: Counter[str] = field(default_factory=Counter)
    faults: list[Fault] = field(default_factory=list)
    idempotency: IdempotencyCache = field(default_factory=IdempotencyCache)

    def take_fault(self, request: web.Request) -> Fault | None:
        """The first pending fault matching the request, used up once."""
        for fault in self.faults:
            if fault.matches(request):
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return fault
        return None


STATE = web.AppKey("stripe_compat_state", CompatState)


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else request.path}"


async def get_requests(request: web.Request) -> web.Response:
    return web.json_response(dict(sorted(request.app[STATE].counts.items())))


async def delete_requests(request: web.Request) -> web.Response:
    request.app[STATE].counts.clear()
    return web.Response(status=204)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response([asdict(fault) for fault in request.app[STATE].faults])


async def post_fault(request: web.Request) -> web.Response:
    try:
        fault = Fault.parse(await request.json())
    except (ValueError, TypeError) as exc:
        return stripe_error(400, "invalid_request_error", f"Invalid fault: {exc}")
    request.app[STATE].faults.append(fault)
    return web.json_response(asdict(fault))


async def delete_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.Response(status=204)


WALLET_TOKEN_FIELDS = frozenset({"wallet", "number", "dynamic_last4"})
DEFAULT_WALLET_CARD = "4242424242424242"


def _digits(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and value.isdigit()


def _wallet_token_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "expected a JSON object"
    unknown = set(data) - WALLET_TOKEN_FIELDS
    if unknown:
        return f"unknown fields: {', '.join(sorted(unknown))}"
    if data.get("wallet") not in wallets.TOKENIZATION_METHODS:
        return f"wallet must be one of {', '.join(wallets.TOKENIZATION_METHODS)}"
    if not _digits(data.get("number", DEFAULT_WALLET_CARD), 16):
        return "number must be a 16-digit test card number"
    if data.get("dynamic_last4") is not None and not _digits(data["dynamic_last4"], 4):
        return "dynamic_last4 must be 4 digits"
    return None


async def post_wallet_token(request: web.Request) -> web.Response:
    try:
        data = await request.json()
    except ValueError:
        data = None
    problem = _wallet_token_problem(data)
    if problem is not None:
        return stripe_error(400, "invalid_request_error", f"Invalid wallet token: {problem}")
    token = wallets.wallet_token(
        data["wallet"], data.get("number", DEFAULT_WALLET_CARD), data.get("dynamic_last4")
    )
    return web.json_response(token._export())


def _debits_state() -> dict[str, Any]:
    return {
        "settle_after_seconds": debits.settle_after_seconds(),
        "pending": debits.pending_intents(),
    }


async def get_debits(request: web.Request) -> web.Response:
    return web.json_response(_debits_state())


async def _json_object(request: web.Request) -> dict[str, Any]:
    data = await request.json() if request.can_read_body else {}
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


async def post_debits(request: web.Request) -> web.Response:
    try:
        data = await _json_object(request)
        if set(data) != {"settle_after_seconds"}:
            raise ValueError('expected {"settle_after_seconds": seconds or null}')
        seconds = data["settle_after_seconds"]
        if seconds is not None:
            valid = isinstance(seconds, int | float) and not isinstance(seconds, bool)
            if not valid or not math.isfinite(seconds) or not 0 <= seconds <= 300:
                raise ValueError("settle_after_seconds must be null or between 0 and 300")
    except ValueError as exc:
        return stripe_error(400, "invalid_request_error", f"Invalid debit settings: {exc}")
    debits.set_settle_after_seconds(seconds)
    return web.json_response(_debits_state())


async def settle_debits(request: web.Request) -> web.Response:
    try:
        data = await _json_object(request)
        if set(data) - {"payment_intent"}:
            raise ValueError("the only field is payment_intent")
    except ValueError as exc:
        return stripe_error(400, "invalid_request_error", f"Invalid settle request: {exc}")
    intent_id = data.get("payment_intent")
    if intent_id is None:
        return web.json_response({"settled": debits.settle_all()})
    if not debits.settle(str(intent_id)):
        return stripe_error(404, "invalid_request_error", f"No pending debit for {intent_id}.")
    return web.json_response({"settled": [intent_id]})


def add_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX + "requests", get_requests)
    app.router.add_delete(PREFIX + "requests", delete_requests)
    app.router.add_get(PREFIX + "faults", get_faults)
    app.router.add_post(PREFIX + "faults", post_fault)
    app.router.add_delete(PREFIX + "faults", delete_faults)
    app.router.add_post(PREFIX + "wallet_tokens", post_wallet_token)
    app.router.add_get(PREFIX + "debits", get_debits)
    app.router.add_post(PREFIX + "debits", post_debits)
    app.router.add_post(PREFIX + "debits/settle", settle_debits)
