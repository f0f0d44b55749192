"""Pay-online requests: a signed, expiring link that pays one invoice without a login.

Staff send it (the Juvonno "Email Pay Online Request", the Carepatron "send payment link"); the
patient opens `{base}/pay/{token}`, sees what is owed and pays it by card.

The token is base64url(payload + HMAC-SHA256(key, payload)), payload
`v1|{clinic_id}|{patient_id}|{invoice_id}|{expires_epoch}`: ids and a time, no name, no email,
no amount (the amount is read from the invoice when the link is used, so a link never asks for
more than is still due). Ids are [A-Za-z0-9_-], so "|" never occurs inside one. Nothing is
stored per token: the signature is the proof, and a rotated key retires every link at once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import (
    ForbiddenError,
    InvoiceNotPayableError,
    NotFoundError,
    PayLinkExpiredError,
)
from clinic_payments.domain.model import (
    Caller,
    ClinicSettings,
    Invoice,
    InvoiceStatus,
    Payment,
    PaymentMethodType,
    Role,
)
from clinic_payments.domain.money import format_money
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.ports import (
    ClinicConfigStore,
    Clock,
    EmailSender,
    InvoiceStore,
    OutgoingEmail,
    PaymentRequestLog,
    PaymentRequestRecord,
    PaymentStore,
    SigningKey,
)
from clinic_payments.domain.timeutil import from_iso, local_date, to_iso

log = logging.getLogger(__name__)

VERSION: Final = "v1"
MAC_BYTES: Final = 32
TOKEN_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{20,512}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
MIN_KEY_BYTES: Final = 32
DEFAULT_EXPIRY_DAYS: Final = 14
MAX_EXPIRY_DAYS: Final = 60
# The actor recorded on payments made through a pay link: no login, the link is the authority.
PAY_LINK_SUB: Final = "pay-link"

_INVALID = "This payment link is not valid."


@dataclass(frozen=True)
class PayLink:
    clinic_id: str
    patient_id: str
    invoice_id: str
    expires_at: int  # epoch seconds

    @property
    def expires_at_iso(self) -> str:
        return to_iso(datetime.fromtimestamp(self.expires_at, UTC))

    def caller(self) -> Caller:
        """Who a pay link acts as: the patient of the invoice, and no one else."""
        return Caller(
            sub=PAY_LINK_SUB,
            role=Role.PATIENT,
            clinic_id=self.clinic_id,
            patient_ids=frozenset({self.patient_id}),
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


def sign_pay_link(link: PayLink, key: bytes) -> str:
    for value in (link.clinic_id, link.patient_id, link.invoice_id):
        if not _ID.fullmatch(value):
            raise ValueError("pay link ids are 1 to 64 characters of A-Z a-z 0-9 _ -")
    fields = (VERSION, link.clinic_id, link.patient_id, link.invoice_id, str(link.expires_at))
    payload = "|".join(fields).encode("ascii")
    return _b64(payload + _mac(key, payload))


def read_pay_link(token: str, key: bytes) -> PayLink:
    """The link a token names, if our key signed it (expired or not). NotFoundError otherwise:
    a tampered, truncated or foreign token says nothing about why."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise NotFoundError(_INVALID)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise NotFoundError(_INVALID) from exc
    # One spelling per token (base64 leaves spare bits in the last character).
    if _b64(raw) != token or len(raw) <= MAC_BYTES:
        raise NotFoundError(_INVALID)
    payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, payload)):
        raise NotFoundError(_INVALID)
    parts = payload.decode("ascii", "replace").split("|")
    if len(parts) != 5 or parts[0] != VERSION or not parts[4].isdigit():
        raise NotFoundError(_INVALID)
    _version, clinic_id, patient_id, invoice_id, expires = parts
    if not all(_ID.fullmatch(v) for v in (clinic_id, patient_id, invoice_id)):
        raise NotFoundError(_INVALID)
    return PayLink(clinic_id, patient_id, invoice_id, int(expires))


def ensure_payable(invoice: Invoice) -> None:
    if invoice.status is InvoiceStatus.VOID:
        raise InvoiceNotPayableError(
            "This invoice is void: there is nothing to pay.",
            [{"field": "invoice.status", "issue": invoice.status.value}],
        )
    if invoice.balance_due <= 0:
        raise InvoiceNotPayableError(
            "This invoice is paid: there is nothing left to pay.",
            [{"field": "invoice.status", "issue": invoice.status.value}],
        )


@dataclass(frozen=True)
class AmountOwed:
    """What a pay link shows, and nothing else."""

    clinic_name: str
    invoice_number: str
    balance_due: int
    currency: str
    due_date: str | None


def pay_request_email(
    owed: AmountOwed, url: str, expires_at: str, to: str, sender_name: str, timezone: str = "UTC"
) -> OutgoingEmail:
    clinic = owed.clinic_name or "Your clinic"
    amount = format_money(owed.balance_due, owed.currency)
    due = f", due {owed.due_date}" if owed.due_date else ""
    text = (
        f"{clinic} has sent you a request to pay invoice {owed.invoice_number} online.\n\n"
        f"Amount due: {amount}{due}\n\n"
        f"Pay securely by card: {url}\n\n"
        f"This link can be used until {local_date(expires_at, timezone)} and pays this invoice "
        "only.\n"
    )
    return OutgoingEmail(
        to=to,
        subject=f"{clinic}: payment request for invoice {owed.invoice_number} ({amount})",
        text=text,
        sender_name=sender_name,
    )


class PayLinkReads(InvoiceStore, PaymentStore, ClinicConfigStore, Protocol):
    """What a pay link reads: the invoice, its payment, the clinic's settings."""


class PayLinkService:
    def __init__(
        self,
        repository: PayLinkReads,
        requests: PaymentRequestLog,
        payments: PaymentService,
        key: SigningKey,
        email: EmailSender,
        clock: Clock,
        base_url: str,
    ) -> None:
        self._repo = repository
        self._requests = requests
        self._payments = payments
        self._key = key
        self._email = email
        self._clock = clock
        self._base_url = base_url.rstrip("/")

    # -- staff: send a request ---------------------------------------------------------

    def create_request(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        invoice_id: str,
        email: str,
        expires_in_days: int,
        request_id: str,
    ) -> tuple[PaymentRequestRecord, str]:
        """Email the patient a link to pay this invoice; the record and the link."""
        if not 1 <= expires_in_days <= MAX_EXPIRY_DAYS:
            raise ValueError("expires_in_days out of range")  # the edge validates it first
        if not self._base_url:
            raise RuntimeError("PAY_LINK_BASE_URL is not set")
        settings = self._settings(clinic_id)
        if not settings.email_pay_online_requests:
            raise ForbiddenError(
                "This clinic does not send pay-online requests "
                "(its email_pay_online_requests setting is off)."
            )
        invoice = self._invoice(clinic_id, patient_id, invoice_id)
        ensure_payable(invoice)
        now = self._clock.now()
        expires = from_iso(now) + timedelta(days=expires_in_days)
        link = PayLink(clinic_id, patient_id, invoice_id, int(expires.timestamp()))
        url = f"{self._base_url}/pay/{sign_pay_link(link, self._key.get())}"
        owed = self._owed(settings, invoice)
        self._email.send(
            pay_request_email(
                owed, url, link.expires_at_iso, email, settings.clinic_name, settings.timezone
            )
        )
        record = PaymentRequestRecord(
            id=request_id,
            clinic_id=clinic_id,
            patient_id=patient_id,
            invoice_id=invoice_id,
            email=email,
            expires_at=link.expires_at_iso,
            created_by=caller.actor(),
            created_at=now,
        )
        self._requests.put_payment_request(record)
        return record, url

    # -- the patient, with the link ---------------------------------------------------------

    def verify(self, token: str) -> PayLink:
        """The link, if genuine (404 otherwise) and still valid (410 once expired)."""
        link = read_pay_link(token, self._key.get())
        if from_iso(self._clock.now()).timestamp() >= link.expires_at:
            raise PayLinkExpiredError(
                "This payment link has expired; ask the clinic to send a new one."
            )
        return link

    def owed(self, link: PayLink) -> AmountOwed:
        invoice = self._invoice(link.clinic_id, link.patient_id, link.invoice_id)
        ensure_payable(invoice)
        return self._owed(self._settings(link.clinic_id), invoice)

    def pay(self, link: PayLink, payment_id: str, receipt_email: str | None) -> Payment:
        """Start a new-card payment of the invoice's balance due, through PaymentService."""
        invoice = self._invoice(link.clinic_id, link.patient_id, link.invoice_id)
        if not invoice.is_payable and (
            self._repo.get_payment(link.clinic_id, link.patient_id, payment_id) is None
        ):
            # Nothing to pay, and no earlier attempt of this request to resume (a retried
            # request resumes its payment whatever happened to the invoice since).
            ensure_payable(invoice)
        return self._payments.create(
            link.caller(),
            link.clinic_id,
            link.patient_id,
            PaymentRequest(
                method=PaymentMethodType.CARD,
                allocations=[RequestedAllocation(invoice.id, None)],
                receipt_email=receipt_email,
            ),
            payment_id,
        )

    # -- helpers ------------------------------------------------------------------------------

    def _settings(self, clinic_id: str) -> ClinicSettings:
        settings = self._repo.get_settings(clinic_id)
        if settings is None:
            raise NotFoundError("This clinic is not set up for payments yet.")
        return settings

    def _invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice:
        invoice = self._repo.get_invoice(clinic_id, patient_id, invoice_id)
        if invoice is None:
            raise NotFoundError("Invoice not found.")
        return invoice

    @staticmethod
    def _owed(settings: ClinicSettings, invoice: Invoice) -> AmountOwed:
        return AmountOwed(
            clinic_name=settings.clinic_name,
            invoice_number=invoice.number,
            balance_due=invoice.balance_due,
            currency=invoice.currency,
            due_date=invoice.due_date,
        )
