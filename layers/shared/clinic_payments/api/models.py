"""Request and response bodies (pydantic). Money is a strict int: no float, string or bool."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from clinic_payments.domain.money import MAX_AMOUNT, is_stripe_currency
from clinic_payments.domain.timeutil import is_timezone

Amount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT)]
SignedAmount = Annotated[int, Field(strict=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)]
Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


def _stripe_currency(value: str) -> str:
    if not is_stripe_currency(value):
        raise ValueError("not a currency Stripe charges in (docs.stripe.com/currencies)")
    return value


# Lower-case ISO 4217, and one Stripe supports: an invoice in a currency Stripe refuses could
# never be paid by card.
Currency = Annotated[
    str, StringConstraints(pattern=r"^[a-z]{3}$"), AfterValidator(_stripe_currency)
]
# Both go into email headers. There a control character is a line break to Python's email
# package (str.splitlines: \x1c-\x1e too), so a 500, and an address with `,` `<` `(` or `"`
# names other recipients or none, so SES refuses it (503) or mails someone else. An address is
# a dot-atom local part (RFC 5322 atext, ASCII as SES needs) at a host name with a dot.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
Email = Annotated[
    str,
    StringConstraints(
        pattern=rf"^{_ATEXT}(?:\.{_ATEXT})*@{_LABEL}(?:\.{_LABEL})+$", max_length=254
    ),
]
HeaderText = Annotated[
    str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f\x85\u2028\u2029]*$", max_length=200)
]


class Model(BaseModel):
    """Every request and response model. Its validator is built on first use, not at import:
    a function builds the models of its own routes only (cold start), never the other 50."""

    model_config = ConfigDict(defer_build=True)


class Strict(Model):
    model_config = ConfigDict(extra="forbid", defer_build=True)


# -- requests -----------------------------------------------------------------------------


class InvoiceLineRequest(Strict):
    description: ShortText
    service_date: dt.date | None = None
    quantity: Annotated[int, Field(strict=True, ge=1, le=10_000)] = 1
    unit_amount: Amount
    tax_rate_id: Id | None = None


# One line of a printed header (a name, a phone number): no control characters.
_PRINTED = r"[^\x00-\x1f\x7f\x85\u2028\u2029]*"
PrintedLine = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=rf"^{_PRINTED}$", max_length=200)
]
# A postal address: up to six lines of printed text.
Address = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        pattern=rf"^{_PRINTED}(\n{_PRINTED}){{0,5}}$",
        max_length=500,
    ),
]


class BillToModel(Strict):
    name: Annotated[PrintedLine, StringConstraints(min_length=1)]
    address: Address = ""


class CreateInvoiceRequest(Strict):
    currency: Currency | None = None
    due_date: dt.date | None = None
    memo: Annotated[str, StringConstraints(max_length=1000)] | None = None
    lines: Annotated[list[InvoiceLineRequest], Field(min_length=1, max_length=100)]
    # Who the invoice is addressed to, printed on it; kept here, never sent to Stripe.
    bill_to: BillToModel | None = None


class AllocationRequest(Strict):
    invoice_id: Id
    amount: Amount | None = None


class ConsentRequest(Strict):
    agreed: Annotated[bool, Field(strict=True)]
    wording_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class CreatePaymentRequest(Strict):
    method: Literal["card", "cash", "check"]
    allocations: Annotated[list[AllocationRequest], Field(min_length=1, max_length=50)] | None = (
        None
    )
    amount: Amount | None = None
    payment_method_id: (
        Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,250}$")] | None
    ) = None
    save_card: Annotated[bool, Field(strict=True)] = False
    consent: ConsentRequest | None = None
    off_session: Annotated[bool, Field(strict=True)] = False
    payer: Literal["self", "copay", "coinsurance", "deductible"] = "self"
    reference: Annotated[str, StringConstraints(max_length=200)] | None = None
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None
    receipt_email: Email | None = None
    location_id: Id | None = None


class AddPaymentMethodRequest(Strict):
    # Optional here so that a missing consent is consent_required (422), as for payments.
    consent: ConsentRequest | None = None


class TaxRateModel(Strict):
    id: Id
    name: ShortText
    percent: Annotated[Decimal, Field(ge=0, lt=100, max_digits=8, decimal_places=4)]

    @field_validator("percent", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        # A float has already lost precision: take "13.5" or 13 (or 13.5 written as a string).
        if isinstance(value, float | bool):
            raise ValueError('give the percent as a string, e.g. "13.5", or an integer')
        return value


class LocationModel(Strict):
    id: Id
    name: ShortText


class FeeRateModel(Strict):
    percent: Annotated[Decimal, Field(ge=0, lt=100, max_digits=8, decimal_places=4)]
    fixed: Annotated[int, Field(strict=True, ge=0, le=MAX_AMOUNT)]


class ProfileModel(Strict):
    legal_name: PrintedLine = ""
    address: Address = ""
    phone: PrintedLine = ""
    email: Email | Literal[""] = ""
    # e.g. a Canadian HST number ("123456789 RT0001"), which Canadian invoices must show
    tax_registration_number: PrintedLine = ""


class SettingsRequest(Strict):
    clinic_name: HeaderText = ""
    currency: Currency = "usd"
    accept_portal_payments: Annotated[bool, Field(strict=True)] = True
    allow_credit_topups: Annotated[bool, Field(strict=True)] = False
    email_pay_online_requests: Annotated[bool, Field(strict=True)] = False
    pass_processing_fees: Annotated[bool, Field(strict=True)] = False
    fee_schedule: (
        dict[
            Literal["card", "ach_debit", "bacs_debit", "sepa_debit", "au_becs_debit"], FeeRateModel
        ]
        | None
    ) = None
    tax_rates: Annotated[list[TaxRateModel], Field(max_length=50)] = []
    locations: Annotated[list[LocationModel], Field(max_length=200)] = []
    card_on_file_wording_version: (
        Annotated[str, StringConstraints(min_length=1, max_length=64)] | None
    ) = None
    # Printed at the top of invoices and receipts; left out, the current one stays.
    profile: ProfileModel | None = None
    # An IANA time zone (e.g. "America/Toronto"); left out, the clinic's current one stays.
    timezone: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str | None) -> str | None:
        if value is not None and not is_timezone(value):
            raise ValueError("must be an IANA time zone name, such as America/Toronto")
        return value


class StripeAccountRequest(Strict):
    name: ShortText
    secret_key: Annotated[str, StringConstraints(min_length=8, max_length=255)] | None = None
    publishable_key: Annotated[str, StringConstraints(min_length=8, max_length=255)] | None = None
    webhook_secret: Annotated[str, StringConstraints(min_length=8, max_length=255)] | None = None
    status: Literal["active", "inactive"] = "active"
    admin_default: Annotated[bool, Field(strict=True)] = False
    portal_default: Annotated[bool, Field(strict=True)] = False
    primary: Annotated[bool, Field(strict=True)] = False


# -- responses ----------------------------------------------------------------------------


class ActorOut(Model):
    sub: str
    role: str


class InvoiceLineOut(Model):
    id: str
    description: str
    service_date: str | None
    quantity: int
    unit_amount: int
    amount: int
    tax_rate_id: str | None
    tax_amount: int


class InvoicePaymentOut(Model):
    payment_id: str
    amount: int
    method: str
    at: str


class BillToOut(Model):
    name: str
    address: str


class InvoiceOut(Model):
    id: str
    number: str
    clinic_id: str
    patient_id: str
    status: str
    currency: str
    lines: list[InvoiceLineOut]
    subtotal: int
    tax: int
    total: int
    amount_paid: int
    balance_due: int
    due_date: str | None
    memo: str | None
    created_at: str
    paid_at: str | None
    voided_at: str | None
    payments: list[InvoicePaymentOut]
    amount_at_risk: int = 0
    bill_to: BillToOut | None = None


class InvoiceSummaryOut(Model):
    outstanding_count: int
    outstanding_amount: int
    currency: str
    available_credit: int


class InvoiceListOut(Model):
    items: list[InvoiceOut]
    next_cursor: str | None
    summary: InvoiceSummaryOut


class AllocationOut(Model):
    invoice_id: str
    amount: int


# Stripe's card.wallet.type. The contract names two; any other type Stripe reports is shown as
# it is, so the schema lists the two and still allows another string (an open enum).
Wallet = Annotated[
    Literal["apple_pay", "google_pay"] | str | None,
    Field(
        description=(
            "The wallet the card was presented through: apple_pay or google_pay (or another "
            "card wallet type Stripe reports, as Stripe names it); null for a plain card."
        )
    ),
]


class CardOut(Model):
    id: str
    brand: str | None
    last4: str | None
    wallet: Wallet


class FailureOut(Model):
    code: str | None
    decline_code: str | None
    message: str


class ConsentOut(Model):
    agreed: bool
    wording_version: str
    by: ActorOut
    at: str


class PaymentOut(Model):
    id: str
    status: str
    method: str
    purpose: str
    amount: int
    fee_amount: int
    charge_amount: int
    currency: str
    allocations: list[AllocationOut]
    credit_amount: int
    client_secret: str | None
    publishable_key: str | None = None
    confirmation_number: str | None
    payment_method: CardOut | None
    failure: FailureOut | None
    payer: str
    reference: str | None
    note: str | None
    receipt_email: str | None
    location_id: str | None
    consent: ConsentOut | None
    created_by: ActorOut
    created_at: str
    succeeded_at: str | None
    refunded_amount: int = 0
    refunds: list[RefundOut] = []
    dispute: DisputeOut | None = None


class PaymentListOut(Model):
    items: list[PaymentOut]
    next_cursor: str | None


class SavedCardConsentOut(Model):
    wording_version: str
    by: ActorOut
    at: str


class SavedCardOut(Model):
    id: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    wallet: Wallet
    consent: SavedCardConsentOut | None


class SavedCardListOut(Model):
    items: list[SavedCardOut]
    next_cursor: str | None = None  # every card is in the one page


class CardSetupOut(Model):
    setup_intent_id: str
    client_secret: str | None
    publishable_key: str | None


class StripeAccountOut(Model):
    account_id: str
    name: str
    status: str
    admin_default: bool
    portal_default: bool
    primary: bool
    secret_key_last4: str
    publishable_key_last4: str
    webhook_secret_last4: str
    updated_at: str
    updated_by: ActorOut


class StripeAccountListOut(Model):
    items: list[StripeAccountOut]


class ProfileOut(Model):
    legal_name: str
    address: str
    phone: str
    email: str
    tax_registration_number: str


class SettingsOut(Model):
    clinic_id: str
    clinic_name: str
    currency: str
    accept_portal_payments: bool
    allow_credit_topups: bool
    email_pay_online_requests: bool
    pass_processing_fees: bool
    fee_schedule: dict[str, dict[str, str | int]]
    tax_rates: list[dict[str, str]]
    locations: list[dict[str, str]]
    card_on_file_wording_version: str
    timezone: str
    profile: ProfileOut


class CardOnFileTermsOut(Model):
    wording_version: str
    text: str


class ErrorBody(Model):
    code: str
    message: str
    details: list[dict[str, object]]


class ErrorOut(Model):
    error: ErrorBody


# -- account credit ---------------------------------------------------------------------------


class TopupRequest(Strict):
    amount: Amount
    location_id: Id | None = None
    payment_method_id: (
        Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_]{1,250}$")] | None
    ) = None
    consent: ConsentRequest | None = None
    receipt_email: Email | None = None


class ApplyCreditRequest(Strict):
    amount: Amount | None = None


class AdjustmentRequest(Strict):
    amount: SignedAmount
    reason: ShortText
    currency: Currency | None = None


class ActivityOut(Model):
    id: str
    type: str
    amount: int
    currency: str
    invoice_id: str | None
    payment_id: str | None
    location_id: str | None
    reason: str | None
    actor: ActorOut
    at: str


class CreditLotOut(Model):
    """What is left of one source of credit (a payment's or top-up's id, an adjustment's)."""

    id: str
    amount: int
    at: str


class CreditOut(Model):
    currency: str
    balance: int
    # Oldest first, the order credit is spent in; they sum to the balance.
    lots: list[CreditLotOut] = []
    activity: list[ActivityOut]
    next_cursor: str | None


# -- refunds and disputes --------------------------------------------------------------------


class RefundRequest(Strict):
    amount: Amount | None = None
    reason: ShortText
    # Take the patient's other credit (oldest lot first) before this payment's invoices.
    take_credit_first: Annotated[bool, Field(strict=True)] = False


class RefundOut(Model):
    id: str
    amount: int
    reason: str
    from_credit: int
    from_invoices: list[AllocationOut]
    from_fee: int
    stripe_refund_id: str | None
    actor: ActorOut
    at: str
    # Stripe's: pending, requires_action, succeeded; failed or canceled gave nothing back to
    # the cardholder, and what it took back was given back (returned_to_*), at failed_at.
    status: str = "succeeded"
    failure_reason: str | None = None
    failed_at: str | None = None
    returned_to_invoices: list[AllocationOut] = []
    returned_to_credit: int = 0


class DisputeOut(Model):
    id: str
    amount: int
    status: str
    reason: str | None
    opened_at: str


# -- receipts, documents and pay links ------------------------------------------------------

MAX_PAY_LINK_DAYS = 60


class PaymentRequestCreate(Strict):
    email: Email
    expires_in_days: Annotated[int, Field(strict=True, ge=1, le=MAX_PAY_LINK_DAYS)] = 14


class PaymentRequestOut(Model):
    id: str
    invoice_id: str
    email: str
    url: str
    expires_at: str
    created_by: ActorOut
    created_at: str


class PayLinkPaymentRequest(Strict):
    receipt_email: Email | None = None


class AmountOwedOut(Model):
    clinic_name: str
    invoice_number: str
    balance_due: int
    currency: str
    due_date: str | None


class PayLinkPaymentOut(Model):
    payment_id: str
    status: str
    amount: int
    fee_amount: int
    charge_amount: int
    currency: str
    client_secret: str | None
    publishable_key: str | None


class ReceiptCardOut(Model):
    brand: str | None
    last4: str | None
    wallet: Wallet


class ReceiptLineOut(Model):
    invoice_id: str
    invoice_number: str | None
    amount: int


class ReceiptRefundOut(Model):
    id: str
    amount: int
    reason: str
    at: str
    date: str
    status: str


class ReceiptOut(Model):
    payment_id: str
    confirmation_number: str
    clinic_name: str
    clinic_profile: ProfileOut
    date_posted: str
    succeeded_at: str
    purpose: str
    amount: int
    fee_amount: int
    total_charged: int
    currency: str
    method: str
    card: ReceiptCardOut | None
    paid: list[ReceiptLineOut]
    credit_added: int
    credit_balance: int
    payer: str
    reference: str | None
    location_id: str | None
    location_name: str | None
    # Refunds made since, as they stand now (failed ones gave nothing back: not listed).
    refunds: list[ReceiptRefundOut] = []


class RefundReceiptOut(Model):
    refund_id: str
    payment_id: str
    confirmation_number: str
    clinic_name: str
    clinic_profile: ProfileOut
    date: str
    at: str
    amount: int
    currency: str
    reason: str
    status: str
    method: str
    card: ReceiptCardOut | None
    from_invoices: list[ReceiptLineOut]
    from_credit: int
    from_fee: int
