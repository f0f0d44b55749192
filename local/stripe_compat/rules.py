"""Stripe's refusals, enforced by the fake: what real Stripe answers 4xx, the fake answers too.

Each rule names where Stripe documents it; docs/stripe-fidelity.md lists them all. The fake
models the API version stripe-python pins (`stripe.api_version`), which is the version the
adapter sends.

- Known parameters are read at run time from stripe-python's own `stripe.params` TypedDicts
  (`ROUTES`), recursing into nested TypedDicts, so the fake and the mypy-checked adapter share
  one source of truth. A parameter outside them is `parameter_unknown`, as Stripe answers.
- Stripe.js calls a few routes with the publishable key and adds `key`, `client_secret`, the
  card it collected and telemetry: allowed on those routes only (`PUBLISHABLE_ROUTES`).
- The other rules read the parameters and, where Stripe's answer depends on an object, the
  object in localstripe's store (never creating one: test aliases such as `pm_card_visa` are
  left to the handler).

Routes outside `ROUTES` (localstripe's `/_config/`, `_authenticate`, the `/_compat/` controls)
are not Stripe routes and are not checked.
"""

from __future__ import annotations

import contextlib
import json
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin
from urllib.parse import parse_qsl

import stripe
import stripe.params as sp
from aiohttp import web
from clinic_payments.domain.money import (
    MAX_AMOUNT,
    MINIMUM_CHARGE,
    STRIPE_CURRENCIES,
    format_amount,
)
from localstripe.resources import Charge, PaymentIntent, Refund, SetupIntent, store
from localstripe.server import get_api_key
from stripe._request_options import RequestOptions
from stripe._stripe_context import StripeContext
from typing_extensions import is_typeddict

from local.stripe_compat import bank_accounts, debits
from local.stripe_compat.cards import STRIPE_JS_TELEMETRY
from local.stripe_compat.idempotency import stripe_error

API_VERSION = stripe.api_version
DOC_URL = "https://stripe.com/docs/error-codes/"

# --- the refusal -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal(Exception):
    """Stripe's error object: `{"error": {"type", "code", "param", "message", "doc_url"}}`."""

    message: str
    param: str | None = None
    code: str | None = None
    status: int = 400
    error_type: str = "invalid_request_error"

    def response(self) -> web.Response:
        fields = {"param": self.param} if self.param else {}
        if self.code:
            fields |= {"code": self.code, "doc_url": DOC_URL + self.code.replace("_", "-")}
        return stripe_error(self.status, self.error_type, self.message, **fields)


# --- known parameters, from stripe-python's TypedDicts ---------------------------------------

# Annotations in stripe.params name these without importing them at run time.
_HINT_NAMES = {**vars(typing), "StripeContext": StripeContext}
# Client options of the SDK (api_key, idempotency_key...): never sent as parameters.
_SDK_OPTIONS = frozenset(typing.get_type_hints(RequestOptions, localns=_HINT_NAMES))

_PI_VERIFY = "/v1/payment_intents/{id}/verify_microdeposits"
_SI_VERIFY = "/v1/setup_intents/{id}/verify_microdeposits"
ROUTES: dict[tuple[str, str], type] = {
    ("POST", "/v1/customers"): sp.CustomerCreateParams,
    ("GET", "/v1/customers"): sp.CustomerListParams,
    ("GET", "/v1/customers/{id}"): sp.CustomerRetrieveParams,
    ("POST", "/v1/customers/{id}"): sp.CustomerUpdateParams,
    ("DELETE", "/v1/customers/{id}"): sp.CustomerDeleteParams,
    ("POST", "/v1/payment_intents"): sp.PaymentIntentCreateParams,
    ("GET", "/v1/payment_intents"): sp.PaymentIntentListParams,
    ("GET", "/v1/payment_intents/{id}"): sp.PaymentIntentRetrieveParams,
    ("POST", "/v1/payment_intents/{id}"): sp.PaymentIntentUpdateParams,
    ("POST", "/v1/payment_intents/{id}/confirm"): sp.PaymentIntentConfirmParams,
    ("POST", "/v1/payment_intents/{id}/cancel"): sp.PaymentIntentCancelParams,
    ("POST", "/v1/payment_intents/{id}/capture"): sp.PaymentIntentCaptureParams,
    ("POST", "/v1/setup_intents"): sp.SetupIntentCreateParams,
    ("GET", "/v1/setup_intents"): sp.SetupIntentListParams,
    ("GET", "/v1/setup_intents/{id}"): sp.SetupIntentRetrieveParams,
    ("POST", "/v1/setup_intents/{id}"): sp.SetupIntentUpdateParams,
    ("POST", "/v1/setup_intents/{id}/confirm"): sp.SetupIntentConfirmParams,
    ("POST", "/v1/setup_intents/{id}/cancel"): sp.SetupIntentCancelParams,
    ("POST", "/v1/payment_methods"): sp.PaymentMethodCreateParams,
    ("GET", "/v1/payment_methods"): sp.PaymentMethodListParams,
    ("GET", "/v1/payment_methods/{id}"): sp.PaymentMethodRetrieveParams,
    ("POST", "/v1/payment_methods/{id}"): sp.PaymentMethodUpdateParams,
    ("POST", "/v1/payment_methods/{id}/attach"): sp.PaymentMethodAttachParams,
    ("POST", "/v1/payment_methods/{id}/detach"): sp.PaymentMethodDetachParams,
    ("POST", "/v1/refunds"): sp.RefundCreateParams,
    ("GET", "/v1/refunds"): sp.RefundListParams,
    ("GET", "/v1/refunds/{id}"): sp.RefundRetrieveParams,
    ("GET", "/v1/charges"): sp.ChargeListParams,
    ("GET", "/v1/charges/{id}"): sp.ChargeRetrieveParams,
    ("GET", "/v1/events"): sp.EventListParams,
    ("GET", "/v1/events/{id}"): sp.EventRetrieveParams,
    ("GET", "/v1/mandates/{id}"): sp.MandateRetrieveParams,
    ("POST", _PI_VERIFY): sp.PaymentIntentVerifyMicrodepositsParams,
    ("POST", _SI_VERIFY): sp.SetupIntentVerifyMicrodepositsParams,
}

