"""`make audit CLINIC=...`: recompute every patient's account of a clinic and report any
difference (ledger vs balances, payments vs invoices, and our records vs Stripe's).

Locally it reads the stack `make run` serves. Against AWS, give the table and the secrets
prefix and run with your AWS credentials (read-only access is enough):
    make audit CLINIC=c1 TABLE=PaymentsTable-prod SECRETS_PREFIX=clinic-payments LOCAL=0
Exit status: 0 when everything adds up, 1 when any difference was found.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "shared"))

from botocore.exceptions import BotoCoreError, ClientError
from clinic_payments.domain.audit import Auditor, Difference
from clinic_payments.wiring import RuntimeSettings, build_container


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clinic", required=True)
    parser.add_argument("--table", default=os.environ.get("TABLE_NAME", "PaymentsTable-local"))
    parser.add_argument(
        "--secrets-prefix", default=os.environ.get("CLINIC_SECRETS_PREFIX", "clinic-payments-local")
    )
    parser.add_argument("--no-stripe", action="store_true", help="skip the check against Stripe")
    args = parser.parse_args(argv)
    settings = RuntimeSettings(
        table_name=args.table,
        clinic_secrets_prefix=args.secrets_prefix,
        stripe_api_base=os.environ.get("STRIPE_API_BASE") or None,
    )
    container = build_container(settings)
    auditor = Auditor(container.repository, None if args.no_stripe else container.stripe)
    try:
        patients = container.repository.patients_of_clinic(args.clinic)
    except (BotoCoreError, ClientError) as exc:
        print(f"cannot read the table {args.table}: {exc}", file=sys.stderr)
        print("(locally: is `make run` serving? against AWS: LOCAL=0 and your credentials)")
        return 2
    differences: list[tuple[str, Difference]] = []
    for patient in patients:
        differences += [(patient, d) for d in auditor.audit_patient(args.clinic, patient)]
    print(f"audited clinic {args.clinic}: {len(patients)} patients")
    for patient, difference in differences:
        print(f"DIFFERENCE patient {patient}: {difference}")
    print("all accounts add up" if not differences else f"{len(differences)} differences")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
