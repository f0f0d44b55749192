"""Card refunds that fail after they were pending or even succeeded, on the fakes: what the
refund took back is given back once (credit, invoices, fee), in every order Stripe's events
may arrive; the payment, the invoices and the audit agree."""

from __future__ import annotations

from dataclasses import replace

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.audit import audit_account
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Allocation,
    ChargeSnapshot,
    Invoice,
    InvoiceStatus,
    LedgerEntryType,
    Payment,
    PaymentMethodType,
    PaymentStatus,
    RefundSnapshot,
    WebhookEvent,
)
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.ports import RefundOutcomeWrite, StripeObjectLink
from clinic_payments.domain.refunds.service import STRIPE_ACTOR, RefundService
from clinic_payments.domain.webhooks import WebhookOutcome

from tests.unit.fakes import (
    ACCOUNT,
    CLINIC,
    PATIENT,
    STAFF,
    World,
    make_world,
    refund_event,
)

pytestmark = pytest.mark.unit

EXPIRED = "expired_or_canceled_card"


@pytest.fixture
def world() -> World:
    return make_world()


def refunds(world: World) -> RefundService:
    return RefundService(world.repo, world.stripe, world.clock)


def card_paid(world: World, *amounts: int) -> tuple[Invoice, Payment]:
    """Staff charge the patient's saved card for a new invoice; Stripe captures it at once."""
    invoice = world.invoice(*amounts)
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(invoice.id)],
        payment_method_id=world.saved_card(),
    )
    payment = world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    assert payment.status is PaymentStatus.SUCCEEDED
    return invoice, payment


def refund(
    world: World,
    payment: Payment,
    amount: int | None,
    refund_id: str = "",
    *,
    take_credit_first: bool = False,
) -> Payment:
    return refunds(world).refund(
        STAFF,
        CLINIC,
        PATIENT,
        payment.id,
        amount,
        "requested_by_customer",
        refund_id or new_id("ref"),
        take_credit_first=take_credit_first,
    )


def link(payment: Payment) -> StripeObjectLink:
    return StripeObjectLink(CLINIC, PATIENT, payment.id, ACCOUNT)


def fail_at_stripe(world: World, stripe_refund_id: str) -> RefundSnapshot:
    return world.gateway.move_refund(stripe_refund_id, "failed", EXPIRED)


def assert_audit_clean(world: World) -> None:
    repo = world.repo
    found = audit_account(
        repo.all_invoices(CLINIC, PATIENT),
        repo.all_payments(CLINIC, PATIENT),
        repo.all_ledger(CLINIC, PATIENT),
        repo.list_credits(CLINIC, PATIENT),
    )
    assert found == [], "\n".join(str(d) for d in found)


def test_a_refund_that_fails_after_succeeding_puts_the_invoice_back_once(world: World) -> None:
    invoice, payment = card_paid(world, 5000)
    refunded = refund(world, payment, None)
    [record] = refunded.refunds
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.OPEN
    failed = fail_at_stripe(world, str(record.stripe_refund_id))
    writes_before = world.repo.outcome_writes  # the reservation's confirmation was one

    # Stripe sends all three about one failure, and may deliver each more than once.
    for event_type in ("charge.refund.updated", "refund.updated", "refund.failed"):
        event = refund_event(failed, event_type)
        assert world.deliver(event) is WebhookOutcome.PROCESSED
        assert world.deliver(event) is WebhookOutcome.DUPLICATE

    assert world.repo.outcome_writes == writes_before + 1
    after = world.stored_payment(payment.id)
    [record] = after.refunds
    assert (record.status, record.failure_reason) == ("failed", EXPIRED)
    assert record.returned_to_invoices == [Allocation(invoice.id, 5000)]
    assert (after.refunded_amount, after.status) == (0, PaymentStatus.SUCCEEDED)
    again = world.stored_invoice(invoice.id)
    assert (again.status, again.amount_paid) == (InvoiceStatus.PAID, 5000)
    assert again.payments[-1].method == "refund_failed"
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 0
    assert_audit_clean(world)


def test_a_pending_refund_that_fails_gives_back_credit_and_invoice_parts(world: World) -> None:
    # 1000 of credit from an earlier overpayment: taken first only when staff ask for it.
    first = world.invoice(1000)
    world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(first.id)], amount=2000),
        new_id("pay"),
    )
    invoice, payment = card_paid(world, 5000)
    world.gateway.new_refund_status = "pending"
    [record] = refund(world, payment, 3000, take_credit_first=True).refunds
    assert (record.status, record.from_credit, record.from_invoices) == (
        "pending",
        1000,
        [Allocation(invoice.id, 2000)],
    )
    world.deliver(refund_event(fail_at_stripe(world, str(record.stripe_refund_id))))

    [record] = world.stored_payment(payment.id).refunds
    assert (record.returned_to_credit, record.returned_to_invoices) == (
        1000,
        [Allocation(invoice.id, 2000)],
    )
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 1000
    [entry] = [
        e for e in world.repo.all_ledger(CLINIC, PATIENT) if e.type is LedgerEntryType.REFUND_FAILED
    ]
    assert (entry.amount, entry.payment_id, entry.reason) == (1000, payment.id, EXPIRED)
    assert_audit_clean(world)


