"""Stripe's four bank debits as facts: which currency each takes, what a PaymentMethod of each
needs, what its object shows, and what Stripe's documented test numbers do.

Pure data and checks (no localstripe state): the rules (`rules.py`) refuse with them before a
request executes, and `debits.py` builds objects and outcomes from them. Sources, per fact, are
in docs/stripe-fidelity.md ("Bank debits").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Union, get_args, get_origin

import stripe.params as sp

# The scheme of each debit and the one currency it takes (each method's "Determine
# compatibility": presentment currency usd, gbp, eur, aud).
DEBIT_CURRENCIES: dict[str, str] = {
    "us_bank_account": "usd",
    "bacs_debit": "gbp",
    "sepa_debit": "eur",
    "au_becs_debit": "aud",
}
DEBIT_TYPES: tuple[str, ...] = tuple(DEBIT_CURRENCIES)
# What the fake's account can take: cards and the four debits. Any other Stripe type in
# `allowed_payment_method_types` is filtered out, as Stripe filters a type the account has not
# activated.
MODELED_TYPES: tuple[str, ...] = ("card", *DEBIT_TYPES)


def _literals(annotation: Any) -> set[str]:
    if get_origin(annotation) is Literal:
        return {str(arg) for arg in get_args(annotation)}
    found: set[str] = set()
    if get_origin(annotation) in (Union, list, NotRequired):
        for arg in get_args(annotation):
            found |= _literals(arg)
    return found


# Every payment method type Stripe names in `allowed_payment_method_types` on the pinned API
# version, read from stripe-python's own params (generated from Stripe's OpenAPI spec).
STRIPE_TYPES: frozenset[str] = frozenset(
    _literals(sp.PaymentIntentCreateParams.__annotations__["allowed_payment_method_types"])
)


def compatible_types(allowed: list[str], currency: str | None) -> list[str]:
    """The subset of `allowed` an intent can use (Stripe reflects it in `payment_method_types`):
    types the account takes, and for a PaymentIntent only debits in their own currency."""
    result: list[str] = []
    for kind in allowed:
        if kind not in MODELED_TYPES or kind in result:
            continue
        if kind != "card" and currency is not None and DEBIT_CURRENCIES[kind] != currency:
            continue
        result.append(kind)
    return result


# --- problems: what Stripe answers 400 to ---------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """A 400 `invalid_request_error` as Stripe shapes it (message, param, code)."""

    message: str
    param: str | None = None
    code: str | None = None


def missing(param: str) -> Problem:
    """Stripe's `parameter_missing`."""
    return Problem(f"Missing required param: {param}.", param, "parameter_missing")


def _name(prefix: str, *path: str) -> str:
    head, *rest = [*([prefix] if prefix else []), *path]
    return head + "".join(f"[{segment}]" for segment in rest)


# Billing details each debit's mandate needs: SEPA and BECS the account holder's name and email
# (Stripe.js confirmSepaDebitPayment / confirmAuBecsDebitPayment), Bacs name, email and full
# address (the Bacs mandate holds them), ACH the name (collectBankAccountForPayment).
REQUIRED_BILLING: dict[str, tuple[str, ...]] = {
    "sepa_debit": ("name", "email"),
    "au_becs_debit": ("name", "email"),
    "bacs_debit": (
        "name",
        "email",
        "address.line1",
        "address.city",
        "address.postal_code",
        "address.country",
    ),
    "us_bank_account": ("name",),
}
# SEPA IBANs from outside the EEA need the address too (2026-09-30.endive).
NON_EEA_SEPA_COUNTRIES = frozenset(
    "AD PF TF GI GB GG VA IM JE MC NC BL PM SM CH WF".split()  # noqa: SIM905 - a list as written
)
NON_EEA_SEPA_ADDRESS = ("address.line1", "address.city", "address.postal_code", "address.country")


def _billing_value(billing: Any, field: str) -> Any:
    node = billing
    for segment in field.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(segment)
    return node


