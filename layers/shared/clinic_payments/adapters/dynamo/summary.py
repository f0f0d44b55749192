"""A patient's account summary, kept by the transactions that move money.

What is outstanding (payable invoices, their balance due, in every currency), which invoices are
open, and the credit balance of each currency, in one item that sorts right after the invoices,
so a list of invoices is one Query. A transaction item carries its `SummaryChange` (table.CARRIED);
the table merges them into one update of the summary, written last in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clinic_payments.adapters.codec import Item
from clinic_payments.adapters.dynamo.table import dump, values
from clinic_payments.domain.ports import PatientSummary

SUMMARY_SK = "INVOICE$"
SUMMARY_TYPE = "patient_summary"


@dataclass
class SummaryChange:
    pk: str
    outstanding_count: int = 0
    outstanding_amount: int = 0
    credits: dict[str, int] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)  # invoices payable now, not before
    closed: set[str] = field(default_factory=set)  # payable before, not now

    @property
    def key(self) -> str:
        return self.pk

    def add(self, other: SummaryChange) -> None:
        self.outstanding_count += other.outstanding_count
        self.outstanding_amount += other.outstanding_amount
        for currency, delta in other.credits.items():
            self.credits[currency] = self.credits.get(currency, 0) + delta
        self.opened |= other.opened
        self.closed |= other.closed

    def write(self, table_name: str) -> dict[str, Any] | None:
        numbers = {
            "outstanding_count": self.outstanding_count,
            "outstanding_amount": self.outstanding_amount,
            **{f"credit_{currency}": delta for currency, delta in self.credits.items()},
        }
        adds: dict[str, Any] = {name: delta for name, delta in numbers.items() if delta}
        if self.opened or self.closed or adds:
            adds["version"] = 1
        if self.opened and self.closed:
            # One transaction moves money one way (onto invoices, or back off them).
            raise ValueError("a transaction opening and closing invoices at once")
        deletes: dict[str, Any] = {}
        if self.opened:
            adds["open_invoices"] = set(self.opened)
        if self.closed:
            deletes["open_invoices"] = set(self.closed)
        if not adds and not deletes:
            return None
        names: dict[str, str] = {"#type": "type"}
        named: dict[str, Any] = {":type": SUMMARY_TYPE}
        expression = "SET #type = :type"
        for clause, changes in (("ADD", adds), ("DELETE", deletes)):
            if not changes:
                continue
            parts = []
            for name, value in changes.items():
                n = len(names)
                names[f"#a{n}"], named[f":a{n}"] = name, value
                parts.append(f"#a{n} :a{n}")
            expression += f" {clause} " + ", ".join(parts)
        return {
            "TableName": table_name,
            "Key": dump({"pk": self.pk, "sk": SUMMARY_SK}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values(named),
        }


def outstanding_change(
    pk: str, invoice_id: str, total: int, paid_before: int, paid_after: int
) -> SummaryChange:
    """An invoice's amount paid moves: what that does to the outstanding count and amount, and
    to the set of payable invoices."""
    before = total - paid_before if paid_before < total else 0
    after = total - paid_after if paid_after < total else 0
    was, now = paid_before < total, paid_after < total
    return SummaryChange(
        pk,
        int(now) - int(was),
        after - before,
        opened={invoice_id} if now and not was else set(),
        closed={invoice_id} if was and not now else set(),
    )


def summary_from(item: Item) -> PatientSummary:
    return PatientSummary(
        outstanding_count=int(item.get("outstanding_count", 0)),
        outstanding_amount=int(item.get("outstanding_amount", 0)),
        credits={
            str(k).removeprefix("credit_"): int(v)
            for k, v in item.items()
            if str(k).startswith("credit_")
        },
        open_invoice_ids=frozenset(str(i) for i in item.get("open_invoices") or ()),
        version=int(item.get("version", 0)),
        established=bool(item.get("established", False)),
    )
