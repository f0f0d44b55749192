"""The HTTP edge in front of localstripe's handlers.

Order, outermost first: `compat_middleware` (controls, faults, idempotency, counts, Stripe-shaped
500s), localstripe's `error_middleware`, `auth_middleware` (localstripe's, plus the
publishable-key routes Stripe.js uses), `rules_middleware` (Stripe's refusals, `rules`),
`patched_routes_middleware` (routes whose localstripe handler was bound before the patches).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from localstripe import server
from localstripe.errors import UserError
from localstripe.resources import PaymentIntent, PaymentMethod, SetupIntent

from local.stripe_compat import debits, rules
from local.stripe_compat.controls import PREFIX, STATE, route_label
from local.stripe_compat.idempotency import stripe_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger("localstripe_compat")


@web.middleware
async def compat_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PREFIX):
        return await handler(request)
    state = request.app[STATE]
    fault = state.take_fault(request)
    if fault is not None and fault.mode == "error_before":
        return fault.response()

    async def execute() -> web.StreamResponse:
        if fault is not None and fault.mode == "delay":
            # Inside the idempotency window: a retry meanwhile sees the key in use, as on
            # Stripe while the first request is still going through.
            await asyncio.sleep(fault.seconds)
        response = await _run(request, handler)
        if not request.get(REFUSED):  # refused for its parameters: Stripe executed nothing
            state.counts[route_label(request)] += 1
        return response

    response = await state.idempotency.handle(request, execute)
    if request.method == "DELETE" and request.path == "/_config/data":
        state.idempotency.clear()  # saved responses would name objects that no longer exist
        debits.forget_pending()  # so would pending debits
    if fault is not None and fault.mode == "error_after":
        return fault.response()  # the work is done (and saved for replay); the caller never knows
    return response


async def _run(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Execute, turning anything that is not already a response into Stripe's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return stripe_error(
                404,
                "invalid_request_error",
                f"Unrecognized request URL ({request.method}: {request.path}).",
            )
        return stripe_error(exc.status, "invalid_request_error", exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return stripe_error(500, "api_error", "An unknown error occurred in localstripe.")


# Routes where Stripe accepts the publishable key (`key=pk_...`) with the object's client
# secret, as Stripe.js calls them; localstripe's own auth does not allow all of them.
PUBLISHABLE_ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/payment_intents/{id}/confirm"): PaymentIntent,
    ("GET", "/v1/payment_intents/{id}"): PaymentIntent,
    ("GET", "/v1/setup_intents/{id}"): SetupIntent,
    ("POST", "/v1/payment_methods"): None,
    # Stripe.js verifyMicrodepositsForPayment / verifyMicrodepositsForSetup (ACH).
    ("POST", "/v1/payment_intents/{id}/verify_microdeposits"): PaymentIntent,
    ("POST", "/v1/setup_intents/{id}/verify_microdeposits"): SetupIntent,
}


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(PREFIX):
        return await handler(request)
    resource = request.match_info.route.resource
    route = (request.method, resource.canonical if resource is not None else "")
    if route in PUBLISHABLE_ROUTES and server.get_api_key(request) is None:
        params = await _params(request)
        key = params.get("key")
        if isinstance(key, str) and key.startswith("pk_"):
            owner = PUBLISHABLE_ROUTES[route]
            if owner is not None:
                _check_client_secret(owner, request.match_info["id"], params.get("client_secret"))
            return await handler(request)
    return await server.auth_middleware(request, handler)


async def _params(request: web.Request) -> dict[str, Any]:
    if request.method == "POST":
        data = await server.get_post_data(request, remove_auth=False)
    else:
        data = server.unflatten_data(request.query)
    return dict(data) if data else {}


def _check_client_secret(owner: Any, object_id: str, client_secret: Any) -> None:
    obj = owner._api_retrieve(object_id)
    if client_secret != obj.client_secret:
        name = "PaymentIntent" if owner is PaymentIntent else "SetupIntent"
        raise UserError(
            400,
            f"The client_secret provided does not match the client_secret associated with "
            f"the {name}.",
            {"param": "client_secret"},
        )


REFUSED = "stripe_compat_refused"


@web.middleware
async def rules_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication, as Stripe checks the key before the parameters. A refusal is a
    400 (not saved for idempotent replay, as Stripe saves nothing it did not execute)."""
    if request.path.startswith(PREFIX):
        return await handler(request)
    call = await rules.read_call(request)
    refusal = rules.check(call) if call is not None else None
    if refusal is not None:
        request[REFUSED] = True
        return refusal.response()
    return await handler(request)


# localstripe registered these routes with its methods bound at import time, so they would not
# see the patches: serve them with the patched methods, through localstripe's own handler
# factory (same parameter parsing, `expand` and export).
PATCHED_ROUTES: dict[tuple[str, str], tuple[Any, str]] = {
    ("POST", "/v1/payment_intents/{id}/confirm"): (PaymentIntent, "_api_confirm"),
    ("POST", "/v1/setup_intents/{id}/confirm"): (SetupIntent, "_api_confirm"),
    ("POST", "/v1/payment_methods/{id}/attach"): (PaymentMethod, "_api_attach"),
    ("POST", "/v1/payment_methods/{id}/detach"): (PaymentMethod, "_api_detach"),
}


@web.middleware
async def patched_routes_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    if resource is not None:
        target = PATCHED_ROUTES.get((request.method, resource.canonical))
        if target is not None:
            owner, method = target
            patched_handler = server.api_extra(getattr(owner, method), resource.canonical)
            return await patched_handler(request)
    return await handler(request)
