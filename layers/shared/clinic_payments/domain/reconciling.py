"""The reconciler: payments left non-final (a lost webhook, a Lambda that died) are settled
by asking Stripe for the PaymentIntent's real state."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from clinic_payments.domain.errors import DomainError
from clinic_payments.domain.model import Failure, PaymentMethodType, PaymentStatus
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.ports import (
    Clock,
    PaymentStore,
    StripeGateways,
    StripeObjectLink,
)
from clinic_payments.domain.receipts import ReceiptMailer
from clinic_payments.domain.refunds.service import RefundService
from clinic_payments.domain.timeutil import from_iso, to_iso

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    examined: int = 0
    settled: int = 0
    updated: int = 0
    unchanged: int = 0
    abandoned: int = 0
    receipts_sent: int = 0
    receipts_failed: int = 0
    refunds_confirmed: int = 0
    refunds_released: int = 0
    errors: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        repository: PaymentStore,
        payments: PaymentService,
        stripe: StripeGateways,
        clock: Clock,
        *,
        min_age: timedelta = timedelta(minutes=5),
        abandon_after: timedelta = timedelta(hours=24),
        receipts: ReceiptMailer | None = None,
        refunds: RefundService | None = None,
    ) -> None:
        self._repo = repository
        self._payments = payments
        self._stripe = stripe
        self._clock = clock
        self._min_age = min_age
        self._abandon_after = abandon_after
        self._receipts = receipts
        self._refunds = refunds

    def run(self, limit: int = 1000) -> ReconcileReport:
        report = ReconcileReport()
        now = from_iso(self._clock.now())
        cutoff = to_iso(now - self._min_age)
        for link in self._repo.pending_payments(older_than=cutoff, limit=limit):
            report.examined += 1
            try:
                self._reconcile_one(link.clinic_id, link.patient_id, link.payment_id, now, report)
            except DomainError as exc:
                # One clinic's Stripe outage must not stop the others; the next run retries.
                report.errors.append(f"{link.payment_id}: {exc.code}")
        if self._refunds is not None:
            # Card refunds reserved whose Stripe answer never came and nobody retried.
            for ref in self._repo.reserved_refunds(older_than=cutoff, limit=limit):
                try:
                    outcome = self._refunds.resume(ref)
                except DomainError as exc:
                    report.errors.append(f"{ref.refund_id}: {exc.code}")
                    continue
                report.refunds_confirmed += outcome == "confirmed"
                report.refunds_released += outcome == "released"
        if self._receipts is not None:
            # Receipts still owed: a send that failed, or a process that died after settling.
            retried = self._receipts.retry_unsent(older_than=cutoff, limit=limit)
            report.receipts_sent, report.receipts_failed = retried.sent, retried.failed
        return report

    def _reconcile_one(
        self,
        clinic_id: str,
        patient_id: str,
        payment_id: str,
        now: datetime,
        report: ReconcileReport,
    ) -> None:
        payment = self._repo.get_payment(clinic_id, patient_id, payment_id)
        if payment is None or payment.is_final:
            report.unchanged += 1
            return
        if payment.method is not PaymentMethodType.CARD:
            self._payments.settle_offline(payment)  # recorded, then the Lambda died
            report.settled += 1
            return
        age = now - from_iso(payment.created_at)
        if payment.stripe_payment_intent_id is None:
            if age > self._abandon_after and payment.status is not PaymentStatus.FAILED:
                # Never reached Stripe as far as we know. Failed is not final: if a webhook
                # for it ever arrives (metadata names this payment), it still settles.
                self._repo.update_payment_status(
                    payment,
                    PaymentStatus.FAILED,
                    failure=Failure("not_submitted", None, "The payment was not completed."),
                )
                report.abandoned += 1
            else:
                report.unchanged += 1
            return
        gateway = self._stripe.for_account(clinic_id, str(payment.stripe_account_id))
        intent = gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
        after = self._payments.settle_intent(
            StripeObjectLink(clinic_id, patient_id, payment.id, str(payment.stripe_account_id)),
            intent,
        )
        if after is not None and after.status is PaymentStatus.SUCCEEDED:
            report.settled += 1
        elif age > self._abandon_after and after is not None and not after.is_final:
            # The payer walked away from the intent. Stop looking, so abandoned payments never
            # crowd out newer ones; a webhook, should it ever come, still settles it.
            self._repo.stop_tracking(after)
            report.abandoned += 1
        elif after is not None and after.status is not payment.status:
            report.updated += 1
        else:
            report.unchanged += 1
