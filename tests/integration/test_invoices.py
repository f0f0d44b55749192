"""Invoices through the handlers: totals and tax, listing and paging, void, and bad input that
is refused clearly and writes nothing."""

from __future__ import annotations

import pytest

from tests.support.invariant import partition

pytestmark = pytest.mark.integration

INVOICES = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices"
VOID = INVOICES + "/{invoice_id}/void"


def create(clinic, body, **kw):
    return clinic.call("POST", INVOICES, {"patient_id": "pat_a"}, body=body, **kw)


def line(**overrides):
    return {
        "description": "Physiotherapy session",
        "quantity": 1,
        "unit_amount": 12000,
        **overrides,
    }


def test_an_invoice_computes_tax_per_line_and_totals(clinic):
    status, invoice = create(
        clinic,
        {
            "due_date": "2026-12-01",
            "memo": "Thank you",
            "lines": [
                line(
                    unit_amount=1005, quantity=3, tax_rate_id="tax_hst", service_date="2026-11-20"
                ),
                line(unit_amount=999),
            ],
        },
    )
    assert status == 201, invoice
    # 3 x 1005 = 3015, 13% = 391.95 -> 392 (half-up, per line); 999 untaxed.
    assert [(ln["amount"], ln["tax_amount"]) for ln in invoice["lines"]] == [(3015, 392), (999, 0)]
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (4014, 392, 4406)
    assert (invoice["status"], invoice["balance_due"], invoice["currency"]) == ("open", 4406, "usd")
    assert invoice["number"].isdigit()
    assert invoice["lines"][0]["service_date"] == "2026-11-20"
    assert clinic.invoice("pat_a", invoice["id"]) == invoice


def test_invoice_numbers_increase_per_clinic(clinic):
    numbers = [int(clinic.create_invoice("pat_a", 100)["number"]) for _ in range(3)]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == 3


def test_listing_is_newest_first_with_cursor_pages_and_status_filters(clinic):
    ids = [clinic.create_invoice("pat_a", 100 * (i + 1))["id"] for i in range(5)]
    clinic.pay("pat_a", {"method": "cash", "allocations": [{"invoice_id": ids[0]}]}, role="staff")
    first = clinic.invoices("pat_a", limit="2")
    assert [i["id"] for i in first["items"]] == ids[::-1][:2]
    assert first["next_cursor"]
    second = clinic.invoices("pat_a", limit="2", cursor=first["next_cursor"])
    third = clinic.invoices("pat_a", limit="2", cursor=second["next_cursor"])
    seen = [i["id"] for page in (first, second, third) for i in page["items"]]
    assert seen == ids[::-1]
    assert third["next_cursor"] is None
    assert [i["id"] for i in clinic.invoices("pat_a", status="paid")["items"]] == [ids[0]]
    assert len(clinic.invoices("pat_a", status="open")["items"]) == 4
    assert first["summary"]["outstanding_count"] == 4
    assert first["summary"]["outstanding_amount"] == 200 + 300 + 400 + 500


def test_a_cursor_from_another_patient_reveals_nothing(clinic):
    for _ in range(3):
        clinic.create_invoice("pat_b", 100)
    cursor = clinic.invoices("pat_b", limit="1")["next_cursor"]
    clinic.create_invoice("pat_a", 100)
    page = clinic.invoices("pat_a", limit="5", cursor=cursor)
    assert all(i["patient_id"] == "pat_a" for i in page["items"])
    status, body = clinic.call(
        "GET", INVOICES, {"patient_id": "pat_a"}, query={"cursor": "!!not-a-cursor!!"}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")


def test_an_unpaid_invoice_can_be_voided_once(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    status, voided = clinic.call("POST", VOID, {"patient_id": "pat_a", "invoice_id": invoice["id"]})
    assert (status, voided["status"], voided["balance_due"]) == (200, "void", 0)
    status, again = clinic.call("POST", VOID, {"patient_id": "pat_a", "invoice_id": invoice["id"]})
    assert (status, again["error"]["code"]) == (409, "conflict")
    assert clinic.invoices("pat_a")["summary"]["outstanding_count"] == 0


def test_an_invoice_with_a_payment_cannot_be_voided(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 1}]},
        role="staff",
    )
    status, body = clinic.call("POST", VOID, {"patient_id": "pat_a", "invoice_id": invoice["id"]})
    assert (status, body["error"]["code"]) == (409, "conflict")


