"""Identity and tenancy, enforced by one mechanism: every route declares `access(...)`.

API Gateway's JWT authorizer has already checked the token's signature, issuer, audience and
expiry; its claims arrive in requestContext.authorizer.jwt.claims, each as a string (an array
claim becomes "[a b]"). This module turns them into a Caller and applies the rules:
another clinic -> 403; a role that may not do this -> 403; a patient not theirs -> 404.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Protocol

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware

from clinic_payments.domain.errors import (
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
    ValidationError,
)
from clinic_payments.domain.model import Caller, Role

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Stripe's payment method ids, as a payment's payment_method_id takes them.
PAYMENT_METHOD_ID_PATTERN = re.compile(r"pm_[A-Za-z0-9_]{1,250}")
PATH_IDS = ("clinic_id", "patient_id", "invoice_id", "payment_id", "account_id", "pm_id")
# Pay-link tokens are longer than ids (base64url, up to 512 characters): their own check.
PATH_TOKENS = ("token",)

Middleware = Callable[[APIGatewayHttpResolver, NextMiddleware], Response[Any]]


def parse_patient_ids(value: Any) -> frozenset[str]:
    if value is None or value == "":
        return frozenset()
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return frozenset(str(v) for v in parsed)
        text = text[1:-1]
    return frozenset(part for part in re.split(r"[\s,]+", text) if part)


def caller_from_event(event: dict[str, Any]) -> Caller:
    claims = (((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt") or {}).get(
        "claims"
    )
    if not isinstance(claims, dict) or not claims.get("sub"):
        raise UnauthorizedError("A valid bearer token is required.")
    try:
        role = Role(str(claims.get("role")))
    except ValueError as exc:
        raise ForbiddenError("This token carries no role this API knows.") from exc
    clinic_id = str(claims.get("clinic_id") or "")
    if not clinic_id:
        raise ForbiddenError("This token is not for a clinic.")
    return Caller(
        sub=str(claims["sub"]),
        role=role,
        clinic_id=clinic_id,
        patient_ids=parse_patient_ids(claims.get("patient_ids")),
    )


def check_path_ids(params: dict[str, str]) -> None:
    bad = [
        {"field": name, "issue": "must be 1 to 64 characters of A-Z a-z 0-9 _ -"}
        for name in PATH_IDS
        if name in params and name != "pm_id" and not ID_PATTERN.fullmatch(params[name])
    ]
    if "pm_id" in params and not PAYMENT_METHOD_ID_PATTERN.fullmatch(params["pm_id"]):
        bad.append({"field": "pm_id", "issue": "must be a Stripe payment method id (pm_...)"})
    if bad:
        raise ValidationError("Invalid identifier in the path.", bad)
    for name in PATH_TOKENS:
        if name not in params:
            continue
        # Here, not at the top: domain.paylinks brings the payment service with it, which the
        # functions without a pay-link route (health among them) need not load at init.
        from clinic_payments.domain.paylinks import TOKEN_PATTERN

        if not TOKEN_PATTERN.fullmatch(params[name]):
            # A link is all or nothing: a mangled one is as unknown as a forged one (not 422).
            raise NotFoundError("This payment link is not valid.")


def authorize(caller: Caller, params: dict[str, str], roles: frozenset[Role]) -> None:
    if params.get("clinic_id") != caller.clinic_id:
        raise ForbiddenError("This token is not for this clinic.")
    if caller.role not in roles:
        raise ForbiddenError("Your role may not do this.")
    patient_id = params.get("patient_id")
    if patient_id is not None and not caller.may_act_for(patient_id):
        # Not 403: a patient learns nothing about whether another patient exists.
        raise NotFoundError("Not found.")


def access(*roles: Role) -> Middleware:
    """Route middleware: who may call this route. Puts the Caller in app.context['caller']."""
    allowed = frozenset(roles)

    def middleware(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        caller = caller_from_event(app.current_event.raw_event)
        params = app.context.get("_route_args") or {}
        check_path_ids(params)
        authorize(caller, params, allowed)
        app.append_context(caller=caller)
        return next_middleware(app)

    middleware.__name__ = f"access_{'_'.join(sorted(r.value for r in allowed))}"
    return middleware


def public(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Route middleware for the routes with no JWT (webhook, health, docs): ids still checked."""
    check_path_ids(app.context.get("_route_args") or {})
    return next_middleware(app)


def guarded(*roles: Role) -> list[Middleware]:
    """Every authenticated route starts with: access, then the JSON edge, then validation."""
    from clinic_payments.api.edge import json_body_only, validate_request

    return [access(*roles), json_body_only, validate_request]


class HasContext(Protocol):
    @property
    def context(self) -> dict[str, Any]: ...


def current_caller(app: HasContext) -> Caller:
    caller = app.context.get("caller")
    if not isinstance(caller, Caller):
        raise UnauthorizedError("A valid bearer token is required.")
    return caller


PATIENT_OR_STAFF = (Role.PATIENT, Role.STAFF, Role.ADMIN)
STAFF = (Role.STAFF, Role.ADMIN)
ADMIN = (Role.ADMIN,)
