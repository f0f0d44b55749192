"""The webhook relay (`local/relay.py`) against the Stripe fake's `GET /v1/events`, posting to a
local receiver that checks every signature as the webhook does: events arrive in order, once,
and an event answered 500 is retried (and holds back the ones after it) until a 2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from local.relay import Relay, RelayError, main
from local.stripe_compat.process import StripeHandle, start_stripe

pytestmark = pytest.mark.integration

SECRET_KEY = "sk_test_relay"
ENDPOINT_SECRET = "whsec_relay_" + "0" * 24
TOLERANCE = 300


@dataclass
class Receiver:
    """A local webhook endpoint: verifies `Stripe-Signature` with ENDPOINT_SECRET, records what
    it accepted, and answers 500 to an event as many times as `fail` says."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # event ids, every POST
    bad_signatures: int = 0
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1/webhooks/stripe/c/main"

    def ids(self) -> list[str]:
        with self.lock:
            return [event["id"] for event in self.accepted]

    def handle(self, body: bytes, header: str) -> int:
        if not verified(body, header):
            with self.lock:
                self.bad_signatures += 1
            return 400
        event = json.loads(body)
        with self.lock:
            self.attempts.append(event["id"])
            if self.fail.get(event["id"], 0) > 0:
                self.fail[event["id"]] -= 1
                return 500
            self.accepted.append(event)
        return 200


