"""Recompute a patient's account from its records and say where it does not add up.

The invariant of DESIGN.md, as a pure function: every succeeded payment's captured amount is
applied to invoices, held as credit, or recorded as fee; each invoice's amount_paid is the sum
of what was applied to it (payments and credit, less refunds, plus what failed refunds gave
back) and never above its total; a failed refund gave back exactly what it took back, and the
ledger holds each refund's credit movements; each currency's credit balance is the sum of its
ledger entries and never negative, and its lots sum to the balance, none below zero (a refund's
credit part is the sum of the lots it took from); nothing appears twice.
Used by `make audit` (against the table, and Stripe) and by the tests after every money move.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from clinic_payments.domain.credit.lots import lot_problems
from clinic_payments.domain.model import (
    Credit,
    Invoice,
    LedgerEntry,
    LedgerEntryType,
    Payment,
    PaymentMethodType,
    PaymentStatus,
)
from clinic_payments.domain.ports import (
    CreditLedger,
    InvoiceStore,
    PatientSummary,
    PaymentStore,
    StripeGateways,
)


@dataclass(frozen=True)
class Difference:
    subject: str  # "invoice inv_...", "payment pay_...", "credit usd"
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


def audit_account(
    invoices: Iterable[Invoice],
    payments: Iterable[Payment],
    ledger: Iterable[LedgerEntry],
    credits: dict[str, Credit],
) -> list[Difference]:
    entries = list(ledger)
    found: list[Difference] = []
    applied: Counter[str] = Counter()
    credited_by_payment: Counter[str] = Counter()
    refund_entries: Counter[tuple[str, LedgerEntryType]] = Counter()
    for entry in entries:
        if entry.payment_id and entry.type in (LedgerEntryType.TOPUP, LedgerEntryType.OVERPAYMENT):
            credited_by_payment[entry.payment_id] += entry.amount
        if entry.payment_id and entry.type in (
            LedgerEntryType.REFUND,
            LedgerEntryType.REFUND_FAILED,
        ):
            refund_entries[(entry.payment_id, entry.type)] += entry.amount
        if entry.type is LedgerEntryType.APPLIED and entry.invoice_id:
            applied[entry.invoice_id] += -entry.amount
    ids = Counter(e.id for e in entries)
    found += [Difference(f"ledger {i}", "entry recorded twice") for i, n in ids.items() if n > 1]

    for p in payments:
        subject = f"payment {p.id}"
        if p.status is not PaymentStatus.SUCCEEDED:
            if p.amount_received:
                found.append(Difference(subject, f"{p.status.value} but received money"))
            if credited_by_payment[p.id]:
                found.append(Difference(subject, f"{p.status.value} but credited"))
            continue
        to_invoices = sum(a.amount for a in p.allocations)
        if p.amount_received != to_invoices + p.credit_amount + p.fee_amount:
            found.append(
                Difference(
                    subject,
                    f"received {p.amount_received} != applied {to_invoices} + credit "
                    f"{p.credit_amount} + fee {p.fee_amount}",
                )
            )
        if p.amount_received != p.amount + p.fee_amount:
            found.append(Difference(subject, "captured differs from what was charged"))
        if credited_by_payment[p.id] != p.credit_amount:
            found.append(
                Difference(
                    subject,
                    f"ledger credits {credited_by_payment[p.id]}, payment says {p.credit_amount}",
                )
            )
        for a in p.allocations:
            applied[a.invoice_id] += a.amount
        found += _refund_differences(p, refund_entries)
        for refund in p.refunds:
            for a in refund.from_invoices:
                applied[a.invoice_id] -= a.amount
            for a in refund.returned_to_invoices:
                applied[a.invoice_id] += a.amount
            if refund.has_failed:
                continue
            if refund.uncovered:
                found.append(
                    Difference(
                        subject,
                        f"refund {refund.id}: {refund.uncovered} given back but not taken back "
                        "from credit, invoices or fee (review the patient's invoices)",
                    )
                )
        if p.refunded_amount > p.amount_received:
            found.append(Difference(subject, "refunded more than was received"))

    for inv in invoices:
        subject = f"invoice {inv.id}"
        # A refund's line and the line of its failure are two movements: (id, kind) is unique.
        refs = [(r.payment_id, r.method) for r in inv.payments]
        if len(set(refs)) != len(refs):
            found.append(Difference(subject, "a payment is counted twice"))
        by_refs = sum(r.amount for r in inv.payments)
        if inv.amount_paid != by_refs:
            found.append(
                Difference(subject, f"amount_paid {inv.amount_paid} != its payments {by_refs}")
            )
        if inv.amount_paid != applied[inv.id]:
            found.append(
                Difference(subject, f"amount_paid {inv.amount_paid} != applied {applied[inv.id]}")
            )
        if not 0 <= inv.amount_paid <= inv.total:
            found.append(
                Difference(subject, f"amount_paid {inv.amount_paid} outside 0..{inv.total}")
            )

    sums: defaultdict[str, int] = defaultdict(int)
    for entry in entries:
        sums[entry.currency] += entry.amount
    for currency in set(sums) | set(credits):
        balance = credits[currency].balance if currency in credits else 0
        if balance != sums[currency]:
            found.append(
                Difference(f"credit {currency}", f"balance {balance} != ledger {sums[currency]}")
            )
        if balance < 0:
            found.append(Difference(f"credit {currency}", f"negative balance {balance}"))
        if currency in credits:
            found += [Difference(f"credit {currency}", p) for p in lot_problems(credits[currency])]
    return found


def _refund_differences(
    p: Payment, refund_entries: Counter[tuple[str, LedgerEntryType]]
) -> list[Difference]:
    subject = f"payment {p.id}"
    found = []
    for refund in p.refunds:
        if refund.from_lots and sum(t.amount for t in refund.from_lots) != refund.from_credit:
            found.append(
                Difference(subject, f"refund {refund.id}: its lots do not sum to its credit part")
            )
        if refund.has_failed and refund.returned != refund.taken_back:
            found.append(
                Difference(
                    subject,
                    f"refund {refund.id} failed: took back {refund.taken_back}, "
                    f"gave back {refund.returned}",
                )
            )
        if not refund.has_failed and refund.returned:
            found.append(Difference(subject, f"refund {refund.id} gave back but did not fail"))
    taken = sum(r.from_credit for r in p.refunds)
    if -refund_entries[(p.id, LedgerEntryType.REFUND)] != taken:
        found.append(
            Difference(
                subject,
                f"refunds took {taken} from credit, ledger says "
                f"{-refund_entries[(p.id, LedgerEntryType.REFUND)]}",
            )
        )
    returned = sum(r.returned_to_credit for r in p.refunds)
    if refund_entries[(p.id, LedgerEntryType.REFUND_FAILED)] != returned:
        found.append(
            Difference(
                subject,
                f"failed refunds gave {returned} to credit, ledger says "
                f"{refund_entries[(p.id, LedgerEntryType.REFUND_FAILED)]}",
            )
        )
    return found


def audit_summary(
    summary: PatientSummary | None, invoices: Iterable[Invoice], credits: dict[str, Credit]
) -> list[Difference]:
    """The account summary the writes keep (what a list of invoices shows) against the
    invoices and credit it summarizes."""
    if summary is None or not summary.established:
        return []  # not kept yet: the first list of invoices establishes it
    payable = [i for i in invoices if i.is_payable]
    balances = {c: credit.balance for c, credit in credits.items() if credit.balance}
    found = []
    if summary.outstanding_count != len(payable):
        found.append(
            Difference(
                "summary", f"{summary.outstanding_count} outstanding, invoices say {len(payable)}"
            )
        )
    outstanding = sum(i.balance_due for i in payable)
    if summary.outstanding_amount != outstanding:
        found.append(
            Difference(
                "summary",
                f"{summary.outstanding_amount} outstanding amount, invoices say {outstanding}",
            )
        )
    if summary.open_invoice_ids != {i.id for i in payable}:
        found.append(
            Difference(
                "summary",
                f"open invoices {sorted(summary.open_invoice_ids)}, invoices say "
                f"{sorted(i.id for i in payable)}",
            )
        )
    kept = {c: v for c, v in summary.credits.items() if v}
    if kept != balances:
        found.append(Difference("summary", f"credit {kept}, credit items say {balances}"))
    return found


class AuditReads(InvoiceStore, PaymentStore, CreditLedger, Protocol):
    """What the audit reads: a patient's invoices, payments, credit and ledger."""


