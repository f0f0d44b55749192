"""The Stripe webhook: signatures on the raw body, stale and forged deliveries, unknown objects,
out-of-order events and failures that must make Stripe retry."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import Api
from tests.integration.test_documents import mailbox, receipt
from tests.integration.test_payments import portal_pays, start_card_payment
from tests.support.mailbox import body_text, sent_emails

pytestmark = pytest.mark.integration

HOOK = "/v1/webhooks/stripe/{clinic_id}/{account_id}"


def paid_intent(clinic):
    invoice = clinic.create_invoice("pat_a", 4200)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    return invoice, payment, clinic.intent(intent["id"])


def test_a_forged_signature_is_400_and_changes_nothing(clinic):
    invoice, _, intent = paid_intent(clinic)
    status, body = clinic.signed_webhook(clinic.intent_event(intent), secret="whsec_forged")
    assert (status, body["error"]["code"]) == (400, "invalid_signature")
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"


def test_a_stale_timestamp_is_400(clinic):
    invoice, _, intent = paid_intent(clinic)
    status, _ = clinic.signed_webhook(clinic.intent_event(intent), timestamp=int(time.time()) - 600)
    assert status == 400
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"


def test_a_body_altered_after_signing_is_400(clinic):
    _, _, intent = paid_intent(clinic)
    event = clinic.intent_event(intent)
    payload = json.dumps(event)
    from stripe import WebhookSignature

    ts = int(time.time())
    signature = WebhookSignature._compute_signature(f"{ts}.{payload}", clinic.webhook_secret)
    tampered = payload.replace('"amount": 4200', '"amount": 1')
    status, _ = clinic.call(
        "POST",
        HOOK,
        {"account_id": "main"},
        raw_body=tampered,
        headers={"Stripe-Signature": f"t={ts},v1={signature}"},
        authenticated=False,
    )
    assert status == 400


@pytest.mark.parametrize("headers", [{}, {"Stripe-Signature": "garbage"}])
def test_a_missing_or_garbled_signature_is_400(clinic, headers):
    status, body = clinic.call(
        "POST", HOOK, {"account_id": "main"}, raw_body="{}", headers=headers, authenticated=False
    )
    assert (status, body["error"]["code"]) == (400, "invalid_signature")


@pytest.mark.parametrize("params", [{"clinic_id": "no_such_clinic"}, {"account_id": "no_such"}])
def test_an_unknown_clinic_or_account_is_400(clinic, params):
    status, _ = clinic.call(
        "POST",
        HOOK,
        {"account_id": "main", **params},
        raw_body="{}",
        headers={"Stripe-Signature": "t=1,v1=00"},
        authenticated=False,
    )
    assert status == 400


def test_an_event_about_an_unknown_intent_is_200(clinic):
    _, _, intent = paid_intent(clinic)
    stranger = {**intent, "id": "pi_unknown", "metadata": {}}
    assert clinic.signed_webhook(clinic.intent_event(stranger)) == (200, {"received": True})


def test_an_event_whose_metadata_names_another_clinic_is_ignored(clinic):
    _, payment, intent = paid_intent(clinic)
    other = {
        **intent,
        "id": "pi_other",
        "metadata": {**intent["metadata"], "clinic_id": "elsewhere"},
    }
    assert clinic.signed_webhook(clinic.intent_event(other))[0] == 200
    assert clinic.payment("pat_a", payment["id"])["status"] == "requires_payment_method"


def test_an_unhandled_event_type_is_200(clinic):
    event = {
        "id": "evt_x1",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    assert clinic.signed_webhook(event) == (200, {"received": True})


def test_out_of_order_events_never_move_a_payment_backwards(clinic):
    invoice, payment, intent = paid_intent(clinic)
    assert clinic.signed_webhook(clinic.intent_event(intent))[0] == 200
    for late in ("processing", "requires_action", "requires_payment_method"):
        event = clinic.intent_event({**intent, "status": late}, f"payment_intent.{late}")
        assert clinic.signed_webhook(event)[0] == 200
    failed = clinic.intent_event(intent, "payment_intent.payment_failed")
    assert clinic.signed_webhook(failed)[0] == 200
    assert clinic.payment("pat_a", payment["id"])["status"] == "succeeded"
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_processing_then_succeeded_settles(clinic):
    invoice, payment, intent = paid_intent(clinic)
    processing = clinic.intent_event(
        {**intent, "status": "processing"}, "payment_intent.processing"
    )
    assert clinic.signed_webhook(processing)[0] == 200
    assert clinic.payment("pat_a", payment["id"])["status"] == "processing"
    assert clinic.signed_webhook(clinic.intent_event(intent))[0] == 200
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"


def test_a_failure_while_processing_answers_5xx_and_the_retry_settles(clinic, monkeypatch):
    from clinic_payments.wiring import container

    invoice, _, intent = paid_intent(clinic)
    event = clinic.intent_event(intent)

    def broken(_self, _write):
        raise RuntimeError("DynamoDB is having a moment")

    # On the class, in a context: patching the cached container's instance left a `settle`
    # attribute on it after undo, which hid later class-level patches (test_money_races' Hold).
    with monkeypatch.context() as patched:
        patched.setattr(type(container().repository), "settle", broken)
        status, body = clinic.signed_webhook(event)
    assert (status, body["error"]["code"]) == (500, "internal_error")
    assert "DynamoDB" not in json.dumps(body)
    # Not marked processed: Stripe's retry of the same event settles it.
    assert clinic.signed_webhook(event) == (200, {"received": True})
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


# -- charge.succeeded before payment_intent.succeeded ---------------------------------------------
# Stripe does not guarantee the order of a payment's two events. The card as charged (brand,
# last four) comes only with charge.succeeded's payment_method_details; it is kept apart from
# what a settlement writes (card_details), so whichever event comes first, the payment and its
# receipt show the card, and the money is counted once.


def confirmed_in_the_portal(clinic: Api, to: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A portal card payment of one invoice (with a receipt email), confirmed with Stripe: the
    invoice and the payment, before Stripe has told us anything."""
    invoice = clinic.create_invoice("pat_a", 4200)
    payment = start_card_payment(clinic, "pat_a", invoice["id"], receipt_email=to)
    code, intent = portal_pays(clinic, payment)
    assert (code, intent["status"]) == (200, "succeeded"), intent
    return invoice, payment


