"""The composition root: the one place that builds adapters and services.

Settings are parsed from the environment lazily, once per container (cold start of the first
request that needs them), never at import time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from pydantic import BaseModel, Field

from clinic_payments.adapters.clock import SystemClock
from clinic_payments.adapters.dynamo_accounts import DynamoPatientAccounts
from clinic_payments.adapters.dynamo_repository import DynamoPaymentsRepository
from clinic_payments.adapters.pdf import PdfRenderer
from clinic_payments.adapters.secrets import SecretsManagerClinicSecrets, SecretsManagerSigningKey
from clinic_payments.adapters.ses_email import SesEmailSender
from clinic_payments.adapters.stripe_gateway import StripeGateways, StripeWebhookVerifier
from clinic_payments.domain.administering import AdminService
from clinic_payments.domain.audit import Auditor
from clinic_payments.domain.crediting import CreditService
from clinic_payments.domain.daily_audit import DailyAudit
from clinic_payments.domain.documents import DocumentService
from clinic_payments.domain.invoicing import InvoiceService
from clinic_payments.domain.paying import PaymentService
from clinic_payments.domain.paylinks import PayLinkService
from clinic_payments.domain.receipts import ReceiptMailer
from clinic_payments.domain.reconciling import Reconciler
from clinic_payments.domain.refunding import RefundService
from clinic_payments.domain.saved_cards import SavedCardService
from clinic_payments.domain.webhooks import WebhookService

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_ses.client import SESClient


class RuntimeSettings(BaseModel):
    """The environment variables of template.yaml's Globals, checked once."""

    table_name: str = Field(min_length=1)
    clinic_secrets_prefix: str = Field(min_length=1)
    # Only for the local stack and tests (the Stripe fake); unset in AWS, where the SDK's
    # default api.stripe.com is used.
    stripe_api_base: str | None = None
    # Receipts and pay-online requests. Empty where a function sends no email or signs no link;
    # the code that needs one says so when it is missing.
    receipts_from_address: str = ""
    pay_link_base_url: str = ""
    pay_link_signing_key_name: str = ""

    @classmethod
    def from_environ(cls) -> RuntimeSettings:
        return cls(
            table_name=os.environ.get("TABLE_NAME", ""),
            clinic_secrets_prefix=os.environ.get("CLINIC_SECRETS_PREFIX", ""),
            stripe_api_base=os.environ.get("STRIPE_API_BASE") or None,
            receipts_from_address=os.environ.get("RECEIPTS_FROM_ADDRESS", ""),
            pay_link_base_url=os.environ.get("PAY_LINK_BASE_URL", ""),
            pay_link_signing_key_name=os.environ.get("PAY_LINK_SIGNING_KEY_NAME", ""),
        )


@dataclass(frozen=True)
class Container:
    settings: RuntimeSettings
    repository: DynamoPaymentsRepository
    secrets: SecretsManagerClinicSecrets
    stripe: StripeGateways
    invoices: InvoiceService
    payments: PaymentService
    saved_cards: SavedCardService
    webhooks: WebhookService
    admin: AdminService
    credit: CreditService
    refunds: RefundService
    reconciler: Reconciler
    documents: DocumentService
    receipts: ReceiptMailer
    pay_links: PayLinkService
    daily_audit: DailyAudit


_AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)


def build_container(settings: RuntimeSettings) -> Container:
    dynamodb: DynamoDBClient = boto3.client("dynamodb", config=_AWS_CONFIG)
    secretsmanager: SecretsManagerClient = boto3.client("secretsmanager", config=_AWS_CONFIG)
    clock = SystemClock()
    repository = DynamoPaymentsRepository(dynamodb, settings.table_name)
    secrets = SecretsManagerClinicSecrets(secretsmanager, settings.clinic_secrets_prefix)
    stripe = StripeGateways(secrets, settings.stripe_api_base)
    documents = DocumentService(repository, PdfRenderer())
    email = SesEmailSender(_ses_client, settings.receipts_from_address)
    receipts = ReceiptMailer(repository, repository, documents, email, clock)
    payments = PaymentService(repository, stripe, clock, receipts)
    refunds = RefundService(repository, stripe, clock)
    saved_cards = SavedCardService(repository, stripe, payments, clock)
    signing_key = SecretsManagerSigningKey(secretsmanager, settings.pay_link_signing_key_name)
    return Container(
        settings=settings,
        repository=repository,
        secrets=secrets,
        stripe=stripe,
        invoices=InvoiceService(repository, clock),
        payments=payments,
        refunds=refunds,
        saved_cards=saved_cards,
        webhooks=WebhookService(
            repository, payments, secrets, StripeWebhookVerifier(), refunds, stripe, saved_cards
        ),
        admin=AdminService(repository, secrets, clock),
        credit=CreditService(repository, clock),
        reconciler=Reconciler(
            repository, payments, stripe, clock, receipts=receipts, refunds=refunds
        ),
        documents=documents,
        receipts=receipts,
        pay_links=PayLinkService(
            repository,
            repository,
            payments,
            signing_key,
            email,
            clock,
            settings.pay_link_base_url,
        ),
        # The table only, no Stripe: see clinic_payments.domain.daily_audit.
        daily_audit=DailyAudit(
            DynamoPatientAccounts(dynamodb, settings.table_name), Auditor(repository, None)
        ),
    )


def _ses_client() -> SESClient:
    client: SESClient = boto3.client("ses", config=_AWS_CONFIG)
    return client


_lock = threading.Lock()
_container: Container | None = None


def container() -> Container:
    global _container
    if _container is None:
        with _lock:
            if _container is None:
                _container = build_container(RuntimeSettings.from_environ())
    return _container


def reset_container() -> None:
    """Forget the built container (tests that change the environment)."""
    global _container
    with _lock:
        _container = None
