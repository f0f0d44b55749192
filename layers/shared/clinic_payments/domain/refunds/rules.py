"""What a refund takes back and gives back, as pure functions of what was read.

A refund reverses its own payment: it takes back first the credit lot that payment created, as
far as it is still unused, then the invoices the payment paid (newest first, which reopen), then
its pass-through fee; the patient's other credit only when staff ask for it. A refund that fails
later gives back exactly what it took. A refund's state only moves forward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from clinic_payments.domain.credit.lots import (
    plan_from_lot,
    plan_oldest_first,
    take,
)
from clinic_payments.domain.model import (
    REFUND_RESERVED,
    Actor,
    Allocation,
    Credit,
    Invoice,
    InvoiceStatus,
    LotTake,
    Payment,
    RefundRecord,
    RefundSnapshot,
    Role,
)

REFUND_REASONS: Final = ("requested_by_customer", "duplicate", "fraudulent")
STRIPE_ACTOR: Final = Actor(sub="stripe", role=Role.STAFF)  # made in the Stripe dashboard
# A refund's states in the order Stripe moves them; an event never moves one backwards.
REFUND_PROGRESS: Final = {
    REFUND_RESERVED: -1,  # ours: taken back, Stripe's answer not known yet
    "pending": 0,
    "requires_action": 0,
    "succeeded": 1,
    "failed": 2,
    "canceled": 2,
}


@dataclass(frozen=True)
class TakeBack:
    from_lots: list[LotTake]
    from_invoices: list[Allocation]
    from_fee: int

    @property
    def from_credit(self) -> int:
        return sum(t.amount for t in self.from_lots)

    @property
    def total(self) -> int:
        return self.from_credit + sum(a.amount for a in self.from_invoices) + self.from_fee


def net_on_invoices(payment: Payment) -> dict[str, int]:
    """What this payment still has on each invoice, after its earlier refunds (and what the
    failed ones gave back)."""
    net = {a.invoice_id: a.amount for a in payment.allocations}
    for refund in payment.refunds:
        for a in refund.from_invoices:
            net[a.invoice_id] = net.get(a.invoice_id, 0) - a.amount
        for a in refund.returned_to_invoices:
            net[a.invoice_id] = net.get(a.invoice_id, 0) + a.amount
    return net


def plan_take_back(
    payment: Payment,
    amount: int,
    credit: Credit,
    invoices: dict[str, Invoice],
    *,
    take_credit_first: bool = False,
) -> TakeBack:
    """Where `amount` is taken back from: the payment's own credit lot (or, asked for, any
    credit oldest lot first), then its invoices newest first, then its fee. May come short."""
    if take_credit_first:
        from_lots = plan_oldest_first(credit, amount)
    else:
        from_lots = plan_from_lot(credit, payment.id, amount)
    remaining = amount - sum(t.amount for t in from_lots)
    net = net_on_invoices(payment)
    newest_first = sorted(
        (invoices[i] for i in net if i in invoices),
        key=lambda inv: (inv.created_at, inv.id),
        reverse=True,
    )
    from_invoices: list[Allocation] = []
    for invoice in newest_first:
        take = min(remaining, net[invoice.id], invoice.amount_paid)
        if take > 0:
            from_invoices.append(Allocation(invoice.id, take))
            remaining -= take
    fee_left = payment.fee_amount - sum(r.from_fee for r in payment.refunds if not r.has_failed)
    from_fee = min(remaining, max(fee_left, 0))
    return TakeBack(from_lots, from_invoices, from_fee)


def plan_forced_take_back(
    amount: int,
    credit: Credit,
    plan: TakeBack,
    others: list[Invoice],
) -> TakeBack:
    """Money gone without our asking (a lost dispute, a refund made in Stripe's dashboard)
    cannot be refused, so it is taken back in full: as a refund would (its own lot, its
    invoices, its fee), then from the patient's other credit (oldest lot first), then from the
    patient's other paid invoices (newest first), which reopen: the patient owes that again.
    Only a patient with neither credit nor paid invoices left leaves a remainder. `plan` is
    what `plan_take_back` found for it."""
    short = amount - plan.total
    if short <= 0:
        return plan
    more_lots = plan_oldest_first(take(credit, plan.from_lots), short)
    short -= sum(t.amount for t in more_lots)
    merged = {a.invoice_id: a.amount for a in plan.from_invoices}
    for invoice in sorted(others, key=lambda inv: (inv.created_at, inv.id), reverse=True):
        if short <= 0:
            break
        grab = min(short, invoice.amount_paid - merged.get(invoice.id, 0))
        if grab > 0 and invoice.status is not InvoiceStatus.VOID:
            merged[invoice.id] = merged.get(invoice.id, 0) + grab
            short -= grab
    return TakeBack(
        merge_lots([*plan.from_lots, *more_lots]),
        [Allocation(invoice_id, n) for invoice_id, n in merged.items()],
        plan.from_fee,
    )


def merge_lots(takes: list[LotTake]) -> list[LotTake]:
    merged: dict[str, LotTake] = {}
    for t in takes:
        seen = merged.get(t.lot_id)
        merged[t.lot_id] = t if seen is None else replace(seen, amount=seen.amount + t.amount)
    return list(merged.values())


def refundable(payment: Payment) -> int:
    return payment.amount_received - payment.refunded_amount


@dataclass(frozen=True)
class GiveBack:
    to_invoices: list[Allocation]
    to_credit: int


def plan_give_back(refund: RefundRecord, invoices: dict[str, Invoice]) -> GiveBack:
    """What a failed refund gives back: its credit part to credit; its invoices' part onto the
    same invoices as far as each can still take it (not void, not paid meanwhile), the rest to
    credit. Its fee part needs no write: the fee counts it again once the refund has failed."""
    to_invoices: list[Allocation] = []
    to_credit = refund.from_credit
    for a in refund.from_invoices:
        invoice = invoices.get(a.invoice_id)
        room = 0
        if invoice is not None and invoice.status is not InvoiceStatus.VOID:
            room = max(invoice.total - invoice.amount_paid, 0)
        take = min(a.amount, room)
        if take > 0:
            to_invoices.append(Allocation(a.invoice_id, take))
        to_credit += a.amount - take
    return GiveBack(to_invoices, to_credit)


def index_of(payment: Payment, snapshot: RefundSnapshot) -> int | None:
    """Which of the payment's refunds Stripe reports: by its key or Stripe's id, or ours
    (`refund_id` in its metadata) when it is our reservation whose answer we have not seen."""
    ours = (
        snapshot.metadata.get("refund_id")
        if (snapshot.metadata.get("payment_id") == payment.id)
        else None
    )
    for i, r in enumerate(payment.refunds):
        if snapshot.id in (r.key, r.stripe_refund_id) or (ours is not None and r.id == ours):
            return i
    return None


def moves_forward(recorded: str, reported: str) -> bool:
    """True when Stripe reports a later state of the refund than the one recorded."""
    before, after = REFUND_PROGRESS.get(recorded), REFUND_PROGRESS.get(reported)
    return before is not None and after is not None and after > before
