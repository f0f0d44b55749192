"""Stripe webhooks on the fakes: verified, deduplicated, settled through the one path."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import PaymentProviderUnavailableError, WebhookSignatureError
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Failure,
    IntentSnapshot,
    InvoiceStatus,
    Payment,
    PaymentMethodType,
    PaymentStatus,
    StripeKeys,
    WebhookEvent,
)
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.ports import StripeObjectLink
from clinic_payments.domain.webhooks import WebhookOutcome

from tests.unit.fakes import (
    ACCOUNT,
    CLINIC,
    PATIENT,
    STAFF,
    Unavailable,
    World,
    intent_event,
    make_world,
    patient_caller,
)

pytestmark = pytest.mark.unit

ACCOUNT_KEY = f"{CLINIC}#{ACCOUNT}"


@pytest.fixture
def world() -> World:
    return make_world()


def portal_payment(world: World, clinic_id: str = CLINIC) -> Payment:
    """A card payment started in the portal: an intent awaiting the card (Stripe.js)."""
    if clinic_id == CLINIC:
        invoice = world.invoice(5000)
        request = PaymentRequest(PaymentMethodType.CARD, [RequestedAllocation(invoice.id)])
    else:
        request = PaymentRequest(PaymentMethodType.CARD, amount=5000)  # all to credit
    return world.payments.create(patient_caller(), clinic_id, PATIENT, request, new_id("pay"))


def captured(world: World, payment: Payment, clinic_id: str = CLINIC) -> IntentSnapshot:
    """The cardholder confirmed and Stripe captured the charge."""
    gateway = world.stripe.gateway(clinic_id, ACCOUNT)
    return gateway.set_intent(str(payment.stripe_payment_intent_id), "succeeded")


def stored(world: World, payment: Payment) -> Payment:
    found = world.repo.get_payment(payment.clinic_id, payment.patient_id, payment.id)
    assert found is not None
    return found


def money_state(world: World) -> dict[str, Any]:
    repo = world.repo
    return copy.deepcopy(
        {
            "invoices": repo.invoices,
            "payments": repo.payments,
            "ledger": repo.ledger,
            "credits": repo.credits,
        }
    )


def test_a_succeeded_event_settles_the_payment(world: World) -> None:
    payment = portal_payment(world)
    outcome = world.deliver(intent_event(captured(world, payment), event_id="evt_1"))

    assert outcome is WebhookOutcome.PROCESSED
    settled = stored(world, payment)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(settled.allocations[0].invoice_id).status is InvoiceStatus.PAID
    assert world.repo.event_processed(ACCOUNT_KEY, "evt_1")


def test_a_duplicate_event_changes_nothing(world: World) -> None:
    payment = portal_payment(world)
    event = intent_event(captured(world, payment), event_id="evt_dup")
    world.deliver(event)
    before, writes = money_state(world), world.repo.settle_calls

    assert world.deliver(event) is WebhookOutcome.DUPLICATE
    assert money_state(world) == before
    assert world.repo.settle_calls == writes


def test_a_second_event_for_a_settled_intent_changes_nothing(world: World) -> None:
    payment = portal_payment(world)
    intent = captured(world, payment)
    world.deliver(intent_event(intent))
    before = money_state(world)

    # Stripe sends payment_intent.succeeded and, e.g., a late processing event for one intent.
    assert world.deliver(intent_event(intent)) is WebhookOutcome.PROCESSED
    processing = replace(intent, status="processing")
    world.deliver(intent_event(processing, "payment_intent.processing"))
    assert money_state(world) == before
    assert stored(world, payment).status is PaymentStatus.SUCCEEDED


def test_an_event_for_an_unknown_object_is_ignored(world: World) -> None:
    stranger = IntentSnapshot(
        "pi_not_ours", "succeeded", 100, 100, "usd", None, {}, None, None, None
    )
    before = money_state(world)
    assert world.deliver(intent_event(stranger, event_id="evt_x")) is WebhookOutcome.IGNORED
    assert money_state(world) == before
    assert world.repo.event_processed(ACCOUNT_KEY, "evt_x")  # answered 2xx, not retried


def test_an_event_type_not_handled_is_ignored(world: World) -> None:
    event = WebhookEvent("evt_c", "charge.refunded", "charge", "ch_1", None)
    assert world.deliver(event) is WebhookOutcome.IGNORED


def test_an_event_whose_metadata_names_another_clinic_is_ignored(world: World) -> None:
    world.add_clinic("clinic_b")
    theirs = portal_payment(world, clinic_id="clinic_b")
    intent = captured(world, theirs, clinic_id="clinic_b")
    world.repo.links.clear()  # so only the metadata could say whose it is
    before = money_state(world)

    # Posted to clinic_a's endpoint, signed with clinic_a's secret.
    assert world.deliver(intent_event(intent)) is WebhookOutcome.IGNORED
    assert money_state(world) == before


def test_an_event_linked_to_another_clinic_is_ignored(world: World) -> None:
    world.add_clinic("clinic_b")
    theirs = portal_payment(world, clinic_id="clinic_b")
    intent = captured(world, theirs, clinic_id="clinic_b")
    before = money_state(world)

    assert world.deliver(intent_event(intent), clinic_id=CLINIC) is WebhookOutcome.IGNORED
    assert money_state(world) == before
    # Delivered to its own clinic's endpoint, the same event settles.
    assert world.deliver(intent_event(intent), clinic_id="clinic_b") is WebhookOutcome.PROCESSED
    assert stored(world, theirs).status is PaymentStatus.SUCCEEDED


def test_an_event_from_another_account_of_the_clinic_is_ignored(world: World) -> None:
    world.secrets.put_keys(CLINIC, "acct_other", StripeKeys("sk_test_o", "pk_test_o", "whsec_o"))
    payment = portal_payment(world)
    intent = captured(world, payment)
    assert world.deliver(intent_event(intent), account_id="acct_other") is WebhookOutcome.IGNORED
    assert stored(world, payment).status is PaymentStatus.REQUIRES_PAYMENT_METHOD


def test_an_event_is_marked_processed_only_after_its_effects(world: World) -> None:
    payment = portal_payment(world)
    event = intent_event(captured(world, payment), event_id="evt_retry")
    world.repo.fail_next("settle", RuntimeError("DynamoDB is unavailable"))

    with pytest.raises(RuntimeError):
        world.deliver(event)
    assert not world.repo.event_processed(ACCOUNT_KEY, "evt_retry")  # Stripe will retry
    assert stored(world, payment).status is PaymentStatus.REQUIRES_PAYMENT_METHOD

    assert world.deliver(event) is WebhookOutcome.PROCESSED
    assert stored(world, payment).status is PaymentStatus.SUCCEEDED
    assert world.repo.event_processed(ACCOUNT_KEY, "evt_retry")


def test_an_event_whose_marking_failed_is_redelivered_without_counting_twice(
    world: World,
) -> None:
    payment = portal_payment(world)
    event = intent_event(captured(world, payment), event_id="evt_mark")
    before = money_state(world)
    # The mark is written by the settlement's own transaction: that write fails, whole.
    world.repo.fail_next("settle", RuntimeError("DynamoDB is unavailable"))
    with pytest.raises(RuntimeError):
        world.deliver(event)
    assert money_state(world) == before  # nothing settled without its mark

    assert world.deliver(event) is WebhookOutcome.PROCESSED
    settled_state = money_state(world)
    assert world.deliver(event) is WebhookOutcome.DUPLICATE
    assert money_state(world) == settled_state
    invoice = world.stored_invoice(stored(world, payment).allocations[0].invoice_id)
    assert (invoice.amount_paid, len(invoice.payments)) == (5000, 1)


def test_an_intent_whose_link_was_never_written_settles_by_its_metadata(world: World) -> None:
    invoice = world.invoice(5000)
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(invoice.id)],
        payment_method_id=world.saved_card(),
    )
    world.gateway.script(Unavailable(after_create=True))  # charged; the answer was lost
    with pytest.raises(PaymentProviderUnavailableError) as caught:
        world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    payment = caught.value.payment
    [intent_id] = world.gateway.intent_ids()
    assert world.repo.get_stripe_link(intent_id) is None

    intent = world.gateway.retrieve_payment_intent(intent_id)
    assert world.deliver(intent_event(intent)) is WebhookOutcome.PROCESSED

    settled = stored(world, payment)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert settled.stripe_payment_intent_id == intent_id
    assert world.repo.get_stripe_link(intent_id) == StripeObjectLink(
        CLINIC, PATIENT, payment.id, ACCOUNT
    )
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID


def test_a_payment_failed_event_records_the_failure_and_a_retry_may_still_succeed(
    world: World,
) -> None:
    payment = portal_payment(world)
    intent_id = str(payment.stripe_payment_intent_id)
    declined = world.gateway.set_intent(
        intent_id,
        "requires_payment_method",
        last_error=Failure("card_declined", "insufficient_funds", "Insufficient funds."),
    )
    world.deliver(intent_event(declined, "payment_intent.payment_failed"))
    failed = stored(world, payment)
    assert failed.status is PaymentStatus.FAILED
    assert failed.failure == Failure("card_declined", "insufficient_funds", "Insufficient funds.")

    world.deliver(intent_event(world.gateway.set_intent(intent_id, "succeeded")))
    assert stored(world, payment).status is PaymentStatus.SUCCEEDED


def test_a_late_failure_event_after_success_is_ignored(world: World) -> None:
    payment = portal_payment(world)
    intent = captured(world, payment)
    world.deliver(intent_event(intent))
    late = replace(
        intent,
        status="requires_payment_method",
        last_error=Failure("card_declined", None, "Declined."),
    )
    world.deliver(intent_event(late, "payment_intent.payment_failed"))
    assert stored(world, payment).status is PaymentStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("account_id", "secret", "signature"),
    [
        pytest.param(ACCOUNT, "whsec_wrong", "sign", id="wrong-secret"),
        pytest.param("acct_unknown", "whsec_clinic_a", "sign", id="unknown-account"),
        pytest.param(ACCOUNT, f"whsec_{CLINIC}", "", id="no-signature"),
    ],
)
def test_an_unverifiable_event_is_refused_and_not_marked(
    world: World, account_id: str, secret: str, signature: str
) -> None:
    payment = portal_payment(world)
    event = intent_event(captured(world, payment), event_id="evt_forged")
    payload, signed = world.verifier.sign(event, secret)
    with pytest.raises(WebhookSignatureError):
        world.webhooks.handle(CLINIC, account_id, payload, signed if signature else None)
    assert world.repo.events == {}
    assert stored(world, payment).status is PaymentStatus.REQUIRES_PAYMENT_METHOD
