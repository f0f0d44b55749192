"""The composition root: the one place that builds adapters and services.

Settings are parsed from the environment lazily, once per container (cold start of the first
request that needs them), never at import time.

Each service is built on first use, with the adapters it needs, and those adapters' modules are
imported only then: a function imports what its own routes use. The functions that never call
Stripe never load stripe-python; those that do load it during init (`load_stripe`), not in their
first request.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast, overload

import boto3
from botocore.config import Config
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_secretsmanager.client import SecretsManagerClient
    from mypy_boto3_ses.client import SESClient

    from clinic_payments.adapters.clock import SystemClock
    from clinic_payments.adapters.dynamo_repository import DynamoPaymentsRepository
    from clinic_payments.adapters.secrets import SecretsManagerClinicSecrets
    from clinic_payments.adapters.ses_email import SesEmailSender
    from clinic_payments.adapters.stripe_accounts import StripeGateways
    from clinic_payments.domain.administering import AdminService
    from clinic_payments.domain.credit.service import CreditService
    from clinic_payments.domain.daily_audit import DailyAudit
    from clinic_payments.domain.documents import DocumentService
    from clinic_payments.domain.invoices.service import InvoiceService
    from clinic_payments.domain.paylinks import PayLinkService
    from clinic_payments.domain.payments.service import PaymentService
    from clinic_payments.domain.receipts import ReceiptMailer
    from clinic_payments.domain.reconciling import Reconciler
    from clinic_payments.domain.refunds.service import RefundService
    from clinic_payments.domain.saved_cards import SavedCardService
    from clinic_payments.domain.webhooks import WebhookService


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


_AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=3, read_timeout=10
)

T = TypeVar("T")


class _built(Generic[T]):
    """A part of the container built on first use, then kept for the container's life. Built
    under the container's lock: the threads of one process share one client of each kind (a
    boto3 session is not safe to build clients from concurrently)."""

    def __init__(self, build: Callable[[Container], T]) -> None:
        self._build = build
        self._name = build.__name__

    @overload
    def __get__(self, container: None, owner: type[Container]) -> Self: ...
    @overload
    def __get__(self, container: Container, owner: type[Container]) -> T: ...
    def __get__(self, container: Container | None, owner: type[Container]) -> T | Self:
        if container is None:
            return self
        with container._lock:
            # Kept in the instance's dict, which Python reads before this (non-data) descriptor:
            # once built, no lookup comes here again.
            built: dict[str, Any] = container.__dict__
            if self._name not in built:
                built[self._name] = self._build(container)
            return cast(T, built[self._name])


class Container:
    """The services of one Lambda container (or of one test's own container)."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()

    # -- clients and adapters ------------------------------------------------------------------

    @_built
    def dynamodb(self) -> DynamoDBClient:
        client: DynamoDBClient = boto3.client("dynamodb", config=_AWS_CONFIG)
        return client

    @_built
    def secretsmanager(self) -> SecretsManagerClient:
        client: SecretsManagerClient = boto3.client("secretsmanager", config=_AWS_CONFIG)
        return client

    @_built
    def clock(self) -> SystemClock:
        from clinic_payments.adapters.clock import SystemClock

        return SystemClock()

    @_built
    def repository(self) -> DynamoPaymentsRepository:
        from clinic_payments.adapters.dynamo_repository import DynamoPaymentsRepository

        return DynamoPaymentsRepository(self.dynamodb, self.settings.table_name)

    @_built
    def secrets(self) -> SecretsManagerClinicSecrets:
        from clinic_payments.adapters.secrets import SecretsManagerClinicSecrets

        return SecretsManagerClinicSecrets(self.secretsmanager, self.settings.clinic_secrets_prefix)

    @_built
    def stripe(self) -> StripeGateways:
        from clinic_payments.adapters.stripe_accounts import StripeGateways

        return StripeGateways(self.secrets, self.settings.stripe_api_base)

    @_built
    def email(self) -> SesEmailSender:
        from clinic_payments.adapters.ses_email import SesEmailSender

        return SesEmailSender(_ses_client, self.settings.receipts_from_address)

    # -- services ------------------------------------------------------------------------------

    @_built
    def invoices(self) -> InvoiceService:
        from clinic_payments.domain.invoices.service import InvoiceService

        return InvoiceService(self.repository, self.clock)

    @_built
    def documents(self) -> DocumentService:
        from clinic_payments.adapters.pdf import PdfRenderer
        from clinic_payments.domain.documents import DocumentService

        return DocumentService(self.repository, PdfRenderer())

    @_built
    def receipts(self) -> ReceiptMailer:
        from clinic_payments.domain.receipts import ReceiptMailer

        repository = self.repository
        return ReceiptMailer(repository, repository, self.documents, self.email, self.clock)

    @_built
    def payments(self) -> PaymentService:
        from clinic_payments.domain.payments.service import PaymentService

        return PaymentService(self.repository, self.stripe, self.clock, self.receipts)

    @_built
    def refunds(self) -> RefundService:
        from clinic_payments.domain.refunds.service import RefundService

        return RefundService(self.repository, self.stripe, self.clock)

    @_built
    def saved_cards(self) -> SavedCardService:
        from clinic_payments.domain.saved_cards import SavedCardService

        return SavedCardService(self.repository, self.stripe, self.payments, self.clock)

    @_built
    def webhooks(self) -> WebhookService:
        from clinic_payments.adapters.stripe_gateway import StripeWebhookVerifier
        from clinic_payments.domain.webhooks import WebhookService

        return WebhookService(
            self.repository,
            self.payments,
            self.secrets,
            StripeWebhookVerifier(),
            self.refunds,
            self.stripe,
            self.saved_cards,
        )

    @_built
    def admin(self) -> AdminService:
        from clinic_payments.domain.administering import AdminService

        return AdminService(self.repository, self.secrets, self.clock)

    @_built
    def credit(self) -> CreditService:
        from clinic_payments.domain.credit.service import CreditService

        return CreditService(self.repository, self.clock)

    @_built
    def reconciler(self) -> Reconciler:
        from clinic_payments.domain.reconciling import Reconciler

        return Reconciler(
            self.repository,
            self.payments,
            self.stripe,
            self.clock,
            receipts=self.receipts,
            refunds=self.refunds,
        )

    @_built
    def pay_links(self) -> PayLinkService:
        from clinic_payments.adapters.secrets import SecretsManagerSigningKey
        from clinic_payments.domain.paylinks import PayLinkService

        repository = self.repository
        return PayLinkService(
            repository,
            repository,
            self.payments,
            SecretsManagerSigningKey(self.secretsmanager, self.settings.pay_link_signing_key_name),
            self.email,
            self.clock,
            self.settings.pay_link_base_url,
        )

    @_built
    def daily_audit(self) -> DailyAudit:
        from clinic_payments.adapters.dynamo_accounts import DynamoPatientAccounts
        from clinic_payments.domain.audit import Auditor
        from clinic_payments.domain.daily_audit import DailyAudit

        # The table only, no Stripe: see clinic_payments.domain.daily_audit.
        accounts = DynamoPatientAccounts(self.dynamodb, self.settings.table_name)
        return DailyAudit(accounts, Auditor(self.repository, None))


def build_container(settings: RuntimeSettings) -> Container:
    return Container(settings)


def _ses_client() -> SESClient:
    client: SESClient = boto3.client("ses", config=_AWS_CONFIG)
    return client


def load_stripe() -> None:
    """Import stripe-python now. The functions whose requests call Stripe call this at init: the
    SDK's import is then part of their init (and of their measured cold start), not a cost their
    first request finds."""
    import clinic_payments.adapters.stripe_gateway  # noqa: F401


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
