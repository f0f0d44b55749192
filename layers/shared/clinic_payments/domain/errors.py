"""Domain errors. Each maps to exactly one HTTP status in clinic_payments.api.errors."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class ValidationError(DomainError):
    code = "validation_error"


class AmountTooSmallError(ValidationError):
    """A card charge under Stripe's minimum for its currency: Stripe would refuse it."""

    code = "amount_too_small"


class UnauthorizedError(DomainError):
    code = "unauthorized"


class ForbiddenError(DomainError):
    code = "forbidden"


class NotFoundError(DomainError):
    code = "not_found"


class ConflictError(DomainError):
    code = "conflict"


class InsufficientCreditError(ConflictError):
    code = "insufficient_credit"


class IdempotencyKeyRequiredError(DomainError):
    code = "idempotency_key_required"


class IdempotencyKeyReusedError(DomainError):
    code = "idempotency_key_reused"


class RequestInProgressError(ConflictError):
    """Another request with the same Idempotency-Key is still being processed."""

    code = "request_in_progress"


class ConsentRequiredError(DomainError):
    code = "consent_required"


class PaymentError(DomainError):
    """A payment that did not go through. Carries the Payment as it now stands."""

    code = "payment_failed"

    def __init__(
        self,
        message: str,
        details: list[dict[str, Any]] | None = None,
        payment: Any = None,
    ) -> None:
        super().__init__(message, details)
        self.payment = payment


class CardDeclinedError(PaymentError):
    code = "card_declined"


class PaymentFailedError(PaymentError):
    code = "payment_failed"


class PaymentRequiresActionError(PaymentError):
    code = "payment_requires_action"


class PaymentProviderUnavailableError(PaymentError):
    """Stripe timed out or answered 5xx: the outcome is unknown, the payment stays processing."""

    code = "payment_provider_unavailable"


class ServiceUnavailableError(DomainError):
    """A service this API stores in (DynamoDB, Secrets Manager) throttled or failed after its
    retries: nothing the retry would repeat was done, so the client retries with the same key."""

    code = "service_unavailable"


class StaleWriteError(ConflictError):
    """An optimistic write lost a race; the caller re-reads and tries again."""


class WebhookSignatureError(DomainError):
    """A webhook whose signature, timestamp, clinic or account does not check out."""

    code = "invalid_signature"


class PaymentNotSucceededError(ConflictError):
    """A receipt was asked for a payment that has not succeeded (yet)."""

    code = "payment_not_succeeded"


class InvoiceNotPayableError(ConflictError):
    """The invoice is paid or void: there is nothing to pay on it."""

    code = "invoice_not_payable"


class PayLinkExpiredError(DomainError):
    """A genuine pay link whose time is up."""

    code = "pay_link_expired"


class EmailNotSentError(DomainError):
    """The email service refused or could not be reached; nothing was sent."""

    code = "email_unavailable"
