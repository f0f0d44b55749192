"""In-memory fakes of the domain's ports, typed against the Protocols so they cannot drift.

InMemoryPaymentsRepository mirrors DynamoPaymentsRepository's conditional semantics (put-if-absent,
forward-only status updates, one all-or-nothing settlement transaction, idempotency claims with a
lock). FakeStripeGateway behaves like Stripe as the StripeGateway adapter presents it: idempotency
keys replay the first answer, declines come back as an intent with last_error (a confirm-time
decline) or as CardDeclinedError, an outage as PaymentProviderUnavailableError.

Every read returns a copy, as a database would: a test cannot change stored state by aliasing.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from clinic_payments.domain.credit.service import CreditService
from clinic_payments.domain.errors import (
    CardDeclinedError,
    ConflictError,
    DomainError,
    NotFoundError,
    PaymentProviderUnavailableError,
    StaleWriteError,
    ValidationError,
    WebhookSignatureError,
)
from clinic_payments.domain.invoices.rules import NewInvoice, NewLine
from clinic_payments.domain.invoices.service import InvoiceService
from clinic_payments.domain.model import (
    AccountStatus,
    Actor,
    Allocation,
    Caller,
    CardConsent,
    CardSetup,
    CardSummary,
    ClinicSettings,
    Credit,
    Dispute,
    Failure,
    IntentSnapshot,
    Invoice,
    InvoicePaymentRef,
    InvoiceStatus,
    LedgerEntry,
    Location,
    Page,
    Payment,
    PaymentStatus,
    RefundSnapshot,
    Role,
    SetupIntentSnapshot,
    StripeAccount,
    StripeKeys,
    TaxRate,
    WebhookEvent,
)
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.payments.states import awaits_outcome, statuses_before
from clinic_payments.domain.ports import (
    ClinicSecrets,
    Clock,
    CreditApplication,
    CreditChange,
    IdempotencyRecord,
    InvoiceAmountChange,
    PatientReads,
    PatientSummary,
    PaymentsRepository,
    RefundOutcomeWrite,
    RefundWrite,
    RequestAnswer,
    ReservedRefundRef,
    SettlementWrite,
    SettleResult,
    StripeGateway,
    StripeGateways,
    StripeObjectLink,
    WebhookVerifier,
)
from clinic_payments.domain.refunds.service import RefundService
from clinic_payments.domain.saved_cards import SavedCardService
from clinic_payments.domain.timeutil import to_iso
from clinic_payments.domain.webhooks import WebhookOutcome, WebhookService

IDEMPOTENCY_RETENTION_SECONDS = 60 * 60 * 24
_OPEN = (InvoiceStatus.OPEN, InvoiceStatus.PARTIALLY_PAID)

PatientKey = tuple[str, str]


def _encode_cursor(sort_key: str) -> str:
    """A page's cursor as the adapter makes it: the sort key of its last item, base64."""
    return base64.urlsafe_b64encode(sort_key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, prefix: str) -> str:
    """The sort key a cursor carries; ValidationError unless it is one of this listing's."""
    try:
        sk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}]) from exc
    if not sk.startswith(prefix):
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}])
    return sk


def _ledger_sort_key(entry_id: str) -> str:
    """The adapter's key of a ledger entry: the ULID of its id leads (time order across kinds
    of entry), its prefix after it."""
    prefix, _, rest = entry_id.partition("_")
    return f"LEDGER#{rest}#{prefix}" if rest else f"LEDGER#{entry_id}"


def _pending_sort_key(p: Payment) -> str:
    return f"{p.created_at}#{p.clinic_id}#{p.patient_id}#{p.id}"


def _as_read(invoice: Invoice | None, seen_amount_paid: int) -> bool:
    """The condition of every invoice update: there, not void, amount_paid as it was read."""
    return (
        invoice is not None
        and invoice.amount_paid == seen_amount_paid
        and invoice.status is not InvoiceStatus.VOID
    )


def _invoices_as_read(bucket: dict[str, Invoice], changes: Sequence[InvoiceAmountChange]) -> bool:
    return all(_as_read(bucket.get(c.invoice_id), c.seen_amount_paid) for c in changes)


def _check_planned(change: CreditChange | None) -> None:
    """The adapter builds a credit movement's items before it writes anything: one planned
    below zero is refused there, before any condition is checked or anything written."""
    if change is not None and (
        change.new.balance < 0 or any(lot.amount < 0 for lot in change.new.lots)
    ):
        raise ValueError("a credit movement planned below zero")  # a bug, never a race


def _pay_onto(
    invoice: Invoice, amount: int, new_status: InvoiceStatus, ref: InvoicePaymentRef
) -> None:
    invoice.amount_paid += amount
    invoice.status = new_status
    invoice.payments.append(ref)
    if new_status is InvoiceStatus.PAID:
        invoice.paid_at = ref.at


@dataclass
class _IdempotencyItem:
    request_hash: str
    resource_id: str
    completed: bool
    lock_until: int
    expires_at: int
    status_code: int | None = None
    body: str | None = None

    def record(self) -> IdempotencyRecord:
        return IdempotencyRecord(
            self.request_hash, self.resource_id, self.completed, self.status_code, self.body
        )


@dataclass
class _SummaryItem:
    """A patient's summary item, as far as the fake keeps one: that it exists, its version and
    whether it is established. Its figures are the account's own, computed when read (the
    adapter's, kept by the writes from the moment it is written, are the same for any account
    whose every write went through the repository; establish_summary is given the account's)."""

    version: int = 0
    established: bool = False


_Glance = tuple[int, int, frozenset[str], tuple[tuple[str, int], ...]]


