"""A refund takes back what its own payment gave, all or nothing, before Stripe gives anything
back (issue 8, parts 1 and 6), on the fakes: credit lots, the reservation and its release, and
the races of a refund with other movements of the same credit forced at the repository or at
Stripe."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.audit import audit_account
from clinic_payments.domain.credit.lots import LEGACY_LOT, lot_problems
from clinic_payments.domain.errors import (
    ConflictError,
    InsufficientCreditError,
    InvoiceNotPayableError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Allocation,
    Credit,
    CreditLot,
    Invoice,
    InvoiceStatus,
    LotTake,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
)
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.ports import CreditApplication, RefundWrite, StripeObjectLink
from clinic_payments.domain.reconciling import Reconciler, ReconcileReport
from clinic_payments.domain.refunds.service import RefundService

from tests.unit.fakes import CLINIC, PATIENT, STAFF, World, make_world, refund_event

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> World:
    return make_world(allow_credit_topups=True)


def refund(
    world: World,
    payment: Payment,
    amount: int | None,
    *,
    refund_id: str = "",
    take_credit_first: bool = False,
) -> Payment:
    return RefundService(world.repo, world.stripe, world.clock).refund(
        STAFF,
        CLINIC,
        PATIENT,
        payment.id,
        amount,
        "requested_by_customer",
        refund_id or new_id("ref"),
        take_credit_first=take_credit_first,
    )


def cash(world: World, amount: int, *invoices: Invoice) -> Payment:
    """Cash onto these invoices (their balance each, or `amount` for one invoice it does not
    cover); what is left of `amount` becomes credit."""
    asks = [RequestedAllocation(i.id) for i in invoices]
    if len(invoices) == 1 and amount < invoices[0].balance_due:
        asks = [RequestedAllocation(invoices[0].id, amount)]
    request = PaymentRequest(PaymentMethodType.CASH, asks, amount=amount)
    payment = world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    world.clock.advance()
    return payment


def card(world: World, amount: int, *invoices: Invoice) -> Payment:
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(i.id) for i in invoices],
        amount=amount,
        payment_method_id=world.saved_card(),
    )
    payment = world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    assert payment.status is PaymentStatus.SUCCEEDED
    world.clock.advance()
    return payment


def top_up(world: World, amount: int) -> Payment:
    request = PaymentRequest(
        PaymentMethodType.CARD,
        amount=amount,
        payment_method_id=world.saved_card(),
        location_id="loc_main",
        purpose=PaymentPurpose.CREDIT_TOPUP,
    )
    payment = world.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))
    world.clock.advance()
    return payment


def credit(world: World) -> Credit:
    return world.repo.get_credit(CLINIC, PATIENT, "usd")


def lots(world: World) -> dict[str, int]:
    return {lot.id: lot.amount for lot in credit(world).lots}


def assert_audit_clean(world: World) -> None:
    repo = world.repo
    found = audit_account(
        repo.all_invoices(CLINIC, PATIENT),
        repo.all_payments(CLINIC, PATIENT),
        repo.all_ledger(CLINIC, PATIENT),
        repo.list_credits(CLINIC, PATIENT),
    )
    assert found == [], "\n".join(str(d) for d in found)


# -- lots -------------------------------------------------------------------------------------


def test_each_source_of_credit_is_its_own_lot_spent_oldest_first(world: World) -> None:
    first = cash(world, 1500, world.invoice(1000))  # 500 overflow
    topup = top_up(world, 2000)
    world.credit.adjust(STAFF, CLINIC, PATIENT, 300, "goodwill", "usd", "adj_goodwill")
    assert lots(world) == {first.id: 500, topup.id: 2000, "adj_goodwill": 300}
    assert [lot.id for lot in credit(world).lots] == [first.id, topup.id, "adj_goodwill"]

    world.credit.apply(STAFF, CLINIC, PATIENT, world.invoice(900).id, None, new_id("cra"))
    assert lots(world) == {topup.id: 1600, "adj_goodwill": 300}
    world.credit.adjust(STAFF, CLINIC, PATIENT, -1700, "correction", "usd", "adj_down")
    assert lots(world) == {"adj_goodwill": 200}
    assert lot_problems(credit(world)) == []
    assert_audit_clean(world)


def test_a_refund_takes_its_own_lot_then_its_invoices_never_other_credit(world: World) -> None:
    # The issue's example: a visit's payment left 390 of credit; a separate top-up added 1610.
    visit = world.invoice(3000)
    paid = card(world, 3390, visit)
    topup = top_up(world, 1610)
    [record] = refund(world, paid, 2000).refunds
    assert record.from_lots == [LotTake(paid.id, 390, record.from_lots[0].at)]
    assert (record.from_credit, record.from_invoices) == (390, [Allocation(visit.id, 1610)])
    assert lots(world) == {topup.id: 1610}  # the top-up is untouched
    assert world.stored_invoice(visit.id).status is InvoiceStatus.PARTIALLY_PAID
    assert_audit_clean(world)


def test_take_credit_first_takes_any_credit_oldest_lot_first(world: World) -> None:
    world.credit.adjust(STAFF, CLINIC, PATIENT, 700, "goodwill", "usd", "adj_old")
    visit = world.invoice(3000)
    paid = card(world, 3200, visit)  # its own lot: 200, newer than the adjustment
    [record] = refund(world, paid, 1000, take_credit_first=True).refunds
    assert [(t.lot_id, t.amount) for t in record.from_lots] == [("adj_old", 700), (paid.id, 200)]
    assert record.from_invoices == [Allocation(visit.id, 100)]
    assert credit(world).balance == 0
    assert_audit_clean(world)


def test_a_refund_beyond_what_its_payment_can_give_back_is_refused_whole(world: World) -> None:
    a = world.invoice(100)
    paid = cash(world, 2100, a)  # 2000 of credit, its own lot
    top_up(world, 5000)  # other credit, not this payment's
    world.credit.apply(STAFF, CLINIC, PATIENT, world.invoice(5000).id, 2000, new_id("cra"))
    # The oldest lot (this payment's) paid the other invoice: only the invoice's 100 is left.
    before = (credit(world), world.stored_invoice(a.id))
    with pytest.raises(ConflictError, match="Only 100"):
        refund(world, paid, 2000)
    assert (credit(world), world.stored_invoice(a.id)) == before
    assert world.stored_payment(paid.id).refunds == []
    # Asked for, the patient's other credit covers it.
    [record] = refund(world, paid, 2000, take_credit_first=True).refunds
    assert record.from_credit == 2000
    assert_audit_clean(world)


def test_a_refund_that_fails_puts_credit_back_into_the_lots_it_came_from(world: World) -> None:
    world.credit.adjust(STAFF, CLINIC, PATIENT, 400, "goodwill", "usd", "adj_first")
    visit = world.invoice(2000)
    paid = card(world, 2600, visit)
    world.credit.adjust(STAFF, CLINIC, PATIENT, 100, "later", "usd", "adj_later")
    before = credit(world).lots
    [record] = refund(world, paid, 1500, take_credit_first=True).refunds
    assert lots(world) == {}  # 400 + 600 + 100 of credit, oldest first, then 400 of the invoice
    failed = world.gateway.move_refund(str(record.stripe_refund_id), "failed", "lost_or_stolen")
    world.deliver(refund_event(failed))
    # Same lots, same amounts, same dates: the oldest-first order is as it was.
    assert credit(world).lots == before
    assert_audit_clean(world)


def test_credit_written_before_lots_reads_as_one_legacy_lot() -> None:
    from clinic_payments.adapters.codec import credit_from

    old = {"currency": "usd", "balance": 1200, "version": 3}
    assert credit_from(old) == Credit(1200, "usd", 3, (CreditLot(LEGACY_LOT, 1200, ""),))
    assert credit_from({"currency": "usd", "balance": 0, "version": 2}).lots == ()


def test_the_audit_finds_lots_that_do_not_add_up() -> None:
    broken = Credit(500, "usd", 4, (CreditLot("a", 700, "t1"), CreditLot("b", -100, "t2")))
    assert lot_problems(broken) == ["lot b is -100", "lots sum to 600, balance is 500"]
    found = audit_account([], [], [], {"usd": broken})
    assert {d.problem for d in found} >= {"lot b is -100", "lots sum to 600, balance is 500"}


# -- the reservation --------------------------------------------------------------------------


def test_a_card_refund_is_reserved_before_stripe_is_asked(world: World) -> None:
    visit = world.invoice(3000)
    paid = card(world, 3000, visit)
    seen: list[tuple[str, int]] = []

    def at_stripe() -> None:
        [reserved] = world.stored_payment(paid.id).refunds
        seen.append((reserved.status, world.stored_invoice(visit.id).amount_paid))

    world.gateway.before_refund = at_stripe
    [record] = refund(world, paid, 1000).refunds
    assert seen == [("reserved", 2000)]
    assert record.status == "succeeded"
    assert record.stripe_refund_id is not None
    assert_audit_clean(world)


def test_stripe_refusing_a_refund_releases_exactly_its_reservation(world: World) -> None:
    visit = world.invoice(3000)
    paid = card(world, 3500, visit)
    before = (credit(world), world.stored_invoice(visit.id).amount_paid)
    world.gateway.refuse_refunds.append(PaymentFailedError("charge_already_refunded"))
    with pytest.raises(PaymentFailedError):
        refund(world, paid, 1500)
    [record] = world.stored_payment(paid.id).refunds
    assert (record.status, record.failure_reason, record.stripe_refund_id) == (
        "canceled",
        "payment_failed",
        None,
    )
    assert (record.returned_to_credit, record.returned_to_invoices) == (
        500,
        [Allocation(visit.id, 1000)],
    )
    after = (credit(world), world.stored_invoice(visit.id).amount_paid)
    assert (after[0].balance, after[0].lots, after[1]) == (before[0].balance, before[0].lots, 3000)
    assert world.stored_payment(paid.id).refunded_amount == 0
    assert_audit_clean(world)


def test_a_timeout_keeps_the_reservation_and_the_retry_resumes_it(world: World) -> None:
    visit = world.invoice(3000)
    paid = card(world, 3000, visit)
    world.gateway.unavailable = True
    with pytest.raises(PaymentProviderUnavailableError):
        refund(world, paid, 1200, refund_id="ref_retry")
    [reserved] = world.stored_payment(paid.id).refunds
    assert reserved.status == "reserved"
    assert world.stored_invoice(visit.id).amount_paid == 1800
    # Meanwhile nothing can refund what is reserved a second time.
    with pytest.raises(ConflictError, match="At most 1800"):
        refund(world, paid, 1801)
    assert_audit_clean(world)

    world.gateway.unavailable = False
    [done] = refund(world, paid, 1200, refund_id="ref_retry").refunds
    assert (done.status, done.from_invoices) == ("succeeded", [Allocation(visit.id, 1200)])
    assert world.stored_invoice(visit.id).amount_paid == 1800
    # Asked again under the same Stripe idempotency key, and made once.
    assert len(world.gateway.list_refunds(str(paid.stripe_payment_intent_id))) == 1
    assert list(world.gateway.refund_keys) == ["ref_retry:refund"]
    assert_audit_clean(world)


def test_a_cash_refund_is_taken_back_and_recorded_in_one_write(world: World) -> None:
    visit = world.invoice(1000)
    paid = cash(world, 1000, visit)
    [record] = refund(world, paid, 400).refunds
    assert (record.status, record.stripe_refund_id) == ("succeeded", None)
    assert world.gateway.calls_named("create_refund") == []
    assert_audit_clean(world)


# -- races, forced: one movement lands between the other's read and its write -------------------


def test_issue_8_refund_and_apply_credit_at_once_apply_lands_first(world: World) -> None:
    """Invoice A (100) paid in cash with 2100; invoice B (5000). The application of 2000 to B
    lands between the refund's read and its write: the refund re-plans and is refused."""
    a, b = world.invoice(100), world.invoice(5000)
    paid = cash(world, 2100, a)
    applied: list[Invoice] = []

    def application_lands(_write: RefundWrite) -> None:
        world.repo.before_record_refund = None
        applied.append(world.credit.apply(STAFF, CLINIC, PATIENT, b.id, 2000, new_id("cra")))

    world.repo.before_record_refund = application_lands
    with pytest.raises(ConflictError, match="Only 100"):
        refund(world, paid, 2000)
    assert applied[0].amount_paid == 2000
    assert world.stored_payment(paid.id).refunds == []
    assert_audit_clean(world)


