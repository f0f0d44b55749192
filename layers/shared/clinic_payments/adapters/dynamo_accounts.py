"""The patient accounts of PaymentsTable, for the daily audit: a paged Scan.

A Scan reads, and is billed for, every item of every page whatever the projection and filter
keep; only the scheduled audit uses it (PaymentsTableAuditPolicy), never a request path.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from clinic_payments.adapters.codec import patient_pk
from clinic_payments.domain.daily_audit import AccountPage, PatientAccount

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

_CLINIC = patient_pk("", "").split("#PATIENT#")[0]  # "CLINIC#"
_PATIENT = "#PATIENT#"


class DynamoPatientAccounts:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._ddb = client
        self._table = table_name

    def patient_accounts(self, cursor: str | None, page_size: int) -> AccountPage:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Limit": page_size,
            "ProjectionExpression": "pk",
            "FilterExpression": "begins_with(pk, :clinic) AND contains(pk, :patient)",
            "ExpressionAttributeValues": {":clinic": {"S": _CLINIC}, ":patient": {"S": _PATIENT}},
        }
        if cursor is not None:
            kwargs["ExclusiveStartKey"] = json.loads(cursor)
        page = self._ddb.scan(**kwargs)
        accounts: list[PatientAccount] = []
        for item in page.get("Items", []):
            clinic_id, _, patient_id = item["pk"]["S"].removeprefix(_CLINIC).partition(_PATIENT)
            account = PatientAccount(clinic_id, patient_id)
            if not accounts or accounts[-1] != account:
                accounts.append(account)
        last = page.get("LastEvaluatedKey")
        return AccountPage(accounts, json.dumps(last, sort_keys=True) if last else None)
