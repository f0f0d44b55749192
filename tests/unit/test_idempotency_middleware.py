"""The Idempotency-Key middleware (api/idempotency.py) and the answer a request's last write
records.

A money POST's answer is normally recorded by the request's own last transaction (the
Answering port: a settlement, attach_intent_answered, apply_credit), and the middleware then
writes nothing more. It completes the key itself only when the final HTTP response is not the
answer that was recorded. These tests drive requests through the production resolver
(build_resolver) with the in-memory fakes, and give the middleware its own view of the
repository, so its writes are told apart from the transaction's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.exceptions import ClientError
from clinic_payments import wiring
from clinic_payments.api import services
from clinic_payments.api.auth import access
from clinic_payments.api.errors import json_response
from clinic_payments.api.http import build_resolver
from clinic_payments.api.idempotency import answering, idempotent, resource_id
from clinic_payments.api.routes import payments as payment_routes
from clinic_payments.domain.errors import ConflictError, ServiceUnavailableError
from clinic_payments.domain.model import PaymentStatus, Role
from clinic_payments.domain.ports import IdempotencyRecord, RequestAnswer
from pydantic import BaseModel

from tests.support.apigw import claims_for, context, http_event
from tests.unit.fakes import CLINIC, PATIENT, InMemoryPaymentsRepository, World, make_world

pytestmark = pytest.mark.unit

PAY = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments"
THINGS = "/v1/clinics/{clinic_id}/things"


class MiddlewareRequests:
    """The repository as the middleware sees it (`services.repository()`): the fake's idempotency
    records, with each write the middleware makes itself kept in order. The routes and services
    write through the fake directly, so a write here is never the transaction's."""

    def __init__(self, repo: InMemoryPaymentsRepository) -> None:
        self.repo = repo
        self.completed: list[tuple[int, str]] = []
        self.released: list[str] = []

    def begin_request(
        self, scope: str, request_hash: str, resource_id: str, lock_seconds: int
    ) -> tuple[IdempotencyRecord, bool]:
        return self.repo.begin_request(scope, request_hash, resource_id, lock_seconds)

    def complete_request(self, scope: str, status_code: int, body: str) -> None:
        self.completed.append((status_code, body))
        self.repo.complete_request(scope, status_code, body)

    def release_request(self, scope: str) -> None:
        self.released.append(scope)
        self.repo.release_request(scope)


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def replayed(self) -> bool:
        return self.headers.get("Idempotent-Replayed") == "true"


@dataclass
class Api:
    world: World
    requests: MiddlewareRequests
    app: APIGatewayHttpResolver

    def post(
        self,
        route: str,
        body: dict[str, Any],
        key: str,
        *,
        params: dict[str, str] | None = None,
        role: str = "staff",
    ) -> Answer:
        patient_ids = (PATIENT,) if role == "patient" else ()
        event = http_event(
            "POST",
            route,
            {"clinic_id": CLINIC, **(params or {})},
            body=body,
            claims=claims_for(role, CLINIC, patient_ids),
            headers={"Idempotency-Key": key},
        )
        response = self.app.resolve(event, cast(LambdaContext, context()))
        return Answer(int(response["statusCode"]), str(response["body"]), response["headers"])

    def pay(self, body: dict[str, Any], key: str, *, role: str = "staff") -> Answer:
        return self.post(PAY, body, key, params={"patient_id": PATIENT}, role=role)

    def stored_answers(self) -> list[tuple[bool, int | None, str | None]]:
        """Each idempotency record: (completed, status, body)."""
        return [(i.completed, i.status_code, i.body) for i in self.world.repo.idempotency.values()]


def on_the_fakes(
    monkeypatch: pytest.MonkeyPatch, *routers: APIGatewayHttpRouter, world: World | None = None
) -> Api:
    """The routers on the production resolver, their services on the fakes: the container is
    one whose repository and payment service are the world's, and the middleware gets its own
    view of the repository."""
    world = world or make_world()
    built = wiring.Container(wiring.RuntimeSettings(table_name="unused", clinic_secrets_prefix="-"))
    # _built parts are read from the instance's dict first: these are what the container holds.
    built.__dict__.update(repository=world.repo, payments=world.payments)
    monkeypatch.setattr(wiring, "_container", built)
    requests = MiddlewareRequests(world.repo)
    monkeypatch.setattr(services, "repository", lambda: requests)
    return Api(world, requests, build_resolver(*routers))


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Api:
    return on_the_fakes(monkeypatch, payment_routes.payment_writer())


