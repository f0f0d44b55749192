"""Receipt emails: one per succeeded payment that has a receipt_email, whichever path settled it.

Settlement is reached by the synchronous response, the webhook and the reconciler, each maybe
more than once and at the same moment. A receipt email is not money, so we choose at-least-once
over at-most-once (a lost receipt is worse than, rarely, a second one) and keep repeats out with
a claim on the payment item:

1. Settlement records, in its own transaction, that a receipt is owed: the payment enters the
   unsent-receipts index. Nothing is forgotten if the process dies right after settling.
2. Whoever reaches settlement claims the receipt with a conditional write (not sent yet, no
   live claim) that holds for LEASE. Only the claimant sends; a concurrent path, a duplicate
   webhook or a retry finds it claimed or sent and does nothing.
3. Sent: the sent marker is written and the payment leaves the index. Not sent: the claim is
   released and the attempt counted, and the next path to reach settlement (a later webhook
   delivery, the reconciler's next run) tries again, MAX_ATTEMPTS times in all.

A second email is possible in one window only: the mail service accepted the message and the
process died before writing the marker (or the send outlived the lease); the lease then expires
and the reconciler sends again. Whatever happens here, the settlement has committed already and
stays as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Final

from clinic_payments.domain.documents import DocumentService, receipt_email
from clinic_payments.domain.model import Payment, PaymentStatus
from clinic_payments.domain.ports import (
    Clock,
    EmailSender,
    PaymentStore,
    ReceiptOutbox,
    ReceiptRef,
)
from clinic_payments.domain.timeutil import from_iso, to_iso

log = logging.getLogger(__name__)

LEASE: Final = timedelta(minutes=2)
MAX_ATTEMPTS: Final = 12  # the reconciler runs every 5 minutes: about an hour of retries


class ReceiptDelivery(StrEnum):
    SENT = "sent"
    NOT_DUE = "not_due"  # no receipt_email, or the payment has not succeeded
    HANDLED = "handled"  # sent already, or another sender holds the claim
    FAILED = "failed"  # not sent; released for a retry
    ABANDONED = "abandoned"  # not sent, for the last time


@dataclass(frozen=True)
class RetryReport:
    sent: int = 0
    failed: int = 0


class ReceiptMailer:
    """The ReceiptNotifier of PaymentService, and the reconciler's retry of unsent receipts."""

    def __init__(
        self,
        repository: PaymentStore,
        outbox: ReceiptOutbox,
        documents: DocumentService,
        email: EmailSender,
        clock: Clock,
        *,
        lease: timedelta = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._repo = repository
        self._outbox = outbox
        self._documents = documents
        self._email = email
        self._clock = clock
        self._lease = lease
        self._max_attempts = max_attempts

    def payment_settled(self, payment: Payment) -> None:
        self.deliver(ReceiptRef(payment.clinic_id, payment.patient_id, payment.id))

    def deliver(self, ref: ReceiptRef) -> ReceiptDelivery:
        payment = self._repo.get_payment(ref.clinic_id, ref.patient_id, ref.payment_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED:
            return ReceiptDelivery.NOT_DUE
        if not payment.receipt_email:
            return ReceiptDelivery.NOT_DUE
        now = self._clock.now()
        if not self._outbox.claim_receipt(ref, now, to_iso(from_iso(now) + self._lease)):
            return ReceiptDelivery.HANDLED
        try:
            receipt = self._documents.receipt_of(payment)
            document, pdf = self._documents.receipt_pdf(receipt)
            self._email.send(receipt_email(receipt, document, pdf, payment.receipt_email))
        except Exception as exc:  # noqa: BLE001 - whatever failed, the claim must be released
            gave_up = self._outbox.release_receipt(ref, give_up_after=self._max_attempts)
            log.warning(
                "receipt email not sent",
                extra={
                    "clinic_id": ref.clinic_id,
                    "payment_id": ref.payment_id,
                    "error_type": type(exc).__name__,
                    "retried": not gave_up,
                },
            )
            return ReceiptDelivery.ABANDONED if gave_up else ReceiptDelivery.FAILED
        self._outbox.mark_receipt_sent(ref, self._clock.now())
        return ReceiptDelivery.SENT

    def retry_unsent(self, older_than: str, limit: int = 200) -> RetryReport:
        """The reconciler's pass over receipts still owed (a send failed, or a process died)."""
        sent = failed = 0
        for ref in self._outbox.unsent_receipts(older_than, limit):
            outcome = self.deliver(ref)
            sent += outcome is ReceiptDelivery.SENT
            failed += outcome in (ReceiptDelivery.FAILED, ReceiptDelivery.ABANDONED)
        return RetryReport(sent=sent, failed=failed)
