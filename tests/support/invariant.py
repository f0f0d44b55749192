"""The money invariant of DESIGN.md, checked on the table itself after a test moves money.

It is the same recomputation `make audit` runs (clinic_payments.domain.audit), over what the
repository reads back: every captured amount applied, held as credit, or fee; no invoice paid
beyond its total; each currency's credit balance the sum of its ledger; nothing twice.
"""

from __future__ import annotations

from typing import Any

from boto3.dynamodb.types import TypeDeserializer
from clinic_payments.adapters.dynamo_repository import DynamoPaymentsRepository
from clinic_payments.domain.audit import audit_account, audit_summary

from local.aws import client

_de = TypeDeserializer()


def partition(moto_url: str, table: str, clinic_id: str, patient_id: str) -> list[dict[str, Any]]:
    ddb = client("dynamodb", moto_url)
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"CLINIC#{clinic_id}#PATIENT#{patient_id}"}},
        "ConsistentRead": True,
    }
    while True:
        page = ddb.query(**kwargs)
        items += [{k: _de.deserialize(v) for k, v in i.items()} for i in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def assert_money_invariant(moto_url: str, table: str, clinic_id: str, patient_id: str) -> None:
    repo = DynamoPaymentsRepository(client("dynamodb", moto_url), table)
    invoices = repo.all_invoices(clinic_id, patient_id)
    credits = repo.list_credits(clinic_id, patient_id)
    differences = audit_account(
        invoices,
        repo.all_payments(clinic_id, patient_id),
        repo.all_ledger(clinic_id, patient_id),
        credits,
    )
    # The summary a list of invoices shows, kept by the same writes.
    differences += audit_summary(repo.get_summary(clinic_id, patient_id), invoices, credits)
    assert differences == [], "\n".join(str(d) for d in differences)
