"""localstripe's resources, patched to follow Stripe's documented semantics.

Each patch wraps localstripe's own method and keeps its machinery (charges, statuses, events
and webhooks): only what Stripe does differently is added. `install()` applies them once.
"""

from __future__ import annotations

from typing import Any, NoReturn

from localstripe.errors import UserError
from localstripe.resources import (
    Charge,
    Event,
    PaymentIntent,
    PaymentMethod,
    Refund,
    SetupIntent,
    Store,
    try_convert_to_bool,
)
from localstripe.webhooks import schedule_webhook

from local.stripe_compat import (
    aliases,
    bank_accounts,
    charges,
    debits,
    event_list,
    refunds,
    rules,
    wallets,
)
from local.stripe_compat.cards import (
    AUTHENTICATE_UNLESS_SET_UP,
    AUTHENTICATION_REQUIRED,
    Decline,
    card_error,
    card_number,
    decline_for,
    invalid_request,
    payment_method_params,
)

# PaymentIntent fields localstripe does not know. Stripe returns them on every intent (null
# when unset) and stores what is sent.
INTENT_FIELDS = ("description", "receipt_email", "statement_descriptor_suffix")
SETUP_FUTURE_USAGE = ("on_session", "off_session")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
# Sent by Stripe.js (or accepted by Stripe) on confirm; nothing here depends on them.
CONFIRM_PASSTHROUGH = (
    "client_secret",
    "use_stripe_sdk",
    "return_url",
    "expected_payment_method_type",
    "payment_method_options",
    "error_on_requires_action",
)

_installed = False
_original: dict[str, Any] = {}


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    aliases.install()  # Stripe's pm_card_* test ids
    event_list.install()  # GET /v1/events newest first, with ending_before and types
    refunds.install()  # refund.* and charge.refunded events; 4000000000005126 refunds fail
    charges.install()  # payment_method_details on charges; charge.succeeded events
    wallets.install()  # card.wallet on card PaymentMethods (Apple Pay, Google Pay tokens)
    debits.install()  # Stripe's bank-debit test PaymentMethod ids (pm_usBankAccount_success...)

    # State stays in memory: localstripe pickles its store to /tmp/localstripe.pickle on every
    # write and reloads it at start. Class-level, because Store.__setitem__ calls it too.
    Store.dump_to_disk = _do_nothing
    Store.try_load_from_disk = _do_nothing

    _original["pi_create"] = PaymentIntent._api_create.__func__
    _original["pi_on_success"] = PaymentIntent._on_success
    _original["pi_report_failure"] = PaymentIntent._report_failure
    _original["pi_last_payment_error"] = PaymentIntent.last_payment_error.fget
    _original["pi_list"] = PaymentIntent._api_list_all.__func__
    _original["pi_update"] = PaymentIntent._api_update.__func__
    _original["si_confirm"] = SetupIntent._api_confirm.__func__
    _original["si_attach_pm"] = SetupIntent._attach_pm
    _original["pm_attach"] = PaymentMethod._api_attach.__func__
    _original["pm_charging_is_declined"] = PaymentMethod._charging_is_declined
    _original["pm_list"] = PaymentMethod._api_list_all.__func__

    PaymentIntent._api_create = classmethod(_intent_create)
    PaymentIntent._api_confirm = classmethod(_intent_confirm)
    PaymentIntent._on_success = _intent_on_success
    PaymentIntent._report_failure = _intent_report_failure
    PaymentIntent.last_payment_error = property(_intent_last_payment_error)
    PaymentIntent._api_list_all = classmethod(_intent_list)
    PaymentIntent._api_update = classmethod(_intent_update)
    # Fields of every Stripe PaymentIntent that localstripe leaves out; settlement reads them.
    PaymentIntent.amount_received = property(_intent_amount_received)
    PaymentIntent.amount_capturable = property(_intent_amount_capturable)
    SetupIntent._api_confirm = classmethod(_setup_confirm)
    SetupIntent._attach_pm = _setup_attach_pm
    PaymentMethod._api_create = classmethod(_payment_method_create)
    # For the rules (rules.py): a SetupIntent's automatic payment methods, a detached card.
    _original["si_create"] = SetupIntent._api_create.__func__
    _original["pm_detach"] = PaymentMethod._api_detach.__func__
    SetupIntent._api_create = classmethod(_setup_create)
    PaymentMethod._api_detach = classmethod(_payment_method_detach)
    PaymentMethod._api_attach = classmethod(_payment_method_attach)
    PaymentMethod._charging_is_declined = _payment_method_charging_is_declined
    PaymentMethod._api_list_all = classmethod(_payment_method_list)
    Charge._set_auth_failure = _charge_set_auth_failure
    Charge._raise_failure = _charge_raise_failure
    _original["refund_init"] = Refund.__init__
    Refund.__init__ = _refund_init


REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def _refund_init(self: Any, reason: Any = None, **params: Any) -> None:
    """Stripe's refunds take a `reason` (one of three); localstripe rejects the parameter."""
    if reason is not None and reason not in REFUND_REASONS:
        raise invalid_request(
            "Invalid reason: must be one of " + ", ".join(REFUND_REASONS), param="reason"
        )
    _original["refund_init"](self, **params)
    self.reason = reason


def _do_nothing(*_args: Any, **_kwargs: Any) -> None:
    return None


# --- PaymentIntent -------------------------------------------------------------------------


def _intent_create(
    cls: type,
    confirm: Any = None,
    off_session: Any = None,
    payment_method_data: Any = None,
    setup_future_usage: Any = None,
    automatic_payment_methods: Any = None,
    return_url: Any = None,  # accepted as Stripe does; nothing here redirects
    allowed_payment_method_types: Any = None,
    mandate: Any = None,
    mandate_data: Any = None,
    **data: Any,
) -> Any:
    """POST /v1/payment_intents with Stripe's optional parameters: `description`,
    `receipt_email`, `statement_descriptor_suffix`, `setup_future_usage` stored and returned;
    `allowed_payment_method_types` instead of automatic payment methods; `confirm=true` (with
    `off_session`, `payment_method_data`, `mandate_data` or `mandate`) confirms at once."""
    confirm = _flag(confirm, "confirm")
    off_session = _flag(off_session, "off_session")
    if off_session and not confirm:
        raise invalid_request("off_session can only be set when confirm=true.", "off_session")
    fields = _intent_fields(data, setup_future_usage)
    if automatic_payment_methods is not None and not isinstance(automatic_payment_methods, dict):
        raise invalid_request("Invalid automatic_payment_methods", "automatic_payment_methods")
    payment_method = _payment_method_to_use(data.get("payment_method"), payment_method_data)
    if payment_method is not None:
        # Stripe stores the resolved id, also for test aliases such as pm_card_visa.
        data["payment_method"] = payment_method.id

    intent = _original["pi_create"](cls, **data)
    intent.payment_method_types = data.get("payment_method_types") or ["card"]
    # Stripe's default since 2023-08-16 (automatic payment methods, redirects allowed): the
    # return_url rule (rules.return_url) reads it when the intent is confirmed.
    intent.automatic_payment_methods = rules.automatic_payment_methods(automatic_payment_methods)
    _set_allowed_types(intent, allowed_payment_method_types)
    for name in (*INTENT_FIELDS, "setup_future_usage"):
        setattr(intent, name, None)
    _set_fields(intent, fields)

    if confirm:
        if payment_method is None:
            raise _missing_payment_method()
        _confirm(
            intent,
            payment_method,
            off_session=off_session,
            mandate=mandate,
            mandate_data=mandate_data,
        )
    return intent


