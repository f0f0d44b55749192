"""DailyAuditFunction (once a day): recompute every patient account and count the differences."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from clinic_payments.api.observability import logger, metrics, publish_daily_audit, tracer
from clinic_payments.wiring import container


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = container().daily_audit.run(time_left_ms=context.get_remaining_time_in_millis)
    publish_daily_audit(report)
    return {
        "accounts": report.accounts,
        "differences": len(report.differences),
        "complete": report.complete,
    }
