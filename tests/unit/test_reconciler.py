"""The reconciler: payments left non-final are settled from Stripe's own state."""

from __future__ import annotations

from datetime import timedelta

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import PaymentProviderUnavailableError
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Allocation,
    Failure,
    InvoiceStatus,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
)
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.reconciling import Reconciler

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

MIN_AGE = timedelta(minutes=5)
ABANDON_AFTER = timedelta(hours=1)


@pytest.fixture
def world() -> World:
    return make_world()


def reconciler(world: World) -> Reconciler:
    return Reconciler(
        world.repo,
        world.payments,
        world.stripe,
        world.clock,
        min_age=MIN_AGE,
        abandon_after=ABANDON_AFTER,
    )


def portal_payment(world: World, clinic_id: str = CLINIC, amount: int = 5000) -> Payment:
    if clinic_id == CLINIC:
        invoice = world.invoice(amount)
        request = PaymentRequest(PaymentMethodType.CARD, [RequestedAllocation(invoice.id)])
    else:
        request = PaymentRequest(PaymentMethodType.CARD, amount=amount)  # all to credit
    return world.payments.create(patient_caller(), clinic_id, PATIENT, request, new_id("pay"))


def saved_card_payment(world: World, outcome: Unavailable) -> Payment:
    invoice = world.invoice(5000)
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(invoice.id)],
        payment_method_id=world.saved_card(),
    )
    world.gateway.script(outcome)
    with pytest.raises(PaymentProviderUnavailableError) as caught:
        world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    payment: Payment = caught.value.payment
    return payment


def stored(world: World, payment: Payment) -> Payment:
    found = world.repo.get_payment(payment.clinic_id, payment.patient_id, payment.id)
    assert found is not None
    return found


def test_a_succeeded_intent_whose_webhook_was_lost_is_settled(world: World) -> None:
    payment = portal_payment(world)
    world.gateway.set_intent(str(payment.stripe_payment_intent_id), "succeeded")
    world.clock.advance(MIN_AGE * 2)

    report = reconciler(world).run()

    assert (report.examined, report.settled, report.errors) == (1, 1, [])
    settled = stored(world, payment)
    assert settled.status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(settled.allocations[0].invoice_id).status is InvoiceStatus.PAID
    assert not world.repo.is_pending(settled)
    assert reconciler(world).run().examined == 0  # nothing left to look at


def test_a_processing_intent_is_left_processing(world: World) -> None:
    payment = portal_payment(world)
    world.gateway.set_intent(str(payment.stripe_payment_intent_id), "processing")  # ACH, say
    world.clock.advance(MIN_AGE * 2)

    first = reconciler(world).run()
    assert (first.examined, first.updated) == (1, 1)
    assert stored(world, payment).status is PaymentStatus.PROCESSING

    second = reconciler(world).run()
    assert (second.examined, second.unchanged, second.settled) == (1, 1, 0)
    assert stored(world, payment).status is PaymentStatus.PROCESSING
    assert world.repo.is_pending(payment)
    assert stored(world, payment).amount_received == 0


def test_a_payment_younger_than_the_minimum_age_is_not_examined(world: World) -> None:
    payment = portal_payment(world)
    world.gateway.set_intent(str(payment.stripe_payment_intent_id), "succeeded")
    world.clock.advance(MIN_AGE / 2)
    assert reconciler(world).run().examined == 0
    assert stored(world, payment).status is PaymentStatus.REQUIRES_PAYMENT_METHOD


def test_a_payment_that_never_reached_stripe_is_marked_failed_after_abandon_after(
    world: World,
) -> None:
    payment = saved_card_payment(world, Unavailable())
    world.clock.advance(ABANDON_AFTER / 2)
    early = reconciler(world).run()
    assert (early.examined, early.unchanged, early.abandoned) == (1, 1, 0)
    assert stored(world, payment).status is PaymentStatus.PROCESSING

    world.clock.advance(ABANDON_AFTER)
    late = reconciler(world).run()

    assert (late.examined, late.abandoned) == (1, 1)
    abandoned = stored(world, payment)
    assert abandoned.status is PaymentStatus.FAILED
    assert abandoned.failure is not None
    assert abandoned.failure.code == "not_submitted"
    assert not world.repo.is_pending(abandoned)
    assert world.gateway.calls_named("retrieve_payment_intent") == []


def test_an_abandoned_payment_that_stripe_did_charge_still_settles_by_webhook(
    world: World,
) -> None:
    payment = saved_card_payment(world, Unavailable(after_create=True))
    world.clock.advance(ABANDON_AFTER * 2)
    assert reconciler(world).run().abandoned == 1

    [intent_id] = world.gateway.intent_ids()
    world.deliver(intent_event(world.gateway.retrieve_payment_intent(intent_id)))

    assert stored(world, payment).status is PaymentStatus.SUCCEEDED