def test_issue_8_refund_and_apply_credit_at_once_refund_lands_first(world: World) -> None:
    a, b = world.invoice(100), world.invoice(5000)
    paid = cash(world, 2100, a)
    refunded: list[Payment] = []

    def refund_lands(_write: CreditApplication) -> None:
        world.repo.before_apply_credit = None
        refunded.append(refund(world, paid, 2000))

    world.repo.before_apply_credit = refund_lands
    with pytest.raises(InsufficientCreditError):
        world.credit.apply(STAFF, CLINIC, PATIENT, b.id, 2000, new_id("cra"))
    [record] = refunded[0].refunds
    assert (record.from_credit, record.from_invoices) == (2000, [])
    assert world.stored_invoice(b.id).amount_paid == 0
    assert_audit_clean(world)


def test_issue_8_with_a_card_the_application_during_stripes_call_finds_no_credit(
    world: World,
) -> None:
    """The interleaving the issue saw: the refund has checked, Stripe is giving the money back,
    and the application runs. The take-back is reserved already, so the credit is gone."""
    a, b = world.invoice(100), world.invoice(5000)
    paid = card(world, 2100, a)
    refused: list[Exception] = []

    def application_during_stripe() -> None:
        world.gateway.before_refund = None
        try:
            world.credit.apply(STAFF, CLINIC, PATIENT, b.id, 2000, new_id("cra"))
        except InsufficientCreditError as exc:
            refused.append(exc)

    world.gateway.before_refund = application_during_stripe
    [record] = refund(world, paid, 2000).refunds
    assert len(refused) == 1
    assert (record.status, record.from_credit, record.uncovered) == ("succeeded", 2000, 0)
    assert world.stored_invoice(b.id).amount_paid == 0
    assert_audit_clean(world)


