"""The one table from error to HTTP status, and the one error envelope.

{"error": {"code": "...", "message": "...", "details": [...]}}: nothing else, never a trace.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types

from clinic_payments.domain import errors as e


class UnsupportedMediaTypeError(e.DomainError):
    code = "unsupported_media_type"


class PayloadTooLargeError(e.DomainError):
    code = "payload_too_large"


class MalformedRequestError(e.ValidationError):
    """Not JSON at all (as opposed to JSON that fails validation)."""


_STATUS: dict[type[e.DomainError], int] = {
    MalformedRequestError: 400,
    e.ValidationError: 422,
    e.UnauthorizedError: 401,
    e.ForbiddenError: 403,
    e.NotFoundError: 404,
    e.ConflictError: 409,
    e.IdempotencyKeyRequiredError: 400,
    e.IdempotencyKeyReusedError: 422,
    e.ConsentRequiredError: 422,
    e.PaymentError: 402,
    e.PaymentProviderUnavailableError: 503,
    e.ServiceUnavailableError: 503,
    e.WebhookSignatureError: 400,
    e.PayLinkExpiredError: 410,
    e.EmailNotSentError: 503,
    UnsupportedMediaTypeError: 415,
    PayloadTooLargeError: 413,
}


def status_for(exc: e.DomainError) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def envelope(
    code: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or []}}


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps(body, separators=(",", ":")),
        headers=headers,
    )


def internal_error() -> Response[Any]:
    return json_response(500, envelope("internal_error", "Something went wrong on our side."))
