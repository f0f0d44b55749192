"""The domain's data: plain dataclasses, no I/O. Amounts are int minor units."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class Role(StrEnum):
    PATIENT = "patient"
    STAFF = "staff"
    ADMIN = "admin"


@dataclass(frozen=True)
class Actor:
    """Who did something: recorded on every action (the activity shows who collected)."""

    sub: str
    role: Role


@dataclass(frozen=True)
class Caller(Actor):
    clinic_id: str
    patient_ids: frozenset[str] = frozenset()

    @property
    def is_staff(self) -> bool:
        return self.role in (Role.STAFF, Role.ADMIN)

    def may_act_for(self, patient_id: str) -> bool:
        return self.is_staff or patient_id in self.patient_ids

    def actor(self) -> Actor:
        return Actor(sub=self.sub, role=self.role)


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"


@dataclass(frozen=True)
class TaxRate:
    id: str
    name: str
    percent: Decimal


@dataclass(frozen=True)
class Location:
    id: str
    name: str


@dataclass(frozen=True)
class FeeRate:
    percent: Decimal
    fixed: int


def default_fee_schedule() -> dict[str, FeeRate]:
    # DESIGN.md: all regions, card 2.9% + 30; bank debits 1.9% + 50 (minor units).
    bank = FeeRate(Decimal("1.9"), 50)
    return {
        "card": FeeRate(Decimal("2.9"), 30),
        "ach_debit": bank,
        "bacs_debit": bank,
        "sepa_debit": bank,
        "au_becs_debit": bank,
    }


@dataclass(frozen=True)
class ClinicProfile:
    """Who issues a clinic's paperwork: printed on its invoices and receipts (a Canadian
    invoice must show the HST registration number)."""

    legal_name: str = ""
    address: str = ""  # lines separated by newlines
    phone: str = ""
    email: str = ""
    tax_registration_number: str = ""


@dataclass
class ClinicSettings:
    clinic_id: str
    clinic_name: str = ""
    currency: str = "usd"
    accept_portal_payments: bool = True
    allow_credit_topups: bool = False
    email_pay_online_requests: bool = False
    pass_processing_fees: bool = False
    fee_schedule: dict[str, FeeRate] = field(default_factory=default_fee_schedule)
    tax_rates: list[TaxRate] = field(default_factory=list)
    locations: list[Location] = field(default_factory=list)
    card_on_file_wording_version: str = "2026-11-01"
    # IANA name: the dates printed on receipts and invoices are the clinic's local dates.
    timezone: str = "UTC"
    profile: ClinicProfile = field(default_factory=ClinicProfile)

    def tax_rate(self, tax_rate_id: str) -> TaxRate | None:
        return next((t for t in self.tax_rates if t.id == tax_rate_id), None)


class AccountStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass
class StripeAccount:
    """A clinic's Stripe account. The keys live in Secrets Manager; only their last four here."""

    clinic_id: str
    account_id: str
    name: str
    status: AccountStatus
    admin_default: bool
    portal_default: bool
    primary: bool
    secret_key_last4: str
    publishable_key_last4: str
    webhook_secret_last4: str
    publishable_key: str
    updated_at: str
    updated_by: Actor


@dataclass(frozen=True)
class StripeKeys:
    secret_key: str
    publishable_key: str
    webhook_secret: str

    def __repr__(self) -> str:  # keys never reach a log line
        return "StripeKeys(<redacted>)"


@dataclass(frozen=True)
class InvoiceLine:
    id: str
    description: str
    service_date: str | None
    quantity: int
    unit_amount: int
    amount: int
    tax_rate_id: str | None
    tax_amount: int


@dataclass(frozen=True)
class BillTo:
    """Who an invoice is addressed to (a patient, a parent, an employer), as staff gave it."""

    name: str
    address: str = ""


@dataclass(frozen=True)
class InvoicePaymentRef:
    payment_id: str
    amount: int
    method: str
    at: str


@dataclass
class Invoice:
    id: str
    number: str
    clinic_id: str
    patient_id: str
    status: InvoiceStatus
    currency: str
    lines: list[InvoiceLine]
    subtotal: int
    tax: int
    total: int
    amount_paid: int
    due_date: str | None
    memo: str | None
    created_at: str
    created_by: Actor
    paid_at: str | None = None
    voided_at: str | None = None
    payments: list[InvoicePaymentRef] = field(default_factory=list)
    amount_at_risk: int = 0  # disputed by the cardholder, not yet decided
    bill_to: BillTo | None = None  # given by staff; ours only, never sent to Stripe

    @property
    def balance_due(self) -> int:
        if self.status is InvoiceStatus.VOID:
            return 0
        return self.total - self.amount_paid

    @property
    def is_payable(self) -> bool:
        return self.status is not InvoiceStatus.VOID and self.balance_due > 0


