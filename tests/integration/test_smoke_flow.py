"""The core path through the handlers: create an invoice, pay it by card, see it paid."""

import pytest

from tests.support.portal import confirm_card

pytestmark = pytest.mark.integration


def test_card_payment_settles_invoice(clinic):
    invoice = clinic.create_invoice("pat_a", 12000)
    status, payment = clinic.pay(
        "pat_a", {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    )
    assert status == 201, payment
    assert payment["status"] == "requires_payment_method"
    assert payment["client_secret"]
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, confirmed = confirm_card(
        clinic.stack.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"]
    )
    assert code == 200, confirmed
    assert confirmed["status"] == "succeeded"
