"""The ports the services need. Adapters implement them; test fakes are typed against them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol, TypeVar

from clinic_payments.domain.invoices.rules import status_after
from clinic_payments.domain.model import (
    Actor,
    Allocation,
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
    Page,
    Payment,
    PaymentStatus,
    RefundRecord,
    RefundSnapshot,
    SetupIntentSnapshot,
    StripeAccount,
    StripeKeys,
    WebhookEvent,
)
from clinic_payments.domain.printable import PrintableDocument

_V_contra = TypeVar("_V_contra", contravariant=True)

# How old a clinic's settings and Stripe accounts may be when a money path reads them: a
# change made in another function's container is seen within this time.
CONFIG_CACHE_SECONDS: Final = 60


@dataclass(frozen=True)
class StripeObjectLink:
    """Where a Stripe object (PaymentIntent) belongs in our data."""

    clinic_id: str
    patient_id: str
    payment_id: str
    account_id: str


@dataclass(frozen=True)
class ReservedRefundRef:
    """A card refund reserved here whose Stripe answer is not known (left for the reconciler)."""

    link: StripeObjectLink
    refund_id: str


@dataclass(frozen=True)
class InvoiceAmountChange:
    """Money onto one invoice (`delta` > 0: a payment, credit applied, a failed refund given
    back) or back off it (`delta` < 0: a refund), written only on the amount_paid it was read
    at: never past its total, never on a void invoice."""

    invoice_id: str
    delta: int
    seen_amount_paid: int
    total: int  # the invoice's total: whether it is payable before and after the write
    new_status: InvoiceStatus
    ref: InvoicePaymentRef  # the line in the invoice's payments (negative for a refund)
    due_date: str | None = None  # for the open-invoices index, when it is payable again

    @property
    def amount(self) -> int:
        """How much moves, either way."""
        return abs(self.delta)

    @classmethod
    def of(cls, invoice: Invoice, delta: int, ref: InvoicePaymentRef) -> InvoiceAmountChange:
        """`delta` onto (or off) the invoice as read."""
        return cls(
            invoice_id=invoice.id,
            delta=delta,
            seen_amount_paid=invoice.amount_paid,
            total=invoice.total,
            new_status=status_after(invoice.total, invoice.amount_paid + delta),
            ref=ref,
            due_date=invoice.due_date,
        )


@dataclass(frozen=True)
class CreditChange:
    """One movement of a currency's credit: its ledger entry, and the credit (balance and lots)
    as read and as it is after the movement. Written only if the credit is still at the version
    read, in the movement's own transaction: the balance and every lot are a condition of it."""

    entry: LedgerEntry
    seen: Credit  # version 0: no credit item yet
    new: Credit


@dataclass(frozen=True)
class RequestAnswer:
    """The answer an idempotent request ends with (API.md, Idempotency-Key), recorded by the
    write that ends the request, in its own transaction: no separate write to complete it."""

    scope: str
    status_code: int
    body: str


class Answering(Protocol[_V_contra]):
    """Renders an idempotent request's answer from what it ends with (a payment, an invoice);
    told which answer was committed (so the request is not completed a second time)."""

    def __call__(self, value: _V_contra, /) -> RequestAnswer: ...
    def committed(self, answer: RequestAnswer) -> None: ...


@dataclass(frozen=True)
class EventMark:
    """A Stripe event marked processed by the write that carries out its effects: a second
    delivery racing the first fails that write's condition instead of applying them again."""

    account_key: str
    event_id: str
    event_type: str


@dataclass(frozen=True)
class SettlementWrite:
    payment: Payment  # with its final fields set (status succeeded, applied allocations...)
    previous_statuses: list[PaymentStatus]
    invoices: list[InvoiceAmountChange]
    credit: CreditChange | None
    # A card saved while paying: its consent record, written with the settlement.
    card_consent: CardConsent | None = None
    # The payment is not in the table yet (cash, check): written whole, if absent.
    new: bool = False
    # The PaymentIntent recorded with the settlement (its id, client secret, customer and
    # link are on `payment`): a card charged and settled in one request.
    link: StripeObjectLink | None = None
    answer: RequestAnswer | None = None
    event: EventMark | None = None


