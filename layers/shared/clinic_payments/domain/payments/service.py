"""Payments: record first, then charge, then settle exactly once.

1. A payment record is written (with its allocations) before any Stripe call.
2. Stripe idempotency keys derive from the payment id, so a retried request never charges twice.
3. `settle_intent` is the one settlement path: the synchronous response, the webhook and the
   reconciler all call it, and a second call for the same PaymentIntent changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from clinic_payments.domain.allocation import plan_payment, plan_settlement
from clinic_payments.domain.contention import until_written
from clinic_payments.domain.credit.lots import add_to_lot
from clinic_payments.domain.errors import (
    AmountTooSmallError,
    CardDeclinedError,
    ConflictError,
    ConsentRequiredError,
    NotFoundError,
    PaymentError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
    PaymentRequiresActionError,
    ValidationError,
)
from clinic_payments.domain.ids import confirmation_number, new_id
from clinic_payments.domain.model import (
    AccountStatus,
    Caller,
    CardConsent,
    CardSummary,
    ClinicSettings,
    Consent,
    Failure,
    IntentSnapshot,
    Invoice,
    InvoicePaymentRef,
    LedgerEntry,
    LedgerEntryType,
    Page,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
    Role,
    StripeAccount,
)
from clinic_payments.domain.money import fee_for, format_amount, is_valid_amount, minimum_charge
from clinic_payments.domain.payments.rules import ConsentGiven, PaymentRequest, refusal
from clinic_payments.domain.payments.states import may_move, status_from_intent, statuses_before
from clinic_payments.domain.ports import (
    Answering,
    Clock,
    CreditChange,
    EventMark,
    InvoiceAmountChange,
    PatientReads,
    PaymentsRepository,
    ReceiptNotifier,
    SettlementWrite,
    SettleResult,
    StripeGateways,
    StripeObjectLink,
)

log = logging.getLogger(__name__)


# Stripe's card_error codes: the card (or its holder's bank) said no.
CARD_DECLINE_CODES: Final = frozenset(
    {
        "card_declined",
        "expired_card",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_zip",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "processing_error",
    }
)


def check_card_minimum(charge: int, currency: str) -> None:
    """Stripe refuses a card charge under its minimum for the currency (`amount_too_small`):
    say so before anything is written or sent. Cash, check and credit have no minimum, so a
    small remainder can still be settled those ways."""
    minimum = minimum_charge(currency)
    if minimum is not None and charge < minimum:
        raise AmountTooSmallError(
            f"A card payment must be at least {format_amount(minimum, currency)} "
            f"{currency.upper()} (Stripe's minimum charge); this one would charge "
            f"{format_amount(charge, currency)}. Pay it in cash, by check or with account "
            "credit, or add it to a larger payment.",
            [
                {
                    "field": "amount",
                    "issue": "below the minimum card charge",
                    "minimum": minimum,
                    "charge": charge,
                }
            ],
        )


def is_card_decline(failure: Failure | None) -> bool:
    """One answer whichever way Stripe reported it (an error, or the intent's last error)."""
    if failure is None:
        return False
    return failure.decline_code is not None or failure.code in CARD_DECLINE_CODES


class PaymentService:
    def __init__(
        self,
        repository: PaymentsRepository,
        stripe: StripeGateways,
        clock: Clock,
        receipts: ReceiptNotifier | None = None,
    ) -> None:
        self._repo = repository
        self._stripe = stripe
        self._clock = clock
        self._receipts = receipts

    # -- reading -------------------------------------------------------------------------

    def get(self, clinic_id: str, patient_id: str, payment_id: str) -> Payment:
        payment = self._repo.get_payment(clinic_id, patient_id, payment_id)
        if payment is None:
            raise NotFoundError("Payment not found.")
        return payment

    def history(
        self, clinic_id: str, patient_id: str, limit: int, cursor: str | None
    ) -> Page[Payment]:
        """The patient's payment history, newest first: every payment, whatever its status."""
        return self._repo.list_payments(clinic_id, patient_id, limit, cursor)

    # -- creating ------------------------------------------------------------------------

    def create(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        request: PaymentRequest,
        payment_id: str,
        *,
        fresh: bool = False,
        answer: Answering[Payment] | None = None,
    ) -> Payment:
        """Create (or, for a retried request, resume) a payment and take it as far as it goes.

        `fresh`: nothing was written under this payment id yet (a first attempt), so there is
        nothing to resume. `answer`: the request's answer, recorded by the write that ends it."""
        if not fresh:
            existing = self._repo.get_payment(clinic_id, patient_id, payment_id)
            if existing is not None:
                return self._advance(existing)
        payment, reads = self._new_payment(caller, clinic_id, patient_id, request, payment_id)
        if payment.method is not PaymentMethodType.CARD:
            # Cash and check: the money is in the clinic's hands, so the payment is written
            # settled, with its invoices and credit, in one transaction.
            settled, _ = self._settle(
                payment, payment.amount, None, reads=reads, new=True, answer=answer
            )
            return self._raise_for_outcome(settled or self.get(clinic_id, patient_id, payment_id))
        if not self._repo.put_new_payment(payment):
            # Another attempt of the same request wrote it first: carry on from what it wrote.
            return self._advance(self.get(clinic_id, patient_id, payment_id))
        return self._charge(payment, reads, answer)

    def _new_payment(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        request: PaymentRequest,
        payment_id: str,
    ) -> tuple[Payment, PatientReads]:
        settings = self._settings(clinic_id)
        problem = refusal(caller, request, settings)
        if problem is not None:
            raise problem
        consent = self._consent(caller, request, settings)

        account: StripeAccount | None = None
        if request.method is PaymentMethodType.CARD:
            account = self._charging_account(clinic_id, caller, request)
        # One round trip for what the payment touches: the invoices it names, the credit its
        # overflow would go to, the patient's Stripe customer in the charging account.
        paying_oldest_first = (
            not request.allocations and request.purpose is not PaymentPurpose.CREDIT_TOPUP
        )
        reads = self._repo.read_patient(
            clinic_id,
            patient_id,
            invoice_ids=tuple(a.invoice_id for a in request.allocations or []),
            currencies=(settings.currency,),
            customer_account=account.account_id if account else None,
            summary=paying_oldest_first,
        )
        if request.purpose is PaymentPurpose.CREDIT_TOPUP:
            # A top-up pays no invoice: no need to read them.
            plan_allocations, credit, currency = [], request.amount or 0, settings.currency
        else:
            invoices = list(reads.invoices.values())
            if paying_oldest_first:
                invoices = self._payable_invoices(clinic_id, patient_id, reads)
            plan = plan_payment(request.allocations, request.amount, invoices)
            plan_allocations, credit = plan.allocations, plan.credit_amount
            currency = plan.currency or settings.currency
            planned = {a.invoice_id for a in plan_allocations}
            reads = replace(reads, invoices={i.id: i for i in invoices if i.id in planned})
        amount = sum(a.amount for a in plan_allocations) + credit
        if not is_valid_amount(amount):
            raise ValidationError(
                "The payment amount must be between 1 and 99999999 minor units.",
                [{"field": "amount", "issue": "out of range"}],
            )
        fee = 0
        if request.method is PaymentMethodType.CARD:
            if settings.pass_processing_fees:
                rate = settings.fee_schedule["card"]
                fee = fee_for(amount, rate.percent, rate.fixed)
                if not is_valid_amount(amount + fee):
                    raise ValidationError("The amount with the processing fee is too large.")
            check_card_minimum(amount + fee, currency)
        now = self._clock.now()
        initial = (
            PaymentStatus.PROCESSING
            if request.method is not PaymentMethodType.CARD or request.payment_method_id
            else PaymentStatus.REQUIRES_PAYMENT_METHOD
        )
        payment = Payment(
            id=payment_id,
            clinic_id=clinic_id,
            patient_id=patient_id,
            status=initial,
            method=request.method,
            purpose=request.purpose,
            amount=amount,
            fee_amount=fee,
            currency=currency,
            allocations=plan_allocations,
            credit_amount=credit,
            created_by=caller.actor(),
            created_at=now,
            payer=request.payer,
            reference=request.reference,
            note=request.note,
            receipt_email=request.receipt_email,
            location_id=request.location_id,
            save_card=request.save_card,
            consent=consent,
            off_session=request.off_session,
            stripe_account_id=account.account_id if account else None,
            # The saved card to charge; replaced by the card's details once Stripe answers.
            payment_method=(
                CardSummary(request.payment_method_id, None, None)
                if request.payment_method_id
                else None
            ),
        )
        return payment, reads

    def _payable_invoices(
        self, clinic_id: str, patient_id: str, reads: PatientReads
    ) -> list[Invoice]:
        """A payment without allocations pays the payable invoices, oldest first: those the
        patient's summary names, read by key (never the paid ones, however many)."""
        if reads.summary is None or not reads.summary.established:
            return self._repo.all_invoices(clinic_id, patient_id)  # no summary kept yet
        ids = tuple(sorted(reads.summary.open_invoice_ids))
        if not ids:
            return []
        return list(
            self._repo.read_patient(clinic_id, patient_id, invoice_ids=ids).invoices.values()
        )

    def _consent(
        self, caller: Caller, request: PaymentRequest, settings: ClinicSettings
    ) -> Consent | None:
        if not request.save_card:
            return None
        return self._card_on_file_consent(caller, request.consent, settings)

    def consent_to_save_card(
        self, caller: Caller, clinic_id: str, given: ConsentGiven | None
    ) -> Consent:
        """The card-on-file consent rule, for a card saved without paying (a SetupIntent)."""
        return self._card_on_file_consent(caller, given, self._settings(clinic_id))

    def _card_on_file_consent(
        self, caller: Caller, given: ConsentGiven | None, settings: ClinicSettings
    ) -> Consent:
        if given is None or not given.agreed:
            raise ConsentRequiredError(
                "Saving a card needs the payer's agreement to the card-on-file terms: the "
                "patient, their representative and clinic staff may charge a saved card."
            )
        if given.wording_version != settings.card_on_file_wording_version:
            raise ConsentRequiredError(
                "The card-on-file terms have changed: show the current wording "
                f"({settings.card_on_file_wording_version}) and ask again."
            )
        return Consent(True, given.wording_version, caller.actor(), self._clock.now())

    def _settings(self, clinic_id: str) -> ClinicSettings:
        settings = self._repo.get_settings(clinic_id, cached=True)
        if settings is None:
            raise NotFoundError("This clinic is not set up for payments yet.")
        return settings

    def _charging_account(
        self, clinic_id: str, caller: Caller, request: PaymentRequest
    ) -> StripeAccount:
        if request.purpose is PaymentPurpose.CREDIT_TOPUP:
            return self._active_account(clinic_id, lambda a: a.primary)
        if caller.role is Role.PATIENT or request.payment_method_id or request.save_card:
            # A saved card lives in one Stripe account (where cards are saved and listed):
            # charging or saving one goes there, whoever does it, staff included.
            return self._active_account(clinic_id, lambda a: a.portal_default)
        return self._active_account(clinic_id, lambda a: a.admin_default)

    def saved_cards_account(self, clinic_id: str) -> StripeAccount:
        """Where a patient's cards are saved and listed: the clinic's portal-default account."""
        return self._active_account(clinic_id, lambda a: a.portal_default)

    def _active_account(
        self, clinic_id: str, wanted: Callable[[StripeAccount], bool]
    ) -> StripeAccount:
        accounts = [
            a
            for a in self._repo.list_accounts(clinic_id, cached=True)
            if a.status is AccountStatus.ACTIVE
        ]
        chosen = next((a for a in accounts if wanted(a)), None)
        chosen = chosen or (accounts[0] if len(accounts) == 1 else None)
        if chosen is None:
            raise ConflictError("This clinic has no active Stripe account for this payment.")
        return chosen

    # -- moving a payment forward ---------------------------------------------------------

    def _advance(self, payment: Payment) -> Payment:
        """Resume a payment written by an earlier attempt of the same request."""
        if payment.is_final or (payment.status is PaymentStatus.FAILED and payment.failure):
            return self._raise_for_outcome(payment)
        if payment.method is not PaymentMethodType.CARD:
            self.settle_offline(payment)
            return self._raise_for_outcome(
                self.get(payment.clinic_id, payment.patient_id, payment.id)
            )
        if payment.stripe_payment_intent_id:
            gateway = self._stripe.for_account(payment.clinic_id, str(payment.stripe_account_id))
            try:
                intent = gateway.retrieve_payment_intent(payment.stripe_payment_intent_id)
            except PaymentProviderUnavailableError as exc:
                exc.payment = payment
                raise
            return self._after_intent(payment, intent)
        return self._charge(payment, None, None)

    def _charge(
        self, payment: Payment, reads: PatientReads | None, answer: Answering[Payment] | None
    ) -> Payment:
        """Create (or, with the same idempotency key, find again) the payment's PaymentIntent,
        confirmed at once for a saved card, and record what Stripe answered."""
        gateway = self._stripe.for_account(payment.clinic_id, str(payment.stripe_account_id))
        customer = (
            payment.stripe_customer_id
            or (reads.customer_id if reads is not None else None)
            or self._customer(payment)
        )
        payment = replace(payment, stripe_customer_id=customer)
        payment_method_id = payment.payment_method.id if payment.payment_method else None
        try:
            intent = gateway.create_payment_intent(
                amount=payment.charge_amount,
                currency=payment.currency,
                customer=customer,
                metadata=intent_metadata(payment),
                idempotency_key=f"{payment.id}:create",
                payment_method=payment_method_id,
                confirm=payment_method_id is not None,
                off_session=payment.off_session,
                save_card=payment.save_card,
                # The receipt is ours (receipts.py): Stripe would email a second one, and the
                # patient's address is nothing Stripe needs.
                receipt_email=None,
            )
        except NotFoundError:
            if payment_method_id is None:
                raise
            # Stripe refused the card for this customer (another patient's, detached, or
            # unknown): say not found, reveal nothing.
            self._repo.update_payment_status(
                payment,
                PaymentStatus.FAILED,
                failure=Failure("payment_method_not_found", None, "Card not found."),
            )
            raise
        except CardDeclinedError as exc:
            failure = Failure(
                exc.details[0].get("code") if exc.details else None,
                exc.details[0].get("decline_code") if exc.details else None,
                exc.message,
            )
            self._repo.update_payment_status(payment, PaymentStatus.FAILED, failure=failure)
            exc.payment = self.get(payment.clinic_id, payment.patient_id, payment.id)
            raise
        except (AmountTooSmallError, PaymentFailedError) as exc:
            # Stripe refused the request itself (nothing was created, so nothing can settle):
            # the payment is over, and a retry with the same key answers the same.
            code = exc.details[0].get("code") if exc.details else None
            self._repo.update_payment_status(
                payment, PaymentStatus.FAILED, failure=Failure(code, None, exc.message)
            )
            if isinstance(exc, PaymentError):
                exc.payment = self.get(payment.clinic_id, payment.patient_id, payment.id)
            raise
        except PaymentError as exc:
            exc.payment = payment
            raise
        link = StripeObjectLink(
            payment.clinic_id, payment.patient_id, payment.id, str(payment.stripe_account_id)
        )
        payment = replace(
            payment,
            stripe_payment_intent_id=intent.id,
            client_secret=intent.client_secret,
            payment_method=intent.payment_method or payment.payment_method,
        )
        new_status = status_from_intent(intent.status)
        if new_status is PaymentStatus.SUCCEEDED:
            # Charged at once (a saved card): the intent is recorded with the settlement.
            settled, _ = self._settle(
                payment, intent.amount_received, intent, reads=reads, link=link, answer=answer
            )
            return self._raise_for_outcome(
                settled or self.get(payment.clinic_id, payment.patient_id, payment.id)
            )
        if new_status is payment.status and intent.last_error is None:
            # Waiting for the payer (the portal confirms with Stripe.js): nothing else moved.
            recorded = answer(payment) if answer is not None else None
            self._repo.attach_intent_answered(payment, link, recorded)
            if answer is not None and recorded is not None:
                answer.committed(recorded)
            return payment
        self._repo.attach_intent(payment, link)
        return self._after_intent(payment, intent)

    def _customer(self, payment: Payment) -> str:
        return self.customer_id(
            payment.clinic_id, payment.patient_id, str(payment.stripe_account_id)
        )

    def customer_id(self, clinic_id: str, patient_id: str, account_id: str) -> str:
        """The patient's Stripe customer in this account, created on first use."""
        found = self._repo.get_customer_id(clinic_id, patient_id, account_id)
        if found:
            return found
        gateway = self._stripe.for_account(clinic_id, account_id)
        created = gateway.create_customer(
            clinic_id,
            patient_id,
            idempotency_key=f"customer:{clinic_id}:{patient_id}:{account_id}",
        )
        # A concurrent request may have stored another customer first: use the stored one.
        return self._repo.put_customer_id(clinic_id, patient_id, account_id, created)

    def _after_intent(self, payment: Payment, intent: IntentSnapshot) -> Payment:
        link = StripeObjectLink(
            payment.clinic_id, payment.patient_id, payment.id, str(payment.stripe_account_id)
        )
        settled = self.settle_intent(link, intent)
        return self._raise_for_outcome(settled or payment)

    def _raise_for_outcome(self, payment: Payment) -> Payment:
        if payment.status is PaymentStatus.FAILED:
            cls = CardDeclinedError if is_card_decline(payment.failure) else PaymentFailedError
            message = payment.failure.message if payment.failure else "The payment failed."
            raise cls(message, payment=payment)
        if payment.status is PaymentStatus.REQUIRES_ACTION and payment.method is (
            PaymentMethodType.CARD
        ):
            raise PaymentRequiresActionError(
                "The card needs the cardholder's authentication (3-D Secure).", payment=payment
            )
        return payment

    # -- settlement -----------------------------------------------------------------------

    def settle_intent(self, link: StripeObjectLink, intent: IntentSnapshot) -> Payment | None:
        """Bring our payment in line with a PaymentIntent. Idempotent; states only move forward."""
        payment = self._repo.get_payment(link.clinic_id, link.patient_id, link.payment_id)
        if payment is None:
            return None
        if payment.stripe_account_id != link.account_id:
            return payment  # an event from another account of the clinic: not this payment's
        if payment.stripe_payment_intent_id is None:
            payment = replace(
                payment, stripe_payment_intent_id=intent.id, client_secret=intent.client_secret
            )
            self._repo.attach_intent(payment, link)
        elif payment.stripe_payment_intent_id != intent.id:
            return payment
        new_status = status_from_intent(intent.status)
        if new_status is PaymentStatus.SUCCEEDED:
            self._settle(payment, intent.amount_received, intent)
        else:
            failure = None
            if new_status is PaymentStatus.REQUIRES_PAYMENT_METHOD and intent.last_error:
                # Back to requires_payment_method with an error: that attempt failed. A card
                # that needs its holder (off-session 3-D Secure) needs action, not a new card.
                failure = intent.last_error
                new_status = (
                    PaymentStatus.REQUIRES_ACTION
                    if failure.code == "authentication_required"
                    else PaymentStatus.FAILED
                )
            if may_move(payment.status, new_status):
                self._repo.update_payment_status(
                    payment,
                    new_status,
                    failure=failure,
                    payment_method=intent.payment_method,
                    client_secret=intent.client_secret,
                )
        return self._repo.get_payment(link.clinic_id, link.patient_id, link.payment_id)

    def settle_offline(self, payment: Payment) -> None:
        """Settle a cash or check payment: the money is in the clinic's hands already."""
        if payment.method is PaymentMethodType.CARD:
            raise ValueError("card payments settle from their PaymentIntent")
        self._settle(payment, payment.amount, None)

    def settle_event(
        self, link: StripeObjectLink, intent: IntentSnapshot, mark: EventMark
    ) -> SettleResult | None:
        """payment_intent.succeeded in two round trips: one read of the payment, its invoices
        (named in the intent's metadata), the credit and the event's mark; one transaction that
        settles and marks the event. A second delivery finds the mark (or fails on it).
        NOT_SETTLEABLE: nothing to settle, the event is not marked (the caller marks it); None:
        not an event this path handles (the general path does)."""
        reads = self._repo.read_patient(
            link.clinic_id,
            link.patient_id,
            payment_id=link.payment_id,
            invoice_ids=invoices_of_metadata(intent.metadata),
            currencies=(intent.currency,) if intent.currency else (),
            event=(mark.account_key, mark.event_id),
        )
        if reads.event_seen:
            return SettleResult.DUPLICATE_EVENT
        payment = reads.payment
        if (
            payment is None
            or payment.stripe_account_id != link.account_id
            or payment.stripe_payment_intent_id not in (None, intent.id)
            or status_from_intent(intent.status) is not PaymentStatus.SUCCEEDED
        ):
            return None  # not for this fast path: the general one looks at it
        if payment.status is PaymentStatus.SUCCEEDED:
            self._settled(payment)  # settled before (the synchronous answer): a receipt owed?
            return SettleResult.NOT_SETTLEABLE
        attach = payment.stripe_payment_intent_id is None
        if attach:
            payment = replace(
                payment, stripe_payment_intent_id=intent.id, client_secret=intent.client_secret
            )
        _, result = self._settle(
            payment,
            intent.amount_received,
            intent,
            reads=reads,
            link=link if attach else None,
            event=mark,
        )
        return result

    def record_failure(self, link: StripeObjectLink, intent: IntentSnapshot) -> Payment | None:
        """payment_intent.payment_failed: the attempt failed (the intent may be retried)."""
        payment = self._repo.get_payment(link.clinic_id, link.patient_id, link.payment_id)
        if payment is None or payment.stripe_payment_intent_id not in (None, intent.id):
            return payment
        if may_move(payment.status, PaymentStatus.FAILED):
            self._repo.update_payment_status(
                payment,
                PaymentStatus.FAILED,
                failure=intent.last_error or Failure(None, None, "The payment failed."),
                payment_method=intent.payment_method,
            )
        return self._repo.get_payment(link.clinic_id, link.patient_id, link.payment_id)

    def _settle(
        self,
        payment: Payment,
        received: int,
        intent: IntentSnapshot | None,
        *,
        reads: PatientReads | None = None,
        new: bool = False,
        link: StripeObjectLink | None = None,
        answer: Answering[Payment] | None = None,
        event: EventMark | None = None,
    ) -> tuple[Payment | None, SettleResult]:
        """Settle once, in one transaction planned from one read (`reads`, when the caller has
        read what it needs already); an invoice or the credit moving under it means read again
        and plan again. The settled payment, or None when it was not settled here."""
        if reads is not None and any(
            a.invoice_id not in reads.invoices for a in payment.allocations
        ):
            reads = None  # an invoice it pays was not read with the rest: read them all
        read_before = reads

        def attempt(number: int) -> tuple[Payment | None, SettleResult]:
            # StaleWriteError from the write: an invoice or the credit moved under us, so the
            # next attempt reads again and plans again.
            reads = read_before if number == 0 else None
            current: Payment | None = payment
            if reads is None:
                reads = self._repo.read_patient(
                    payment.clinic_id,
                    payment.patient_id,
                    payment_id=None if new else payment.id,
                    invoice_ids=tuple(a.invoice_id for a in payment.allocations),
                    currencies=(payment.currency,),
                    event=(event.account_key, event.event_id) if event else None,
                )
                current = payment if new else reads.payment
                if current is not None and link is not None:
                    current = replace(
                        current,
                        stripe_payment_intent_id=payment.stripe_payment_intent_id,
                        client_secret=payment.client_secret,
                        stripe_customer_id=payment.stripe_customer_id,
                    )
            if event is not None and reads.event_seen:
                return None, SettleResult.DUPLICATE_EVENT
            if current is None:
                return None, SettleResult.NOT_SETTLEABLE
            if current.status is PaymentStatus.SUCCEEDED:
                self._settled(current)  # settled before: the receipt may still be owed
                return None, SettleResult.NOT_SETTLEABLE
            write = self._settlement_write(current, received, intent, reads)
            write = replace(
                write,
                new=new,
                link=link,
                event=event,
                answer=answer(write.payment) if answer is not None else None,
            )
            result = self._repo.settle(write)
            if result is not SettleResult.SETTLED:
                return None, result
            if answer is not None and write.answer is not None:
                answer.committed(write.answer)
            self._settled(write.payment)
            return write.payment, result

        return until_written(
            attempt, "The payment could not be settled for contention; it will be retried."
        )

    def _settled(self, payment: Payment) -> None:
        """Hand a succeeded payment's receipt on. Settlement has committed: nothing here may
        undo or fail it, so any error is logged and left to the receipt's own retries."""
        if self._receipts is None or not payment.receipt_email:
            return
        try:
            self._receipts.payment_settled(payment)
        except Exception as exc:  # noqa: BLE001 - a receipt is not money
            log.warning(
                "receipt not handed on; the reconciler retries it",
                extra={"payment_id": payment.id, "error_type": type(exc).__name__},
            )

    def _settlement_write(
        self, payment: Payment, received: int, intent: IntentSnapshot | None, reads: PatientReads
    ) -> SettlementWrite:
        now = self._clock.now()
        fee = min(payment.fee_amount, received)
        to_apply = received - fee
        invoices: dict[str, Invoice] = dict(reads.invoices)
        settlement = plan_settlement(to_apply, payment.allocations, invoices)
        credits = [
            InvoiceAmountChange.of(
                invoices[a.invoice_id],
                a.amount,
                InvoicePaymentRef(payment.id, a.amount, payment.method.value, now),
            )
            for a in settlement.applied
        ]
        credit = None
        if settlement.credit > 0:
            entry = LedgerEntry(
                id=new_id("led"),
                type=(
                    LedgerEntryType.TOPUP
                    if payment.purpose is PaymentPurpose.CREDIT_TOPUP
                    else LedgerEntryType.OVERPAYMENT
                ),
                amount=settlement.credit,
                currency=payment.currency,
                at=now,
                actor=payment.created_by,
                payment_id=payment.id,
                location_id=payment.location_id,
            )
            # The overflow or top-up is its own lot, named after the payment: a refund of this
            # payment takes back from it first, as far as it is still unused.
            seen = reads.credits.get(payment.currency) or self._repo.get_credit(
                payment.clinic_id, payment.patient_id, payment.currency
            )
            credit = CreditChange(entry, seen, add_to_lot(seen, payment.id, settlement.credit, now))
        # What the receipt will show as the credit balance: after this payment, as of now.
        as_read = reads.credits.get(payment.currency)
        balance_after = credit.new.balance if credit else (as_read.balance if as_read else None)
        final = replace(
            payment,
            status=PaymentStatus.SUCCEEDED,
            allocations=settlement.applied,
            credit_amount=settlement.credit,
            fee_amount=fee,
            amount_received=received,
            confirmation_number=confirmation_number(payment.id),
            succeeded_at=now,
            failure=None,
            payment_method=(intent.payment_method if intent else None) or payment.payment_method,
            credit_balance_after=balance_after,
        )
        return SettlementWrite(
            payment=final,
            previous_statuses=statuses_before(PaymentStatus.SUCCEEDED),
            invoices=credits,
            credit=credit,
            card_consent=_card_consent_of(final),
        )


# Stripe's limit on a metadata value: the invoice ids are carried while they fit (a payment
# of more invoices is read in a second round trip by the webhook).
_METADATA_VALUE_LIMIT: Final = 500


def intent_metadata(payment: Payment) -> dict[str, str]:
    """Ids only (never a name or a service): which payment an intent is, and which invoices its
    settlement reads, signed by Stripe in every event about it."""
    metadata = {
        "clinic_id": payment.clinic_id,
        "patient_id": payment.patient_id,
        "payment_id": payment.id,
    }
    invoice_ids = ",".join(a.invoice_id for a in payment.allocations)
    if invoice_ids and len(invoice_ids) <= _METADATA_VALUE_LIMIT:
        metadata["invoice_ids"] = invoice_ids
    return metadata


def invoices_of_metadata(metadata: dict[str, str]) -> tuple[str, ...]:
    return tuple(i for i in metadata.get("invoice_ids", "").split(",") if i)


def _card_consent_of(payment: Payment) -> CardConsent | None:
    """A card saved while paying keeps the payer's consent, matched to the card Stripe saved."""
    card = payment.payment_method
    if not payment.save_card or payment.consent is None or card is None:
        return None
    return CardConsent(
        payment_method_id=card.id,
        account_id=str(payment.stripe_account_id),
        consent=payment.consent,
        payment_id=payment.id,
    )