def _set_allowed_types(intent: Any, allowed: Any, *, initial: bool = True) -> None:
    """`allowed_payment_method_types` (exclusive of automatic payment methods, which are then
    null): `payment_method_types` is the compatible subset (rules refuse an empty one)."""
    if allowed is None:
        if initial:
            intent.allowed_payment_method_types = None
        return
    allowed = list(allowed) if isinstance(allowed, list) else [allowed]
    currency = getattr(intent, "currency", None)
    currency = str(currency).lower() if currency is not None else None
    intent.allowed_payment_method_types = allowed
    intent.payment_method_types = bank_accounts.compatible_types(allowed, currency)
    intent.automatic_payment_methods = None


def _intent_confirm(
    cls: type,
    id: str,  # localstripe passes the path parameter as `id`
    payment_method: Any = None,
    payment_method_data: Any = None,
    off_session: Any = None,
    setup_future_usage: Any = None,
    receipt_email: Any = None,
    mandate: Any = None,
    mandate_data: Any = None,
    allowed_payment_method_types: Any = None,
    **params: Any,
) -> Any:
    """POST /v1/payment_intents/{id}/confirm, also with a payment method (`payment_method` or
    `payment_method_data`, as Stripe.js sends it), `off_session`, `setup_future_usage` and, for
    bank debits, `mandate_data` or `mandate`. localstripe answers 500 "Not implemented" to
    those."""
    _reject_unexpected(params, allowed=CONFIRM_PASSTHROUGH)
    intent = cls._api_retrieve(id)
    if intent.status not in CONFIRMABLE:
        raise invalid_request(
            f"You cannot confirm this PaymentIntent because it has a status of "
            f"{intent.status}. Only a PaymentIntent with one of the following statuses may be "
            f"confirmed: {', '.join(CONFIRMABLE)}.",
            code="payment_intent_unexpected_state",
        )
    off_session = _flag(off_session, "off_session")
    fields = _intent_fields({"receipt_email": receipt_email}, setup_future_usage)
    chosen = _payment_method_to_use(payment_method, payment_method_data)
    if chosen is None:
        if not intent.payment_method:
            raise _missing_payment_method()
        chosen = PaymentMethod._api_retrieve(intent.payment_method)
    _set_fields(intent, fields)
    _set_allowed_types(intent, allowed_payment_method_types, initial=False)
    _confirm(intent, chosen, off_session=off_session, mandate=mandate, mandate_data=mandate_data)
    return intent


def _confirm(
    intent: Any,
    payment_method: Any,
    *,
    off_session: bool,
    mandate: Any = None,
    mandate_data: Any = None,
) -> None:
    """One confirmation attempt, through localstripe's own `_confirm` (3DS -> requires_action,
    otherwise a charge that succeeds or declines and emits payment_intent.* events); a bank
    debit goes `processing` and settles later (`debits.py`)."""
    if payment_method.customer and intent.customer and payment_method.customer != intent.customer:
        raise invalid_request(
            "The provided PaymentMethod is attached to another customer.", "payment_method"
        )
    if debits.is_debit(payment_method):
        debits.confirm_payment(intent, payment_method, mandate=mandate, mandate_data=mandate_data)
        return
    intent.payment_method = payment_method.id
    intent.latest_charge = None  # a new attempt; an earlier failed charge stays in the store
    intent.next_action = None
    if off_session and payment_method._requires_authentication():
        # Nobody can authenticate off-session: Stripe declines, unless the card was set up
        # for off-session use and its issuer accepts that (4000002500003155).
        set_up = getattr(payment_method, "_compat_set_up", False)
        if not (set_up and card_number(payment_method) == AUTHENTICATE_UNLESS_SET_UP):
            _decline(intent, payment_method, AUTHENTICATION_REQUIRED)
        intent._authentication_failed = False
        intent._create_charge(on_failure_now=intent._report_failure)
        return
    intent._confirm(on_failure_now=intent._report_failure)


