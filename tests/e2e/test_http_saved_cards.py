"""Saved cards over HTTP: who may add, list and remove them. Saving one (Stripe.js's
confirmCardSetup, then setup_intent.succeeded signed) and charging it by staff on and off
session are money paths: tests/e2e/test_money_paths.py, against the fake and real Stripe."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import HttpClinic, assert_envelope, new_patient

pytestmark = pytest.mark.e2e


def test_saved_cards_over_http_refuse_other_patients_and_missing_consent(
    http_clinic: HttpClinic,
) -> None:
    clinic, patient, other = http_clinic, new_patient(), new_patient()
    token = clinic.patient_token(patient)
    path = clinic.patient_path(patient, "/payment-methods")
    no_consent = clinic.request(
        "POST", path, body={}, token=token, headers={"Idempotency-Key": f"nc-{patient}"}
    )
    assert_envelope(no_consent, 422, "consent_required")
    assert_envelope(
        clinic.request("GET", path, token=clinic.patient_token(other)), 404, "not_found"
    )
    assert_envelope(
        clinic.request("DELETE", f"{path}/pm_123abc", token=clinic.patient_token(other)),
        404,
        "not_found",
    )
