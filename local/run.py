"""`make run`: the whole API on 127.0.0.1, seeded with a demo clinic.

moto (DynamoDB, Secrets Manager) + the Stripe fake + the local gateway serving template.yaml's
routes, each function in its own worker processes, started on first use. Ports come from
API_PORT (3000), STRIPE_PORT (8420) and MOTO_PORT (5000).
Ctrl-C or SIGTERM stops everything and exits 0.

`--stripe test` (`make run STRIPE=test`): no fake; the demo clinic gets the developer's own
Stripe test-mode keys (STRIPE_TEST_SECRET_KEY, STRIPE_TEST_PUBLISHABLE_KEY; live keys are
refused), the handlers call api.stripe.com, and `local.relay` posts the account's events to the
local webhook, signed with a secret made for this run.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import socket
import sys
import time
import warnings
from collections.abc import Mapping
from contextlib import ExitStack, closing
from types import FrameType

from local.aws import (
    MAILBOX_PATH,
    aws_env,
    create_pay_link_signing_key,
    create_payments_table,
    free_port,
    start_moto,
    verify_receipts_sender,
)
from local.gateway import LocalGateway
from local.relay import Relay, RelayError, require_test_key
from local.seed import (
    DEMO_ACCOUNT,
    DEMO_CLINIC,
    DEMO_PATIENTS,
    DEMO_STRIPE_ACCOUNT,
    SeedError,
    seed_demo,
)
from local.tokens import issue_token, public_key

# A request that records no business metric still flushes; Powertools warns each time.
warnings.filterwarnings("ignore", message="No application metrics to publish")

HOST = "127.0.0.1"
PORT_DEFAULTS = {"API_PORT": 3000, "STRIPE_PORT": 8420, "MOTO_PORT": 5000}
TABLE_NAME = "PaymentsTable-local"
SECRETS_PREFIX = "clinic-payments-local"


KEY_VARIABLES = ("STRIPE_TEST_SECRET_KEY", "STRIPE_TEST_PUBLISHABLE_KEY")


class StartupError(Exception):
    """The stack cannot start; the message says what to change."""


def stripe_test_keys(environ: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """The developer's Stripe test-mode keys for `--stripe test`, or a StartupError that says
    what to set (a live key is refused)."""
    try:
        return (
            require_test_key(environ.get(KEY_VARIABLES[0], ""), "sk_test_", KEY_VARIABLES[0]),
            require_test_key(environ.get(KEY_VARIABLES[1], ""), "pk_test_", KEY_VARIABLES[1]),
        )
    except RelayError as err:
        raise StartupError(
            f"{err}. make run STRIPE=test serves the API against your own Stripe account in "
            "test mode: set STRIPE_TEST_SECRET_KEY=sk_test_... and "
            "STRIPE_TEST_PUBLISHABLE_KEY=pk_test_... (Dashboard > Developers > API keys)."
        ) from None


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def read_ports(environ: Mapping[str, str] = os.environ) -> dict[str, int]:
    ports: dict[str, int] = {}
    for var, default in PORT_DEFAULTS.items():
        raw = environ.get(var, "").strip() or str(default)
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StartupError(f"{var}={raw!r} is not a TCP port (1-65535)")
        ports[var] = int(raw)
    if len(set(ports.values())) != len(ports):
        raise StartupError(f"API_PORT, STRIPE_PORT and MOTO_PORT must differ: {ports}")
    return ports


def port_available(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on host:port now (as servers do, with SO_REUSEADDR)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True


def check_ports(ports: Mapping[str, int]) -> None:
    for var, port in ports.items():
        if not port_available(port):
            raise StartupError(
                f"port {port} on {HOST} is already in use: set {var} to another port "
                f"(e.g. {var}={free_port()} make run)"
            )


def handler_env(
    moto_url: str, stripe_url: str | None, api_url: str | None = None
) -> dict[str, str]:
    """The process environment the handlers read (the template's variables, pointed local).
    No `stripe_url`: api.stripe.com, as in AWS.

    There is no portal locally: an emailed pay link opens the API's own GET /v1/pay/{token}."""
    extra = {"pay_link_base_url": f"{api_url}/v1"} if api_url else {}
    stripe = {"STRIPE_API_BASE": stripe_url} if stripe_url else {}
    return {
        **aws_env(moto_url, table_name=TABLE_NAME, secrets_prefix=SECRETS_PREFIX, **extra),
        **stripe,
        "POWERTOOLS_SERVICE_NAME": "clinic-payments",
        "POWERTOOLS_METRICS_NAMESPACE": "ClinicPayments",
        "POWERTOOLS_DEV": "false",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
        # No X-Ray daemon here: the tracer stays off and patches nothing (on in AWS).
        "POWERTOOLS_TRACE_DISABLED": "true",
        "LOCAL_STACK": "true",
    }


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


def _say(line: str = "") -> None:
    print(line, flush=True)


def serve(
    ports: Mapping[str, int], stack: ExitStack, test_keys: tuple[str, str] | None = None
) -> None:
    """Start, seed and print everything; cleanups go on `stack` as each part starts. With
    `test_keys` the developer's Stripe test account stands in for the fake."""
    from local.stripe_compat.process import start_stripe

    if test_keys is not None:
        ports = {var: port for var, port in ports.items() if var != "STRIPE_PORT"}
    check_ports(ports)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(var, None)  # never reach for real AWS credentials

    moto = start_moto(ports["MOTO_PORT"])
    stack.callback(moto.stop)
    stripe_url: str | None = None
    if test_keys is None:
        stripe = start_stripe(ports["STRIPE_PORT"])
        stack.callback(stripe.stop)
        stripe_url = stripe.url
    else:
        os.environ.pop("STRIPE_API_BASE", None)
    os.environ.update(handler_env(moto.url, stripe_url, f"http://{HOST}:{ports['API_PORT']}"))
    create_payments_table(moto.url, TABLE_NAME)
    verify_receipts_sender(moto.url)
    create_pay_link_signing_key(moto.url, SECRETS_PREFIX)

    gateway = LocalGateway(HOST, ports["API_PORT"], public_key=public_key()).start()
    stack.callback(gateway.stop)

    admin = issue_token("admin", DEMO_CLINIC, sub="local-admin")
    staff = issue_token("staff", DEMO_CLINIC, sub="local-staff")
    patient = issue_token("patient", DEMO_CLINIC, [DEMO_PATIENTS[0]], sub="local-patient-pat_1")
    if test_keys is None:
        seed_demo(gateway.url, stripe_url, admin)
        stripe_line = f"Stripe fake:  {stripe_url}"
    else:
        relay = _seed_test_account(gateway.url, admin, test_keys)
        stack.callback(relay.stop)
        stripe_line = (
            f"Stripe:       {relay.api_base} (your test account; confirm with pm_card_visa)\n"
            f"relay:        {relay.api_base}/v1/events -> {relay.webhook_url}"
        )

    _say(f"API:          {gateway.url}")
    _say(stripe_line)
    _say(f"moto:         {moto.url}")
    _say(f"emails sent:  {moto.url}{MAILBOX_PATH}?to=<address>")
    _say(f"docs:         {gateway.url}/v1/docs")
    _say(f"clinic:       {DEMO_CLINIC} (Stripe account {DEMO_ACCOUNT})")
    _say(f"patients:     {', '.join(DEMO_PATIENTS)}")
    _say("tokens (12 h; more with `make token ROLE=... CLINIC=demo PATIENTS=...`):")
    _say(f"ADMIN_TOKEN={admin}")
    _say(f"STAFF_TOKEN={staff}")
    _say(f"PATIENT_TOKEN={patient}")
    _say(f"ready: serving {gateway.url} (Ctrl-C to stop)")


def _seed_test_account(api_url: str, admin: str, keys: tuple[str, str]) -> Relay:
    """The demo clinic on the developer's test account, and the relay of its events, signed
    with an endpoint secret made for this run."""
    webhook_secret = f"whsec_local_{secrets.token_hex(24)}"
    account = {
        **DEMO_STRIPE_ACCOUNT,
        "name": "Demo Clinic (your Stripe test account)",
        "secret_key": keys[0],
        "publishable_key": keys[1],
        "webhook_secret": webhook_secret,
    }
    seed_demo(api_url, None, admin, stripe_account=account)
    relay = Relay(
        webhook_url=f"{api_url}/v1/webhooks/stripe/{DEMO_CLINIC}/{DEMO_ACCOUNT}",
        webhook_secret=webhook_secret,
        secret_key=keys[0],
    )
    return relay.start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__)
    parser.add_argument(
        "--stripe",
        choices=("fake", "test"),
        default="fake",
        help="fake: the local Stripe fake (default); test: your own Stripe test account",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        test_keys = stripe_test_keys() if args.stripe == "test" else None
        with ExitStack() as stack:
            try:
                serve(read_ports(), stack, test_keys)
                while True:
                    time.sleep(3600)
            except _Stop:
                print("stopping...", file=sys.stderr, flush=True)
            finally:
                # a second Ctrl-C must not interrupt the cleanup
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except (StartupError, SeedError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
