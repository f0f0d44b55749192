"""DynamoDB implementation of PaymentsRepository: one table, a patient's account per partition.

Composed of one adapter per aggregate (`adapters/dynamo/`), each implementing its own port over
the one table helper. Every write that decides money is conditional; a settlement is one
transaction. No Scan on a request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from clinic_payments.adapters.codec import patient_pk
from clinic_payments.adapters.dynamo.config import DynamoClinicConfig
from clinic_payments.adapters.dynamo.credit import DynamoCreditLedger
from clinic_payments.adapters.dynamo.customers import DynamoCustomers
from clinic_payments.adapters.dynamo.events import DynamoWebhookEvents
from clinic_payments.adapters.dynamo.idempotency import DynamoIdempotency
from clinic_payments.adapters.dynamo.invoices import DynamoInvoices
from clinic_payments.adapters.dynamo.outbox import DynamoPaymentRequestLog, DynamoReceiptOutbox
from clinic_payments.adapters.dynamo.payments import DynamoPayments
from clinic_payments.adapters.dynamo.table import Table, load, values

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

    from clinic_payments.domain.ports import (
        ClinicConfigStore,
        CreditLedger,
        CustomerStore,
        IdempotencyStore,
        InvoiceStore,
        PaymentRequestLog,
        PaymentsRepository,
        PaymentStore,
        ReceiptOutbox,
        WebhookEventLog,
    )


class DynamoPaymentsRepository(
    DynamoClinicConfig,
    DynamoInvoices,
    DynamoPayments,
    DynamoCreditLedger,
    DynamoCustomers,
    DynamoWebhookEvents,
    DynamoIdempotency,
    DynamoReceiptOutbox,
    DynamoPaymentRequestLog,
):
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(Table(client, table_name), monotonic)

    def patients_of_clinic(self, clinic_id: str) -> list[str]:
        """Every patient with records in this clinic. A Scan: for the audit command only,
        never on a request path (its cost grows with the table)."""
        prefix = f"{patient_pk(clinic_id, '')}"
        patients: set[str] = set()
        kwargs: dict[str, Any] = {
            "TableName": self._t.name,
            "FilterExpression": "begins_with(pk, :prefix)",
            "ProjectionExpression": "pk",
            "ExpressionAttributeValues": values({":prefix": prefix}),
        }
        while True:
            page = self._t.client.scan(**kwargs)
            patients.update(str(load(i)["pk"])[len(prefix) :] for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(patients)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


if TYPE_CHECKING:
    # Each aggregate's adapter implements its own port; the composite, all of them.
    def _ports(table: Table, whole: DynamoPaymentsRepository) -> None:
        _config: ClinicConfigStore = DynamoClinicConfig(table)
        _invoices: InvoiceStore = DynamoInvoices(table)
        _payments: PaymentStore = DynamoPayments(table)
        _credit: CreditLedger = DynamoCreditLedger(table)
        _customers: CustomerStore = DynamoCustomers(table)
        _events: WebhookEventLog = DynamoWebhookEvents(table)
        _idempotency: IdempotencyStore = DynamoIdempotency(table)
        _receipts: ReceiptOutbox = DynamoReceiptOutbox(table)
        _requests: PaymentRequestLog = DynamoPaymentRequestLog(table)
        _repository: PaymentsRepository = whole
