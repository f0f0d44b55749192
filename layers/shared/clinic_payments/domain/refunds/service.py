"""Refunds and disputes: a refund reverses its own payment. It takes back first the credit lot
that payment created, as far as it is still unused, then the invoices the payment paid (newest
first, which reopen), then its pass-through fee. The patient's other credit is taken (first,
oldest lot first) only when staff ask for it (`take_credit_first`).

A staff refund takes back the whole amount or nothing: the take-back is one conditional
transaction (the payment's refunds, each invoice's amount_paid and the credit's version as
read), written BEFORE Stripe is asked, so Stripe never gives back money that could not be taken
back. For a card it is a reservation (status `reserved`): Stripe's answer, or a refund event,
moves it on; a refusal (4xx) releases exactly it at once; an unknown outcome (timeout, 5xx)
leaves it reserved, and the request's retry asks Stripe again with the same idempotency key.

One path records a refund whatever asked for it: the API (staff), Stripe's charge.refunded
(a refund made in the dashboard) and a lost dispute. Each is recorded once, by its key (Stripe's
refund id, or the dispute id): the API's refund and the webhook about it never both count.

A card refund may fail or be canceled after it was pending or even succeeded (Stripe's
charge.refund.updated, refund.updated, refund.failed). It then gives back exactly what it took
back, once: its credit to the credit, its invoices' part onto those invoices (what an invoice can
no longer take, being void or paid meanwhile, to credit, as settlement does with overflow), and
its fee part to the fee. A refund's state only moves forward: a late event changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from clinic_payments.domain.contention import until_written
from clinic_payments.domain.credit.lots import (
    add_to_lot,
    put_back,
    take,
)
from clinic_payments.domain.errors import (
    ConflictError,
    DomainError,
    NotFoundError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    REFUND_FAILED_STATUSES,
    REFUND_RESERVED,
    Actor,
    Allocation,
    Caller,
    Credit,
    Dispute,
    DisputeSnapshot,
    Invoice,
    InvoicePaymentRef,
    LedgerEntry,
    LedgerEntryType,
    Payment,
    PaymentMethodType,
    PaymentStatus,
    RefundRecord,
    RefundSnapshot,
)
from clinic_payments.domain.ports import (
    Clock,
    CreditChange,
    CreditLedger,
    InvoiceAmountChange,
    InvoiceStore,
    PaymentStore,
    RefundOutcomeWrite,
    RefundWrite,
    ReservedRefundRef,
    StripeGateways,
    StripeObjectLink,
)
from clinic_payments.domain.refunds.rules import (
    REFUND_PROGRESS,
    REFUND_REASONS,
    STRIPE_ACTOR,
    TakeBack,
    index_of,
    moves_forward,
    net_on_invoices,
    plan_forced_take_back,
    plan_give_back,
    plan_take_back,
    refundable,
)


class RefundStores(PaymentStore, InvoiceStore, CreditLedger, Protocol):
    """What a refund or dispute touches: the payment, the invoices and credit it takes back from."""


class RefundService:
    def __init__(self, repository: RefundStores, stripe: StripeGateways, clock: Clock) -> None:
        self._repo = repository
        self._stripe = stripe
        self._clock = clock

    def _payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment:
        payment = self._repo.get_payment(clinic_id, patient_id, payment_id)
        if payment is None:
            raise NotFoundError("Payment not found.")
        return payment

    def refund(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        amount: int | None,
        reason: str,
        refund_id: str,
        take_credit_first: bool = False,
    ) -> Payment:
        """Staff refund: the take-back is written first (all of it, or 409), then Stripe is
        asked for a card (a cash or check refund is recorded in that one write)."""
        payment = self._payment(clinic_id, patient_id, payment_id)
        mine = next((r for r in payment.refunds if r.id == refund_id), None)
        if mine is None:
            mine = self._take_back(
                caller, payment, amount, reason, refund_id, take_credit_first=take_credit_first
            )
        if mine.is_reserved:
            # New, or a retry after Stripe's answer was lost: the same idempotency key.
            self._ask_stripe(self._payment(clinic_id, patient_id, payment_id), mine)
        elif mine.has_failed and mine.stripe_refund_id is None:
            # A retry of a request whose refund Stripe refused meanwhile (the reconciler asked
            # again): answer the refusal, as the first attempt would have.
            raise PaymentFailedError(
                f"Stripe refused this refund ({mine.failure_reason}); nothing was refunded.",
                payment=self._payment(clinic_id, patient_id, payment_id),
            )
        return self._payment(clinic_id, patient_id, payment_id)

    def _take_back(
        self,
        caller: Caller,
        payment: Payment,
        amount: int | None,
        reason: str,
        refund_id: str,
        *,
        take_credit_first: bool,
    ) -> RefundRecord:
        card = payment.method is PaymentMethodType.CARD
        first_read = payment

        def attempt(number: int) -> RefundRecord:
            payment = first_read
            if number:
                payment = self._payment(first_read.clinic_id, first_read.patient_id, first_read.id)
                done = next((r for r in payment.refunds if r.id == refund_id), None)
                if done is not None:
                    return done
            wanted = self._refundable_now(payment, amount)
            invoices = self._invoices(payment)
            credit = self._repo.get_credit(payment.clinic_id, payment.patient_id, payment.currency)
            plan = plan_take_back(
                payment, wanted, credit, invoices, take_credit_first=take_credit_first
            )
            if plan.total < wanted:
                raise ConflictError(
                    f"Only {plan.total} can be taken back now (the rest of this payment's credit "
                    "was used on other invoices). Refund less, reopen those invoices first, or "
                    "take the patient's other credit first (take_credit_first).",
                    [{"field": "amount", "issue": "more than can be taken back"}],
                )
            now = self._clock.now()
            record = RefundRecord(
                id=refund_id,
                key=refund_id,
                amount=wanted,
                from_credit=plan.from_credit,
                from_invoices=plan.from_invoices,
                from_fee=plan.from_fee,
                reason=reason,
                at=now,
                actor=caller.actor(),
                status=REFUND_RESERVED if card else "succeeded",
                from_lots=plan.from_lots,
            )
            # StaleWriteError: the payment, an invoice or the credit moved: read and plan again
            self._repo.record_refund(
                self._refund_write(payment, record, plan, invoices, credit, now)
            )
            return record

        return until_written(attempt, "The account is changing too fast; try the refund again.")

    def resume(self, ref: ReservedRefundRef) -> str:
        """The reconciler: a reservation whose answer never came (the request timed out and
        was not retried) is asked of Stripe again, under the same idempotency key, so Stripe
        makes it at most once; its answer confirms or releases it. Says what happened:
        `unchanged` (no longer reserved), `confirmed` or `released`. An unknown outcome
        again raises PaymentProviderUnavailableError: the next run tries again."""
        link = ref.link
        payment = self._payment(link.clinic_id, link.patient_id, link.payment_id)
        reserved = next((r for r in payment.refunds if r.id == ref.refund_id), None)
        if reserved is None or not reserved.is_reserved:
            return "unchanged"
        try:
            self._ask_stripe(payment, reserved)
        except PaymentProviderUnavailableError:
            raise
        except DomainError:
            return "released"  # Stripe refused it: the reservation was given back
        return "confirmed"

    @staticmethod
    def _refundable_now(payment: Payment, amount: int | None) -> int:
        if payment.status is not PaymentStatus.SUCCEEDED:
            raise ConflictError(f"Only a succeeded payment can be refunded ({payment.status}).")
        if payment.dispute is not None and payment.dispute.is_open:
            raise ConflictError(
                "The payment is disputed: the cardholder's bank decides; refunding now could "
                "pay twice. Respond to the dispute in Stripe instead."
            )
        left = refundable(payment)
        wanted = left if amount is None else amount
        if wanted <= 0 or wanted > left:
            raise ConflictError(
                f"At most {left} of this payment can still be refunded.",
                [{"field": "amount", "issue": "more than what is left to refund"}],
            )
        return wanted

    def _ask_stripe(self, payment: Payment, reserved: RefundRecord) -> None:
        """Ask Stripe for a reserved refund, then confirm or release the reservation. An
        unknown outcome leaves it reserved (Stripe's events or the retry settle it)."""
        link = StripeObjectLink(
            payment.clinic_id, payment.patient_id, payment.id, payment.stripe_account_id or ""
        )
        gateway = self._stripe.for_account(payment.clinic_id, str(payment.stripe_account_id))
        try:
            answer = gateway.create_refund(
                payment_intent_id=str(payment.stripe_payment_intent_id),
                amount=reserved.amount,
                reason=reserved.reason if reserved.reason in REFUND_REASONS else None,
                metadata={
                    "clinic_id": payment.clinic_id,
                    "patient_id": payment.patient_id,
                    "payment_id": payment.id,
                    "refund_id": reserved.id,
                },
                idempotency_key=f"{reserved.id}:refund",
            )
        except PaymentProviderUnavailableError:
            raise
        except DomainError as exc:
            # Stripe refused the request (4xx): no refund exists there. Give back exactly
            # what was reserved, then answer the refusal.
            refused = RefundSnapshot(
                reserved.key, reserved.amount, "canceled", failure_reason=exc.code
            )
            self.refund_changed(link, refused)
            raise
        self.refund_changed(link, answer)

    def _invoices(self, payment: Payment) -> dict[str, Invoice]:
        found = {}
        for invoice_id in net_on_invoices(payment):
            invoice = self._repo.get_invoice(payment.clinic_id, payment.patient_id, invoice_id)
            if invoice is not None:
                found[invoice_id] = invoice
        return found

    def record(
        self,
        link: StripeObjectLink,
        *,
        refund_id: str,
        key: str,
        amount: int,
        reason: str,
        actor: Actor,
        stripe_refund_id: str | None,
        status: str = "succeeded",
        failure_reason: str | None = None,
    ) -> bool:
        """Record money Stripe gave back without our asking (a dashboard refund, a lost
        dispute), once by its key. False if it was recorded already. It is taken back in full
        (`plan_forced_take_back`); only what even that cannot cover is reported by the audit.

        A refund Stripe reports failed before it was recorded here (its failure event came
        first) is recorded as failed, taking nothing back: whatever records it later by the
        same key changes nothing."""
        failed = status in REFUND_FAILED_STATUSES

        def attempt(_: int) -> bool:
            payment = self._payment(link.clinic_id, link.patient_id, link.payment_id)
            if any(key in (r.key, r.stripe_refund_id) for r in payment.refunds):
                return False
            now = self._clock.now()
            invoices: dict[str, Invoice] = {}
            credit = Credit(0, payment.currency, 0)
            plan = TakeBack([], [], 0)
            taken = amount
            if not failed:
                taken = min(amount, refundable(payment))
                if taken <= 0:
                    return False
                credit = self._repo.get_credit(
                    payment.clinic_id, payment.patient_id, payment.currency
                )
                invoices = self._invoices(payment)
                plan = plan_take_back(payment, taken, credit, invoices)
                if plan.total < taken:
                    others = [
                        inv
                        for inv in self._repo.all_invoices(payment.clinic_id, payment.patient_id)
                        if inv.amount_paid > 0 and inv.currency == payment.currency
                    ]
                    invoices = {**{inv.id: inv for inv in others}, **invoices}
                    plan = plan_forced_take_back(taken, credit, plan, others)
            record = RefundRecord(
                id=refund_id,
                key=key,
                amount=taken,
                from_credit=plan.from_credit,
                from_invoices=plan.from_invoices,
                from_fee=plan.from_fee,
                reason=reason,
                at=now,
                actor=actor,
                stripe_refund_id=stripe_refund_id,
                status=status,
                failure_reason=failure_reason,
                failed_at=now if failed else None,
                from_lots=plan.from_lots,
            )
            write = self._refund_write(payment, record, plan, invoices, credit, now)
            return self._repo.record_refund(write)

        return until_written(
            attempt, "The account is changing too fast; the refund will be retried."
        )

    @staticmethod
    def _refund_write(
        payment: Payment,
        record: RefundRecord,
        plan: TakeBack,
        invoices: dict[str, Invoice],
        credit: Credit,
        now: str,
    ) -> RefundWrite:
        """The one transaction of a take-back, conditioned on everything the plan was made
        from: the payment's refunds, each invoice's amount_paid, the credit's version."""
        debits = [
            InvoiceAmountChange.of(
                invoices[a.invoice_id],
                -a.amount,
                InvoicePaymentRef(record.id, -a.amount, "refund", now),
            )
            for a in plan.from_invoices
        ]
        change = None
        if plan.from_lots:
            entry = LedgerEntry(
                id=new_id("rfd"),
                type=LedgerEntryType.REFUND,
                amount=-plan.from_credit,
                currency=payment.currency,
                at=now,
                actor=record.actor,
                payment_id=payment.id,
                reason=record.reason,
            )
            change = CreditChange(entry, credit, take(credit, plan.from_lots))
        return RefundWrite(payment, record, debits, change)

    # -- Stripe's events -----------------------------------------------------------------

    def charge_refunded(self, link: StripeObjectLink, refunds: list[RefundSnapshot]) -> int:
        """charge.refunded: record each refund not recorded yet, and the failure of any listed
        as failed. Returns how many changed something."""
        return sum(1 for refund in refunds if self.refund_changed(link, refund))

    def refund_changed(self, link: StripeObjectLink, snapshot: RefundSnapshot) -> bool:
        """A refund as Stripe reports it now (refund.*, charge.refund.updated, or listed by
        charge.refunded), or our own request's answer. Unknown here: recorded (a dashboard
        refund; failed, it takes nothing). Known: its status moves forward (a reservation is
        confirmed with Stripe's id), and if it failed what it took back is given back.
        False when nothing changed (a duplicate, a late or reordered event)."""

        def attempt(_: int) -> bool:
            payment = self._payment(link.clinic_id, link.patient_id, link.payment_id)
            index = index_of(payment, snapshot)
            if index is None:
                return self._record_reported(link, payment, snapshot)
            recorded = payment.refunds[index]
            if not moves_forward(recorded.status, snapshot.status):
                return False
            self._repo.record_refund_outcome(self._outcome(payment, index, snapshot))
            return True

        return until_written(
            attempt, "The account is changing too fast; the event will be retried."
        )

    def _record_reported(
        self, link: StripeObjectLink, payment: Payment, snapshot: RefundSnapshot
    ) -> bool:
        if snapshot.status not in REFUND_PROGRESS:
            return False
        # Ours when its metadata says so (the API's answer was lost, or the event came first):
        # recorded under our refund id, so a retry of the API request finds it.
        ours = snapshot.metadata.get("payment_id") == payment.id
        refund_id = snapshot.metadata.get("refund_id") if ours else None
        return self.record(
            link,
            refund_id=refund_id or snapshot.id,
            key=snapshot.id,
            amount=snapshot.amount,
            reason="stripe_dashboard",
            actor=STRIPE_ACTOR,
            stripe_refund_id=snapshot.id,
            status=snapshot.status,
            failure_reason=snapshot.failure_reason,
        )

    def _outcome(
        self, payment: Payment, index: int, snapshot: RefundSnapshot
    ) -> RefundOutcomeWrite:
        recorded = payment.refunds[index]
        # A reservation learns Stripe's id from Stripe's answer or event (not from a refusal,
        # which names our own key: no refund exists at Stripe then).
        stripe_id = recorded.stripe_refund_id or (
            snapshot.id if snapshot.id != recorded.key else None
        )
        if not snapshot.has_failed:
            # reserved/pending -> succeeded: the money was taken back already; only the status
            # (and Stripe's id) moves.
            moved = replace(recorded, status=snapshot.status, stripe_refund_id=stripe_id)
            return RefundOutcomeWrite(payment, index, moved, [], None)
        now = self._clock.now()
        invoices: dict[str, Invoice] = {}
        for a in recorded.from_invoices:
            invoice = self._repo.get_invoice(payment.clinic_id, payment.patient_id, a.invoice_id)
            if invoice is not None:
                invoices[a.invoice_id] = invoice
        give_back = plan_give_back(recorded, invoices)
        credits = []
        for a in give_back.to_invoices:
            invoice = invoices[a.invoice_id]
            credits.append(
                InvoiceAmountChange.of(
                    invoice,
                    a.amount,
                    InvoicePaymentRef(recorded.id, a.amount, "refund_failed", now),
                )
            )
        change = None
        if give_back.to_credit:
            entry = LedgerEntry(
                id=new_id("rff"),
                type=LedgerEntryType.REFUND_FAILED,
                amount=give_back.to_credit,
                currency=payment.currency,
                at=now,
                actor=STRIPE_ACTOR,
                payment_id=payment.id,
                reason=snapshot.failure_reason or snapshot.status,
            )
            # Back into the lots it came from (their dates keep their place, oldest first);
            # what an invoice can no longer take joins the payment's own lot.
            seen = self._repo.get_credit(payment.clinic_id, payment.patient_id, payment.currency)
            new = put_back(seen, recorded.from_lots)
            overflow = give_back.to_credit - sum(t.amount for t in recorded.from_lots)
            if overflow > 0:
                new = add_to_lot(new, payment.id, overflow, now)
            change = CreditChange(entry, seen, new)
        failed = replace(
            recorded,
            stripe_refund_id=stripe_id,
            status=snapshot.status,
            failure_reason=snapshot.failure_reason,
            failed_at=now,
            returned_to_invoices=give_back.to_invoices,
            returned_to_credit=give_back.to_credit,
        )
        return RefundOutcomeWrite(payment, index, failed, credits, change)

    def dispute_changed(self, link: StripeObjectLink, snapshot: DisputeSnapshot) -> None:
        payment = self._payment(link.clinic_id, link.patient_id, link.payment_id)
        now = self._clock.now()
        previous = payment.dispute
        dispute = Dispute(
            id=snapshot.id,
            amount=snapshot.amount,
            status=snapshot.status,
            reason=snapshot.reason,
            opened_at=previous.opened_at if previous else now,
        )
        was_open = previous is not None and previous.is_open
        at_risk = self._at_risk(payment, snapshot.amount)
        if dispute.is_open and not was_open:
            self._repo.set_dispute(payment, dispute, at_risk)
        elif not dispute.is_open:
            release = [replace(a, amount=-a.amount) for a in at_risk] if was_open else []
            self._repo.set_dispute(payment, dispute, release)
            if snapshot.status == "lost":
                # The bank took the money back: reversed like a refund, once (by dispute id).
                self.record(
                    link,
                    refund_id=snapshot.id,
                    key=snapshot.id,
                    amount=snapshot.amount,
                    reason="dispute_lost",
                    actor=STRIPE_ACTOR,
                    stripe_refund_id=None,
                )
        elif previous != dispute:
            self._repo.set_dispute(payment, dispute, [])

    def _at_risk(self, payment: Payment, amount: int) -> list[Allocation]:
        remaining = amount
        found = []
        for invoice_id, net in net_on_invoices(payment).items():
            take = min(remaining, net)
            if take > 0:
                found.append(Allocation(invoice_id, take))
                remaining -= take
        return found
