"""`make bench`: what a request costs, measured side by side in one run on this machine.

1. Cold start: importing each function's handler module in a fresh interpreter (median of 3).
2. Table size must not change request cost: a patient's invoice list and a payment, first with
   a nearly empty table, then with thousands of other patients' items; the ratio should be ~1.
3. Warm latency of the main routes, in-process against moto and the Stripe fake.
Figures are printed, never asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = [
    "health",
    "create_invoice",
    "read_account",
    "pay_invoice",
    "stripe_webhook",
    "clinic_admin",
]


def cold_import_ms(module: str) -> float:
    # As in the layer: aiohttp is absent (the dev venv has it for the Stripe fake, and stripe
    # imports it when it can, which costs cold start).
    code = (
        "import sys,time; sys.path[:0]=['layers/shared','.']; sys.modules['aiohttp']=None; "
        f"t=time.perf_counter(); import {module}; print((time.perf_counter()-t)*1000)"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    sys.path[:0] = [str(ROOT / "layers" / "shared"), str(ROOT)]
    print("== cold import of each handler (fresh interpreter, median of 3) ==")
    baseline = cold_import_ms("json")
    for name in HANDLERS:
        ms = cold_import_ms(f"functions.{name}.app")
        print(f"  {name:<16} {ms:8.1f} ms")
    stripe_ms = cold_import_ms("stripe")
    print(f"  (stripe alone     {stripe_ms:8.1f} ms; json {baseline:.1f} ms)")
    print("  (aiohttp blocked, as in the layer, which does not ship it)")

    from local.aws import aws_env, create_payments_table, start_moto
    from local.stripe_compat.process import start_stripe

    moto, fake = start_moto(), start_stripe()
    try:
        os.environ.update(aws_env(moto.url, "PaymentsTable-bench", "clinic-payments-bench"))
        os.environ["STRIPE_API_BASE"] = fake.url
        create_payments_table(moto.url, "PaymentsTable-bench")
        from tests.conftest import Stack, make_clinic

        clinic = make_clinic(Stack(moto.url, fake.url, "PaymentsTable-bench"))
        for amount in range(1000, 1010):
            clinic.create_invoice("pat_a", amount)

        def list_invoices() -> object:
            return clinic.invoices("pat_a")

        fresh = iter(range(1_000_000))

        def cash_payment() -> object:
            # A new patient each time, so the patient's own data is the same size every call.
            patient = f"pat_cash_{next(fresh)}"
            invoice = clinic.create_invoice(patient, 500)
            return clinic.pay(
                patient,
                {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]},
                role="staff",
            )

        from clinic_payments.wiring import container

        work = _DynamoWork()
        container().repository._ddb.meta.events.register("after-call.dynamodb", work.record)
        small_list, small_pay = timed(list_invoices, 30), timed(cash_payment, 15)
        small_work = (work.per_call(list_invoices), work.per_call(cash_payment))

        print("\n== table size must not change request cost ==")
        filler = 3000
        start = time.perf_counter()
        _fill(moto.url, "PaymentsTable-bench", filler)
        print(f"  added {filler} items of other patients in {time.perf_counter() - start:.1f} s")
        big_list, big_pay = timed(list_invoices, 30), timed(cash_payment, 15)
        big_work = (work.per_call(list_invoices), work.per_call(cash_payment))
        labels = ("list invoices", "cash payment")
        for label, small, big in zip(labels, small_work, big_work, strict=True):
            print(
                f"  {label:<14} DynamoDB work per request (operations, items examined): "
                f"{small} -> {big}, items ratio {big[1] / max(small[1], 1):.2f}"
            )
        print(
            f"  wall time on moto: list {small_list:.1f} -> {big_list:.1f} ms, payment "
            f"{small_pay:.1f} -> {big_pay:.1f} ms (moto's in-memory Query walks the whole "
            "table; DynamoDB answers and bills by the items examined above)"
        )

        print("\n== warm latency, in-process against moto and the Stripe fake (median) ==")
        invoice_ms = timed(lambda: clinic.create_invoice("pat_b", 700), 20)

        def card_payment() -> object:
            invoice = clinic.create_invoice("pat_b", 700)
            return clinic.pay(
                "pat_b", {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
            )

        card_ms = timed(card_payment, 10)
        print(f"  create invoice            {invoice_ms:6.1f} ms")
        print(f"  card payment (new card)   {card_ms:6.1f} ms  (includes creating an invoice)")
        print(f"  cash payment              {big_pay:6.1f} ms  (includes creating an invoice)")
    finally:
        fake.stop()
        moto.stop()


class _DynamoWork:
    """Counts the DynamoDB operations a request makes and the items they examine."""

    def __init__(self) -> None:
        self.operations = 0
        self.examined = 0
        self.names: set[str] = set()

    def record(self, http_response: object, parsed: dict, model: object, **_: object) -> None:
        self.operations += 1
        name = getattr(model, "name", "")
        self.names.add(name)
        if "ScannedCount" in parsed:
            self.examined += int(parsed["ScannedCount"])
        elif "Item" in parsed:
            self.examined += 1

    def per_call(self, fn: Callable[[], object]) -> tuple[int, int]:
        before = (self.operations, self.examined)
        fn()
        if "Scan" in self.names:
            raise SystemExit("a request path used Scan")
        return self.operations - before[0], self.examined - before[1]


def _fill(moto_url: str, table: str, count: int) -> None:
    from local.aws import client

    ddb = client("dynamodb", moto_url)
    for start in range(0, count, 25):
        ddb.batch_write_item(
            RequestItems={
                table: [
                    {
                        "PutRequest": {
                            "Item": {
                                "pk": {"S": f"CLINIC#filler#PATIENT#p{i}"},
                                "sk": {"S": f"INVOICE#inv_filler_{i}"},
                                "type": {"S": "filler"},
                            }
                        }
                    }
                    for i in range(start, min(start + 25, count))
                ]
            }
        )


if __name__ == "__main__":
    main()
