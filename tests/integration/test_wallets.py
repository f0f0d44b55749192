"""Cards paid through Apple Pay or Google Pay, through the handlers against moto and the Stripe
fake: the wallet shows on the payment, on its receipt (JSON, PDF and email) and in the saved-card
listing, read from what Stripe sends anyway (the PaymentMethod expanded on the intent,
charge.succeeded, the customer's card list), never from an extra Stripe request; a plain card
shows null.

The portal's wallet button is played as Stripe.js plays it: the wallet sheet's card token (the
fake's `/_compat/wallet_tokens` control stands in for the device) made a PaymentMethod with the
publishable key, then confirmCardPayment / confirmCardSetup with that PaymentMethod."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.conftest import Api
from tests.integration.test_documents import RECEIPT, mailbox, pdf_of, pdf_text, raw_get, receipt
from tests.integration.test_payments import start_card_payment
from tests.integration.test_saved_cards import add_card, deliver_setup, list_cards, save_card
from tests.integration.test_webhook import assert_settled_once, card_of
from tests.support.calls import counting
from tests.support.fixtures import stripe_resources
from tests.support.mailbox import body_text, sent_emails
from tests.support.portal import confirm_with, wallet_card

pytestmark = pytest.mark.integration

PATIENT = "pat_a"


def save_wallet_card(clinic: Api, wallet: str) -> str:
    """A card added without paying, through the wallet button, reconciled by the webhook."""
    status, setup = add_card(clinic, PATIENT)
    assert status == 201, setup
    stripe_url, key = clinic.stack.stripe_url, setup["publishable_key"]
    payment_method = wallet_card(stripe_url, key, wallet)
    code, confirmed = confirm_with(
        stripe_url,
        "setup_intents",
        setup["setup_intent_id"],
        setup["client_secret"],
        key,
        payment_method["id"],
    )
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    assert deliver_setup(clinic, setup["setup_intent_id"]) == [(200, {"received": True})]
    return str(payment_method["id"])


def receipt_pdf_text(clinic: Api, payment_id: str) -> str:
    params = {"patient_id": PATIENT, "payment_id": payment_id}
    return pdf_text(pdf_of(raw_get(clinic, RECEIPT, params, query={"format": "pdf"})))


def test_saved_cards_are_listed_with_their_wallets_and_a_plain_card_with_null(
    clinic: Api,
) -> None:
    apple = save_wallet_card(clinic, "apple_pay")
    google = save_wallet_card(clinic, "google_pay")
    plain = save_card(clinic, PATIENT)

    with counting(clinic.stack.stripe_url) as calls:
        cards = list_cards(clinic, PATIENT)

    assert calls.stripe == {"GET /v1/payment_methods": 1}  # the one list, as before
    assert {card["id"]: card["wallet"] for card in cards} == {
        apple: "apple_pay",
        google: "google_pay",
        plain: None,
    }
    [listed] = [card for card in cards if card["id"] == apple]
    assert (listed["brand"], listed["last4"]) == ("visa", "4242")
    assert listed["consent"] is not None


def test_staff_charge_a_saved_apple_pay_card_and_the_payment_and_receipt_say_apple_pay(
    clinic: Api,
) -> None:
    pm_id = save_wallet_card(clinic, "apple_pay")
    invoice = clinic.create_invoice(PATIENT, 4000)
    to = mailbox()
    body = {
        "method": "card",
        "payment_method_id": pm_id,
        "off_session": True,
        "allocations": [{"invoice_id": invoice["id"]}],
        "receipt_email": to,
    }

    with counting(clinic.stack.stripe_url) as calls:
        status, payment = clinic.pay(PATIENT, body, role="staff")

    assert status == 201, payment
    assert payment["status"] == "succeeded"
    # The card comes back expanded on the intent: the wallet costs no request.
    assert calls.stripe == {"POST /v1/payment_intents": 1}
    shown = {"id": pm_id, "brand": "visa", "last4": "4242", "wallet": "apple_pay"}
    assert payment["payment_method"] == shown
    assert clinic.payment(PATIENT, payment["id"])["payment_method"] == shown

    status, as_json = receipt(clinic, payment["id"])
    assert status == 200, as_json
    assert as_json["card"] == {"brand": "visa", "last4": "4242", "wallet": "apple_pay"}
    assert "Apple Pay (Visa ending 4242)" in receipt_pdf_text(clinic, payment["id"])
    [message] = sent_emails(clinic.stack.moto_url, to)
    assert "Payment method: Apple Pay (Visa ending 4242)" in body_text(message)
    clinic.check_invariant(PATIENT)


def test_a_portal_payment_through_google_pay_shows_the_wallet_charge_succeeded_names(
    clinic: Api,
) -> None:
    to = mailbox()
    invoice = clinic.create_invoice(PATIENT, 4200)
    payment = start_card_payment(clinic, PATIENT, invoice["id"], receipt_email=to)
    stripe_url, key = clinic.stack.stripe_url, payment["publishable_key"]
    intent_id = payment["client_secret"].split("_secret_")[0]
    payment_method = wallet_card(stripe_url, key, "google_pay")
    code, intent = confirm_with(
        stripe_url,
        "payment_intents",
        intent_id,
        payment["client_secret"],
        key,
        payment_method["id"],
    )
    assert (code, intent["status"]) == (200, "succeeded"), intent

    intent = clinic.intent(intent_id)
    charged = clinic.charge_event(intent)
    card = card_of(charged)
    assert card["wallet"] == "google_pay"  # the fake's charge, as Stripe's carries it
    # Stripe's order of the two events is not fixed; the card is kept whichever comes first.
    assert clinic.signed_webhook(charged) == (200, {"received": True})
    assert clinic.signed_webhook(clinic.intent_event(intent)) == (200, {"received": True})

    assert_settled_once(clinic, invoice, payment, card, to)
    assert "Google Pay (Visa ending 4242)" in receipt_pdf_text(clinic, payment["id"])
    [message] = sent_emails(clinic.stack.moto_url, to)
    assert "Payment method: Google Pay (Visa ending 4242)" in body_text(message)


def test_a_wallet_stripe_names_otherwise_is_shown_as_stripe_names_it(clinic: Api) -> None:
    """Stripe's own fixture charge was made through Link: its wallet, as Stripe shapes it, in a
    charge.succeeded of a portal payment."""
    invoice = clinic.create_invoice(PATIENT, 4200)
    payment = start_card_payment(clinic, PATIENT, invoice["id"])
    intent_id = payment["client_secret"].split("_secret_")[0]
    stripe_url, key = clinic.stack.stripe_url, payment["publishable_key"]
    code, confirmed = confirm_with(
        stripe_url, "payment_intents", intent_id, payment["client_secret"], key, "pm_card_visa"
    )
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    intent = clinic.intent(intent_id)
    charged = clinic.charge_event(intent)
    fixture_wallet: Any = stripe_resources()["charge"]["payment_method_details"]["card"]["wallet"]
    assert fixture_wallet == {"dynamic_last4": None, "type": "link"}
    charged["data"]["object"]["payment_method_details"]["card"]["wallet"] = copy.deepcopy(
        fixture_wallet
    )

    assert clinic.signed_webhook(charged) == (200, {"received": True})
    assert clinic.signed_webhook(clinic.intent_event(intent)) == (200, {"received": True})

    settled = clinic.payment(PATIENT, payment["id"])
    assert settled["status"] == "succeeded"
    assert settled["payment_method"]["wallet"] == "link"
    assert receipt(clinic, payment["id"])[1]["card"]["wallet"] == "link"
    assert "Link (Visa ending 4242)" in receipt_pdf_text(clinic, payment["id"])