class SettleResult(StrEnum):
    SETTLED = "settled"
    NOT_SETTLEABLE = "not_settleable"  # the payment moved on (settled already, or failed)
    DUPLICATE_EVENT = "duplicate_event"  # another delivery of the event was processed


@dataclass(frozen=True)
class PatientSummary:
    """A patient's account at a glance, kept by the writes that move it: payable invoices
    (count and balance due, all currencies) and the credit balance of each currency."""

    outstanding_count: int
    outstanding_amount: int
    credits: dict[str, int]
    open_invoice_ids: frozenset[str] = frozenset()  # the payable invoices (for a payment
    # without allocations: it reads those, never the paid ones)
    # Every write that moves it counts a version. Kept from the start only once established
    # (`establish_summary`): until then it holds what moved since it was first written, and
    # nothing reads it as the account's.
    version: int = 0
    established: bool = True


@dataclass(frozen=True)
class PatientReads:
    """What one request needs of a patient's account, read together in one round trip."""

    payment: Payment | None
    invoices: dict[str, Invoice]  # those asked for that exist
    credits: dict[str, Credit]  # by currency; version 0 (empty) when the patient has none
    customer_id: str | None
    event_seen: bool
    summary: PatientSummary | None = None  # when asked for


@dataclass(frozen=True)
class RefundWrite:
    payment: Payment  # as read (refunds so far)
    record: RefundRecord
    invoices: list[InvoiceAmountChange]
    credit: CreditChange | None  # entry of type refund, amount negative


@dataclass(frozen=True)
class RefundOutcomeWrite:
    """A recorded refund's new state at Stripe. When it failed, what it took back is given back
    (onto invoices, the rest to credit) in the same transaction, once."""

    payment: Payment  # as read
    index: int  # the refund's position in payment.refunds
    record: RefundRecord  # the refund as it is now (status, and what was given back)
    invoices: list[InvoiceAmountChange]
    credit: CreditChange | None  # entry of type refund_failed, amount positive


@dataclass(frozen=True)
class CreditApplication:
    """Credit moved to one invoice: the invoice's change and the credit's, together."""

    invoice: InvoiceAmountChange
    credit: CreditChange  # entry of type applied, amount negative

    @property
    def entry(self) -> LedgerEntry:
        return self.credit.entry


@dataclass(frozen=True)
class IdempotencyRecord:
    request_hash: str
    resource_id: str
    completed: bool
    status_code: int | None = None
    body: str | None = None
    # Claimed just now for the first time: nothing was written under its resource id yet.
    fresh: bool = False


class ClinicConfigStore(Protocol):
    """A clinic's settings and its Stripe accounts. `cached`: a copy up to
    CONFIG_CACHE_SECONDS old will do (the money paths); without it, what the table holds now
    (administration)."""

    def get_settings(self, clinic_id: str, *, cached: bool = False) -> ClinicSettings | None: ...
    def put_settings(self, settings: ClinicSettings) -> None: ...
    def get_account(
        self, clinic_id: str, account_id: str, *, cached: bool = False
    ) -> StripeAccount | None: ...
    def list_accounts(self, clinic_id: str, *, cached: bool = False) -> list[StripeAccount]: ...
    def put_account(self, account: StripeAccount) -> None: ...


