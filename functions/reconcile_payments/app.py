"""ReconcilePaymentsFunction (every 5 minutes): settle payments left non-final by asking Stripe."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from clinic_payments.api.observability import logger, metrics, publish_reconcile_report, tracer
from clinic_payments.wiring import container, load_stripe

load_stripe()  # at init: every run asks Stripe


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = container().reconciler.run()
    logger.info("reconciled", extra=asdict(report))
    publish_reconcile_report(report)
    return asdict(report)
