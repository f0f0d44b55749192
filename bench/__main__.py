"""`make bench`: what the functions cost, each figure beside its floor measured in the same run.

1. Cold start: each function's handler module imported in a fresh interpreter, in an
   environment built like Lambda's, beside `import boto3, stripe` (bench/cold_start.py).
2. Calls per request at two history sizes, 5 and 300 invoices (bench/request_costs.py).
3. Webhook throughput beside verifying a signature and writing one item
   (bench/webhook_throughput.py).

Figures are printed, never asserted: this machine is shared and noisy. The call counts are
deterministic, and the integration tests assert their budgets.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
import warnings
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE = "PaymentsTable-bench"
SECRETS_PREFIX = "clinic-payments-bench"


def section(title: str, lines: list[str]) -> None:
    print(f"\n== {title} ==")
    for line in lines:
        print(f"  {line}".rstrip())
    sys.stdout.flush()


def quiet_handlers() -> None:
    """The handlers' logs at WARNING (a warning or an error still shows; the info line of each
    request does not), without Powertools' warning on each invocation that records no metric.
    Their metric lines are dropped where the handlers run (`redirect_stdout` below): Powertools
    prints them to sys.stdout, and single_metric ignores POWERTOOLS_METRICS_DISABLED."""
    os.environ["POWERTOOLS_LOG_LEVEL"] = "WARNING"
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    # The logger takes sys.stdout as it is when it is made: the real one, before the redirect.
    import clinic_payments.api.observability  # noqa: F401


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--rounds", type=int, default=5, help="fresh imports of each module")
    rounds = parser.parse_args().rounds
    started = time.perf_counter()
    sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT)]
    quiet_handlers()
    from bench import cold_start, request_costs, webhook_throughput

    load = os.getloadavg()[0]
    print(
        f"make bench: this machine now ({os.cpu_count()} CPUs, load {load:.1f}); compare "
        "figures within one run, each beside its floor"
    )
    with tempfile.TemporaryDirectory() as workdir:
        cold = cold_start.measure(Path(workdir), rounds)
    section(
        f"1. Cold start: each function's handler imported in a fresh process, median of {rounds} "
        f"({time.perf_counter() - started:.0f} s)",
        cold_start.report(cold),
    )

    from local.aws import (
        aws_env,
        create_pay_link_signing_key,
        create_payments_table,
        start_moto,
        verify_receipts_sender,
    )
    from local.stripe_compat.process import start_stripe

    moto, fake = start_moto(), start_stripe()
    try:
        os.environ.update(aws_env(moto.url, TABLE, SECRETS_PREFIX))
        os.environ["STRIPE_API_BASE"] = fake.url
        create_payments_table(moto.url, TABLE)
        verify_receipts_sender(moto.url)
        create_pay_link_signing_key(moto.url, SECRETS_PREFIX)
        from tests.conftest import Stack, make_clinic

        with redirect_stdout(io.StringIO()):  # the handlers' metric lines
            clinic = make_clinic(Stack(moto.url, fake.url, TABLE))
            # On a table without the histories below: moto's transactions slow down as the
            # table grows (see webhook_throughput.report).
            section_started = time.perf_counter()
            throughput = webhook_throughput.measure(clinic, TABLE)
            throughput_s = time.perf_counter() - section_started
            section_started = time.perf_counter()
            costs = {
                history: request_costs.costs_for(clinic, f"pat_history_{history}", history)
                for history in request_costs.HISTORIES
            }
            costs_s = time.perf_counter() - section_started
        section(f"2. Calls per request, warm ({costs_s:.0f} s)", request_costs.report(costs))
        section(
            f"3. Webhook throughput, warm, in process ({throughput_s:.0f} s)",
            webhook_throughput.report(throughput),
        )
    finally:
        fake.stop()
        moto.stop()
    print(f"\nmake bench took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