class InMemoryPaymentsRepository:
    """PaymentsRepository in memory, with DynamoPaymentsRepository's conditions.

    Test hooks:
    - `fail_next(method, exc)`: the next call of that method raises exc (before any effect);
    - `before_settle`, `before_record_refund`, `before_apply_credit`, `before_refund_outcome`:
      called with each write before its conditions are checked, so a test can land a
      concurrent write in between a read and the transaction.
    """

    def __init__(self, epoch_seconds: Callable[[], float] = time.time) -> None:
        self._epoch_seconds = epoch_seconds
        self.settings: dict[str, ClinicSettings] = {}
        self.accounts: dict[tuple[str, str], StripeAccount] = {}
        self.invoice_counters: dict[str, int] = {}
        self.invoices: dict[PatientKey, dict[str, Invoice]] = {}
        self.payments: dict[PatientKey, dict[str, Payment]] = {}
        self.pending: set[tuple[str, str, str]] = set()
        self.links: dict[str, StripeObjectLink] = {}
        self.credits: dict[tuple[str, str, str], Credit] = {}
        self.ledger: dict[PatientKey, list[LedgerEntry]] = {}
        self.customers: dict[tuple[str, str, str], str] = {}
        self.card_setups: dict[PatientKey, dict[str, CardSetup]] = {}
        self.card_consent_records: dict[PatientKey, dict[str, CardConsent]] = {}
        self.events: dict[tuple[str, str], str] = {}
        self.idempotency: dict[str, _IdempotencyItem] = {}
        self.summaries: dict[PatientKey, _SummaryItem] = {}
        self.settle_calls = 0
        self.patient_reads = 0
        self.card_details: dict[tuple[str, str, str], CardSummary] = {}
        self.stale_writes = 0
        self.before_settle: Callable[[SettlementWrite], None] | None = None
        self.outcome_writes = 0
        self.before_refund_outcome: Callable[[RefundOutcomeWrite], None] | None = None
        self.before_record_refund: Callable[[RefundWrite], None] | None = None
        # The reserved-refunds index: sort key (reserved at, ...) -> the refund it points at.
        self.reserved: dict[str, ReservedRefundRef] = {}
        self.before_apply_credit: Callable[[CreditApplication], None] | None = None
        self._failures: dict[str, list[BaseException]] = {}

    # -- test hooks -----------------------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException) -> None:
        if not callable(getattr(self, method, None)):
            raise AttributeError(f"no repository method {method}")
        self._failures.setdefault(method, []).append(exc)

    def _maybe_fail(self, method: str) -> None:
        queued = self._failures.get(method)
        if queued:
            raise queued.pop(0)

    def ledger_entries(self, clinic_id: str, patient_id: str) -> list[LedgerEntry]:
        return list(self.ledger.get((clinic_id, patient_id), []))

    def all_payments(
        self, clinic_id: str | None = None, patient_id: str | None = None
    ) -> list[Payment]:
        """Every payment, or one patient's (the repository port's form)."""
        return [
            copy.deepcopy(p)
            for (c, pat), ps in self.payments.items()
            if clinic_id is None or (c, pat) == (clinic_id, patient_id)
            for p in ps.values()
        ]

    def is_pending(self, payment: Payment) -> bool:
        return (payment.clinic_id, payment.patient_id, payment.id) in self.pending

    # -- clinic configuration -------------------------------------------------------------

    def get_settings(self, clinic_id: str, *, cached: bool = False) -> ClinicSettings | None:
        self._maybe_fail("get_settings")
        found = self.settings.get(clinic_id)
        return copy.deepcopy(found) if found else None

    def put_settings(self, settings: ClinicSettings) -> None:
        self._maybe_fail("put_settings")
        self.settings[settings.clinic_id] = copy.deepcopy(settings)

    def get_account(
        self, clinic_id: str, account_id: str, *, cached: bool = False
    ) -> StripeAccount | None:
        self._maybe_fail("get_account")
        found = self.accounts.get((clinic_id, account_id))
        return copy.deepcopy(found) if found else None

    def list_accounts(self, clinic_id: str, *, cached: bool = False) -> list[StripeAccount]:
        self._maybe_fail("list_accounts")
        return [
            copy.deepcopy(a)
            for (clinic, account_id), a in sorted(self.accounts.items())
            if clinic == clinic_id
        ]

    def put_account(self, account: StripeAccount) -> None:
        self._maybe_fail("put_account")
        self.accounts[(account.clinic_id, account.account_id)] = copy.deepcopy(account)

    # -- invoices -------------------------------------------------------------------------

    def next_invoice_number(self, clinic_id: str) -> int:
        self._maybe_fail("next_invoice_number")
        self.invoice_counters[clinic_id] = self.invoice_counters.get(clinic_id, 0) + 1
        return self.invoice_counters[clinic_id]

    def put_new_invoice(self, invoice: Invoice) -> None:
        with self._moving_summary(invoice.clinic_id, invoice.patient_id):
            self._put_new_invoice(invoice)

    def _put_new_invoice(self, invoice: Invoice) -> None:
        self._maybe_fail("put_new_invoice")
        bucket = self.invoices.setdefault((invoice.clinic_id, invoice.patient_id), {})
        if invoice.id in bucket:
            # DynamoDB: ConditionalCheckFailed on attribute_not_exists(pk).
            raise ConflictError(f"Invoice {invoice.id} exists already.")
        bucket[invoice.id] = copy.deepcopy(invoice)

    def get_invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice | None:
        self._maybe_fail("get_invoice")
        found = self.invoices.get((clinic_id, patient_id), {}).get(invoice_id)
        return copy.deepcopy(found) if found else None

    def list_invoices(
        self,
        clinic_id: str,
        patient_id: str,
        status: str,
        limit: int,
        cursor: str | None,
    ) -> Page[Invoice]:
        self._maybe_fail("list_invoices")
        newest_first = sorted(
            self.invoices.get((clinic_id, patient_id), {}).values(),
            key=lambda i: i.id,
            reverse=True,
        )
        if cursor:
            after = _decode_cursor(cursor, "INVOICE#").removeprefix("INVOICE#")
            newest_first = [i for i in newest_first if i.id < after]
        if status == "open":
            newest_first = [i for i in newest_first if i.status in _OPEN]
        elif status != "all":
            newest_first = [i for i in newest_first if i.status.value == status]
        items = [copy.deepcopy(i) for i in newest_first[:limit]]
        more = len(newest_first) > limit
        next_cursor = _encode_cursor(f"INVOICE#{items[-1].id}") if more and items else None
        return Page(items, next_cursor)

    def list_invoices_summarized(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> tuple[Page[Invoice], PatientSummary | None]:
        page = self.list_invoices(clinic_id, patient_id, status, limit, cursor)
        return page, self.get_summary(clinic_id, patient_id)

    def establish_summary(
        self, clinic_id: str, patient_id: str, summary: PatientSummary, seen: PatientSummary | None
    ) -> bool:
        # The adapter's condition: absent when read as absent, else still at the version read.
        item = self.summaries.get((clinic_id, patient_id))
        current = item.version if item is not None else None
        if current != (seen.version if seen is not None else None):
            return False  # moved meanwhile: the next reader tries again
        version = (seen.version if seen else 0) + 1
        self.summaries[(clinic_id, patient_id)] = _SummaryItem(version, established=True)
        return True

    def get_summary(self, clinic_id: str, patient_id: str) -> PatientSummary | None:
        """None until a write moved the account or the summary was established, as the
        adapter's item; the figures are the account's (see _SummaryItem)."""
        item = self.summaries.get((clinic_id, patient_id))
        if item is None:
            return None
        count, amount, open_ids, credits = self._glance(clinic_id, patient_id)
        return PatientSummary(
            outstanding_count=count,
            outstanding_amount=amount,
            credits=dict(credits),
            open_invoice_ids=open_ids,
            version=item.version,
            established=item.established,
        )

    def _glance(self, clinic_id: str, patient_id: str) -> _Glance:
        """What the summary counts of the account: payable invoices, their balance due, and
        the credit of each currency that has any."""
        payable = [
            i for i in self.invoices.get((clinic_id, patient_id), {}).values() if i.is_payable
        ]
        credits = sorted(
            (c, v.balance)
            for (cl, p, c), v in self.credits.items()
            if (cl, p) == (clinic_id, patient_id) and v.balance
        )
        return (
            len(payable),
            sum(i.balance_due for i in payable),
            frozenset(i.id for i in payable),
            tuple(credits),
        )

    @contextmanager
    def _moving_summary(self, clinic_id: str, patient_id: str) -> Iterator[None]:
        """One write (one transaction, at the adapter): if it moved what the summary counts,
        the summary item counts a version, and exists from then on."""
        before = self._glance(clinic_id, patient_id)
        yield
        if self._glance(clinic_id, patient_id) != before:
            self.summaries.setdefault((clinic_id, patient_id), _SummaryItem()).version += 1

    def all_invoices(self, clinic_id: str, patient_id: str) -> list[Invoice]:
        self._maybe_fail("all_invoices")
        bucket = self.invoices.get((clinic_id, patient_id), {})
        return [copy.deepcopy(bucket[k]) for k in sorted(bucket)]

    def void_invoice(self, invoice: Invoice, at: str) -> None:
        with self._moving_summary(invoice.clinic_id, invoice.patient_id):
            self._void_invoice(invoice, at)

    def _void_invoice(self, invoice: Invoice, at: str) -> None:
        self._maybe_fail("void_invoice")
        stored = self.invoices.get((invoice.clinic_id, invoice.patient_id), {}).get(invoice.id)
        if stored is None or stored.amount_paid != 0 or stored.status is InvoiceStatus.VOID:
            raise ConflictError("The invoice has payments on it or is already void.")
        stored.status = InvoiceStatus.VOID
        stored.voided_at = at

    # -- payments -------------------------------------------------------------------------

    def _stored_payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment | None:
        return self.payments.get((clinic_id, patient_id), {}).get(payment_id)

    def _track(self, payment: Payment) -> None:
        key = (payment.clinic_id, payment.patient_id, payment.id)
        if not awaits_outcome(payment):
            self.pending.discard(key)
        else:
            self.pending.add(key)

    def _charged_card(self, payment: Payment) -> CardSummary | None:
        """The card as charge.succeeded described it (record_card_details): it wins over any
        card a later write names, as the adapter's card_details does when a payment is read."""
        return self.card_details.get((payment.clinic_id, payment.patient_id, payment.id))

    def put_new_payment(self, payment: Payment) -> bool:
        self._maybe_fail("put_new_payment")
        bucket = self.payments.setdefault((payment.clinic_id, payment.patient_id), {})
        if payment.id in bucket:
            return False
        bucket[payment.id] = copy.deepcopy(payment)
        self._track(payment)
        return True

    def get_payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment | None:
        self._maybe_fail("get_payment")
        found = self._stored_payment(clinic_id, patient_id, payment_id)
        return copy.deepcopy(found) if found else None

    def attach_intent(self, payment: Payment, link: StripeObjectLink) -> None:
        self._maybe_fail("attach_intent")
        stored = self._stored_payment(payment.clinic_id, payment.patient_id, payment.id)
        if stored is None or stored.stripe_payment_intent_id not in (
            None,
            payment.stripe_payment_intent_id,
        ):
            raise ConflictError("The payment is linked to another PaymentIntent.")
        stored.stripe_payment_intent_id = payment.stripe_payment_intent_id
        stored.client_secret = payment.client_secret
        stored.stripe_customer_id = payment.stripe_customer_id
        stored.payment_method = self._charged_card(stored) or payment.payment_method
        self.links[str(payment.stripe_payment_intent_id)] = link

    def update_payment_status(
        self,
        payment: Payment,
        status: PaymentStatus,
        *,
        failure: Failure | None = None,
        payment_method: CardSummary | None = None,
        client_secret: str | None = None,
    ) -> bool:
        self._maybe_fail("update_payment_status")
        allowed = statuses_before(status)
        stored = self._stored_payment(payment.clinic_id, payment.patient_id, payment.id)
        if not allowed or stored is None or stored.status not in allowed:
            return False
        stored.status = status
        stored.failure = failure
        if payment_method is not None:
            stored.payment_method = self._charged_card(stored) or payment_method
        if client_secret is not None:
            stored.client_secret = client_secret
        self._track(stored)
        return True

    def settle(self, write: SettlementWrite) -> SettleResult:
        with self._moving_summary(write.payment.clinic_id, write.payment.patient_id):
            return self._settle(write)

    def _settle(self, write: SettlementWrite) -> SettleResult:
        self._maybe_fail("settle")
        self.settle_calls += 1
        if self.before_settle is not None:
            self.before_settle(write)
        _check_planned(write.credit)
        p = write.payment
        stored = self._stored_payment(p.clinic_id, p.patient_id, p.id)
        # The transaction's conditions, all checked before anything is written.
        if write.new:
            if stored is not None:
                return SettleResult.NOT_SETTLEABLE
        elif stored is None or stored.status not in write.previous_statuses:
            return SettleResult.NOT_SETTLEABLE  # settled already (or no longer settleable)
        elif write.link is not None and stored.stripe_payment_intent_id not in (
            None,
            p.stripe_payment_intent_id,
        ):
            return SettleResult.NOT_SETTLEABLE
        # As the adapter reads a cancelled transaction: the payment's condition first, then
        # the event's (another delivery was processed), and only then a stale read.
        if write.event is not None and (write.event.account_key, write.event.event_id) in (
            self.events
        ):
            return SettleResult.DUPLICATE_EVENT
        bucket = self.invoices.get((p.clinic_id, p.patient_id), {})
        if not _invoices_as_read(bucket, write.invoices):
            self.stale_writes += 1
            raise StaleWriteError("An invoice changed during settlement.")
        if write.credit is not None and not self._credit_as_read(
            p.clinic_id, p.patient_id, write.credit
        ):
            self.stale_writes += 1
            raise StaleWriteError("The credit moved, or the ledger entry exists already.")
        # All conditions hold: apply every item.
        if write.new:
            stored = copy.deepcopy(p)
            self.payments.setdefault((p.clinic_id, p.patient_id), {})[p.id] = stored
        assert stored is not None
        stored.status = p.status
        stored.allocations = list(p.allocations)
        stored.credit_amount = p.credit_amount
        stored.fee_amount = p.fee_amount
        stored.amount_received = p.amount_received
        stored.confirmation_number = p.confirmation_number
        stored.succeeded_at = p.succeeded_at
        stored.payment_method = self._charged_card(stored) or p.payment_method
        stored.credit_balance_after = p.credit_balance_after
        stored.failure = None
        if write.link is not None:
            stored.stripe_payment_intent_id = p.stripe_payment_intent_id
            stored.client_secret = p.client_secret
            stored.stripe_customer_id = p.stripe_customer_id
            self.links[str(p.stripe_payment_intent_id)] = write.link
        self.pending.discard((p.clinic_id, p.patient_id, p.id))
        for credit in write.invoices:
            _pay_onto(bucket[credit.invoice_id], credit.amount, credit.new_status, credit.ref)
        if write.credit is not None:
            self._write_credit(p.clinic_id, p.patient_id, write.credit)
        if write.card_consent is not None:
            consents = self.card_consent_records.setdefault((p.clinic_id, p.patient_id), {})
            consents[write.card_consent.payment_method_id] = write.card_consent
        if write.event is not None:
            self.events[(write.event.account_key, write.event.event_id)] = write.event.event_type
        if write.answer is not None:
            self._answer(write.answer)
        return SettleResult.SETTLED

    def read_patient(
        self,
        clinic_id: str,
        patient_id: str,
        *,
        payment_id: str | None = None,
        invoice_ids: tuple[str, ...] = (),
        currencies: tuple[str, ...] = (),
        customer_account: str | None = None,
        event: tuple[str, str] | None = None,
        summary: bool = False,
    ) -> PatientReads:
        self._maybe_fail("read_patient")
        self.patient_reads += 1
        payment = self._stored_payment(clinic_id, patient_id, payment_id) if payment_id else None
        bucket = self.invoices.get((clinic_id, patient_id), {})
        return PatientReads(
            payment=copy.deepcopy(payment),
            invoices={i: copy.deepcopy(bucket[i]) for i in invoice_ids if i in bucket},
            credits={
                c: self.credits.get(
                    (clinic_id, patient_id, c), Credit(balance=0, currency=c, version=0)
                )
                for c in currencies
            },
            customer_id=(
                self.customers.get((clinic_id, patient_id, customer_account))
                if customer_account
                else None
            ),
            event_seen=event is not None and event in self.events,
            summary=self.get_summary(clinic_id, patient_id) if summary else None,
        )

    def record_card_details(
        self, link: StripeObjectLink, intent_id: str, card: CardSummary
    ) -> bool:
        self._maybe_fail("record_card_details")
        stored = self._stored_payment(link.clinic_id, link.patient_id, link.payment_id)
        if stored is None or stored.stripe_payment_intent_id != intent_id:
            return False
        self.card_details[(link.clinic_id, link.patient_id, link.payment_id)] = card
        stored.payment_method = card
        return True

    def attach_intent_answered(
        self, payment: Payment, link: StripeObjectLink, answer: RequestAnswer | None
    ) -> None:
        self.attach_intent(payment, link)
        if answer is not None:
            self._answer(answer)

    def _answer(self, answer: RequestAnswer) -> None:
        self.complete_request(answer.scope, answer.status_code, answer.body)

    def record_refund(self, write: RefundWrite) -> bool:
        with self._moving_summary(write.payment.clinic_id, write.payment.patient_id):
            return self._record_refund(write)

    def _record_refund(self, write: RefundWrite) -> bool:
        self._maybe_fail("record_refund")
        if self.before_record_refund is not None:
            self.before_record_refund(write)
        _check_planned(write.credit)
        p = write.payment
        stored = self._stored_payment(p.clinic_id, p.patient_id, p.id)
        if stored is None or len(stored.refunds) != len(p.refunds):
            raise StaleWriteError("The payment's refunds moved.")
        bucket = self.invoices.get((p.clinic_id, p.patient_id), {})
        if not _invoices_as_read(bucket, write.invoices):
            raise StaleWriteError("An invoice moved.")
        if write.credit is not None and not self._credit_as_read(
            p.clinic_id, p.patient_id, write.credit
        ):
            raise StaleWriteError("The credit moved.")
        stored.refunds.append(write.record)
        if write.record.is_reserved:
            link = StripeObjectLink(p.clinic_id, p.patient_id, p.id, p.stripe_account_id or "")
            sort_key = f"{write.record.at}#{p.clinic_id}#{p.patient_id}#{write.record.id}"
            self.reserved[sort_key] = ReservedRefundRef(link, write.record.id)
        for debit in write.invoices:
            invoice = bucket[debit.invoice_id]
            invoice.amount_paid -= debit.amount
            invoice.status = debit.new_status
            invoice.paid_at = None
            invoice.payments.append(debit.ref)
        if write.credit is not None:
            self._write_credit(p.clinic_id, p.patient_id, write.credit)
        return True

    def record_refund_outcome(self, write: RefundOutcomeWrite) -> None:
        with self._moving_summary(write.payment.clinic_id, write.payment.patient_id):
            self._record_refund_outcome(write)

    def _record_refund_outcome(self, write: RefundOutcomeWrite) -> None:
        self._maybe_fail("record_refund_outcome")
        self.outcome_writes += 1
        if self.before_refund_outcome is not None:
            self.before_refund_outcome(write)
        _check_planned(write.credit)
        p = write.payment
        stored = self._stored_payment(p.clinic_id, p.patient_id, p.id)
        seen = p.refunds[write.index]
        # The transaction's conditions, all checked before anything is written.
        if (
            stored is None
            or len(stored.refunds) <= write.index
            or stored.refunds[write.index].key != seen.key
            or stored.refunds[write.index].status != seen.status
        ):
            raise StaleWriteError("The refund moved.")
        bucket = self.invoices.get((p.clinic_id, p.patient_id), {})
        if not _invoices_as_read(bucket, write.invoices):
            raise StaleWriteError("An invoice moved.")
        if write.credit is not None and not self._credit_as_read(
            p.clinic_id, p.patient_id, write.credit
        ):
            raise StaleWriteError("The credit moved, or the ledger entry exists already.")
        stored.refunds[write.index] = write.record
        if seen.is_reserved and not write.record.is_reserved:
            self.reserved = {k: r for k, r in self.reserved.items() if r.refund_id != seen.id}
        for credit in write.invoices:
            _pay_onto(bucket[credit.invoice_id], credit.amount, credit.new_status, credit.ref)
        if write.credit is not None:
            self._write_credit(p.clinic_id, p.patient_id, write.credit)

    def set_dispute(self, payment: Payment, dispute: Dispute, at_risk: list[Allocation]) -> None:
        self._maybe_fail("set_dispute")
        stored = self._stored_payment(payment.clinic_id, payment.patient_id, payment.id)
        if stored is None:
            return
        stored.dispute = dispute
        bucket = self.invoices.get((payment.clinic_id, payment.patient_id), {})
        for a in at_risk:
            if a.invoice_id in bucket:
                bucket[a.invoice_id].amount_at_risk += a.amount

    def reserved_refunds(self, older_than: str, limit: int) -> list[ReservedRefundRef]:
        self._maybe_fail("reserved_refunds")
        return [self.reserved[k] for k in sorted(self.reserved) if k < older_than][:limit]

    def get_stripe_link(self, object_id: str) -> StripeObjectLink | None:
        self._maybe_fail("get_stripe_link")
        return self.links.get(object_id)

    def pending_payments(self, older_than: str, limit: int) -> list[StripeObjectLink]:
        self._maybe_fail("pending_payments")
        found: list[tuple[str, StripeObjectLink]] = []
        for clinic_id, patient_id, payment_id in self.pending:
            p = self.payments[(clinic_id, patient_id)][payment_id]
            sort_key = _pending_sort_key(p)
            if sort_key < older_than:
                link = StripeObjectLink(
                    clinic_id, patient_id, payment_id, p.stripe_account_id or ""
                )
                found.append((sort_key, link))
        return [link for _, link in sorted(found, key=lambda pair: pair[0])[:limit]]

    def stop_tracking(self, payment: Payment) -> None:
        self._maybe_fail("stop_tracking")
        self.pending.discard((payment.clinic_id, payment.patient_id, payment.id))

    # -- credit ---------------------------------------------------------------------------

    def get_credit(self, clinic_id: str, patient_id: str, currency: str) -> Credit:
        self._maybe_fail("get_credit")
        return self.credits.get(
            (clinic_id, patient_id, currency), Credit(balance=0, currency=currency, version=0)
        )

    def list_credits(self, clinic_id: str, patient_id: str) -> dict[str, Credit]:
        self._maybe_fail("list_credits")
        return {
            c: v for (k1, k2, c), v in self.credits.items() if (k1, k2) == (clinic_id, patient_id)
        }

    def list_payments(
        self, clinic_id: str, patient_id: str, limit: int, cursor: str | None
    ) -> Page[Payment]:
        self._maybe_fail("list_payments")
        stored = self.payments.get((clinic_id, patient_id), {})
        payments = sorted(stored.values(), key=lambda p: p.id, reverse=True)
        if cursor:
            after = _decode_cursor(cursor, "PAYMENT#")
            payments = [p for p in payments if f"PAYMENT#{p.id}" < after]
        page = [copy.deepcopy(p) for p in payments[:limit]]
        more = len(payments) > limit
        return Page(page, _encode_cursor(f"PAYMENT#{page[-1].id}") if more and page else None)

    def list_ledger(
        self,
        clinic_id: str,
        patient_id: str,
        currency: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[LedgerEntry]:
        self._maybe_fail("list_ledger")
        entries = sorted(
            self.ledger.get((clinic_id, patient_id), []),
            key=lambda e: _ledger_sort_key(e.id),
            reverse=True,
        )
        entries = [e for e in entries if currency is None or e.currency == currency]
        if cursor:
            after = _decode_cursor(cursor, "LEDGER#")
            entries = [e for e in entries if _ledger_sort_key(e.id) < after]
        page = entries[:limit]
        more = len(entries) > limit
        next_cursor = _encode_cursor(_ledger_sort_key(page[-1].id)) if more and page else None
        return Page(list(page), next_cursor)

    def all_ledger(self, clinic_id: str, patient_id: str) -> list[LedgerEntry]:
        return self.ledger_entries(clinic_id, patient_id)

    def ledger_entry_exists(self, clinic_id: str, patient_id: str, entry_id: str) -> bool:
        return any(e.id == entry_id for e in self.ledger.get((clinic_id, patient_id), []))

    def _credit_as_read(self, clinic_id: str, patient_id: str, change: CreditChange) -> bool:
        """The conditions of the credit items of a transaction: the credit item still at the
        version read (absent when read at version 0), and the ledger entry new."""
        stored = self.credits.get((clinic_id, patient_id, change.entry.currency))
        version = stored.version if stored is not None else 0
        return version == change.seen.version and not self.ledger_entry_exists(
            clinic_id, patient_id, change.entry.id
        )

    def _write_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> None:
        new = replace(change.new, version=change.seen.version + 1)
        self.credits[(clinic_id, patient_id, change.entry.currency)] = copy.deepcopy(new)
        self.ledger.setdefault((clinic_id, patient_id), []).append(copy.deepcopy(change.entry))

    def apply_credit(
        self,
        clinic_id: str,
        patient_id: str,
        write: CreditApplication,
        answer: RequestAnswer | None = None,
    ) -> bool:
        with self._moving_summary(clinic_id, patient_id):
            return self._apply_credit(clinic_id, patient_id, write, answer)

    def _apply_credit(
        self,
        clinic_id: str,
        patient_id: str,
        write: CreditApplication,
        answer: RequestAnswer | None,
    ) -> bool:
        self._maybe_fail("apply_credit")
        if self.before_apply_credit is not None:
            self.before_apply_credit(write)
        _check_planned(write.credit)
        if self.ledger_entry_exists(clinic_id, patient_id, write.entry.id):
            return False
        invoice = self.invoices.get((clinic_id, patient_id), {}).get(write.invoice.invoice_id)
        if not self._credit_as_read(clinic_id, patient_id, write.credit) or not _as_read(
            invoice, write.invoice.seen_amount_paid
        ):
            raise StaleWriteError("The credit or the invoice changed.")
        assert invoice is not None
        _pay_onto(invoice, write.invoice.delta, write.invoice.new_status, write.invoice.ref)
        self._write_credit(clinic_id, patient_id, write.credit)
        if answer is not None:
            self._answer(answer)
        return True

    def adjust_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> LedgerEntry:
        with self._moving_summary(clinic_id, patient_id):
            return self._adjust_credit(clinic_id, patient_id, change)

    def _adjust_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> LedgerEntry:
        self._maybe_fail("adjust_credit")
        _check_planned(change)
        for existing in self.ledger.get((clinic_id, patient_id), []):
            if existing.id == change.entry.id:
                return copy.deepcopy(existing)
        if not self._credit_as_read(clinic_id, patient_id, change):
            raise StaleWriteError("The credit moved.")
        self._write_credit(clinic_id, patient_id, change)
        return change.entry

    # -- stripe customers -----------------------------------------------------------------

    def get_customer_id(self, clinic_id: str, patient_id: str, account_id: str) -> str | None:
        self._maybe_fail("get_customer_id")
        return self.customers.get((clinic_id, patient_id, account_id))

    def put_customer_id(
        self, clinic_id: str, patient_id: str, account_id: str, customer_id: str
    ) -> str:
        self._maybe_fail("put_customer_id")
        # Conditional put: the first customer stored wins, and is what every caller gets.
        return self.customers.setdefault((clinic_id, patient_id, account_id), customer_id)

    # -- saved cards ----------------------------------------------------------------------

    def put_card_setup(self, setup: CardSetup) -> bool:
        self._maybe_fail("put_card_setup")
        bucket = self.card_setups.setdefault((setup.clinic_id, setup.patient_id), {})
        if setup.id in bucket:
            return False
        bucket[setup.id] = setup
        return True

    def get_card_setup(self, clinic_id: str, patient_id: str, setup_id: str) -> CardSetup | None:
        self._maybe_fail("get_card_setup")
        return self.card_setups.get((clinic_id, patient_id), {}).get(setup_id)

    def attach_card_consent(self, setup: CardSetup, consent: CardConsent) -> bool:
        self._maybe_fail("attach_card_consent")
        bucket = self.card_setups.get((setup.clinic_id, setup.patient_id), {})
        stored = bucket.get(setup.id)
        if stored is None or stored.payment_method_id not in (None, consent.payment_method_id):
            return False
        bucket[setup.id] = replace(stored, payment_method_id=consent.payment_method_id)
        consents = self.card_consent_records.setdefault((setup.clinic_id, setup.patient_id), {})
        consents[consent.payment_method_id] = consent
        return True

    def card_consents(self, clinic_id: str, patient_id: str) -> list[CardConsent]:
        self._maybe_fail("card_consents")
        consents = self.card_consent_records.get((clinic_id, patient_id), {})
        return [consents[k] for k in sorted(consents)]

    def forget_card_consent(self, clinic_id: str, patient_id: str, payment_method_id: str) -> None:
        self._maybe_fail("forget_card_consent")
        self.card_consent_records.get((clinic_id, patient_id), {}).pop(payment_method_id, None)

    # -- webhook events -------------------------------------------------------------------

    def event_processed(self, account_key: str, event_id: str) -> bool:
        self._maybe_fail("event_processed")
        return (account_key, event_id) in self.events

    def mark_event_processed(self, account_key: str, event_id: str, event_type: str) -> None:
        self._maybe_fail("mark_event_processed")
        self.events[(account_key, event_id)] = event_type

    # -- idempotency ----------------------------------------------------------------------

    def begin_request(
        self, scope: str, request_hash: str, resource_id: str, lock_seconds: int
    ) -> tuple[IdempotencyRecord, bool]:
        self._maybe_fail("begin_request")
        now = int(self._epoch_seconds())
        item = self.idempotency.get(scope)
        if item is not None and item.expires_at <= now:
            del self.idempotency[scope]  # TTL: an expired claim is gone
            item = None
        if item is None:
            self.idempotency[scope] = _IdempotencyItem(
                request_hash=request_hash,
                resource_id=resource_id,
                completed=False,
                lock_until=now + lock_seconds,
                expires_at=now + IDEMPOTENCY_RETENTION_SECONDS,
            )
            record = IdempotencyRecord(request_hash, resource_id, completed=False, fresh=True)
            return record, True
        record = item.record()
        if item.completed or item.request_hash != request_hash or item.lock_until > now:
            return record, False
        # The previous owner died holding the lock: take it over, keeping its resource id.
        item.lock_until = now + lock_seconds
        return record, True

    def complete_request(self, scope: str, status_code: int, body: str) -> None:
        self._maybe_fail("complete_request")
        item = self.idempotency.get(scope)
        if item is None:
            return  # never claimed (or expired): nothing to complete, as in the adapter
        item.completed = True
        item.status_code = status_code
        item.body = body

    def release_request(self, scope: str) -> None:
        self._maybe_fail("release_request")
        item = self.idempotency.get(scope)
        if item is not None and not item.completed:
            item.lock_until = 0


# -- Stripe ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Succeed:
    """The charge goes through (or, without a payment method, the intent awaits one)."""


@dataclass(frozen=True)
class Decline:
    """A card decline. with_intent: Stripe's confirm-time decline, which still created an
    intent (requires_payment_method + last_error), as the adapter returns it; else the adapter's
    CardDeclinedError with Stripe's code and decline code in details."""

    code: str = "card_declined"
    decline_code: str | None = "insufficient_funds"
    message: str = "Your card has insufficient funds."
    with_intent: bool = True


@dataclass(frozen=True)
class RequiresAction:
    """3-D Secure: the cardholder must authenticate."""


@dataclass(frozen=True)
class Unavailable:
    """Stripe timed out or answered 5xx. after_create: Stripe did create the intent (the answer
    was lost), so a retry with the same idempotency key finds it."""

    after_create: bool = False


@dataclass(frozen=True)
class Refused:
    """Stripe refused the request itself (a 400 such as `amount_too_small` in a currency with no
    published minimum): nothing was created and nothing is saved under the idempotency key."""

    error: DomainError


Outcome = Succeed | Decline | RequiresAction | Unavailable | Refused


@dataclass
class FakeIntent:
    id: str
    status: str
    amount: int
    amount_received: int
    currency: str
    client_secret: str
    customer: str
    metadata: dict[str, str]
    payment_method: CardSummary | None
    last_error: Failure | None = None

    def snapshot(self) -> IntentSnapshot:
        return IntentSnapshot(
            id=self.id,
            status=self.status,
            amount=self.amount,
            amount_received=self.amount_received,
            currency=self.currency,
            client_secret=self.client_secret,
            metadata=dict(self.metadata),
            payment_method=self.payment_method,
            last_error=self.last_error,
            customer=self.customer,
        )


@dataclass(frozen=True)
class GatewayCall:
    name: str
    args: dict[str, Any]


_ids = itertools.count(1)


def _next_id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):06d}"