def test_a_negative_adjustment_during_stripes_call_cannot_spend_the_reserved_credit(
    world: World,
) -> None:
    a = world.invoice(100)
    paid = card(world, 2100, a)
    refused: list[Exception] = []

    def adjustment_during_stripe() -> None:
        world.gateway.before_refund = None
        try:
            world.credit.adjust(STAFF, CLINIC, PATIENT, -2000, "fix", "usd", "adj_race")
        except InsufficientCreditError as exc:
            refused.append(exc)

    world.gateway.before_refund = adjustment_during_stripe
    refund(world, paid, 2000)
    assert len(refused) == 1
    assert credit(world).balance == 0
    assert_audit_clean(world)


def test_a_payment_landing_before_the_refunds_write_makes_it_plan_again(world: World) -> None:
    visit = world.invoice(3000)
    paid = cash(world, 2000, visit)

    def rest_paid_in_cash(_write: RefundWrite) -> None:
        world.repo.before_record_refund = None
        cash(world, 1000, visit)

    world.repo.before_record_refund = rest_paid_in_cash
    [record] = refund(world, paid, 2000).refunds
    assert record.from_invoices == [Allocation(visit.id, 2000)]
    assert world.stored_invoice(visit.id).amount_paid == 1000
    assert_audit_clean(world)


