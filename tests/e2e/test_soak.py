"""A short soak in `make test` (`make soak` runs the long one): random money operations with
Stripe and DynamoDB faults, retries, replayed webhooks and reconciler runs, through the gateway;
the audit after every 100 steps and against Stripe at the end, and nothing charged twice."""

from __future__ import annotations

import pytest

from soak.checks import in_process_checks
from soak.runner import Soak, Target
from tests.e2e.conftest import ACCOUNT_ID, seed_clinic

pytestmark = pytest.mark.e2e

STEPS = 200


# A killed container keeps its request's Idempotency-Key locked for a minute, and the soak's
# end waits for every request in doubt: more than the suite's default per-test timeout.
@pytest.mark.timeout(900)
def test_a_short_soak_with_faults_ends_with_every_account_adding_up(stack, gateway, jwt_key):
    clinic = seed_clinic(stack, gateway, jwt_key)
    target = Target(
        api_url=clinic.api_url,
        stripe_url=clinic.stripe_url,
        moto_url=stack.moto_url,
        clinic_id=clinic.clinic_id,
        account_id=ACCOUNT_ID,
        secret_key=clinic.secret_key,
        publishable_key=clinic.publishable_key,
        webhook_secret=clinic.webhook_secret,
        token=lambda role, patients: clinic.token(
            role, patients if role == "patient" else (), sub=f"soak-{role}"
        ),
        kill_worker=lambda function: gateway.kill_workers(function) > 0,
    )
    audit, reconcile = in_process_checks(clinic.clinic_id)
    report = Soak(target, seed=20261203, audit=audit, reconcile=reconcile).run(STEPS)
    summary = "\n".join(report.lines())
    assert report.violations == [], summary
    # The run did what a soak is for: money moved every way, and faults were met.
    assert report.steps == STEPS
    for operation in ("pay_cash", "pay_card_in_portal", "refund", "apply_credit", "top_up"):
        assert report.operations[operation] > 0, summary
    assert sum(report.faults.values()) > 10, summary
    assert report.outcomes["stripe succeeded intents"] > 0, summary
