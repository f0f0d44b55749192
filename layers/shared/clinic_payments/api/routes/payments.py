"""Payment routes: pay invoices (card, saved card, cash, check), read a payment and a
patient's payment history."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import PATIENT_OR_STAFF, STAFF, current_caller, guarded
from clinic_payments.api.idempotency import (
    answering,
    idempotent,
    resource_id,
    resource_is_fresh,
)
from clinic_payments.api.models import (
    CreatePaymentRequest,
    PaymentListOut,
    PaymentOut,
    RefundRequest,
)
from clinic_payments.api.observability import count_payment, logger, metrics
from clinic_payments.api.presenters import may_see_client_secret, payment_out
from clinic_payments.api.routes._common import PATIENT, ok, responses
from clinic_payments.api.services import payments, refunds, repository
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.model import Caller, Payer, Payment, PaymentMethodType
from clinic_payments.domain.payments.rules import ConsentGiven, PaymentRequest
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.refunds.service import RefundService


def publishable_key(payment: Payment) -> str | None:
    """The publishable key of the account a payment is charged to (Stripe.js needs it)."""
    if payment.stripe_account_id is None:
        return None
    account = repository().get_account(payment.clinic_id, payment.stripe_account_id, cached=True)
    return account.publishable_key if account else None


def payment_response(payment: Payment, caller: Caller) -> PaymentOut:
    """The Payment as this caller may see it. The publishable key goes with the client secret,
    so the account is read only when the secret is shown."""
    shown = may_see_client_secret(payment, caller)
    return payment_out(payment, caller, publishable_key(payment) if shown else None)


def payment_writer() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        f"{PATIENT}/payments",
        middlewares=[*guarded(*PATIENT_OR_STAFF), idempotent("pay")],
        tags=["Payments"],
        summary="Pay one or several invoices (Idempotency-Key required)",
        responses=responses(201, PaymentOut, 400, 401, 402, 403, 404, 409, 415, 422, 503),
    )
    def create_payment(
        clinic_id: str,
        patient_id: str,
        request: Annotated[CreatePaymentRequest, Body()],
        service: Annotated[PaymentService, Depends(payments)],
    ) -> Any:
        caller = current_caller(router)
        payment_id = resource_id(router)
        logger.append_keys(clinic_id=clinic_id, payment_id=payment_id)

        def render(payment: Payment) -> PaymentOut:
            return payment_response(payment, caller)

        answer = answering(router, 201, render)
        payment = service.create(
            caller,
            clinic_id,
            patient_id,
            PaymentRequest(
                method=PaymentMethodType(request.method),
                allocations=(
                    [RequestedAllocation(a.invoice_id, a.amount) for a in request.allocations]
                    if request.allocations
                    else None
                ),
                amount=request.amount,
                payment_method_id=request.payment_method_id,
                save_card=request.save_card,
                consent=(
                    ConsentGiven(request.consent.agreed, request.consent.wording_version)
                    if request.consent
                    else None
                ),
                off_session=request.off_session,
                payer=Payer(request.payer),
                reference=request.reference,
                note=request.note,
                receipt_email=request.receipt_email,
                location_id=request.location_id,
            ),
            payment_id,
            fresh=resource_is_fresh(router),
            answer=answer,
        )
        count_payment(payment.status.value)
        return ok(payment_response(payment, caller), 201)

    return router


def refund_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        f"{PATIENT}/payments/<payment_id>/refunds",
        middlewares=[*guarded(*STAFF), idempotent("ref")],
        tags=["Payments"],
        summary="Refund a payment, fully or partly (staff; Idempotency-Key)",
        responses=responses(201, PaymentOut, 400, 401, 403, 404, 409, 415, 422, 503),
    )
    def refund_payment(
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        request: Annotated[RefundRequest, Body()],
        service: Annotated[RefundService, Depends(refunds)],
    ) -> Any:
        caller = current_caller(router)
        logger.append_keys(clinic_id=clinic_id, payment_id=payment_id)
        payment = service.refund(
            caller,
            clinic_id,
            patient_id,
            payment_id,
            request.amount,
            request.reason,
            resource_id(router),
            take_credit_first=request.take_credit_first,
        )
        metrics.add_metric(name="Refund", unit="Count", value=1)
        return ok(payment_response(payment, caller), 201)

    return router


def payment_reader() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        f"{PATIENT}/payments",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Payments"],
        summary="A patient's payments, newest first",
        responses=responses(200, PaymentListOut, 401, 403, 404, 422),
    )
    def list_payments(
        clinic_id: str,
        patient_id: str,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        *,
        service: Annotated[PaymentService, Depends(payments)],
    ) -> Any:
        page = service.history(clinic_id, patient_id, limit, cursor)
        caller = current_caller(router)
        return ok(
            PaymentListOut(
                items=[payment_response(p, caller) for p in page.items],
                next_cursor=page.next_cursor,
            )
        )

    @router.get(
        f"{PATIENT}/payments/<payment_id>",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Payments"],
        summary="One payment",
        responses=responses(200, PaymentOut, 401, 403, 404),
    )
    def get_payment(
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        service: Annotated[PaymentService, Depends(payments)],
    ) -> Any:
        payment = service.get(clinic_id, patient_id, payment_id)
        caller = current_caller(router)
        return ok(payment_response(payment, caller))

    return router
