"""The resolver's request state, kept per request rather than per process or per function.

Powertools keeps the current event and Lambda context on a class attribute shared by every
resolver and router of the process, and the request context (`app.context`: the route's
arguments, the caller, the idempotency resource id and scope) on the resolver, shared by every
request that resolver serves. Lambda runs one event per process at a time, so that never shows
there; any two invocations running at once in one process (threads) would read each other's
event (another request's body, Idempotency-Key and claims) and overwrite or clear each other's
context. Here all three live in a context variable set for the duration of `resolve`: each
invocation sees its own, and nothing of it remains once it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.typing import LambdaContext


@dataclass
class _Request:
    event: APIGatewayProxyEventV2
    lambda_context: LambdaContext
    context: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[_Request | None] = ContextVar("clinic_payments_request", default=None)


class RequestScopedResolver(APIGatewayHttpResolver):
    """An APIGatewayHttpResolver whose `current_event`, `lambda_context` and `context` belong to
    the invocation being resolved (the routers included in it read them through it)."""

    def resolve(self, event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        request = _Request(
            cast(APIGatewayProxyEventV2, self._to_proxy_event(cast(dict[str, Any], event))),
            context,
            # what was appended before any event (Powertools allows it) starts every request
            dict(self._startup_context),
        )
        token = _current.set(request)
        try:
            return super().resolve(event, context)
        finally:
            _current.reset(token)

    def _request(self) -> _Request:
        request = _current.get()
        if request is None:
            raise RuntimeError("no request is being resolved")
        return request

    @property  # type: ignore[override]
    def current_event(self) -> APIGatewayProxyEventV2:
        return self._request().event

    @current_event.setter
    def current_event(self, value: APIGatewayProxyEventV2) -> None:
        self._request().event = value

    @property
    def lambda_context(self) -> LambdaContext:
        return self._request().lambda_context

    @lambda_context.setter
    def lambda_context(self, value: LambdaContext) -> None:
        self._request().lambda_context = value

    @property
    def context(self) -> dict[str, Any]:
        request = _current.get()
        return self._startup_context if request is None else request.context

    @context.setter
    def context(self, value: dict[str, Any]) -> None:
        request = _current.get()
        if request is None:
            self._startup_context = value
        else:
            request.context = value
