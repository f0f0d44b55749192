"""DynamoDB implementation of PaymentsRepository: one table, a patient's account per partition.

Every write that decides money is conditional; a settlement is one transaction. No Scan.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import Item, clinic_pk, patient_pk
from clinic_payments.domain.errors import (
    ConflictError,
    ServiceUnavailableError,
    StaleWriteError,
    ValidationError,
)
from clinic_payments.domain.model import (
    Allocation,
    CardConsent,
    CardSetup,
    CardSummary,
    ClinicSettings,
    Credit,
    Dispute,
    Failure,
    Invoice,
    InvoiceStatus,
    LedgerEntry,
    Page,
    Payment,
    PaymentStatus,
    StripeAccount,
)
from clinic_payments.domain.payments.states import awaits_outcome, statuses_before
from clinic_payments.domain.ports import (
    CONFIG_CACHE_SECONDS,
    CreditApplication,
    CreditChange,
    EventMark,
    IdempotencyRecord,
    InvoiceAmountChange,
    PatientReads,
    PatientSummary,
    PaymentRequestRecord,
    ReceiptRef,
    RefundOutcomeWrite,
    RefundWrite,
    RequestAnswer,
    ReservedRefundRef,
    SettlementWrite,
    SettleResult,
    StripeObjectLink,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

_T = TypeVar("_T")
_ser = TypeSerializer()
_de = TypeDeserializer()

EVENT_RETENTION_SECONDS = 60 * 60 * 24 * 30
IDEMPOTENCY_RETENTION_SECONDS = 60 * 60 * 24
RECEIPTS_UNSENT_PK = "RECEIPTS#UNSENT"
REFUNDS_RESERVED_PK = "REFUNDS#RESERVED"
_OPEN = (InvoiceStatus.OPEN.value, InvoiceStatus.PARTIALLY_PAID.value)


# A patient's account summary: what is outstanding (payable invoices, their balance due, in
# every currency) and the credit balance of each currency, kept by the transactions that move
# them, so a list of invoices is one Query (the summary sorts right after the invoices).
SUMMARY_SK = "INVOICE$"
SUMMARY_TYPE = "patient_summary"
# A transaction item's change to the summary, carried beside it until the transaction is sent.
_SUMMARY = "_summary"


@dataclass
class _SummaryChange:
    pk: str
    outstanding_count: int = 0
    outstanding_amount: int = 0
    credits: dict[str, int] = field(default_factory=dict)
    opened: set[str] = field(default_factory=set)  # invoices payable now, not before
    closed: set[str] = field(default_factory=set)  # payable before, not now

    def add(self, other: _SummaryChange) -> None:
        self.outstanding_count += other.outstanding_count
        self.outstanding_amount += other.outstanding_amount
        for currency, delta in other.credits.items():
            self.credits[currency] = self.credits.get(currency, 0) + delta
        self.opened |= other.opened
        self.closed |= other.closed


def _outstanding_change(
    pk: str, invoice_id: str, total: int, paid_before: int, paid_after: int
) -> _SummaryChange:
    """An invoice's amount paid moves: what that does to the outstanding count and amount, and
    to the set of payable invoices."""
    before = total - paid_before if paid_before < total else 0
    after = total - paid_after if paid_after < total else 0
    was, now = paid_before < total, paid_after < total
    return _SummaryChange(
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


def _dump(item: Item) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in item.items()}


def _load(raw: dict[str, Any]) -> Item:
    return {k: _de.deserialize(v) for k, v in raw.items()}


def _values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items()}


def _failed_conditions(error: ClientError) -> list[bool]:
    reasons = error.response.get("CancellationReasons") or []
    return [r.get("Code") == "ConditionalCheckFailed" for r in reasons]


def _first_failed(error: ClientError) -> bool:
    """The transaction's first item (a ledger entry's put-if-absent: a retry) failed."""
    failed = _failed_conditions(error)
    return bool(failed) and failed[0]


def _is_condition_failure(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ConditionalCheckFailedException"


def _encode_cursor(sk: str) -> str:
    return base64.urlsafe_b64encode(sk.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, prefix: str) -> str:
    # Only the sort key travels in a cursor; the partition is always the caller's own.
    try:
        sk = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}]) from exc
    if not sk.startswith(prefix):
        raise ValidationError("Invalid cursor.", [{"field": "cursor", "issue": "invalid"}])
    return sk


def _index_after_settlement(p: Payment, values: dict[str, Any]) -> str:
    """A settled payment leaves the pending index. One that owes a receipt email enters the
    unsent-receipts index instead, in the settlement's own transaction, so the receipt is owed
    whatever happens to the process that settled it (domain/receipts.py)."""
    if not p.receipt_email:
        return " REMOVE gsi1pk, gsi1sk"
    values[":gpk"] = RECEIPTS_UNSENT_PK
    values[":gsk"] = f"{p.succeeded_at}#{p.clinic_id}#{p.patient_id}#{p.id}"
    return ", gsi1pk = :gpk, gsi1sk = :gsk"


class DynamoPaymentsRepository:
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ddb = client
        self._table = table_name
        self._monotonic = monotonic
        # Clinic settings and accounts for the money paths, per container (CONFIG_CACHE_SECONDS).
        self._config: dict[str, tuple[float, Any]] = {}

    # -- helpers ---------------------------------------------------------------------------

    def _transact(self, items: list[Any]) -> None:
        """One transaction, with the patient's summary moved by what its items move (one
        update of the summary item, last: the items' indexes in a cancellation stay theirs)."""
        changes: dict[str, _SummaryChange] = {}
        sent: list[Any] = []
        for item in items:
            ((kind, body),) = item.items()
            change = body.get(_SUMMARY)
            if change is not None:
                body = {k: v for k, v in body.items() if k != _SUMMARY}
                changes.setdefault(change.pk, _SummaryChange(change.pk)).add(change)
            sent.append({kind: body})
        for change in changes.values():
            update = self._summary_update(change)
            if update is not None:
                sent.append({"Update": update})
        self._ddb.transact_write_items(TransactItems=sent)

    def _summary_update(self, change: _SummaryChange) -> dict[str, Any] | None:
        numbers = {
            "outstanding_count": change.outstanding_count,
            "outstanding_amount": change.outstanding_amount,
            **{f"credit_{currency}": delta for currency, delta in change.credits.items()},
        }
        adds: dict[str, Any] = {name: delta for name, delta in numbers.items() if delta}
        if change.opened or change.closed or adds:
            adds["version"] = 1
        if change.opened and change.closed:
            # One transaction moves money one way (onto invoices, or back off them).
            raise ValueError("a transaction opening and closing invoices at once")
        deletes: dict[str, Any] = {}
        if change.opened:
            adds["open_invoices"] = set(change.opened)
        if change.closed:
            deletes["open_invoices"] = set(change.closed)
        if not adds and not deletes:
            return None
        names: dict[str, str] = {"#type": "type"}
        values: dict[str, Any] = {":type": SUMMARY_TYPE}
        expression = "SET #type = :type"
        for clause, changes in (("ADD", adds), ("DELETE", deletes)):
            if not changes:
                continue
            parts = []
            for name, value in changes.items():
                n = len(names)
                names[f"#a{n}"], values[f":a{n}"] = name, value
                parts.append(f"#a{n} :a{n}")
            expression += f" {clause} " + ", ".join(parts)
        return {
            "TableName": self._table,
            "Key": _dump({"pk": change.pk, "sk": SUMMARY_SK}),
            "UpdateExpression": expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": _values(values),
        }

    def _get(self, pk: str, sk: str) -> Item | None:
        raw = self._ddb.get_item(
            TableName=self._table,
            Key=_dump({"pk": pk, "sk": sk}),
            ConsistentRead=True,
        ).get("Item")
        return _load(raw) if raw else None

    def _put_if_absent(self, item: Item) -> bool:
        """Put a new item; False (and nothing written) when its key exists already."""
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=_dump(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _page(
        self,
        kwargs: dict[str, Any],
        pk: str,
        prefix: str,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Item], str | None]:
        """Newest-first items of one partition under a key prefix, `limit` at a time, filters
        included (a filtered page is topped up until full); the cursor carries only a sort key."""
        kwargs = {
            **kwargs,
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        start = _decode_cursor(cursor, prefix) if cursor else None
        found: list[Item] = []
        while True:
            if start:
                kwargs["ExclusiveStartKey"] = _dump({"pk": pk, "sk": start})
            kwargs["Limit"] = limit - len(found) + 1
            page = self._ddb.query(**kwargs)
            for raw in page.get("Items", []):
                found.append(_load(raw))
                if len(found) > limit:
                    return found[:limit], _encode_cursor(str(found[limit - 1]["sk"]))
            if "LastEvaluatedKey" not in page:
                return found, None
            start = str(_load(page["LastEvaluatedKey"])["sk"])

    def _query_all(self, pk: str, prefix: str) -> list[Item]:
        items: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": _values({":pk": pk, ":prefix": prefix}),
            "ConsistentRead": True,
        }
        while True:
            page = self._ddb.query(**kwargs)
            items.extend(_load(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- clinic configuration --------------------------------------------------------------

    def _cached(self, key: str, cached: bool, read: Callable[[], _T]) -> _T:
        now = self._monotonic()
        hit = self._config.get(key) if cached else None
        if hit is not None and now - hit[0] < CONFIG_CACHE_SECONDS:
            return cast(_T, hit[1])
        value = read()
        self._config[key] = (now, value)
        return value

    def get_settings(self, clinic_id: str, *, cached: bool = False) -> ClinicSettings | None:
        def read() -> ClinicSettings | None:
            item = self._get(clinic_pk(clinic_id), "SETTINGS")
            return codec.settings_from(item) if item else None

        return self._cached(f"settings:{clinic_id}", cached, read)

    def put_settings(self, settings: ClinicSettings) -> None:
        self._ddb.put_item(TableName=self._table, Item=_dump(codec.settings_to_item(settings)))
        self._config.pop(f"settings:{settings.clinic_id}", None)

    def get_account(
        self, clinic_id: str, account_id: str, *, cached: bool = False
    ) -> StripeAccount | None:
        if cached:
            accounts = self.list_accounts(clinic_id, cached=True)
            return next((a for a in accounts if a.account_id == account_id), None)
        item = self._get(clinic_pk(clinic_id), f"ACCOUNT#{account_id}")
        return codec.account_from(item) if item else None

    def list_accounts(self, clinic_id: str, *, cached: bool = False) -> list[StripeAccount]:
        def read() -> list[StripeAccount]:
            items = self._query_all(clinic_pk(clinic_id), "ACCOUNT#")
            return [codec.account_from(i) for i in items]

        return list(self._cached(f"accounts:{clinic_id}", cached, read))

    def put_account(self, account: StripeAccount) -> None:
        self._ddb.put_item(TableName=self._table, Item=_dump(codec.account_to_item(account)))
        self._config.pop(f"accounts:{account.clinic_id}", None)

    # -- invoices --------------------------------------------------------------------------

    def next_invoice_number(self, clinic_id: str) -> int:
        out = self._ddb.update_item(
            TableName=self._table,
            Key=_dump({"pk": clinic_pk(clinic_id), "sk": "COUNTER#INVOICE"}),
            UpdateExpression="ADD #n :one",
            ExpressionAttributeNames={"#n": "value"},
            ExpressionAttributeValues=_values({":one": 1}),
            ReturnValues="UPDATED_NEW",
        )
        return int(_load(out["Attributes"])["value"])

    def put_new_invoice(self, invoice: Invoice) -> None:
        pk = patient_pk(invoice.clinic_id, invoice.patient_id)
        put = {
            "TableName": self._table,
            "Item": _dump(codec.invoice_to_item(invoice)),
            "ConditionExpression": "attribute_not_exists(pk)",
            # one more invoice to pay, for its balance due
            _SUMMARY: _SummaryChange(pk, 1, invoice.balance_due, opened={invoice.id})
            if invoice.is_payable
            else _SummaryChange(pk),
        }
        self._transact([{"Put": put}])

    def get_invoice(self, clinic_id: str, patient_id: str, invoice_id: str) -> Invoice | None:
        item = self._get(patient_pk(clinic_id, patient_id), f"INVOICE#{invoice_id}")
        return codec.invoice_from(item) if item else None

    def list_invoices(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> Page[Invoice]:
        kwargs: dict[str, Any] = {}
        values: dict[str, Any] = {":pk": patient_pk(clinic_id, patient_id), ":prefix": "INVOICE#"}
        if status != "all":
            wanted = _OPEN if status == "open" else (status,)
            names = ", ".join(f":s{i}" for i in range(len(wanted)))
            kwargs["FilterExpression"] = f"#status IN ({names})"
            kwargs["ExpressionAttributeNames"] = {"#status": "status"}
            values.update({f":s{i}": s for i, s in enumerate(wanted)})
        kwargs["ExpressionAttributeValues"] = _values(values)
        items, next_cursor = self._page(
            kwargs, patient_pk(clinic_id, patient_id), "INVOICE#", limit, cursor
        )
        return Page([codec.invoice_from(i) for i in items], next_cursor)

    def list_invoices_summarized(
        self, clinic_id: str, patient_id: str, status: str, limit: int, cursor: str | None
    ) -> tuple[Page[Invoice], PatientSummary | None]:
        """A page of invoices, newest first, and the patient's summary. The first page is one
        Query (the summary sorts right after the invoices); a later page reads the summary by
        its key. None: the patient has no summary (nothing was ever written for them)."""
        if cursor is not None:
            page = self.list_invoices(clinic_id, patient_id, status, limit, cursor)
            item = self._get(patient_pk(clinic_id, patient_id), SUMMARY_SK)
            return page, summary_from(item) if item else None
        pk = patient_pk(clinic_id, patient_id)
        values: dict[str, Any] = {":pk": pk, ":from": "INVOICE#", ":to": SUMMARY_SK}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        if status != "all":
            wanted = _OPEN if status == "open" else (status,)
            listed = ", ".join(f":s{i}" for i in range(len(wanted)))
            kwargs["FilterExpression"] = f"#status IN ({listed}) OR #type = :summary"
            kwargs["ExpressionAttributeNames"] = {"#status": "status", "#type": "type"}
            values.update({f":s{i}": s for i, s in enumerate(wanted)}, **{":summary": SUMMARY_TYPE})
        kwargs["ExpressionAttributeValues"] = _values(values)
        summary: PatientSummary | None = None
        found: list[Item] = []
        while True:
            # One more than a page (and the summary): whether a next page exists.
            kwargs["Limit"] = limit - len(found) + 1 + (1 if summary is None else 0)
            out = self._ddb.query(**kwargs)
            for raw in out.get("Items", []):
                item = _load(raw)
                if item.get("type") == SUMMARY_TYPE:
                    summary = summary_from(item)
                    continue
                found.append(item)
                if len(found) > limit:
                    invoices = [codec.invoice_from(i) for i in found[:limit]]
                    cursor_sk = str(found[limit - 1]["sk"])
                    return Page(invoices, _encode_cursor(cursor_sk)), summary
            if "LastEvaluatedKey" not in out:
                return Page([codec.invoice_from(i) for i in found], None), summary
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    def get_summary(self, clinic_id: str, patient_id: str) -> PatientSummary | None:
        item = self._get(patient_pk(clinic_id, patient_id), SUMMARY_SK)
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
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if seen is not None:
            condition = {
                "ConditionExpression": "version = :seen",
                "ExpressionAttributeValues": _values({":seen": seen.version}),
            }
        try:
            self._ddb.put_item(TableName=self._table, Item=_dump(item), **condition)
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False  # moved meanwhile: the next reader tries again
            raise
        return True

    def all_invoices(self, clinic_id: str, patient_id: str) -> list[Invoice]:
        items = self._query_all(patient_pk(clinic_id, patient_id), "INVOICE#")
        return [codec.invoice_from(i) for i in items]

    def void_invoice(self, invoice: Invoice, at: str) -> None:
        pk = patient_pk(invoice.clinic_id, invoice.patient_id)
        update = {
            "TableName": self._table,
            "Key": _dump({"pk": pk, "sk": f"INVOICE#{invoice.id}"}),
            "UpdateExpression": "SET #status = :void, voided_at = :at REMOVE gsi1pk, gsi1sk",
            # A payment may have landed since the invoice was read: only void an unpaid one
            # (so what leaves the outstanding amount is its total).
            "ConditionExpression": "amount_paid = :zero AND #status <> :void",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": _values({":void": "void", ":at": at, ":zero": 0}),
            _SUMMARY: _SummaryChange(pk, -1, -invoice.total, closed={invoice.id})
            if invoice.total > 0
            else _SummaryChange(pk),
        }
        try:
            self._transact([{"Update": update}])
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                if _first_failed(exc):
                    raise ConflictError(
                        "The invoice has payments on it or is already void."
                    ) from exc
                raise ServiceUnavailableError(
                    "The service is busy; nothing was changed. Retry shortly."
                ) from exc
            raise

    # -- payments --------------------------------------------------------------------------

    def put_new_payment(self, payment: Payment) -> bool:
        return self._put_if_absent(codec.payment_to_item(payment))

    def get_payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment | None:
        item = self._get(patient_pk(clinic_id, patient_id), f"PAYMENT#{payment_id}")
        return codec.payment_from(item) if item else None

    def attach_intent(self, payment: Payment, link: StripeObjectLink) -> None:
        self._attach_intent(payment, link, None)

    def _attach_intent(
        self, payment: Payment, link: StripeObjectLink, answer: RequestAnswer | None
    ) -> None:
        key = {
            "pk": patient_pk(payment.clinic_id, payment.patient_id),
            "sk": f"PAYMENT#{payment.id}",
        }
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _dump(key),
                    "UpdateExpression": (
                        "SET stripe_payment_intent_id = :pi, client_secret = :cs, "
                        "stripe_customer_id = :cus, payment_method = :pm"
                    ),
                    # One payment, one PaymentIntent, whoever records it first.
                    "ConditionExpression": (
                        "attribute_exists(pk) AND (attribute_not_exists("
                        "stripe_payment_intent_id) OR stripe_payment_intent_id = :pi "
                        "OR stripe_payment_intent_id = :null)"
                    ),
                    "ExpressionAttributeValues": _values(
                        {
                            ":pi": payment.stripe_payment_intent_id,
                            ":cs": payment.client_secret,
                            ":cus": payment.stripe_customer_id,
                            ":pm": codec.card_to(payment.payment_method),
                            ":null": None,
                        }
                    ),
                }
            },
            {"Put": self._link_put(payment, link)},
        ]
        if answer is not None:
            items.append({"Update": self._answer_update(answer)})
        try:
            self._transact(items)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                if _first_failed(exc):
                    raise ConflictError("The payment is linked to another PaymentIntent.") from exc
                # Canceled for a concurrent transaction on the same items, not for its condition:
                # nothing was written, and the request's retry (same key) attaches it.
                raise ServiceUnavailableError(
                    "The service is busy; nothing was lost. Retry with the same Idempotency-Key."
                ) from exc
            raise

    def update_payment_status(
        self,
        payment: Payment,
        status: PaymentStatus,
        *,
        failure: Failure | None = None,
        payment_method: CardSummary | None = None,
        client_secret: str | None = None,
    ) -> bool:
        allowed = statuses_before(status)
        if not allowed:
            return False
        sets = ["#status = :status", "failure = :failure"]
        values: dict[str, Any] = {":status": status.value, ":failure": codec.failure_to(failure)}
        if payment_method is not None:
            sets.append("payment_method = :pm")
            values[":pm"] = codec.card_to(payment_method)
        if client_secret is not None:
            sets.append("client_secret = :cs")
            values[":cs"] = client_secret
        names = ", ".join(f":from{i}" for i in range(len(allowed)))
        values.update({f":from{i}": s.value for i, s in enumerate(allowed)})
        expression = "SET " + ", ".join(sets)
        if not awaits_outcome(replace(payment, status=status)):
            expression += " REMOVE gsi1pk, gsi1sk"
        else:
            expression += ", gsi1pk = :gpk, gsi1sk = :gsk"
            values[":gpk"] = codec.PENDING_PK
            values[":gsk"] = codec.pending_sort_key(payment)
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=_dump(
                    {
                        "pk": patient_pk(payment.clinic_id, payment.patient_id),
                        "sk": f"PAYMENT#{payment.id}",
                    }
                ),
                UpdateExpression=expression,
                # States only move forward, whatever order events arrive in.
                ConditionExpression=f"#status IN ({names})",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_values(values),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def settle(self, write: SettlementWrite) -> SettleResult:
        p = write.payment
        items: list[Any] = [self._settled_payment_item(write)]
        if write.link is not None:
            items.append({"Put": self._link_put(p, write.link)})
        items += self._money_back_items(p, write.invoices, write.credit)
        if write.card_consent is not None:
            # The card saved while paying: its consent is on file the moment the payment is.
            item = codec.card_consent_to_item(p.clinic_id, p.patient_id, write.card_consent)
            items.append({"Put": {"TableName": self._table, "Item": _dump(item)}})
        event_at = None
        if write.event is not None:
            event_at = len(items)
            items.append({"Put": self._event_put(write.event)})
        if write.answer is not None:
            items.append({"Update": self._answer_update(write.answer)})
        try:
            self._transact(items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "TransactionCanceledException":
                failed = _failed_conditions(exc)
                if failed and failed[0]:
                    # settled already (or no longer settleable): change nothing
                    return SettleResult.NOT_SETTLEABLE
                if event_at is not None and len(failed) > event_at and failed[event_at]:
                    return SettleResult.DUPLICATE_EVENT
                raise StaleWriteError("An invoice changed during settlement.") from exc
            if code in ("TransactionConflictException", "TransactionInProgressException"):
                raise StaleWriteError("A concurrent transaction touched the same items.") from exc
            raise
        return SettleResult.SETTLED

    def _settled_payment_item(self, write: SettlementWrite) -> dict[str, Any]:
        """The payment as settled: written whole if it is new (cash, check), else updated from
        a status that may still settle. The one guard of exactly-once."""
        p = write.payment
        if write.new:
            item = codec.payment_to_item(p)
            if p.receipt_email:
                # Owes its receipt email from the moment it exists (see _index_after_settlement).
                item["gsi1pk"] = RECEIPTS_UNSENT_PK
                item["gsi1sk"] = f"{p.succeeded_at}#{p.clinic_id}#{p.patient_id}#{p.id}"
            put: dict[str, Any] = {
                "TableName": self._table,
                "Item": _dump(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
            return {"Put": put}
        allowed = write.previous_statuses
        from_names = ", ".join(f":from{i}" for i in range(len(allowed)))
        values: dict[str, Any] = {
            ":status": p.status.value,
            ":alloc": codec.allocations_to(p.allocations),
            ":credit": p.credit_amount,
            ":fee": p.fee_amount,
            ":received": p.amount_received,
            ":conf": p.confirmation_number,
            ":at": p.succeeded_at,
            ":pm": codec.card_to(p.payment_method),
            ":null": None,
        }
        values.update({f":from{i}": s.value for i, s in enumerate(allowed)})
        expression = (
            "SET #status = :status, allocations = :alloc, credit_amount = :credit, "
            "fee_amount = :fee, amount_received = :received, "
            "confirmation_number = :conf, succeeded_at = :at, payment_method = :pm, "
            "failure = :null"
        )
        condition = f"#status IN ({from_names})"
        if write.link is not None:
            expression += ", stripe_payment_intent_id = :pi, client_secret = :cs, "
            expression += "stripe_customer_id = :cus"
            values[":pi"] = p.stripe_payment_intent_id
            values[":cs"] = p.client_secret
            values[":cus"] = p.stripe_customer_id
            condition += (
                " AND (attribute_not_exists(stripe_payment_intent_id) OR "
                "stripe_payment_intent_id = :pi OR stripe_payment_intent_id = :null)"
            )
        expression += _index_after_settlement(p, values)
        return {
            "Update": {
                "TableName": self._table,
                "Key": _dump(
                    {"pk": patient_pk(p.clinic_id, p.patient_id), "sk": f"PAYMENT#{p.id}"}
                ),
                "UpdateExpression": expression,
                "ConditionExpression": condition,
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": _values(values),
            }
        }

    def _link_put(self, payment: Payment, link: StripeObjectLink) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": _dump(
                {
                    "pk": f"STRIPE#{payment.stripe_payment_intent_id}",
                    "sk": "LINK",
                    "type": "stripe_link",
                    "clinic_id": link.clinic_id,
                    "patient_id": link.patient_id,
                    "payment_id": link.payment_id,
                    "account_id": link.account_id,
                }
            ),
        }

    def _event_put(self, mark: EventMark) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": _dump(
                {
                    "pk": f"STRIPE_EVENT#{mark.account_key}#{mark.event_id}",
                    "sk": "EVENT",
                    "type": "stripe_event",
                    "event_type": mark.event_type,
                    "expires_at": int(time.time()) + EVENT_RETENTION_SECONDS,
                }
            ),
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def _answer_update(self, answer: RequestAnswer) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Key": _dump({"pk": f"IDEMPOTENCY#{answer.scope}", "sk": "REQUEST"}),
            "UpdateExpression": "SET completed = :true, status_code = :status, body = :body",
            "ExpressionAttributeValues": _values(
                {":true": True, ":status": answer.status_code, ":body": answer.body}
            ),
        }

    def read_patient(
        self,
        clinic_id: str,
        patient_id: str,
        *,
        payment_id: str | None = None,
        invoice_ids: tuple[str, ...] = (),
        currencies: tuple[str, ...] = (),
        customer_account: str | None = None,
        event: tuple[str, str] | None = None,
        summary: bool = False,
    ) -> PatientReads:
        pk = patient_pk(clinic_id, patient_id)
        keys: list[tuple[str, str]] = []
        if payment_id is not None:
            keys.append((pk, f"PAYMENT#{payment_id}"))
        keys += [(pk, f"INVOICE#{i}") for i in dict.fromkeys(invoice_ids)]
        keys += [(pk, f"CREDIT#{c}") for c in dict.fromkeys(currencies)]
        if customer_account is not None:
            keys.append((pk, f"CUSTOMER#{customer_account}"))
        event_key = (f"STRIPE_EVENT#{event[0]}#{event[1]}", "EVENT") if event else None
        if event_key is not None:
            keys.append(event_key)
        if summary:
            keys.append((pk, SUMMARY_SK))
        found = self._batch_get(keys)
        payment_item = found.get((pk, f"PAYMENT#{payment_id}")) if payment_id else None
        invoices = {
            i: codec.invoice_from(item)
            for i in invoice_ids
            if (item := found.get((pk, f"INVOICE#{i}"))) is not None
        }
        credits = {}
        for currency in currencies:
            item = found.get((pk, f"CREDIT#{currency}"))
            credits[currency] = (
                codec.credit_from(item) if item else Credit(balance=0, currency=currency, version=0)
            )
        customer = found.get((pk, f"CUSTOMER#{customer_account}")) if customer_account else None
        return PatientReads(
            payment=codec.payment_from(payment_item) if payment_item else None,
            invoices=invoices,
            credits=credits,
            customer_id=str(customer["customer_id"]) if customer else None,
            event_seen=event_key is not None and event_key in found,
            summary=summary_from(found[(pk, SUMMARY_SK)]) if (pk, SUMMARY_SK) in found else None,
        )

    def _batch_get(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Item]:
        """Consistent reads of up to any number of keys: 100 a call, unprocessed ones again."""
        found: dict[tuple[str, str], Item] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [_dump({"pk": pk, "sk": sk}) for pk, sk in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            attempt = 0
            while request:
                out = self._ddb.batch_get_item(RequestItems=request)
                for raw in out.get("Responses", {}).get(self._table, []):
                    item = _load(raw)
                    found[(str(item["pk"]), str(item["sk"]))] = item
                request = dict(out.get("UnprocessedKeys") or {})
                if request:
                    attempt += 1
                    if attempt >= 5:
                        raise ServiceUnavailableError(
                            "The service is busy; nothing was changed. Retry shortly."
                        )
                    time.sleep(0.05 * 2**attempt)
        return found

    def attach_intent_answered(
        self, payment: Payment, link: StripeObjectLink, answer: RequestAnswer | None
    ) -> None:
        self._attach_intent(payment, link, answer)

    def record_refund(self, write: RefundWrite) -> bool:
        p = write.payment
        pk = patient_pk(p.clinic_id, p.patient_id)
        seen = len(p.refunds)
        payment_update: dict[str, Any] = {
            "TableName": self._table,
            "Key": _dump({"pk": pk, "sk": f"PAYMENT#{p.id}"}),
            "UpdateExpression": (
                "SET refunds = list_append(if_not_exists(refunds, :empty), :record), "
                "refund_keys = list_append(if_not_exists(refund_keys, :empty), :key)"
            ),
            # Planned against the refunds read: any other refund since (or this one, recorded
            # by the webhook meanwhile) makes the service read again.
            "ConditionExpression": (
                "attribute_not_exists(refund_keys) OR size(refund_keys) = :seen"
                if seen == 0
                else "size(refund_keys) = :seen"
            ),
            "ExpressionAttributeValues": _values(
                {
                    ":empty": [],
                    ":record": [codec.refund_to(write.record)],
                    ":key": [write.record.key],
                    ":seen": seen,
                }
            ),
        }
        items: list[Any] = [{"Update": payment_update}]
        for change in write.invoices:
            items.append({"Update": self._invoice_amount_update(p.clinic_id, pk, change)})
        if write.credit is not None:
            items += self._credit_items(p.clinic_id, p.patient_id, write.credit)
        if write.record.is_reserved:
            # Found by the reconciler if Stripe's answer never comes and nobody retries (its own
            # item: the payment's GSI1 keys belong to the pending and receipts indexes).
            marker = {
                "pk": pk,
                "sk": f"REFUND_RESERVED#{write.record.id}",
                "type": "reserved_refund",
                "clinic_id": p.clinic_id,
                "patient_id": p.patient_id,
                "payment_id": p.id,
                "refund_id": write.record.id,
                "account_id": p.stripe_account_id or "",
                "gsi1pk": REFUNDS_RESERVED_PK,
                "gsi1sk": f"{write.record.at}#{p.clinic_id}#{p.patient_id}#{write.record.id}",
            }
            items.append({"Put": {"TableName": self._table, "Item": _dump(marker)}})
        self._transact_or_stale(items, "The payment, an invoice or the credit moved.")
        return True

    def record_refund_outcome(self, write: RefundOutcomeWrite) -> None:
        p = write.payment
        pk = patient_pk(p.clinic_id, p.patient_id)
        i = write.index
        seen = p.refunds[i]
        values: dict[str, Any] = {
            ":record": codec.refund_to(write.record),
            ":key": seen.key,
            ":seen": seen.status,
        }
        # Only from the state it was read in: a duplicate or reordered event, or a concurrent
        # delivery of the same failure, finds the refund moved and gives back nothing twice.
        # (Refunds recorded before statuses were kept have none: they had succeeded.)
        condition = f"refund_keys[{i}] = :key AND (refunds[{i}].#status = :seen"
        if seen.status == "succeeded":
            condition += f" OR attribute_not_exists(refunds[{i}].#status)"
        condition += ")"
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _dump({"pk": pk, "sk": f"PAYMENT#{p.id}"}),
                    "UpdateExpression": f"SET refunds[{i}] = :record",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": _values(values),
                }
            }
        ]
        items += self._money_back_items(p, write.invoices, write.credit)
        if seen.is_reserved and not write.record.is_reserved:
            key = {"pk": pk, "sk": f"REFUND_RESERVED#{seen.id}"}
            items.append({"Delete": {"TableName": self._table, "Key": _dump(key)}})
        self._transact_or_stale(items, "The refund, an invoice or the credit moved.")

    def reserved_refunds(self, older_than: str, limit: int) -> list[ReservedRefundRef]:
        return [
            ReservedRefundRef(
                StripeObjectLink(
                    str(item["clinic_id"]),
                    str(item["patient_id"]),
                    str(item["payment_id"]),
                    str(item.get("account_id") or ""),
                ),
                str(item["refund_id"]),
            )
            for item in self._older_in_index(REFUNDS_RESERVED_PK, older_than, limit)
        ]

    def set_dispute(self, payment: Payment, dispute: Dispute, at_risk: list[Allocation]) -> None:
        pk = patient_pk(payment.clinic_id, payment.patient_id)
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _dump({"pk": pk, "sk": f"PAYMENT#{payment.id}"}),
                    "UpdateExpression": "SET dispute = :dispute",
                    "ExpressionAttributeValues": _values({":dispute": codec.dispute_to(dispute)}),
                }
            }
        ]
        for a in at_risk:
            items.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _dump({"pk": pk, "sk": f"INVOICE#{a.invoice_id}"}),
                        "UpdateExpression": "ADD amount_at_risk :amount",
                        "ExpressionAttributeValues": _values({":amount": a.amount}),
                    }
                }
            )
        self._transact(items)

    def record_card_details(
        self, link: StripeObjectLink, intent_id: str, card: CardSummary
    ) -> bool:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=_dump(
                    {
                        "pk": patient_pk(link.clinic_id, link.patient_id),
                        "sk": f"PAYMENT#{link.payment_id}",
                    }
                ),
                UpdateExpression="SET card_details = :card",
                ConditionExpression="stripe_payment_intent_id = :pi",
                ExpressionAttributeValues=_values({":card": codec.card_to(card), ":pi": intent_id}),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def get_stripe_link(self, object_id: str) -> StripeObjectLink | None:
        item = self._get(f"STRIPE#{object_id}", "LINK")
        if item is None:
            return None
        return StripeObjectLink(
            str(item["clinic_id"]),
            str(item["patient_id"]),
            str(item["payment_id"]),
            str(item["account_id"]),
        )

    def pending_payments(self, older_than: str, limit: int) -> list[StripeObjectLink]:
        # The GSI is eventually consistent: it only says where to look. settle() decides.
        return [
            StripeObjectLink(
                str(item["clinic_id"]),
                str(item["patient_id"]),
                str(item["id"]),
                str(item.get("stripe_account_id") or ""),
            )
            for item in self._older_in_index(codec.PENDING_PK, older_than, limit)
        ]

    def _older_in_index(self, index_pk: str, older_than: str, limit: int) -> list[Item]:
        """Up to `limit` items of one GSI1 partition whose sort key (a time) is before
        `older_than`, oldest first, across pages."""
        found: list[Item] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": "GSI1",
            "KeyConditionExpression": "gsi1pk = :pk AND gsi1sk < :cutoff",
            "ExpressionAttributeValues": _values({":pk": index_pk, ":cutoff": older_than}),
        }
        while len(found) < limit:
            page = self._ddb.query(**kwargs, Limit=limit - len(found))
            found += [_load(raw) for raw in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    def stop_tracking(self, payment: Payment) -> None:
        self._ddb.update_item(
            TableName=self._table,
            Key=_dump(
                {
                    "pk": patient_pk(payment.clinic_id, payment.patient_id),
                    "sk": f"PAYMENT#{payment.id}",
                }
            ),
            UpdateExpression="REMOVE gsi1pk, gsi1sk",
        )

    # -- credit ----------------------------------------------------------------------------

    def get_credit(self, clinic_id: str, patient_id: str, currency: str) -> Credit:
        item = self._get(patient_pk(clinic_id, patient_id), f"CREDIT#{currency}")
        if item is None:
            return Credit(balance=0, currency=currency, version=0)
        return codec.credit_from(item)

    def list_credits(self, clinic_id: str, patient_id: str) -> dict[str, Credit]:
        items = self._query_all(patient_pk(clinic_id, patient_id), "CREDIT#")
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
        values: dict[str, Any] = {":pk": pk, ":prefix": "LEDGER#"}
        if currency:
            kwargs["FilterExpression"] = "currency = :currency"
            values[":currency"] = currency
        kwargs["ExpressionAttributeValues"] = _values(values)
        items, next_cursor = self._page(kwargs, pk, "LEDGER#", limit, cursor)
        return Page([codec.ledger_from(i) for i in items], next_cursor)

    def all_ledger(self, clinic_id: str, patient_id: str) -> list[LedgerEntry]:
        items = self._query_all(patient_pk(clinic_id, patient_id), "LEDGER#")
        return [codec.ledger_from(i) for i in items]

    def ledger_entry_exists(self, clinic_id: str, patient_id: str, entry_id: str) -> bool:
        return self._get(patient_pk(clinic_id, patient_id), codec.ledger_sk(entry_id)) is not None

    def all_payments(self, clinic_id: str, patient_id: str) -> list[Payment]:
        items = self._query_all(patient_pk(clinic_id, patient_id), "PAYMENT#")
        return [codec.payment_from(i) for i in items]

    def _credit_items(self, clinic_id: str, patient_id: str, change: CreditChange) -> list[Any]:
        """The credit item (balance, lots, version) as the movement leaves it, and its ledger
        entry. The item is written only if it is still at the version read: the movement was
        planned lot by lot from that credit, so whatever moved it since (a refund, an
        application, a settlement) fails the whole transaction and the service plans again.
        That is the balance and lots check, in the write itself."""
        new = replace(change.new, version=change.seen.version + 1)
        if new.balance < 0 or any(lot.amount < 0 for lot in new.lots):
            raise ValueError("a credit movement planned below zero")  # a bug, never a race
        put: dict[str, Any] = {
            "TableName": self._table,
            "Item": _dump(codec.credit_to_item(clinic_id, patient_id, new)),
            _SUMMARY: _SummaryChange(
                patient_pk(clinic_id, patient_id),
                credits={str(new.currency): new.balance - change.seen.balance},
            ),
        }
        if change.seen.version == 0:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "version = :seen"
            put["ExpressionAttributeValues"] = _values({":seen": change.seen.version})
        return [{"Put": put}, {"Put": self._ledger_put(clinic_id, patient_id, change.entry)}]

    def _transact_or_stale(self, items: list[Any], moved: str) -> None:
        """One transaction whose conditions are what the caller read: a failed condition, or
        a concurrent transaction on the same items, is StaleWriteError (read and plan again)."""
        try:
            self._transact(items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in (
                "TransactionCanceledException",
                "TransactionConflictException",
                "TransactionInProgressException",
            ):
                raise StaleWriteError(moved) from exc
            raise

    def _money_back_items(
        self, p: Payment, invoices: list[InvoiceAmountChange], credit: CreditChange | None
    ) -> list[Any]:
        """Transaction items that put money onto invoices (each on the amount_paid read) and
        the rest onto the patient's credit with its ledger entry: a settlement, or a failed
        refund giving back what it took."""
        pk = patient_pk(p.clinic_id, p.patient_id)
        items: list[Any] = [
            {"Update": self._invoice_amount_update(p.clinic_id, pk, change)} for change in invoices
        ]
        if credit is not None:
            # One balance per currency: an overpayment in CAD never adds to USD.
            items += self._credit_items(p.clinic_id, p.patient_id, credit)
        return items

    def _invoice_amount_update(
        self, clinic_id: str, pk: str, change: InvoiceAmountChange
    ) -> dict[str, Any]:
        """Move an invoice's amount_paid by the change's delta (a payment or credit adds, a
        refund takes back), on the amount_paid it was read at: never past its total, never on a
        void one. Paid: it leaves the open-invoices index. Taken back: it enters it again."""
        expression = (
            "SET amount_paid = amount_paid + :delta, #status = :status, "
            "payments = list_append(if_not_exists(payments, :empty), :ref)"
        )
        values: dict[str, Any] = {
            ":delta": change.delta,
            ":status": change.new_status.value,
            ":empty": [],
            ":ref": [codec.ref_to(change.ref)],
            ":seen": change.seen_amount_paid,
            ":void": InvoiceStatus.VOID.value,
        }
        if change.delta < 0:
            expression += ", gsi1pk = :gpk, gsi1sk = :gsk REMOVE paid_at"
            values[":gpk"], values[":gsk"] = codec.open_invoice_index(
                clinic_id, change.invoice_id, change.due_date
            )
        elif change.new_status is InvoiceStatus.PAID:
            expression += ", paid_at = :paid_at REMOVE gsi1pk, gsi1sk"
            values[":paid_at"] = change.ref.at
        return {
            "TableName": self._table,
            "Key": _dump({"pk": pk, "sk": f"INVOICE#{change.invoice_id}"}),
            "UpdateExpression": expression,
            "ConditionExpression": "amount_paid = :seen AND #status <> :void",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": _values(values),
            _SUMMARY: _outstanding_change(
                pk,
                change.invoice_id,
                change.total,
                change.seen_amount_paid,
                change.seen_amount_paid + change.delta,
            ),
        }

    def _ledger_put(self, clinic_id: str, patient_id: str, entry: LedgerEntry) -> dict[str, Any]:
        return {
            "TableName": self._table,
            "Item": _dump(codec.ledger_to_item(clinic_id, patient_id, entry)),
            # Append-only, and the entry id makes a retried movement a no-op.
            "ConditionExpression": "attribute_not_exists(pk)",
        }

    def apply_credit(
        self,
        clinic_id: str,
        patient_id: str,
        write: CreditApplication,
        answer: RequestAnswer | None = None,
    ) -> bool:
        pk = patient_pk(clinic_id, patient_id)
        credit, ledger = self._credit_items(clinic_id, patient_id, write.credit)
        items: list[Any] = [
            ledger,
            credit,
            {"Update": self._invoice_amount_update(clinic_id, pk, write.invoice)},
        ]
        if answer is not None:
            items.append({"Update": self._answer_update(answer)})
        try:
            self._transact(items)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code == "TransactionCanceledException":
                if _first_failed(exc):
                    return False  # applied already: this is a retry
                raise StaleWriteError("The credit or the invoice changed.") from exc
            if code in ("TransactionConflictException", "TransactionInProgressException"):
                raise StaleWriteError("A concurrent transaction touched the same items.") from exc
            raise
        return True

    def adjust_credit(self, clinic_id: str, patient_id: str, change: CreditChange) -> LedgerEntry:
        pk = patient_pk(clinic_id, patient_id)
        entry = change.entry
        credit, ledger = self._credit_items(clinic_id, patient_id, change)
        try:
            self._transact([ledger, credit])
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("TransactionConflictException", "TransactionInProgressException"):
                raise StaleWriteError("A concurrent transaction touched the credit.") from exc
            if code != "TransactionCanceledException":
                raise
            if _first_failed(exc):
                stored = self._get(pk, codec.ledger_sk(entry.id))
                return codec.ledger_from(stored) if stored else entry
            raise StaleWriteError("The credit moved.") from exc
        return entry

    def patients_of_clinic(self, clinic_id: str) -> list[str]:
        """Every patient with records in this clinic. A Scan: for the audit command only,
        never on a request path (its cost grows with the table)."""
        prefix = f"{patient_pk(clinic_id, '')}"
        patients: set[str] = set()
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "begins_with(pk, :prefix)",
            "ProjectionExpression": "pk",
            "ExpressionAttributeValues": _values({":prefix": prefix}),
        }
        while True:
            page = self._ddb.scan(**kwargs)
            patients.update(str(_load(i)["pk"])[len(prefix) :] for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(patients)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # -- stripe customers --------------------------------------------------------------------

    def get_customer_id(self, clinic_id: str, patient_id: str, account_id: str) -> str | None:
        item = self._get(patient_pk(clinic_id, patient_id), f"CUSTOMER#{account_id}")
        return str(item["customer_id"]) if item else None

    def put_customer_id(
        self, clinic_id: str, patient_id: str, account_id: str, customer_id: str
    ) -> str:
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=_dump(
                    {
                        "pk": patient_pk(clinic_id, patient_id),
                        "sk": f"CUSTOMER#{account_id}",
                        "type": "stripe_customer",
                        "customer_id": customer_id,
                    }
                ),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                existing = self.get_customer_id(clinic_id, patient_id, account_id)
                if existing:
                    return existing
            raise
        return customer_id

    # -- saved cards -------------------------------------------------------------------------

    def put_card_setup(self, setup: CardSetup) -> bool:
        return self._put_if_absent(codec.card_setup_to_item(setup))

    def get_card_setup(self, clinic_id: str, patient_id: str, setup_id: str) -> CardSetup | None:
        item = self._get(patient_pk(clinic_id, patient_id), f"CARD_SETUP#{setup_id}")
        return codec.card_setup_from(item) if item else None

    def attach_card_consent(self, setup: CardSetup, consent: CardConsent) -> bool:
        pk = patient_pk(setup.clinic_id, setup.patient_id)
        try:
            self._ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _dump({"pk": pk, "sk": f"CARD_SETUP#{setup.id}"}),
                            "UpdateExpression": "SET payment_method_id = :pm",
                            # A setup saves one card: reconciled once, with that card only.
                            "ConditionExpression": (
                                "attribute_exists(pk) AND (attribute_not_exists("
                                "payment_method_id) OR payment_method_id = :null "
                                "OR payment_method_id = :pm)"
                            ),
                            "ExpressionAttributeValues": _values(
                                {":pm": consent.payment_method_id, ":null": None}
                            ),
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": _dump(
                                codec.card_consent_to_item(
                                    setup.clinic_id, setup.patient_id, consent
                                )
                            ),
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "TransactionCanceledException":
                failed = _failed_conditions(exc)
                if failed and failed[0]:
                    return False
            raise  # a concurrent transaction: the webhook answers 5xx and Stripe retries
        return True

    def card_consents(self, clinic_id: str, patient_id: str) -> list[CardConsent]:
        items = self._query_all(patient_pk(clinic_id, patient_id), "CARD#")
        return [codec.card_consent_from(i) for i in items]

    def forget_card_consent(self, clinic_id: str, patient_id: str, payment_method_id: str) -> None:
        self._ddb.delete_item(
            TableName=self._table,
            Key=_dump({"pk": patient_pk(clinic_id, patient_id), "sk": f"CARD#{payment_method_id}"}),
        )

    # -- webhook events ------------------------------------------------------------------------

    def event_processed(self, account_key: str, event_id: str) -> bool:
        return self._get(f"STRIPE_EVENT#{account_key}#{event_id}", "EVENT") is not None

    def mark_event_processed(self, account_key: str, event_id: str, event_type: str) -> None:
        put = self._event_put(EventMark(account_key, event_id, event_type))
        del put["ConditionExpression"]  # marking twice is harmless
        self._ddb.put_item(**put)

    # -- idempotency ------------------------------------------------------------------------------

    def begin_request(
        self, scope: str, request_hash: str, resource_id: str, lock_seconds: int
    ) -> tuple[IdempotencyRecord, bool]:
        now = int(time.time())
        key = {"pk": f"IDEMPOTENCY#{scope}", "sk": "REQUEST"}
        try:
            self._ddb.put_item(
                TableName=self._table,
                Item=_dump(
                    {
                        **key,
                        "type": "idempotency",
                        "request_hash": request_hash,
                        "resource_id": resource_id,
                        "completed": False,
                        "lock_until": now + lock_seconds,
                        "expires_at": now + IDEMPOTENCY_RETENTION_SECONDS,
                    }
                ),
                ConditionExpression="attribute_not_exists(pk)",
            )
            return IdempotencyRecord(request_hash, resource_id, completed=False, fresh=True), True
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
        item = self._get(key["pk"], key["sk"])
        if item is None:  # expired and removed between the two calls: claim it again
            return self.begin_request(scope, request_hash, resource_id, lock_seconds)
        record = IdempotencyRecord(
            request_hash=str(item["request_hash"]),
            resource_id=str(item["resource_id"]),
            completed=bool(item["completed"]),
            status_code=int(item["status_code"]) if item.get("status_code") is not None else None,
            body=item.get("body"),
        )
        if record.completed or record.request_hash != request_hash or int(item["lock_until"]) > now:
            return record, False
        try:
            # The previous attempt died holding the lock: take it over, keeping its resource id
            # so the retry resumes the same payment instead of starting another.
            self._ddb.update_item(
                TableName=self._table,
                Key=_dump(key),
                UpdateExpression="SET lock_until = :new",
                ConditionExpression="lock_until = :old AND completed = :false",
                ExpressionAttributeValues=_values(
                    {":new": now + lock_seconds, ":old": int(item["lock_until"]), ":false": False}
                ),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return record, False
            raise
        return record, True

    def complete_request(self, scope: str, status_code: int, body: str) -> None:
        self._ddb.update_item(
            TableName=self._table,
            Key=_dump({"pk": f"IDEMPOTENCY#{scope}", "sk": "REQUEST"}),
            UpdateExpression="SET completed = :true, status_code = :status, body = :body",
            ExpressionAttributeValues=_values(
                {":true": True, ":status": status_code, ":body": body}
            ),
        )

    def release_request(self, scope: str) -> None:
        # Unknown outcome (a 5xx): let the client's retry run again, on the same resource id.
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=_dump({"pk": f"IDEMPOTENCY#{scope}", "sk": "REQUEST"}),
                UpdateExpression="SET lock_until = :zero",
                ConditionExpression="completed = :false",
                ExpressionAttributeValues=_values({":zero": 0, ":false": False}),
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise

    # -- receipt emails (ReceiptOutbox) ------------------------------------------------------------

    def _payment_key(self, ref: ReceiptRef) -> dict[str, Any]:
        return _dump(
            {"pk": patient_pk(ref.clinic_id, ref.patient_id), "sk": f"PAYMENT#{ref.payment_id}"}
        )

    def claim_receipt(self, ref: ReceiptRef, now: str, until: str) -> bool:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._payment_key(ref),
                UpdateExpression="SET receipt_claim_until = :until",
                # One sender at a time, and never after it was sent: a claim whose holder died
                # expires (ISO timestamps compare as text).
                ConditionExpression=(
                    "#status = :succeeded AND attribute_not_exists(receipt_sent_at) AND "
                    "(attribute_not_exists(receipt_claim_until) OR receipt_claim_until < :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=_values(
                    {":until": until, ":now": now, ":succeeded": PaymentStatus.SUCCEEDED.value}
                ),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def mark_receipt_sent(self, ref: ReceiptRef, at: str) -> None:
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._payment_key(ref),
                UpdateExpression=(
                    "SET receipt_sent_at = :at REMOVE receipt_claim_until, gsi1pk, gsi1sk"
                ),
                ConditionExpression="attribute_not_exists(receipt_sent_at)",
                ExpressionAttributeValues=_values({":at": at}),
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):  # marked by a sender whose claim had expired
                raise

    def release_receipt(self, ref: ReceiptRef, *, give_up_after: int) -> bool:
        try:
            out = self._ddb.update_item(
                TableName=self._table,
                Key=self._payment_key(ref),
                UpdateExpression="REMOVE receipt_claim_until ADD receipt_attempts :one",
                ConditionExpression="attribute_not_exists(receipt_sent_at)",
                ExpressionAttributeValues=_values({":one": 1}),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        attempts = int(_load(out.get("Attributes", {})).get("receipt_attempts", 0))
        if attempts < give_up_after:
            return False
        # Given up: out of the retry index, with the attempts on record for an operator.
        try:
            self._ddb.update_item(
                TableName=self._table,
                Key=self._payment_key(ref),
                UpdateExpression="REMOVE gsi1pk, gsi1sk",
                ConditionExpression="attribute_not_exists(receipt_sent_at) AND gsi1pk = :pk",
                ExpressionAttributeValues=_values({":pk": RECEIPTS_UNSENT_PK}),
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
        return True

    def unsent_receipts(self, older_than: str, limit: int) -> list[ReceiptRef]:
        # The GSI is eventually consistent: it says where to look; the claim decides.
        return [
            ReceiptRef(str(item["clinic_id"]), str(item["patient_id"]), str(item["id"]))
            for item in self._older_in_index(RECEIPTS_UNSENT_PK, older_than, limit)
        ]

    # -- pay-online requests (PaymentRequestLog) -----------------------------------------------

    def put_payment_request(self, record: PaymentRequestRecord) -> None:
        self._ddb.put_item(
            TableName=self._table,
            Item=_dump(
                {
                    "pk": patient_pk(record.clinic_id, record.patient_id),
                    "sk": f"PAYREQ#{record.id}",
                    "type": "payment_request",
                    "id": record.id,
                    "clinic_id": record.clinic_id,
                    "patient_id": record.patient_id,
                    "invoice_id": record.invoice_id,
                    "email": record.email,
                    # Not "expires_at": that is the table's TTL attribute, and this record stays.
                    "link_expires_at": record.expires_at,
                    "created_by": codec.actor_to(record.created_by),
                    "created_at": record.created_at,
                }
            ),
        )