# What Stripe.js adds where it calls with the publishable key: the key, the object's client
# secret, the card the Element collected (`payment_method_data[card]`, which the server-side
# TypedDicts do not have: raw card data is a Stripe.js-only input) and its telemetry.
_CARD_FIELDS: Mapping[str, Any] = {name: str for name in ("number", "exp_month", "exp_year", "cvc")}
_TELEMETRY: Mapping[str, Any] = {name: Any for name in STRIPE_JS_TELEMETRY}
_STRIPE_JS_PM_DATA: Mapping[str, Any] = {**_TELEMETRY, "card": _CARD_FIELDS}
_STRIPE_JS_TOP: Mapping[str, Any] = {"key": str, "client_secret": str, **_TELEMETRY}
# Stripe.js cannot know the customer's IP address and user agent: it asks Stripe to take them
# from the browser's request (Stripe's client SDKs send the same, e.g. stripe-android's
# MandateDataParams).
_STRIPE_JS_MANDATE: Mapping[str, Any] = {
    "customer_acceptance": {"online": {"infer_from_client": str}}
}
PUBLISHABLE_ROUTES: dict[tuple[str, str], Mapping[str, Any]] = {
    ("POST", "/v1/payment_intents/{id}/confirm"): {
        **_STRIPE_JS_TOP,
        "payment_method_data": _STRIPE_JS_PM_DATA,
        "expected_payment_method_type": str,
        "mandate_data": _STRIPE_JS_MANDATE,
    },
    ("GET", "/v1/payment_intents/{id}"): _STRIPE_JS_TOP,
    ("POST", "/v1/setup_intents/{id}/confirm"): {
        **_STRIPE_JS_TOP,
        "payment_method_data": _STRIPE_JS_PM_DATA,
        "expected_payment_method_type": str,
        "mandate_data": _STRIPE_JS_MANDATE,
    },
    ("GET", "/v1/setup_intents/{id}"): _STRIPE_JS_TOP,
    ("POST", "/v1/payment_methods"): _STRIPE_JS_TOP,
    # Stripe.js verifyMicrodepositsForPayment / verifyMicrodepositsForSetup.
    ("POST", _PI_VERIFY): _STRIPE_JS_TOP,
    ("POST", _SI_VERIFY): _STRIPE_JS_TOP,
}

_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(typed: type) -> dict[str, Any]:
    if typed not in _hints_cache:
        _hints_cache[typed] = typing.get_type_hints(typed, localns=_HINT_NAMES)
    return _hints_cache[typed]


def _alternatives(annotation: Any) -> Iterator[Any]:
    """The types a value may have: `Union[Literal[""], X]` (Stripe's "empty unsets") gives X."""
    # `X | int` (types.UnionType) as well as `Union[...]`: EventListParams.created is one.
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            yield from _alternatives(arg)
    else:
        yield annotation


def _child(annotation: Any, segment: str) -> tuple[bool, Any]:
    """Whether `segment` is known under `annotation`, and the child's annotation."""
    for option in _alternatives(annotation):
        origin = get_origin(option)
        if option is Any or getattr(option, "__name__", "") == "UntypedStripeObject":
            return True, Any
        if isinstance(option, Mapping):  # Stripe.js extras, written as plain mappings
            if segment in option:
                return True, option[segment]
        elif is_typeddict(option):
            hints = _hints(option)
            if segment in hints:
                return True, hints[segment]
        elif origin in (dict, Mapping) or getattr(origin, "__name__", "") == "UntypedStripeObject":
            args = get_args(option)
            return True, args[1] if len(args) == 2 else Any
        elif origin is list and (segment == "" or segment.isdigit()):
            return True, get_args(option)[0]
    return False, None


def _merge(typed: type, extras: Mapping[str, Any] | None) -> Any:
    """The route's TypedDict, plus the Stripe.js extras when called with a publishable key."""
    if not extras:
        return typed
    return _Union(typed, extras)


