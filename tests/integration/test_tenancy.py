"""Identity and tenancy on every route of template.yaml, through the one access mechanism."""

from __future__ import annotations

import pytest

from local.template import routes

pytestmark = pytest.mark.integration

PROTECTED = [r for r in routes() if not r.public]
STAFF_ONLY = {
    ("POST", "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices"),
    ("POST", "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void"),
    ("POST", "/v1/clinics/{clinic_id}/patients/{patient_id}/credit/adjustments"),
    ("POST", "/v1/clinics/{clinic_id}/patients/{patient_id}/payments/{payment_id}/refunds"),
    (
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/payment-requests",
    ),
}
ADMIN_ONLY = {
    ("GET", "/v1/clinics/{clinic_id}/stripe-accounts"),
    ("PUT", "/v1/clinics/{clinic_id}/stripe-accounts/{account_id}"),
    ("GET", "/v1/clinics/{clinic_id}/settings"),
    ("PUT", "/v1/clinics/{clinic_id}/settings"),
}


def _params(path: str, patient: str = "pat_a") -> dict[str, str]:
    values = {
        "patient_id": patient,
        "invoice_id": "inv_x",
        "payment_id": "pay_x",
        "account_id": "main",
        "pm_id": "pm_x",
        "refund_id": "ref_x",
    }
    return {k: v for k, v in values.items() if "{" + k + "}" in path}


def _id(route) -> str:
    return f"{route.method} {route.path}"


def test_every_protected_route_is_covered():
    assert len(PROTECTED) >= 10
    for key in STAFF_ONLY | ADMIN_ONLY:
        assert key in {(r.method, r.path) for r in PROTECTED}


@pytest.mark.parametrize("route", PROTECTED, ids=_id)
def test_no_claims_is_401(clinic, route):
    status, body = clinic.call(
        route.method, route.path, _params(route.path), authenticated=False, body={}
    )
    assert (status, body["error"]["code"]) == (401, "unauthorized")


@pytest.mark.parametrize("route", PROTECTED, ids=_id)
def test_a_token_of_another_clinic_is_403(clinic, route):
    claims = {"sub": "intruder", "clinic_id": "other_clinic", "role": "admin", "patient_ids": []}
    status, body = clinic.call(
        route.method, route.path, _params(route.path), claims=claims, body={}
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")


PATIENT_ROUTES = [
    r for r in PROTECTED if "{patient_id}" in r.path and (r.method, r.path) not in STAFF_ONLY
]


@pytest.mark.parametrize("route", PATIENT_ROUTES, ids=_id)
def test_a_patient_asking_for_another_patient_gets_404(clinic, route):
    status, body = clinic.call(
        route.method,
        route.path,
        _params(route.path, patient="pat_b"),
        role="patient",
        patient_ids=("pat_a",),
        body={},
        headers={"Idempotency-Key": "k"},
    )
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    "route", [r for r in PROTECTED if (r.method, r.path) in STAFF_ONLY | ADMIN_ONLY], ids=_id
)
def test_a_patient_on_a_staff_action_is_403(clinic, route):
    status, body = clinic.call(
        route.method,
        route.path,
        _params(route.path),
        role="patient",
        patient_ids=("pat_a",),
        body={},
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    "route", [r for r in PROTECTED if (r.method, r.path) in ADMIN_ONLY], ids=_id
)
def test_staff_on_an_admin_action_is_403(clinic, route):
    status, body = clinic.call(route.method, route.path, _params(route.path), role="staff", body={})
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_an_unknown_role_is_403(clinic):
    claims = {"sub": "x", "clinic_id": clinic.clinic_id, "role": "superuser", "patient_ids": []}
    status, body = clinic.call(
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
        {"patient_id": "pat_a"},
        claims=claims,
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_a_representative_may_act_for_each_patient_they_represent(clinic):
    for patient in ("pat_a", "pat_b"):
        clinic.create_invoice(patient, 1000)
        status, body = clinic.call(
            "GET",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
            {"patient_id": patient},
            role="patient",
            patient_ids=("pat_a", "pat_b"),
        )
        assert status == 200, body
        assert len(body["items"]) == 1


def test_a_patient_cannot_read_another_patients_invoice_by_id(clinic):
    invoice = clinic.create_invoice("pat_b", 1000)
    for patient in ("pat_a", "pat_b"):
        status, body = clinic.call(
            "GET",
            "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}",
            {"patient_id": patient, "invoice_id": invoice["id"]},
            role="patient",
            patient_ids=("pat_a",),
        )
        assert status == 404, body


def test_invalid_ids_in_the_path_are_422(clinic):
    status, body = clinic.call(
        "GET",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices",
        {"patient_id": "pat a!"},
        role="staff",
    )
    assert status in (404, 422), body
    assert body["error"]["code"] in ("validation_error", "not_found")
