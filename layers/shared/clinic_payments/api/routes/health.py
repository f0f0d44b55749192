"""Health, and the OpenAPI document generated from every router."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, SecurityScheme
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import public
from clinic_payments.api.errors import json_response


def health_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get("/v1/health", middlewares=[public], tags=["Operations"], summary="Liveness")
    def health() -> Any:
        return json_response(200, {"status": "ok"})

    return router


def all_routers() -> list[APIGatewayHttpRouter]:
    """Every route of the API, for the OpenAPI document."""
    from clinic_payments.api.routes.admin import admin_router
    from clinic_payments.api.routes.credit import credit_router, topup_router
    from clinic_payments.api.routes.documents import document_reader
    from clinic_payments.api.routes.invoices import invoice_reader, invoice_writer
    from clinic_payments.api.routes.paylinks import pay_link_router, payment_request_writer
    from clinic_payments.api.routes.payments import payment_reader, payment_writer, refund_router
    from clinic_payments.api.routes.saved_cards import saved_cards_router
    from clinic_payments.api.routes.webhooks import webhook_router

    return [
        health_router(),
        invoice_writer(),
        invoice_reader(),
        payment_writer(),
        payment_reader(),
        saved_cards_router(),
        webhook_router(),
        admin_router(),
        credit_router(),
        topup_router(),
        refund_router(),
        document_reader(),
        payment_request_writer(),
        pay_link_router(),
    ]


def docs_resolver() -> APIGatewayHttpResolver:
    """The health function's resolver: health, plus the OpenAPI document of every route."""
    from clinic_payments.api.http import build_resolver

    app = build_resolver(*all_routers())
    title, version = "Clinic payments API", "1.0.0"
    security: dict[str, SecurityScheme] = {"bearer": HTTPBearer(bearerFormat="JWT")}
    app.enable_swagger(
        path="/v1/docs",
        title=title,
        version=version,
        security_schemes=security,
        security=[{"bearer": []}],
    )

    @app.get("/v1/openapi.json", include_in_schema=False, middlewares=[public])
    def openapi_json() -> Any:
        schema = app.get_openapi_json_schema(
            title=title, version=version, security_schemes=security, security=[{"bearer": []}]
        )
        return Response(status_code=200, content_type="application/json", body=schema)

    return app
