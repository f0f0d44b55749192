"""`make soak STEPS=10000 SEED=7`: start a private local stack (moto, the Stripe fake and the
gateway on free loopback ports), seed one clinic through the admin API, run the soak, print
its report. Exit 1 on any violation; the same seed replays the same run."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (str(ROOT / "layers" / "shared"), str(ROOT)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from local.aws import (  # noqa: E402
    apply_env,
    aws_env,
    create_pay_link_signing_key,
    create_payments_table,
    start_moto,
    verify_receipts_sender,
)
from local.gateway import LocalGateway  # noqa: E402
from local.seed import register_webhook, seed_clinic_account  # noqa: E402
from local.stripe_compat.process import start_stripe  # noqa: E402
from local.tokens import LOCAL_AUDIENCE, LOCAL_ISSUER, generate_key, issue_token, public_key  # noqa: E402
from soak.checks import in_process_checks  # noqa: E402
from soak.runner import Soak, Target  # noqa: E402

TABLE = "PaymentsTable-soak"
SECRETS_PREFIX = "clinic-payments-soak"
ACCOUNT = "main"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--audit-every", type=int, default=250)
    args = parser.parse_args(argv)

    started = time.monotonic()
    moto = start_moto()
    fake = start_stripe()
    gateway = None
    try:
        apply_env(aws_env(moto.url, TABLE, SECRETS_PREFIX))
        os.environ["STRIPE_API_BASE"] = fake.url
        os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "ClinicPaymentsSoak")
        # The report is the output: handlers log errors only (a 500's traceback stays visible).
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
        create_payments_table(moto.url, TABLE)
        verify_receipts_sender(moto.url)
        create_pay_link_signing_key(moto.url, SECRETS_PREFIX)
        key = generate_key()
        gateway = LocalGateway(
            port=0, issuer=LOCAL_ISSUER, audience=LOCAL_AUDIENCE, public_key=public_key(key)
        ).start()
        clinic_id = f"soak_{args.seed}"
        suffix = secrets.token_hex(6)
        target = Target(
            api_url=gateway.url,
            stripe_url=fake.url,
            moto_url=moto.url,
            clinic_id=clinic_id,
            account_id=ACCOUNT,
            secret_key=f"sk_test_{clinic_id}_{suffix}",
            publishable_key=f"pk_test_{clinic_id}_{suffix}",
            webhook_secret=f"whsec_test_{clinic_id}_{suffix}",
            token=lambda role, patients: issue_token(
                role, clinic_id, patients if role == "patient" else (), sub=f"soak-{role}", key=key
            ),
            kill_worker=lambda function: gateway.kill_workers(function) > 0,
        )
        seed_clinic_account(
            gateway.url,
            clinic_id,
            ACCOUNT,
            target.token("admin", ()),
            secret_key=target.secret_key,
            publishable_key=target.publishable_key,
            webhook_secret=target.webhook_secret,
        )
        register_webhook(
            fake.url,
            f"soak-{clinic_id}",
            f"{gateway.url}/v1/webhooks/stripe/{clinic_id}/{ACCOUNT}",
            target.webhook_secret,
        )
        audit, reconcile = in_process_checks(clinic_id)
        soak = Soak(
            target,
            seed=args.seed,
            audit=audit,
            reconcile=reconcile,
            patients=args.patients,
            audit_every=args.audit_every,
            log=lambda line: print(line, flush=True),
        )
        report = soak.run(args.steps)
    finally:
        if gateway is not None:
            gateway.stop()
        fake.stop()
        moto.stop()
    for line in report.lines():
        print(line)
    print(f"took {time.monotonic() - started:.0f} s")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
