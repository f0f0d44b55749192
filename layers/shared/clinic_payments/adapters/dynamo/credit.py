"""CreditLedger: a patient's credit per currency (balance and lots, one item each) and its
append-only ledger.

Every movement is one transaction with its ledger entry, conditional on the credit's version as
read (`credit_items`): the movement was planned lot by lot from that credit, so whatever moved
it since fails the whole transaction and the service plans again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import patient_pk
from clinic_payments.adapters.dynamo.idempotency import answer_update
from clinic_payments.adapters.dynamo.invoices import invoice_amount_update
from clinic_payments.adapters.dynamo.summary import SummaryChange
from clinic_payments.adapters.dynamo.table import CARRIED, OnTable, dump, refusal, values
from clinic_payments.domain.errors import StaleWriteError
from clinic_payments.domain.model import Credit, LedgerEntry, Page, Payment
from clinic_payments.domain.ports import (
    CreditApplication,
    CreditChange,
    InvoiceAmountChange,
    RequestAnswer,
)


def ledger_put(
    table_name: str, clinic_id: str, patient_id: str, entry: LedgerEntry
) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "Item": dump(codec.ledger_to_item(clinic_id, patient_id, entry)),
        # Append-only, and the entry id makes a retried movement a no-op.
        "ConditionExpression": "attribute_not_exists(pk)",
    }


def credit_items(
    table_name: str, clinic_id: str, patient_id: str, change: CreditChange
) -> list[Any]:
    """The credit item (balance, lots, version) as the movement leaves it, and its ledger
    entry. The item is written only if it is still at the version read: whatever moved it since
    (a refund, an application, a settlement) fails the whole transaction. That is the balance
    and lots check, in the write itself."""
    new = replace(change.new, version=change.seen.version + 1)
    if new.balance < 0 or any(lot.amount < 0 for lot in new.lots):
        raise ValueError("a credit movement planned below zero")  # a bug, never a race
    put: dict[str, Any] = {
        "TableName": table_name,
        "Item": dump(codec.credit_to_item(clinic_id, patient_id, new)),
        CARRIED: SummaryChange(
            patient_pk(clinic_id, patient_id),
            credits={str(new.currency): new.balance - change.seen.balance},
        ),
    }
    if change.seen.version == 0:
        put["ConditionExpression"] = "attribute_not_exists(pk)"
    else:
        put["ConditionExpression"] = "version = :seen"
        put["ExpressionAttributeValues"] = values({":seen": change.seen.version})
    return [{"Put": put}, {"Put": ledger_put(table_name, clinic_id, patient_id, change.entry)}]


def money_back_items(
    table_name: str, p: Payment, invoices: list[InvoiceAmountChange], credit: CreditChange | None
) -> list[Any]:
    """Transaction items that put money onto invoices (each on the amount_paid read) and
    the rest onto the patient's credit with its ledger entry: a settlement, or a failed
    refund giving back what it took."""
    pk = patient_pk(p.clinic_id, p.patient_id)
    items: list[Any] = [
        {"Update": invoice_amount_update(table_name, p.clinic_id, pk, change)}
        for change in invoices
    ]
    if credit is not None:
        # One balance per currency: an overpayment in CAD never adds to USD.
        items += credit_items(table_name, p.clinic_id, p.patient_id, credit)
    return items


class DynamoCreditLedger(OnTable):
    def get_credit(self, clinic_id: str, patient_id: str, currency: str) -> Credit:
        item = self._t.get(patient_pk(clinic_id, patient_id), f"CREDIT#{currency}")
        if item is None:
            return Credit(balance=0, currency=currency, version=0)
        return codec.credit_from(item)

    def list_credits(self, clinic_id: str, patient_id: str) -> dict[str, Credit]:
        items = self._t.query_all(patient_pk(clinic_id, patient_id), "CREDIT#")
        return {str(i["currency"]): codec.credit_from(i) for i in items}

    def list_ledger(
        self,
        clinic_id: str,
        patient_id: str,
        currency: str | None,
        limit: int,
        cursor: str | None,
    ) -> Page[LedgerEntry]:
        pk = patient_pk(clinic_id, patient_id)
        kwargs: dict[str, Any] = {}
        named: dict[str, Any] = {":pk": pk, ":prefix": "LEDGER#"}
        if currency:
            kwargs["FilterExpression"] = "currency = :currency"
            named[":currency"] = currency
        kwargs["ExpressionAttributeValues"] = values(named)
        items, next_cursor = self._t.page(kwargs, pk, "LEDGER#", limit, cursor)
        return Page([codec.ledger_from(i) for i in items], next_cursor)

    def all_ledger(self, clinic_id: str, patient_id: str) -> list[LedgerEntry]:
        items = self._t.query_all(patient_pk(clinic_id, patient_id), "LEDGER#")
        return [codec.ledger_from(i) for i in items]

    def ledger_entry_exists(self, clinic_id: str, patient_id: str, entry_id: str) -> bool:
        pk = patient_pk(clinic_id, patient_id)
        return self._t.get(pk, codec.ledger_sk(entry_id)) is not None

    def apply_credit(
        self,
        clinic_id: str,
        patient_id: str,
        write: CreditApplication,
        answer: RequestAnswer | None = None,
    ) -> bool:
        pk = patient_pk(clinic_id, patient_id)
        credit, ledger = credit_items(self._t.name, clinic_id, patient_id, write.credit)
        items: list[Any] = [
            ledger,
            credit,
            {"Update": invoice_amount_update(self._t.name, clinic_id, pk, write.invoice)},
        ]
        if answer is not None:
            items.append({"Update": answer_update(self._t.name, answer)})
        try:
            self._t.transact(items)
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                return False  # applied already: this is a retry
            raise StaleWriteError("The credit or the invoice changed.") from exc
        return True

    def adjust_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> LedgerEntry:
        entry = change.entry
        credit, ledger = credit_items(self._t.name, clinic_id, patient_id, change)
        try:
            self._t.transact([ledger, credit])
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                stored = self._t.get(patient_pk(clinic_id, patient_id), codec.ledger_sk(entry.id))
                return codec.ledger_from(stored) if stored else entry
            raise StaleWriteError("The credit moved.") from exc
        return entry
