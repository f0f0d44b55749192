"""Who may pay how: the rules a payment request meets before anything is read or written.

One pure function over the caller, the request and the clinic's settings; each rule is a line
of a table, checked in order, and the first one broken is the refusal. Table-tested in
tests/unit/test_payment_rules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import DomainError, ForbiddenError, ValidationError
from clinic_payments.domain.model import (
    Caller,
    ClinicSettings,
    Payer,
    PaymentMethodType,
    PaymentPurpose,
    Role,
)


@dataclass(frozen=True)
class ConsentGiven:
    agreed: bool
    wording_version: str


@dataclass(frozen=True)
class PaymentRequest:
    method: PaymentMethodType
    allocations: list[RequestedAllocation] | None = None
    amount: int | None = None
    payment_method_id: str | None = None
    save_card: bool = False
    consent: ConsentGiven | None = None
    off_session: bool = False
    payer: Payer = Payer.SELF
    reference: str | None = None
    note: str | None = None
    receipt_email: str | None = None
    location_id: str | None = None
    purpose: PaymentPurpose = PaymentPurpose.INVOICE


@dataclass(frozen=True)
class _Asked:
    caller: Caller
    request: PaymentRequest
    settings: ClinicSettings

    @property
    def is_topup(self) -> bool:
        return self.request.purpose is PaymentPurpose.CREDIT_TOPUP

    @property
    def by_card(self) -> bool:
        return self.request.method is PaymentMethodType.CARD


_OFFLINE: Final = frozenset({PaymentMethodType.CASH, PaymentMethodType.CHECK})

# (the request breaks the rule, the refusal), in the order they are checked.
_RULES: Final[tuple[tuple[Callable[[_Asked], bool], Callable[[], DomainError]], ...]] = (
    (
        lambda a: a.request.method in _OFFLINE and not a.caller.is_staff,
        lambda: ForbiddenError("Only clinic staff can record cash and check payments."),
    ),
    (
        lambda a: a.is_topup and not a.settings.allow_credit_topups,
        lambda: ForbiddenError("This clinic does not take account credit top-ups."),
    ),
    (
        lambda a: a.is_topup and bool(a.settings.locations) and a.request.location_id is None,
        lambda: ValidationError(
            "Say at which location the credit is meant to be used.",
            [{"field": "location_id", "issue": "required"}],
        ),
    ),
    (
        lambda a: a.request.off_session and not a.caller.is_staff,
        lambda: ForbiddenError("Only clinic staff can charge a saved card off-session."),
    ),
    (
        lambda a: a.request.off_session and not a.request.payment_method_id,
        lambda: ValidationError(
            "An off-session charge needs a saved card (payment_method_id).",
            [{"field": "payment_method_id", "issue": "required with off_session"}],
        ),
    ),
    (
        lambda a: (
            not a.by_card
            and bool(a.request.payment_method_id or a.request.save_card or a.request.off_session)
        ),
        lambda: ValidationError(
            "payment_method_id, save_card and off_session apply to card payments only."
        ),
    ),
    (
        lambda a: bool(a.request.payment_method_id) and a.request.save_card,
        lambda: ValidationError("A saved card is already saved: drop save_card."),
    ),
    (
        lambda a: (
            a.by_card and a.caller.role is Role.PATIENT and not a.settings.accept_portal_payments
        ),
        lambda: ForbiddenError("This clinic does not accept payments through the portal."),
    ),
    (
        lambda a: (
            a.request.location_id is not None
            and a.request.location_id not in {loc.id for loc in a.settings.locations}
        ),
        lambda: ValidationError(
            "Unknown location.", [{"field": "location_id", "issue": "unknown location"}]
        ),
    ),
)


def refusal(
    caller: Caller, request: PaymentRequest, settings: ClinicSettings
) -> DomainError | None:
    """The first rule the request breaks, as the error to answer; None when it may go on
    (the card-on-file consent, which needs the clock, is checked next, by the service)."""
    asked = _Asked(caller, request, settings)
    for broken, error in _RULES:
        if broken(asked):
            return error()
    return None
