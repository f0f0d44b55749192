"""Credit kept in lots by source, spent oldest lot first (pure: no I/O).

A lot is what is left of one source of credit: a payment's overflow or a top-up (its id is the
payment's, so a refund of that payment finds "the credit it created"), a positive adjustment or
a failed refund's give-back (the ledger entry's id). Spending (apply-credit, a negative
adjustment) takes the oldest lots first; a refund takes its own payment's lot first.

Storage: the lots live in the currency's one CREDIT item beside the balance and a version, so
balance and lots change in one item update inside the movement's transaction, conditioned on
the version read: whatever moved the credit since makes the write fail and the service re-plan.
An item written before lots existed reads as one lot, `legacy`, dated "" (the oldest).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Final

from clinic_payments.domain.model import Credit, CreditLot, LotTake

LEGACY_LOT: Final = "legacy"


def oldest_first(lots: tuple[CreditLot, ...]) -> tuple[CreditLot, ...]:
    return tuple(sorted(lots, key=lambda lot: (lot.at, lot.id)))


def _with_lots(credit: Credit, lots: list[CreditLot], delta: int) -> Credit:
    """Balance and lots after a change; the version is the write's to move (once a movement)."""
    kept = tuple(lot for lot in lots if lot.amount != 0)
    return replace(credit, balance=credit.balance + delta, lots=oldest_first(kept))


def add_to_lot(credit: Credit, lot_id: str, amount: int, at: str) -> Credit:
    """Credit added to a lot (created, or grown keeping its first date)."""
    if amount <= 0:
        raise ValueError("only a positive amount is added to a lot")
    lots = list(credit.lots)
    for i, lot in enumerate(lots):
        if lot.id == lot_id:
            lots[i] = replace(lot, amount=lot.amount + amount, at=min(lot.at, at))
            return _with_lots(credit, lots, amount)
    lots.append(CreditLot(lot_id, amount, at))
    return _with_lots(credit, lots, amount)


def put_back(credit: Credit, takes: list[LotTake]) -> Credit:
    """Give back exactly what was taken, into the lots it came from (recreated if spent)."""
    for take in takes:
        if take.amount > 0:
            credit = add_to_lot(credit, take.lot_id, take.amount, take.at)
    return credit


def plan_oldest_first(credit: Credit, amount: int) -> list[LotTake]:
    """Up to `amount`, from the oldest lots first (less when the credit is short)."""
    takes: list[LotTake] = []
    remaining = amount
    for lot in oldest_first(credit.lots):
        if remaining <= 0:
            break
        take = min(remaining, lot.amount)
        if take > 0:
            takes.append(LotTake(lot.id, take, lot.at))
            remaining -= take
    return takes


def plan_from_lot(credit: Credit, lot_id: str, amount: int) -> list[LotTake]:
    """Up to `amount` from one lot only (a refund taking back its own payment's credit)."""
    lot = next((lot for lot in credit.lots if lot.id == lot_id), None)
    take = min(amount, lot.amount) if lot is not None else 0
    return [LotTake(lot_id, take, lot.at)] if lot is not None and take > 0 else []


def take(credit: Credit, takes: list[LotTake]) -> Credit:
    """The credit after these takes. ValueError if a lot would go below zero: a plan is made
    from the credit it is applied to, so that is a bug, never a race (the write's version
    condition catches races)."""
    lots = {lot.id: lot for lot in credit.lots}
    total = 0
    for t in takes:
        lot = lots.get(t.lot_id)
        if lot is None or lot.amount < t.amount:
            raise ValueError(f"lot {t.lot_id} cannot give {t.amount}")
        lots[t.lot_id] = replace(lot, amount=lot.amount - t.amount)
        total += t.amount
    return _with_lots(credit, list(lots.values()), -total)


def lot_problems(credit: Credit) -> list[str]:
    """What is wrong with a credit's lots (for the audit): each lot at or above zero, and the
    lots summing to the balance."""
    problems = [f"lot {lot.id} is {lot.amount}" for lot in credit.lots if lot.amount < 0]
    in_lots = sum(lot.amount for lot in credit.lots)
    if in_lots != credit.balance:
        problems.append(f"lots sum to {in_lots}, balance is {credit.balance}")
    return problems
