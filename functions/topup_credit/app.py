"""TopupCreditFunction: patients (or staff) add account credit by card."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from clinic_payments.api.http import build_resolver
from clinic_payments.api.observability import logger, metrics, tracer
from clinic_payments.api.routes.credit import topup_router
from clinic_payments.wiring import load_stripe

app = build_resolver(topup_router())
load_stripe()  # at init: this function's requests call Stripe


@logger.inject_lambda_context(
    correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False, clear_state=True
)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