class FakeStripeGateway:
    """One clinic account's Stripe. Scripted: `script(outcome, ...)` queues the outcomes of the
    next create_payment_intent calls (default: Succeed). Idempotency keys replay the first
    answer, as Stripe does; another request under a used key is Stripe's idempotency_error."""

    def __init__(self, clinic_id: str = "", account_id: str = "") -> None:
        self.clinic_id = clinic_id
        self.account_id = account_id
        self.calls: list[GatewayCall] = []
        self.intents: dict[str, FakeIntent] = {}
        self.customers: dict[str, str] = {}  # idempotency key -> customer id
        self.cards: dict[str, tuple[CardSummary, str | None]] = {}
        self.detached: set[str] = set()
        self.setups: dict[str, SetupIntentSnapshot] = {}
        self._setup_replies: dict[str, tuple[dict[str, Any], SetupIntentSnapshot]] = {}
        self.unavailable = False  # every call raises PaymentProviderUnavailableError
        self._outcomes: list[Outcome] = []
        self._replies: dict[str, tuple[dict[str, Any], IntentSnapshot | DomainError]] = {}
        self.refunds: dict[str, list[RefundSnapshot]] = {}
        self.refund_keys: dict[str, RefundSnapshot] = {}
        self.new_refund_status = "succeeded"  # what a new refund's answer says
        # Stripe refuses the next new refunds (a 4xx: nothing is created at Stripe).
        self.refuse_refunds: list[DomainError] = []
        # Called as a refund request reaches Stripe (before Stripe acts), to hold it there.
        self.before_refund: Callable[[], None] | None = None
        self.charges: dict[str, str] = {}  # charge id -> payment intent id

    # -- scripting ------------------------------------------------------------------------

    def script(self, *outcomes: Outcome) -> None:
        self._outcomes.extend(outcomes)

    def forget_script(self) -> None:
        """Drop the outcomes no call used (a request refused before Stripe was asked)."""
        self._outcomes.clear()

    def add_card(
        self, customer: str | None, brand: str = "visa", last4: str = "4242", pm_id: str = ""
    ) -> str:
        pm_id = pm_id or _next_id("pm")
        self.cards[pm_id] = (CardSummary(pm_id, brand, last4, 12, 2030), customer)
        return pm_id

    def set_intent(
        self,
        intent_id: str,
        status: str,
        *,
        amount_received: int | None = None,
        last_error: Failure | None = None,
        payment_method: CardSummary | None = None,
    ) -> IntentSnapshot:
        """Move an intent as Stripe would (the portal confirmed it, 3DS finished...)."""
        intent = self.intents[intent_id]
        intent.status = status
        intent.last_error = last_error
        if payment_method is not None:
            intent.payment_method = payment_method
        if amount_received is not None:
            intent.amount_received = amount_received
        elif status == "succeeded":
            intent.amount_received = intent.amount
        return intent.snapshot()

    def confirm_setup(
        self, setup_intent_id: str, brand: str = "visa", last4: str = "4242"
    ) -> SetupIntentSnapshot:
        """The portal confirms the SetupIntent with a good card: Stripe attaches it to the
        intent's customer and the intent succeeds."""
        setup = self.setups[setup_intent_id]
        pm_id = self.add_card(setup.customer, brand=brand, last4=last4)
        done = replace(setup, status="succeeded", payment_method=pm_id)
        self.setups[setup_intent_id] = done
        return done

    def intent_ids(self) -> list[str]:
        return list(self.intents)

    def calls_named(self, name: str) -> list[GatewayCall]:
        return [c for c in self.calls if c.name == name]

    def _check_up(self) -> None:
        if self.unavailable:
            raise PaymentProviderUnavailableError("Stripe did not answer in time.")

    # -- the port -------------------------------------------------------------------------

    def create_customer(self, clinic_id: str, patient_id: str, idempotency_key: str) -> str:
        self.calls.append(
            GatewayCall(
                "create_customer",
                {
                    "clinic_id": clinic_id,
                    "patient_id": patient_id,
                    "idempotency_key": idempotency_key,
                },
            )
        )
        self._check_up()
        if idempotency_key not in self.customers:
            self.customers[idempotency_key] = _next_id("cus")
        return self.customers[idempotency_key]

    def create_payment_intent(
        self,
        *,
        amount: int,
        currency: str,
        customer: str,
        metadata: dict[str, str],
        idempotency_key: str,
        payment_method: str | None,
        confirm: bool,
        off_session: bool,
        save_card: bool,
        receipt_email: str | None,
    ) -> IntentSnapshot:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "metadata": dict(metadata),
            "idempotency_key": idempotency_key,
            "payment_method": payment_method,
            "confirm": confirm,
            "off_session": off_session,
            "save_card": save_card,
            "receipt_email": receipt_email,
        }
        self.calls.append(GatewayCall("create_payment_intent", params))
        self._check_up()
        replay = self._replies.get(idempotency_key)
        if replay is not None:
            first_params, answer = replay
            if first_params != params:
                raise ConflictError("A retried request differed from the first.")
            if isinstance(answer, DomainError):
                raise copy.copy(answer)
            return answer
        if payment_method is not None:
            # Stripe's rule: an unknown card, one detached, or one of another customer is
            # refused, and nothing is created (the adapter says not found).
            found = self.cards.get(payment_method)
            if found is None or payment_method in self.detached or found[1] not in (None, customer):
                raise NotFoundError("That saved card was not found for this patient.")
        outcome = self._outcomes.pop(0) if self._outcomes else Succeed()
        if isinstance(outcome, Unavailable):
            if outcome.after_create:
                created = self._create(params, Succeed())
                self._replies[idempotency_key] = (params, created)
            raise PaymentProviderUnavailableError("Stripe did not answer in time.")
        if isinstance(outcome, Refused):
            raise copy.copy(outcome.error)
        if isinstance(outcome, Decline) and not outcome.with_intent:
            error = CardDeclinedError(
                outcome.message,
                [
                    {
                        "code": outcome.code,
                        "decline_code": outcome.decline_code,
                        "message": outcome.message,
                    }
                ],
            )
            self._replies[idempotency_key] = (params, error)
            raise copy.copy(error)
        answer = self._create(params, outcome)
        self._replies[idempotency_key] = (params, answer)
        return answer

    def _create(self, params: dict[str, Any], outcome: Outcome) -> IntentSnapshot:
        intent_id = _next_id("pi")
        pm_id = params["payment_method"]
        card = self.cards[pm_id][0] if pm_id in self.cards else None
        if pm_id and card is None:
            card = CardSummary(pm_id, None, None)
        intent = FakeIntent(
            id=intent_id,
            status="requires_payment_method",
            amount=params["amount"],
            amount_received=0,
            currency=params["currency"],
            client_secret=f"{intent_id}_secret_{next(_ids)}",
            customer=params["customer"],
            metadata=params["metadata"],
            payment_method=card,
        )
        if params["confirm"]:
            if isinstance(outcome, Succeed):
                intent.status = "succeeded"
                intent.amount_received = intent.amount
            elif isinstance(outcome, RequiresAction):
                intent.status = "requires_action"
            elif isinstance(outcome, Decline):
                intent.last_error = Failure(outcome.code, outcome.decline_code, outcome.message)
        self.intents[intent_id] = intent
        return intent.snapshot()

    def retrieve_payment_intent(self, intent_id: str) -> IntentSnapshot:
        self.calls.append(GatewayCall("retrieve_payment_intent", {"intent_id": intent_id}))
        self._check_up()
        intent = self.intents.get(intent_id)
        if intent is None:
            raise NotFoundError("Not found at Stripe.")
        return intent.snapshot()

    def retrieve_payment_method(self, payment_method_id: str) -> tuple[CardSummary, str | None]:
        self.calls.append(
            GatewayCall("retrieve_payment_method", {"payment_method_id": payment_method_id})
        )
        self._check_up()
        found = self.cards.get(payment_method_id)
        if found is None:
            raise NotFoundError("That saved card was not found for this patient.")
        return found

    def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundSnapshot:
        self.calls.append(
            GatewayCall("create_refund", {"payment_intent_id": payment_intent_id, "amount": amount})
        )
        if self.before_refund is not None:
            self.before_refund()
        self._check_up()
        replay = self.refund_keys.get(idempotency_key)
        if replay is not None:
            return replay
        if self.refuse_refunds:
            raise self.refuse_refunds.pop(0)
        refund = RefundSnapshot(
            _next_id("re"),
            amount,
            self.new_refund_status,
            payment_intent_id=payment_intent_id,
            metadata=dict(metadata),
        )
        self.refunds.setdefault(payment_intent_id, []).append(refund)
        self.refund_keys[idempotency_key] = refund
        return refund

    def move_refund(
        self, refund_id: str, status: str, failure_reason: str | None = None
    ) -> RefundSnapshot:
        """A refund's state moves at Stripe (e.g. the card's bank refuses it: failed)."""
        for refunds in self.refunds.values():
            for i, refund in enumerate(refunds):
                if refund.id == refund_id:
                    refunds[i] = replace(refund, status=status, failure_reason=failure_reason)
                    return refunds[i]
        raise KeyError(refund_id)

    def list_refunds(self, payment_intent_id: str) -> list[RefundSnapshot]:
        self._check_up()
        return list(self.refunds.get(payment_intent_id, []))

    def payment_intent_of_charge(self, charge_id: str) -> str | None:
        self._check_up()
        return self.charges.get(charge_id)

    def create_setup_intent(
        self, *, customer: str, metadata: dict[str, str], idempotency_key: str
    ) -> SetupIntentSnapshot:
        params: dict[str, Any] = {"customer": customer, "metadata": dict(metadata)}
        self.calls.append(
            GatewayCall("create_setup_intent", {**params, "idempotency_key": idempotency_key})
        )
        self._check_up()
        replay = self._setup_replies.get(idempotency_key)
        if replay is not None:
            if replay[0] != params:
                raise ConflictError("A retried request differed from the first.")
            return replay[1]
        setup_id = _next_id("seti")
        setup = SetupIntentSnapshot(
            id=setup_id,
            status="requires_payment_method",
            client_secret=f"{setup_id}_secret_{next(_ids)}",
            customer=customer,
            payment_method=None,
            metadata=dict(metadata),
        )
        self.setups[setup_id] = setup
        self._setup_replies[idempotency_key] = (params, setup)
        return setup

    def list_cards(self, customer: str) -> list[CardSummary]:
        self.calls.append(GatewayCall("list_cards", {"customer": customer}))
        self._check_up()
        return [card for card, owner in reversed(self.cards.values()) if owner == customer]

    def detach_payment_method(self, payment_method_id: str) -> None:
        self.calls.append(
            GatewayCall("detach_payment_method", {"payment_method_id": payment_method_id})
        )
        self._check_up()
        found = self.cards.get(payment_method_id)
        if found is None or found[1] is None:
            # Stripe: unknown, or not attached to a customer (nothing to detach).
            raise NotFoundError("That saved card was not found for this patient.")
        self.cards[payment_method_id] = (found[0], None)
        self.detached.add(payment_method_id)


