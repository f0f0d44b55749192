"""Errors over HTTP: bad bodies, bad amounts, unknown routes; and the operations routes."""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

import pytest

from local.template import routes
from tests.e2e.conftest import (
    FORBIDDEN_IN_BODIES,
    HttpClinic,
    Reply,
    assert_envelope,
    http,
    new_patient,
    seed_clinic,
)
from tests.support.mailbox import sent_emails

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from local.gateway import LocalGateway
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e

LINE = {"description": "Physiotherapy session", "quantity": 1, "unit_amount": 12000}
DOCS_ROUTES = {"/v1/docs", "/v1/openapi.json"}


def post_invoice(
    clinic: HttpClinic,
    patient: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Reply:
    return clinic.request(
        "POST",
        clinic.patient_path(patient, "/invoices"),
        body=body,
        raw=raw,
        content_type=content_type,
        token=clinic.staff_token(),
    )


# -- 8. bad requests ---------------------------------------------------------------------------


def test_malformed_json_is_a_400_envelope(http_clinic: HttpClinic) -> None:
    clinic, patient = http_clinic, new_patient()
    for raw in (b'{"lines": [', b"{'lines': []}", b"lines=1", b'{"lines": []} trailing'):
        assert_envelope(post_invoice(clinic, patient, raw=raw), 400, "validation_error")
    assert clinic.invoices(patient)["items"] == []


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain; charset=utf-8",
        "application/xml",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=e2e",
    ],
)
def test_non_json_content_type_is_a_415_envelope(
    http_clinic: HttpClinic, content_type: str
) -> None:
    """API.md: JSON in; anything else on a JSON route is a 415 (even when the bytes are JSON)."""
    clinic, patient = http_clinic, new_patient()
    body = json.dumps({"lines": [LINE]}).encode()
    reply = post_invoice(clinic, patient, raw=body, content_type=content_type)
    assert_envelope(reply, 415, "unsupported_media_type")
    assert clinic.invoices(patient)["items"] == []


def _padded_valid_body() -> bytes:
    # Valid JSON, a valid invoice: only its size is wrong.
    return (json.dumps({"lines": [LINE]}) + " " * (64 * 1024)).encode()


def _oversized_memo_body() -> bytes:
    return json.dumps({"lines": [LINE], "memo": "x" * (64 * 1024)}).encode()


def _many_long_lines_body() -> bytes:
    lines = [{**LINE, "description": "d" * 700} for _ in range(101)]
    return json.dumps({"lines": lines}).encode()


@pytest.mark.parametrize(
    "make_body",
    [_padded_valid_body, _oversized_memo_body, _many_long_lines_body],
    ids=["valid-json-padded", "oversized-memo", "101-long-lines"],
)
def test_body_over_64_kib_is_a_413_envelope(http_clinic: HttpClinic, make_body: Any) -> None:
    """The limit comes first: a body over 64 KiB is refused whatever it contains."""
    clinic, patient = http_clinic, new_patient()
    raw = make_body()
    assert len(raw) > 64 * 1024
    assert_envelope(post_invoice(clinic, patient, raw=raw), 413, "payload_too_large")
    assert clinic.invoices(patient)["items"] == []


def test_body_that_is_not_utf8_is_a_400_envelope(http_clinic: HttpClinic) -> None:
    """JSON is UTF-8: undecodable bytes are a malformed body (400), not a server error."""
    clinic, patient = http_clinic, new_patient()
    raw = b'{"lines": [{"description": "\xff\xfe", "unit_amount": 1}]}'
    assert_envelope(post_invoice(clinic, patient, raw=raw), 400, "validation_error")
    assert clinic.invoices(patient)["items"] == []


