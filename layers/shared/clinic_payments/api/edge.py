"""What every JSON route checks before its body is validated: JSON, UTF-8, and not too big."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)

from clinic_payments.api.errors import (
    MalformedRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)

MAX_BODY_BYTES = 64 * 1024
BODY_METHODS = ("POST", "PUT", "PATCH")
# No request body of this API nests deeper than a few levels. Python's json and pydantic recurse
# once per level: thousands of levels end in RecursionError (a 500) before validation can refuse.
MAX_JSON_DEPTH = 32


def nests_too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays and objects nest more than `limit` deep (brackets inside strings do not
    count). Linear, without recursion; skipped when the body has too few brackets to matter."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _raw_body(app: APIGatewayHttpResolver) -> bytes:
    event = app.current_event
    body = event.body or ""
    if not event.is_base64_encoded:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequestError("The body could not be read.") from exc


def json_body_only(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """415 for anything but application/json (form bodies included: Powertools would parse
    them), 413 above the limit, 400 for a body that is not UTF-8 text or nests too deep."""
    event = app.current_event
    if event.request_context.http.method in BODY_METHODS and event.body:
        raw = _raw_body(app)
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"The body may not exceed {MAX_BODY_BYTES} bytes.")
        media_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            raise UnsupportedMediaTypeError("Send JSON: Content-Type: application/json.")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedRequestError("The body is not UTF-8 text.") from exc
        if nests_too_deep(text):
            raise MalformedRequestError(
                f"The body nests arrays or objects more than {MAX_JSON_DEPTH} levels deep."
            )
    return next_middleware(app)


# Powertools validates requests before any route middleware when validation is enabled on the
# resolver; a caller of another clinic would then learn our validation errors before being
# refused. Validation is therefore off on the resolver and runs per route, after the access
# check and the edge checks above.
validate_request = OpenAPIRequestValidationMiddleware()