class FakeStripeGateways:
    """A FakeStripeGateway per clinic account, made on first use; `missing` accounts have no
    keys (the real one then raises PaymentProviderUnavailableError)."""

    def __init__(self) -> None:
        self.gateways: dict[tuple[str, str], FakeStripeGateway] = {}
        self.missing: set[tuple[str, str]] = set()
        self.requested: list[tuple[str, str]] = []

    def for_account(self, clinic_id: str, account_id: str) -> FakeStripeGateway:
        self.requested.append((clinic_id, account_id))
        if (clinic_id, account_id) in self.missing:
            raise PaymentProviderUnavailableError("The clinic's Stripe account is not configured.")
        key = (clinic_id, account_id)
        if key not in self.gateways:
            self.gateways[key] = FakeStripeGateway(clinic_id, account_id)
        return self.gateways[key]

    def gateway(self, clinic_id: str, account_id: str) -> FakeStripeGateway:
        """The gateway a test scripts (not recorded as a request)."""
        key = (clinic_id, account_id)
        if key not in self.gateways:
            self.gateways[key] = FakeStripeGateway(clinic_id, account_id)
        return self.gateways[key]


# -- secrets, clock, webhooks ---------------------------------------------------------------


class FakeClinicSecrets:
    def __init__(self) -> None:
        self.keys: dict[tuple[str, str], StripeKeys] = {}

    def get_keys(self, clinic_id: str, account_id: str) -> StripeKeys | None:
        return self.keys.get((clinic_id, account_id))

    def put_keys(self, clinic_id: str, account_id: str, keys: StripeKeys) -> None:
        self.keys[(clinic_id, account_id)] = keys