@pytest.mark.parametrize(
    "unit_amount",
    [12.5, 12000.0, "12000", -100, 0, 100_000_000, True, False, None, [12000], {"v": 1}],
    ids=[
        "float",
        "integral-float",
        "string",
        "negative",
        "zero",
        "too-large",
        "true",
        "false",
        "null",
        "list",
        "object",
    ],
)
def test_invalid_unit_amount_is_a_422_naming_the_field_and_writes_nothing(
    http_clinic: HttpClinic, unit_amount: Any
) -> None:
    clinic, patient = http_clinic, new_patient()
    existing = clinic.create_invoice(patient, [LINE])
    before = clinic.invoices(patient)

    lines = [LINE, {**LINE, "unit_amount": unit_amount}]
    error = assert_envelope(post_invoice(clinic, patient, body={"lines": lines}), 422)
    assert error["code"] == "validation_error", error
    fields = [d.get("field") for d in error["details"]]
    assert "lines.1.unit_amount" in fields, error

    after = clinic.invoices(patient)
    assert after == before, (before, after)
    assert [i["id"] for i in after["items"]] == [existing["id"]]


def test_largest_allowed_unit_amount_is_accepted(http_clinic: HttpClinic) -> None:
    clinic, patient = http_clinic, new_patient()
    invoice = clinic.create_invoice(patient, [{**LINE, "unit_amount": 99_999_999}])
    assert invoice["total"] == 99_999_999, invoice


def test_unknown_routes_are_404(http_clinic: HttpClinic) -> None:
    clinic = http_clinic
    staff = clinic.staff_token()
    for method, path in (
        ("GET", "/v1/nothing-here"),
        ("GET", "/"),
        ("DELETE", clinic.patient_path(new_patient(), "/invoices")),
        ("GET", f"/v1/clinics/{clinic.clinic_id}/patients"),
        ("POST", "/v2/health"),
    ):
        reply = clinic.request(method, path, token=staff, body={} if method == "POST" else None)
        assert reply.status == 404, (method, path, reply)


def test_odd_bodies_never_leak_a_trace_or_a_key(http_clinic: HttpClinic) -> None:
    """Bodies that trip parsers: each is a 4xx envelope, never a 500 or a stack trace."""
    clinic, patient = http_clinic, new_patient()
    odd: list[bytes] = [
        b"null",
        b"[]",
        b'"lines"',
        b"12000",
        b"{}",
        b'{"lines": null}',
        b'{"lines": [{}]}',
        b'{"lines": [' + b"[" * 500 + b"]" * 500 + b"]}",
        b'{"lines": [{"description": "x", "unit_amount": 1e400}]}',
        b'{"lines": [{"description": "x", "unit_amount": NaN}]}',
        b'{"lines": [{"description": "x", "unit_amount": 1}], "extra": 1}',
        b'{"lines": [{"description": "x", "unit_amount": 1, "tax_rate_id": "../../etc"}]}',
    ]
    for raw in odd:
        reply = post_invoice(clinic, patient, raw=raw)
        assert reply.status in (400, 422), (raw[:80], reply)
        assert_envelope(reply, reply.status, "validation_error")
    # Secrets are stored but never echoed: the accounts list shows last four characters only.
    reply = clinic.request(
        "GET",
        f"/v1/clinics/{clinic.clinic_id}/stripe-accounts",
        token=clinic.token("admin", sub="e2e-admin"),
    )
    assert reply.status == 200, reply
    assert clinic.secret_key not in reply.text
    assert clinic.webhook_secret not in reply.text
    assert clinic.invoices(patient)["items"] == []


def test_a_body_nested_ten_thousand_deep_is_a_400_on_every_route(http_clinic: HttpClinic) -> None:
    """json and pydantic recurse per level: deep nesting must be refused before either runs."""
    clinic, patient = http_clinic, new_patient()
    admin = clinic.token("admin", sub="e2e-admin")
    deep = b'{"lines": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    tried = 0
    for route in routes():
        if route.method not in ("POST", "PUT"):
            continue
        path = route.path.replace("{clinic_id}", clinic.clinic_id)
        path = path.replace("{patient_id}", patient)
        path = re.sub(r"\{[a-z_]+\}", "x_1", path)
        reply = clinic.request(
            route.method,
            path,
            raw=deep,
            token=None if route.public else admin,
            headers={"Idempotency-Key": f"deep-{tried}"},
        )
        tried += 1
        assert reply.status < 500, (route, reply)
        if not route.public:
            assert_envelope(reply, 400, "validation_error")
    assert tried > 10
    assert clinic.invoices(patient)["items"] == []


