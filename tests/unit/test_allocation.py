"""Which invoices a payment pays: at request time (plan_payment) and at settlement."""

from __future__ import annotations

import pytest
from clinic_payments.domain.allocation import (
    MAX_ALLOCATIONS,
    RequestedAllocation,
    plan_payment,
    plan_settlement,
)
from clinic_payments.domain.errors import InvoiceNotPayableError, NotFoundError, ValidationError
from clinic_payments.domain.model import Allocation, Invoice, InvoiceStatus
from clinic_payments.domain.money import MAX_AMOUNT
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.fakes import make_invoice

pytestmark = pytest.mark.unit


def ask(invoice: Invoice, amount: int | None = None) -> RequestedAllocation:
    return RequestedAllocation(invoice.id, amount)


# -- allocations given ----------------------------------------------------------------------


def test_allocations_without_amounts_take_each_balance_due() -> None:
    a = make_invoice(5000)
    b = make_invoice(3000, amount_paid=1000)
    plan = plan_payment([ask(a), ask(b)], None, [a, b])
    assert plan.allocations == [Allocation(a.id, 5000), Allocation(b.id, 2000)]
    assert plan.credit_amount == 0
    assert plan.amount == 7000
    assert plan.currency == "usd"


def test_allocations_with_amounts_take_those_amounts() -> None:
    a = make_invoice(5000)
    b = make_invoice(3000)
    plan = plan_payment([ask(a, 1200), ask(b, 3000)], None, [a, b])
    assert plan.allocations == [Allocation(a.id, 1200), Allocation(b.id, 3000)]
    assert (plan.credit_amount, plan.amount) == (0, 4200)


def test_an_amount_covering_the_allocations_sends_the_rest_to_credit() -> None:
    a = make_invoice(5000)
    plan = plan_payment([ask(a, 2000)], 6500, [a])
    assert plan.allocations == [Allocation(a.id, 2000)]
    assert plan.credit_amount == 4500
    assert plan.amount == 6500


def test_an_amount_equal_to_the_allocations_leaves_no_credit() -> None:
    a = make_invoice(5000)
    plan = plan_payment([ask(a)], 5000, [a])
    assert (plan.allocations, plan.credit_amount) == ([Allocation(a.id, 5000)], 0)


def test_an_amount_below_the_allocations_is_refused() -> None:
    a = make_invoice(5000)
    with pytest.raises(ValidationError) as caught:
        plan_payment([ask(a)], 4999, [a])
    assert caught.value.details == [{"field": "amount", "issue": "less than the allocations"}]


def test_an_invoice_twice_in_allocations_is_refused() -> None:
    a = make_invoice(5000)
    with pytest.raises(ValidationError) as caught:
        plan_payment([ask(a, 100), ask(a, 200)], None, [a])
    assert caught.value.details == [
        {"field": "allocations.1.invoice_id", "issue": "duplicate invoice"}
    ]


def test_an_unknown_invoice_is_not_found() -> None:
    a = make_invoice(5000)
    with pytest.raises(NotFoundError):
        plan_payment([ask(a), RequestedAllocation("inv_other_patients")], None, [a])


@pytest.mark.parametrize(
    "invoice",
    [
        pytest.param(make_invoice(5000, status=InvoiceStatus.VOID), id="void"),
        pytest.param(make_invoice(5000, amount_paid=5000), id="paid"),
    ],
)
def test_an_invoice_with_nothing_left_to_pay_is_refused(invoice: Invoice) -> None:
    with pytest.raises(InvoiceNotPayableError) as caught:
        plan_payment([ask(invoice)], None, [invoice])
    assert caught.value.details == [
        {"field": "allocations.0.invoice_id", "issue": "invoice not payable"}
    ]


def test_an_allocation_above_the_balance_due_is_refused() -> None:
    a = make_invoice(5000, amount_paid=4000)
    with pytest.raises(ValidationError) as caught:
        plan_payment([ask(a, 1001)], None, [a])
    assert caught.value.details == [
        {"field": "allocations.0.amount", "issue": "exceeds balance due"}
    ]


def test_invoices_of_different_currencies_cannot_share_a_payment() -> None:
    usd = make_invoice(5000, currency="usd")
    cad = make_invoice(5000, currency="cad")
    with pytest.raises(ValidationError, match="currency"):
        plan_payment([ask(usd), ask(cad)], None, [usd, cad])


