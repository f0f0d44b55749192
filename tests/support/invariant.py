"""The money invariant of DESIGN.md, checked on the table itself (not through the API).

Every amount captured is applied to invoices, held as credit, or recorded as fee; no invoice is
paid beyond its total; the credit balance is the sum of its ledger entries; nothing twice.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

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
    items = partition(moto_url, table, clinic_id, patient_id)
    invoices = {i["id"]: i for i in items if i.get("type") == "invoice"}
    payments = [i for i in items if i.get("type") == "payment"]
    ledger = [i for i in items if i.get("type") == "ledger"]
    credits = {i["currency"]: i for i in items if str(i["sk"]).startswith("CREDIT#")}

    applied_by_invoice: Counter[str] = Counter()
    for p in payments:
        if p["status"] != "succeeded":
            assert int(p.get("amount_received") or 0) == 0 or p["method"] == "card", p
            continue
        applied = sum(int(a["amount"]) for a in p["allocations"])
        received = int(p["amount_received"])
        # What was captured is what was asked: the amount and the pass-through fee.
        assert received == int(p["amount"]) + int(p["fee_amount"]), p["id"]
        assert received == applied + int(p["credit_amount"]) + int(p["fee_amount"]), p["id"]
        for a in p["allocations"]:
            applied_by_invoice[a["invoice_id"]] += int(a["amount"])
        credited = sum(int(e["amount"]) for e in ledger if e.get("payment_id") == p["id"])
        assert credited == int(p["credit_amount"]), p["id"]

    for inv_id, inv in invoices.items():
        refs = inv.get("payments") or []
        assert len({r["payment_id"] for r in refs}) == len(refs), f"{inv_id} counted twice"
        assert int(inv["amount_paid"]) == sum(int(r["amount"]) for r in refs), inv_id
        assert int(inv["amount_paid"]) == applied_by_invoice[inv_id], inv_id
        assert 0 <= int(inv["amount_paid"]) <= int(inv["total"]), inv_id
        expected = "paid" if int(inv["amount_paid"]) == int(inv["total"]) else None
        if expected:
            assert inv["status"] == "paid", inv_id

    for currency in {e["currency"] for e in ledger} | set(credits):
        credit = credits.get(currency)
        balance = int(credit["balance"]) if credit else 0
        entries = [int(e["amount"]) for e in ledger if e["currency"] == currency]
        assert balance == sum(entries), f"{currency} credit != sum of its ledger entries"
        assert balance >= 0
