"""DailyAuditFunction against moto: every account of the table audited, differences counted in
the metric its alarm watches (CloudWatch embedded metric format on stdout)."""

from __future__ import annotations

import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from local.aws import client, create_payments_table
from tests.conftest import Api, Stack, make_clinic

pytestmark = pytest.mark.integration


@dataclass
class ScheduledContext:
    """What EventBridge's invocation gives the handler: a context, and 15 minutes."""

    function_name: str = "DailyAuditFunction"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:DailyAuditFunction"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def own_table(stack: Stack) -> Iterator[str]:
    """A table of this test's own: the audit reads every account of the table, and the session
    table holds other tests' clinics (some tampered with on purpose)."""
    from clinic_payments.wiring import reset_container

    table = f"PaymentsTable-audit-{secrets.token_hex(4)}"
    create_payments_table(stack.moto_url, table)
    saved = os.environ["TABLE_NAME"]
    os.environ["TABLE_NAME"] = table
    reset_container()
    try:
        yield table
    finally:
        os.environ["TABLE_NAME"] = saved
        reset_container()


@pytest.fixture
def audited_clinic(own_table: str, stack: Stack) -> Api:
    return make_clinic(stack)


def run_daily_audit() -> dict[str, Any]:
    from functions.daily_audit.app import lambda_handler

    return lambda_handler({"source": "aws.events"}, ScheduledContext())  # type: ignore[arg-type]


def emitted(stdout: str) -> dict[tuple[str, str | None], float]:
    """Each metric written, by name and `outcome` dimension (None: no outcome)."""
    found: dict[tuple[str, str | None], float] = {}
    for line in stdout.splitlines():
        try:
            blob = json.loads(line)
        except ValueError:
            continue
        if not isinstance(blob, dict) or "_aws" not in blob:
            continue
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                found[(metric["Name"], blob.get("outcome"))] = (
                    value[0] if isinstance(value, list) else value
                )
    return found


def paid_in_cash(clinic: Api, patient: str, amount: int) -> dict[str, Any]:
    invoice = clinic.create_invoice(patient, amount)
    status, body = clinic.pay(
        patient,
        {"method": "cash", "amount": amount + 500, "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )
    assert status == 201, body
    return invoice


def test_accounts_that_add_up_report_zero_differences(audited_clinic: Api, capsys) -> None:
    for patient in ("pat_a", "pat_b"):
        paid_in_cash(audited_clinic, patient, 3000)
    capsys.readouterr()

    result = run_daily_audit()

    assert result == {"accounts": 2, "differences": 0, "complete": True}
    metrics = emitted(capsys.readouterr().out)
    assert metrics[("AuditDifferences", None)] == 0
    assert metrics[("AuditedAccounts", None)] == 2
    assert metrics[("AuditRuns", "complete")] == 1


def test_a_tampered_invoice_is_counted_and_logged(
    audited_clinic: Api, own_table: str, capsys, caplog
):
    paid_in_cash(audited_clinic, "pat_a", 3000)
    invoice = paid_in_cash(audited_clinic, "pat_b", 2000)
    client("dynamodb", audited_clinic.stack.moto_url).update_item(
        TableName=own_table,
        Key={
            "pk": {"S": f"CLINIC#{audited_clinic.clinic_id}#PATIENT#pat_b"},
            "sk": {"S": f"INVOICE#{invoice['id']}"},
        },
        UpdateExpression="SET amount_paid = :x",
        ExpressionAttributeValues={":x": {"N": "1500"}},
    )
    capsys.readouterr()

    result = run_daily_audit()

    assert result["accounts"] == 2
    assert result["differences"] > 0
    out = capsys.readouterr().out
    assert emitted(out)[("AuditDifferences", None)] == result["differences"]
    logged = [r for r in caplog.records if r.getMessage() == "audit difference"]
    assert len(logged) == result["differences"]
    assert {(r.clinic_id, r.patient_id, r.subject) for r in logged} == {
        (audited_clinic.clinic_id, "pat_b", f"invoice {invoice['id']}")
    }


def test_the_scan_pages_through_every_account_once(audited_clinic: Api, own_table: str) -> None:
    from clinic_payments.adapters.dynamo_accounts import DynamoPatientAccounts
    from clinic_payments.domain.audit import Auditor
    from clinic_payments.domain.daily_audit import DailyAudit, PatientAccount
    from clinic_payments.wiring import container

    for patient in ("pat_a", "pat_b"):
        paid_in_cash(audited_clinic, patient, 3000)  # several items per account
    directory = DynamoPatientAccounts(client("dynamodb", audited_clinic.stack.moto_url), own_table)
    pages, cursor = [], None
    while True:
        page = directory.patient_accounts(cursor, page_size=1)
        pages.append(page.accounts)
        if page.cursor is None:
            break
        cursor = page.cursor
    # One item per page: the clinic's own items (settings, accounts) are skipped, and each
    # account's items come one page after another.
    assert len(pages) > 2
    seen = [account for page in pages for account in page]
    assert set(seen) == {PatientAccount(audited_clinic.clinic_id, p) for p in ("pat_a", "pat_b")}

    audit = DailyAudit(directory, Auditor(container().repository, None), page_size=1)
    report = audit.run(ScheduledContext().get_remaining_time_in_millis)
    assert (report.accounts, report.differences, report.complete) == (2, [], True)