def verified(body: bytes, header: str) -> bool:
    """What the webhook checks: the v1 HMAC of "<t>.<body>" and a fresh timestamp."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if "t" not in parts or "v1" not in parts:
        return False
    expected = hmac.new(
        ENDPOINT_SECRET.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) <= TOLERANCE
    return fresh and hmac.compare_digest(expected, parts["v1"])


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeHandle]:
    """A Stripe fake of this module's own, so no other test's events are listed."""
    handle = start_stripe()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status = state.handle(body, self.headers.get("Stripe-Signature", ""))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"received": true}' if status == 200 else b'{"error": {}}')

        def log_message(self, *args: Any) -> None:
            return None

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.server.shutdown()
        state.server.server_close()
        thread.join(timeout=5)


def stripe_call(fake: StripeHandle, method: str, path: str, **fields: str) -> Any:
    data = urllib.parse.urlencode(fields).encode() if method == "POST" else None
    request = urllib.request.Request(  # noqa: S310 - loopback fake
        fake.url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def new_events(fake: StripeHandle, count: int, tag: str) -> list[str]:
    """`count` customer.created events at the fake, in creation order; their ids."""
    customers = [
        stripe_call(fake, "POST", "/v1/customers", **{"metadata[tag]": f"{tag}-{i}"})["id"]
        for i in range(count)
    ]
    listing = stripe_call(fake, "GET", "/v1/events?limit=100&type=customer.created")
    by_customer = {event["data"]["object"]["id"]: event["id"] for event in listing["data"]}
    return [by_customer[customer] for customer in customers]


def wait_for(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


def next_second() -> int:
    """Sleep into the next whole second; it (a `since` no earlier event can match)."""
    now = time.time()
    time.sleep(int(now) + 1 - now + 0.01)
    return int(time.time())


def relay_to(receiver: Receiver, fake: StripeHandle, **kwargs: Any) -> Relay:
    kwargs.setdefault("interval", 0.2)
    kwargs.setdefault("first_backoff", 0.05)
    return Relay(receiver.url, ENDPOINT_SECRET, SECRET_KEY, api_base=fake.url, **kwargs)


def test_the_fake_pages_events_as_stripe_does(fake: StripeHandle) -> None:
    ids = new_events(fake, 5, f"paging-{secrets.token_hex(3)}")  # oldest first
    newest_first = list(reversed(ids))

    page = stripe_call(fake, "GET", "/v1/events?limit=2&type=customer.created")
    assert [e["id"] for e in page["data"]] == newest_first[:2]
    assert page["has_more"] is True
    older = stripe_call(
        fake, "GET", f"/v1/events?limit=2&type=customer.created&starting_after={ids[3]}"
    )
    assert [e["id"] for e in older["data"]] == [ids[2], ids[1]]
    # ending_before: the events just newer than the cursor, still newest first.
    newer = stripe_call(fake, "GET", f"/v1/events?limit=2&ending_before={ids[0]}")
    assert [e["id"] for e in newer["data"]] == [ids[2], ids[1]]
    assert newer["has_more"] is True
    last = stripe_call(fake, "GET", f"/v1/events?limit=2&ending_before={ids[2]}")
    assert [e["id"] for e in last["data"]] == [ids[4], ids[3]]
    assert last["has_more"] is False
    later = int(time.time()) + 3600
    since = stripe_call(fake, "GET", f"/v1/events?limit=100&created[gte]={later}")
    assert since["data"] == []
    assert since["has_more"] is False


def test_relay_delivers_new_events_in_order_once_and_signed(
    fake: StripeHandle, receiver: Receiver
) -> None:
    before = new_events(fake, 2, "before")  # created before the relay started: not relayed
    since = next_second()
    relay = relay_to(receiver, fake, since=since).start()
    try:
        first = new_events(fake, 3, "first")
        wait_for(lambda: len(receiver.ids()) >= 3)
        second = new_events(fake, 4, "second")  # arrive while the relay polls: ending_before
        wait_for(lambda: len(receiver.ids()) >= 7)
        time.sleep(1.0)  # several more polls: nothing may come twice
    finally:
        relay.stop()

    assert receiver.ids() == first + second
    assert relay.delivered == first + second
    assert receiver.attempts == first + second  # no retries were needed, none were made
    assert receiver.bad_signatures == 0
    assert not set(before) & set(receiver.ids())
    assert [e["type"] for e in receiver.accepted] == ["customer.created"] * 7


def test_relay_retries_an_event_answered_500_and_keeps_the_order(
    fake: StripeHandle, receiver: Receiver
) -> None:
    since = next_second()
    events = new_events(fake, 4, "retry")
    receiver.fail[events[1]] = 2  # two 500s, then a 200
    relay = relay_to(receiver, fake, since=since).start()
    try:
        wait_for(lambda: len(receiver.ids()) >= 4)
        time.sleep(0.6)
    finally:
        relay.stop()

    assert receiver.ids() == events
    assert receiver.attempts == [events[0], events[1], events[1], events[1], events[2], events[3]]
    assert receiver.bad_signatures == 0


def test_relay_stops_promptly_while_backing_off(fake: StripeHandle, receiver: Receiver) -> None:
    since = next_second()
    [event] = new_events(fake, 1, "stuck")
    receiver.fail[event] = 10**6  # never accepted
    relay = relay_to(receiver, fake, since=since, first_backoff=5.0).start()
    wait_for(lambda: len(receiver.attempts) >= 1)
    started = time.monotonic()
    relay.stop()
    assert time.monotonic() - started < 3.0
    assert receiver.ids() == []
    assert relay.delivered == []


def test_relay_refuses_live_keys_and_remote_webhooks() -> None:
    url = "http://127.0.0.1:3000/v1/webhooks/stripe/demo/main"
    with pytest.raises(RelayError, match="live-mode key"):
        Relay(url, ENDPOINT_SECRET, "sk_live_" + "x" * 24)
    with pytest.raises(RelayError, match="not a test-mode key"):
        Relay(url, ENDPOINT_SECRET, "pk_test_" + "x" * 24)
    with pytest.raises(RelayError, match="local http URL"):
        Relay("https://example.com/hook", ENDPOINT_SECRET, SECRET_KEY)
    with pytest.raises(RelayError, match="interval"):
        Relay(url, ENDPOINT_SECRET, SECRET_KEY, interval=0)


def test_relay_command_says_what_to_set_and_exits_non_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "http://127.0.0.1:3000/v1/webhooks/stripe/demo/main"
    assert main(["--to", url], environ={}) == 2
    assert "STRIPE_TEST_SECRET_KEY is not set" in capsys.readouterr().err
    live = {"STRIPE_TEST_SECRET_KEY": "sk_live_" + "x" * 24, "RELAY_WEBHOOK_SECRET": "whsec_x"}
    assert main(["--to", url], environ=live) == 2
    assert "live-mode key" in capsys.readouterr().err
    no_secret = {"STRIPE_TEST_SECRET_KEY": SECRET_KEY}
    assert main(["--to", url], environ=no_secret) == 2
    assert "RELAY_WEBHOOK_SECRET is not set" in capsys.readouterr().err


def test_relay_command_stops_on_sigterm(fake: StripeHandle, receiver: Receiver) -> None:
    env = {"STRIPE_TEST_SECRET_KEY": SECRET_KEY, "RELAY_WEBHOOK_SECRET": ENDPOINT_SECRET}
    since = next_second()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "local.relay", "--to", receiver.url),
            *("--api-base", fake.url, "--interval", "0.2", "--since", str(since)),
        ],
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        events = new_events(fake, 2, "cli")
        wait_for(lambda: len(receiver.ids()) >= 2)
        process.terminate()
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert receiver.ids() == events
    assert "relay stopped" in output
    assert SECRET_KEY not in output
    assert ENDPOINT_SECRET not in output


@pytest.mark.parametrize(
    ("keys", "said"),
    [
        ({}, "STRIPE_TEST_SECRET_KEY is not set"),
        ({"STRIPE_TEST_SECRET_KEY": SECRET_KEY}, "STRIPE_TEST_PUBLISHABLE_KEY is not set"),
        (
            {"STRIPE_TEST_SECRET_KEY": "sk_live_x", "STRIPE_TEST_PUBLISHABLE_KEY": "pk_test_x"},
            "STRIPE_TEST_SECRET_KEY is a live-mode key",
        ),
    ],
)
def test_run_against_a_test_account_refuses_to_start_without_test_keys(
    keys: dict[str, str], said: str
) -> None:
    """`make run STRIPE=test` checks the keys before it starts anything."""
    result = subprocess.run(
        [sys.executable, "-m", "local.run", "--stripe", "test"],
        env={"PATH": "/usr/bin:/bin", **keys},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    assert said in result.stderr, result.stderr
    assert "STRIPE_TEST_PUBLISHABLE_KEY=pk_test_" in result.stderr
    assert "ready:" not in result.stdout
