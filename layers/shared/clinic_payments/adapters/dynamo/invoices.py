"""InvoiceStore: a patient's invoices (numbered per clinic) and the summary kept beside them.

`invoice_amount_update` is the one way money moves onto or off an invoice, as an item of the
transaction that moves it (a payment, credit applied, a refund, a failed refund giving back).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import Item, clinic_pk, patient_pk
from clinic_payments.adapters.dynamo.summary import (
    SUMMARY_SK,
    SUMMARY_TYPE,
    SummaryChange,
    outstanding_change,
    summary_from,
)
from clinic_payments.adapters.dynamo.table import (
    CARRIED,
    OnTable,
    dump,
    encode_cursor,
    load,
    refusal,
    values,
)
from clinic_payments.domain.errors import ConflictError, ServiceUnavailableError
from clinic_payments.domain.model import Invoice, InvoiceStatus, Page
from clinic_payments.domain.ports import InvoiceAmountChange, PatientSummary

_OPEN = (InvoiceStatus.OPEN.value, InvoiceStatus.PARTIALLY_PAID.value)


def invoice_sk(invoice_id: str) -> str:
    return f"INVOICE#{invoice_id}"


def _status_filter(status: str, named: dict[str, Any]) -> str | None:
    """The filter of a list by status ("all", "open" or one status); its values go in `named`."""
    if status == "all":
        return None
    wanted = _OPEN if status == "open" else (status,)
    named.update({f":s{i}": s for i, s in enumerate(wanted)})
    return "#status IN (" + ", ".join(f":s{i}" for i in range(len(wanted))) + ")"


def invoice_amount_update(
    table_name: str, clinic_id: str, pk: str, change: InvoiceAmountChange
) -> dict[str, Any]:
    """Move an invoice's amount_paid by the change's delta (a payment or credit adds, a
    refund takes back), on the amount_paid it was read at: never past its total, never on a
    void one. Paid: it leaves the open-invoices index. Taken back: it enters it again."""
    expression = (
        "SET amount_paid = amount_paid + :delta, #status = :status, "
        "payments = list_append(if_not_exists(payments, :empty), :ref)"
    )
    named: dict[str, Any] = {
        ":delta": change.delta,
        ":status": change.new_status.value,
        ":empty": [],
        ":ref": [codec.ref_to(change.ref)],
        ":seen": change.seen_amount_paid,
        ":void": InvoiceStatus.VOID.value,
    }
    if change.delta < 0:
        expression += ", gsi1pk = :gpk, gsi1sk = :gsk REMOVE paid_at"
        named[":gpk"], named[":gsk"] = codec.open_invoice_index(
            clinic_id, change.invoice_id, change.due_date
        )
    elif change.new_status is InvoiceStatus.PAID:
        expression += ", paid_at = :paid_at REMOVE gsi1pk, gsi1sk"
        named[":paid_at"] = change.ref.at
    return {
        "TableName": table_name,
        "Key": dump({"pk": pk, "sk": invoice_sk(change.invoice_id)}),
        "UpdateExpression": expression,
        "ConditionExpression": "amount_paid = :seen AND #status <> :void",
        "ExpressionAttributeNames": {"#status": "status"},
        "ExpressionAttributeValues": values(named),
        CARRIED: outstanding_change(
            pk,
            change.invoice_id,
            change.total,
            change.seen_amount_paid,
            change.seen_amount_paid + change.delta,
        ),
    }


class DynamoInvoices(OnTable):
    def next_invoice_number(self, clinic_id: str) -> int:
        out = self._t.client.update_item(
            TableName=self._t.name,
            Key=self._t.key(clinic_pk(clinic_id), "COUNTER#INVOICE"),
            UpdateExpression="ADD #n :one",
            ExpressionAttributeNames={"#n": "value"},
            ExpressionAttributeValues=values({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        return int(load(out["Attributes"])["value"])

    def put_new_invoice(self, invoice: Invoice) -> None:
        pk = patient_pk(invoice.clinic_id, invoice.patient_id)
        put = {
            "TableName": self._t.name,
            "Item": dump(codec.invoice_to_item(invoice)),
            "ConditionExpression": "attribute_not_exists(pk)",
            # one more invoice to pay, for its balance due
            CARRIED: SummaryChange(pk, 1, invoice.balance_due, opened={invoice.id})
            if invoice.is_payable
            else SummaryChange(pk),
        }
        try:
            self._t.transact([{"Put": put}])
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                raise ConflictError("An invoice with this id exists.") from exc
            raise ServiceUnavailableError(
                "The service is busy; nothing was changed. Retry shortly."
            ) from exc

    def get_invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice | None:
        item = self._t.get(patient_pk(clinic_id, patient_id), invoice_sk(invoice_id))
        return codec.invoice_from(item) if item else None

    def list_invoices(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> Page[Invoice]:
        pk = patient_pk(clinic_id, patient_id)
        kwargs: dict[str, Any] = {}
        named: dict[str, Any] = {":pk": pk, ":prefix": "INVOICE#"}
        if (wanted := _status_filter(status, named)) is not None:
            kwargs["FilterExpression"] = wanted
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
        kwargs["ExpressionAttributeValues"] = values(named)
        items, next_cursor = self._t.page(kwargs, pk, "INVOICE#", limit, cursor)
        return Page([codec.invoice_from(i) for i in items], next_cursor)

    def list_invoices_summarized(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> tuple[Page[Invoice], PatientSummary | None]:
        """A page of invoices, newest first, and the patient's summary. The first page is one
        Query (the summary sorts right after the invoices); a later page reads the summary by
        its key. None: the patient has no summary (nothing was ever written for them)."""
        if cursor is not None:
            page = self.list_invoices(clinic_id, patient_id, status, limit, cursor)
            return page, self.get_summary(clinic_id, patient_id)
        pk = patient_pk(clinic_id, patient_id)
        named: dict[str, Any] = {":pk": pk, ":from": "INVOICE#", ":to": SUMMARY_SK}
        kwargs: dict[str, Any] = {
            "TableName": self._t.name,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if (wanted := _status_filter(status, named)) is not None:
            kwargs["FilterExpression"] = f"{wanted} OR #type = :summary"
            kwargs["ExpressionAttributeNames"] = {"#status": "status", "#type": "type"}
            named[":summary"] = SUMMARY_TYPE
        kwargs["ExpressionAttributeValues"] = values(named)
        summary: PatientSummary | None = None
        found: list[Item] = []
        while True:
            # One more than a page (and the summary): whether a next page exists.
            kwargs["Limit"] = limit - len(found) + 1 + (1 if summary is None else 0)
            out = self._t.client.query(**kwargs)
            for raw in out.get("Items", []):
                item = load(raw)
                if item.get("type") == SUMMARY_TYPE:
                    summary = summary_from(item)
                    continue
                found.append(item)
                if len(found) > limit:
                    invoices = [codec.invoice_from(i) for i in found[:limit]]
                    cursor_sk = str(found[limit - 1]["sk"])
                    return Page(invoices, encode_cursor(cursor_sk)), summary
            if "LastEvaluatedKey" not in out:
                return Page([codec.invoice_from(i) for i in found], None), summary
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def get_summary(self, clinic_id: str, patient_id: str) -> PatientSummary | None:
        item = self._t.get(patient_pk(clinic_id, patient_id), SUMMARY_SK)
        return summary_from(item) if item else None

    def establish_summary(
        self, clinic_id: str, patient_id: str, summary: PatientSummary, seen: PatientSummary | None
    ) -> bool:
        item: Item = {
            "pk": patient_pk(clinic_id, patient_id),
            "sk": SUMMARY_SK,
            "type": SUMMARY_TYPE,
            "outstanding_count": summary.outstanding_count,
            "outstanding_amount": summary.outstanding_amount,
            "version": (seen.version if seen else 0) + 1,
            "established": True,
            **{f"credit_{c}": v for c, v in summary.credits.items() if v},
        }
        if summary.open_invoice_ids:
            item["open_invoices"] = set(summary.open_invoice_ids)
        if seen is None:
            return self._t.put_if_absent(item)
        # Moved meanwhile (False): the next reader tries again.
        return self._t.put_if(item, "version = :seen", {":seen": seen.version})

    def all_invoices(self, clinic_id: str, patient_id: str) -> list[Invoice]:
        items = self._t.query_all(patient_pk(clinic_id, patient_id), "INVOICE#")
        return [codec.invoice_from(i) for i in items]

    def void_invoice(self, invoice: Invoice, at: str) -> None:
        pk = patient_pk(invoice.clinic_id, invoice.patient_id)
        update = {
            "TableName": self._t.name,
            "Key": dump({"pk": pk, "sk": invoice_sk(invoice.id)}),
            "UpdateExpression": "SET #status = :void, voided_at = :at REMOVE gsi1pk, gsi1sk",
            # A payment may have landed since the invoice was read: only void an unpaid one
            # (so what leaves the outstanding amount is its total).
            "ConditionExpression": "amount_paid = :zero AND #status <> :void",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": values({":void": "void", ":at": at, ":zero": 0}),
            CARRIED: SummaryChange(pk, -1, -invoice.total, closed={invoice.id})
            if invoice.total > 0
            else SummaryChange(pk),
        }
        try:
            self._t.transact([{"Update": update}])
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                raise ConflictError("The invoice has payments on it or is already void.") from exc
            raise ServiceUnavailableError(
                "The service is busy; nothing was changed. Retry shortly."
            ) from exc
