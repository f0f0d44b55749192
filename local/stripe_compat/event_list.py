"""`GET /v1/events` paged as Stripe pages it (https://docs.stripe.com/api/events/list,
https://docs.stripe.com/api/pagination).

localstripe lists events oldest first, pages only with `starting_after` and knows neither
`ending_before` nor `types`. Stripe lists newest first; `starting_after=X` gives the page of
events older than X, `ending_before=X` the page of events just newer than X (still newest
first), `has_more` says whether more lie beyond that page in the same direction. A relay that
polls the account's events reads them this way, so the fake must answer the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from localstripe.resources import Event, List, store, try_convert_to_int

from local.stripe_compat.cards import invalid_request

MAX_LIMIT = 100
MAX_TYPES = 20
_RANGE = ("gt", "gte", "lt", "lte")

_installed = False


class EventPage(List):
    """One page of events, already cut (localstripe's List cuts only forward)."""

    def __init__(self, url: str, page: list[Any], more: bool) -> None:
        super().__init__(url, limit=max(1, len(page)))
        self._page = page
        self._more = more

    @property
    def data(self) -> list[dict[str, Any]]:
        return [event._export() for event in self._page]

    @property
    def has_more(self) -> bool:
        return self._more

    @property
    def total_count(self) -> None:  # Stripe's lists have no count
        return None


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    Event._api_list_all = classmethod(_list_events)


def _list_events(
    cls: type,
    url: str,
    limit: Any = None,
    starting_after: Any = None,
    ending_before: Any = None,
    created: Any = None,
    type: Any = None,
    types: Any = None,
    **params: Any,
) -> EventPage:
    if params:
        name = sorted(params)[0]
        raise invalid_request(f"Received unknown parameter: {name}", name, "parameter_unknown")
    size = _limit(limit)
    if starting_after is not None and ending_before is not None:
        raise invalid_request(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
        )
    keep = [_created_filter(created), _type_filter(type, types)]
    # Insertion order is creation order, also within one second: newest first is its reverse.
    events = [obj for key, obj in reversed(store.items()) if key.startswith("event:")]

    def kept(candidates: list[Any]) -> list[Any]:
        return [event for event in candidates if all(check(event) for check in keep)]

    if ending_before is not None:
        newer = kept(events[: _position(events, ending_before, "ending_before")])
        return EventPage(url, newer[-size:], more=len(newer) > size)
    if starting_after is not None:
        events = events[_position(events, starting_after, "starting_after") + 1 :]
    older = kept(events)
    return EventPage(url, older[:size], more=len(older) > size)


def _limit(value: Any) -> int:
    if value is None:
        return 10
    limit = try_convert_to_int(value)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid_request(f"Invalid integer: limit must be between 1 and {MAX_LIMIT}", "limit")
    return limit


def _position(events: list[Any], cursor: Any, param: str) -> int:
    """Where the cursor event is in the unfiltered listing (a cursor need not match the
    filters: Stripe pages from where it is)."""
    if isinstance(cursor, str):
        for index, event in enumerate(events):
            if event.id == cursor:
                return index
    raise invalid_request(f"No such event: '{cursor}'", param, "resource_missing")


def _created_filter(created: Any) -> Callable[[Any], bool]:
    if created is None:
        return lambda event: True
    if not isinstance(created, dict):
        exact = try_convert_to_int(created)
        if not isinstance(exact, int):
            raise invalid_request("Invalid created: must be an integer or a hash", "created")
        return lambda event: bool(event.created == exact)
    unknown = set(created) - set(_RANGE)
    if unknown:
        name = sorted(unknown)[0]
        raise invalid_request(
            f"Received unknown parameter: created[{name}]", f"created[{name}]", "parameter_unknown"
        )
    bounds: dict[str, int] = {}
    for op, raw in created.items():
        bound = try_convert_to_int(raw)
        if not isinstance(bound, int):
            raise invalid_request(f"Invalid integer: {raw}", f"created[{op}]")
        bounds[op] = bound

    def within(event: Any) -> bool:
        at = int(event.created)
        return (
            ("gt" not in bounds or at > bounds["gt"])
            and ("gte" not in bounds or at >= bounds["gte"])
            and ("lt" not in bounds or at < bounds["lt"])
            and ("lte" not in bounds or at <= bounds["lte"])
        )

    return within


def _type_filter(type_: Any, types: Any) -> Callable[[Any], bool]:
    if type_ is not None and types is not None:
        raise invalid_request("You may only specify one of these parameters: type, types.", "type")
    if type_ is not None:
        if not isinstance(type_, str):
            raise invalid_request("Invalid type: must be a string", "type")
        return lambda event: _matches(event.type, type_)
    if types is not None:
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise invalid_request("Invalid array", "types")
        if len(types) > MAX_TYPES:
            raise invalid_request(f"types may contain at most {MAX_TYPES} values", "types")
        return lambda event: any(_matches(event.type, t) for t in types)
    return lambda event: True


def _matches(event_type: str, pattern: str) -> bool:
    # Stripe accepts a trailing wildcard: `payment_intent.*`.
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern
