"""Pay links: the signed token (pure functions) and the service on the fakes."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta

import pytest
from clinic_payments.api.auth import check_path_ids
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import (
    ForbiddenError,
    InvoiceNotPayableError,
    NotFoundError,
    PayLinkExpiredError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    Allocation,
    InvoiceStatus,
    PaymentMethodType,
    PaymentStatus,
    Role,
)
from clinic_payments.domain.paylinks import (
    MAC_BYTES,
    PAY_LINK_SUB,
    TOKEN_PATTERN,
    PayLink,
    PayLinkService,
    read_pay_link,
    sign_pay_link,
)
from clinic_payments.domain.payments.rules import PaymentRequest
from clinic_payments.domain.ports import (
    OutgoingEmail,
    PaymentRequestLog,
    PaymentRequestRecord,
    SigningKey,
)

from tests.unit.fakes import CLINIC, PATIENT, STAFF, World, make_world

pytestmark = pytest.mark.unit

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
LINK = PayLink("clinic_a", "pat_1", "inv_01kq3abcdefghjkmnpqrstvwxy", 1_800_000_000)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# -- the token ------------------------------------------------------------------------------


def test_a_signed_link_reads_back_as_itself() -> None:
    token = sign_pay_link(LINK, KEY)
    assert read_pay_link(token, KEY) == LINK
    assert TOKEN_PATTERN.fullmatch(token)


def test_the_token_carries_ids_and_a_time_only() -> None:
    token = sign_pay_link(LINK, KEY)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw[:-MAC_BYTES] == b"v1|clinic_a|pat_1|inv_01kq3abcdefghjkmnpqrstvwxy|1800000000"


def test_the_longest_link_fits_the_path_check() -> None:
    longest = PayLink("c" * 64, "p" * 64, "i" * 64, 9_999_999_999)
    token = sign_pay_link(longest, KEY)
    assert len(token) <= 512
    check_path_ids({"token": token})  # passes the edge's check, as ids do theirs


def test_any_changed_character_is_not_found() -> None:
    token = sign_pay_link(LINK, KEY)
    for position, original in enumerate(token):
        for replacement in (c for c in B64URL if c != original):
            tampered = token[:position] + replacement + token[position + 1 :]
            with pytest.raises(NotFoundError):
                read_pay_link(tampered, KEY)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t + "A",
        lambda t: t[1:],
        lambda t: t + "==",
        lambda t: t.replace(t[5], "!"),
        lambda t: "",
        lambda t: "A" * 40,
        lambda t: t[:20],
    ],
    ids=["truncated", "extended", "shifted", "padded", "bad-char", "empty", "junk", "short"],
)
def test_a_mangled_token_is_not_found(mangle: object) -> None:
    token = sign_pay_link(LINK, KEY)
    with pytest.raises(NotFoundError):
        read_pay_link(mangle(token), KEY)  # type: ignore[operator]


def test_a_token_signed_with_another_key_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        read_pay_link(sign_pay_link(LINK, OTHER_KEY), KEY)


@pytest.mark.parametrize(
    "payload",
    [
        b"v2|clinic_a|pat_1|inv_1|1800000000",
        b"v1|clinic_a|pat_1|inv_1",
        b"v1|clinic_a|pat_1|inv_1|1800000000|extra",
        b"v1|clinic_a|pat 1|inv_1|1800000000",
        b"v1|clinic_a|pat_1|inv_1|soon",
        b"v1||pat_1|inv_1|1800000000",
    ],
)
def test_a_genuinely_signed_but_malformed_payload_is_not_found(payload: bytes) -> None:
    mac = hmac.new(KEY, payload, hashlib.sha256).digest()
    token = base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")
    with pytest.raises(NotFoundError):
        read_pay_link(token, KEY)


def test_ids_that_could_not_be_read_back_are_refused_when_signing() -> None:
    with pytest.raises(ValueError, match="ids"):
        sign_pay_link(PayLink("clinic|a", "pat_1", "inv_1", 1), KEY)


def test_a_mangled_token_in_the_path_is_a_404_not_a_422() -> None:
    with pytest.raises(NotFoundError):
        check_path_ids({"token": "not a token!"})
    with pytest.raises(NotFoundError):
        check_path_ids({"token": "A" * 513})


def test_a_link_acts_as_its_patient_only() -> None:
    caller = LINK.caller()
    assert (caller.sub, caller.role) == (PAY_LINK_SUB, Role.PATIENT)
    assert caller.clinic_id == "clinic_a"
    assert caller.patient_ids == frozenset({"pat_1"})


# -- the service ------------------------------------------------------------------------------


class FixedKey:
    def get(self) -> bytes:
        return KEY


class RequestLog:
    def __init__(self) -> None:
        self.records: list[PaymentRequestRecord] = []

    def put_payment_request(self, record: PaymentRequestRecord) -> None:
        self.records.append(record)


class Outbox:
    def __init__(self) -> None:
        self.sent: list[OutgoingEmail] = []

    def send(self, email: OutgoingEmail) -> None:
        self.sent.append(email)


# The fakes are the ports: mypy --strict fails here the day one drifts from its Protocol.
_key: SigningKey = FixedKey()
_log: PaymentRequestLog = RequestLog()


class Rig:
    def __init__(self, **settings: object) -> None:
        self.world: World = make_world(**settings)
        self.log = RequestLog()
        self.outbox = Outbox()
        self.service = PayLinkService(
            self.world.repo,
            self.log,
            self.world.payments,
            FixedKey(),
            self.outbox,
            self.world.clock,
            "https://portal.example.test/",
        )

    def request(self, invoice_id: str, days: int = 14) -> tuple[PaymentRequestRecord, str]:
        return self.service.create_request(
            STAFF, CLINIC, PATIENT, invoice_id, "patient@example.com", days, new_id("preq")
        )

    @staticmethod
    def token_of(url: str) -> str:
        return url.rsplit("/pay/", 1)[1]


@pytest.fixture
def rig() -> Rig:
    return Rig(email_pay_online_requests=True)


def test_staff_send_a_link_that_shows_what_is_owed(rig: Rig) -> None:
    invoice = rig.world.invoice(12000, 1560)
    record, url = rig.request(invoice.id)
    assert url.startswith("https://portal.example.test/pay/")
    [email] = rig.outbox.sent
    assert email.to == "patient@example.com"
    assert url in email.text
    assert "USD 135.60" in email.text
    assert (
        email.subject == f"Test Clinic: payment request for invoice {invoice.number} (USD 135.60)"
    )
    assert rig.log.records == [record]
    assert record.created_by == STAFF.actor()
    assert record.expires_at[:10] == "2026-03-16"  # 14 days after the fake clock's now
    link = rig.service.verify(rig.token_of(url))
    owed = rig.service.owed(link)
    assert (owed.clinic_name, owed.invoice_number, owed.balance_due, owed.currency) == (
        "Test Clinic",
        invoice.number,
        13560,
        "usd",
    )


def test_no_requests_unless_the_clinic_sends_them() -> None:
    rig = Rig()  # email_pay_online_requests is off by default
    invoice = rig.world.invoice(5000)
    with pytest.raises(ForbiddenError, match="email_pay_online_requests"):
        rig.request(invoice.id)
    assert rig.outbox.sent == []


def test_no_request_for_an_invoice_with_nothing_to_pay(rig: Rig) -> None:
    invoice = rig.world.invoice(5000)
    rig.world.invoices.void(CLINIC, PATIENT, invoice.id)
    with pytest.raises(InvoiceNotPayableError) as raised:
        rig.request(invoice.id)
    assert raised.value.details == [{"field": "invoice.status", "issue": "void"}]
    with pytest.raises(NotFoundError):
        rig.request("inv_unknown")


def test_a_link_expires_and_then_says_so(rig: Rig) -> None:
    invoice = rig.world.invoice(5000)
    _, url = rig.request(invoice.id, days=1)
    token = rig.token_of(url)
    rig.world.clock.advance(timedelta(days=1) - timedelta(seconds=1))
    assert rig.service.verify(token).invoice_id == invoice.id
    rig.world.clock.advance(timedelta(seconds=1))
    with pytest.raises(PayLinkExpiredError):
        rig.service.verify(token)
    # A tampered expired link is still a 404: nothing is said before the signature checks.
    with pytest.raises(NotFoundError):
        rig.service.verify(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))


def test_paying_through_a_link_starts_a_card_payment_of_the_balance_due(rig: Rig) -> None:
    invoice = rig.world.invoice(8000)
    rig.world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(
            method=PaymentMethodType.CASH, allocations=[RequestedAllocation(invoice.id, 3000)]
        ),
        new_id("pay"),
    )
    _, url = rig.request(invoice.id)
    link = rig.service.verify(rig.token_of(url))
    payment = rig.service.pay(link, new_id("pay"), "patient@example.com")
    assert payment.status is PaymentStatus.REQUIRES_PAYMENT_METHOD
    assert payment.method is PaymentMethodType.CARD
    assert payment.allocations == [Allocation(invoice.id, 5000)]
    assert (payment.created_by.sub, payment.created_by.role) == (PAY_LINK_SUB, Role.PATIENT)
    assert payment.receipt_email == "patient@example.com"
    assert payment.client_secret


def test_a_paid_invoice_answers_with_its_status(rig: Rig) -> None:
    invoice = rig.world.invoice(4000)
    _, url = rig.request(invoice.id)
    rig.world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(
            method=PaymentMethodType.CASH, allocations=[RequestedAllocation(invoice.id)]
        ),
        new_id("pay"),
    )
    assert rig.world.stored_invoice(invoice.id).status is InvoiceStatus.PAID
    link = rig.service.verify(rig.token_of(url))
    with pytest.raises(InvoiceNotPayableError) as raised:
        rig.service.owed(link)
    assert raised.value.details == [{"field": "invoice.status", "issue": "paid"}]
    with pytest.raises(InvoiceNotPayableError):
        rig.service.pay(link, new_id("pay"), None)


def test_a_retried_payment_resumes_even_once_the_invoice_is_paid(rig: Rig) -> None:
    invoice = rig.world.invoice(4000)
    _, url = rig.request(invoice.id)
    link = rig.service.verify(rig.token_of(url))
    payment_id = new_id("pay")
    first = rig.service.pay(link, payment_id, None)
    rig.world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(
            method=PaymentMethodType.CASH, allocations=[RequestedAllocation(invoice.id)]
        ),
        new_id("pay"),
    )
    again = rig.service.pay(link, payment_id, None)  # the same request, retried
    assert again.id == first.id
    assert again.stripe_payment_intent_id == first.stripe_payment_intent_id
