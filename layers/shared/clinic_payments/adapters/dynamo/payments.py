"""PaymentStore: payments and what moves with them.

A payment lives in its patient's partition; its Stripe objects point back to it (`STRIPE#<id>`
links). Settlement is the one exactly-once write: the payment, the invoices it pays, the credit it
leaves, the consent of a card saved while paying, the mark of the event and the answer of the
request that settled it, in one transaction. Refunds are reserved in one transaction before
Stripe is asked, and their outcome confirms or gives back exactly what they took. GSI1 indexes
the payments still waiting for Stripe (the reconciler's), the refunds still reserved, and the
receipts still owed (domain/receipts.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import patient_pk
from clinic_payments.adapters.dynamo.credit import credit_items, money_back_items
from clinic_payments.adapters.dynamo.customers import card_consent_put, customer_sk
from clinic_payments.adapters.dynamo.events import event_key, event_put
from clinic_payments.adapters.dynamo.idempotency import answer_update
from clinic_payments.adapters.dynamo.invoices import invoice_amount_update, invoice_sk
from clinic_payments.adapters.dynamo.summary import SUMMARY_SK, summary_from
from clinic_payments.adapters.dynamo.table import OnTable, dump, refusal, values
from clinic_payments.domain.errors import (
    ConflictError,
    ServiceUnavailableError,
    StaleWriteError,
)
from clinic_payments.domain.model import (
    Allocation,
    CardSummary,
    Credit,
    Dispute,
    Failure,
    Page,
    Payment,
    PaymentStatus,
)
from clinic_payments.domain.payments.states import awaits_outcome, statuses_before
from clinic_payments.domain.ports import (
    PatientReads,
    RefundOutcomeWrite,
    RefundWrite,
    RequestAnswer,
    ReservedRefundRef,
    SettlementWrite,
    SettleResult,
    StripeObjectLink,
)

RECEIPTS_UNSENT_PK = "RECEIPTS#UNSENT"
REFUNDS_RESERVED_PK = "REFUNDS#RESERVED"

# One payment, one PaymentIntent, whoever records it first.
_ONE_INTENT = (
    "(attribute_not_exists(stripe_payment_intent_id) OR stripe_payment_intent_id = :pi "
    "OR stripe_payment_intent_id = :null)"
)


def payment_sk(payment_id: str) -> str:
    return f"PAYMENT#{payment_id}"


def payment_key(clinic_id: str, patient_id: str, payment_id: str) -> dict[str, Any]:
    return dump({"pk": patient_pk(clinic_id, patient_id), "sk": payment_sk(payment_id)})


def key_of(p: Payment) -> dict[str, Any]:
    return payment_key(p.clinic_id, p.patient_id, p.id)


def _unsent_receipt_sort_key(p: Payment) -> str:
    return f"{p.succeeded_at}#{p.clinic_id}#{p.patient_id}#{p.id}"


def _index_after_settlement(p: Payment, named: dict[str, Any]) -> str:
    """A settled payment leaves the pending index. One that owes a receipt email enters the
    unsent-receipts index instead, in the settlement's own transaction, so the receipt is owed
    whatever happens to the process that settled it (domain/receipts.py)."""
    if not p.receipt_email:
        return " REMOVE gsi1pk, gsi1sk"
    named[":gpk"] = RECEIPTS_UNSENT_PK
    named[":gsk"] = _unsent_receipt_sort_key(p)
    return ", gsi1pk = :gpk, gsi1sk = :gsk"


def _link_put(table_name: str, payment: Payment, link: StripeObjectLink) -> dict[str, Any]:
    return {
        "TableName": table_name,
        "Item": dump(
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


def _settled_payment_item(table_name: str, write: SettlementWrite) -> dict[str, Any]:
    """The payment as settled: written whole if it is new (cash, check), else updated from
    a status that may still settle. The one guard of exactly-once."""
    p = write.payment
    if write.new:
        item = codec.payment_to_item(p)
        if p.receipt_email:
            # Owes its receipt email from the moment it exists (see _index_after_settlement).
            item["gsi1pk"], item["gsi1sk"] = RECEIPTS_UNSENT_PK, _unsent_receipt_sort_key(p)
        put = {
            "TableName": table_name,
            "Item": dump(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
        return {"Put": put}
    allowed = write.previous_statuses
    from_names = ", ".join(f":from{i}" for i in range(len(allowed)))
    named: dict[str, Any] = {
        ":status": p.status.value,
        ":alloc": codec.allocations_to(p.allocations),
        ":credit": p.credit_amount,
        ":fee": p.fee_amount,
        ":received": p.amount_received,
        ":conf": p.confirmation_number,
        ":at": p.succeeded_at,
        ":pm": codec.card_to(p.payment_method),
        ":null": None,
        ":cba": p.credit_balance_after,
    }
    named.update({f":from{i}": s.value for i, s in enumerate(allowed)})
    expression = (
        "SET #status = :status, allocations = :alloc, credit_amount = :credit, "
        "fee_amount = :fee, amount_received = :received, "
        "confirmation_number = :conf, succeeded_at = :at, payment_method = :pm, "
        "failure = :null, credit_balance_after = :cba"
    )
    condition = f"#status IN ({from_names})"
    if write.link is not None:
        expression += ", stripe_payment_intent_id = :pi, client_secret = :cs, "
        expression += "stripe_customer_id = :cus"
        named[":pi"] = p.stripe_payment_intent_id
        named[":cs"] = p.client_secret
        named[":cus"] = p.stripe_customer_id
        condition += f" AND {_ONE_INTENT}"
    expression += _index_after_settlement(p, named)
    return {
        "Update": {
            "TableName": table_name,
            "Key": key_of(p),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": values(named),
        }
    }


def _link_of(item: dict[str, Any], payment_field: str, account_field: str) -> StripeObjectLink:
    return StripeObjectLink(
        str(item["clinic_id"]),
        str(item["patient_id"]),
        str(item[payment_field]),
        str(item.get(account_field) or ""),
    )


class DynamoPayments(OnTable):
    def put_new_payment(self, payment: Payment) -> bool:
        return self._t.put_if_absent(codec.payment_to_item(payment))

    def get_payment(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment | None:
        item = self._t.get(patient_pk(clinic_id, patient_id), payment_sk(payment_id))
        return codec.payment_from(item) if item else None

    def list_payments(
        self, clinic_id: str, patient_id: str, limit: int, cursor: str | None
    ) -> Page[Payment]:
        # Payment ids are ULIDs: their sort keys are in the order the payments were made.
        pk = patient_pk(clinic_id, patient_id)
        named = values({":pk": pk, ":prefix": "PAYMENT#"})
        items, next_cursor = self._t.page(
            {"ExpressionAttributeValues": named}, pk, "PAYMENT#", limit, cursor
        )
        return Page([codec.payment_from(i) for i in items], next_cursor)

    def all_payments(self, clinic_id: str, patient_id: str) -> list[Payment]:
        items = self._t.query_all(patient_pk(clinic_id, patient_id), "PAYMENT#")
        return [codec.payment_from(i) for i in items]

    def attach_intent(self, payment: Payment, link: StripeObjectLink) -> None:
        self.attach_intent_answered(payment, link, None)

    def attach_intent_answered(
        self, payment: Payment, link: StripeObjectLink, answer: RequestAnswer | None
    ) -> None:
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._t.name,
                    "Key": key_of(payment),
                    "UpdateExpression": (
                        "SET stripe_payment_intent_id = :pi, client_secret = :cs, "
                        "stripe_customer_id = :cus, payment_method = :pm"
                    ),
                    "ConditionExpression": f"attribute_exists(pk) AND {_ONE_INTENT}",
                    "ExpressionAttributeValues": values(
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
            {"Put": _link_put(self._t.name, payment, link)},
        ]
        if answer is not None:
            items.append({"Update": answer_update(self._t.name, answer)})
        try:
            self._t.transact(items)
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                raise ConflictError("The payment is linked to another PaymentIntent.") from exc
            # Canceled for a concurrent transaction on the same items, not for its condition:
            # nothing was written, and the request's retry (same key) attaches it.
            raise ServiceUnavailableError(
                "The service is busy; nothing was lost. Retry with the same Idempotency-Key."
            ) from exc

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
        named: dict[str, Any] = {":status": status.value, ":failure": codec.failure_to(failure)}
        if payment_method is not None:
            sets.append("payment_method = :pm")
            named[":pm"] = codec.card_to(payment_method)
        if client_secret is not None:
            sets.append("client_secret = :cs")
            named[":cs"] = client_secret
        names = ", ".join(f":from{i}" for i in range(len(allowed)))
        named.update({f":from{i}": s.value for i, s in enumerate(allowed)})
        expression = "SET " + ", ".join(sets)
        if not awaits_outcome(replace(payment, status=status)):
            expression += " REMOVE gsi1pk, gsi1sk"
        else:
            expression += ", gsi1pk = :gpk, gsi1sk = :gsk"
            named[":gpk"] = codec.PENDING_PK
            named[":gsk"] = codec.pending_sort_key(payment)
        return self._t.update_if(
            Key=key_of(payment),
            UpdateExpression=expression,
            # States only move forward, whatever order events arrive in.
            ConditionExpression=f"#status IN ({names})",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(named),
        )

    def settle(self, write: SettlementWrite) -> SettleResult:
        p = write.payment
        items: list[Any] = [_settled_payment_item(self._t.name, write)]
        if write.link is not None:
            items.append({"Put": _link_put(self._t.name, p, write.link)})
        items += money_back_items(self._t.name, p, write.invoices, write.credit)
        if write.card_consent is not None:
            # The card saved while paying: its consent is on file the moment the payment is.
            consent = card_consent_put(self._t.name, p.clinic_id, p.patient_id, write.card_consent)
            items.append({"Put": consent})
        event_at = None
        if write.event is not None:
            event_at = len(items)
            items.append({"Put": event_put(self._t.name, write.event)})
        if write.answer is not None:
            items.append({"Update": answer_update(self._t.name, write.answer)})
        try:
            self._t.transact(items)
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                # settled already (or no longer settleable): change nothing
                return SettleResult.NOT_SETTLEABLE
            if event_at is not None and refused.failed(event_at):
                return SettleResult.DUPLICATE_EVENT
            if refused.concurrent:
                raise StaleWriteError("A concurrent transaction touched the same items.") from exc
            raise StaleWriteError("An invoice changed during settlement.") from exc
        return SettleResult.SETTLED

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
            keys.append((pk, payment_sk(payment_id)))
        keys += [(pk, invoice_sk(i)) for i in dict.fromkeys(invoice_ids)]
        keys += [(pk, f"CREDIT#{c}") for c in dict.fromkeys(currencies)]
        if customer_account is not None:
            keys.append((pk, customer_sk(customer_account)))
        event_seen_key = event_key(*event) if event else None
        if event_seen_key is not None:
            keys.append(event_seen_key)
        if summary:
            keys.append((pk, SUMMARY_SK))
        found = self._t.batch_get(keys)
        payment_item = found.get((pk, payment_sk(payment_id))) if payment_id else None
        invoices = {
            i: codec.invoice_from(item)
            for i in invoice_ids
            if (item := found.get((pk, invoice_sk(i)))) is not None
        }
        credits = {}
        for currency in currencies:
            item = found.get((pk, f"CREDIT#{currency}"))
            credits[currency] = (
                codec.credit_from(item) if item else Credit(balance=0, currency=currency, version=0)
            )
        customer = found.get((pk, customer_sk(customer_account))) if customer_account else None
        return PatientReads(
            payment=codec.payment_from(payment_item) if payment_item else None,
            invoices=invoices,
            credits=credits,
            customer_id=str(customer["customer_id"]) if customer else None,
            event_seen=event_seen_key is not None and event_seen_key in found,
            summary=summary_from(found[(pk, SUMMARY_SK)]) if (pk, SUMMARY_SK) in found else None,
        )

    def record_refund(self, write: RefundWrite) -> bool:
        p = write.payment
        pk = patient_pk(p.clinic_id, p.patient_id)
        seen = len(p.refunds)
        payment_update: dict[str, Any] = {
            "TableName": self._t.name,
            "Key": key_of(p),
            "UpdateExpression": (
                "SET refunds = list_append(if_not_exists(refunds, :empty), :record), "
                "refund_keys = list_append(if_not_exists(refund_keys, :empty), :key)"
            ),
            # Planned against the refunds read: any other refund since (or this one, recorded
            # by the webhook meanwhile) makes the service read again.
            "ConditionExpression": (
                "attribute_exists(pk) AND (attribute_not_exists(refund_keys) "
                "OR size(refund_keys) = :seen)"
                if seen == 0
                else "size(refund_keys) = :seen"
            ),
            "ExpressionAttributeValues": values(
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
            items.append({"Update": invoice_amount_update(self._t.name, p.clinic_id, pk, change)})
        if write.credit is not None:
            items += credit_items(self._t.name, p.clinic_id, p.patient_id, write.credit)
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
            items.append({"Put": {"TableName": self._t.name, "Item": dump(marker)}})
        self._t.transact_or_stale(items, "The payment, an invoice or the credit moved.")
        return True

    def record_refund_outcome(self, write: RefundOutcomeWrite) -> None:
        p = write.payment
        i = write.index
        seen = p.refunds[i]
        named: dict[str, Any] = {
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
                    "TableName": self._t.name,
                    "Key": key_of(p),
                    "UpdateExpression": f"SET refunds[{i}] = :record",
                    "ConditionExpression": condition,
                    "ExpressionAttributeNames": {"#status": "status"},
                    "ExpressionAttributeValues": values(named),
                }
            }
        ]
        items += money_back_items(self._t.name, p, write.invoices, write.credit)
        if seen.is_reserved and not write.record.is_reserved:
            key = self._t.key(patient_pk(p.clinic_id, p.patient_id), f"REFUND_RESERVED#{seen.id}")
            items.append({"Delete": {"TableName": self._t.name, "Key": key}})
        self._t.transact_or_stale(items, "The refund, an invoice or the credit moved.")

    def reserved_refunds(self, older_than: str, limit: int) -> list[ReservedRefundRef]:
        return [
            ReservedRefundRef(_link_of(item, "payment_id", "account_id"), str(item["refund_id"]))
            for item in self._t.older_in_index(REFUNDS_RESERVED_PK, older_than, limit)
        ]

    def set_dispute(self, payment: Payment, dispute: Dispute, at_risk: list[Allocation]) -> None:
        pk = patient_pk(payment.clinic_id, payment.patient_id)
        items: list[Any] = [
            {
                "Update": {
                    "TableName": self._t.name,
                    "Key": key_of(payment),
                    "UpdateExpression": "SET dispute = :dispute",
                    # Only on a payment that is recorded (an update would create a stub).
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeValues": values({":dispute": codec.dispute_to(dispute)}),
                }
            }
        ]
        for a in at_risk:
            items.append(
                {
                    "Update": {
                        "TableName": self._t.name,
                        "Key": self._t.key(pk, invoice_sk(a.invoice_id)),
                        "UpdateExpression": "ADD amount_at_risk :amount",
                        "ExpressionAttributeValues": values({":amount": a.amount}),
                    }
                }
            )
        try:
            self._t.transact(items)
        except ClientError as exc:
            if (refused := refusal(exc)) is None:
                raise
            if refused.failed(0):
                return  # no such payment: nothing to record it on, and nothing was written
            raise StaleWriteError("A concurrent transaction touched the payment.") from exc

    def record_card_details(
        self, link: StripeObjectLink, intent_id: str, card: CardSummary
    ) -> bool:
        return self._t.update_if(
            Key=payment_key(link.clinic_id, link.patient_id, link.payment_id),
            UpdateExpression="SET card_details = :card",
            ConditionExpression="stripe_payment_intent_id = :pi",
            ExpressionAttributeValues=values({":card": codec.card_to(card), ":pi": intent_id}),
        )

    def get_stripe_link(self, object_id: str) -> StripeObjectLink | None:
        item = self._t.get(f"STRIPE#{object_id}", "LINK")
        return _link_of(item, "payment_id", "account_id") if item else None

    def pending_payments(self, older_than: str, limit: int) -> list[StripeObjectLink]:
        # The GSI is eventually consistent: it only says where to look. settle() decides.
        return [
            _link_of(item, "id", "stripe_account_id")
            for item in self._t.older_in_index(codec.PENDING_PK, older_than, limit)
        ]

    def stop_tracking(self, payment: Payment) -> None:
        # A payment that is not recorded has nothing to drop (an update would create a stub).
        self._t.update_if(
            Key=key_of(payment),
            UpdateExpression="REMOVE gsi1pk, gsi1sk",
            ConditionExpression="attribute_exists(pk)",
        )