def test_an_invoice_paid_meanwhile_is_not_payable_for_apply_credit(world: World) -> None:
    invoice = world.invoice(500)
    world.credit.adjust(STAFF, CLINIC, PATIENT, 1000, "goodwill", "usd", "adj_1")
    cash(world, 500, invoice)
    with pytest.raises(InvoiceNotPayableError):
        world.credit.apply(STAFF, CLINIC, PATIENT, invoice.id, None, new_id("cra"))
    assert replace(credit(world), version=0).balance == 1000


# -- a reservation nobody retries: the reconciler ----------------------------------------------


def reconcile(world: World) -> ReconcileReport:
    world.clock.advance(timedelta(minutes=10))
    service = RefundService(world.repo, world.stripe, world.clock)
    return Reconciler(world.repo, world.payments, world.stripe, world.clock, refunds=service).run()


def reserved_and_left(world: World) -> tuple[Invoice, Payment]:
    visit = world.invoice(3000)
    paid = card(world, 3000, visit)
    world.gateway.unavailable = True
    with pytest.raises(PaymentProviderUnavailableError):
        refund(world, paid, 1000)
    world.gateway.unavailable = False
    return visit, paid


def test_the_reconciler_asks_stripe_again_for_a_reservation_left_behind(world: World) -> None:
    visit, paid = reserved_and_left(world)
    report = reconcile(world)
    assert (report.refunds_confirmed, report.refunds_released, report.errors) == (1, 0, [])
    [record] = world.stored_payment(paid.id).refunds
    assert (record.status, record.stripe_refund_id is not None) == ("succeeded", True)
    assert world.repo.reserved == {}
    assert reconcile(world).refunds_confirmed == 0  # out of the index: nothing more to do
    assert len(world.gateway.list_refunds(str(paid.stripe_payment_intent_id))) == 1
    assert world.stored_invoice(visit.id).amount_paid == 2000
    assert_audit_clean(world)