@pytest.mark.parametrize(
    "domain",
    [
        "@\x1eexample.com",
        "@example.com\nBcc: all@example.com",
        "@example.com\u2028",
        ",other@example.com",
        "<other@example.com",
        "(x)@example.com",
    ],
    ids=["record-sep", "newline-header", "line-sep", "comma", "angle", "comment"],
)
def test_an_emailed_field_that_would_break_the_headers_is_a_422(
    stack: Stack, gateway: LocalGateway, jwt_key: rsa.RSAPrivateKey, domain: str
) -> None:
    """Addresses and the clinic's name go into email headers: Python's email package takes a
    control character for a line break and raises (the fuzzer's 500 on payment-requests), and
    `,` `<` `(` name other recipients or none (SES refuses: the fuzzer's 503). Each is a 422 at
    the edge, and nothing is sent."""
    clinic, patient = seed_clinic(stack, gateway, jwt_key), new_patient()
    admin = clinic.token("admin", sub="e2e-admin")
    settings_path = f"/v1/clinics/{clinic.clinic_id}/settings"
    settings = {"clinic_name": "E2E Physiotherapy", "email_pay_online_requests": True}
    reply = clinic.request("PUT", settings_path, token=admin, body=settings)
    assert reply.status == 200, reply
    reply = clinic.request(
        "PUT", settings_path, token=admin, body={**settings, "clinic_name": "E2E\nBcc: x@y.z"}
    )
    assert_envelope(reply, 422, "validation_error")
    invoice = clinic.create_invoice(patient, [LINE])
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/invoices/{invoice['id']}/payment-requests"),
        body={"email": patient + domain},
        token=clinic.staff_token(),
        headers={"Idempotency-Key": f"e2e-{secrets.token_hex(8)}"},
    )
    error = assert_envelope(reply, 422, "validation_error")
    assert "email" in [d.get("field") for d in error["details"]], error
    assert sent_emails(stack.moto_url, patient) == []


# -- 9. operations routes ----------------------------------------------------------------------


def test_health_needs_no_token(http_clinic: HttpClinic) -> None:
    reply = http("GET", f"{http_clinic.api_url}/v1/health")
    assert reply.status == 200, reply
    assert reply.body == {"status": "ok"}, reply


def test_openapi_document_lists_every_route_of_the_template(http_clinic: HttpClinic) -> None:
    reply = http("GET", f"{http_clinic.api_url}/v1/openapi.json")
    assert reply.status == 200, reply
    assert reply.headers.get("Content-Type", "").startswith("application/json"), reply.headers
    document = reply.body
    assert str(document["openapi"]).startswith("3."), document.get("openapi")
    paths = document["paths"]
    missing = []
    for route in routes():
        if route.path in DOCS_ROUTES:
            continue
        angle = re.sub(r"\{([^}]+)\}", r"<\1>", route.path)
        operations = paths.get(route.path) or paths.get(angle) or {}
        if route.method.lower() not in operations:
            missing.append(f"{route.method} {route.path}")
    assert missing == [], f"not in /v1/openapi.json: {missing}; paths: {sorted(paths)}"


def test_swagger_ui_is_served_as_html(http_clinic: HttpClinic) -> None:
    reply = http("GET", f"{http_clinic.api_url}/v1/docs")
    assert reply.status == 200, reply
    assert reply.headers.get("Content-Type", "").startswith("text/html"), reply.headers
    assert "<html" in reply.text.lower(), reply.text[:500]
    assert "swagger" in reply.text.lower(), reply.text[:500]


def test_every_reply_is_checked_for_a_traceback_and_this_clinics_keys(
    http_clinic: HttpClinic,
) -> None:
    """`http()` checks each reply of the API as it arrives, in whatever test and order it comes:
    the pattern it checks with finds a traceback and every key this clinic was seeded with."""
    for leaked in (
        "Traceback (most recent call last):",
        http_clinic.secret_key,
        http_clinic.webhook_secret,
    ):
        assert FORBIDDEN_IN_BODIES.search(json.dumps({"error": leaked})) is not None, leaked
    # A message naming a key's prefix carries no key (the fuzzer meets it on stripe-accounts).
    assert FORBIDDEN_IN_BODIES.search("webhook_secret must start with whsec_.") is None
