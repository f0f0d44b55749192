"""Identity and tenancy at the edge: claims -> Caller, who may do what, who sees a secret,
and the one table from domain error to HTTP status."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from clinic_payments.api import errors as api_errors
from clinic_payments.api.auth import (
    authorize,
    caller_from_event,
    check_path_ids,
    parse_patient_ids,
)
from clinic_payments.api.errors import status_for
from clinic_payments.api.presenters import may_see_client_secret, payment_out
from clinic_payments.domain import errors as e
from clinic_payments.domain.model import (
    Actor,
    Caller,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    Role,
)

from tests.unit.fakes import CLINIC, PATIENT, T0

pytestmark = pytest.mark.unit

PATIENT_ROLES = frozenset({Role.PATIENT, Role.STAFF, Role.ADMIN})
STAFF_ROLES = frozenset({Role.STAFF, Role.ADMIN})


def event_with(claims: dict[str, Any] | None) -> dict[str, Any]:
    context: dict[str, Any] = {"http": {"method": "GET"}}
    if claims is not None:
        context["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return {"version": "2.0", "requestContext": context}


def caller(role: Role, sub: str = "user-1", *patient_ids: str, clinic_id: str = CLINIC) -> Caller:
    return Caller(sub=sub, role=role, clinic_id=clinic_id, patient_ids=frozenset(patient_ids))


# -- patient_ids claim ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        pytest.param(["pat_1", "pat_2"], {"pat_1", "pat_2"}, id="list"),
        pytest.param('["pat_1", "pat_2"]', {"pat_1", "pat_2"}, id="json-string"),
        pytest.param("[pat_1 pat_2]", {"pat_1", "pat_2"}, id="api-gateway-array"),
        pytest.param("[pat_1]", {"pat_1"}, id="api-gateway-one"),
        pytest.param("pat_1,pat_2", {"pat_1", "pat_2"}, id="comma"),
        pytest.param("pat_1, pat_2", {"pat_1", "pat_2"}, id="comma-space"),
        pytest.param("pat_1", {"pat_1"}, id="single"),
        pytest.param("", set(), id="empty-string"),
        pytest.param("[]", set(), id="empty-array"),
        pytest.param([], set(), id="empty-list"),
        pytest.param(None, set(), id="missing"),
    ],
)
def test_parse_patient_ids_reads_every_form_of_the_claim(claim: Any, expected: set[str]) -> None:
    assert parse_patient_ids(claim) == frozenset(expected)


# -- claims -> caller ---------------------------------------------------------------------------


def test_a_caller_is_built_from_the_authorizers_claims() -> None:
    built = caller_from_event(
        event_with(
            {"sub": "u-7", "clinic_id": CLINIC, "role": "patient", "patient_ids": "[pat_1 pat_2]"}
        )
    )
    assert built == Caller("u-7", Role.PATIENT, CLINIC, frozenset({"pat_1", "pat_2"}))


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param(None, id="no-authorizer"),
        pytest.param({}, id="no-claims"),
        pytest.param({"clinic_id": CLINIC, "role": "staff"}, id="no-sub"),
        pytest.param({"sub": "", "clinic_id": CLINIC, "role": "staff"}, id="empty-sub"),
    ],
)
def test_missing_claims_are_unauthorized(claims: dict[str, Any] | None) -> None:
    with pytest.raises(e.UnauthorizedError):
        caller_from_event(event_with(claims))


@pytest.mark.parametrize("role", ["superuser", "", "Staff", None])
def test_an_unknown_role_is_forbidden(role: str | None) -> None:
    claims = {"sub": "u-1", "clinic_id": CLINIC, "role": role}
    with pytest.raises(e.ForbiddenError):
        caller_from_event(event_with(claims))


def test_a_token_without_a_clinic_is_forbidden() -> None:
    with pytest.raises(e.ForbiddenError):
        caller_from_event(event_with({"sub": "u-1", "role": "staff"}))


# -- authorize ----------------------------------------------------------------------------------


def test_another_clinics_path_is_forbidden() -> None:
    with pytest.raises(e.ForbiddenError):
        authorize(caller(Role.ADMIN), {"clinic_id": "clinic_b"}, PATIENT_ROLES)


def test_a_path_without_a_clinic_is_forbidden() -> None:
    with pytest.raises(e.ForbiddenError):
        authorize(caller(Role.ADMIN), {}, PATIENT_ROLES)


def test_a_role_not_allowed_on_the_route_is_forbidden() -> None:
    patient = caller(Role.PATIENT, "u-1", PATIENT)
    with pytest.raises(e.ForbiddenError):
        authorize(patient, {"clinic_id": CLINIC, "patient_id": PATIENT}, STAFF_ROLES)


def test_a_patient_who_is_not_theirs_is_not_found() -> None:
    patient = caller(Role.PATIENT, "u-1", PATIENT)
    with pytest.raises(e.NotFoundError):
        authorize(patient, {"clinic_id": CLINIC, "patient_id": "pat_someone"}, PATIENT_ROLES)


def test_a_patient_may_act_for_themselves_and_those_they_represent() -> None:
    parent = caller(Role.PATIENT, "u-1", PATIENT, "pat_child")
    for patient_id in (PATIENT, "pat_child"):
        authorize(parent, {"clinic_id": CLINIC, "patient_id": patient_id}, PATIENT_ROLES)


@pytest.mark.parametrize("role", [Role.STAFF, Role.ADMIN])
def test_staff_may_act_for_any_patient_of_their_clinic(role: Role) -> None:
    authorize(caller(role), {"clinic_id": CLINIC, "patient_id": "pat_any"}, PATIENT_ROLES)


def test_staff_of_another_clinic_may_not_act_for_its_patients() -> None:
    other = caller(Role.STAFF, clinic_id="clinic_b")
    with pytest.raises(e.ForbiddenError):
        authorize(other, {"clinic_id": CLINIC, "patient_id": PATIENT}, PATIENT_ROLES)


# -- path ids -----------------------------------------------------------------------------------


def test_well_formed_path_ids_pass() -> None:
    check_path_ids(
        {"clinic_id": "clinic_a", "patient_id": "pat-1", "payment_id": "pay_" + "x" * 60}
    )


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("../etc", id="traversal"),
        pytest.param("pat#1", id="key-separator"),
        pytest.param("pat 1", id="space"),
        pytest.param("pat_1\n", id="trailing-newline"),
    ],
)
def test_malformed_path_ids_are_refused_with_the_field_named(bad: str) -> None:
    with pytest.raises(e.ValidationError) as caught:
        check_path_ids({"clinic_id": "clinic_a", "patient_id": bad})
    assert [d["field"] for d in caught.value.details] == ["patient_id"]


def test_a_stripe_payment_method_id_passes_as_pm_id() -> None:
    check_path_ids({"clinic_id": "clinic_a", "pm_id": "pm_1QexampleVisa4242"})


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("card_1234", id="not-a-payment-method"),
        pytest.param("pm_", id="prefix-only"),
        pytest.param("pm_1-2", id="hyphen"),
        pytest.param("pm_1#CARD", id="key-separator"),
        pytest.param("pm_1\n", id="trailing-newline"),
    ],
)
def test_a_malformed_pm_id_is_refused(bad: str) -> None:
    with pytest.raises(e.ValidationError) as caught:
        check_path_ids({"clinic_id": "clinic_a", "pm_id": bad})
    assert [d["field"] for d in caught.value.details] == ["pm_id"]


def test_path_params_that_are_not_ids_are_not_checked() -> None:
    check_path_ids({"anything_else": "not an id!"})


# -- who sees a client secret -------------------------------------------------------------------


def payment(
    status: PaymentStatus = PaymentStatus.REQUIRES_PAYMENT_METHOD, by: str = "desk-1"
) -> Payment:
    return Payment(
        id="pay_1",
        clinic_id=CLINIC,
        patient_id=PATIENT,
        status=status,
        method=PaymentMethodType.CARD,
        purpose=PaymentPurpose.INVOICE,
        amount=5000,
        fee_amount=0,
        currency="usd",
        allocations=[],
        credit_amount=5000,
        created_by=Actor(by, Role.STAFF),
        created_at=T0,
        client_secret="pi_1_secret_abc",
    )


def test_the_patient_who_owns_the_payment_sees_its_client_secret() -> None:
    assert may_see_client_secret(payment(), caller(Role.PATIENT, "u-9", PATIENT))


def test_another_patient_does_not_see_the_client_secret() -> None:
    assert not may_see_client_secret(payment(), caller(Role.PATIENT, "u-9", "pat_other"))


def test_the_staff_member_who_started_it_sees_the_client_secret() -> None:
    assert may_see_client_secret(payment(by="desk-1"), caller(Role.STAFF, "desk-1"))


@pytest.mark.parametrize("role", [Role.STAFF, Role.ADMIN])
def test_other_staff_do_not_see_the_client_secret(role: Role) -> None:
    assert not may_see_client_secret(payment(by="desk-1"), caller(role, "desk-2"))


@pytest.mark.parametrize("status", [PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED])
def test_nobody_sees_the_client_secret_of_a_final_payment(status: PaymentStatus) -> None:
    assert not may_see_client_secret(payment(status), caller(Role.PATIENT, "u-9", PATIENT))
    assert not may_see_client_secret(payment(status, by="desk-1"), caller(Role.STAFF, "desk-1"))


def test_without_a_caller_nobody_sees_the_client_secret() -> None:
    assert not may_see_client_secret(payment(), None)


def test_the_response_carries_the_secret_only_for_its_owner() -> None:
    owner = payment_out(payment(), caller(Role.PATIENT, "u-9", PATIENT), "pk_test_1")
    other = payment_out(payment(), caller(Role.STAFF, "desk-2"), "pk_test_1")
    assert (owner.client_secret, owner.publishable_key) == ("pi_1_secret_abc", "pk_test_1")
    assert (other.client_secret, other.publishable_key) == (None, None)


# -- one table from error to status ----------------------------------------------------------

# DESIGN.md's codes and statuses, and the edge's own.
STATUS_BY_CODE = {
    "validation_error": 422,
    "amount_too_small": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "insufficient_credit": 409,
    "request_in_progress": 409,
    "idempotency_key_reused": 422,
    "idempotency_key_required": 400,
    "consent_required": 422,
    "card_declined": 402,
    "payment_failed": 402,
    "payment_requires_action": 402,
    "payment_provider_unavailable": 503,
    "service_unavailable": 503,
    "invalid_signature": 400,
    "unsupported_media_type": 415,
    "payload_too_large": 413,
    "internal_error": 500,
    "payment_not_succeeded": 409,
    "invoice_not_payable": 409,
    "pay_link_expired": 410,
    "email_unavailable": 503,
}
# Where the status is not the code's: a body that is not JSON at all is a 400.
STATUS_BY_CLASS: dict[type[e.DomainError], int] = {api_errors.MalformedRequestError: 400}


def all_domain_errors() -> list[type[e.DomainError]]:
    found: list[type[e.DomainError]] = []
    pending: list[type[e.DomainError]] = [e.DomainError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    # Only the project's own errors (not classes a test module may define).
    return sorted(
        (c for c in set(found) if c.__module__.startswith("clinic_payments.")),
        key=lambda c: c.__name__,
    )


def test_the_table_is_checked_for_every_error_the_project_declares() -> None:
    declared = {
        obj
        for module in (e, api_errors)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, e.DomainError)
    }
    assert len(declared) > 15
    assert declared <= set(all_domain_errors())


@pytest.mark.parametrize("error", all_domain_errors(), ids=lambda c: c.__name__)
def test_each_domain_error_maps_to_the_status_of_its_code(error: type[e.DomainError]) -> None:
    exc = error("message")
    expected = STATUS_BY_CLASS.get(error, STATUS_BY_CODE.get(exc.code))
    assert expected is not None, f"{error.__name__} has code {exc.code!r}, which has no status"
    assert status_for(exc) == expected, f"{error.__name__} ({exc.code}) -> {status_for(exc)}"