def test_more_than_the_allocation_limit_is_refused() -> None:
    invoices = [make_invoice(100) for _ in range(MAX_ALLOCATIONS + 1)]
    with pytest.raises(ValidationError, match="at most"):
        plan_payment([ask(i) for i in invoices], None, invoices)


def test_neither_allocations_nor_amount_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        plan_payment(None, None, [make_invoice(100)])
    assert caught.value.details[0]["field"] == "amount"


# -- amount only ----------------------------------------------------------------------------


def test_an_amount_alone_pays_the_oldest_invoices_first_and_credits_the_rest() -> None:
    newest = make_invoice(3000, created_at="2026-03-01T00:00:00.000Z")
    oldest = make_invoice(2000, created_at="2026-01-01T00:00:00.000Z")
    middle = make_invoice(4000, amount_paid=1000, created_at="2026-02-01T00:00:00.000Z")
    plan = plan_payment(None, 9000, [newest, oldest, middle])
    assert plan.allocations == [
        Allocation(oldest.id, 2000),
        Allocation(middle.id, 3000),
        Allocation(newest.id, 3000),
    ]
    assert plan.credit_amount == 1000


def test_an_amount_alone_stops_part_way_through_an_invoice() -> None:
    older = make_invoice(2000, created_at="2026-01-01T00:00:00.000Z")
    newer = make_invoice(3000, created_at="2026-02-01T00:00:00.000Z")
    plan = plan_payment(None, 2500, [newer, older])
    assert plan.allocations == [Allocation(older.id, 2000), Allocation(newer.id, 500)]
    assert plan.credit_amount == 0


def test_an_amount_alone_skips_void_and_paid_invoices() -> None:
    void = make_invoice(1000, status=InvoiceStatus.VOID, created_at="2026-01-01T00:00:00.000Z")
    paid = make_invoice(1000, amount_paid=1000, created_at="2026-01-02T00:00:00.000Z")
    open_ = make_invoice(1000, created_at="2026-01-03T00:00:00.000Z")
    plan = plan_payment(None, 1500, [void, paid, open_])
    assert plan.allocations == [Allocation(open_.id, 1000)]
    assert plan.credit_amount == 500


def test_an_amount_with_no_open_invoices_all_goes_to_credit() -> None:
    plan = plan_payment(None, 2500, [make_invoice(1000, amount_paid=1000)])
    assert plan.allocations == []
    assert plan.credit_amount == 2500
    assert plan.currency is None  # the service then takes the clinic's currency


def test_an_amount_alone_keeps_to_the_oldest_invoices_currency() -> None:
    usd = make_invoice(1000, currency="usd", created_at="2026-01-01T00:00:00.000Z")
    cad = make_invoice(1000, currency="cad", created_at="2026-01-02T00:00:00.000Z")
    usd2 = make_invoice(1000, currency="usd", created_at="2026-01-03T00:00:00.000Z")
    plan = plan_payment(None, 2500, [cad, usd2, usd])
    assert plan.allocations == [Allocation(usd.id, 1000), Allocation(usd2.id, 1000)]
    assert (plan.credit_amount, plan.currency) == (500, "usd")


# -- settlement -----------------------------------------------------------------------------


def test_settlement_applies_as_intended_when_nothing_changed() -> None:
    a = make_invoice(5000)
    b = make_invoice(3000)
    intended = [Allocation(a.id, 5000), Allocation(b.id, 1000)]
    settlement = plan_settlement(6000, intended, {a.id: a, b.id: b})
    assert settlement.applied == intended
    assert settlement.credit == 0


def test_settlement_caps_by_the_current_balance_and_credits_the_rest() -> None:
    a = make_invoice(5000, amount_paid=4000)  # someone paid 4000 meanwhile
    b = make_invoice(3000)
    intended = [Allocation(a.id, 5000), Allocation(b.id, 3000)]
    settlement = plan_settlement(8000, intended, {a.id: a, b.id: b})
    assert settlement.applied == [Allocation(a.id, 1000), Allocation(b.id, 3000)]
    assert settlement.credit == 4000


def test_settlement_of_a_paid_void_or_missing_invoice_goes_to_credit() -> None:
    paid = make_invoice(1000, amount_paid=1000)
    void = make_invoice(1000, status=InvoiceStatus.VOID)
    intended = [Allocation(paid.id, 1000), Allocation(void.id, 1000), Allocation("inv_gone", 500)]
    settlement = plan_settlement(2500, intended, {paid.id: paid, void.id: void})
    assert settlement.applied == []
    assert settlement.credit == 2500


