"""Bank debits (ACH `us_bank_account`, Bacs, SEPA, BECS) in the fake, as Stripe runs them.

localstripe knows cards and a sketch of SEPA. This module adds, calling localstripe's own
objects (Charge, BalanceTransaction, Event, the store):

- `DebitPaymentMethod`: a PaymentMethod of each debit type, with Stripe's object shape
  (`bank_accounts.payment_method_hash`) and the test number it was made from;
- `Mandate` (`GET /v1/mandates/{id}`): created when a customer accepts it on a confirm
  (`mandate_data`) or a SetupIntent; `active`, and `inactive` after a debit comes back
  `debit_not_authorized`, `account_closed`... (per method, `bank_accounts.OUTCOMES`) or its
  PaymentMethod is detached, with `mandate.updated`;
- confirm: the PaymentIntent goes `processing` with a `pending` charge
  (`payment_intent.processing`, `charge.pending`), and "later" (the fake's stand-in for the days
  a debit takes) succeeds (`payment_intent.succeeded`, `charge.succeeded`) or fails
  (`payment_intent.payment_failed`, `charge.failed`, the charge's `failure_code`), as the test
  number says. "Later" is `settle_after_seconds` (default 1.5 s, `None`: only when told), set
  and triggered through the `/_compat/debits` controls (`controls.py`);
- ACH accounts entered by number are verified with microdeposits first: `requires_action`
  (`verify_with_microdeposits`) until `POST .../verify_microdeposits` with Stripe's test amounts
  or descriptor code.

Refusals (currencies, billing details, mandates) are rules, checked before anything executes
(`rules.py`); this module trusts what reaches it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any

from localstripe.errors import UserError
from localstripe.resources import (
    BalanceTransaction,
    Charge,
    Event,
    List,
    PaymentMethod,
    StripeObject,
    fingerprint,
    store,
)
from localstripe.webhooks import schedule_webhook

from local.stripe_compat import bank_accounts as ba
from local.stripe_compat.cards import invalid_request

log = logging.getLogger(__name__)

DEFAULT_SETTLE_AFTER_SECONDS = 1.5
MICRODEPOSITS_ARRIVE_AFTER_SECONDS = 2 * 24 * 3600  # "1-2 business days"


# --- PaymentMethod --------------------------------------------------------------------------


class DebitPaymentMethod(PaymentMethod):  # type: ignore[misc]
    """A PaymentMethod of one of the four debit types. Stored and served by localstripe like
    its own (same store key, routes, attach and detach)."""

    def __init__(
        self,
        type: str,  # localstripe's keyword, as Stripe's parameter
        billing_details: Any = None,
        metadata: Any = None,
        **data: Any,
    ) -> None:
        raw = data.pop(type, None)
        if data:
            raise UserError(400, "Unexpected " + ", ".join(data))
        problem = ba.payment_method_problem(
            {"type": type, type: raw, "billing_details": billing_details}, ""
        )
        if problem is not None:
            raise invalid_request(problem.message, problem.param, problem.code)
        details = ba.account_details(type, raw)
        StripeObject.__init__(self)  # id, created, stored: localstripe's card checks do not apply
        self.type = type
        self.billing_details = ba.billing_details(billing_details)
        self.customer: str | None = None
        self.metadata = metadata or {}
        self.allow_redisplay = "unspecified"
        number = ba.account_key(type, details)
        routing = details.get("routing_number") or details.get("sort_code") or ""
        setattr(self, type, ba.payment_method_hash(type, details, fingerprint(routing + number)))
        self._compat_outcome = ba.outcome_for(type, details)
        # ACH accounts entered by number need microdeposit verification before a debit.
        self._compat_verified = type != "us_bank_account"
        self._compat_mandates: list[str] = []

    def _requires_authentication(self) -> bool:
        return False

    def _attaching_is_declined(self) -> bool:
        return False

    def _charging_is_declined(self) -> bool:
        return False


def is_debit(payment_method: Any) -> bool:
    return isinstance(payment_method, DebitPaymentMethod)


def new_payment_method(params: dict[str, Any]) -> Any:
    """A new PaymentMethod from create parameters: a debit here, a card by localstripe."""
    if params.get("type") in ba.DEBIT_TYPES:
        return DebitPaymentMethod(**params)
    return PaymentMethod(**params)


def payment_method_type(payment_method_id: Any) -> str | None:
    """The type of a PaymentMethod id without creating anything (test ids included)."""
    if not isinstance(payment_method_id, str):
        return None
    stored = store.get("payment_method:" + payment_method_id)
    if stored is not None:
        return str(stored.type)
    if payment_method_id in ba.TEST_PAYMENT_METHODS:
        return ba.TEST_PAYMENT_METHODS[payment_method_id][0]
    if payment_method_id.startswith("pm_card_"):
        return "card"
    return None


# --- Mandate --------------------------------------------------------------------------------


def _reference(length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


class Mandate(StripeObject):  # type: ignore[misc]
    """https://docs.stripe.com/api/mandates/object, served at GET /v1/mandates/{id}."""

    object = "mandate"
    _id_prefix = "mandate_"

    def __init__(
        self,
        payment_method: DebitPaymentMethod,
        acceptance: dict[str, Any],
        *,
        multi_use: bool,
        amount: int,
        currency: str,
    ) -> None:
        super().__init__()
        self.customer_acceptance = acceptance
        self.multi_use: dict[str, Any] | None = {} if multi_use else None
        self.single_use = None if multi_use else {"amount": amount, "currency": currency}
        self.on_behalf_of = None
        self.payment_method = payment_method.id
        self.payment_method_details = _mandate_details(payment_method.type, self.id)
        self.status = "active"
        self.type = "multi_use" if multi_use else "single_use"
        self._compat_intent: str | None = None  # the intent a single-use mandate belongs to
        payment_method._compat_mandates.append(self.id)

    def _deactivate(self, reason: str | None = None) -> None:
        if self.status == "inactive":
            return
        self.status = "inactive"
        details = self.payment_method_details.get("bacs_debit")
        if isinstance(details, dict):
            details["network_status"] = "revoked"
            details["revocation_reason"] = reason
        schedule_webhook(Event("mandate.updated", self))


