"""The codec's card records, through DynamoDB's own type (de)serializer: what is written reads
back as it was, and items written before a field existed read with its default."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from clinic_payments.adapters import codec
from clinic_payments.domain.model import (
    Actor,
    CardSummary,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    Role,
)

pytestmark = pytest.mark.unit

WALLET_CARD = CardSummary("pm_wallet", "visa", "4242", 12, 2034, wallet="apple_pay")


def through_dynamodb(item: dict[str, Any]) -> dict[str, Any]:
    """The item as a read returns it: numbers come back as Decimals."""
    serializer, deserializer = TypeSerializer(), TypeDeserializer()
    return {k: deserializer.deserialize(serializer.serialize(v)) for k, v in item.items()}


def payment(card: CardSummary | None) -> Payment:
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
        created_by=Actor("staff-1", Role.STAFF),
        created_at="2026-11-22T10:00:00.000Z",
        payment_method=card,
    )


@pytest.mark.parametrize(
    "card",
    [
        WALLET_CARD,
        replace(WALLET_CARD, wallet="google_pay"),
        replace(WALLET_CARD, wallet="link"),  # another type Stripe reports, kept as it is
        replace(WALLET_CARD, wallet=None),
        CardSummary("pm_bare", None, None),
    ],
)
def test_a_card_reads_back_as_it_was_written_wallet_included(card: CardSummary) -> None:
    stored = codec.card_to(card)
    assert stored is not None
    assert stored["wallet"] == card.wallet
    assert codec.card_from(through_dynamodb(stored)) == card


def test_a_card_written_before_wallets_reads_as_a_plain_card() -> None:
    legacy = {"id": "pm_old", "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}
    assert codec.card_from(through_dynamodb(legacy)) == CardSummary(
        "pm_old", "visa", "4242", 12, 2030, wallet=None
    )


def test_a_payment_keeps_its_wallet_card_and_the_charged_cards_details_win() -> None:
    item = through_dynamodb(codec.payment_to_item(payment(CardSummary("pm_wallet", None, None))))
    assert codec.payment_from(item).payment_method == CardSummary("pm_wallet", None, None)

    # charge.succeeded's card (record_card_details) is read in preference to the settlement's.
    item["card_details"] = through_dynamodb({"card": codec.card_to(WALLET_CARD)})["card"]
    assert codec.payment_from(item).payment_method == WALLET_CARD


def test_a_payment_written_before_wallets_reads_its_card_without_one() -> None:
    item = through_dynamodb(codec.payment_to_item(payment(None)))
    item["payment_method"] = {"id": "pm_old", "brand": "visa", "last4": "4242"}
    item["card_details"] = {"id": "pm_old", "brand": "amex", "last4": "0005", "exp_month": 1}
    assert codec.payment_from(through_dynamodb(item)).payment_method == CardSummary(
        "pm_old", "amex", "0005", 1, None, wallet=None
    )
