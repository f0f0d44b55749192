"""Saved cards over HTTP: the local gateway, real JWTs, the Stripe fake confirming a SetupIntent
as Stripe.js does and delivering setup_intent.succeeded signed, like Stripe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import HttpClinic, assert_envelope, new_patient, poll
from tests.support.invariant import assert_money_invariant
from tests.support.portal import VISA, confirm_card_setup

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e

WORDING = "2026-11-01"  # the clinic's card-on-file wording version (the default)


def cards(clinic: HttpClinic, patient: str, token: str) -> list[dict[str, Any]]:
    reply = clinic.request("GET", clinic.patient_path(patient, "/payment-methods"), token=token)
    assert reply.status == 200, reply
    return list(reply.body["items"])


def test_add_list_charge_and_remove_a_saved_card(http_clinic: HttpClinic, stack: Stack) -> None:
    clinic, patient = http_clinic, new_patient()
    token = clinic.patient_token(patient)

    # The portal shows the terms, then asks for a SetupIntent with the patient's consent.
    terms = clinic.request(
        "GET", f"/v1/clinics/{clinic.clinic_id}/card-on-file-terms", token=token
    ).body
    assert terms["wording_version"] == WORDING
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/payment-methods"),
        body={"consent": {"agreed": True, "wording_version": terms["wording_version"]}},
        token=token,
        headers={"Idempotency-Key": f"add-card-{patient}"},
    )
    assert reply.status == 201, reply
    setup = reply.body
    assert setup["client_secret"].startswith(setup["setup_intent_id"] + "_secret_")

    # Stripe.js's confirmCardSetup with test card 4242; Stripe then posts setup_intent.succeeded.
    code, confirmed = confirm_card_setup(
        clinic.stripe_url,
        setup["setup_intent_id"],
        setup["client_secret"],
        setup["publishable_key"],
        VISA,
    )
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    listed = poll(
        lambda: cards(clinic, patient, token),
        lambda items: bool(items) and items[0]["consent"] is not None,
    )
    [card] = listed
    assert card["consent"] is not None, f"setup_intent.succeeded did not reconcile: {listed}"
    assert (card["id"], card["brand"], card["last4"]) == (
        confirmed["payment_method"],
        "visa",
        "4242",
    )
    assert card["consent"]["wording_version"] == WORDING
    assert card["consent"]["by"] == {"sub": f"e2e-patient-{patient}", "role": "patient"}

    # Staff charge it while the patient is away.
    invoice = clinic.create_invoice(
        patient, [{"description": "Physiotherapy session", "quantity": 1, "unit_amount": 9000}]
    )
    charge = {
        "method": "card",
        "payment_method_id": card["id"],
        "off_session": True,
        "allocations": [{"invoice_id": invoice["id"]}],
    }
    reply = clinic.pay(patient, charge, token=clinic.staff_token())
    assert reply.status == 201, reply
    assert reply.body["status"] == "succeeded"
    assert clinic.invoice(patient, invoice["id"])["status"] == "paid"

    # The patient removes it: gone from the list, and it can no longer be charged.
    path = clinic.patient_path(patient, f"/payment-methods/{card['id']}")
    reply = clinic.request("DELETE", path, token=token)
    assert (reply.status, reply.raw) == (204, b""), reply
    assert cards(clinic, patient, token) == []
    second = clinic.create_invoice(
        patient, [{"description": "Follow-up", "quantity": 1, "unit_amount": 5000}]
    )
    reply = clinic.pay(
        patient,
        {**charge, "allocations": [{"invoice_id": second["id"]}]},
        token=clinic.staff_token(),
    )
    assert_envelope(reply, 404, "not_found")
    assert_envelope(clinic.request("DELETE", path, token=token), 404, "not_found")
    assert clinic.invoice(patient, second["id"])["status"] == "open"
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


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