class PaymentMethodType(StrEnum):
    CARD = "card"
    CASH = "cash"
    CHECK = "check"


class PaymentPurpose(StrEnum):
    INVOICE = "invoice"
    CREDIT_TOPUP = "credit_topup"


class PaymentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Payer(StrEnum):
    SELF = "self"
    COPAY = "copay"
    COINSURANCE = "coinsurance"
    DEDUCTIBLE = "deductible"


@dataclass(frozen=True)
class Allocation:
    invoice_id: str
    amount: int
    # The invoice's number, kept with a settled payment's allocations so its receipt names the
    # invoices without reading them (not part of what an allocation is: never compared).
    invoice_number: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CardSummary:
    id: str
    brand: str | None
    last4: str | None
    exp_month: int | None = None
    exp_year: int | None = None
    # Stripe's card.wallet.type when the card was presented through a wallet (apple_pay,
    # google_pay, or any other type Stripe reports, kept as it is); None for a plain card.
    wallet: str | None = None


@dataclass(frozen=True)
class Failure:
    code: str | None
    decline_code: str | None
    message: str


@dataclass(frozen=True)
class Consent:
    agreed: bool
    wording_version: str
    by: Actor
    at: str


@dataclass(frozen=True)
class LotTake:
    """What a movement took from one credit lot, with the lot's date, so a refund that fails
    can put it back into the same lot, in the same place in the oldest-first order."""

    lot_id: str
    amount: int
    at: str


@dataclass(frozen=True)
class RefundRecord:
    """Money given back, and where it was taken back from (credit, invoices, fee)."""

    id: str  # ours (ref_...), or the dispute's id for a lost dispute
    key: str  # what makes it once: Stripe's refund id, the dispute id, or ours (cash)
    amount: int
    from_credit: int
    from_invoices: list[Allocation]
    from_fee: int
    reason: str
    at: str
    actor: Actor
    stripe_refund_id: str | None = None
    # Stripe's: pending, requires_action, succeeded, failed, canceled; or ours, "reserved": a
    # card refund whose take-back is written but whose Stripe answer is not known yet.
    status: str = "succeeded"
    failure_reason: str | None = None
    failed_at: str | None = None
    # A refund that failed gave back what it took: onto these invoices, the rest to credit.
    returned_to_invoices: list[Allocation] = field(default_factory=list)
    returned_to_credit: int = 0
    # The credit lots from_credit came from (sums to from_credit).
    from_lots: list[LotTake] = field(default_factory=list)

    @property
    def is_reserved(self) -> bool:
        """Taken back here, not (yet) known to Stripe: resumed by the request's retry."""
        return self.status == REFUND_RESERVED

    @property
    def has_failed(self) -> bool:
        """Failed or canceled at Stripe: no money went back to the cardholder."""
        return self.status in REFUND_FAILED_STATUSES

    @property
    def taken_back(self) -> int:
        return self.from_credit + sum(a.amount for a in self.from_invoices)

    @property
    def returned(self) -> int:
        return self.returned_to_credit + sum(a.amount for a in self.returned_to_invoices)

    @property
    def uncovered(self) -> int:
        """What could not be taken back from anything (reported by the audit)."""
        return (
            self.amount
            - self.from_credit
            - sum(a.amount for a in self.from_invoices)
            - (self.from_fee)
        )


REFUND_FAILED_STATUSES = frozenset({"failed", "canceled"})
REFUND_RESERVED = "reserved"


@dataclass(frozen=True)
class Dispute:
    id: str
    amount: int
    status: str  # Stripe's: warning_needs_response, needs_response, under_review, won, lost...
    reason: str | None
    opened_at: str

    @property
    def is_open(self) -> bool:
        return self.status not in ("won", "lost", "warning_closed", "charge_refunded")


@dataclass
class Payment:
    id: str
    clinic_id: str
    patient_id: str
    status: PaymentStatus
    method: PaymentMethodType
    purpose: PaymentPurpose
    amount: int  # what is applied to invoices and credit
    fee_amount: int  # pass-through surcharge, charged on top of amount, never applied
    currency: str
    allocations: list[Allocation]  # intended until settled, then what was applied
    credit_amount: int  # intended credit until settled, then what went to credit
    created_by: Actor
    created_at: str
    payer: Payer = Payer.SELF
    reference: str | None = None
    note: str | None = None
    receipt_email: str | None = None
    location_id: str | None = None
    save_card: bool = False
    consent: Consent | None = None
    off_session: bool = False
    stripe_account_id: str | None = None
    stripe_customer_id: str | None = None
    stripe_payment_intent_id: str | None = None
    client_secret: str | None = None
    payment_method: CardSummary | None = None
    failure: Failure | None = None
    confirmation_number: str | None = None
    succeeded_at: str | None = None
    amount_received: int = 0
    refunds: list[RefundRecord] = field(default_factory=list)
    dispute: Dispute | None = None
    # The patient's credit in this currency right after the payment settled (its receipt is a
    # snapshot); None for payments settled before it was kept.
    credit_balance_after: int | None = None

    @property
    def refunded_amount(self) -> int:
        """Money given back to the cardholder: a refund that failed gave nothing back."""
        return sum(r.amount for r in self.refunds if not r.has_failed)

    @property
    def charge_amount(self) -> int:
        return self.amount + self.fee_amount

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


FINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.CANCELED})


class LedgerEntryType(StrEnum):
    TOPUP = "topup"
    APPLIED = "applied"
    OVERPAYMENT = "overpayment"
    REFUND = "refund"
    REFUND_FAILED = "refund_failed"  # a card refund that failed gives its credit back
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True)
class LedgerEntry:
    """One movement of a patient's account credit; the balance is the sum of these."""

    id: str
    type: LedgerEntryType
    amount: int  # signed: positive adds credit, negative uses it
    currency: str
    at: str
    actor: Actor
    invoice_id: str | None = None
    payment_id: str | None = None
    location_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class CreditLot:
    """Credit from one source (a payment's overflow or top-up: the payment's id; an adjustment
    or a failed refund's give-back: its ledger entry's id), what is left of it, and its date."""

    id: str
    amount: int
    at: str


@dataclass(frozen=True)
class Credit:
    """One currency's credit: its balance, the lots it is made of (oldest first), and the
    version every write of it is conditioned on."""

    balance: int
    currency: str | None
    version: int
    lots: tuple[CreditLot, ...] = ()


@dataclass(frozen=True)
class IntentSnapshot:
    """What the domain needs of a Stripe PaymentIntent."""

    id: str
    status: str
    amount: int
    amount_received: int
    currency: str
    client_secret: str | None
    metadata: dict[str, str]
    payment_method: CardSummary | None
    last_error: Failure | None
    customer: str | None = None


@dataclass(frozen=True)
class SetupIntentSnapshot:
    """What the domain needs of a Stripe SetupIntent (a card saved without paying)."""

    id: str
    status: str
    client_secret: str | None
    customer: str | None
    payment_method: str | None  # the id of the card it set up, once it has one
    metadata: dict[str, str]


@dataclass(frozen=True)
class CardSetup:
    """A request to save a card without paying: the consent given, before Stripe has the card.

    Written before the SetupIntent is created; its id is in the SetupIntent's metadata, so
    setup_intent.succeeded finds it and moves the consent onto the card it set up."""

    id: str
    clinic_id: str
    patient_id: str
    account_id: str
    customer_id: str
    consent: Consent
    created_at: str
    setup_intent_id: str | None = None
    payment_method_id: str | None = None  # set once the card is known (reconciled)


@dataclass(frozen=True)
class CardConsent:
    """The consent on file for one saved card, keyed by its payment method id. Saved on its
    own (setup_id) or while paying (payment_id)."""

    payment_method_id: str
    account_id: str
    consent: Consent
    setup_id: str | None = None
    payment_id: str | None = None


@dataclass(frozen=True)
class SavedCard:
    """A card Stripe holds for the patient's customer, with our record of the consent (None
    when the card reached the customer some other way, e.g. Stripe's dashboard)."""

    card: CardSummary
    consent: Consent | None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class WebhookEvent:
    """A verified Stripe event: its id, type, and the PaymentIntent or SetupIntent it carries."""

    id: str
    type: str
    object_type: str | None
    object_id: str | None
    intent: IntentSnapshot | None
    setup_intent: SetupIntentSnapshot | None = None
    charge: ChargeSnapshot | None = None
    dispute: DisputeSnapshot | None = None
    refund: RefundSnapshot | None = None
    # Signed by Stripe but not of a shape this API understands: why (no values, no secrets).
    unexpected_shape: str | None = None


@dataclass(frozen=True)
class RefundSnapshot:
    """A Stripe refund: from our request's answer, a list, or a refund.*/charge.* event."""

    id: str
    amount: int
    status: str
    failure_reason: str | None = None
    payment_intent_id: str | None = None
    charge_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def has_failed(self) -> bool:
        return self.status in REFUND_FAILED_STATUSES


@dataclass(frozen=True)
class ChargeSnapshot:
    """A charge from a charge.* event: its intent and the refunds Stripe made on it."""

    id: str
    payment_intent_id: str | None
    refunds: list[RefundSnapshot] | None  # None when the event does not list them
    card: CardSummary | None = None  # payment_method_details.card, with the charged card's id


@dataclass(frozen=True)
class DisputeSnapshot:
    id: str
    charge_id: str | None
    payment_intent_id: str | None
    amount: int
    status: str
    reason: str | None
