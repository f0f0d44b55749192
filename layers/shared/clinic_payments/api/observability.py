"""Logger and metrics, shared by every function (service name and namespace from the template)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, single_metric
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ClinicPayments")
WEBHOOK_EVENTS_METRIC = "WebhookEvents"

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "clinic-payments"))
metrics = Metrics(namespace=NAMESPACE)


def count_webhook_event(outcome: str) -> None:
    """One Stripe event handled, by outcome (processed, duplicate, ignored, unexpected_shape).
    The outcome is a dimension of one metric, so one alarm or graph covers every outcome; it is
    emitted on its own so that no other metric of the invocation takes the dimension."""
    with single_metric(
        name=WEBHOOK_EVENTS_METRIC, unit=MetricUnit.Count, value=1, namespace=NAMESPACE
    ) as metric:
        metric.add_dimension(name="outcome", value=outcome)
