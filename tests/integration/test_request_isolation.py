"""Two invocations running at the same moment in one process each see only their own request.

Lambda never runs two events in one process, but the layer must not depend on it: the local
gateway, tests and any thread pool call handlers side by side. Each test here builds resolvers
as the functions do (`build_resolver`, the `guarded` access and JSON checks, `idempotent`) and
holds two invocations at the same points with barriers, so that both have started before either
reads its request, and both have been authorised before either reads its caller: the overlap is
forced, not left to thread timing.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from clinic_payments.api.auth import STAFF, current_caller, guarded
from clinic_payments.api.errors import json_response
from clinic_payments.api.http import build_resolver
from clinic_payments.api.idempotency import idempotent, resource_id
from pydantic import BaseModel

from tests.conftest import Stack
from tests.support.apigw import body_of, claims_for, context, http_event

pytestmark = pytest.mark.integration

ROUTE = "/v1/clinics/{clinic_id}/patients/{patient_id}/probe"
BARRIER_SECONDS = 20  # a bound on a broken run, not a measurement


class ProbeRequest(BaseModel):
    amount: int
    note: str


def probe_resolver(name: str, started: threading.Barrier, authorised: threading.Barrier) -> Any:
    """A function with one money-moving route, echoing what it sees of its request."""

    def both_started(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Any:
        started.wait()
        result: Response[Any] = next_middleware(app)
        return result

    router = APIGatewayHttpRouter()

    @router.post(
        "/v1/clinics/<clinic_id>/patients/<patient_id>/probe",
        middlewares=[both_started, *guarded(*STAFF), idempotent("prb")],
    )
    def probe(clinic_id: str, patient_id: str, request: Annotated[ProbeRequest, Body()]) -> Any:
        authorised.wait()
        event = router.current_event
        return json_response(
            201,
            {
                "function": name,
                "caller": current_caller(router).sub,
                "resource_id": resource_id(router),
                "patient_id": patient_id,
                "amount": request.amount,
                "note": request.note,
                "body": json.loads(event.body or "null"),
                "key": event.headers.get("idempotency-key"),
            },
        )

    return build_resolver(router)


def probe_event(clinic: str, who: str, patient: str, body: dict[str, Any], key: str) -> Any:
    return http_event(
        "POST",
        ROUTE,
        {"clinic_id": clinic, "patient_id": patient},
        body=body,
        claims=claims_for("staff", clinic, sub=who),
        headers={"Idempotency-Key": key},
    )


REFUND = {"amount": 2000, "note": "refund of the visit"}
ADJUSTMENT = {"amount": 500, "note": "goodwill adjustment"}


def run_side_by_side(resolvers: tuple[Any, Any], events: tuple[Any, Any]) -> list[tuple[int, Any]]:
    def call(pair: tuple[Any, Any]) -> tuple[int, Any]:
        resolver, event = pair
        response = resolver.resolve(event, context())
        return int(response["statusCode"]), body_of(response)

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(call, zip(resolvers, events, strict=True)))


def barriers() -> tuple[threading.Barrier, threading.Barrier]:
    """Both invocations have started; both have been authorised."""
    started = threading.Barrier(2, timeout=BARRIER_SECONDS)
    authorised = threading.Barrier(2, timeout=BARRIER_SECONDS)
    return started, authorised


Build = Callable[[threading.Barrier, threading.Barrier], tuple[Any, Any]]


def two_functions(started: threading.Barrier, authorised: threading.Barrier) -> tuple[Any, Any]:
    return (
        probe_resolver("RefundPaymentFunction", started, authorised),
        probe_resolver("AccountCreditFunction", started, authorised),
    )


def one_function(started: threading.Barrier, authorised: threading.Barrier) -> tuple[Any, Any]:
    resolver = probe_resolver("AccountCreditFunction", started, authorised)
    return resolver, resolver


@pytest.mark.parametrize("build", [two_functions, one_function], ids=["two-functions", "one"])
def test_concurrent_invocations_each_get_their_own_body_key_caller_and_answer(
    stack: Stack, build: Build
) -> None:
    clinic = f"iso_{secrets.token_hex(4)}"
    resolvers = build(*barriers())
    refund = probe_event(clinic, "staff-refunding", "pat_r", REFUND, "key-refund-1")
    adjustment = probe_event(clinic, "staff-adjusting", "pat_a", ADJUSTMENT, "key-adjust-1")

    (refund_status, refund_body), (adjust_status, adjust_body) = run_side_by_side(
        resolvers, (refund, adjustment)
    )

    assert refund_status == 201, refund_body
    assert adjust_status == 201, adjust_body
    assert refund_body["caller"] == "staff-refunding"
    assert refund_body["patient_id"] == "pat_r"
    assert refund_body["body"] == REFUND
    assert (refund_body["amount"], refund_body["note"]) == (2000, REFUND["note"])
    assert refund_body["key"] == "key-refund-1"
    assert adjust_body["caller"] == "staff-adjusting"
    assert adjust_body["patient_id"] == "pat_a"
    assert adjust_body["body"] == ADJUSTMENT
    assert (adjust_body["amount"], adjust_body["note"]) == (500, ADJUSTMENT["note"])
    assert adjust_body["key"] == "key-adjust-1"
    assert refund_body["resource_id"] != adjust_body["resource_id"]
    assert refund_body["resource_id"].startswith("prb")

    # each key recorded its own answer: a retry of either replays it, not the other's
    replays = run_side_by_side(
        build(*barriers()),
        (
            probe_event(clinic, "staff-refunding", "pat_r", REFUND, "key-refund-1"),
            probe_event(clinic, "staff-adjusting", "pat_a", ADJUSTMENT, "key-adjust-1"),
        ),
    )
    assert replays == [(201, refund_body), (201, adjust_body)]