def billing_problem(
    kind: str, billing: Any, details: dict[str, str], prefix: str
) -> Problem | None:
    required = list(REQUIRED_BILLING.get(kind, ()))
    if kind == "sepa_debit" and details.get("iban", "")[:2] in NON_EEA_SEPA_COUNTRIES:
        required += [field for field in NON_EEA_SEPA_ADDRESS if field not in required]
    for field in required:
        value = _billing_value(billing, field)
        if not (isinstance(value, str) and value.strip()):
            return missing(_name(prefix, "billing_details", *field.split(".")))
    return None


# --- account numbers ----------------------------------------------------------------------

_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")


def normalize_iban(iban: str) -> str:
    return re.sub(r"\s", "", iban).upper()


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: the country code and check digits moved to the end, letters as numbers,
    the whole mod 97 is 1."""
    if not _IBAN.match(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1


def routing_number_is_valid(routing: str) -> bool:
    """An ABA routing number: nine digits whose 3-7-1 weighted sum is a multiple of 10."""
    if not re.fullmatch(r"[0-9]{9}", routing):
        return False
    weights = (3, 7, 1) * 3
    total = sum(int(digit) * weight for digit, weight in zip(routing, weights, strict=True))
    return total % 10 == 0


def _digits(value: Any) -> str:
    return re.sub(r"[\s-]", "", value) if isinstance(value, str) else ""


# The fields of each debit's hash when creating a PaymentMethod (stripe.params), normalized.
def account_details(kind: str, raw: Any) -> dict[str, str]:
    raw = raw if isinstance(raw, dict) else {}
    if kind == "sepa_debit":
        iban = raw.get("iban")
        return {"iban": normalize_iban(iban)} if isinstance(iban, str) else {}
    details = {key: _digits(value) for key, value in raw.items() if isinstance(value, str)}
    for key in ("account_holder_type", "account_type", "financial_connections_account"):
        if isinstance(raw.get(key), str):
            details[key] = raw[key]
    return details


# Documented test numbers whose behaviour the fake does not model: refused rather than turned
# into something Stripe would not do.
UNMODELED: dict[str, dict[str, str]] = {
    "sepa_debit": {"DE35370400440532013002": "a dispute"},
    "us_bank_account": {
        "000555555559": "a dispute",
        "000000004954": "a Radar block",
        "000777777771": "a weekly volume limit",
        "000888888885": "a deactivated tokenized account number",
    },
    "bacs_debit": {
        "55555559": "a dispute",
        "00033333": "a mandate refused by the bank",
    },
    "au_becs_debit": {"666666660": "a dispute"},
}
# Bacs: this test account number is refused when the PaymentMethod is created.
BACS_INVALID_ACCOUNT = "00044444"


def account_key(kind: str, details: dict[str, str]) -> str:
    return details.get("iban", "") if kind == "sepa_debit" else details.get("account_number", "")


def account_problem(kind: str, raw: Any, prefix: str) -> Problem | None:
    """The bank details of a new PaymentMethod, checked as Stripe checks them."""
    base = _name(prefix, kind)
    if not isinstance(raw, dict):
        return missing(base)
    details = account_details(kind, raw)
    if kind == "sepa_debit":
        if "iban" not in details:
            return missing(f"{base}[iban]")
        if not iban_is_valid(details["iban"]):
            return Problem(
                "The IBAN you provided is invalid.", f"{base}[iban]", "invalid_bank_account_iban"
            )
    elif kind == "us_bank_account":
        problem = _us_bank_account_problem(details, base)
        if problem is not None:
            return problem
    elif kind == "bacs_debit":
        problem = _fixed_digits(details, base, "sort_code", 6, "routing_number_invalid") or (
            _fixed_digits(details, base, "account_number", 8, "account_number_invalid")
        )
        if problem is not None:
            return problem
        if details["account_number"] == BACS_INVALID_ACCOUNT:
            return Problem(
                "The account number you provided is invalid.",
                f"{base}[account_number]",
                "account_number_invalid",
            )
    elif kind == "au_becs_debit":
        problem = _fixed_digits(details, base, "bsb_number", 6, "routing_number_invalid")
        if problem is not None:
            return problem
        number = details.get("account_number")
        if number is None:
            return missing(f"{base}[account_number]")
        if not re.fullmatch(r"[0-9]{5,9}", number):
            return Problem(
                "The account number you provided is invalid.",
                f"{base}[account_number]",
                "account_number_invalid",
            )
    behaviour = UNMODELED.get(kind, {}).get(account_key(kind, details))
    if behaviour is not None:
        field = "iban" if kind == "sepa_debit" else "account_number"
        return Problem(
            f"This is one of Stripe's test numbers for {behaviour}, which the local fake does "
            "not model (docs/stripe-fidelity.md).",
            f"{base}[{field}]",
        )
    return None


def _fixed_digits(
    details: dict[str, str], base: str, field: str, length: int, code: str
) -> Problem | None:
    value = details.get(field)
    if value is None:
        return missing(f"{base}[{field}]")
    if not re.fullmatch(rf"[0-9]{{{length}}}", value):
        label = field.replace("_", " ")
        return Problem(f"The {label} you provided is invalid.", f"{base}[{field}]", code)
    return None


def _us_bank_account_problem(details: dict[str, str], base: str) -> Problem | None:
    connections = details.get("financial_connections_account")
    if connections is not None:
        # Financial Connections is not modeled: the fake has no such account, as Stripe would
        # answer for an unknown id.
        return Problem(
            f"No such financial connections account: '{connections}'",
            f"{base}[financial_connections_account]",
            "resource_missing",
        )
    routing = details.get("routing_number")
    if routing is None:
        return missing(f"{base}[routing_number]")
    if not routing_number_is_valid(routing):
        return Problem(
            "The routing number you provided is invalid.",
            f"{base}[routing_number]",
            "routing_number_invalid",
        )
    number = details.get("account_number")
    if number is None:
        return missing(f"{base}[account_number]")
    if not re.fullmatch(r"[0-9]{4,17}", number):
        return Problem(
            "The account number you provided is invalid.",
            f"{base}[account_number]",
            "account_number_invalid",
        )
    for field, allowed in (
        ("account_holder_type", ("individual", "company")),
        ("account_type", ("checking", "savings")),
    ):
        if field in details and details[field] not in allowed:
            return Problem(
                f"Invalid {field}: must be one of {', '.join(allowed)}", f"{base}[{field}]"
            )
    return None


def payment_method_problem(data: Any, prefix: str) -> Problem | None:
    """A new debit PaymentMethod (`POST /v1/payment_methods`, or `payment_method_data` on a
    confirm): its bank details, then the billing details its mandate needs. None for other
    types (cards are localstripe's)."""
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind not in DEBIT_TYPES:
        return None
    problem = account_problem(kind, data.get(kind), prefix)
    if problem is not None:
        return problem
    return billing_problem(
        kind, data.get("billing_details"), account_details(kind, data.get(kind)), prefix
    )


# --- what each object shows -----------------------------------------------------------------

# Bank and branch code lengths at the start of a few countries' BBAN (the rest show none).
_SEPA_CODES: dict[str, tuple[int, int]] = {
    "DE": (8, 0),
    "AT": (5, 0),
    "NL": (4, 0),
    "BE": (3, 0),
    "FR": (5, 5),
    "ES": (4, 4),
}
TEST_BANK_NAME = "STRIPE TEST BANK"


def payment_method_hash(kind: str, details: dict[str, str], fingerprint: str) -> dict[str, Any]:
    """The `<type>` hash of a PaymentMethod (the PaymentMethod object page and stripe-python's
    PaymentMethod.SepaDebit, UsBankAccount, BacsDebit, AuBecsDebit)."""
    number = account_key(kind, details)
    if kind == "sepa_debit":
        country, bban = number[:2], number[4:]
        bank_length, branch_length = _SEPA_CODES.get(country, (0, 0))
        return {
            "bank_code": bban[:bank_length] or None,
            "branch_code": bban[bank_length : bank_length + branch_length] or None,
            "country": country,
            "fingerprint": fingerprint,
            "generated_from": {"charge": None, "setup_attempt": None},
            "last4": number[-4:],
        }
    if kind == "us_bank_account":
        return {
            "account_holder_type": details.get("account_holder_type", "individual"),
            "account_type": details.get("account_type", "checking"),
            "bank_name": TEST_BANK_NAME,
            "financial_connections_account": None,
            "fingerprint": fingerprint,
            "last4": number[-4:],
            "networks": {"preferred": "ach", "supported": ["ach"]},
            "routing_number": details["routing_number"],
            "status_details": {},
        }
    if kind == "bacs_debit":
        return {"fingerprint": fingerprint, "last4": number[-4:], "sort_code": details["sort_code"]}
    return {"bsb_number": details["bsb_number"], "fingerprint": fingerprint, "last4": number[-4:]}


def billing_details(raw: Any) -> dict[str, Any]:
    """Stripe's full `billing_details` shape, null where nothing was given."""
    raw = raw if isinstance(raw, dict) else {}
    address = raw.get("address") if isinstance(raw.get("address"), dict) else {}
    return {
        "address": {
            field: address.get(field)
            for field in ("city", "country", "line1", "line2", "postal_code", "state")
        },
        "email": raw.get("email"),
        "name": raw.get("name"),
        "phone": raw.get("phone"),
        "tax_id": raw.get("tax_id"),
    }


# --- outcomes of Stripe's test numbers ------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What a debit from a test account does "later": succeed (no failure code) or come back
    with `failure_code`, leaving the mandate inactive or not; or never settle."""

    failure_code: str | None = None
    mandate_inactive: bool = False
    settles: bool = True
    microdeposits_fail: bool = False


SUCCEEDS = Outcome()
NEVER_SETTLES = Outcome(settles=False)

# Keyed by IBAN (SEPA) or account number (the others; routing 110000000, sort code 108800,
# BSB 000000). "Delayed" numbers behave as their immediate twins: the fake's "later" is one
# configurable delay.
OUTCOMES: dict[str, dict[str, Outcome]] = {
    "sepa_debit": {
        "DE89370400440532013000": SUCCEEDS,
        "DE08370400440532013003": SUCCEEDS,
        "DE62370400440532013001": Outcome("generic_could_not_process"),
        "DE78370400440532013004": Outcome("generic_could_not_process"),
        "DE65370400440000343434": Outcome("charge_exceeds_source_limit"),
        "DE27370400440000121212": Outcome("charge_exceeds_weekly_limit"),
        "DE65370400440002222227": Outcome("insufficient_funds"),
    },
    "us_bank_account": {
        "000123456789": SUCCEEDS,
        "000111111113": Outcome("account_closed", mandate_inactive=True),
        "000111111116": Outcome("no_account", mandate_inactive=True),
        "000222222227": Outcome("insufficient_funds"),
        "000333333335": Outcome("debit_not_authorized", mandate_inactive=True),
        "000444444440": Outcome("invalid_currency"),
        "000666666661": Outcome(microdeposits_fail=True),
        "000000000009": NEVER_SETTLES,
    },
    "bacs_debit": {
        "00012345": SUCCEEDS,
        "90012345": SUCCEEDS,
        "33333335": Outcome("debit_not_authorized", mandate_inactive=True),
        "93333335": Outcome("debit_not_authorized", mandate_inactive=True),
        "22222227": Outcome("insufficient_funds"),
        "92222227": Outcome("insufficient_funds"),
        "34343434": Outcome("charge_exceeds_source_limit"),
        "12121212": Outcome("charge_exceeds_transaction_limit"),
    },
    "au_becs_debit": {
        "000123456": SUCCEEDS,
        "900123456": SUCCEEDS,
        "111111113": Outcome("account_closed", mandate_inactive=True),
        "111111116": Outcome("no_account", mandate_inactive=True),
        "222222227": Outcome("refer_to_customer"),
        "922222227": Outcome("refer_to_customer"),
        "333333335": Outcome("debit_not_authorized", mandate_inactive=True),
        "343434343": Outcome("charge_exceeds_source_limit"),
        "121212121": Outcome("charge_exceeds_transaction_limit"),
    },
}


def outcome_for(kind: str, details: dict[str, str]) -> Outcome:
    """A documented test number's outcome; any other valid account succeeds."""
    return OUTCOMES.get(kind, {}).get(account_key(kind, details), SUCCEEDS)


# Our own wording of each failure (Stripe's `failure_message` texts are not reproduced).
FAILURE_MESSAGES: dict[str, str] = {
    "account_closed": "The bank account is closed.",
    "no_account": "No bank account was found for these details.",
    "insufficient_funds": "The bank account did not have enough funds for this debit.",
    "debit_not_authorized": "The account holder's bank reports this debit as not authorized.",
    "invalid_currency": "The bank account cannot be debited in this currency.",
    "refer_to_customer": "The bank returned the debit without giving a reason.",
    "generic_could_not_process": "The debit could not be processed.",
    "charge_exceeds_source_limit": "The debit exceeds the weekly volume limit of the account.",
    "charge_exceeds_weekly_limit": "The debit exceeds the weekly transaction limit.",
    "charge_exceeds_transaction_limit": "The debit exceeds the per-transaction limit.",
}


# Stripe's test PaymentMethod ids for bank debits (each method's test table): id -> type and
# the account it stands for. SEPA's tokens are per country; the German ones are listed.
TEST_PAYMENT_METHODS: dict[str, tuple[str, dict[str, str]]] = {
    **{
        f"pm_{name}_de": ("sepa_debit", {"iban": iban})
        for name, iban in (
            ("success", "DE89370400440532013000"),
            ("successDelayed", "DE08370400440532013003"),
            ("failed", "DE62370400440532013001"),
            ("failedDelayed", "DE78370400440532013004"),
            ("exceedsWeeklyVolumeLimit", "DE65370400440000343434"),
            ("exceedsWeeklyTransactionLimit", "DE27370400440000121212"),
            ("insufficientFunds", "DE65370400440002222227"),
        )
    },
    **{
        f"pm_usBankAccount_{name}": (
            "us_bank_account",
            {"routing_number": "110000000", "account_number": number},
        )
        for name, number in (
            ("success", "000123456789"),
            ("accountClosed", "000111111113"),
            ("noAccount", "000111111116"),
            ("insufficientFunds", "000222222227"),
            ("debitNotAuthorized", "000333333335"),
            ("invalidCurrency", "000444444440"),
            ("failMicrodeposits", "000666666661"),
            ("processing", "000000000009"),
        )
    },
    **{
        f"pm_bacsDebit_{name}": ("bacs_debit", {"sort_code": "108800", "account_number": number})
        for name, number in (
            ("success", "00012345"),
            ("successDelayed", "90012345"),
            ("debitNotAuthorized", "33333335"),
            ("debitNotAuthorizedDelayed", "93333335"),
            ("insufficientFunds", "22222227"),
            ("insufficientFundsDelayed", "92222227"),
            ("exceedsWeeklyLimit", "34343434"),
            ("exceedsTransactionLimit", "12121212"),
        )
    },
    **{
        f"pm_auBecsDebit_{name}": ("au_becs_debit", {"bsb_number": "000000", "account_number": n})
        for name, n in (
            ("success", "000123456"),
            ("successDelayed", "900123456"),
            ("accountClosed", "111111113"),
            ("noAccount", "111111116"),
            ("referToCustomer", "222222227"),
            ("referToCustomerDelayed", "922222227"),
            ("debitNotAuthorized", "333333335"),
            ("exceedsWeeklyLimit", "343434343"),
            ("exceedsTransactionLimit", "121212121"),
        )
    },
}
# The billing details Stripe's test PaymentMethods are given here (they satisfy every
# debit's mandate requirements).
TEST_BILLING_DETAILS: dict[str, Any] = {
    "name": "Jenny Rosen",
    "email": "jenny.rosen@example.com",
    "address": {
        "line1": "1 Test Street",
        "city": "London",
        "postal_code": "EC1A 1BB",
        "country": "GB",
    },
}

# ACH microdeposit verification (the ACH page's test table): amounts or descriptor codes.
MICRODEPOSITS_VERIFY = ((32, 45), "SM11AA")
MICRODEPOSITS_ATTEMPTS_EXCEEDED = ((10, 11), "SM33CC")
MICRODEPOSITS_TIMEOUT = ((40, 41), "SM44DD")
# Failed attempts allowed: three for amounts, ten for descriptor codes.
MICRODEPOSIT_ATTEMPTS = {"amounts": 3, "descriptor_code": 10}