class InvoiceStore(Protocol):
    """A patient's invoices, numbered per clinic, and the summary kept beside them (what is
    outstanding, which invoices are open, the credit per currency)."""

    def next_invoice_number(self, clinic_id: str) -> int: ...
    def put_new_invoice(self, invoice: Invoice) -> None: ...
    def get_invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice | None: ...
    def list_invoices(
        self,
        clinic_id: str,
        patient_id: str,
        status: str,
        limit: int,
        cursor: str | None,
    ) -> Page[Invoice]: ...
    def list_invoices_summarized(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> tuple[Page[Invoice], PatientSummary | None]:
        """list_invoices and the patient's summary, in one round trip for a first page."""
        ...

    def all_invoices(self, clinic_id: str, patient_id: str) -> list[Invoice]: ...
    def get_summary(self, clinic_id: str, patient_id: str) -> PatientSummary | None: ...
    def establish_summary(
        self, clinic_id: str, patient_id: str, summary: PatientSummary, seen: PatientSummary | None
    ) -> bool:
        """Write the summary recomputed from the account, if no write moved it since `seen`
        was read (before the account was): from then on the writes keep it."""
        ...

    def void_invoice(self, invoice: Invoice, at: str) -> None: ...


class PaymentStore(Protocol):
    """Payments and what moves with them: their Stripe links, settlement (invoices, credit
    and the marks of the request or event that settled them, in one transaction), refunds,
    disputes, and the reconciler's index of payments still waiting for Stripe."""

    def put_new_payment(self, payment: Payment) -> bool: ...
    def get_payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment | None: ...
    def attach_intent(self, payment: Payment, link: StripeObjectLink) -> None: ...
    def update_payment_status(
        self,
        payment: Payment,
        status: PaymentStatus,
        *,
        failure: Failure | None = None,
        payment_method: CardSummary | None = None,
        client_secret: str | None = None,
    ) -> bool: ...
    def settle(self, write: SettlementWrite) -> SettleResult:
        """One transaction: the payment settled (only from the statuses given), its invoices
        and credit, and what the write carries (intent link, request answer, event mark).
        StaleWriteError if an invoice or the credit moved since they were read."""
        ...

    def read_patient(
        self,
        clinic_id: str,
        patient_id: str,
        *,
        payment_id: str | None = None,
        invoice_ids: tuple[str, ...] = (),
        currencies: tuple[str, ...] = (),
        customer_account: str | None = None,
        event: tuple[str, str] | None = None,  # (account_key, event_id)
        summary: bool = False,
    ) -> PatientReads:
        """Consistent reads of the items named, in one round trip."""
        ...

    def attach_intent_answered(
        self, payment: Payment, link: StripeObjectLink, answer: RequestAnswer | None
    ) -> None:
        """attach_intent, and the request's answer in the same transaction."""
        ...

    def record_refund(self, write: RefundWrite) -> bool:
        """One transaction: the refund on the payment (a card refund's reservation, or a
        recorded one), invoices down, credit down, ledger; a reservation also enters the
        reserved-refunds index. StaleWriteError if the payment's refunds, an invoice or the
        credit moved since they were read."""
        ...

    def record_refund_outcome(self, write: RefundOutcomeWrite) -> None:
        """One transaction: the refund's new status on the payment (only from the status it was
        read with), and what a failed refund gives back; a reservation leaves the
        reserved-refunds index. StaleWriteError if the refund, an invoice or the credit moved
        since it was read."""
        ...

    def reserved_refunds(self, older_than: str, limit: int) -> list[ReservedRefundRef]:
        """Card refunds reserved before `older_than` and still waiting for Stripe's answer
        (an index: eventually consistent, it says where to look; the refund decides)."""
        ...

    def set_dispute(self, payment: Payment, dispute: Dispute, at_risk: list[Allocation]) -> None:
        """Record the dispute's state on the payment and the amount at risk on invoices
        (at_risk amounts are added; negative amounts release)."""
        ...

    def record_card_details(
        self, link: StripeObjectLink, intent_id: str, card: CardSummary
    ) -> bool:
        """The charged card's brand and last four (charge.succeeded) on the payment of that
        intent, whatever its status; never overwritten by a settlement. False: no such
        payment of that intent."""
        ...

    def get_stripe_link(self, object_id: str) -> StripeObjectLink | None: ...
    def pending_payments(self, older_than: str, limit: int) -> list[StripeObjectLink]: ...
    def stop_tracking(self, payment: Payment) -> None:
        """Drop a payment from the reconciler's pending index (abandoned by the payer)."""
        ...

    def list_payments(
        self, clinic_id: str, patient_id: str, limit: int, cursor: str | None
    ) -> Page[Payment]:
        """A patient's payments, newest first, a page at a time (ValidationError: a cursor
        this listing did not make)."""
        ...

    def all_payments(self, clinic_id: str, patient_id: str) -> list[Payment]: ...


class CreditLedger(Protocol):
    """A patient's account credit per currency (balance and lots) and its append-only
    ledger; every movement is one conditional transaction with its entry."""

    def get_credit(self, clinic_id: str, patient_id: str, currency: str) -> Credit:
        """The patient's credit in one currency (credit is never a sum of two currencies)."""
        ...

    def list_credits(self, clinic_id: str, patient_id: str) -> dict[str, Credit]: ...
    def list_ledger(
        self,
        clinic_id: str,
        patient_id: str,
        currency: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[LedgerEntry]:
        """Newest first."""
        ...

    def all_ledger(self, clinic_id: str, patient_id: str) -> list[LedgerEntry]: ...
    def ledger_entry_exists(self, clinic_id: str, patient_id: str, entry_id: str) -> bool: ...
    def apply_credit(
        self,
        clinic_id: str,
        patient_id: str,
        write: CreditApplication,
        answer: RequestAnswer | None = None,
    ) -> bool:
        """One transaction: credit down, invoice up, ledger entry (and the request's answer).
        StaleWriteError if the credit or the invoice moved since they were read; a repeat is a
        no-op (False)."""
        ...

    def adjust_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> LedgerEntry:
        """Credit and ledger entry together; StaleWriteError if the credit moved since it was
        read; idempotent by entry id (a repeat returns the entry first recorded)."""
        ...


class CustomerStore(Protocol):
    """A patient's Stripe customer per account, and the consent records of saved cards
    (which cards exist is Stripe's to say)."""

    def get_customer_id(self, clinic_id: str, patient_id: str, account_id: str) -> str | None: ...
    def put_customer_id(
        self, clinic_id: str, patient_id: str, account_id: str, customer_id: str
    ) -> str: ...

    def put_card_setup(self, setup: CardSetup) -> bool:
        """Record a card setup unless one with its id exists: True when this call wrote it."""
        ...

    def get_card_setup(
        self, clinic_id: str, patient_id: str, setup_id: str
    ) -> CardSetup | None: ...
    def attach_card_consent(self, setup: CardSetup, consent: CardConsent) -> bool:
        """Mark the setup reconciled with its card and record the card's consent, together.
        False when the setup was reconciled with another card already."""
        ...

    def card_consents(self, clinic_id: str, patient_id: str) -> list[CardConsent]: ...
    def forget_card_consent(
        self, clinic_id: str, patient_id: str, payment_method_id: str
    ) -> None: ...


class WebhookEventLog(Protocol):
    """Which Stripe events were processed, per account (a settlement marks its event in its
    own transaction; this is for events that move no money)."""

    def event_processed(self, account_key: str, event_id: str) -> bool: ...
    def mark_event_processed(self, account_key: str, event_id: str, event_type: str) -> None: ...


class IdempotencyStore(Protocol):
    """The Idempotency-Key records of money requests: a claim with a lock, and the answer."""

    def begin_request(
        self, scope: str, request_hash: str, resource_id: str, lock_seconds: int
    ) -> tuple[IdempotencyRecord, bool]:
        """Claim a request: (the record, True) when this call now owns it (new, or taken over
        after the previous owner's lock expired), else (the existing record, False)."""
        ...

    def complete_request(self, scope: str, status_code: int, body: str) -> None: ...
    def release_request(self, scope: str) -> None: ...


class PaymentsRepository(
    ClinicConfigStore,
    InvoiceStore,
    PaymentStore,
    CreditLedger,
    CustomerStore,
    WebhookEventLog,
    IdempotencyStore,
    Protocol,
):
    """Every aggregate's store over the one table: for the services whose work spans them
    (a payment reads the invoices and credit it settles). A service that needs one aggregate
    takes that aggregate's port."""


class StripeGateway(Protocol):
    """One clinic account's Stripe, through its own key."""

    def create_customer(self, clinic_id: str, patient_id: str, idempotency_key: str) -> str: ...
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
    ) -> IntentSnapshot: ...
    def retrieve_payment_intent(self, intent_id: str) -> IntentSnapshot: ...
    def retrieve_payment_method(self, payment_method_id: str) -> tuple[CardSummary, str | None]: ...
    def create_refund(
        self,
        *,
        payment_intent_id: str,
        amount: int,
        reason: str | None,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> RefundSnapshot: ...
    def list_refunds(self, payment_intent_id: str) -> list[RefundSnapshot]: ...
    def payment_intent_of_charge(self, charge_id: str) -> str | None: ...
    def create_setup_intent(
        self, *, customer: str, metadata: dict[str, str], idempotency_key: str
    ) -> SetupIntentSnapshot:
        """A SetupIntent for saving a card for off-session use, to confirm with Stripe.js."""
        ...

    def list_cards(self, customer: str) -> list[CardSummary]:
        """The cards attached to the customer, newest first."""
        ...

    def detach_payment_method(self, payment_method_id: str) -> None: ...


class StripeGateways(Protocol):
    def for_account(self, clinic_id: str, account_id: str) -> StripeGateway: ...


class WebhookVerifier(Protocol):
    def verify(self, payload: bytes, signature: str, secret: str) -> WebhookEvent:
        """Check the signature on the raw body (300 s tolerance) and parse the event."""
        ...


class ClinicSecrets(Protocol):
    def get_keys(self, clinic_id: str, account_id: str) -> StripeKeys | None: ...
    def put_keys(self, clinic_id: str, account_id: str, keys: StripeKeys) -> None: ...


class Clock(Protocol):
    def now(self) -> str: ...


# -- documents and email ------------------------------------------------------------------


class DocumentRenderer(Protocol):
    def render(self, document: PrintableDocument) -> bytes:
        """The document as a PDF."""
        ...


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class OutgoingEmail:
    to: str
    subject: str
    text: str
    sender_name: str = ""  # shown beside the sending address, e.g. the clinic's name
    attachments: tuple[Attachment, ...] = ()


class EmailSender(Protocol):
    def send(self, email: OutgoingEmail) -> None:
        """Hand the email to the mail service; EmailNotSentError when it was not accepted."""
        ...


@dataclass(frozen=True)
class ReceiptRef:
    clinic_id: str
    patient_id: str
    payment_id: str


class ReceiptOutbox(Protocol):
    """The receipt owed for a settled payment with a receipt_email: claimed, then marked sent.

    Settlement itself records that a receipt is owed (in the same transaction), so a receipt is
    never forgotten whichever path settled the payment or whatever died afterwards.
    """

    def claim_receipt(self, ref: ReceiptRef, now: str, until: str) -> bool:
        """Take the right to send until `until`: False when sent already or claimed by another
        sender whose claim has not expired (or the payment has not succeeded)."""
        ...

    def mark_receipt_sent(self, ref: ReceiptRef, at: str) -> None: ...
    def release_receipt(self, ref: ReceiptRef, *, give_up_after: int) -> bool:
        """A send failed: count the attempt and let a retry claim it again. True when that was
        attempt `give_up_after`, and the receipt is no longer retried."""
        ...

    def unsent_receipts(self, older_than: str, limit: int) -> list[ReceiptRef]:
        """Receipts still owed, for payments that succeeded before `older_than`."""
        ...


class ReceiptNotifier(Protocol):
    def payment_settled(self, payment: Payment) -> None:
        """A payment with a receipt_email has succeeded (maybe again: this path may be reached
        by the synchronous response, the webhook and the reconciler alike)."""
        ...


# -- pay links ----------------------------------------------------------------------------


class SigningKey(Protocol):
    def get(self) -> bytes:
        """The secret key that signs pay links (cached; read from Secrets Manager)."""
        ...


@dataclass(frozen=True)
class PaymentRequestRecord:
    """A pay-online request sent to a patient: who sent it, where, and until when it is valid."""

    id: str
    clinic_id: str
    patient_id: str
    invoice_id: str
    email: str
    expires_at: str
    created_by: Actor
    created_at: str


class PaymentRequestLog(Protocol):
    def put_payment_request(self, record: PaymentRequestRecord) -> None: ...


__all__ = [
    "Allocation",
    "Attachment",
    "ClinicSecrets",
    "Clock",
    "CreditApplication",
    "CreditChange",
    "DocumentRenderer",
    "EmailSender",
    "IdempotencyRecord",
    "InvoiceAmountChange",
    "OutgoingEmail",
    "PaymentRequestLog",
    "PaymentRequestRecord",
    "PaymentsRepository",
    "ReceiptNotifier",
    "ReceiptOutbox",
    "ReceiptRef",
    "RefundOutcomeWrite",
    "RefundWrite",
    "ReservedRefundRef",
    "SettlementWrite",
    "SigningKey",
    "StripeGateway",
    "StripeGateways",
    "StripeObjectLink",
    "WebhookVerifier",
]
