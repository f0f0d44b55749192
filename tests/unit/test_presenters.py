"""What responses show of a card: its wallet (Apple Pay, Google Pay...) on a payment, a receipt
and a saved-card listing, and null for a plain card, as the JSON a caller receives."""

from __future__ import annotations

import pytest
from clinic_payments.api.presenters import payment_out, receipt_out, saved_card_out
from clinic_payments.domain.documents import compose_receipt
from clinic_payments.domain.model import (
    Actor,
    Caller,
    CardSummary,
    ClinicSettings,
    Consent,
    Credit,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    Role,
    SavedCard,
)

pytestmark = pytest.mark.unit

STAFF = Caller(sub="desk-1", role=Role.STAFF, clinic_id="c1")
APPLE_PAY_VISA = CardSummary("pm_1", "visa", "4242", 12, 2034, wallet="apple_pay")
PLAIN_VISA = CardSummary("pm_2", "visa", "4242", 12, 2034)


def succeeded(card: CardSummary) -> Payment:
    return Payment(
        id="pay_1",
        clinic_id="c1",
        patient_id="p1",
        status=PaymentStatus.SUCCEEDED,
        method=PaymentMethodType.CARD,
        purpose=PaymentPurpose.INVOICE,
        amount=4200,
        fee_amount=0,
        currency="usd",
        allocations=[],
        credit_amount=4200,
        created_by=STAFF.actor(),
        created_at="2026-11-22T10:00:00.000Z",
        payment_method=card,
        confirmation_number="ZZZMNPQRST",
        succeeded_at="2026-11-22T10:00:01.000Z",
        amount_received=4200,
    )


@pytest.mark.parametrize(
    ("card", "wallet"),
    [
        (APPLE_PAY_VISA, "apple_pay"),
        (CardSummary("pm_3", "mastercard", "4444", wallet="google_pay"), "google_pay"),
        (CardSummary("pm_4", "visa", "4242", wallet="link"), "link"),
        (PLAIN_VISA, None),
    ],
)
def test_a_payment_and_its_receipt_show_the_cards_wallet(
    card: CardSummary, wallet: str | None
) -> None:
    payment = payment_out(succeeded(card), STAFF).model_dump(mode="json")
    assert payment["payment_method"] == {
        "id": card.id,
        "brand": card.brand,
        "last4": card.last4,
        "wallet": wallet,
    }
    receipt = compose_receipt(
        succeeded(card), {}, ClinicSettings(clinic_id="c1"), Credit(4200, "usd", 1)
    )
    shown = receipt_out(receipt).model_dump(mode="json")
    assert shown["card"] == {"brand": card.brand, "last4": card.last4, "wallet": wallet}


@pytest.mark.parametrize(("card", "wallet"), [(APPLE_PAY_VISA, "apple_pay"), (PLAIN_VISA, None)])
def test_a_saved_card_shows_its_wallet(card: CardSummary, wallet: str | None) -> None:
    consent = Consent(True, "v1", Actor("u-9", Role.PATIENT), "2026-11-22T10:00:00.000Z")
    shown = saved_card_out(SavedCard(card, consent)).model_dump(mode="json")
    assert (shown["id"], shown["last4"], shown["wallet"]) == (card.id, "4242", wallet)