def _mandate_details(kind: str, mandate_id: str) -> dict[str, Any]:
    url = f"https://stripe-compat.local/mandates/{mandate_id}"
    details: dict[str, Any]
    if kind == "sepa_debit":
        details = {"reference": _reference(16), "url": url}
    elif kind == "bacs_debit":
        details = {
            "display_name": None,
            "network_status": "accepted",
            "reference": _reference(18),
            "revocation_reason": None,
            "service_user_number": None,
            "url": url,
        }
    elif kind == "au_becs_debit":
        details = {"url": url}
    else:
        details = {"collection_method": None}
    return {"type": kind, kind: details}


def acceptance(mandate_data: Any) -> dict[str, Any]:
    """`customer_acceptance` as the Mandate records it (the rules checked what was sent)."""
    given = mandate_data.get("customer_acceptance") if isinstance(mandate_data, dict) else None
    given = given if isinstance(given, dict) else {}
    kind = given.get("type", "online")
    result: dict[str, Any] = {"accepted_at": int(time.time()), "type": kind}
    if kind == "online":
        online = given.get("online")
        online = online if isinstance(online, dict) else {}
        # Stripe.js sends `infer_from_client`: Stripe takes them from the browser's request.
        result["online"] = {
            "ip_address": online.get("ip_address") or "127.0.0.1",
            "user_agent": online.get("user_agent") or "Stripe.js (inferred by the fake)",
        }
    else:
        result["offline"] = {}
    return result


def usable_mandate(payment_method: Any, intent_id: str | None = None) -> Mandate | None:
    """The PaymentMethod's active multi-use mandate, or the single-use one of this intent (a
    retry of a failed debit)."""
    for mandate_id in reversed(getattr(payment_method, "_compat_mandates", [])):
        mandate = store.get("mandate:" + mandate_id)
        if mandate is None or mandate.status != "active":
            continue
        if mandate.type == "multi_use" or mandate._compat_intent == intent_id:
            return mandate  # type: ignore[no-any-return]
    return None


