"""The rules a payment request meets before anything is read or written, as a table: each
row a caller, a request and the clinic's settings, and the refusal (or none)."""

from __future__ import annotations

from typing import Any

import pytest
from clinic_payments.domain.errors import ForbiddenError, ValidationError
from clinic_payments.domain.model import (
    Caller,
    ClinicSettings,
    Location,
    PaymentMethodType,
    PaymentPurpose,
    Role,
)
from clinic_payments.domain.payments.rules import PaymentRequest, refusal

CARD, CASH, CHECK = PaymentMethodType.CARD, PaymentMethodType.CASH, PaymentMethodType.CHECK
TOPUP = PaymentPurpose.CREDIT_TOPUP
MAIN = [Location("loc_main", "Main Street")]

# (who, request, settings, refused with, words of the message)
CASES: list[tuple[Role, dict[str, Any], dict[str, Any], type[Exception] | None, str]] = [
    (Role.PATIENT, {"method": CARD}, {}, None, ""),
    (Role.STAFF, {"method": CASH}, {}, None, ""),
    (Role.ADMIN, {"method": CHECK}, {}, None, ""),
    (Role.PATIENT, {"method": CASH}, {}, ForbiddenError, "Only clinic staff"),
    (Role.PATIENT, {"method": CHECK}, {}, ForbiddenError, "cash and check"),
    (Role.PATIENT, {"method": CARD, "purpose": TOPUP}, {}, ForbiddenError, "top-ups"),
    (Role.PATIENT, {"method": CARD, "purpose": TOPUP}, {"allow_credit_topups": True}, None, ""),
    (
        Role.PATIENT,
        {"method": CARD, "purpose": TOPUP},
        {"allow_credit_topups": True, "locations": MAIN},
        ValidationError,
        "which location",
    ),
    (
        Role.PATIENT,
        {"method": CARD, "purpose": TOPUP, "location_id": "loc_main"},
        {"allow_credit_topups": True, "locations": MAIN},
        None,
        "",
    ),
    (
        Role.PATIENT,
        {"method": CARD, "payment_method_id": "pm_1", "off_session": True},
        {},
        ForbiddenError,
        "off-session",
    ),
    (Role.STAFF, {"method": CARD, "off_session": True}, {}, ValidationError, "needs a saved card"),
    (Role.STAFF, {"method": CARD, "payment_method_id": "pm_1", "off_session": True}, {}, None, ""),
    (
        Role.STAFF,
        {"method": CASH, "payment_method_id": "pm_1"},
        {},
        ValidationError,
        "card payments only",
    ),
    (Role.STAFF, {"method": CHECK, "save_card": True}, {}, ValidationError, "card payments only"),
    (
        Role.PATIENT,
        {"method": CARD, "payment_method_id": "pm_1", "save_card": True},
        {},
        ValidationError,
        "already saved",
    ),
    (
        Role.PATIENT,
        {"method": CARD},
        {"accept_portal_payments": False},
        ForbiddenError,
        "through the portal",
    ),
    (Role.STAFF, {"method": CARD}, {"accept_portal_payments": False}, None, ""),
    (
        Role.STAFF,
        {"method": CASH, "location_id": "loc_x"},
        {"locations": MAIN},
        ValidationError,
        "Unknown location",
    ),
    (Role.STAFF, {"method": CASH, "location_id": "loc_main"}, {"locations": MAIN}, None, ""),
    # the first rule broken is the answer: a patient's off-session cash is a staff-only method
    (Role.PATIENT, {"method": CASH, "off_session": True}, {}, ForbiddenError, "cash and check"),
]


@pytest.mark.parametrize(("role", "request_fields", "settings", "refused", "words"), CASES)
def test_a_payment_request_is_refused_by_the_first_rule_it_breaks(
    role: Role,
    request_fields: dict[str, Any],
    settings: dict[str, Any],
    refused: type[Exception] | None,
    words: str,
) -> None:
    caller = Caller(sub="someone", role=role, clinic_id="clinic_a")
    found = refusal(
        caller, PaymentRequest(**request_fields), ClinicSettings(clinic_id="clinic_a", **settings)
    )
    if refused is None:
        assert found is None
    else:
        assert isinstance(found, refused)
        assert words in found.message