def test_a_cash_payment_whose_settlement_failed_leaves_nothing_and_its_retry_settles(
    world: World,
) -> None:
    invoice = world.invoice(5000)
    world.repo.fail_next("settle", RuntimeError("the Lambda timed out"))
    payment_id = new_id("pay")
    request = PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(invoice.id)])
    with pytest.raises(RuntimeError):
        world.payments.create(STAFF, CLINIC, PATIENT, request, payment_id, fresh=True)
    # Written settled in one transaction, or not at all: nothing half-done to reconcile.
    assert world.repo.get_payment(CLINIC, PATIENT, payment_id) is None
    assert world.stored_invoice(invoice.id).amount_paid == 0

    retried = world.payments.create(STAFF, CLINIC, PATIENT, request, payment_id)

    assert retried.status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(invoice.id).amount_paid == 5000


def test_a_cash_payment_recorded_before_the_lambda_died_is_settled(world: World) -> None:
    # Recorded, not settled: what a request that died between the two writes of earlier
    # versions left in the table.
    invoice = world.invoice(5000)
    payment_id = new_id("pay")
    recorded = Payment(
        id=payment_id,
        clinic_id=CLINIC,
        patient_id=PATIENT,
        status=PaymentStatus.PROCESSING,
        method=PaymentMethodType.CASH,
        purpose=PaymentPurpose.INVOICE,
        amount=5000,
        fee_amount=0,
        currency="usd",
        allocations=[Allocation(invoice.id, 5000)],
        credit_amount=0,
        created_by=STAFF.actor(),
        created_at=world.clock.now(),
    )
    assert world.repo.put_new_payment(recorded)
    world.clock.advance(MIN_AGE * 2)

    report = reconciler(world).run()

    assert report.settled == 1
    assert world.stored_payment(payment_id).status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(invoice.id).amount_paid == 5000


def test_one_clinics_provider_error_does_not_stop_the_others(world: World) -> None:
    world.add_clinic("clinic_b")
    theirs = portal_payment(world, clinic_id="clinic_b")  # the oldest: examined first
    world.clock.advance(timedelta(seconds=1))
    ours = portal_payment(world)
    world.gateway.set_intent(str(ours.stripe_payment_intent_id), "succeeded")
    world.stripe.gateway("clinic_b", ACCOUNT).unavailable = True
    world.clock.advance(MIN_AGE * 2)

    report = reconciler(world).run()

    assert report.examined == 2
    assert report.errors == [f"{theirs.id}: payment_provider_unavailable"]
    assert report.settled == 1
    assert stored(world, ours).status is PaymentStatus.SUCCEEDED
    assert stored(world, theirs).status is PaymentStatus.REQUIRES_PAYMENT_METHOD
    assert world.repo.is_pending(theirs)  # the next run tries again


def test_a_clinic_whose_keys_are_missing_is_reported_not_fatal(world: World) -> None:
    world.add_clinic("clinic_b")
    theirs = portal_payment(world, clinic_id="clinic_b")
    world.stripe.missing.add(("clinic_b", ACCOUNT))
    world.clock.advance(timedelta(seconds=1))
    ours = portal_payment(world)
    world.gateway.set_intent(str(ours.stripe_payment_intent_id), "succeeded")
    world.clock.advance(MIN_AGE * 2)

    report = reconciler(world).run()

    assert report.errors == [f"{theirs.id}: payment_provider_unavailable"]
    assert stored(world, ours).status is PaymentStatus.SUCCEEDED


def test_abandoned_portal_payments_do_not_starve_the_reconciler(world: World) -> None:
    # Patients who open the pay page and leave create intents that stay requires_payment_method
    # for ever. The reconciler takes the oldest `limit` pending payments each run: if those are
    # never dropped, a newer payment whose webhook was lost is never reached.
    limit = 3
    for _ in range(limit):
        portal_payment(world)
    world.clock.advance(ABANDON_AFTER * 2)
    stuck = portal_payment(world)
    world.gateway.set_intent(str(stuck.stripe_payment_intent_id), "succeeded")
    world.clock.advance(MIN_AGE * 2)

    for _ in range(3):
        reconciler(world).run(limit=limit)

    assert stored(world, stuck).status is PaymentStatus.SUCCEEDED


def test_a_failed_attempt_retried_successfully_is_settled_even_if_the_webhook_is_lost(
    world: World,
) -> None:
    # A declined attempt leaves the payment failed, which is not final: the patient may confirm
    # the same intent again with another card. If that succeeds and its webhook is lost, only
    # the reconciler can settle it (DESIGN.md, exactly-once settlement, 5).
    payment = portal_payment(world)
    intent_id = str(payment.stripe_payment_intent_id)
    declined = world.gateway.set_intent(
        intent_id,
        "requires_payment_method",
        last_error=Failure("card_declined", "insufficient_funds", "Insufficient funds."),
    )
    world.deliver(intent_event(declined, "payment_intent.payment_failed"))
    assert stored(world, payment).status is PaymentStatus.FAILED
    world.gateway.set_intent(intent_id, "succeeded")  # the second card; its webhook is lost
    world.clock.advance(MIN_AGE * 2)

    reconciler(world).run()

    assert stored(world, payment).status is PaymentStatus.SUCCEEDED
