"""Receipts and refund receipts (JSON or PDF) and invoice PDFs (patient, staff). Documents are
ours, not Stripe's."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import PATIENT_OR_STAFF, guarded
from clinic_payments.api.errors import json_response
from clinic_payments.api.models import ErrorOut, ReceiptOut, RefundReceiptOut
from clinic_payments.api.presenters import receipt_out, refund_receipt_out
from clinic_payments.api.routes._common import PATIENT
from clinic_payments.api.services import documents
from clinic_payments.domain.documents import DocumentService
from clinic_payments.domain.printable import PrintableDocument

PDF = "application/pdf"
JSON = "application/json"


def prefers_pdf(accept: str) -> bool:
    """Whether an Accept header asks for a PDF rather than JSON (JSON unless PDF is named and
    ranked at least as high: a browser's */* gets JSON)."""
    quality = {PDF: 0.0, JSON: 0.0}
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() not in quality:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(quality[media.lower()], q)
    return quality[PDF] > 0 and quality[PDF] >= quality[JSON]


def pdf_response(document: PrintableDocument, pdf: bytes, vary: bool = False) -> Response[Any]:
    # bytes: Powertools answers base64 with isBase64Encoded, which API Gateway HTTP APIs decode.
    headers = {
        "Content-Disposition": f'inline; filename="{document.filename}"',
        "Cache-Control": "private, no-store",
    }
    if vary:
        headers["Vary"] = "Accept"
    return Response(status_code=200, content_type=PDF, body=pdf, headers=headers)


def _pdf_responses(
    *errors: int, json_model: type[ReceiptOut] | type[RefundReceiptOut] | None = None
) -> dict[int, Any]:
    content: dict[str, Any] = {PDF: {"schema": {"type": "string", "format": "binary"}}}
    if json_model is not None:
        content[JSON] = {"model": json_model}
    out: dict[int, Any] = {200: {"description": "OK", "content": content}}
    for code in errors:
        out[code] = {"description": "Error", "content": {JSON: {"model": ErrorOut}}}
    return out


def document_reader() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    def wants_pdf(output: str | None) -> bool:
        """?format decides when given; otherwise the Accept header."""
        if output:
            return output == "pdf"
        return prefers_pdf(router.current_event.headers.get("accept") or "")

    @router.get(
        f"{PATIENT}/payments/<payment_id>/receipt",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Receipts and documents"],
        summary="A succeeded payment's receipt: JSON, or PDF with Accept: application/pdf "
        "or ?format=pdf",
        responses=_pdf_responses(401, 403, 404, 409, 422, json_model=ReceiptOut),
    )
    def get_receipt(
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        output: Annotated[str | None, Query(alias="format", pattern="^(json|pdf)$")] = None,
        *,
        service: Annotated[DocumentService, Depends(documents)],
    ) -> Any:
        receipt = service.receipt(clinic_id, patient_id, payment_id)
        if wants_pdf(output):
            document, pdf = service.receipt_pdf(receipt)
            return pdf_response(document, pdf, vary=True)
        return json_response(
            200, receipt_out(receipt).model_dump(mode="json"), headers={"Vary": "Accept"}
        )

    @router.get(
        f"{PATIENT}/payments/<payment_id>/refunds/<refund_id>/receipt",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Receipts and documents"],
        summary="One refund's receipt: JSON, or PDF with Accept: application/pdf or ?format=pdf",
        responses=_pdf_responses(401, 403, 404, 409, 422, json_model=RefundReceiptOut),
    )
    def get_refund_receipt(
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        refund_id: str,
        output: Annotated[str | None, Query(alias="format", pattern="^(json|pdf)$")] = None,
        *,
        service: Annotated[DocumentService, Depends(documents)],
    ) -> Any:
        receipt = service.refund_receipt(clinic_id, patient_id, payment_id, refund_id)
        if wants_pdf(output):
            document, pdf = service.refund_receipt_pdf(receipt)
            return pdf_response(document, pdf, vary=True)
        body = refund_receipt_out(receipt).model_dump(mode="json")
        return json_response(200, body, headers={"Vary": "Accept"})

    @router.get(
        f"{PATIENT}/invoices/<invoice_id>/pdf",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Receipts and documents"],
        summary="The invoice as a PDF (lines, tax, payments, balance due)",
        responses=_pdf_responses(401, 403, 404),
    )
    def get_invoice_pdf(
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        service: Annotated[DocumentService, Depends(documents)],
    ) -> Any:
        document, pdf = service.invoice_pdf(clinic_id, patient_id, invoice_id)
        return pdf_response(document, pdf)

    return router