def deactivate_mandates(payment_method: Any) -> None:
    """Detaching a PaymentMethod cancels its mandates (the SEPA page's "Mandate cancellation")."""
    for mandate_id in getattr(payment_method, "_compat_mandates", []):
        mandate = store.get("mandate:" + mandate_id)
        if mandate is not None:
            mandate._deactivate()


# --- confirming a PaymentIntent -------------------------------------------------------------


def confirm_payment(
    intent: Any, payment_method: DebitPaymentMethod, *, mandate: Any, mandate_data: Any
) -> None:
    """Confirm with a debit: the mandate (given, accepted now, or the saved one), then
    microdeposits for an unverified ACH account, else the debit starts (`processing`)."""
    chosen = _mandate_for_payment(intent, payment_method, mandate, mandate_data)
    _cancel_pending(intent.id)
    intent.payment_method = payment_method.id
    intent.latest_charge = None
    intent.next_action = None
    intent._compat_last_error = None
    intent._compat_mandate = chosen.id
    if not payment_method._compat_verified:
        intent.next_action = _microdeposits_action()
        if payment_method._compat_outcome.microdeposits_fail:
            _schedule(_Pending(intent.id, intent, None, payment_method._compat_outcome))
        return
    _start_debit(intent, payment_method, chosen)


def _mandate_for_payment(
    intent: Any, payment_method: DebitPaymentMethod, mandate_id: Any, mandate_data: Any
) -> Mandate:
    if isinstance(mandate_id, str):
        mandate = store.get("mandate:" + mandate_id)
        if mandate is None or mandate.status != "active":
            raise invalid_request(f"No such mandate: '{mandate_id}'", "mandate", "resource_missing")
        return mandate  # type: ignore[no-any-return]
    if mandate_data is not None:
        multi_use = getattr(intent, "setup_future_usage", None) == "off_session"
        mandate = Mandate(
            payment_method,
            acceptance(mandate_data),
            multi_use=multi_use,
            amount=int(intent.amount),
            currency=str(intent.currency),
        )
        mandate._compat_intent = intent.id
        return mandate
    saved = usable_mandate(payment_method, intent.id)
    if saved is None:  # the rules refuse this first (rules.debit_mandate)
        raise invalid_request(_MANDATE_REQUIRED, "mandate_data", "parameter_missing")
    return saved


_MANDATE_REQUIRED = "A mandate is required to confirm this PaymentIntent: pass `mandate_data`."


def _start_debit(intent: Any, payment_method: DebitPaymentMethod, mandate: Mandate) -> None:
    # With setup_future_usage and a customer, Stripe attaches the PaymentMethod when the
    # payment enters `processing`, whether it later succeeds or fails.
    future = getattr(intent, "setup_future_usage", None)
    if future and intent.customer and payment_method.customer is None:
        payment_method.customer = intent.customer
    charge = Charge(
        amount=intent.amount,
        currency=intent.currency,
        customer=intent.customer,
        source=payment_method.id,
        capture=True,
    )  # status "pending": the intent is `processing`
    charge.payment_intent = intent.id
    charge._compat_mandate = mandate.id
    charge._compat_debit = True
    intent.latest_charge = charge
    schedule_webhook(Event("payment_intent.processing", intent))
    schedule_webhook(Event("charge.pending", charge))
    outcome = payment_method._compat_outcome
    if outcome.settles:
        _schedule(_Pending(intent.id, intent, charge, outcome))


def _microdeposits_action() -> dict[str, Any]:
    return {
        "type": "verify_with_microdeposits",
        "verify_with_microdeposits": {
            "arrival_date": int(time.time()) + MICRODEPOSITS_ARRIVE_AFTER_SECONDS,
            "hosted_verification_url": "https://stripe-compat.local/microdeposits/"
            + _reference(24).lower(),
            "microdeposit_type": "descriptor_code",
        },
    }


# --- SetupIntents ---------------------------------------------------------------------------


