"""CustomerStore: a patient's Stripe customer per account, and the consent records of the
cards they saved (which cards exist is Stripe's to say; what the patient agreed to is ours)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import patient_pk
from clinic_payments.adapters.dynamo.table import OnTable, dump, refusal, values
from clinic_payments.domain.errors import ServiceUnavailableError
from clinic_payments.domain.model import CardConsent, CardSetup


def customer_sk(account_id: str) -> str:
    return f"CUSTOMER#{account_id}"


def card_consent_put(
    table_name: str, clinic_id: str, patient_id: str, consent: CardConsent
) -> dict[str, Any]:
    item = codec.card_consent_to_item(clinic_id, patient_id, consent)
    return {"TableName": table_name, "Item": dump(item)}


class DynamoCustomers(OnTable):
    def get_customer_id(self, clinic_id: str, patient_id: str, account_id: str) -> str | None:
        item = self._t.get(patient_pk(clinic_id, patient_id), customer_sk(account_id))
        return str(item["customer_id"]) if item else None

    def put_customer_id(
        self, clinic_id: str, patient_id: str, account_id: str, customer_id: str
    ) -> str:
        """The customer recorded first wins: a second request creating one gets the first."""
        written = self._t.put_if_absent(
            {
                "pk": patient_pk(clinic_id, patient_id),
                "sk": customer_sk(account_id),
                "type": "stripe_customer",
                "customer_id": customer_id,
            }
        )
        if written:
            return customer_id
        existing = self.get_customer_id(clinic_id, patient_id, account_id)
        if existing is None:
            # Refused as existing, then not found: never expected; answered as a retryable
            # 503 rather than a 500, and nothing was charged yet.
            raise ServiceUnavailableError(
                "The service is busy; nothing was charged. Retry shortly."
            )
        return existing

    def put_card_setup(self, setup: CardSetup) -> bool:
        return self._t.put_if_absent(codec.card_setup_to_item(setup))

    def get_card_setup(self, clinic_id: str, patient_id: str, setup_id: str) -> CardSetup | None:
        item = self._t.get(patient_pk(clinic_id, patient_id), f"CARD_SETUP#{setup_id}")
        return codec.card_setup_from(item) if item else None

    def attach_card_consent(self, setup: CardSetup, consent: CardConsent) -> bool:
        pk = patient_pk(setup.clinic_id, setup.patient_id)
        reconcile = {
            "TableName": self._t.name,
            "Key": dump({"pk": pk, "sk": f"CARD_SETUP#{setup.id}"}),
            "UpdateExpression": "SET payment_method_id = :pm",
            # A setup saves one card: reconciled once, with that card only.
            "ConditionExpression": (
                "attribute_exists(pk) AND (attribute_not_exists("
                "payment_method_id) OR payment_method_id = :null "
                "OR payment_method_id = :pm)"
            ),
            "ExpressionAttributeValues": values({":pm": consent.payment_method_id, ":null": None}),
        }
        put = card_consent_put(self._t.name, setup.clinic_id, setup.patient_id, consent)
        try:
            self._t.transact([{"Update": reconcile}, {"Put": put}])
        except ClientError as exc:
            if (refused := refusal(exc)) is not None and refused.failed(0):
                return False
            raise  # a concurrent transaction: the webhook answers 5xx and Stripe retries
        return True

    def card_consents(self, clinic_id: str, patient_id: str) -> list[CardConsent]:
        items = self._t.query_all(patient_pk(clinic_id, patient_id), "CARD#")
        return [codec.card_consent_from(i) for i in items]

    def forget_card_consent(self, clinic_id: str, patient_id: str, payment_method_id: str) -> None:
        self._t.client.delete_item(
            TableName=self._t.name,
            Key=self._t.key(patient_pk(clinic_id, patient_id), f"CARD#{payment_method_id}"),
        )