@dataclass(frozen=True)
class _Union:
    """Two sources of known names for one node (TypedDict + Stripe.js extras)."""

    first: Any
    second: Any


def _known(annotation: Any, path: list[str]) -> str | None:
    """None when every segment of `path` is known; else the first unknown, as Stripe names it
    (`card[foo]`)."""
    for depth, segment in enumerate(path):
        if isinstance(annotation, _Union):
            found, child = _child(annotation.first, segment)
            found_extra, child_extra = _child(annotation.second, segment)
            if found and found_extra:
                child = _Union(child, child_extra)
            elif found_extra:
                found, child = True, child_extra
        else:
            found, child = _child(annotation, segment)
        if depth == 0 and segment in _SDK_OPTIONS:
            found = False
        if not found:
            return _name(path[: depth + 1])
        annotation = child
    return None


def _name(path: list[str]) -> str:
    return path[0] + "".join(f"[{segment}]" for segment in path[1:])


_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


def _split(key: str) -> list[str]:
    """`payment_method_data[card][number]` -> [payment_method_data, card, number]. A metadata
    key is everything between `metadata[` and the last `]` (it may hold brackets)."""
    head, bracket, rest = key.partition("[")
    if not bracket:
        return [key]
    if head == "metadata" and rest.endswith("]"):
        return [head, rest[:-1]]
    return [head, *_SEGMENT.findall("[" + rest)]


def _json_paths(value: Any, prefix: list[str]) -> Iterator[list[str]]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _json_paths(child, [*prefix, str(key)])
    elif isinstance(value, list) and value:
        for index, child in enumerate(value):
            yield from _json_paths(child, [*prefix, str(index)])
    elif prefix:
        yield prefix


@dataclass
class Call:
    """One request as the rules see it: the route, its parameters and who calls."""

    method: str
    route: str
    object_id: str | None
    pairs: list[tuple[str, str]]
    params: dict[str, Any]
    publishable: bool
    paths: list[list[str]] = field(default_factory=list)

    @property
    def metadata(self) -> dict[str, str]:
        return {path[1]: value for path, (_, value) in self._metadata_pairs()}

    def _metadata_pairs(self) -> Iterator[tuple[list[str], tuple[str, str]]]:
        for key, value in self.pairs:
            path = _split(key)
            if path[0] == "metadata" and len(path) == 2:
                yield path, (key, value)


async def read_call(request: web.Request) -> Call | None:
    """The request as a `Call`, or None for routes that are not Stripe's."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    if (request.method, route) not in ROUTES:
        return None
    pairs: list[tuple[str, str]] = list(request.query.items())
    paths = [_split(key) for key, _ in pairs]
    params: dict[str, Any] = {}
    if request.method == "POST":
        body = await request.read()
        if request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                data = json.loads(body or b"{}")
                if isinstance(data, dict):
                    params = data
                    paths += list(_json_paths(data, []))
                    pairs += [
                        (f"metadata[{k}]", str(v)) for k, v in (data.get("metadata") or {}).items()
                    ]
        else:
            form = parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
            pairs += form
            paths += [_split(key) for key, _ in form]
    if not params:
        params = _unflatten(pairs)
    key = params.get("key")
    publishable = get_api_key(request) is None and isinstance(key, str) and key.startswith("pk_")
    return Call(
        method=request.method,
        route=route,
        object_id=request.match_info.get("id"),
        pairs=pairs,
        params=params,
        publishable=publishable,
        paths=paths,
    )


def _unflatten(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs as nested dicts (lists stay dicts keyed by index: the rules need no more)."""
    tree: dict[str, Any] = {}
    for key, value in pairs:
        path = _split(key)
        node = tree
        for segment in path[:-1]:
            child = node.get(segment)
            if not isinstance(child, dict):
                child = node[segment] = {}
            node = child
        node[path[-1]] = value
    return tree


# --- the rules -------------------------------------------------------------------------------

Rule = Callable[[Call], None]


def unknown_parameters(call: Call) -> None:
    """https://docs.stripe.com/error-codes/parameter-unknown"""
    typed = ROUTES[(call.method, call.route)]
    extras = PUBLISHABLE_ROUTES.get((call.method, call.route)) if call.publishable else None
    annotation = _merge(typed, extras)
    for path in call.paths:
        if path[0] == "expand":  # known everywhere
            continue
        unknown = _known(annotation, path)
        if unknown is not None:
            raise Refusal(f"Received unknown parameter: {unknown}", unknown, "parameter_unknown")


def no_payment_method_types(call: Call) -> None:
    """Since 2026-09-30.endive `payment_method_types` is read-only on PaymentIntents and
    SetupIntents (https://docs.stripe.com/changelog/endive/2026-09-30/
    removes-the-payment-method-types-parameter-from-payment-intents-and-setup-intents)."""
    if "payment_method_types" in call.params and call.route.startswith(
        ("/v1/payment_intents", "/v1/setup_intents")
    ):
        raise Refusal(
            "`payment_method_types` is no longer supported on this API version "
            f"({API_VERSION}). Use `automatic_payment_methods`, `allowed_payment_method_types` "
            "or `excluded_payment_method_types` instead.",
            "payment_method_types",
            "payment_method_types_no_longer_supported",
        )