def confirm_setup(intent: Any, payment_method: DebitPaymentMethod, mandate_data: Any) -> None:
    """Save a bank account: a multi-use mandate accepted now; `succeeded`, or `requires_action`
    until an ACH account's microdeposits are verified."""
    mandate = Mandate(
        payment_method,
        acceptance(mandate_data),
        multi_use=True,
        amount=0,
        currency="",
    )
    intent.payment_method = payment_method.id
    intent.last_setup_error = None
    intent._compat_mandate = mandate.id
    if not payment_method._compat_verified:
        intent.status = "requires_action"
        intent.next_action = _microdeposits_action()
        return
    _complete_setup(intent, payment_method)


def _complete_setup(intent: Any, payment_method: DebitPaymentMethod) -> None:
    intent.status = "succeeded"
    intent.next_action = None
    intent.mandate = intent._compat_mandate
    if intent.customer and payment_method.customer is None:
        payment_method.customer = intent.customer
    schedule_webhook(Event("setup_intent.succeeded", intent))


# --- microdeposits --------------------------------------------------------------------------


def verify_microdeposits(intent: Any, amounts: Any = None, descriptor_code: Any = None) -> None:
    """POST /v1/{payment,setup}_intents/{id}/verify_microdeposits with Stripe's test values."""
    kind = "PaymentIntent" if intent.object == "payment_intent" else "SetupIntent"
    action = intent.next_action if isinstance(intent.next_action, dict) else {}
    if action.get("type") != "verify_with_microdeposits":
        raise invalid_request(
            f"This {kind} is not awaiting microdeposit verification.",
            None,
            f"{intent.object}_unexpected_state",
        )
    if (amounts is None) == (descriptor_code is None):
        raise invalid_request(
            "Provide either `amounts` or `descriptor_code`.",
            "amounts" if amounts is None else "descriptor_code",
        )
    method = "amounts" if amounts is not None else "descriptor_code"
    given: Any = descriptor_code
    if amounts is not None:
        values = amounts if isinstance(amounts, list) else [amounts]
        try:
            given = tuple(int(value) for value in values)
        except (TypeError, ValueError):
            raise invalid_request("Invalid amounts: must be integers", "amounts") from None
    index = 0 if method == "amounts" else 1
    payment_method = store.get("payment_method:" + str(intent.payment_method))
    if given == ba.MICRODEPOSITS_VERIFY[index]:
        payment_method._compat_verified = True
        intent.next_action = None
        if kind == "SetupIntent":
            _complete_setup(intent, payment_method)
        else:
            mandate = store.get("mandate:" + intent._compat_mandate)
            _start_debit(intent, payment_method, mandate)
        return
    if given == ba.MICRODEPOSITS_TIMEOUT[index]:
        _fail_verification(intent, "payment_method_microdeposit_verification_timeout")
        return
    attempts = getattr(intent, "_compat_attempts", ba.MICRODEPOSIT_ATTEMPTS[method]) - 1
    intent._compat_attempts = attempts
    if given == ba.MICRODEPOSITS_ATTEMPTS_EXCEEDED[index] or attempts <= 0:
        _fail_verification(intent, "payment_method_microdeposit_verification_attempts_exceeded")
        raise invalid_request(
            "You have exceeded the number of allowed verification attempts.",
            None,
            "payment_method_microdeposit_verification_attempts_exceeded",
        )
    noun = "amounts" if method == "amounts" else "descriptor code"
    raise invalid_request(
        f"The {noun} provided do not match the {noun} that were sent to the bank account. You "
        f"have {attempts} verification attempts remaining.",
        method,
        f"payment_method_microdeposit_verification_{method}_mismatch",
    )


_VERIFICATION_MESSAGES = {
    "payment_method_microdeposit_failed": "Microdeposits could not be sent to this account.",
    "payment_method_microdeposit_verification_timeout": "The bank account was not verified "
    "within 10 days.",
    "payment_method_microdeposit_verification_attempts_exceeded": "You have exceeded the number "
    "of allowed verification attempts.",
}