@dataclass
class FakeClock:
    """A settable clock: now() is ISO 8601 UTC as the system clock gives it."""

    moment: datetime = field(default_factory=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC))

    def now(self) -> str:
        return to_iso(self.moment)

    def set(self, moment: datetime) -> None:
        self.moment = moment

    def advance(self, delta: timedelta = timedelta(milliseconds=1)) -> str:
        self.moment += delta
        return self.now()

    def epoch_seconds(self) -> float:
        return self.moment.timestamp()


class FakeWebhookVerifier:
    """Signs events with an HMAC of the secret, like Stripe; verify() checks it and returns the
    event it signed. A payload it did not sign, or a wrong signature, is WebhookSignatureError."""

    def __init__(self) -> None:
        self._events: dict[bytes, WebhookEvent] = {}
        self.verified: list[str] = []

    @staticmethod
    def _signature(payload: bytes, secret: str) -> str:
        return "v1=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()

    def sign(self, event: WebhookEvent, secret: str) -> tuple[bytes, str]:
        payload = f'{{"id": "{event.id}", "n": {len(self._events)}}}'.encode()
        self._events[payload] = event
        return payload, self._signature(payload, secret)

    def verify(self, payload: bytes, signature: str, secret: str) -> WebhookEvent:
        event = self._events.get(payload)
        if event is None or not hmac.compare_digest(signature, self._signature(payload, secret)):
            raise WebhookSignatureError("The webhook signature did not verify.")
        self.verified.append(event.id)
        return event