MAX_METADATA_KEYS = 50
MAX_METADATA_KEY_LENGTH = 40
MAX_METADATA_VALUE_LENGTH = 500


def metadata_limits(call: Call) -> None:
    """https://docs.stripe.com/api/metadata: 50 keys, keys up to 40 characters without square
    brackets, values up to 500 characters."""
    metadata = call.metadata
    if len(metadata) > MAX_METADATA_KEYS:
        raise Refusal(
            f"Metadata can have up to {MAX_METADATA_KEYS} keys, but you've set {len(metadata)}.",
            "metadata",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_LENGTH:
            raise Refusal(
                f"Invalid key: {key} must be a string under "
                f"{MAX_METADATA_KEY_LENGTH + 1} characters",
                "metadata",
            )
        if "[" in key or "]" in key:
            raise Refusal(f"Invalid key: {key} must not contain square brackets", "metadata")
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise Refusal(
                f"Invalid value for metadata key {key}: must be a string under "
                f"{MAX_METADATA_VALUE_LENGTH + 1} characters",
                "metadata",
            )


def _integer(call: Call, name: str) -> int | None:
    value = call.params.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Refusal(f"Invalid integer: {value}", name, "parameter_invalid_integer") from None


def amount_and_currency(call: Call) -> None:
    """Supported presentment currencies and the minimum and maximum charge amounts:
    https://docs.stripe.com/currencies#minimum-and-maximum-charge-amounts."""
    if (call.method, call.route) not in (
        ("POST", "/v1/payment_intents"),
        ("POST", "/v1/payment_intents/{id}"),
    ):
        return
    currency = call.params.get("currency")
    amount = _integer(call, "amount")
    if currency is None and amount is not None and call.object_id is not None:
        currency = _stored(PaymentIntent, call.object_id, "currency")
    if currency is not None:
        currency = str(currency).lower()
        if currency not in STRIPE_CURRENCIES:
            raise Refusal(
                f"Invalid currency: {currency}. Stripe currently supports these currencies: "
                + ", ".join(sorted(STRIPE_CURRENCIES)),
                "currency",
            )
    if amount is None or currency is None:
        return
    minimum = MINIMUM_CHARGE.get(currency, 1)
    if amount < minimum:
        raise Refusal(
            f"Amount must be at least {format_amount(minimum, currency)} {currency}",
            "amount",
            "amount_too_small",
        )
    if amount > MAX_AMOUNT:
        raise Refusal(
            f"Amount must be no more than {format_amount(MAX_AMOUNT, currency)} {currency}",
            "amount",
            "amount_too_large",
        )


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


RETURN_URL_REQUIRED = (
    "A `return_url` must be specified because this {kind} is configured to automatically "
    "accept the payment methods enabled in the Dashboard, some of which may require a full "
    "page redirect to succeed. If you do not want to accept redirect-based payment methods, "
    "set `automatic_payment_methods[enabled]` to `true` and "
    "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and "
    "Payment Intents."
)


def automatic_payment_methods(requested: Any) -> dict[str, Any] | None:
    """What Stripe stores for an intent created with `requested` (the parameter): since
    2023-08-16 automatic payment methods are on, allowing redirects, unless turned off
    (https://docs.stripe.com/changelog/2023-08-16/automatic-payment-methods)."""
    if requested is None:
        return {"enabled": True, "allow_redirects": "always"}
    if not isinstance(requested, dict):
        return None
    if not _flag(requested.get("enabled")):
        return {"enabled": False}
    return {"enabled": True, "allow_redirects": requested.get("allow_redirects") or "always"}


def _allows_redirects(settings: Any) -> bool:
    return (
        isinstance(settings, dict)
        and settings.get("enabled") is True
        and settings.get("allow_redirects") != "never"
    )


def return_url(call: Call) -> None:
    """A confirm of an intent whose automatic payment methods allow redirects needs a
    `return_url`, unless `off_session=true` (PaymentIntents only)
    (https://docs.stripe.com/changelog/2023-08-16/automatic-payment-methods). The same for
    publishable-key confirms (Stripe.js): the changelog makes no exception for them."""
    params = call.params
    if call.params.get("return_url"):
        return
    route = (call.method, call.route)
    if route == ("POST", "/v1/payment_intents"):
        if not _flag(params.get("confirm")) or _flag(params.get("off_session")):
            return
        if "allowed_payment_method_types" in params:
            return  # no automatic payment methods (the debit types do not redirect)
        settings = automatic_payment_methods(params.get("automatic_payment_methods"))
        kind = "Payment Intent"
    elif route == ("POST", "/v1/payment_intents/{id}/confirm"):
        if _flag(params.get("off_session")) or call.object_id is None:
            return
        settings = _stored(PaymentIntent, call.object_id, "automatic_payment_methods")
        kind = "Payment Intent"
    elif route == ("POST", "/v1/setup_intents/{id}/confirm") and call.object_id is not None:
        settings = _stored(SetupIntent, call.object_id, "automatic_payment_methods")
        kind = "Setup Intent"
    else:
        return
    if _allows_redirects(settings):
        raise Refusal(RETURN_URL_REQUIRED.format(kind=kind), "return_url")


def off_session(call: Call) -> None:
    """`off_session` is for confirms (https://docs.stripe.com/api/payment_intents/create
    #create_payment_intent-off_session), and cannot set up future usage: Stripe refuses
    `off_session=true` with `setup_future_usage` on the same intent."""
    route = (call.method, call.route)
    params = call.params
    if not _flag(params.get("off_session")):
        return
    if route == ("POST", "/v1/payment_intents"):
        if not _flag(params.get("confirm")):
            raise Refusal("off_session can only be set when confirm=true.", "off_session")
        future = params.get("setup_future_usage")
    elif route == ("POST", "/v1/payment_intents/{id}/confirm") and call.object_id:
        future = params.get("setup_future_usage") or _stored(
            PaymentIntent, call.object_id, "setup_future_usage"
        )
    else:
        return
    if future:
        raise Refusal(
            "You cannot confirm with the `off_session` parameter when `setup_future_usage` is "
            "also set on the PaymentIntent because you cannot set up future usages when "
            "processing payments off-session.",
            "off_session",
        )


REUSED_PAYMENT_METHOD = (
    "The provided PaymentMethod was previously used with a PaymentIntent without Customer "
    "attachment, shared with a connected account without Customer attachment, or was detached "
    "from a Customer. It may not be used again. To use a PaymentMethod multiple times, you must "
    "attach it to a Customer first."
)


def payment_method_owner(call: Call) -> None:
    """A PaymentMethod attached to a customer is charged for that customer only, and one
    detached from its customer may not be used again
    (https://docs.stripe.com/api/payment_methods/detach). Detach itself refuses nothing."""
    route = (call.method, call.route)
    pm_id = call.params.get("payment_method")
    if route == ("POST", "/v1/payment_methods/{id}/attach"):
        pm_id = call.object_id
    if not isinstance(pm_id, str):
        return
    payment_method = store.get("payment_method:" + pm_id)  # never an alias: no side effect
    if payment_method is None:
        return
    if route == ("POST", "/v1/payment_methods/{id}/attach"):
        if getattr(payment_method, "_compat_detached", False):
            raise Refusal(REUSED_PAYMENT_METHOD, "payment_method")
        return
    if route == ("POST", "/v1/payment_intents"):
        customer, kind = call.params.get("customer"), "PaymentIntent"
    elif route == ("POST", "/v1/payment_intents/{id}/confirm") and call.object_id:
        customer, kind = _stored(PaymentIntent, call.object_id, "customer"), "PaymentIntent"
    elif route == ("POST", "/v1/setup_intents/{id}/confirm") and call.object_id:
        customer, kind = _stored(SetupIntent, call.object_id, "customer"), "SetupIntent"
    else:
        return
    if getattr(payment_method, "_compat_detached", False):
        raise Refusal(REUSED_PAYMENT_METHOD, "payment_method")
    owner = getattr(payment_method, "customer", None)
    if owner and owner != customer:
        raise Refusal(
            f"The `payment_method` parameter supplied {pm_id} belongs to the Customer {owner}. "
            f"Please include the Customer in the `customer` parameter on the {kind}.",
            "payment_method",
        )


def refundable(call: Call) -> None:
    """A refund needs a succeeded payment and cannot exceed what is left unrefunded
    (https://docs.stripe.com/api/refunds/create, https://docs.stripe.com/refunds)."""
    if (call.method, call.route) != ("POST", "/v1/refunds"):
        return
    charge: Any = None
    intent_id = call.params.get("payment_intent")
    if isinstance(intent_id, str):
        intent = store.get("payment_intent:" + intent_id)
        if intent is None:
            return
        if intent.status != "succeeded" or intent.latest_charge is None:
            raise Refusal(
                f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                "payment_intent",
            )
        charge = intent.latest_charge
    charge_id = call.params.get("charge")
    if isinstance(charge_id, str):
        charge = store.get("charge:" + charge_id)
    if not isinstance(charge, Charge):
        return
    if charge.status == "pending":
        # A bank debit still `processing` has a pending charge: Stripe refunds a payment after
        # it succeeds and cancels one before (https://docs.stripe.com/refunds). (localstripe
        # refuses a failed charge's refund itself.)
        raise Refusal(
            f"Charge {charge.id} is pending and cannot be refunded: only a successful charge "
            "can be.",
            "charge",
        )
    refunded = sum(
        int(refund.amount)
        for refund in store.values()
        if isinstance(refund, Refund)
        and refund.charge == charge.id
        and getattr(refund, "status", "succeeded") not in ("failed", "canceled")
    )
    left = int(charge.amount) - refunded
    if left <= 0:
        raise Refusal(
            f"Charge {charge.id} has already been refunded.", None, "charge_already_refunded"
        )
    amount = _integer(call, "amount")
    if amount is not None and amount > left:
        currency = str(charge.currency)
        raise Refusal(
            f"Refund amount ({format_amount(amount, currency)} {currency}) is greater than "
            f"unrefunded amount on charge ({format_amount(left, currency)} {currency})",
            "amount",
            "amount_too_large",
        )


def list_limit(call: Call) -> None:
    """List `limit` is 1 to 100 (https://docs.stripe.com/api/pagination)."""
    if call.method != "GET" or call.object_id is not None or "limit" not in call.params:
        return
    limit = _integer(call, "limit")
    if limit is not None and limit < 1:
        raise Refusal("This value must be greater than or equal to 1.", "limit")
    if limit is not None and limit > 100:
        raise Refusal("This value must be less than or equal to 100.", "limit")


# --- bank debits ---------------------------------------------------------------------------

_PI_CREATE = ("POST", "/v1/payment_intents")
_PI_UPDATE = ("POST", "/v1/payment_intents/{id}")
_PI_CONFIRM = ("POST", "/v1/payment_intents/{id}/confirm")
_SI_CREATE = ("POST", "/v1/setup_intents")
_SI_UPDATE = ("POST", "/v1/setup_intents/{id}")
_SI_CONFIRM = ("POST", "/v1/setup_intents/{id}/confirm")
_EXCLUSIVE_WITH_ALLOWED = (
    "automatic_payment_methods",
    "excluded_payment_method_types",
    "payment_method_configuration",
)


def _list_values(call: Call, name: str) -> list[str] | None:
    """A list parameter in its order, from form pairs (`name[0]`, `name[]`) or JSON."""
    value = call.params.get(name)
    if isinstance(value, list):
        return [str(item) for item in value]
    if name not in call.params:
        return None
    values = [item for key, item in call.pairs if _split(key)[0] == name and key != name]
    return values or ([str(value)] if isinstance(value, str) else [])


def allowed_payment_method_types(call: Call) -> None:
    """`allowed_payment_method_types` (2026-07-29.dahlia): mutually exclusive with
    `automatic_payment_methods`, `excluded_payment_method_types` and
    `payment_method_configuration`; Stripe keeps the types compatible with the intent (a debit
    in its own currency) in `payment_method_types`. That none is left is refused (the docs do
    not say what Stripe does then: the stricter choice)
    (https://docs.stripe.com/changelog/dahlia/2026-07-29/allowed-payment-method-types-parameter)."""
    route = (call.method, call.route)
    if route not in (_PI_CREATE, _PI_UPDATE, _PI_CONFIRM, _SI_CREATE, _SI_UPDATE, _SI_CONFIRM):
        return
    allowed = _list_values(call, "allowed_payment_method_types")
    if allowed is None:
        return
    for other in _EXCLUSIVE_WITH_ALLOWED:
        if other in call.params:
            raise Refusal(
                f"`allowed_payment_method_types` cannot be used together with `{other}`.",
                "allowed_payment_method_types",
            )
    if not allowed:
        raise Refusal(
            "`allowed_payment_method_types` must list at least one payment method type.",
            "allowed_payment_method_types",
        )
    for index, kind in enumerate(allowed):
        if kind not in bank_accounts.STRIPE_TYPES:
            raise Refusal(
                f"Invalid allowed_payment_method_types[{index}]: must be one of "
                + ", ".join(sorted(bank_accounts.STRIPE_TYPES)),
                f"allowed_payment_method_types[{index}]",
            )
    currency = call.params.get("currency")
    if (
        currency is None
        and call.object_id is not None
        and route[1].startswith("/v1/payment_intents")
    ):
        currency = _stored(PaymentIntent, call.object_id, "currency")
    currency = str(currency).lower() if currency is not None else None
    if not bank_accounts.compatible_types(allowed, currency):
        detail = "".join(
            f" {kind} takes {bank_accounts.DEBIT_CURRENCIES[kind]} only."
            for kind in allowed
            if kind in bank_accounts.DEBIT_CURRENCIES
        )
        raise Refusal(
            "None of the payment method types in `allowed_payment_method_types` can be used "
            f"with this {'PaymentIntent' if 'payment_intents' in route[1] else 'SetupIntent'}"
            f"{f' in {currency}' if currency else ''}.{detail}",
            "allowed_payment_method_types",
        )


def mandate_needs_confirm(call: Call) -> None:
    """`mandate` and `mandate_data` can only be used with `confirm=true` at creation
    (https://docs.stripe.com/api/payment_intents/create#create_payment_intent-mandate_data;
    Stripe's message as reported in opencollective/opencollective-api#9603)."""
    if (call.method, call.route) != _PI_CREATE or _flag(call.params.get("confirm")):
        return
    for name in ("mandate", "mandate_data"):
        if name in call.params:
            raise Refusal(
                f"The parameter `{name}` cannot be passed when creating a PaymentIntent unless "
                "`confirm` is set to true.",
                name,
            )


def new_debit_payment_method(call: Call) -> None:
    """A new bank-debit PaymentMethod (`POST /v1/payment_methods`, `payment_method_data`):
    valid bank details (`invalid_bank_account_iban`, `routing_number_invalid`,
    `account_number_invalid`) and the billing details its mandate needs
    (`parameter_missing`). Bacs details are collected by Stripe (Checkout or the Payment
    Element) only: refused with the secret key (stricter; not documented as an error)."""
    route = (call.method, call.route)
    data: Any
    if route == ("POST", "/v1/payment_methods"):
        data, prefix = call.params, ""
    elif route in (_PI_CREATE, _PI_CONFIRM, _SI_CONFIRM):
        data, prefix = call.params.get("payment_method_data"), "payment_method_data"
    else:
        return
    if not isinstance(data, dict) or data.get("type") not in bank_accounts.DEBIT_TYPES:
        return
    if data["type"] == "bacs_debit" and not call.publishable:
        raise Refusal(
            "Bacs Direct Debit details are collected by Stripe Checkout or the Payment Element "
            "(Stripe.js), not sent with a secret key; use a test PaymentMethod such as "
            "pm_bacsDebit_success on the server.",
            f"{prefix}[type]" if prefix else "type",
        )
    problem = bank_accounts.payment_method_problem(data, prefix)
    if problem is not None:
        raise Refusal(problem.message, problem.param, problem.code)


@dataclass(frozen=True)
class _Confirmation:
    """A confirm (or create with confirm=true) as the debit rules see it."""

    kind: str  # "PaymentIntent" or "SetupIntent"
    intent: Any  # the stored intent; None at creation
    types: list[str]  # the payment method types the intent can use
    payment_method_type: str | None
    payment_method: Any  # the stored PaymentMethod, when one is named
    setup_future_usage: Any
    off_session: bool


def _confirmation(call: Call) -> _Confirmation | None:
    route = (call.method, call.route)
    params = call.params
    intent: Any = None
    if route == _PI_CREATE:
        if not _flag(params.get("confirm")):
            return None
        kind, future = "PaymentIntent", params.get("setup_future_usage")
        currency = str(params.get("currency", "")).lower() or None
        types = ["card"]
    elif route in (_PI_CONFIRM, _SI_CONFIRM) and call.object_id is not None:
        owner = PaymentIntent if route == _PI_CONFIRM else SetupIntent
        intent = store.get(f"{owner.object}:{call.object_id}")
        if intent is None:
            return None
        kind = "PaymentIntent" if route == _PI_CONFIRM else "SetupIntent"
        future = params.get("setup_future_usage") or getattr(intent, "setup_future_usage", None)
        currency = str(getattr(intent, "currency", "")).lower() or None
        types = list(getattr(intent, "payment_method_types", None) or ["card"])
    else:
        return None
    allowed = _list_values(call, "allowed_payment_method_types")
    if allowed is not None:
        types = bank_accounts.compatible_types(allowed, currency)
    data = params.get("payment_method_data")
    payment_method: Any = None
    if isinstance(data, dict):
        pm_type = data.get("type")
    else:
        pm_id = params.get("payment_method")
        if pm_id is None and intent is not None:
            pm_id = intent.payment_method
        pm_type = debits.payment_method_type(pm_id)
        payment_method = store.get(f"payment_method:{pm_id}") if isinstance(pm_id, str) else None
    return _Confirmation(
        kind=kind,
        intent=intent,
        types=types,
        payment_method_type=pm_type if isinstance(pm_type, str) else None,
        payment_method=payment_method,
        setup_future_usage=future,
        off_session=_flag(params.get("off_session")),
    )


def payment_method_type_allowed(call: Call) -> None:
    """A PaymentMethod whose type the intent cannot use (not in its `payment_method_types`:
    automatic payment methods take cards only here, the fake's Dashboard having only cards).
    Stripe's message as reported in stripe/stripe-terminal-react-native#745."""
    confirmation = _confirmation(call)
    if confirmation is None or confirmation.payment_method_type is None:
        return
    kind = confirmation.payment_method_type
    if kind not in confirmation.types:
        raise Refusal(
            f"The PaymentMethod provided ({kind}) is not allowed for this "
            f"{confirmation.kind}. Please attach a PaymentMethod of one of the following types: "
            f"{', '.join(confirmation.types)}. Alternatively, update the allowed "
            f'payment_method_types for this {confirmation.kind} to include "{kind}".',
            "payment_method",
        )


def debit_setup_future_usage(call: Call) -> None:
    """A bank debit is saved for off-session use only: SEPA "only accepts an off_session
    value" (https://docs.stripe.com/payments/sepa-debit/accept-a-payment); applied to every
    debit (the stricter choice where the docs say nothing)."""
    confirmation = _confirmation(call)
    if confirmation is None or confirmation.payment_method_type not in bank_accounts.DEBIT_TYPES:
        return
    if confirmation.setup_future_usage == "on_session":
        raise Refusal(
            f"`setup_future_usage` must be `off_session` for {confirmation.payment_method_type} "
            "payment methods.",
            "setup_future_usage",
        )


def _mandate_data_problem(call: Call, mandate_data: Any) -> Refusal | None:
    base = "mandate_data[customer_acceptance]"
    acceptance = mandate_data.get("customer_acceptance") if isinstance(mandate_data, dict) else None
    if not isinstance(acceptance, dict):
        return _missing(base)
    kind = acceptance.get("type")
    if kind is None:
        return _missing(f"{base}[type]")
    if kind not in ("online", "offline"):
        return Refusal(f"Invalid {base}[type]: must be one of online, offline", f"{base}[type]")
    if kind == "offline":
        return None
    online = acceptance.get("online")
    if not isinstance(online, dict):
        return _missing(f"{base}[online]")
    if call.publishable and _flag(online.get("infer_from_client")):
        return None
    for name in ("ip_address", "user_agent"):
        if not online.get(name):
            return _missing(f"{base}[online][{name}]")
    return None


def _missing(param: str) -> Refusal:
    problem = bank_accounts.missing(param)
    return Refusal(problem.message, problem.param, problem.code)


def debit_mandate(call: Call) -> None:
    """A bank debit needs the customer's mandate: `mandate_data` with the acceptance (online:
    IP address and user agent, or Stripe.js's `infer_from_client`), an active `mandate`, or,
    for a PaymentIntent, the saved PaymentMethod's active mandate (off-session payments).
    Without one, `parameter_missing` (as reported for SEPA with `setup_future_usage` in
    laravel/cashier-stripe#1515, and woocommerce/woocommerce-gateway-stripe#1996)."""
    confirmation = _confirmation(call)
    if confirmation is None:
        return
    kind = confirmation.payment_method_type
    if kind not in bank_accounts.DEBIT_TYPES:
        return
    mandate_data = call.params.get("mandate_data")
    if mandate_data is not None:
        problem = _mandate_data_problem(call, mandate_data)
        if problem is not None:
            raise problem
        return
    mandate_id = call.params.get("mandate")
    if confirmation.kind == "PaymentIntent" and isinstance(mandate_id, str):
        mandate = store.get("mandate:" + mandate_id)
        payment_method = confirmation.payment_method
        if mandate is None or (
            payment_method is not None and mandate.payment_method != payment_method.id
        ):
            raise Refusal(f"No such mandate: '{mandate_id}'", "mandate", "resource_missing")
        if mandate.status != "active":
            raise Refusal(
                f"The mandate {mandate_id} is {mandate.status} and cannot be used for a payment.",
                "mandate",
            )
        return
    intent_id = confirmation.intent.id if confirmation.intent is not None else None
    if confirmation.kind == "PaymentIntent" and debits.usable_mandate(
        confirmation.payment_method, intent_id
    ):
        return
    with_future = " and `setup_future_usage`" if confirmation.setup_future_usage else ""
    had = getattr(confirmation.payment_method, "_compat_mandates", None)
    reason = " (its mandate is no longer active)" if had else ""
    raise Refusal(
        f"When confirming a {confirmation.kind} with a `{kind}` PaymentMethod{with_future}, "
        f"`mandate_data` is required{reason}.",
        "mandate_data",
        "parameter_missing",
    )


def us_bank_account_verification(call: Call) -> None:
    """`verification_method=instant` takes Financial Connections accounts only
    (https://docs.stripe.com/payments/ach-direct-debit/accept-a-payment, "Instant only
    verification"); the fake has none, so account numbers are refused with it rather than
    verified by microdeposits Stripe would not send."""
    confirmation = _confirmation(call)
    if confirmation is None or confirmation.payment_method_type != "us_bank_account":
        return
    options = call.params.get("payment_method_options")
    ach = options.get("us_bank_account") if isinstance(options, dict) else None
    if isinstance(ach, dict) and ach.get("verification_method") == "instant":
        raise Refusal(
            "This bank account cannot be verified instantly: instant verification needs a "
            "Financial Connections account.",
            "payment_method_options[us_bank_account][verification_method]",
        )


# In Stripe's order: the parameters' names, then their values, then the objects they name.
RULES: tuple[Rule, ...] = (
    no_payment_method_types,
    unknown_parameters,
    list_limit,
    metadata_limits,
    amount_and_currency,
    allowed_payment_method_types,
    mandate_needs_confirm,
    new_debit_payment_method,
    off_session,
    return_url,
    payment_method_owner,
    payment_method_type_allowed,
    debit_setup_future_usage,
    us_bank_account_verification,
    debit_mandate,
    refundable,
)


def _stored(owner: Any, object_id: str, name: str) -> Any:
    obj = store.get(f"{owner.object}:{object_id}")
    return getattr(obj, name, None) if obj is not None else None


def check(call: Call) -> Refusal | None:
    for rule in RULES:
        try:
            rule(call)
        except Refusal as refusal:
            return refusal
    return None
