"""Idempotency-Key for every POST that creates or moves money (API.md).

A replay with the same key and body returns the first response (same status, same body) and
calls Stripe no more; the same key with another body is idempotency_key_reused. Keys are
scoped to the clinic and the caller. An unknown outcome (5xx) is not stored: the client's retry
runs again, on the same resource id, so it resumes the same payment rather than starting one.

Powertools' idempotency utility stores only successful return values and deletes its record on
an exception; a declined card (402) must replay verbatim, hence this small middleware.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel

from clinic_payments.api.auth import HasContext, Middleware, current_caller
from clinic_payments.api.errors import json_response
from clinic_payments.domain.errors import (
    DomainError,
    IdempotencyKeyRequiredError,
    IdempotencyKeyReusedError,
    RequestInProgressError,
    ValidationError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.ports import RequestAnswer

_V = TypeVar("_V")

LOCK_SECONDS = 60
HEADER = "idempotency-key"


def _valid_key(key: str) -> bool:
    return 1 <= len(key) <= 255 and all(32 <= ord(ch) < 127 for ch in key)


def _request_hash(app: APIGatewayHttpResolver) -> str:
    event = app.current_event
    try:
        body = event.decoded_body or ""
    except UnicodeDecodeError:  # refused earlier by edge.json_body_only; hash the bytes anyway
        body = event.body or ""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body
    text = f"{event.request_context.http.method} {event.path}\n{canonical}"
    return hashlib.sha256(text.encode()).hexdigest()


def idempotent(resource_prefix: str) -> Middleware:
    def middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        from clinic_payments.api.http import error_response
        from clinic_payments.api.services import repository

        key = app.current_event.headers.get(HEADER)
        if key is None:
            raise IdempotencyKeyRequiredError("This request needs an Idempotency-Key header.")
        if not _valid_key(key):
            raise ValidationError(
                "Idempotency-Key must be 1 to 255 printable characters.",
                [{"field": "Idempotency-Key", "issue": "invalid"}],
            )
        # Scoped to the clinic and the caller; a route with no caller (a pay link) sets its own.
        scoped_to = app.context.get("idempotency_scope")
        if not isinstance(scoped_to, str):
            caller = current_caller(app)
            clinic_id = (app.context.get("_route_args") or {}).get("clinic_id", "")
            scoped_to = f"{clinic_id}\n{caller.sub}"
        scope = hashlib.sha256(f"{scoped_to}\n{key}".encode()).hexdigest()
        request_hash = _request_hash(app)
        repo = repository()  # a middleware: no Depends here
        record, owner = repo.begin_request(
            scope, request_hash, new_id(resource_prefix), LOCK_SECONDS
        )
        if not owner:
            if record.request_hash != request_hash:
                raise IdempotencyKeyReusedError(
                    "This Idempotency-Key was used with another request body."
                )
            if record.completed and record.status_code is not None:
                return Response(
                    status_code=record.status_code,
                    content_type="application/json",
                    body=record.body or "",
                    headers={"Idempotent-Replayed": "true"},
                )
            raise RequestInProgressError(
                "A request with this Idempotency-Key is still in progress; retry shortly."
            )
        answered = _Answered(scope)
        app.append_context(
            resource_id=record.resource_id, resource_fresh=record.fresh, answered=answered
        )
        try:
            response = next_middleware(app)
        except DomainError as exc:
            response = error_response(app, exc)
        except Exception:
            repo.release_request(scope)
            raise
        if answered.committed is not None and 400 <= response.status_code < 500:
            # The request's last write moved the money and recorded its answer; a refusal
            # after that cannot undo it. The caller gets what a replay of the key gets, never
            # an error that reads as "nothing happened" (and invites paying again).
            status_code, recorded = answered.committed
            return Response(status_code=status_code, content_type="application/json", body=recorded)
        if response.status_code >= 500:
            repo.release_request(scope)
        else:
            body = response.body if isinstance(response.body, str) else json.dumps(response.body)
            if answered.committed != (response.status_code, body):
                # Not recorded by the request's own last write (or recorded otherwise).
                repo.complete_request(scope, response.status_code, body)
        return response

    middleware.__name__ = "idempotent"
    return middleware


class _Answered:
    """Which answer the request's last write recorded, if one did."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.committed: tuple[int, str] | None = None


class _Answering(Generic[_V]):
    """The Answering port: the route's own rendering of its success response, recorded in the
    transaction that ends the request (the middleware then has nothing left to write)."""

    def __init__(self, answered: _Answered, status: int, render: Callable[[_V], BaseModel]):
        self._answered = answered
        self._status = status
        self._render = render

    def __call__(self, value: _V) -> RequestAnswer:
        model = self._render(value).model_dump(mode="json")
        body = json.dumps(model, separators=(",", ":"))  # as json_response writes it
        return RequestAnswer(self._answered.scope, self._status, body)

    def committed(self, answer: RequestAnswer) -> None:
        self._answered.committed = (answer.status_code, answer.body)


def answering(app: HasContext, status: int, render: Callable[[_V], BaseModel]) -> _Answering[_V]:
    """An Answering for the route behind idempotent(): `render` must be what the route
    returns with `ok(render(value), status)`."""
    answered = app.context.get("answered")
    if not isinstance(answered, _Answered):
        raise RuntimeError("route is not behind the idempotent() middleware")
    return _Answering(answered, status, render)


def resource_is_fresh(app: HasContext) -> bool:
    """Nothing was written under the resource id yet: a first attempt, not a resumed one."""
    return app.context.get("resource_fresh") is True


def resource_id(app: HasContext) -> str:
    value = app.context.get("resource_id")
    if not isinstance(value, str):
        raise RuntimeError("route is not behind the idempotent() middleware")
    return value


__all__ = ["answering", "idempotent", "json_response", "resource_id", "resource_is_fresh"]