def intent_event(
    intent: IntentSnapshot, event_type: str = "payment_intent.succeeded", event_id: str = ""
) -> WebhookEvent:
    return WebhookEvent(
        id=event_id or _next_id("evt"),
        type=event_type,
        object_type="payment_intent",
        object_id=intent.id,
        intent=intent,
    )


def refund_event(
    refund: RefundSnapshot, event_type: str = "charge.refund.updated", event_id: str = ""
) -> WebhookEvent:
    return WebhookEvent(
        id=event_id or _next_id("evt"),
        type=event_type,
        object_type="refund",
        object_id=refund.id,
        intent=None,
        refund=refund,
    )


def setup_event(
    setup: SetupIntentSnapshot, event_type: str = "setup_intent.succeeded", event_id: str = ""
) -> WebhookEvent:
    return WebhookEvent(
        id=event_id or _next_id("evt"),
        type=event_type,
        object_type="setup_intent",
        object_id=setup.id,
        intent=None,
        setup_intent=setup,
    )


def with_status(intent: IntentSnapshot, status: str, **changes: Any) -> IntentSnapshot:
    received = changes.pop("amount_received", intent.amount if status == "succeeded" else 0)
    return replace(intent, status=status, amount_received=received, **changes)


# The fakes are the ports: mypy --strict fails here the day one drifts from its Protocol.
_repository: PaymentsRepository = InMemoryPaymentsRepository()
_gateway: StripeGateway = FakeStripeGateway()
_gateways: StripeGateways = FakeStripeGateways()
_secrets: ClinicSecrets = FakeClinicSecrets()
_clock: Clock = FakeClock()
_verifier: WebhookVerifier = FakeWebhookVerifier()


