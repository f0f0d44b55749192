"""ReconcilePaymentsFunction (every 5 minutes): settle payments left non-final by asking Stripe."""

from dataclasses import asdict
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from clinic_payments.api.observability import logger, metrics
from clinic_payments.wiring import container


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = container().reconciler.run()
    logger.info("reconciled", extra=asdict(report))
    metrics.add_metric(name="ReconcilerSettled", unit="Count", value=report.settled)
    return asdict(report)