def card_of(charge_event: dict[str, Any]) -> dict[str, Any]:
    """The card as a charge.succeeded event describes it, as a Payment shows it."""
    charge = charge_event["data"]["object"]
    card = charge["payment_method_details"]["card"]
    assert card["brand"], charge
    assert card["last4"], charge
    assert "wallet" in card, charge  # Stripe's shape: null for a card entered as it is
    return {
        "id": charge["payment_method"],
        "brand": card["brand"],
        "last4": card["last4"],
        "wallet": (card["wallet"] or {}).get("type"),
    }


def assert_settled_once(
    clinic: Api, invoice: dict[str, Any], payment: dict[str, Any], card: dict[str, Any], to: str
) -> None:
    """Succeeded with the charge's card, on the payment, its receipt and its one receipt email;
    the invoice paid by this payment once, no credit from a second count; the invariant holds."""
    settled = clinic.payment("pat_a", payment["id"])
    assert settled["status"] == "succeeded"
    assert settled["payment_method"] == card
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["status"], paid["amount_paid"], paid["balance_due"]) == ("paid", 4200, 0)
    assert [(p["payment_id"], p["amount"]) for p in paid["payments"]] == [(payment["id"], 4200)]
    status, body = receipt(clinic, payment["id"])
    assert status == 200, body
    assert body["card"] == {
        "brand": card["brand"],
        "last4": card["last4"],
        "wallet": card["wallet"],
    }
    assert (body["amount"], body["credit_added"], body["credit_balance"]) == (4200, 0, 0)
    [message] = sent_emails(clinic.stack.moto_url, to)
    assert settled["confirmation_number"] in message["Subject"]
    assert f"{card['brand'].title()} ending {card['last4']}" in body_text(message)
    clinic.check_invariant("pat_a")


def test_charge_succeeded_before_payment_intent_succeeded_keeps_the_card_and_settles_once(
    clinic: Api,
) -> None:
    to = mailbox()
    invoice, payment = confirmed_in_the_portal(clinic, to)
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    charged = clinic.charge_event(intent)
    card = card_of(charged)

    assert clinic.signed_webhook(charged) == (200, {"received": True})

    # The card is on the payment already; nothing is settled or counted yet.
    early = clinic.payment("pat_a", payment["id"])
    assert early["status"] == "requires_payment_method"  # until Stripe says it succeeded
    assert early["payment_method"] == card
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 0
    assert receipt(clinic, payment["id"])[0] == 409
    assert sent_emails(clinic.stack.moto_url, to) == []

    assert clinic.signed_webhook(clinic.intent_event(intent)) == (200, {"received": True})

    assert_settled_once(clinic, invoice, payment, card, to)


def test_charge_succeeded_delivered_again_before_and_after_settlement_changes_nothing(
    clinic: Api,
) -> None:
    to = mailbox()
    invoice, payment = confirmed_in_the_portal(clinic, to)
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    charged = clinic.charge_event(intent)
    card = card_of(charged)
    succeeded = clinic.intent_event(intent)

    # Stripe delivers an event again when it is not sure we had it: before the settlement...
    assert clinic.signed_webhook(charged) == (200, {"received": True})
    assert clinic.signed_webhook(charged) == (200, {"received": True})
    assert clinic.signed_webhook(succeeded) == (200, {"received": True})
    # ... and after it: the same charge.succeeded, another event of the same charge, and the
    # payment_intent.succeeded again.
    assert clinic.signed_webhook(charged) == (200, {"received": True})
    assert clinic.signed_webhook(clinic.charge_event(intent)) == (200, {"received": True})
    assert clinic.signed_webhook(succeeded) == (200, {"received": True})

    assert_settled_once(clinic, invoice, payment, card, to)