def _fail_verification(intent: Any, code: str) -> None:
    """Verification failed: the intent needs a new payment method, with the code in its last
    error (`payment_intent.payment_failed` / `setup_intent.setup_failed`)."""
    payment_method = store.get("payment_method:" + str(intent.payment_method))
    error = {
        "code": code,
        "message": _VERIFICATION_MESSAGES[code],
        "type": "invalid_request_error",
        "payment_method": payment_method._export() if payment_method is not None else None,
    }
    intent.next_action = None
    intent.payment_method = None
    if intent.object == "setup_intent":
        intent.status = "requires_payment_method"
        intent.last_setup_error = error
        schedule_webhook(Event("setup_intent.setup_failed", intent))
        return
    intent._compat_last_error = error
    schedule_webhook(Event("payment_intent.payment_failed", intent))


# --- "later": settling pending debits -------------------------------------------------------


@dataclass
class _Pending:
    intent_id: str
    intent: Any
    charge: Any  # None: microdeposits that will fail to arrive
    outcome: ba.Outcome
    timer: asyncio.TimerHandle | None = field(default=None, compare=False)


@dataclass
class _Settings:
    settle_after_seconds: float | None = DEFAULT_SETTLE_AFTER_SECONDS
    pending: dict[str, _Pending] = field(default_factory=dict)


_settings = _Settings()


def settle_after_seconds() -> float | None:
    return _settings.settle_after_seconds


def set_settle_after_seconds(seconds: float | None) -> None:
    """None: debits stay pending until `settle()`. Timers already running are re-armed."""
    _settings.settle_after_seconds = seconds
    for pending in _settings.pending.values():
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        _arm(pending)


def pending_intents() -> list[str]:
    return list(_settings.pending)


def forget_pending() -> None:
    """The store was flushed (`DELETE /_config/data`): nothing pending is left to settle."""
    for intent_id in list(_settings.pending):
        _cancel_pending(intent_id)


def _schedule(pending: _Pending) -> None:
    _settings.pending[pending.intent_id] = pending
    _arm(pending)


def _arm(pending: _Pending) -> None:
    seconds = _settings.settle_after_seconds
    if seconds is None:
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("no event loop: debit %s settles only when told", pending.intent_id)
        return
    pending.timer = loop.call_later(seconds, settle, pending.intent_id)


def _cancel_pending(intent_id: str) -> None:
    pending = _settings.pending.pop(intent_id, None)
    if pending is not None and pending.timer is not None:
        pending.timer.cancel()


def settle(intent_id: str) -> bool:
    """The debit's outcome arrives now. False if nothing was pending for this intent."""
    pending = _settings.pending.pop(intent_id, None)
    if pending is None:
        return False
    if pending.timer is not None:
        pending.timer.cancel()
    if pending.intent.status == "canceled":
        return True  # canceled while awaiting microdeposits: nothing arrives any more
    if pending.charge is None:
        _fail_verification(pending.intent, "payment_method_microdeposit_failed")
    elif pending.outcome.failure_code is None:
        _succeed(pending.intent, pending.charge)
    else:
        _fail(pending.intent, pending.charge, pending.outcome)
    return True


def settle_all() -> list[str]:
    return [intent_id for intent_id in list(_settings.pending) if settle(intent_id)]


def _succeed(intent: Any, charge: Any) -> None:
    transaction = BalanceTransaction(
        amount=charge.amount,
        currency=charge.currency,
        description=charge.description,
        exchange_rate=1.0,
        reporting_category="charge",
        source=charge.id,
        type="charge",
    )
    charge.balance_transaction = transaction.id
    charge.status = "succeeded"
    charge._compat_payment_reference = _reference(15)
    intent._on_success()  # payment_intent.succeeded and charge.succeeded (patches, charges)


def _fail(intent: Any, charge: Any, outcome: ba.Outcome) -> None:
    code = outcome.failure_code or "generic_could_not_process"
    charge.status = "failed"
    charge.failure_code = code
    charge.failure_message = ba.FAILURE_MESSAGES.get(code, "The debit failed.")
    # A failed payment returns the intent to requires_payment_method with payment_method null.
    intent.payment_method = None
    schedule_webhook(Event("payment_intent.payment_failed", intent))
    schedule_webhook(Event("charge.failed", charge))
    if outcome.mandate_inactive:
        mandate = store.get("mandate:" + str(getattr(charge, "_compat_mandate", "")))
        if mandate is not None:
            mandate._deactivate(code)