def _decline(intent: Any, payment_method: Any, decline: Decline) -> NoReturn:
    """A failed charge with the given decline, reported like localstripe reports its own
    (payment_intent.payment_failed event, 402). Stripe cannot ask an off-session customer to
    authenticate, so the issuer's soft decline fails the payment."""
    charge = Charge(
        amount=intent.amount,
        currency=intent.currency,
        customer=intent.customer,
        source=payment_method.id,
        capture=intent.capture_method != "manual",
    )
    charge.payment_intent = intent.id
    charge._authorized = False
    charge._compat_decline = decline
    intent.latest_charge = charge
    charge._initialize_charge(intent._on_success, intent._report_failure, None)
    raise AssertionError("a declined card charge reports its failure by raising")


def _intent_on_success(self: Any) -> None:
    # setup_future_usage: once the payment succeeds (after any 3DS), Stripe attaches the
    # payment method to the intent's customer; off_session usage counts as set up.
    if getattr(self, "setup_future_usage", None) and self.customer and self.payment_method:
        payment_method = PaymentMethod._api_retrieve(self.payment_method)
        if payment_method.customer is None:
            payment_method.customer = self.customer
        if self.setup_future_usage == "off_session":
            payment_method._compat_set_up = True
    _original["pi_on_success"](self)
    if self.latest_charge is not None:
        charges.succeeded(self.latest_charge)


def _intent_report_failure(self: Any) -> None:
    # A failed payment returns the intent to requires_payment_method with payment_method null
    # (the failed one is in last_payment_error), before the event is built.
    self.payment_method = None
    _original["pi_report_failure"](self)


def _intent_last_payment_error(self: Any) -> Any:
    error = debits.last_payment_error(self, _original["pi_last_payment_error"](self))
    charge = self.latest_charge
    decline = getattr(charge, "_compat_decline", None)
    if error and decline is not None and not self._authentication_failed:
        error.update(
            type="card_error",
            code=decline.code,
            decline_code=decline.decline_code,
            message=decline.message,
            payment_method=PaymentMethod._api_retrieve(charge.payment_method)._export(),
        )
    return error


def _intent_update(
    cls: type, id: str, allowed_payment_method_types: Any = None, **data: Any
) -> Any:
    """POST /v1/payment_intents/{id} with `allowed_payment_method_types`: the compatible
    types are worked out again (also when the currency changes)."""
    intent = _original["pi_update"](cls, id, **data) if data else cls._api_retrieve(id)
    if allowed_payment_method_types is None:
        allowed_payment_method_types = getattr(intent, "allowed_payment_method_types", None)
    _set_allowed_types(intent, allowed_payment_method_types, initial=False)
    return intent


def _intent_list(cls: type, url: str, customer: Any = None, **params: Any) -> Any:
    """GET /v1/payment_intents with Stripe's `customer` filter, newest first as Stripe lists
    (a reconciler finds a customer's intents this way)."""
    listing = _original["pi_list"](cls, url, **params)
    intents = list(reversed(listing._list))
    if customer is not None:
        intents = [intent for intent in intents if intent.customer == customer]
    listing._list = intents
    return listing


def _intent_amount_received(self: Any) -> int:
    # What was captured (a partial capture still counts the full amount here).
    return int(self.amount) if self.status == "succeeded" else 0


def _intent_amount_capturable(self: Any) -> int:
    return int(self.amount) if self.status == "requires_capture" else 0


def _intent_fields(data: dict[str, Any], setup_future_usage: Any) -> dict[str, Any]:
    """Validate and take Stripe's optional PaymentIntent fields out of `data`."""
    fields: dict[str, Any] = {}
    for name in INTENT_FIELDS:
        value = data.pop(name, None)
        if value is None:
            continue
        if not isinstance(value, str):
            raise invalid_request(f"Invalid {name}: must be a string", name)
        fields[name] = value or None  # "" unsets, as in Stripe
    suffix = fields.get("statement_descriptor_suffix")
    if suffix is not None and len(suffix) > 22:
        raise invalid_request(
            "The statement descriptor suffix must be at most 22 characters.",
            "statement_descriptor_suffix",
        )
    if setup_future_usage is not None:
        if setup_future_usage not in (*SETUP_FUTURE_USAGE, ""):
            raise invalid_request(
                "Invalid setup_future_usage: must be one of on_session or off_session",
                "setup_future_usage",
            )
        fields["setup_future_usage"] = setup_future_usage or None
    return fields