def test_what_an_invoice_can_no_longer_take_goes_to_credit(world: World) -> None:
    paid_meanwhile, first = card_paid(world, 3000)
    voided, second = card_paid(world, 2000)
    [one] = refund(world, first, 1200).refunds
    [two] = refund(world, second, None).refunds
    # The rest of the first invoice is paid in cash; the second, fully refunded, is voided.
    world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(paid_meanwhile.id)]),
        new_id("pay"),
    )
    world.invoices.void(CLINIC, PATIENT, voided.id)
    for record in (one, two):
        world.deliver(refund_event(fail_at_stripe(world, str(record.stripe_refund_id))))

    assert world.stored_invoice(paid_meanwhile.id).amount_paid == 3000
    assert world.stored_invoice(voided.id).status is InvoiceStatus.VOID
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 1200 + 2000
    assert world.stored_payment(first.id).refunds[0].returned_to_credit == 1200
    assert_audit_clean(world)


def test_a_failure_reported_before_our_confirmation_releases_the_reservation(
    world: World,
) -> None:
    invoice, payment = card_paid(world, 4000)
    # Reserved, then Stripe refunds; our confirmation dies (Lambda timeout) before it commits.
    world.repo.fail_next("record_refund_outcome", RuntimeError("the function timed out"))
    with pytest.raises(RuntimeError):
        refund(world, payment, 1500, refund_id="ref_first_try")
    [reserved] = world.stored_payment(payment.id).refunds
    assert (reserved.status, reserved.from_invoices) == ("reserved", [Allocation(invoice.id, 1500)])
    [made] = world.gateway.list_refunds(str(payment.stripe_payment_intent_id))
    # The failure arrives first: found by our refund id in its metadata, and given back.
    world.deliver(refund_event(fail_at_stripe(world, made.id), "refund.failed"))
    [record] = world.stored_payment(payment.id).refunds
    assert (record.id, record.status, record.amount) == ("ref_first_try", "failed", 1500)
    assert (record.stripe_refund_id, record.returned_to_invoices) == (
        made.id,
        [Allocation(invoice.id, 1500)],
    )
    assert world.stored_invoice(invoice.id).amount_paid == 4000

    # The client's retry, and the late charge.refunded and refund.created, change nothing.
    retried = refund(world, payment, 1500, refund_id="ref_first_try")
    late_succeeded = replace(made, status="succeeded")
    charge = ChargeSnapshot("ch_1", payment.stripe_payment_intent_id, [late_succeeded])
    world.deliver(
        WebhookEvent("evt_late", "charge.refunded", "charge", "ch_1", None, charge=charge)
    )
    world.deliver(refund_event(late_succeeded, "refund.created"))
    assert not refunds(world).record(
        link(payment),
        refund_id="ref_first_try",
        key=made.id,
        amount=1500,
        reason="x",
        actor=STAFF.actor(),
        stripe_refund_id=made.id,
    )
    assert world.stored_payment(payment.id).refunds == retried.refunds == [record]
    assert world.stored_invoice(invoice.id).amount_paid == 4000
    assert len(world.gateway.calls_named("create_refund")) == 1
    assert_audit_clean(world)


