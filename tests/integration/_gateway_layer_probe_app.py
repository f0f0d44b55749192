"""A function built as the project's functions are (`build_resolver`, `guarded`, `idempotent`,
the shared logger and metrics), answering with what it finds of earlier requests in its
container: the local gateway's tests send it requests one after another on one warm worker.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.logging import correlation_paths
from clinic_payments.api.auth import STAFF, current_caller, guarded
from clinic_payments.api.edge import json_body_only, validate_request
from clinic_payments.api.errors import json_response
from clinic_payments.api.http import build_resolver
from clinic_payments.api.idempotency import idempotent, resource_id
from clinic_payments.api.observability import logger, metrics
from pydantic import BaseModel


class ItemRequest(BaseModel):
    note: str


def link_access(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """As the pay-link routes do: no caller, an Idempotency-Key scoped to the token instead."""
    token = (app.context.get("_route_args") or {}).get("token", "")
    app.append_context(idempotency_scope=f"probe-link\n{token}")
    result: Response[Any] = next_middleware(app)
    return result


router = APIGatewayHttpRouter()


def _found(note: str) -> dict[str, Any]:
    """What this request finds on arrival, then its own log keys and one log line."""
    found = {
        "pid": os.getpid(),
        "context_keys": sorted(k for k in router.context if not k.startswith("_")),
        "log_keys": sorted(logger.get_current_keys()),
        "resource_id": resource_id(router),
    }
    logger.append_keys(item_id=resource_id(router), note=note)
    logger.info("probe item")
    return found


@router.post(
    "/v1/clinics/<clinic_id>/patients/<patient_id>/probe-items",
    middlewares=[*guarded(*STAFF), idempotent("itm")],
)
def staff_item(clinic_id: str, patient_id: str, request: Annotated[ItemRequest, Body()]) -> Any:
    return json_response(
        201, {**_found(request.note), "caller": current_caller(router).sub, "note": request.note}
    )


@router.post(
    "/v1/probe-links/<token>/items",
    middlewares=[link_access, json_body_only, validate_request, idempotent("itm")],
)
def link_item(token: str, request: Annotated[ItemRequest, Body()]) -> Any:
    return json_response(201, {**_found(request.note), "caller": None, "note": request.note})


app = build_resolver(router)


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False, clear_state=True
)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return app.resolve(event, context)