# --- what charges and intents show ----------------------------------------------------------


def charge_details(charge: Any, payment_method: DebitPaymentMethod) -> dict[str, Any]:
    """`payment_method_details` of a debit's charge (the Charge object page)."""
    kind = payment_method.type
    details = dict(getattr(payment_method, kind))
    for name in ("generated_from", "networks", "status_details", "financial_connections_account"):
        details.pop(name, None)
    details["mandate"] = getattr(charge, "_compat_mandate", None)
    details["expected_debit_date"] = None
    if kind == "us_bank_account":
        details["payment_reference"] = getattr(charge, "_compat_payment_reference", None)
    return {"type": kind, kind: details}


def last_payment_error(intent: Any, error: Any) -> Any:
    """A returned debit's `last_payment_error`: the charge's failure code and message, the
    payment method that failed; or a failed microdeposit verification."""
    own = getattr(intent, "_compat_last_error", None)
    charge = intent.latest_charge
    if own is not None and charge is None:
        return dict(own)
    if error and getattr(charge, "_compat_debit", False):
        payment_method = store.get("payment_method:" + str(charge.payment_method))
        error = {
            **error,
            "type": "invalid_request_error",
            "payment_method": payment_method._export() if payment_method is not None else None,
        }
    return error


def list_payment_methods(url: str, customer: Any, kind: str, limit: Any, after: Any) -> Any:
    """GET /v1/payment_methods?customer=&type= for a debit type (localstripe lists cards)."""
    if not (isinstance(customer, str) and customer.startswith("cus_")):
        raise UserError(400, "Bad request")
    store_customer = store.get("customer:" + customer)
    if store_customer is None:
        raise UserError(404, "Not Found")
    listing = List(url, limit=limit, starting_after=after)
    listing._list = [
        value
        for key, value in store.items()
        if key.startswith("payment_method:") and value.customer == customer and value.type == kind
    ]
    return listing


def add_routes(app: Any, api_retrieve: Any, api_extra: Any) -> None:
    """GET /v1/mandates/{id} and the two verify_microdeposits routes, through localstripe's
    handler factories."""
    from localstripe.resources import PaymentIntent, SetupIntent

    def verify(owner: Any) -> Any:
        def handler(id: str, **params: Any) -> Any:
            params.pop("client_secret", None)  # Stripe.js; checked by the auth middleware
            unexpected = set(params) - {"amounts", "descriptor_code"}
            if unexpected:
                raise UserError(400, "Unexpected " + ", ".join(sorted(unexpected)))
            intent = owner._api_retrieve(id)
            verify_microdeposits(intent, params.get("amounts"), params.get("descriptor_code"))
            return intent

        return handler

    app.router.add_get("/v1/mandates/{id}", api_retrieve(Mandate, "/v1/mandates/{id}"))
    for owner, prefix in ((PaymentIntent, "payment_intents"), (SetupIntent, "setup_intents")):
        url = f"/v1/{prefix}/{{id}}/verify_microdeposits"
        app.router.add_post(url, api_extra(verify(owner), url))


_installed = False


def install() -> None:
    """Stripe's debit test PaymentMethod ids (`pm_usBankAccount_success`, ...) wherever an id is
    taken, keeping the lookups already there (localstripe's and `aliases.py`)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = PaymentMethod._try_get_canonical_test_article

    def lookup(cls: type, id: str) -> Any:
        test = ba.TEST_PAYMENT_METHODS.get(id)
        if test is None:
            return previous(id)
        kind, account = test
        # A new PaymentMethod each time, as Stripe creates one per use of a test id.
        return DebitPaymentMethod(
            type=kind, billing_details=ba.TEST_BILLING_DETAILS, **{kind: dict(account)}
        )

    PaymentMethod._try_get_canonical_test_article = classmethod(lookup)
