"""Logger, tracer and metrics of every function (service and namespace from the template).

A count that has outcomes is one metric with an `outcome` dimension (`Payments` with
`outcome=succeeded`), never one metric per outcome: one alarm or graph covers them all, and a new
outcome needs no new alarm. template.yaml's alarms name these metrics and dimensions.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import wrapt
from aws_lambda_powertools import Logger, Metrics, Tracer, single_metric
from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    from clinic_payments.domain.daily_audit import DailyAuditReport
    from clinic_payments.domain.reconciling import ReconcileReport

NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ClinicPayments")
SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "clinic-payments")
OUTCOME = "outcome"
WEBHOOK_EVENTS_METRIC = "WebhookEvents"
PAYMENTS_METRIC = "Payments"
RECONCILED_PAYMENTS_METRIC = "ReconciledPayments"
RECONCILED_REFUNDS_METRIC = "ReconciledRefunds"
RECEIPT_RETRIES_METRIC = "ReceiptRetries"
AUDIT_RUNS_METRIC = "AuditRuns"
AUDIT_DIFFERENCES_METRIC = "AuditDifferences"
AUDITED_ACCOUNTS_METRIC = "AuditedAccounts"
# What X-Ray sees below a handler: botocore is every AWS call (DynamoDB, Secrets Manager, SES),
# requests is stripe-python's HTTP client (every Stripe call). Not httplib: requests goes through
# it, and each Stripe call would be traced twice.
TRACED_MODULES = ("botocore", "requests")

logger = Logger(service=SERVICE)
# The service dimension is named here, not only read from the environment: the alarms name it.
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
# Off, and nothing patched, outside Lambda (no LAMBDA_TASK_ROOT) and wherever
# POWERTOOLS_TRACE_DISABLED is true: the local stack and the tests set it.
tracer = Tracer(service=SERVICE, patch_modules=[m for m in TRACED_MODULES if m != "requests"])
# requests is patched once something imports it (stripe-python does, in the functions that call
# Stripe): patching it now would import it, and urllib3, into every function's cold start.
wrapt.register_post_import_hook(lambda _requests: tracer.patch(["requests"]), "requests")


def count(name: str, outcome: str, value: int = 1) -> None:
    """`value` more of metric `name`, with its outcome as the `outcome` dimension. Emitted on its
    own, so that the dimension stays on this metric: a dimension added to `metrics` would apply
    to every metric of the invocation."""
    with single_metric(
        name=name,
        unit=MetricUnit.Count,
        value=value,
        namespace=NAMESPACE,
        default_dimensions={"service": SERVICE},
    ) as metric:
        metric.add_dimension(name=OUTCOME, value=outcome)


def count_webhook_event(outcome: str) -> None:
    """One Stripe event handled, by outcome: processed, duplicate, ignored, unexpected_shape,
    or failed (answered 5xx, so Stripe sends it again)."""
    count(WEBHOOK_EVENTS_METRIC, outcome)


def count_payment(status: str) -> None:
    """One payment request answered, by the payment's status (succeeded, processing...)."""
    count(PAYMENTS_METRIC, status)


def publish_reconcile_report(report: ReconcileReport) -> None:
    """One run of the reconciler: the payments it looked at by outcome (`error`: it could not
    reconcile one, the next run tries again), the reserved refunds it finished, and the receipts
    it sent again."""
    for outcome, value in (
        ("settled", report.settled),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("abandoned", report.abandoned),
        ("error", len(report.errors)),
    ):
        count(RECONCILED_PAYMENTS_METRIC, outcome, value)
    count(RECONCILED_REFUNDS_METRIC, "confirmed", report.refunds_confirmed)
    count(RECONCILED_REFUNDS_METRIC, "released", report.refunds_released)
    count(RECEIPT_RETRIES_METRIC, "sent", report.receipts_sent)
    count(RECEIPT_RETRIES_METRIC, "failed", report.receipts_failed)


def publish_daily_audit(report: DailyAuditReport) -> None:
    """The daily audit's result: one log line per difference (ids only), the number of
    differences (0 when every account adds up: the audit alarm watches it) and of accounts, and
    one run by outcome (`complete`, or `incomplete` when it ran out of time or hit its cap)."""
    for found in report.differences:
        logger.warning(
            "audit difference",
            extra={
                "clinic_id": found.clinic_id,
                "patient_id": found.patient_id,
                "subject": found.difference.subject,
                "problem": found.difference.problem,
            },
        )
    logger.info(
        "daily audit",
        extra={
            "accounts": report.accounts,
            "differences": len(report.differences),
            "complete": report.complete,
        },
    )
    metrics.add_metric(
        name=AUDIT_DIFFERENCES_METRIC, unit=MetricUnit.Count, value=len(report.differences)
    )
    metrics.add_metric(name=AUDITED_ACCOUNTS_METRIC, unit=MetricUnit.Count, value=report.accounts)
    count(AUDIT_RUNS_METRIC, "complete" if report.complete else "incomplete")
