"""Invoice routes: create and void (staff), list and read (patient, staff)."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import PATIENT_OR_STAFF, STAFF, current_caller, guarded
from clinic_payments.api.models import (
    CreateInvoiceRequest,
    InvoiceListOut,
    InvoiceOut,
    InvoiceSummaryOut,
)
from clinic_payments.api.presenters import invoice_out
from clinic_payments.api.routes._common import PATIENT, ok, responses
from clinic_payments.api.services import invoices
from clinic_payments.domain.invoices.rules import NewInvoice, NewLine
from clinic_payments.domain.invoices.service import InvoiceService
from clinic_payments.domain.model import BillTo


def invoice_writer() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.post(
        f"{PATIENT}/invoices",
        middlewares=[*guarded(*STAFF)],
        tags=["Invoices"],
        summary="Create an invoice (staff)",
        responses=responses(201, InvoiceOut, 401, 403, 404, 415, 422),
    )
    def create_invoice(
        clinic_id: str,
        patient_id: str,
        request: Annotated[CreateInvoiceRequest, Body()],
        service: Annotated[InvoiceService, Depends(invoices)],
    ) -> Any:
        new = NewInvoice(
            lines=[
                NewLine(
                    description=line.description,
                    quantity=line.quantity,
                    unit_amount=line.unit_amount,
                    service_date=line.service_date.isoformat() if line.service_date else None,
                    tax_rate_id=line.tax_rate_id,
                )
                for line in request.lines
            ],
            currency=request.currency,
            due_date=request.due_date.isoformat() if request.due_date else None,
            memo=request.memo,
            bill_to=(
                BillTo(request.bill_to.name, request.bill_to.address) if request.bill_to else None
            ),
        )
        invoice = service.create(current_caller(router), clinic_id, patient_id, new)
        return ok(invoice_out(invoice), 201)

    @router.post(
        f"{PATIENT}/invoices/<invoice_id>/void",
        middlewares=[*guarded(*STAFF)],
        tags=["Invoices"],
        summary="Void an invoice with nothing paid on it (staff)",
        responses=responses(200, InvoiceOut, 401, 403, 404, 409),
    )
    def void_invoice(
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        service: Annotated[InvoiceService, Depends(invoices)],
    ) -> Any:
        return ok(invoice_out(service.void(clinic_id, patient_id, invoice_id)))

    return router


def invoice_reader() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        f"{PATIENT}/invoices",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Invoices"],
        summary="A patient's invoices, newest first, with what is outstanding",
        responses=responses(200, InvoiceListOut, 401, 403, 404, 422),
    )
    def list_invoices(
        clinic_id: str,
        patient_id: str,
        status: Annotated[str, Query(pattern="^(open|paid|void|all)$")] = "all",
        limit: Annotated[int, Query(ge=1, le=100)] = 25,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        *,
        service: Annotated[InvoiceService, Depends(invoices)],
    ) -> Any:
        page, summary = service.list(clinic_id, patient_id, status, limit, cursor)
        return ok(
            InvoiceListOut(
                items=[invoice_out(i) for i in page.items],
                next_cursor=page.next_cursor,
                summary=InvoiceSummaryOut(
                    outstanding_count=summary.outstanding_count,
                    outstanding_amount=summary.outstanding_amount,
                    currency=summary.currency,
                    available_credit=summary.available_credit,
                ),
            )
        )

    @router.get(
        f"{PATIENT}/invoices/<invoice_id>",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Invoices"],
        summary="One invoice",
        responses=responses(200, InvoiceOut, 401, 403, 404),
    )
    def get_invoice(
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        service: Annotated[InvoiceService, Depends(invoices)],
    ) -> Any:
        return ok(invoice_out(service.get(clinic_id, patient_id, invoice_id)))

    return router