def test_the_reconciler_releases_a_reservation_stripe_refuses(world: World) -> None:
    visit, paid = reserved_and_left(world)
    world.gateway.refuse_refunds.append(PaymentFailedError("charge_disputed"))
    report = reconcile(world)
    assert (report.refunds_confirmed, report.refunds_released) == (0, 1)
    assert world.stored_payment(paid.id).refunds[0].status == "canceled"
    assert world.stored_invoice(visit.id).amount_paid == 3000
    assert_audit_clean(world)


def test_a_reservation_stripe_still_does_not_answer_stays_for_the_next_run(world: World) -> None:
    _, paid = reserved_and_left(world)
    world.gateway.unavailable = True
    report = reconcile(world)
    [reserved] = world.stored_payment(paid.id).refunds
    assert report.errors == [f"{reserved.id}: payment_provider_unavailable"]
    assert reserved.status == "reserved"
    assert len(world.repo.reserved) == 1
    world.gateway.unavailable = False
    assert reconcile(world).refunds_confirmed == 1
    assert_audit_clean(world)


def test_the_retry_of_a_refund_stripe_refused_meanwhile_answers_the_refusal(
    world: World,
) -> None:
    _, paid = reserved_and_left(world)
    world.gateway.refuse_refunds.append(PaymentFailedError("charge_disputed"))
    reconcile(world)
    [released] = world.stored_payment(paid.id).refunds
    with pytest.raises(PaymentFailedError, match="refused"):
        refund(world, paid, 1000, refund_id=released.id)
    assert world.stored_payment(paid.id).refunds == [released]


# -- money gone without our asking (lost disputes, dashboard refunds) ---------------------------


def lost_dispute(world: World, payment: Payment, amount: int) -> None:
    link = StripeObjectLink(CLINIC, PATIENT, payment.id, "main")
    recorded = RefundService(world.repo, world.stripe, world.clock).record(
        link,
        refund_id="dp_1",
        key="dp_1",
        amount=amount,
        reason="dispute_lost",
        actor=STAFF.actor(),
        stripe_refund_id=None,
    )
    assert recorded


def test_a_forced_reversal_takes_other_credit_then_reopens_what_the_spent_credit_paid(
    world: World,
) -> None:
    visit, other = world.invoice(1000), world.invoice(5000)
    paid = cash(world, 3000, visit)  # 2000 of credit, in this payment's lot
    world.credit.apply(STAFF, CLINIC, PATIENT, other.id, 1500, new_id("cra"))
    topup = top_up(world, 300)
    lost_dispute(world, paid, 3000)
    [record] = world.stored_payment(paid.id).refunds
    # Its own lot (500 left), its invoice (1000), the top-up's credit (300), then the invoice
    # its spent credit paid (1200 of 1500).
    assert record.from_credit == 800
    assert {t.lot_id: t.amount for t in record.from_lots} == {paid.id: 500, topup.id: 300}
    assert sorted((a.invoice_id, a.amount) for a in record.from_invoices) == sorted(
        [(visit.id, 1000), (other.id, 1200)]
    )
    assert record.uncovered == 0
    assert world.stored_invoice(other.id).amount_paid == 300
    assert lots(world) == {}
    assert_audit_clean(world)


def test_a_forced_reversal_of_credit_spent_whole_reopens_the_invoice_it_paid(
    world: World,
) -> None:
    visit, other = world.invoice(1000), world.invoice(2000)
    paid = cash(world, 3000, visit)
    world.credit.apply(STAFF, CLINIC, PATIENT, other.id, None, new_id("cra"))
    world.invoices.void(CLINIC, PATIENT, world.invoice(700).id)
    lost_dispute(world, paid, 3000)
    [record] = world.stored_payment(paid.id).refunds
    assert record.taken_back == 3000  # the visit and the other invoice both reopen
    assert_audit_clean(world)
