"""The metrics the alarms watch, as written (CloudWatch embedded metric format on stdout)."""

from __future__ import annotations

import json

import pytest
from clinic_payments.api.observability import count, publish_reconcile_report
from clinic_payments.domain.reconciling import ReconcileReport

pytestmark = pytest.mark.unit


def written(stdout: str) -> list[tuple[str, dict[str, str], float]]:
    """(metric name, dimensions, value) of each metric written."""
    found = []
    for line in stdout.splitlines():
        blob = json.loads(line)
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            [names] = directive["Dimensions"]
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found.append(
                    (
                        metric["Name"],
                        {name: blob[name] for name in names},
                        value[0] if isinstance(value, list) else value,
                    )
                )
    return found


def test_an_outcome_is_a_dimension_of_one_metric(capsys) -> None:
    count("Payments", "succeeded")
    count("Payments", "processing", 2)

    assert written(capsys.readouterr().out) == [
        ("Payments", {"outcome": "succeeded", "service": "clinic-payments"}, 1),
        ("Payments", {"outcome": "processing", "service": "clinic-payments"}, 2),
    ]


def test_a_reconciler_run_is_counted_by_outcome_zeros_included(capsys) -> None:
    report = ReconcileReport(examined=4, settled=2, unchanged=1, errors=["pay_1: x"])
    report.refunds_confirmed = 1
    report.receipts_sent = 3

    publish_reconcile_report(report)

    by_outcome = {
        (name, dims["outcome"]): value for name, dims, value in written(capsys.readouterr().out)
    }
    assert by_outcome == {
        ("ReconciledPayments", "settled"): 2,
        ("ReconciledPayments", "updated"): 0,
        ("ReconciledPayments", "unchanged"): 1,
        ("ReconciledPayments", "abandoned"): 0,
        ("ReconciledPayments", "error"): 1,
        ("ReconciledRefunds", "confirmed"): 1,
        ("ReconciledRefunds", "released"): 0,
        ("ReceiptRetries", "sent"): 3,
        ("ReceiptRetries", "failed"): 0,
    }