class Auditor:
    """A patient's account recomputed from the table, and checked against Stripe's records."""

    def __init__(
        self,
        repository: AuditReads,
        stripe: StripeGateways | None,
        *,
        rereads: int = 2,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self._repo = repository
        self._stripe = stripe
        self._rereads = rereads
        self._pause = pause

    def audit_patient(self, clinic_id: str, patient_id: str) -> list[Difference]:
        """The account's differences that hold on every read.

        The account is read in several requests (payments, invoices, credit, ledger, summary),
        so a payment settling between two of them shows a difference that is not there: the
        payment read before its settlement, its ledger entry after. An account that shows
        differences is read again after a pause, and only the subjects found on every read are
        reported, as the last read shows them. A live system is audited without stopping it.
        """
        found = self._audit_once(clinic_id, patient_id)
        for attempt in range(self._rereads):
            if not found:
                break
            self._pause(0.5 * (attempt + 1))
            seen = {d.subject for d in found}
            found = [d for d in self._audit_once(clinic_id, patient_id) if d.subject in seen]
        return found

    def _audit_once(self, clinic_id: str, patient_id: str) -> list[Difference]:
        payments = self._repo.all_payments(clinic_id, patient_id)
        invoices = self._repo.all_invoices(clinic_id, patient_id)
        credits = self._repo.list_credits(clinic_id, patient_id)
        found = audit_account(
            invoices, payments, self._repo.all_ledger(clinic_id, patient_id), credits
        )
        found += audit_summary(self._repo.get_summary(clinic_id, patient_id), invoices, credits)
        if self._stripe is None:
            return found
        for p in payments:
            if p.method is not PaymentMethodType.CARD or not p.stripe_payment_intent_id:
                continue
            gateway = self._stripe.for_account(clinic_id, str(p.stripe_account_id))
            intent = gateway.retrieve_payment_intent(p.stripe_payment_intent_id)
            subject = f"payment {p.id}"
            captured = intent.status == "succeeded"
            if captured and p.status is not PaymentStatus.SUCCEEDED:
                found.append(Difference(subject, "captured at Stripe but not settled here"))
            if p.status is PaymentStatus.SUCCEEDED and not captured:
                found.append(Difference(subject, f"settled here but Stripe says {intent.status}"))
            if captured and p.amount_received != intent.amount_received:
                found.append(
                    Difference(
                        subject,
                        f"received {p.amount_received} here, {intent.amount_received} at Stripe",
                    )
                )
            if any(r.stripe_refund_id for r in p.refunds):
                at_stripe = {r.id: r for r in gateway.list_refunds(p.stripe_payment_intent_id)}
                for r in p.refunds:
                    theirs = at_stripe.get(r.stripe_refund_id or "")
                    if theirs is not None and theirs.has_failed != r.has_failed:
                        found.append(
                            Difference(
                                subject,
                                f"refund {r.id} is {theirs.status} at Stripe, {r.status} here",
                            )
                        )
        return found
