"""Account credit routes: balance and activity, apply to an invoice, staff adjustments, top-ups."""

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
    ActivityOut,
    AdjustmentRequest,
    ApplyCreditRequest,
    CreditLotOut,
    CreditOut,
    InvoiceOut,
    PaymentOut,
    TopupRequest,
)
from clinic_payments.api.presenters import activity_out, invoice_out
from clinic_payments.api.routes._common import PATIENT, ok, responses
from clinic_payments.api.routes.payments import payment_response
from clinic_payments.api.services import credit, payments
from clinic_payments.domain.credit.service import CreditService
from clinic_payments.domain.model import Payment, PaymentMethodType, PaymentPurpose
from clinic_payments.domain.payments.rules import ConsentGiven, PaymentRequest
from clinic_payments.domain.payments.service import PaymentService


def credit_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        f"{PATIENT}/credit",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Account credit"],
        summary="Credit balance and every movement, newest first",
        responses=responses(200, CreditOut, 401, 403, 404, 422),
    )
    def get_credit(
        clinic_id: str,
        patient_id: str,
        currency: Annotated[str | None, Query(pattern="^[a-z]{3}$")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        *,
        service: Annotated[CreditService, Depends(credit)],
    ) -> Any:
        found, page = service.view(clinic_id, patient_id, currency, limit, cursor)
        return ok(
            CreditOut(
                currency=str(found.currency),
                balance=found.balance,
                lots=[CreditLotOut(id=lot.id, amount=lot.amount, at=lot.at) for lot in found.lots],
                activity=[activity_out(e) for e in page.items],
                next_cursor=page.next_cursor,
            )
        )

    @router.post(
        f"{PATIENT}/invoices/<invoice_id>/apply-credit",
        middlewares=[*guarded(*PATIENT_OR_STAFF), idempotent("cra")],
        tags=["Account credit"],
        summary="Apply credit to an invoice (default: the smaller of credit and balance due)",
        responses=responses(200, InvoiceOut, 400, 401, 403, 404, 409, 422),
    )
    def apply_credit(
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        request: Annotated[ApplyCreditRequest, Body()],
        service: Annotated[CreditService, Depends(credit)],
    ) -> Any:
        invoice = service.apply(
            current_caller(router),
            clinic_id,
            patient_id,
            invoice_id,
            request.amount,
            resource_id(router),
            fresh=resource_is_fresh(router),
            answer=answering(router, 200, invoice_out),
        )
        return ok(invoice_out(invoice))

    @router.post(
        f"{PATIENT}/credit/adjustments",
        middlewares=[*guarded(*STAFF), idempotent("adj")],
        tags=["Account credit"],
        summary="A goodwill credit or a correction (staff); never below zero",
        responses=responses(201, ActivityOut, 400, 401, 403, 409, 422),
    )
    def adjust_credit(
        clinic_id: str,
        patient_id: str,
        request: Annotated[AdjustmentRequest, Body()],
        service: Annotated[CreditService, Depends(credit)],
    ) -> Any:
        entry = service.adjust(
            current_caller(router),
            clinic_id,
            patient_id,
            request.amount,
            request.reason,
            request.currency,
            resource_id(router),
        )
        return ok(activity_out(entry), 201)

    return router


def topup_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        f"{PATIENT}/credit/topups",
        middlewares=[*guarded(*PATIENT_OR_STAFF), idempotent("pay")],
        tags=["Account credit"],
        summary="Add credit by card, charged to the clinic's primary Stripe account",
        responses=responses(201, PaymentOut, 400, 401, 402, 403, 404, 409, 415, 422, 503),
    )
    def topup(
        clinic_id: str,
        patient_id: str,
        request: Annotated[TopupRequest, Body()],
        service: Annotated[PaymentService, Depends(payments)],
    ) -> Any:
        caller = current_caller(router)

        def render(payment: Payment) -> PaymentOut:
            return payment_response(payment, caller)

        # A new card is saved automatically (the Jane article): so it needs consent.
        payment = service.create(
            caller,
            clinic_id,
            patient_id,
            PaymentRequest(
                method=PaymentMethodType.CARD,
                amount=request.amount,
                payment_method_id=request.payment_method_id,
                save_card=request.payment_method_id is None,
                consent=(
                    ConsentGiven(request.consent.agreed, request.consent.wording_version)
                    if request.consent
                    else None
                ),
                location_id=request.location_id,
                receipt_email=request.receipt_email,
                purpose=PaymentPurpose.CREDIT_TOPUP,
            ),
            resource_id(router),
            fresh=resource_is_fresh(router),
            answer=answering(router, 201, render),
        )
        return ok(payment_response(payment, caller), 201)

    return router
