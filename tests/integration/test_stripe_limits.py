"""Stripe's own limits, met before Stripe is asked: the minimum card charge per currency (the
amount charged, pass-through fee included) and the currencies Stripe supports, checked where a
currency enters (invoices, settings, adjustments). Through the handlers, moto and the fake."""

from __future__ import annotations

import pytest

from tests.conftest import make_clinic
from tests.integration.test_credit import ADJUST
from tests.integration.test_payments import start_card_payment
from tests.support import stripe_control

pytestmark = pytest.mark.integration

INVOICES = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices"


def card_payment(clinic, invoice_id):
    return clinic.pay("pat_a", {"method": "card", "allocations": [{"invoice_id": invoice_id}]})


def test_a_card_payment_under_stripes_minimum_is_refused_before_stripe_and_records_nothing(
    clinic,
):
    invoice = clinic.create_invoice("pat_a", 40)  # 0.40 USD, under Stripe's 0.50
    before = stripe_control.count(clinic.stack.stripe_url)
    status, body = card_payment(clinic, invoice["id"])
    assert status == 422, body
    assert body["error"]["code"] == "amount_too_small"
    assert "0.50 USD" in body["error"]["message"]
    assert body["error"]["details"][0]["minimum"] == 50
    assert stripe_control.count(clinic.stack.stripe_url) == before
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 0
    assert clinic.invoices("pat_a")["items"][0]["payments"] == []


def test_a_small_remainder_left_by_a_partial_payment_is_settled_in_cash(clinic):
    invoice = clinic.create_invoice("pat_a", 5030)
    status, paid = clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 5000}]},
        role="staff",
    )
    assert status == 201, paid
    status, body = card_payment(clinic, invoice["id"])
    assert (status, body["error"]["code"]) == (422, "amount_too_small")
    status, cash = clinic.pay(
        "pat_a", {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}, role="staff"
    )
    assert (status, cash["status"], cash["amount"]) == (201, "succeeded", 30)
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_the_minimum_is_compared_with_the_amount_charged_fee_included(stack):
    clinic = make_clinic(stack, pass_processing_fees=True)
    # 15 + fee = ceil((15 + 30) / 0.971) = 47: under 50. 20 + fee = ceil(50 / 0.971) = 52.
    small = clinic.create_invoice("pat_a", 15)
    status, body = card_payment(clinic, small["id"])
    assert (status, body["error"]["code"]) == (422, "amount_too_small")
    enough = clinic.create_invoice("pat_a", 20)
    payment = start_card_payment(clinic, "pat_a", enough["id"])
    assert (payment["amount"], payment["fee_amount"]) == (20, 32)
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    assert intent["amount"] == 52


def test_the_minimum_of_the_invoices_currency_applies(stack):
    clinic = make_clinic(stack, currency="gbp")  # Stripe's minimum is 0.30 GBP
    invoice = clinic.create_invoice("pat_a", 35)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    assert (payment["currency"], payment["amount"]) == ("gbp", 35)
    small = clinic.create_invoice("pat_a", 25)
    status, body = card_payment(clinic, small["id"])
    assert (status, body["error"]["code"]) == (422, "amount_too_small")
    assert "0.30 GBP" in body["error"]["message"]


def test_a_top_up_under_the_minimum_is_refused(stack):
    clinic = make_clinic(stack, allow_credit_topups=True)
    status, body = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/credit/topups",
        {"patient_id": "pat_a"},
        role="patient",
        patient_ids=("pat_a",),
        body={
            "amount": 49,
            "location_id": "loc_main",
            "consent": {"agreed": True, "wording_version": "2026-11-01"},
        },
        headers={"Idempotency-Key": "small-topup"},
    )
    assert (status, body["error"]["code"]) == (422, "amount_too_small"), body


@pytest.mark.parametrize("currency", ["xxx", "abc", "hrk"])
def test_an_invoice_in_a_currency_stripe_does_not_support_is_refused(clinic, currency):
    status, body = clinic.call(
        "POST",
        INVOICES,
        {"patient_id": "pat_a"},
        body={"currency": currency, "lines": [{"description": "Visit", "unit_amount": 5000}]},
    )
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
    assert body["error"]["details"][0]["field"] == "currency"
    assert clinic.invoices("pat_a")["items"] == []


def test_an_invoice_in_another_supported_currency_is_created(clinic):
    status, body = clinic.call(
        "POST",
        INVOICES,
        {"patient_id": "pat_a"},
        body={"currency": "cad", "lines": [{"description": "Visit", "unit_amount": 5000}]},
    )
    assert (status, body["currency"]) == (201, "cad"), body


def test_settings_in_a_currency_stripe_does_not_support_are_refused(clinic):
    status, body = clinic.call(
        "PUT",
        "/v1/clinics/{clinic_id}/settings",
        role="admin",
        body={"clinic_name": "Test Clinic", "currency": "xxx"},
    )
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
    status, settings = clinic.call("GET", "/v1/clinics/{clinic_id}/settings", role="admin")
    assert (status, settings["currency"]) == (200, "usd")


def test_an_adjustment_in_a_currency_stripe_does_not_support_is_refused(clinic):
    status, body = clinic.call(
        "POST",
        ADJUST,
        {"patient_id": "pat_a"},
        body={"amount": 500, "reason": "goodwill", "currency": "xxx"},
        headers={"Idempotency-Key": "adjust-xxx"},
    )
    assert (status, body["error"]["code"]) == (422, "validation_error"), body
