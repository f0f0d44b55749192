"""No 500 from input: Schemathesis fuzzes every operation of the OpenAPI document the local
gateway serves (`/v1/openapi.json`), over HTTP, with a token of a role the route admits.

Path parameters name real things of one seeded patient (an open invoice, a cash payment with
credit left over, a pay link), so bodies and queries reach the code behind tenancy instead of
stopping at a 403 or a 404. The run is deterministic: a fixed seed, derandomized generation and
a bounded number of examples per operation. Whatever the input, the API answers below 500,
never with a traceback or a key, and with a body the document describes for that status.

Not checked yet: that every status is documented (`status_code_conformance`). The document
leaves out the 400 of a malformed JSON body (POST invoices, PUT settings and stripe-accounts)
and every non-200 of the webhook; issue 8 says a later issue makes the document complete.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from local.template import routes
from tests.e2e.conftest import (
    ACCOUNT_ID,
    FORBIDDEN_IN_BODIES,
    HttpClinic,
    http,
    new_patient,
    seed_clinic,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from schemathesis import Case

    from local.gateway import LocalGateway
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e

FUZZ_SEED = 20261203
# Fuzzing-phase examples per operation; the coverage phase adds its own boundary cases.
EXAMPLES_PER_OPERATION = 20

CLINIC = "/v1/clinics/{clinic_id}"
PATIENT = CLINIC + "/patients/{patient_id}"
# Who may call what (api/routes: guarded(...)). Routes in neither set admit patients and staff:
# they are called as the patient and as staff in turn. Public routes get no token.
ADMIN_ROUTES = {
    ("GET", CLINIC + "/settings"),
    ("PUT", CLINIC + "/settings"),
    ("GET", CLINIC + "/stripe-accounts"),
    ("PUT", CLINIC + "/stripe-accounts/{account_id}"),
}
STAFF_ROUTES = {
    ("POST", PATIENT + "/invoices"),
    ("POST", PATIENT + "/invoices/{invoice_id}/void"),
    ("POST", PATIENT + "/invoices/{invoice_id}/payment-requests"),
    ("POST", PATIENT + "/credit/adjustments"),
    ("POST", PATIENT + "/payments/{payment_id}/refunds"),
}
PUBLIC_ROUTES = {(r.method, r.path) for r in routes() if r.public}

SETTINGS = {
    "clinic_name": "Fuzzed Physiotherapy",
    "currency": "usd",
    "accept_portal_payments": True,
    "allow_credit_topups": True,
    "email_pay_online_requests": True,
    "tax_rates": [{"id": "tax_hst", "name": "HST", "percent": "13"}],
    "locations": [{"id": "loc_main", "name": "Main Street"}],
}
LINE = {"description": "Physiotherapy session", "quantity": 1, "unit_amount": 50_000}


@dataclass
class FuzzTarget:
    """The seeded clinic the fuzzer calls, and the values its path parameters take."""

    clinic: HttpClinic
    admin_clinic: HttpClinic  # admin routes rewrite settings and keys: not the money clinic's
    patient: str
    path_values: dict[str, str]
    void_invoice_id: str  # the void route's own: voiding the open invoice would close the rest
    session: requests.Session
    keys: itertools.count[int] = field(default_factory=itertools.count)
    statuses: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    turns: itertools.count[int] = field(default_factory=itertools.count)

    def headers_for(self, method: str, path: str) -> dict[str, str]:
        route = (method, path)
        headers: dict[str, str] = {}
        if method == "POST":
            # Routes that move money refuse a POST without one; a fresh key per call, so a
            # fuzzed body is never compared with another under the same key.
            headers["Idempotency-Key"] = f"fuzz-{next(self.keys)}-{secrets.token_hex(4)}"
        if route in PUBLIC_ROUTES:
            return headers
        if route in ADMIN_ROUTES:
            token = self.admin_clinic.token("admin", sub="fuzz-admin")
        elif route in STAFF_ROUTES or next(self.turns) % 2:
            token = self.clinic.token("staff", sub="fuzz-staff")
        else:
            token = self.clinic.token("patient", (self.patient,), sub="fuzz-patient")
        headers["Authorization"] = f"Bearer {token}"
        return headers

    def clinic_for(self, method: str, path: str) -> HttpClinic:
        return self.admin_clinic if (method, path) in ADMIN_ROUTES else self.clinic

    def path_value(self, method: str, path: str, name: str) -> str | None:
        if name == "clinic_id":
            return self.clinic_for(method, path).clinic_id
        if name == "patient_id":
            return self.patient
        if name == "invoice_id" and path.endswith("/void"):
            return self.void_invoice_id
        return self.path_values.get(name)


def _seed_patient(clinic: HttpClinic, patient: str) -> dict[str, str]:
    """An open invoice, a cash payment that left credit, a pay link to the open invoice and an
    invoice to void."""
    staff = clinic.staff_token()
    reply = clinic.request(
        "PUT",
        f"/v1/clinics/{clinic.clinic_id}/settings",
        body=SETTINGS,
        token=clinic.token("admin", sub="fuzz-admin"),
    )
    assert reply.status == 200, reply
    open_invoice = clinic.create_invoice(patient, [LINE], due_date="2026-12-01")
    paid_invoice = clinic.create_invoice(patient, [{**LINE, "unit_amount": 2_000}])
    reply = clinic.pay(
        patient,
        {"method": "cash", "amount": 5_000, "allocations": [{"invoice_id": paid_invoice["id"]}]},
        token=staff,
    )
    assert reply.status == 201, reply
    payment = reply.body
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/invoices/{open_invoice['id']}/payment-requests"),
        body={"email": f"{patient}@example.com"},
        token=staff,
        headers={"Idempotency-Key": f"fuzz-seed-{secrets.token_hex(4)}"},
    )
    assert reply.status == 201, reply
    return {
        "invoice_id": open_invoice["id"],
        "payment_id": payment["id"],
        "token": reply.body["url"].rsplit("/pay/", 1)[1],
        "account_id": ACCOUNT_ID,
        "void_invoice_id": clinic.create_invoice(patient, [LINE])["id"],
    }


@pytest.fixture(scope="module")
def fuzz_target(
    stack: Stack, gateway: LocalGateway, jwt_key: rsa.RSAPrivateKey, http_clinic: HttpClinic
) -> Iterator[FuzzTarget]:
    patient = new_patient()
    values = _seed_patient(http_clinic, patient)
    void_invoice_id = values.pop("void_invoice_id")
    session = requests.Session()
    session.trust_env = False  # loopback only: no proxy from the environment
    target = FuzzTarget(
        clinic=http_clinic,
        admin_clinic=seed_clinic(stack, gateway, jwt_key),
        patient=patient,
        path_values=values,
        void_invoice_id=void_invoice_id,
        session=session,
    )
    try:
        yield target
    finally:
        session.close()
    # A fuzzer whose tokens never got past the authorizer and tenancy would test only the 401.
    stopped = {
        f"{method} {path}": sorted(seen)
        for (method, path), seen in target.statuses.items()
        if (method, path) not in PUBLIC_ROUTES and seen <= {401, 403, 404}
    }
    assert target.statuses, "the fuzzer sent nothing"
    assert stopped == {}, f"operations that never got past auth or tenancy: {stopped}"


@pytest.fixture(scope="module")
def served_schema(gateway: LocalGateway, fuzz_target: FuzzTarget) -> Any:
    config = SchemathesisConfig.from_dict(
        {
            "base-url": gateway.url,
            "seed": FUZZ_SEED,
            "generation": {
                "deterministic": True,
                "max-examples": EXAMPLES_PER_OPERATION,
                # Tokens are ours (valid, of the right role); fuzzing them only tests the 401.
                "with-security-parameters": False,
            },
            "phases": {
                # One operation at a time, each on its own: a sequence of calls is another test.
                "stateful": {"enabled": False},
                # Methods the local gateway serves; it answers TRACE and QUERY with http.server's
                # 501 before any route or handler is involved (API Gateway would answer 404).
                "coverage": {
                    "unexpected-methods": ["get", "put", "post", "delete", "options", "patch"]
                },
            },
        }
    )
    document = http("GET", f"{gateway.url}/v1/openapi.json")
    assert document.status == 200, document
    return schemathesis.openapi.from_dict(document.body, config=config)


schema = schemathesis.pytest.from_fixture("served_schema")


@schema.parametrize()
@settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error_a_traceback_or_a_key(
    case: Case, fuzz_target: FuzzTarget
) -> None:
    method, path = case.method.upper(), case.path
    clinic = fuzz_target.clinic_for(method, path)
    for name in case.path_parameters or {}:
        value = fuzz_target.path_value(method, path, name)
        if value is not None:
            case.path_parameters[name] = value
    # The case's own headers would win over call(headers=...): the token must be the one sent.
    case.headers = {**(case.headers or {}), **fuzz_target.headers_for(method, path)}
    response = case.call(session=fuzz_target.session, timeout=30)
    operation = (case.operation.method.upper(), case.operation.path)
    fuzz_target.statuses.setdefault(operation, set()).add(response.status_code)
    assert response.status_code < 500, (
        f"{method} {case.formatted_path} answered {response.status_code}: {response.text[:2000]}"
        f"\n{case.as_curl_command()}"
    )
    # A PDF is bytes, not UTF-8 (its text is WinAnsi: a fuzzed clinic name or profile with
    # accents prints as such): read it byte for byte, so a key or a trace in it is still found.
    text = (
        response.content.decode("latin-1")
        if response.headers.get("content-type", [""])[0].startswith("application/pdf")
        else response.text
    )
    found = FORBIDDEN_IN_BODIES.search(text)
    assert found is None, f"{method} {case.formatted_path} answered {found.group(0)!r}"
    for key in (clinic.secret_key, clinic.webhook_secret):
        assert key not in text, f"{method} {case.formatted_path} echoed a key"
    case.validate_response(response, checks=[response_schema_conformance])