# -- (a) the answer recorded by the request's last write is the response: nothing more ---------


def portal_payment(api: Api) -> dict[str, Any]:
    """A new card, confirmed later in the portal: the answer is recorded with the intent's
    link (attach_intent_answered)."""
    invoice = api.world.invoice(4200)
    return {"method": "card", "allocations": [{"invoice_id": invoice.id}]}


def saved_card_payment(api: Api) -> dict[str, Any]:
    """A saved card charged at once: the answer is recorded by the settlement's transaction."""
    card = api.world.saved_card()
    invoice = api.world.invoice(4200)
    allocations = [{"invoice_id": invoice.id}]
    return {"method": "card", "payment_method_id": card, "allocations": allocations}


@pytest.mark.parametrize(
    ("make_body", "role", "status"),
    [
        pytest.param(portal_payment, "patient", "requires_payment_method", id="intent-link"),
        pytest.param(saved_card_payment, "staff", "succeeded", id="settlement"),
    ],
)
def test_an_answer_recorded_by_the_last_write_is_not_written_again(
    api: Api, make_body: Callable[[Api], dict[str, Any]], role: str, status: str
) -> None:
    body = make_body(api)

    first = api.pay(body, "key-a", role=role)

    assert (first.status, first.json["status"]) == (201, status), first.body
    assert not first.replayed
    # The transaction recorded exactly what the caller got; the middleware wrote nothing.
    assert api.stored_answers() == [(True, 201, first.body)]
    assert api.requests.completed == []
    assert api.requests.released == []

    again = api.pay(body, "key-a", role=role)

    assert (again.status, again.body) == (first.status, first.body)
    assert again.replayed
    assert api.requests.completed == []
    assert len(api.world.gateway.calls_named("create_payment_intent")) == 1
    assert len(api.world.repo.all_payments()) == 1


# -- (b) the response differs from the recorded answer: the middleware writes the response -----


@dataclass(frozen=True)
class Thing:
    id: str
    label: str


class ThingOut(BaseModel):
    id: str
    label: str


def thing_out(thing: Thing) -> ThingOut:
    return ThingOut(id=thing.id, label=thing.label)


@dataclass
class ThingStore:
    """A resource whose one write records the request's answer with it, as the repository's
    transactions do (the fake's own _answer: the idempotency record completed in place)."""

    repo: InMemoryPaymentsRepository
    things: dict[str, Thing] = field(default_factory=dict)
    writes: int = 0

    def put(self, thing: Thing, answer: RequestAnswer) -> None:
        self.writes += 1
        self.things[thing.id] = thing
        self.repo.complete_request(answer.scope, answer.status_code, answer.body)


def thing_router(
    store: ThingStore, respond: Callable[[Thing], Response[Any]]
) -> APIGatewayHttpRouter:
    """POST /things behind idempotent(): records a 201 ThingOut with its write (the Answering
    port), then answers with `respond(thing)`."""
    router = APIGatewayHttpRouter()

    @router.post(
        "/v1/clinics/<clinic_id>/things", middlewares=[access(Role.STAFF), idempotent("thg")]
    )
    def create_thing(clinic_id: str) -> Any:
        thing = Thing(resource_id(router), "made")
        answer = answering(router, 201, thing_out)
        recorded = answer(thing)
        store.put(thing, recorded)
        answer.committed(recorded)
        return respond(thing)

    return router


def as_recorded(thing: Thing) -> Response[Any]:
    return json_response(201, thing_out(thing).model_dump())


def wrapped(thing: Thing) -> Response[Any]:
    return json_response(201, {"thing": thing_out(thing).model_dump(), "notice": "wrapped"})


def renamed(thing: Thing) -> Response[Any]:
    return json_response(201, ThingOut(id=thing.id, label="renamed after the write").model_dump())


def another_status(thing: Thing) -> Response[Any]:
    return json_response(200, thing_out(thing).model_dump())