def test_an_unknown_invoice_is_404(clinic):
    status, body = clinic.call(
        "GET", INVOICES + "/{invoice_id}", {"patient_id": "pat_a", "invoice_id": "inv_nope"}
    )
    assert (status, body["error"]["code"]) == (404, "not_found")


@pytest.mark.parametrize(
    ("unit_amount", "why"),
    [
        (12.5, "float"),
        ("1200", "string"),
        (True, "boolean"),
        (-100, "negative"),
        (0, "zero"),
        (100_000_000, "above 99,999,999"),
        (None, "null"),
    ],
)
def test_a_bad_amount_is_422_naming_the_field_and_writes_nothing(clinic, unit_amount, why):
    status, body = create(clinic, {"lines": [line(unit_amount=unit_amount)]})
    assert status == 422, why
    assert body["error"]["code"] == "validation_error"
    assert any(d["field"] == "lines.0.unit_amount" for d in body["error"]["details"]), body
    assert (
        partition(clinic.stack.moto_url, clinic.stack.table_name, clinic.clinic_id, "pat_a") == []
    )


@pytest.mark.parametrize(
    "body",
    [
        {"lines": []},
        {"lines": [line()] * 101},
        {"lines": [line(quantity=0)]},
        {"lines": [line(quantity=1.5)]},
        {"lines": [line(description="")]},
        {"lines": [line(tax_rate_id="tax_unknown")]},
        {"lines": [line()], "currency": "USD"},
        {"lines": [line()], "due_date": "next week"},
        {"lines": [line()], "surprise": 1},
        {},
        [],
    ],
    ids=[
        "no-lines",
        "too-many-lines",
        "zero-quantity",
        "float-quantity",
        "empty-description",
        "unknown-tax-rate",
        "upper-case-currency",
        "bad-date",
        "unknown-field",
        "empty-object",
        "not-an-object",
    ],
)
def test_invalid_invoices_are_422_and_write_nothing(clinic, body):
    status, out = create(clinic, body)
    assert status == 422, out
    assert out["error"]["code"] == "validation_error"
    assert set(out["error"]) >= {"code", "message", "details"}
    assert (
        partition(clinic.stack.moto_url, clinic.stack.table_name, clinic.clinic_id, "pat_a") == []
    )


def test_malformed_json_is_400(clinic):
    status, body = create(clinic, None, raw_body='{"lines": [')
    assert (status, body["error"]["code"]) == (400, "validation_error")


def test_a_body_that_is_not_json_is_415(clinic):
    status, body = clinic.call(
        "POST",
        INVOICES,
        {"patient_id": "pat_a"},
        raw_body="lines=1",
        headers={"content-type": "text/plain"},
    )
    assert (status, body["error"]["code"]) == (415, "unsupported_media_type")


def test_an_oversized_body_is_413(clinic):
    status, body = create(clinic, {"lines": [line(description="x" * 70_000)]})
    assert (status, body["error"]["code"]) == (413, "payload_too_large")


def test_no_error_carries_a_trace_or_a_key(clinic):
    bodies = [
        create(clinic, None, raw_body="{")[1],
        create(clinic, {"lines": [line(unit_amount="x")]})[1],
        clinic.call(
            "GET", INVOICES + "/{invoice_id}", {"patient_id": "pat_a", "invoice_id": "inv_x"}
        )[1],
    ]
    text = repr(bodies)
    assert "Traceback" not in text
    assert "sk_test" not in text
    assert ".py" not in text