# -- test data --------------------------------------------------------------------------------

CLINIC = "clinic_a"
PATIENT = "pat_1"
T0 = "2026-03-02T09:00:00.000Z"


def make_invoice(
    total: int,
    *,
    amount_paid: int = 0,
    status: InvoiceStatus | None = None,
    currency: str = "usd",
    created_at: str = T0,
    invoice_id: str = "",
    clinic_id: str = CLINIC,
    patient_id: str = PATIENT,
) -> Invoice:
    """An invoice of one untaxed line; its status follows amount_paid unless given."""
    if status is None:
        if amount_paid <= 0:
            status = InvoiceStatus.OPEN
        elif amount_paid >= total:
            status = InvoiceStatus.PAID
        else:
            status = InvoiceStatus.PARTIALLY_PAID
    return Invoice(
        id=invoice_id or _next_id("inv"),
        number="000001",
        clinic_id=clinic_id,
        patient_id=patient_id,
        status=status,
        currency=currency,
        lines=[],
        subtotal=total,
        tax=0,
        total=total,
        amount_paid=amount_paid,
        due_date=None,
        memo=None,
        created_at=created_at,
        created_by=Actor("staff-1", Role.STAFF),
    )


ACCOUNT = "acct_main"
OTHER_PATIENT = "pat_2"
STAFF = Caller(sub="staff-1", role=Role.STAFF, clinic_id=CLINIC)
OTHER_STAFF = Caller(sub="staff-2", role=Role.STAFF, clinic_id=CLINIC)


