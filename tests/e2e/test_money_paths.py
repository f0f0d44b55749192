"""The money paths over HTTP, one test code for two Stripes (tests/support/stripe_driver.py):
the strict local fake in `make test`, a real Stripe test-mode account in `make test-stripe`.

A portal card payment (Stripe.js's confirm with the publishable key and client secret), a
decline and a retry, 3D Secure, a saved card charged by staff on and off session (and a
decline off session), a credit top-up, a staff refund: each settled by the signed webhook the
driver's Stripe delivers, and each leaving the money invariant true on the table.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e.conftest import HttpClinic, assert_envelope, new_patient, poll
from tests.e2e.test_http_credit import credit
from tests.e2e.test_http_payments import (
    SESSION_LINE,
    SESSION_TOTAL,
    assert_settled_once,
    intent_id_of,
    start_card_payment,
    wait_paid,
)
from tests.support.invariant import assert_money_invariant
from tests.support.stripe_driver import (
    CHARGE_DECLINED,
    DECLINED,
    THREE_D_SECURE,
    VISA,
    LiveModeError,
    StripeDriver,
    TestCard,
    driver_for,
)

if TYPE_CHECKING:
    from tests.conftest import Stack

pytestmark = pytest.mark.e2e

WORDING = "2026-11-01"  # the clinic's card-on-file wording version (the default)
CONSENT = {"agreed": True, "wording_version": WORDING}


def paid(clinic: HttpClinic, driver: StripeDriver, patient: str, invoice_id: str) -> Any:
    return wait_paid(clinic, patient, invoice_id, timeout=driver.webhook_timeout)


def with_card_details(clinic: HttpClinic, patient: str, payment_id: str) -> Any:
    """The payment once its card's brand and last four are known: they come with
    charge.succeeded, an event of its own that the relay may deliver after the one that
    settled the payment."""
    return poll(
        lambda: clinic.payment(patient, payment_id),
        lambda p: bool((p.get("payment_method") or {}).get("last4")),
    )


def card_paid(clinic: HttpClinic, driver: StripeDriver, patient: str) -> tuple[Any, Any]:
    """A taxed session invoiced, paid in the portal with the Visa test card, settled."""
    invoice, payment = start_card_payment(clinic, patient)
    code, confirmed = driver.confirm_payment(payment, VISA)
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    paid(clinic, driver, patient, invoice["id"])
    return invoice, payment


def cards(clinic: HttpClinic, patient: str, token: str) -> list[dict[str, Any]]:
    reply = clinic.request("GET", clinic.patient_path(patient, "/payment-methods"), token=token)
    assert reply.status == 200, reply
    return list(reply.body["items"])


def save_card(
    clinic: HttpClinic, driver: StripeDriver, patient: str, card: TestCard
) -> dict[str, Any]:
    """The portal shows the terms, starts a SetupIntent with the patient's consent, confirms it
    as confirmCardSetup does; setup_intent.succeeded then lists the card with its consent."""
    token = clinic.patient_token(patient)
    terms = clinic.request(
        "GET", f"/v1/clinics/{clinic.clinic_id}/card-on-file-terms", token=token
    ).body
    assert terms["wording_version"] == WORDING
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/payment-methods"),
        body={"consent": {"agreed": True, "wording_version": terms["wording_version"]}},
        token=token,
        headers={"Idempotency-Key": f"add-card-{patient}-{card.last4}"},
    )
    assert reply.status == 201, reply
    setup = reply.body
    assert setup["client_secret"].startswith(setup["setup_intent_id"] + "_secret_")
    assert setup["publishable_key"] == clinic.publishable_key, setup

    code, confirmed = driver.confirm_setup(setup, card)
    assert code == 200, confirmed
    assert confirmed["status"] == "succeeded", confirmed
    listed = poll(
        lambda: cards(clinic, patient, token),
        lambda items: any(
            c["id"] == confirmed["payment_method"] and c["consent"] is not None for c in items
        ),
        timeout=driver.webhook_timeout,
    )
    [saved] = [c for c in listed if c["id"] == confirmed["payment_method"]]
    assert saved["consent"] is not None, f"setup_intent.succeeded did not reconcile: {listed}"
    assert (saved["brand"], saved["last4"]) == ("visa", card.last4), saved
    assert saved["consent"]["wording_version"] == WORDING
    assert saved["consent"]["by"] == {"sub": f"e2e-patient-{patient}", "role": "patient"}
    return dict(saved)


def staff_charge(
    clinic: HttpClinic, patient: str, card_id: str, invoice_id: str, *, off_session: bool
) -> Any:
    body: dict[str, Any] = {
        "method": "card",
        "payment_method_id": card_id,
        "allocations": [{"invoice_id": invoice_id}],
    }
    if off_session:
        body["off_session"] = True
    return clinic.pay(patient, body, token=clinic.staff_token())


# -- a new card in the portal ----------------------------------------------------------------


def test_portal_card_payment_is_settled_by_the_signed_webhook(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    """The README walk-through: invoice, pay by card in the portal, the webhook settles it."""
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    invoice = clinic.create_invoice(patient, [SESSION_LINE], due_date="2026-12-01")
    assert invoice["status"] == "open", invoice
    assert invoice["currency"] == "usd", invoice
    assert invoice["lines"][0]["amount"] == 12000, invoice
    assert invoice["lines"][0]["tax_amount"] == 1560, invoice
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (12000, 1560, 13560)
    assert invoice["balance_due"] == SESSION_TOTAL, invoice
    assert invoice["amount_paid"] == 0, invoice

    listing = clinic.invoices(patient)
    assert [i["id"] for i in listing["items"]] == [invoice["id"]], listing
    assert listing["summary"] == {
        "outstanding_count": 1,
        "outstanding_amount": SESSION_TOTAL,
        "currency": "usd",
        "available_credit": 0,
    }, listing

    reply = clinic.pay(patient, {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]})
    assert reply.status == 201, reply
    payment = reply.body
    assert payment["status"] == "requires_payment_method", payment
    assert payment["amount"] == SESSION_TOTAL, payment
    assert payment["client_secret"], payment
    assert payment["publishable_key"] == clinic.publishable_key, payment

    code, confirmed = driver.confirm_payment(payment, VISA)
    assert code == 200, confirmed
    assert confirmed["status"] == "succeeded", confirmed

    settled_invoice = paid(clinic, driver, patient, invoice["id"])
    assert settled_invoice["balance_due"] == 0, settled_invoice
    assert settled_invoice["amount_paid"] == SESSION_TOTAL, settled_invoice
    assert settled_invoice["paid_at"], settled_invoice
    assert [(p["payment_id"], p["amount"], p["method"]) for p in settled_invoice["payments"]] == [
        (payment["id"], SESSION_TOTAL, "card")
    ], settled_invoice

    settled = with_card_details(clinic, patient, payment["id"])
    assert settled["status"] == "succeeded", settled
    assert settled["confirmation_number"], settled
    assert settled["payment_method"]["last4"] == VISA.last4, settled
    assert settled["succeeded_at"], settled
    assert settled["client_secret"] is None, settled  # final: no secret any more

    summary = clinic.invoices(patient)["summary"]
    assert summary["outstanding_count"] == 0, summary
    assert summary["outstanding_amount"] == 0, summary
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


def test_declined_card_keeps_invoice_open_records_failure_and_retry_settles(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    invoice, payment = start_card_payment(clinic, patient)

    code, declined = driver.confirm_payment(payment, DECLINED)
    # What Stripe answers Stripe.js for the generic decline: a 402 card_error.
    assert code == 402, declined
    assert declined["error"]["type"] == "card_error", declined
    assert declined["error"]["code"] == "card_declined", declined
    assert declined["error"]["decline_code"] == "generic_decline", declined

    # payment_intent.payment_failed arrives signed and records the failure.
    failed = poll(
        lambda: clinic.payment(patient, payment["id"]),
        lambda p: p["status"] == "failed",
        timeout=driver.webhook_timeout,
    )
    assert failed["status"] == "failed", failed
    assert failed["failure"] is not None, failed
    assert failed["failure"]["code"] == "card_declined", failed
    assert failed["failure"]["decline_code"] == "generic_decline", failed
    assert failed["failure"]["message"], failed
    assert failed["confirmation_number"] is None, failed

    still_open = clinic.invoice(patient, invoice["id"])
    assert still_open["status"] == "open", still_open
    assert still_open["amount_paid"] == 0, still_open
    assert still_open["balance_due"] == SESSION_TOTAL, still_open
    assert still_open["payments"] == [], still_open
    assert clinic.invoices(patient)["summary"]["outstanding_amount"] == SESSION_TOTAL

    # The portal lets the patient try another card on the same PaymentIntent.
    code, confirmed = driver.confirm_payment(payment, VISA)
    assert code == 200, confirmed
    assert confirmed["status"] == "succeeded", confirmed
    paid(clinic, driver, patient, invoice["id"])
    assert_settled_once(clinic, patient, invoice["id"], payment["id"], SESSION_TOTAL)
    settled = with_card_details(clinic, patient, payment["id"])
    assert settled["failure"] is None, settled
    assert settled["payment_method"]["last4"] == VISA.last4, settled
    assert settled["confirmation_number"], settled
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


def test_three_d_secure_card_settles_after_authentication(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    invoice, payment = start_card_payment(clinic, patient)
    intent_id = intent_id_of(payment)

    code, confirmed = driver.confirm_payment(payment, THREE_D_SECURE)
    assert code == 200, confirmed
    assert confirmed["status"] == "requires_action", confirmed
    assert confirmed["next_action"]["type"] in ("use_stripe_sdk", "redirect_to_url"), confirmed
    assert clinic.invoice(patient, invoice["id"])["status"] == "open"
    assert clinic.payment(patient, payment["id"])["status"] != "succeeded"

    if not driver.can_authenticate:
        # Real test mode: the challenge is a page Stripe.js shows, with no API to pass it, so
        # the live run stops here, having checked that nothing is settled before it.
        intent = driver.retrieve(f"/v1/payment_intents/{intent_id}", clinic.secret_key)
        assert intent["status"] == "requires_action", intent
        assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)
        return

    driver.authenticate(intent_id, payment["client_secret"], payment["publishable_key"])
    intent = driver.retrieve(f"/v1/payment_intents/{intent_id}", clinic.secret_key)
    assert intent["status"] == "succeeded", intent

    paid(clinic, driver, patient, invoice["id"])
    assert_settled_once(clinic, patient, invoice["id"], payment["id"], SESSION_TOTAL)
    settled = with_card_details(clinic, patient, payment["id"])
    assert settled["confirmation_number"], settled
    assert settled["payment_method"]["last4"] == THREE_D_SECURE.last4, settled
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


# -- a saved card, charged by staff ----------------------------------------------------------


def test_saved_card_charged_by_staff_on_and_off_session_then_removed(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    token = clinic.patient_token(patient)
    card = save_card(clinic, driver, patient, VISA)
    assert [c["id"] for c in cards(clinic, patient, token)] == [card["id"]]

    # At the front desk, the patient present: on session.
    first = clinic.create_invoice(
        patient, [{"description": "Physiotherapy session", "quantity": 1, "unit_amount": 9000}]
    )
    reply = staff_charge(clinic, patient, card["id"], first["id"], off_session=False)
    assert reply.status == 201, reply
    assert reply.body["status"] == "succeeded", reply
    assert clinic.invoice(patient, first["id"])["status"] == "paid"

    # While the patient is away: off session.
    second = clinic.create_invoice(
        patient, [{"description": "Follow-up", "quantity": 1, "unit_amount": 6500}]
    )
    reply = staff_charge(clinic, patient, card["id"], second["id"], off_session=True)
    assert reply.status == 201, reply
    assert reply.body["status"] == "succeeded", reply
    assert clinic.invoice(patient, second["id"])["status"] == "paid"
    payment = clinic.payment(patient, reply.body["id"])
    assert payment["payment_method"]["last4"] == VISA.last4, payment

    # The patient removes it: gone from the list, and it can no longer be charged.
    path = clinic.patient_path(patient, f"/payment-methods/{card['id']}")
    reply = clinic.request("DELETE", path, token=token)
    assert (reply.status, reply.raw) == (204, b""), reply
    assert cards(clinic, patient, token) == []
    third = clinic.create_invoice(
        patient, [{"description": "Follow-up", "quantity": 1, "unit_amount": 5000}]
    )
    reply = staff_charge(clinic, patient, card["id"], third["id"], off_session=True)
    assert_envelope(reply, 404, "not_found")
    assert_envelope(clinic.request("DELETE", path, token=token), 404, "not_found")
    assert clinic.invoice(patient, third["id"])["status"] == "open"
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


def test_saved_card_declined_off_session_is_a_402_and_the_invoice_stays_open(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    card = save_card(clinic, driver, patient, CHARGE_DECLINED)  # saves fine, charges fail
    invoice = clinic.create_invoice(
        patient, [{"description": "Physiotherapy session", "quantity": 1, "unit_amount": 9000}]
    )
    reply = staff_charge(clinic, patient, card["id"], invoice["id"], off_session=True)
    error = assert_envelope(reply, 402, "card_declined")
    assert error["message"], error
    after = clinic.invoice(patient, invoice["id"])
    assert (after["status"], after["amount_paid"], after["payments"]) == ("open", 0, []), after
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


# -- account credit --------------------------------------------------------------------------


def test_a_portal_topup_settles_by_webhook_and_pays_an_invoice_later(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    token = clinic.patient_token(patient)
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, "/credit/topups"),
        token=token,
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": 5000, "location_id": "loc_main", "consent": CONSENT},
    )
    assert reply.status == 201, reply
    payment = reply.body
    assert (payment["purpose"], payment["status"]) == ("credit_topup", "requires_payment_method")
    code, confirmed = driver.confirm_payment(payment, VISA)
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed

    view = poll(
        lambda: credit(clinic, patient), lambda v: v["balance"] == 5000, driver.webhook_timeout
    )
    [entry] = view["activity"]
    assert (entry["type"], entry["location_id"]) == ("topup", "loc_main")
    assert entry["actor"]["role"] == "patient"  # collected by the patient, not by staff

    invoice = clinic.create_invoice(
        patient, [{"description": "Session", "quantity": 1, "unit_amount": 3000}]
    )
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/invoices/{invoice['id']}/apply-credit"),
        token=token,
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={},
    )
    assert reply.status == 200, reply
    assert (reply.body["status"], reply.body["balance_due"]) == ("paid", 0)
    view = credit(clinic, patient)
    assert view["balance"] == 2000
    assert [e["type"] for e in view["activity"]] == ["applied", "topup"]
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


# -- refunds ---------------------------------------------------------------------------------


def test_staff_refund_part_of_a_card_payment_over_http(
    money_clinic: HttpClinic, stripe_driver: StripeDriver, stack: Stack
) -> None:
    clinic, driver, patient = money_clinic, stripe_driver, new_patient()
    invoice, payment = card_paid(clinic, driver, patient)
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/payments/{payment['id']}/refunds"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": 3560, "reason": "requested_by_customer"},
    )
    assert reply.status == 201, reply
    assert reply.body["refunded_amount"] == 3560
    refund_id = reply.body["refunds"][0]["stripe_refund_id"]
    at_stripe = driver.retrieve(f"/v1/refunds/{refund_id}", clinic.secret_key)
    assert (at_stripe["amount"], at_stripe["reason"]) == (3560, "requested_by_customer")
    reopened = clinic.invoice(patient, invoice["id"])
    assert (reopened["status"], reopened["balance_due"]) == ("partially_paid", 3560)
    # More than is left to refund: a 409 that says how much is left.
    reply = clinic.request(
        "POST",
        clinic.patient_path(patient, f"/payments/{payment['id']}/refunds"),
        token=clinic.staff_token(),
        headers={"Idempotency-Key": secrets.token_hex(8)},
        body={"amount": SESSION_TOTAL, "reason": "requested_by_customer"},
    )
    assert reply.status == 409, reply
    assert str(SESSION_TOTAL - 3560) in reply.body["error"]["message"]
    assert_money_invariant(stack.moto_url, stack.table_name, clinic.clinic_id, patient)


# -- choosing the Stripe ---------------------------------------------------------------------


def test_live_mode_needs_both_test_keys_and_refuses_live_ones(stack: Stack) -> None:
    """`make test-stripe` without its keys must fail and say what to set, never skip green."""
    secret, publishable = "sk_test_" + "a" * 24, "pk_test_" + "b" * 24
    cases = {
        "STRIPE_TEST_SECRET_KEY is not set": {"STRIPE_TEST_PUBLISHABLE_KEY": publishable},
        "STRIPE_TEST_PUBLISHABLE_KEY is not set": {"STRIPE_TEST_SECRET_KEY": secret},
        "STRIPE_TEST_SECRET_KEY is a live-mode key": {
            "STRIPE_TEST_SECRET_KEY": "sk_live_" + "a" * 24,
            "STRIPE_TEST_PUBLISHABLE_KEY": publishable,
        },
        "STRIPE_TEST_PUBLISHABLE_KEY is a live-mode key": {
            "STRIPE_TEST_SECRET_KEY": secret,
            "STRIPE_TEST_PUBLISHABLE_KEY": "pk_live_" + "b" * 24,
        },
    }
    for message, keys in cases.items():
        with pytest.raises(LiveModeError, match=message) as raised:
            driver_for(stack, {"E2E_STRIPE": "live", **keys})
        assert "STRIPE_TEST_SECRET_KEY=sk_test_" in str(raised.value)
    with pytest.raises(LiveModeError, match="expected one of fake, live"):
        driver_for(stack, {"E2E_STRIPE": "staging"})
    assert driver_for(stack, {}).mode == "fake"
