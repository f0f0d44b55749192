"""Receipt emails on the fakes: one per succeeded payment whichever path settles it, retried
when the mail service fails, and never a reason for settlement to fail."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from clinic_payments.adapters.pdf import PdfRenderer
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.documents import DocumentService
from clinic_payments.domain.errors import EmailNotSentError
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import Payment, PaymentMethodType, PaymentStatus
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.ports import (
    EmailSender,
    OutgoingEmail,
    ReceiptNotifier,
    ReceiptOutbox,
    ReceiptRef,
)
from clinic_payments.domain.receipts import LEASE, ReceiptDelivery, ReceiptMailer
from clinic_payments.domain.refunds.service import RefundService
from clinic_payments.domain.saved_cards import SavedCardService
from clinic_payments.domain.webhooks import WebhookService

from tests.unit.fakes import (
    ACCOUNT,
    CLINIC,
    PATIENT,
    STAFF,
    InMemoryPaymentsRepository,
    World,
    intent_event,
    make_world,
    patient_caller,
    with_status,
)

pytestmark = pytest.mark.unit

TO = "patient@example.com"


class InMemoryReceiptOutbox:
    """ReceiptOutbox with DynamoDBPaymentsRepository's conditions: a claim needs a succeeded
    payment, no sent marker and no live claim; the unsent index is what settlement left owed."""

    def __init__(self, repo: InMemoryPaymentsRepository) -> None:
        self._repo = repo
        self.claims: dict[ReceiptRef, str] = {}
        self.sent: dict[ReceiptRef, str] = {}
        self.attempts: Counter[ReceiptRef] = Counter()
        self.given_up: set[ReceiptRef] = set()

    def claim_receipt(self, ref: ReceiptRef, now: str, until: str) -> bool:
        payment = self._repo.get_payment(ref.clinic_id, ref.patient_id, ref.payment_id)
        if payment is None or payment.status is not PaymentStatus.SUCCEEDED or ref in self.sent:
            return False
        if ref in self.claims and self.claims[ref] >= now:
            return False
        self.claims[ref] = until
        return True

    def mark_receipt_sent(self, ref: ReceiptRef, at: str) -> None:
        self.sent.setdefault(ref, at)
        self.claims.pop(ref, None)

    def release_receipt(self, ref: ReceiptRef, *, give_up_after: int) -> bool:
        if ref in self.sent:
            return False
        self.claims.pop(ref, None)
        self.attempts[ref] += 1
        if self.attempts[ref] >= give_up_after:
            self.given_up.add(ref)
            return True
        return False

    def unsent_receipts(self, older_than: str, limit: int) -> list[ReceiptRef]:
        owed = [
            ReceiptRef(p.clinic_id, p.patient_id, p.id)
            for p in self._repo.all_payments()
            if p.status is PaymentStatus.SUCCEEDED
            and p.receipt_email
            and (p.succeeded_at or "") < older_than
        ]
        return [r for r in owed if r not in self.sent and r not in self.given_up][:limit]


class Mailbox:
    """EmailSender: keeps what it sent; `fail` makes the next sends fail like SES refusing."""

    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []
        self.fail: BaseException | None = None

    def send(self, email: OutgoingEmail) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(email)


class Rig:
    def __init__(self, world: World, **mailer_options: object) -> None:
        self.world = world
        self.outbox = InMemoryReceiptOutbox(world.repo)
        self.mailbox = Mailbox()
        self.mailer = ReceiptMailer(
            world.repo,
            self.outbox,
            DocumentService(world.repo, PdfRenderer()),
            self.mailbox,
            world.clock,
            **mailer_options,  # type: ignore[arg-type]
        )
        self.payments = PaymentService(world.repo, world.stripe, world.clock, self.mailer)
        self.webhooks = WebhookService(
            world.repo,
            self.payments,
            world.secrets,
            world.verifier,
            RefundService(world.repo, world.stripe, world.clock),
            world.stripe,
            SavedCardService(world.repo, world.stripe, self.payments, world.clock),
        )

    def cash(self, amount: int, receipt_email: str | None = TO) -> Payment:
        invoice = self.world.invoice(amount)
        request = PaymentRequest(
            method=PaymentMethodType.CASH,
            allocations=[RequestedAllocation(invoice.id)],
            receipt_email=receipt_email,
        )
        return self.payments.create(STAFF, CLINIC, PATIENT, request, new_id("pay"))

    def later(self, delta: timedelta = timedelta(minutes=10)) -> str:
        return self.world.clock.advance(delta)


# The fakes are the ports: mypy --strict fails here the day one drifts from its Protocol.
_outbox: ReceiptOutbox = InMemoryReceiptOutbox(InMemoryPaymentsRepository())
_sender: EmailSender = Mailbox()
_notifier: ReceiptNotifier = Rig(make_world()).mailer


@pytest.fixture
def rig() -> Rig:
    return Rig(make_world())


def ref_of(payment: Payment) -> ReceiptRef:
    return ReceiptRef(payment.clinic_id, payment.patient_id, payment.id)


def test_a_settled_payment_with_receipt_email_sends_its_receipt_once(rig: Rig) -> None:
    payment = rig.cash(4200)
    assert payment.status is PaymentStatus.SUCCEEDED
    [email] = rig.mailbox.sent
    assert email.to == TO
    assert payment.confirmation_number in email.subject
    [attachment] = email.attachments
    assert attachment.data.startswith(b"%PDF-")
    # Settlement reached again (a retried request, the reconciler): nothing more is sent.
    rig.payments.settle_offline(payment)
    rig.mailer.payment_settled(payment)
    assert rig.mailer.retry_unsent(rig.later()).sent == 0
    assert len(rig.mailbox.sent) == 1


def test_no_receipt_email_no_email(rig: Rig) -> None:
    payment = rig.cash(1000, receipt_email=None)
    assert rig.mailer.deliver(ref_of(payment)) is ReceiptDelivery.NOT_DUE
    assert rig.mailbox.sent == []


def test_the_synchronous_path_then_every_webhook_delivery_send_one_receipt(rig: Rig) -> None:
    world = rig.world
    card = world.saved_card()
    invoice = world.invoice(6400)
    payment = rig.payments.create(
        patient_caller(PATIENT),
        CLINIC,
        PATIENT,
        PaymentRequest(
            method=PaymentMethodType.CARD,
            allocations=[RequestedAllocation(invoice.id)],
            payment_method_id=card,
            receipt_email=TO,
        ),
        new_id("pay"),
    )
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.stripe_payment_intent_id is not None
    assert len(rig.mailbox.sent) == 1
    intent = world.gateway.intents[payment.stripe_payment_intent_id].snapshot()
    event = intent_event(with_status(intent, "succeeded"))
    keys = world.secrets.get_keys(CLINIC, ACCOUNT)
    assert keys is not None
    # Stripe delivers the event three times, and two more events about the same intent.
    for delivery in [event, event, event, intent_event(intent), intent_event(intent)]:
        body, signature = world.verifier.sign(delivery, keys.webhook_secret)
        rig.webhooks.handle(CLINIC, ACCOUNT, body, signature)
    assert len(rig.mailbox.sent) == 1


def test_a_mail_service_failure_leaves_settlement_standing_and_a_retry_sends(rig: Rig) -> None:
    rig.mailbox.fail = EmailNotSentError("SES said no")
    payment = rig.cash(5300)
    assert payment.status is PaymentStatus.SUCCEEDED  # settled all the same
    assert rig.world.stored_invoice(payment.allocations[0].invoice_id).balance_due == 0
    assert rig.mailbox.sent == []
    assert rig.outbox.attempts[ref_of(payment)] == 1
    assert ref_of(payment) not in rig.outbox.claims  # released for the retry
    rig.mailbox.fail = None
    report = rig.mailer.retry_unsent(rig.later())
    assert (report.sent, report.failed) == (1, 0)
    assert rig.mailer.retry_unsent(rig.later()).sent == 0
    assert len(rig.mailbox.sent) == 1


def test_an_unexpected_error_while_sending_is_released_too(rig: Rig) -> None:
    rig.mailbox.fail = RuntimeError("a bug in the renderer, say")
    payment = rig.cash(1200)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert rig.mailer.deliver(ref_of(payment)) is ReceiptDelivery.FAILED
    assert rig.outbox.attempts[ref_of(payment)] == 2


def test_a_live_claim_keeps_a_second_sender_out_until_its_lease_expires(rig: Rig) -> None:
    payment = rig.cash(2000, receipt_email=None)
    stored = rig.world.repo.payments[(CLINIC, PATIENT)][payment.id]
    stored.receipt_email = TO  # a receipt owed that no one has sent yet
    ref = ref_of(payment)
    now = rig.world.clock.now()
    # Another sender claimed it and is still sending (or died holding the claim).
    assert rig.outbox.claim_receipt(ref, now, rig.world.clock.advance(LEASE))
    rig.world.clock.set(rig.world.clock.moment - LEASE + timedelta(seconds=1))
    assert rig.mailer.deliver(ref) is ReceiptDelivery.HANDLED
    assert rig.mailbox.sent == []
    rig.later(LEASE)  # the claim expires: at-least-once, the receipt is sent after all
    assert rig.mailer.deliver(ref) is ReceiptDelivery.SENT
    assert rig.mailer.deliver(ref) is ReceiptDelivery.HANDLED
    assert len(rig.mailbox.sent) == 1


def test_retries_stop_after_the_last_attempt() -> None:
    rig = Rig(make_world(), max_attempts=3)
    rig.mailbox.fail = EmailNotSentError("SES said no")
    payment = rig.cash(700)
    assert rig.mailer.retry_unsent(rig.later()).failed == 1
    assert rig.mailer.deliver(ref_of(payment)) is ReceiptDelivery.ABANDONED
    rig.mailbox.fail = None
    assert rig.mailer.retry_unsent(rig.later()).sent == 0
    assert rig.mailbox.sent == []


class BrokenNotifier:
    def payment_settled(self, payment: Payment) -> None:
        raise RuntimeError("the outbox table is unreachable")


def test_a_broken_notifier_never_fails_a_settlement() -> None:
    world = make_world()
    payments = PaymentService(world.repo, world.stripe, world.clock, BrokenNotifier())
    invoice = world.invoice(900)
    payment = payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(
            method=PaymentMethodType.CASH,
            allocations=[RequestedAllocation(invoice.id)],
            receipt_email=TO,
        ),
        new_id("pay"),
    )
    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(invoice.id).balance_due == 0
