"""Write the OpenAPI document that HealthFunction serves, generated from every router.

The health function answers /v1/openapi.json and /v1/docs from the committed file
(layers/shared/clinic_payments/api/openapi.json) and imports no other router, where it used to
import all of them and build the document again on every request.
tests/unit/test_openapi_document.py fails when the file differs from what the routers say.

Usage: make openapi
"""

from __future__ import annotations

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, SecurityScheme
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from clinic_payments.api.http import build_resolver
from clinic_payments.api.routes.health import OPENAPI_DOCUMENT, health_router

TITLE = "Clinic payments API"
VERSION = "1.0.0"


def all_routers() -> list[APIGatewayHttpRouter]:
    """Every route of the API."""
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


def document() -> str:
    """The OpenAPI document of every route, as the file holds it."""
    app = build_resolver(*all_routers())
    security: dict[str, SecurityScheme] = {"bearer": HTTPBearer(bearerFormat="JWT")}
    schema = app.get_openapi_json_schema(
        title=TITLE, version=VERSION, security_schemes=security, security=[{"bearer": []}]
    )
    return schema + "\n"


def main() -> None:
    text = document()
    if OPENAPI_DOCUMENT.exists() and OPENAPI_DOCUMENT.read_text(encoding="utf-8") == text:
        print(f"{OPENAPI_DOCUMENT} is up to date")
        return
    OPENAPI_DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {OPENAPI_DOCUMENT}")


if __name__ == "__main__":
    main()
