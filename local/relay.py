"""Relay a Stripe account's events to the local webhook, signed as Stripe signs them.

Stripe cannot reach 127.0.0.1, and the Stripe CLI is not needed for this: the relay reads the
account's own event list (`GET /v1/events`, with the account's test secret key) and POSTs each
new event, oldest first, to the local `/v1/webhooks/stripe/{clinic_id}/{account_id}` with a
`Stripe-Signature` computed from a LOCAL endpoint secret (the one the clinic account was seeded
with), exactly as Stripe computes it: `t=<unix time>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.

- Only events created since the relay started (or `since`) are relayed.
- Paging: the first read pages back from the newest event (`starting_after`, with
  `created[gte]=since`); after that only `ending_before=<last relayed event>` is asked for,
  the page of events just newer than it, until `has_more` is false.
- A webhook answer other than 2xx (or no answer) is retried with exponential backoff, and the
  events after it wait: order is kept. An event answered 2xx is never posted again.
- Polls every `interval` seconds (0.2 to 60); stops on `stop()`, SIGINT or SIGTERM.

Event bodies are rendered in the API version they were created with (Stripe's list does not
re-render them), so the account's default API version should be the one the clinic's webhook
endpoint would use (docs/deploy.md).

    STRIPE_TEST_SECRET_KEY=sk_test_... RELAY_WEBHOOK_SECRET=whsec_... \\
        python -m local.relay --to http://127.0.0.1:3000/v1/webhooks/stripe/demo/main
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

STRIPE_API = "https://api.stripe.com"
MIN_INTERVAL, MAX_INTERVAL = 0.2, 60.0
PAGE_SIZE = 100
REMEMBERED = 10_000  # event ids kept to refuse a second delivery
LOOPBACK = ("127.0.0.1", "localhost", "::1")

log = logging.getLogger("relay")


class RelayError(Exception):
    """The relay cannot run as configured (the message says what to change)."""


def require_test_key(key: str, prefix: str, variable: str) -> str:
    """A test-mode key, or a RelayError naming the variable (a live key is refused)."""
    key = key.strip()
    if not key:
        raise RelayError(f"{variable} is not set: use your Stripe test-mode key ({prefix}...)")
    if not key.startswith(prefix):
        kind = "a live-mode key" if "_live_" in key else "not a test-mode key"
        raise RelayError(f"{variable} is {kind}: only {prefix}... keys are accepted")
    return key


def sign(payload: str, secret: str, timestamp: int) -> str:
    """The `Stripe-Signature` header Stripe sends with `payload` at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass
class Relay:
    webhook_url: str
    webhook_secret: str
    secret_key: str
    api_base: str = STRIPE_API
    since: int | None = None  # unix time; default: when the relay is built
    interval: float = 2.0
    first_backoff: float = 0.5
    max_backoff: float = 30.0
    timeout: float = 15.0
    clock: Callable[[], float] = time.time
    delivered: list[str] = field(default_factory=list)  # ids answered 2xx, in order
    _cursor: str | None = None
    _seen: set[str] = field(default_factory=set)
    _seen_order: deque[str] = field(default_factory=deque)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.secret_key = require_test_key(self.secret_key, "sk_test_", "the secret key")
        if not self.webhook_secret:
            raise RelayError("the local webhook endpoint secret is empty")
        target = urllib.parse.urlsplit(self.webhook_url)
        if target.scheme != "http" or target.hostname not in LOOPBACK:
            raise RelayError(f"the webhook URL must be a local http URL, not {self.webhook_url}")
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise RelayError(f"interval must be {MIN_INTERVAL} to {MAX_INTERVAL} seconds")
        self.api_base = self.api_base.rstrip("/")
        if self.since is None:
            self.since = int(self.clock())

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Relay:
        """Run in a daemon thread until `stop()`."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self.run, name="stripe-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Poll and relay until stopped. A transient failure to read the events (network,
        Stripe 5xx or 429) is logged and retried at the next poll."""
        while not self._stop.is_set():
            try:
                self.poll_once()
            except _TransientError as err:
                log.warning("reading events failed, retrying: %s", err)
            self._stop.wait(self.interval)

    # -- one poll ----------------------------------------------------------------------------

    def poll_once(self) -> int:
        """Relay every event not relayed yet, oldest first; how many were delivered."""
        count = 0
        for event in self._new_events():
            if self._stop.is_set():
                break
            if self._deliver(event):
                count += 1
        return count

    def _new_events(self) -> Iterator[dict[str, Any]]:
        if self._cursor is None:
            # Page back from the newest event to `since`, then hand them out oldest first.
            backlog: list[dict[str, Any]] = []
            params: dict[str, str] = {"limit": str(PAGE_SIZE), "created[gte]": str(self.since)}
            while True:
                page = self._list(params)
                backlog.extend(page["data"])
                if not page.get("has_more") or not page["data"]:
                    break
                params["starting_after"] = page["data"][-1]["id"]
            yield from reversed(backlog)
            return
        while self._cursor is not None:
            page = self._list({"limit": str(PAGE_SIZE), "ending_before": self._cursor})
            data = page["data"]
            if not data:
                return
            yield from reversed(data)  # the page just newer than the cursor, newest first
            if not page.get("has_more") or self._stop.is_set():
                return

    def _list(self, params: dict[str, str]) -> dict[str, Any]:
        url = f"{self.api_base}/v1/events?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(  # noqa: S310 - Stripe's API or the local fake
            url, headers={"Authorization": f"Bearer {self.secret_key}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body: dict[str, Any] = json.loads(response.read())
                return body
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")[:500]
            if err.code == 429 or err.code >= 500:
                raise _TransientError(f"GET /v1/events -> {err.code}") from None
            raise RelayError(f"GET /v1/events -> {err.code}: {detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise _TransientError(f"GET /v1/events -> {err}") from None

    # -- delivery ----------------------------------------------------------------------------

    def _deliver(self, event: dict[str, Any]) -> bool:
        """POST until a 2xx (then never again), backing off between attempts; False only
        when stopped first."""
        event_id = str(event["id"])
        if event_id in self._seen:
            self._cursor = event_id
            return False
        payload = json.dumps(event, indent=2)
        wait = self.first_backoff
        attempt = 1
        while not self._stop.is_set():
            status = self._post(payload)
            if status is not None and 200 <= status < 300:
                self._remember(event_id)
                self._cursor = event_id
                log.info("relayed %s %s -> %s", event_id, event.get("type"), status)
                return True
            log.warning(
                "webhook answered %s to %s (attempt %d); retrying in %.1f s",
                status if status is not None else "nothing",
                event_id,
                attempt,
                wait,
            )
            self._stop.wait(wait)
            wait = min(wait * 2, self.max_backoff)
            attempt += 1
        return False

    def _post(self, payload: str) -> int | None:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(payload, self.webhook_secret, int(self.clock())),
            "User-Agent": "clinic-payments-relay",
        }
        request = urllib.request.Request(  # noqa: S310 - loopback only (checked above)
            self.webhook_url, data=payload.encode(), method="POST", headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                response.read()
                return int(response.status)
        except urllib.error.HTTPError as err:
            err.read()
            return int(err.code)
        except (urllib.error.URLError, OSError):
            return None

    def _remember(self, event_id: str) -> None:
        self.delivered.append(event_id)
        self._seen.add(event_id)
        self._seen_order.append(event_id)
        if len(self._seen_order) > REMEMBERED:
            self._seen.discard(self._seen_order.popleft())
        del self.delivered[:-REMEMBERED]


class _TransientError(Exception):
    """Reading the events failed in a way a later poll may not."""


# -- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(
        prog="python -m local.relay",
        description="Relay a Stripe test account's events to a local webhook, signed locally. "
        "Reads STRIPE_TEST_SECRET_KEY (sk_test_...) and RELAY_WEBHOOK_SECRET (the local "
        "endpoint secret) from the environment.",
    )
    parser.add_argument("--to", required=True, help="the local webhook URL")
    parser.add_argument("--api-base", default=STRIPE_API, help=f"default {STRIPE_API}")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    parser.add_argument("--since", type=int, default=None, help="unix time (default: now)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(message)s")
    try:
        secret_key = require_test_key(
            environ.get("STRIPE_TEST_SECRET_KEY", ""), "sk_test_", "STRIPE_TEST_SECRET_KEY"
        )
        webhook_secret = environ.get("RELAY_WEBHOOK_SECRET", "").strip()
        if not webhook_secret:
            raise RelayError("RELAY_WEBHOOK_SECRET is not set: the local endpoint secret")
        relay = Relay(
            webhook_url=args.to,
            webhook_secret=webhook_secret,
            secret_key=secret_key,
            api_base=args.api_base,
            since=args.since,
            interval=args.interval,
        )
    except RelayError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        relay.stop(timeout=0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    print(f"relaying {relay.api_base}/v1/events to {relay.webhook_url}", flush=True)
    try:
        relay.run()
    except RelayError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print("relay stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
