"""Pay-online requests: staff email a link (JWT); the link's holder sees what is owed and pays
it by card (no JWT: the signed token in the path is the authority, and only for its invoice)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import STAFF, HasContext, check_path_ids, current_caller, guarded
from clinic_payments.api.edge import json_body_only, validate_request
from clinic_payments.api.idempotency import idempotent, resource_id
from clinic_payments.api.models import (
    AmountOwedOut,
    PayLinkPaymentOut,
    PayLinkPaymentRequest,
    PaymentRequestCreate,
    PaymentRequestOut,
)
from clinic_payments.api.observability import count_payment, logger, metrics
from clinic_payments.api.presenters import (
    amount_owed_out,
    pay_link_payment_out,
    payment_request_out,
)
from clinic_payments.api.routes._common import PATIENT, ok, responses
from clinic_payments.api.routes.payments import publishable_key
from clinic_payments.api.services import pay_links
from clinic_payments.domain.errors import PaymentError
from clinic_payments.domain.paylinks import PayLink, PayLinkService


def pay_link_access(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """The pay-link routes' `access`: a genuine, unexpired token (404, 410), acting as the
    invoice's patient and no one else. Idempotency-Keys are scoped to the token."""
    params = app.context.get("_route_args") or {}
    check_path_ids(params)
    token = params.get("token", "")
    link = pay_links().verify(token)  # a middleware: no Depends here
    logger.append_keys(clinic_id=link.clinic_id)
    app.append_context(caller=link.caller(), pay_link=link, idempotency_scope=f"pay-link\n{token}")
    return next_middleware(app)


def current_pay_link(app: HasContext) -> PayLink:
    link = app.context.get("pay_link")
    if not isinstance(link, PayLink):
        raise RuntimeError("route is not behind pay_link_access")
    return link


def payment_request_writer() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        f"{PATIENT}/invoices/<invoice_id>/payment-requests",
        middlewares=[*guarded(*STAFF), idempotent("preq")],
        tags=["Pay-online requests"],
        summary="Email the patient a link to pay this invoice online (staff; Idempotency-Key)",
        responses=responses(201, PaymentRequestOut, 400, 401, 403, 404, 409, 415, 422, 503),
    )
    def create_payment_request(
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        request: Annotated[PaymentRequestCreate, Body()],
        service: Annotated[PayLinkService, Depends(pay_links)],
    ) -> Any:
        record, url = service.create_request(
            current_caller(router),
            clinic_id,
            patient_id,
            invoice_id,
            request.email,
            request.expires_in_days,
            resource_id(router),
        )
        metrics.add_metric(name="PaymentRequestSent", unit="Count", value=1)
        return ok(payment_request_out(record, url), 201)

    return router


def pay_link_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        "/v1/pay/<token>",
        middlewares=[pay_link_access],
        tags=["Pay-online requests"],
        summary="What a pay link asks for: clinic, invoice number, balance due (no login)",
        responses=responses(200, AmountOwedOut, 404, 409, 410),
    )
    def view_pay_link(token: str, service: Annotated[PayLinkService, Depends(pay_links)]) -> Any:
        return ok(amount_owed_out(service.owed(current_pay_link(router))))

    @router.post(
        "/v1/pay/<token>/payments",
        middlewares=[pay_link_access, json_body_only, validate_request, idempotent("pay")],
        tags=["Pay-online requests"],
        summary="Start paying the invoice's balance due by card (no login; Idempotency-Key)",
        responses=responses(201, PayLinkPaymentOut, 400, 404, 409, 410, 415, 422, 503),
    )
    def pay_with_link(
        token: str,
        request: Annotated[PayLinkPaymentRequest | None, Body()] = None,
        *,
        service: Annotated[PayLinkService, Depends(pay_links)],
    ) -> Any:
        link = current_pay_link(router)
        payment_id = resource_id(router)
        logger.append_keys(payment_id=payment_id)
        try:
            payment = service.pay(
                link, payment_id, request.receipt_email if request is not None else None
            )
        except PaymentError as exc:
            exc.payment = None  # the link's holder gets the error, not the payment record
            raise
        count_payment(payment.status.value)
        return ok(pay_link_payment_out(payment, link.caller(), publishable_key(payment)), 201)

    return router
