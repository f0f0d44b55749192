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
}

# What Stripe.js adds where it calls with the publishable key: the key, the object's client
# secret, the card the Element collected (`payment_method_data[card]`, which the server-side
# TypedDicts do not have: raw card data is a Stripe.js-only input) and its telemetry.
_CARD_FIELDS: Mapping[str, Any] = {name: str for name in ("number", "exp_month", "exp_year", "cvc")}
_TELEMETRY: Mapping[str, Any] = {name: Any for name in STRIPE_JS_TELEMETRY}
_STRIPE_JS_PM_DATA: Mapping[str, Any] = {**_TELEMETRY, "card": _CARD_FIELDS}
_STRIPE_JS_TOP: Mapping[str, Any] = {"key": str, "client_secret": str, **_TELEMETRY}
PUBLISHABLE_ROUTES: dict[tuple[str, str], Mapping[str, Any]] = {
    ("POST", "/v1/payment_intents/{id}/confirm"): {
        **_STRIPE_JS_TOP,
        "payment_method_data": _STRIPE_JS_PM_DATA,
        "expected_payment_method_type": str,
    },
    ("GET", "/v1/payment_intents/{id}"): _STRIPE_JS_TOP,
    ("POST", "/v1/setup_intents/{id}/confirm"): {
        **_STRIPE_JS_TOP,
        "payment_method_data": _STRIPE_JS_PM_DATA,
        "expected_payment_method_type": str,
    },
    ("GET", "/v1/setup_intents/{id}"): _STRIPE_JS_TOP,
    ("POST", "/v1/payment_methods"): _STRIPE_JS_TOP,
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


# In Stripe's order: the parameters' names, then their values, then the objects they name.
RULES: tuple[Rule, ...] = (
    no_payment_method_types,
    unknown_parameters,
    list_limit,
    metadata_limits,
    amount_and_currency,
    off_session,
    return_url,
    payment_method_owner,
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