def _set_fields(intent: Any, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        setattr(intent, name, value)


def _payment_method_to_use(payment_method: Any, payment_method_data: Any) -> Any:
    if payment_method is not None and payment_method_data is not None:
        raise invalid_request(
            "You cannot provide both payment_method and payment_method_data.", "payment_method"
        )
    if payment_method_data is not None:
        return debits.new_payment_method(payment_method_params(payment_method_data))
    if payment_method is not None:
        if not isinstance(payment_method, str):
            raise invalid_request("Invalid payment_method: must be a string", "payment_method")
        return PaymentMethod._api_retrieve(payment_method)
    return None


def _missing_payment_method() -> UserError:
    return invalid_request(
        "You cannot confirm this PaymentIntent because it's missing a payment method. "
        "Update the PaymentIntent with a payment method and then confirm it again.",
        "payment_method",
        "payment_intent_unexpected_state",
    )


# --- SetupIntent ---------------------------------------------------------------------------


def _setup_confirm(
    cls: type,
    id: str,  # localstripe passes the path parameter as `id`
    payment_method_data: Any = None,
    **params: Any,
) -> Any:
    """POST /v1/setup_intents/{id}/confirm as Stripe.js's confirmCardSetup sends it. On success
    Stripe attaches the payment method to the intent's customer. A bank account is saved with
    the mandate its holder accepts (`mandate_data`, `debits.confirm_setup`)."""
    mandate_data = params.pop("mandate_data", None)
    for name in ("return_url", "expected_payment_method_type"):
        params.pop(name, None)
    if payment_method_data is not None:
        payment_method_data = payment_method_params(payment_method_data)
    intent = cls._api_retrieve(id)
    debit = _setup_debit(payment_method_data, params.get("payment_method"))
    if debit is not None:
        if intent.status not in CONFIRMABLE:
            raise invalid_request(
                f"You cannot confirm this SetupIntent because it has a status of {intent.status}.",
                code="setup_intent_unexpected_state",
            )
        debits.confirm_setup(intent, debit, mandate_data)
        return intent
    before = intent.status
    _original["si_confirm"](cls, id, payment_method_data=payment_method_data, **params)
    if intent.status == "succeeded" and before != "succeeded":
        payment_method = PaymentMethod._api_retrieve(intent.payment_method)
        if intent.customer and payment_method.customer is None:
            payment_method.customer = intent.customer
        if intent.usage == "off_session":
            payment_method._compat_set_up = True
        intent.last_setup_error = None
        schedule_webhook(Event("setup_intent.succeeded", intent))
    return intent


def _setup_debit(payment_method_data: Any, payment_method: Any) -> Any:
    """The bank account a SetupIntent confirm saves, or None (cards are localstripe's)."""
    if isinstance(payment_method_data, dict):
        if payment_method_data.get("type") in bank_accounts.DEBIT_TYPES:
            return debits.new_payment_method(payment_method_data)
        return None
    if debits.payment_method_type(payment_method) in bank_accounts.DEBIT_TYPES:
        return PaymentMethod._api_retrieve(payment_method)
    return None


def _setup_create(
    cls: type,
    automatic_payment_methods: Any = None,
    allowed_payment_method_types: Any = None,
    **data: Any,
) -> Any:
    """POST /v1/setup_intents with `automatic_payment_methods` or
    `allowed_payment_method_types`, stored as Stripe does."""
    intent = _original["si_create"](cls, **data)
    intent.automatic_payment_methods = rules.automatic_payment_methods(automatic_payment_methods)
    intent.mandate = None  # set when a bank account is saved with its mandate
    _set_allowed_types(intent, allowed_payment_method_types)
    return intent


def _setup_attach_pm(self: Any, payment_method: Any) -> None:
    try:
        _original["si_attach_pm"](self, payment_method)
    except UserError as exc:
        if exc.code != 402:
            raise
        # localstripe cancels the intent; Stripe keeps it usable for another card:
        # requires_payment_method, with the decline in last_setup_error.
        self.status = "requires_payment_method"
        self.payment_method = None
        error = card_error(decline_for(payment_method), payment_method=payment_method)
        self.last_setup_error = dict(error.body["error"])
        error.body["error"]["setup_intent"] = self._export()
        schedule_webhook(Event("setup_intent.setup_failed", self))
        raise error from None


# --- PaymentMethod and Charge --------------------------------------------------------------


def _payment_method_create(cls: type, **data: Any) -> Any:
    if wallets.names_a_token(data.get("card")):
        # `card[token]`: a token in place of card details (a wallet's, or POST /v1/tokens').
        return wallets.payment_method_from_token(data)
    # Stripe.js's createPaymentMethod sends telemetry fields and may omit the CVC.
    return debits.new_payment_method(payment_method_params(data))


def _payment_method_list(
    cls: type,
    url: str,
    customer: Any = None,
    type: Any = None,  # localstripe's keyword, as Stripe's parameter
    limit: Any = None,
    starting_after: Any = None,
) -> Any:
    # localstripe lists cards only; Stripe lists a customer's PaymentMethods of any type.
    if type in bank_accounts.DEBIT_TYPES:
        return debits.list_payment_methods(url, customer, type, limit, starting_after)
    return _original["pm_list"](
        cls, url, customer=customer, type=type, limit=limit, starting_after=starting_after
    )


def _payment_method_attach(cls: type, id: str, **params: Any) -> Any:
    try:
        return _original["pm_attach"](cls, id, **params)
    except UserError as exc:
        if exc.code != 402:
            raise
        payment_method = cls._api_retrieve(id)
        raise card_error(decline_for(payment_method), payment_method=payment_method) from None


def _payment_method_detach(cls: type, id: str, **params: Any) -> Any:
    # Stripe: a detached PaymentMethod may not be used again (rules.payment_method_owner),
    # and detaching a bank account cancels its mandates.
    payment_method = _original["pm_detach"](cls, id, **params)
    payment_method._compat_detached = True
    debits.deactivate_mandates(payment_method)
    return payment_method


def _payment_method_charging_is_declined(self: Any) -> bool:
    # Stripe declines charges on the cards localstripe only declines when attaching
    # (4000000000000002 "always declined", insufficient funds, lost card...).
    return bool(_original["pm_charging_is_declined"](self) or self._attaching_is_declined())


def _charge_set_auth_failure(self: Any) -> None:
    decline = getattr(self, "_compat_decline", None)
    if decline is None:
        decline = decline_for(PaymentMethod._api_retrieve(self.payment_method))
        self._compat_decline = decline
    self.status = "failed"
    self.failure_code = decline.code
    self.failure_message = decline.message


def _charge_raise_failure(self: Any) -> None:
    intent = PaymentIntent._api_retrieve(self.payment_intent) if self.payment_intent else None
    raise card_error(
        self._compat_decline,
        charge=self.id,
        payment_intent=intent,
        payment_method=PaymentMethod._api_retrieve(self.payment_method),
    )


# --- helpers -------------------------------------------------------------------------------


def _flag(value: Any, name: str) -> bool:
    value = try_convert_to_bool(value)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid_request(f"Invalid boolean: {value}", name)
    return value


def _reject_unexpected(params: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unexpected = [name for name in params if name not in allowed]
    if unexpected:
        # localstripe's wording for parameters it does not know.
        raise UserError(400, "Unexpected " + ", ".join(unexpected))