def test_a_purpose_built_route_answering_as_recorded_writes_nothing_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The control of the next test: the same route, its response the recorded answer."""
    world = make_world()
    store = ThingStore(world.repo)
    api = on_the_fakes(monkeypatch, thing_router(store, as_recorded), world=world)

    first = api.post(THINGS, {"label": "x"}, "key-t")

    assert first.status == 201
    assert api.requests.completed == []
    assert api.stored_answers() == [(True, 201, first.body)]


@pytest.mark.parametrize(
    "respond",
    [
        pytest.param(wrapped, id="body-wrapped"),
        pytest.param(renamed, id="body-changed"),
        pytest.param(another_status, id="status-changed"),
    ],
)
def test_a_response_that_differs_from_the_recorded_answer_is_what_a_replay_returns(
    monkeypatch: pytest.MonkeyPatch, respond: Callable[[Thing], Response[Any]]
) -> None:
    world = make_world()
    store = ThingStore(world.repo)
    api = on_the_fakes(monkeypatch, thing_router(store, respond), world=world)

    first = api.post(THINGS, {"label": "x"}, "key-t")

    [thing] = store.things.values()
    recorded = thing_out(thing).model_dump_json()
    assert (first.status, first.body) != (201, recorded)  # the response is not the recorded one
    # The middleware wrote the final response, once, over the answer the write recorded.
    assert api.requests.completed == [(first.status, first.body)]
    assert api.stored_answers() == [(True, first.status, first.body)]

    again = api.post(THINGS, {"label": "x"}, "key-t")

    assert (again.status, again.body) == (first.status, first.body)
    assert again.headers["Content-Type"] == "application/json"
    assert again.replayed
    assert store.writes == 1  # the replay ran nothing
    assert api.requests.completed == [(first.status, first.body)]


def refused_after_the_write(thing: Thing) -> Response[Any]:
    raise ConflictError(f"refused after {thing.id} was written")


def test_a_refusal_after_the_recorded_answer_answers_what_was_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write committed with its 201, then the route raised a 4xx: the first caller gets the
    recorded 201 (the money moved), the 4xx is never written over it, and a replay agrees."""
    world = make_world()
    store = ThingStore(world.repo)
    api = on_the_fakes(monkeypatch, thing_router(store, refused_after_the_write), world=world)

    first = api.post(THINGS, {"label": "x"}, "key-r")

    [thing] = store.things.values()
    assert (first.status, first.body) == (201, thing_out(thing).model_dump_json())
    assert api.requests.completed == []
    assert api.stored_answers() == [(True, 201, first.body)]

    again = api.post(THINGS, {"label": "x"}, "key-r")

    assert (again.status, again.body) == (201, first.body)
    assert again.replayed
    assert store.writes == 1


# -- (c) the request fails after its answer was recorded -----------------------------------------


def throttled() -> Exception:
    """What botocore raises once its retries on a throttled DynamoDB are spent."""
    response: Any = {
        "Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }
    return ClientError(response, "GetItem")


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        # Any other exception: the middleware releases the key and re-raises; the resolver's
        # handler answers 500.
        pytest.param(lambda: RuntimeError("metrics sink down"), 500, "internal_error", id="500"),
        # A DomainError: the middleware renders it itself (503) and releases the key.
        pytest.param(
            lambda: ServiceUnavailableError("busy"), 503, "service_unavailable", id="domain-503"
        ),
        # DynamoDB throttled past botocore's retries: the resolver answers 503.
        pytest.param(throttled, 503, "service_unavailable", id="aws-503"),
    ],
)
def test_a_failure_after_the_settlement_recorded_its_answer_replays_the_settled_payment(
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[], Exception],
    status: int,
    code: str,
) -> None:
    """The card was charged and the settlement committed with its 201; the route then failed.
    The first caller got a 5xx (an unknown outcome: retry with the same key). The retry must
    learn the truth, the succeeded payment, and must not charge again: the release of a
    completed key changes nothing, and the 5xx is never written over the recorded answer."""
    body = saved_card_payment(api)

    def fail(_status: str) -> None:
        raise failure()

    with monkeypatch.context() as patched:
        patched.setattr(payment_routes, "count_payment", fail)  # after service.create returned
        first = api.pay(body, "key-c")

    assert (first.status, first.json["error"]["code"]) == (status, code), first.body
    [payment] = api.world.repo.all_payments()
    assert payment.status is PaymentStatus.SUCCEEDED
    assert api.requests.completed == []  # the 5xx was not recorded
    assert len(api.requests.released) == 1  # released: a no-op on a completed key
    [(completed, recorded_status, recorded_body)] = api.stored_answers()
    assert (completed, recorded_status) == (True, 201)

    again = api.pay(body, "key-c")

    assert (again.status, again.body) == (201, recorded_body)
    assert again.replayed
    assert again.json["id"] == payment.id
    assert again.json["status"] == "succeeded"
    assert len(api.world.gateway.calls_named("create_payment_intent")) == 1
    assert len(api.world.repo.all_payments()) == 1
    assert api.world.stored_invoice(payment.allocations[0].invoice_id).amount_paid == 4200
