"""A patient's payment history (GET .../patients/{patient_id}/payments): every payment of the
patient, newest first, a page at a time, as each caller may see it; one Query a page."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.calls import counting

pytestmark = pytest.mark.integration

HISTORY = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments"


def history(
    clinic: Any,
    patient_id: str,
    *,
    role: str = "staff",
    patient_ids: tuple[str, ...] = (),
    sub: str | None = None,
    **query: str,
) -> tuple[int, Any]:
    return clinic.call(
        "GET",
        HISTORY,
        {"patient_id": patient_id},
        role=role,
        patient_ids=patient_ids,
        sub=sub,
        query=query or None,
    )


def cash(clinic: Any, patient_id: str, amount: int) -> dict[str, Any]:
    invoice = clinic.create_invoice(patient_id, amount)
    status, body = clinic.pay(
        patient_id,
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )
    assert status == 201, body
    return dict(body)


def card_started_in_portal(clinic: Any, patient_id: str, amount: int) -> dict[str, Any]:
    invoice = clinic.create_invoice(patient_id, amount)
    status, body = clinic.pay(
        patient_id, {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    )
    assert status == 201, body
    assert body["status"] == "requires_payment_method"
    return dict(body)


def every_page(clinic: Any, patient_id: str, limit: int, **caller: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        status, body = history(clinic, patient_id, **caller, **query)
        assert status == 200, body
        pages.append([p["id"] for p in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_the_history_lists_every_payment_newest_first_a_page_at_a_time(clinic: Any) -> None:
    made = [cash(clinic, "pat_a", 1000), cash(clinic, "pat_a", 2000)]
    made.append(card_started_in_portal(clinic, "pat_a", 3000))
    cash(clinic, "pat_b", 500)  # another patient's: never in pat_a's history
    newest_first = [p["id"] for p in reversed(made)]

    assert every_page(clinic, "pat_a", 2) == [newest_first[:2], newest_first[2:]]
    assert every_page(clinic, "pat_a", 3) == [newest_first]

    status, body = history(clinic, "pat_a")
    assert status == 200, body
    # Each item is the payment as GET .../payments/{id} shows it to the same caller.
    for item in body["items"]:
        assert item == clinic.payment("pat_a", item["id"])
    assert [p["status"] for p in body["items"]] == [
        "requires_payment_method",
        "succeeded",
        "succeeded",
    ]


def test_a_patient_sees_their_own_open_payments_secret_and_staff_do_not(clinic: Any) -> None:
    started = card_started_in_portal(clinic, "pat_a", 3000)

    status, mine = history(clinic, "pat_a", role="patient", patient_ids=("pat_a",))
    assert status == 200, mine
    [open_payment] = [p for p in mine["items"] if p["id"] == started["id"]]
    assert open_payment["client_secret"] == started["client_secret"]
    assert open_payment["publishable_key"] == clinic.publishable_key

    status, staff_view = history(clinic, "pat_a", sub="another-staff-member")
    assert status == 200, staff_view
    [seen_by_staff] = [p for p in staff_view["items"] if p["id"] == started["id"]]
    assert seen_by_staff["client_secret"] is None
    assert seen_by_staff["publishable_key"] is None


def test_a_patient_without_payments_has_an_empty_history(clinic: Any) -> None:
    status, body = history(clinic, "pat_b", role="patient", patient_ids=("pat_b",))
    assert (status, body) == (200, {"items": [], "next_cursor": None})


@pytest.mark.parametrize(
    ("caller", "why"),
    [
        ({"role": "patient", "patient_ids": ("pat_b",)}, "another patient of the clinic"),
        ({"role": "patient", "patient_ids": ()}, "a patient with no account here"),
    ],
)
def test_another_patients_history_is_not_found(clinic: Any, caller: Any, why: str) -> None:
    """As everywhere (api/auth.py): a patient who is not the caller's is 404, so a patient
    cannot even learn that another patient id exists."""
    cash(clinic, "pat_a", 1000)
    status, body = history(clinic, "pat_a", **caller)
    assert status == 404, why
    assert body["error"]["code"] == "not_found"
    assert "items" not in body


def test_another_clinics_staff_cannot_read_the_history(clinic: Any) -> None:
    cash(clinic, "pat_a", 1000)
    status, body = clinic.call(
        "GET",
        HISTORY,
        {"patient_id": "pat_a"},
        claims={"sub": "intruder", "role": "staff", "clinic_id": "another-clinic"},
    )
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"cursor": "not base64 at all!"},
        {"cursor": "SU5WT0lDRSNpbnZfMQ"},  # base64 of INVOICE#inv_1: another listing's
        {"cursor": "x" * 513},
    ],
)
def test_a_bad_page_request_is_422_never_a_500(clinic: Any, query: dict[str, str]) -> None:
    cash(clinic, "pat_a", 1000)
    status, body = history(clinic, "pat_a", **query)
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"


def test_a_page_of_history_is_one_query_whatever_the_history(clinic: Any) -> None:
    for amount in (1000, 1100, 1200):
        cash(clinic, "pat_a", amount)
    history(clinic, "pat_a")  # warm

    def one_page() -> tuple[list[str], int]:
        with counting(clinic.stack.stripe_url) as calls:
            status, body = history(clinic, "pat_a", limit="2")
        assert status == 200, body
        assert len(body["items"]) == 2
        assert calls.stripe == {}
        return calls.dynamodb(), calls.items_read

    short = one_page()
    assert short[0] == ["Query"]
    for amount in range(10):
        cash(clinic, "pat_a", 2000 + amount)
    assert one_page() == short
