"""The resolver every function uses: validation on, debug off, one error envelope."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from clinic_payments.api.errors import (
    UnsupportedMediaTypeError,
    envelope,
    internal_error,
    json_response,
    status_for,
)
from clinic_payments.api.observability import logger
from clinic_payments.api.request_scope import RequestScopedResolver
from clinic_payments.domain.errors import DomainError, PaymentError, ServiceUnavailableError


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
        # A route's single body model is named in loc after "body": drop the argument name.
        if parts and parts[0] in ("request", "body_model"):
            parts = parts[1:]
    return ".".join(parts) or "body"


def validation_details(errors: list[Any]) -> list[dict[str, Any]]:
    details = []
    for err in errors:
        details.append(
            {"field": _field(err.get("loc", ())), "issue": str(err.get("msg") or err.get("type"))}
        )
    return details


# What botocore raises once its own retries are spent on a busy or failing service
# (DynamoDB throttling, a 5xx, a connection or read timeout): the request may be retried.
_TRANSIENT_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "TransactionConflictException",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


def is_transient_aws_error(exc: Exception) -> bool:
    if isinstance(exc, (ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)):
        return True
    if isinstance(exc, EndpointConnectionError):
        return True
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = exc.response.get("Error", {}).get("Code")
        if code == "TransactionCanceledException":
            # Cancelled only because another transaction held an item (or throttling): retry.
            # A failed condition is the adapter's to translate; it is no outage.
            reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            busy = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
            return (
                bool(reasons)
                and all(r in busy or r == "None" for r in reasons)
                and any(r in busy for r in reasons)
            )
        return code in _TRANSIENT_CODES or status >= 500
    return False


def error_response(app: APIGatewayHttpResolver, exc: DomainError) -> Response[Any]:
    """The envelope for a domain error; a payment error carries the Payment as it stands."""
    body = envelope(exc.code, exc.message, exc.details)
    if isinstance(exc, PaymentError) and exc.payment is not None:
        from clinic_payments.api.presenters import payment_out

        caller = app.context.get("caller")
        body["error"]["payment"] = payment_out(exc.payment, caller).model_dump(mode="json")
    return json_response(status_for(exc), body)


def build_resolver(*routers: APIGatewayHttpRouter) -> APIGatewayHttpResolver:
    # debug=False always: Powertools' debug mode writes tracebacks into 500 responses.
    # Validation runs per route after the access check (see auth.guarded), not globally.
    # Request-scoped: the event and context belong to the invocation, not the process.
    app = RequestScopedResolver(enable_validation=False, debug=False)
    for router in routers:
        app.include_router(router)

    @app.exception_handler(DomainError)
    def _domain(exc: DomainError) -> Response[Any]:
        return error_response(app, exc)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response[Any]:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            return json_response(400, envelope("validation_error", "The body is not valid JSON."))
        return json_response(
            422,
            envelope("validation_error", "The request is not valid.", validation_details(errors)),
        )

    @app.exception_handler(RequestUnsupportedContentType)
    def _media(_exc: RequestUnsupportedContentType) -> Response[Any]:
        return error_response(
            app, UnsupportedMediaTypeError("Send JSON: Content-Type: application/json.")
        )

    @app.not_found
    def _not_found(_exc: Exception) -> Response[Any]:
        return json_response(404, envelope("not_found", "No such route."))

    @app.exception_handler(ClientError)
    @app.exception_handler(BotoCoreError)
    def _aws(exc: Exception) -> Response[Any]:
        if not is_transient_aws_error(exc):
            return _internal(exc)
        logger.warning("AWS busy or unreachable", extra={"error_type": type(exc).__name__})
        return error_response(
            app,
            ServiceUnavailableError(
                "The service is busy; nothing was lost. Retry with the same Idempotency-Key."
            ),
        )

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response[Any]:
        return _internal(exc)

    return app


def _internal(exc: Exception) -> Response[Any]:
    logger.exception("unhandled error", extra={"error_type": type(exc).__name__})
    return internal_error()