def test_settlement_of_less_than_intended_fills_in_order() -> None:
    a = make_invoice(1000)
    b = make_invoice(1000)
    intended = [Allocation(a.id, 1000), Allocation(b.id, 1000)]
    settlement = plan_settlement(1500, intended, {a.id: a, b.id: b})
    assert settlement.applied == [Allocation(a.id, 1000), Allocation(b.id, 500)]
    assert settlement.credit == 0


# -- properties -----------------------------------------------------------------------------


@st.composite
def invoice_sets(draw: st.DrawFn) -> list[Invoice]:
    count = draw(st.integers(0, 8))
    invoices = []
    for n in range(count):
        total = draw(st.integers(1, 50_000))
        paid = draw(st.sampled_from([0, 0, total, draw(st.integers(0, total))]))
        status = InvoiceStatus.VOID if draw(st.integers(0, 9)) == 0 and paid == 0 else None
        invoices.append(
            make_invoice(
                total,
                amount_paid=paid,
                status=status,
                currency=draw(st.sampled_from(["usd", "usd", "usd", "cad"])),
                created_at=f"2026-01-{draw(st.integers(1, 28)):02d}T00:00:00.000Z",
                invoice_id=f"inv_{n:02d}",
            )
        )
    return invoices


@st.composite
def valid_requests(
    draw: st.DrawFn,
) -> tuple[list[Invoice], list[RequestedAllocation] | None, int | None]:
    """A request plan_payment must accept: allocations to payable invoices of one currency,
    each within its balance; an amount covering them, or none."""
    invoices = draw(invoice_sets())
    payable = [i for i in invoices if i.is_payable]
    requested: list[RequestedAllocation] | None = None
    allocate: bool = draw(st.booleans())
    if payable and allocate:
        currency = payable[0].currency
        same = [i for i in payable if i.currency == currency]
        chosen = draw(st.lists(st.sampled_from(same), min_size=1, unique_by=lambda i: i.id))
        requested = [
            RequestedAllocation(i.id, draw(st.none() | st.integers(1, i.balance_due)))
            for i in chosen
        ]
    if requested is None:
        return invoices, None, draw(st.integers(1, MAX_AMOUNT))
    floor = sum(
        r.amount or by.balance_due for r in requested for by in invoices if by.id == r.invoice_id
    )
    amount = draw(st.none() | st.integers(floor, MAX_AMOUNT))
    return invoices, requested, amount


def assert_sound(plan_allocations: list[Allocation], credit: int, invoices: list[Invoice]) -> None:
    by_id = {i.id: i for i in invoices}
    assert credit >= 0
    assert len({a.invoice_id for a in plan_allocations}) == len(plan_allocations)
    for alloc in plan_allocations:
        assert 0 < alloc.amount <= by_id[alloc.invoice_id].balance_due


@given(case=valid_requests())
@settings(max_examples=200)
def test_a_planned_payment_applies_plus_credits_exactly_its_amount(
    case: tuple[list[Invoice], list[RequestedAllocation] | None, int | None],
) -> None:
    invoices, requested, amount = case
    plan = plan_payment(requested, amount, invoices)
    assert_sound(plan.allocations, plan.credit_amount, invoices)
    by_id = {i.id: i for i in invoices}
    assert len({by_id[a.invoice_id].currency for a in plan.allocations}) <= 1
    applied = sum(a.amount for a in plan.allocations)
    if amount is not None:
        assert applied + plan.credit_amount == amount
    else:
        assert plan.credit_amount == 0
    assert plan.amount == applied + plan.credit_amount
    if requested is not None:
        assert [a.invoice_id for a in plan.allocations] == [r.invoice_id for r in requested]


@given(
    invoices=invoice_sets(),
    amount=st.integers(1, MAX_AMOUNT),
    shares=st.lists(st.integers(1, 60_000), max_size=8),
)
@settings(max_examples=200)
def test_a_settlement_never_overpays_and_loses_nothing(
    invoices: list[Invoice], amount: int, shares: list[int]
) -> None:
    intended = [Allocation(i.id, s) for i, s in zip(invoices, shares, strict=False)]
    settlement = plan_settlement(amount, intended, {i.id: i for i in invoices})
    assert_sound(settlement.applied, settlement.credit, invoices)
    assert sum(a.amount for a in settlement.applied) + settlement.credit == amount
    for applied in settlement.applied:
        intended_amount = next(a.amount for a in intended if a.invoice_id == applied.invoice_id)
        assert applied.amount <= intended_amount
