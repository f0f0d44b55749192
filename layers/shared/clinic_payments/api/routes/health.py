"""Health, and the OpenAPI document of every route, served from the file generated at build time
(scripts/write_openapi.py, `make openapi`): this function imports no other router."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import public
from clinic_payments.api.errors import json_response

OPENAPI_DOCUMENT = Path(__file__).resolve().parent.parent / "openapi.json"


@cache
def _document() -> str:
    return OPENAPI_DOCUMENT.read_text(encoding="utf-8")


@cache
def _swagger_page() -> str:
    from aws_lambda_powertools.event_handler.openapi import swagger_ui

    assets = Path(swagger_ui.__file__).parent
    return swagger_ui.generate_swagger_html(
        # As Powertools embeds a document: "</" escaped, so it cannot close the script tag.
        _document().replace("</", "<\\/"),
        (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8"),
        (assets / "swagger-ui.min.css").read_text(encoding="utf-8"),
        swagger_base_url="",
        oauth2_config=None,
    )


def health_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get("/v1/health", middlewares=[public], tags=["Operations"], summary="Liveness")
    def health() -> Any:
        return json_response(200, {"status": "ok"})

    @router.get("/v1/openapi.json", include_in_schema=False, middlewares=[public])
    def openapi_json() -> Any:
        return Response(status_code=200, content_type="application/json", body=_document())

    @router.get("/v1/docs", include_in_schema=False, middlewares=[public])
    def swagger_ui() -> Any:
        return Response(status_code=200, content_type="text/html", body=_swagger_page())

    return router


def health_resolver() -> APIGatewayHttpResolver:
    """The health function's resolver: health, the OpenAPI document and Swagger UI."""
    from clinic_payments.api.http import build_resolver

    return build_resolver(health_router())