def patient_caller(*patient_ids: str, sub: str = "patient-1") -> Caller:
    return Caller(
        sub=sub,
        role=Role.PATIENT,
        clinic_id=CLINIC,
        patient_ids=frozenset(patient_ids or [PATIENT]),
    )


def stripe_account(account_id: str = ACCOUNT, clinic_id: str = CLINIC) -> StripeAccount:
    return StripeAccount(
        clinic_id=clinic_id,
        account_id=account_id,
        name="Main",
        status=AccountStatus.ACTIVE,
        admin_default=True,
        portal_default=True,
        primary=True,
        secret_key_last4="1234",
        publishable_key_last4="5678",
        webhook_secret_last4="9abc",
        publishable_key=f"pk_test_{clinic_id}",
        updated_at=T0,
        updated_by=Actor("admin-1", Role.ADMIN),
    )


@dataclass
class World:
    """One clinic (one Stripe account) on the fakes, with the services wired as in production."""

    clock: FakeClock
    repo: InMemoryPaymentsRepository
    stripe: FakeStripeGateways
    secrets: FakeClinicSecrets
    verifier: FakeWebhookVerifier
    payments: PaymentService
    invoices: InvoiceService
    webhooks: WebhookService
    credit: CreditService
    saved_cards: SavedCardService

    @property
    def gateway(self) -> FakeStripeGateway:
        return self.stripe.gateway(CLINIC, ACCOUNT)

    def add_clinic(self, clinic_id: str, **settings: Any) -> None:
        self.repo.put_settings(ClinicSettings(clinic_id=clinic_id, **settings))
        self.repo.put_account(stripe_account(clinic_id=clinic_id))
        self.secrets.put_keys(
            clinic_id,
            ACCOUNT,
            StripeKeys(f"sk_test_{clinic_id}", f"pk_test_{clinic_id}", f"whsec_{clinic_id}"),
        )

    def invoice(
        self, *amounts: int, patient_id: str = PATIENT, currency: str | None = None
    ) -> Invoice:
        """A new invoice of one line per amount, created by staff (the clock moves on after)."""
        created = self.invoices.create(
            STAFF,
            CLINIC,
            patient_id,
            NewInvoice([NewLine(f"Session {i}", 1, a) for i, a in enumerate(amounts)], currency),
        )
        self.clock.advance(timedelta(seconds=1))
        return created

    def stored_invoice(self, invoice_id: str, patient_id: str = PATIENT) -> Invoice:
        found = self.repo.get_invoice(CLINIC, patient_id, invoice_id)
        assert found is not None
        return found

    def stored_payment(self, payment_id: str, patient_id: str = PATIENT) -> Payment:
        found = self.repo.get_payment(CLINIC, patient_id, payment_id)
        assert found is not None
        return found

    def customer_for(self, patient_id: str = PATIENT) -> str:
        """The patient's Stripe customer, created as the service would create it."""
        key = f"customer:{CLINIC}:{patient_id}:{ACCOUNT}"
        created = self.gateway.create_customer(CLINIC, patient_id, idempotency_key=key)
        return self.repo.put_customer_id(CLINIC, patient_id, ACCOUNT, created)

    def saved_card(self, patient_id: str = PATIENT) -> str:
        return self.gateway.add_card(self.customer_for(patient_id))

    def deliver(
        self, event: WebhookEvent, clinic_id: str = CLINIC, account_id: str = ACCOUNT
    ) -> WebhookOutcome:
        """Stripe posts a signed event to /v1/webhooks/stripe/{clinic_id}/{account_id}."""
        keys = self.secrets.get_keys(clinic_id, account_id)
        payload, signature = self.verifier.sign(event, keys.webhook_secret if keys else "whsec_x")
        return self.webhooks.handle(clinic_id, account_id, payload, signature)


def make_world(**settings: Any) -> World:
    clock = FakeClock()
    repo = InMemoryPaymentsRepository(clock.epoch_seconds)
    gateways = FakeStripeGateways()
    secrets = FakeClinicSecrets()
    verifier = FakeWebhookVerifier()
    payments = PaymentService(repo, gateways, clock)
    saved_cards = SavedCardService(repo, gateways, payments, clock)
    world = World(
        clock=clock,
        repo=repo,
        stripe=gateways,
        secrets=secrets,
        verifier=verifier,
        payments=payments,
        invoices=InvoiceService(repo, clock),
        webhooks=WebhookService(
            repo,
            payments,
            secrets,
            verifier,
            RefundService(repo, gateways, clock),
            gateways,
            saved_cards,
        ),
        credit=CreditService(repo, clock),
        saved_cards=saved_cards,
    )
    defaults: dict[str, Any] = {
        "clinic_name": "Test Clinic",
        "currency": "usd",
        "tax_rates": [TaxRate("tax_hst", "HST", Decimal(13))],
        "locations": [Location("loc_main", "Main Street")],
    }
    world.add_clinic(CLINIC, **(defaults | settings))
    return world