def test_charge_refunded_listing_a_failed_refund_gives_it_back_once(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    [ours] = refund(world, payment, 1000).refunds
    failed = fail_at_stripe(world, str(ours.stripe_refund_id))
    # A refund failed before it reached us at all (no metadata: made in the dashboard).
    stranger = RefundSnapshot("re_dash_failed", 500, "failed", EXPIRED, payment_intent_id="x")
    charge = ChargeSnapshot("ch_1", payment.stripe_payment_intent_id, [failed, stranger])
    for n in range(2):
        event = WebhookEvent(f"evt_cr{n}", "charge.refunded", "charge", "ch_1", None, charge=charge)
        assert world.deliver(event) is WebhookOutcome.PROCESSED

    after = world.stored_payment(payment.id)
    assert [(r.id, r.status) for r in after.refunds] == [
        (ours.id, "failed"),
        ("re_dash_failed", "failed"),
    ]
    assert after.refunds[1].actor == STRIPE_ACTOR
    assert after.refunded_amount == 0
    assert world.stored_invoice(invoice.id).amount_paid == 3000
    assert world.repo.outcome_writes == 2  # our confirmation, then the failure once
    assert_audit_clean(world)


def test_a_dashboard_refund_that_fails_is_recorded_then_given_back(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    intent_id = str(payment.stripe_payment_intent_id)
    made = world.gateway.create_refund(
        payment_intent_id=intent_id, amount=3000, reason=None, metadata={}, idempotency_key="d1"
    )
    assert world.deliver(refund_event(made, "refund.created")) is WebhookOutcome.PROCESSED
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.OPEN
    assert world.stored_payment(payment.id).refunds[0].actor == STRIPE_ACTOR

    world.deliver(refund_event(fail_at_stripe(world, made.id), "charge.refund.updated"))
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID
    assert world.stored_payment(payment.id).refunded_amount == 0
    assert_audit_clean(world)


def test_a_refund_event_reached_through_its_charge_only_finds_the_payment(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    [ours] = refund(world, payment, 3000).refunds
    world.gateway.charges["ch_only"] = str(payment.stripe_payment_intent_id)
    failed = replace(
        fail_at_stripe(world, str(ours.stripe_refund_id)),
        payment_intent_id=None,
        charge_id="ch_only",
    )
    assert world.deliver(refund_event(failed)) is WebhookOutcome.PROCESSED
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID


def test_a_refund_event_for_an_unknown_payment_is_ignored(world: World) -> None:
    stranger = RefundSnapshot("re_x", 100, "failed", EXPIRED, payment_intent_id="pi_not_ours")
    assert world.deliver(refund_event(stranger)) is WebhookOutcome.IGNORED


def test_a_refund_state_only_moves_forward(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    world.gateway.new_refund_status = "pending"
    [ours] = refund(world, payment, 1000).refunds
    stripe_id = str(ours.stripe_refund_id)
    succeeded = world.gateway.move_refund(stripe_id, "succeeded")
    world.deliver(refund_event(succeeded))
    assert world.stored_payment(payment.id).refunds[0].status == "succeeded"
    assert world.stored_invoice(invoice.id).amount_paid == 2000  # nothing moved but the status

    failed = fail_at_stripe(world, stripe_id)
    world.deliver(refund_event(failed))
    # Older states delivered late change nothing: failed is final.
    for late in ("pending", "succeeded"):
        world.deliver(refund_event(replace(failed, status=late, failure_reason=None)))
    world.deliver(refund_event(replace(failed, status="canceled")))
    [record] = world.stored_payment(payment.id).refunds
    assert (record.status, record.failure_reason) == ("failed", EXPIRED)
    assert world.stored_invoice(invoice.id).amount_paid == 3000
    assert world.repo.outcome_writes == 3  # our confirmation, succeeded, failed
    assert_audit_clean(world)


def test_two_deliveries_of_one_failure_at_once_give_back_once(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    [ours] = refund(world, payment, 3000).refunds
    failed = fail_at_stripe(world, str(ours.stripe_refund_id))
    service = refunds(world)

    def the_other_delivery_lands_first(_write: RefundOutcomeWrite) -> None:
        world.repo.before_refund_outcome = None
        assert service.refund_changed(link(payment), failed)

    world.repo.before_refund_outcome = the_other_delivery_lands_first
    assert not service.refund_changed(link(payment), failed)
    assert world.stored_invoice(invoice.id).amount_paid == 3000
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 0
    assert_audit_clean(world)


def test_a_failed_refund_can_be_refunded_again(world: World) -> None:
    invoice, payment = card_paid(world, 3000)
    [ours] = refund(world, payment, None).refunds
    world.deliver(refund_event(fail_at_stripe(world, str(ours.stripe_refund_id))))

    again = refund(world, payment, None)
    assert [r.status for r in again.refunds] == ["failed", "succeeded"]
    assert again.refunded_amount == 3000
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.OPEN
    assert_audit_clean(world)


def test_a_failed_refund_gives_back_its_fee_part(world: World) -> None:
    world.repo.put_settings(replace(world.repo.settings[CLINIC], pass_processing_fees=True))
    invoice, payment = card_paid(world, 1000)
    assert payment.fee_amount > 0
    [ours] = refund(world, payment, None).refunds
    assert ours.from_fee == payment.fee_amount
    world.deliver(refund_event(fail_at_stripe(world, str(ours.stripe_refund_id))))
    # The fee counts again: the next full refund takes the fee back once more.
    [_, again] = refund(world, payment, None).refunds
    assert (again.amount, again.from_fee) == (payment.charge_amount, payment.fee_amount)
    assert world.stored_invoice(invoice.id).amount_paid == 0
    assert_audit_clean(world)


def test_the_audit_reports_a_failed_refund_that_gave_back_less_than_it_took(
    world: World,
) -> None:
    _, payment = card_paid(world, 3000)
    [ours] = refund(world, payment, 3000).refunds
    stored = world.repo.payments[(CLINIC, PATIENT)][payment.id]
    stored.refunds[0] = replace(ours, status="failed")  # marked failed, nothing given back
    problems = [str(d) for d in audit_account([], [stored], [], {})]
    assert any("took back 3000, gave back 0" in p for p in problems), problems
