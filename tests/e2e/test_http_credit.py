"""Account credit over HTTP: staff adjustments and their limits. The portal top-up, settled by
the signed webhook and applied to an invoice, is a money path: tests/e2e/test_money_paths.py."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.e2e.conftest import HttpClinic, new_patient

pytestmark = pytest.mark.e2e


def credit(clinic: HttpClinic, patient: str) -> Any:
    reply = clinic.request(
        "GET", clinic.patient_path(patient, "/credit"), token=clinic.patient_token(patient)
    )
    assert reply.status == 200, reply
    return reply.body


def test_an_adjustment_below_zero_is_refused_over_http(http_clinic: HttpClinic):
    clinic, patient = http_clinic, new_patient()
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/credit/adjustments"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": -100, "reason": "correction"},
    )
    assert reply.status == 409, reply
    assert reply.body["error"]["code"] == "insufficient_credit"
    assert credit(clinic, patient)["balance"] == 0
