"""What is sent to patients: the receipt emails a settlement owes (ReceiptOutbox, on the
payment's own item and the unsent-receipts index) and the pay-online requests sent
(PaymentRequestLog)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import patient_pk
from clinic_payments.adapters.dynamo.payments import RECEIPTS_UNSENT_PK, payment_key
from clinic_payments.adapters.dynamo.table import OnTable, dump, load, refusal, values
from clinic_payments.domain.model import PaymentStatus
from clinic_payments.domain.ports import PaymentRequestRecord, ReceiptRef


class DynamoReceiptOutbox(OnTable):
    def claim_receipt(self, ref: ReceiptRef, now: str, until: str) -> bool:
        return self._t.update_if(
            Key=payment_key(ref.clinic_id, ref.patient_id, ref.payment_id),
            UpdateExpression="SET receipt_claim_until = :until",
            # One sender at a time, and never after it was sent: a claim whose holder died
            # expires (ISO timestamps compare as text).
            ConditionExpression=(
                "#status = :succeeded AND attribute_not_exists(receipt_sent_at) AND "
                "(attribute_not_exists(receipt_claim_until) OR receipt_claim_until < :now)"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues=values(
                {":until": until, ":now": now, ":succeeded": PaymentStatus.SUCCEEDED.value}
            ),
        )

    def mark_receipt_sent(self, ref: ReceiptRef, at: str) -> None:
        # Refused: marked by a sender whose claim had expired; sent once either way.
        self._t.update_if(
            Key=payment_key(ref.clinic_id, ref.patient_id, ref.payment_id),
            UpdateExpression="SET receipt_sent_at = :at REMOVE receipt_claim_until, gsi1pk, gsi1sk",
            ConditionExpression="attribute_not_exists(receipt_sent_at)",
            ExpressionAttributeValues=values({":at": at}),
        )

    def release_receipt(self, ref: ReceiptRef, *, give_up_after: int) -> bool:
        key = payment_key(ref.clinic_id, ref.patient_id, ref.payment_id)
        try:
            out = self._t.client.update_item(
                TableName=self._t.name,
                Key=key,
                UpdateExpression="REMOVE receipt_claim_until ADD receipt_attempts :one",
                ConditionExpression="attribute_not_exists(receipt_sent_at)",
                ExpressionAttributeValues=values({":one": 1}),
                ReturnValues="UPDATED_NEW",
            )
        except ClientError as exc:
            if (refused := refusal(exc)) is not None and refused.failed(0):
                return False  # sent meanwhile
            raise
        attempts = int(load(out.get("Attributes", {})).get("receipt_attempts", 0))
        if attempts < give_up_after:
            return False
        # Given up: out of the retry index, with the attempts on record for an operator.
        self._t.update_if(
            Key=key,
            UpdateExpression="REMOVE gsi1pk, gsi1sk",
            ConditionExpression="attribute_not_exists(receipt_sent_at) AND gsi1pk = :pk",
            ExpressionAttributeValues=values({":pk": RECEIPTS_UNSENT_PK}),
        )
        return True

    def unsent_receipts(self, older_than: str, limit: int) -> list[ReceiptRef]:
        # The GSI is eventually consistent: it says where to look; the claim decides.
        return [
            ReceiptRef(str(item["clinic_id"]), str(item["patient_id"]), str(item["id"]))
            for item in self._t.older_in_index(RECEIPTS_UNSENT_PK, older_than, limit)
        ]


class DynamoPaymentRequestLog(OnTable):
    def put_payment_request(self, record: PaymentRequestRecord) -> None:
        self._t.client.put_item(
            TableName=self._t.name,
            Item=dump(
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
