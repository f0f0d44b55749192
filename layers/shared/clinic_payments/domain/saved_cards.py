"""Saved cards: list, add without paying (a SetupIntent), remove; consent on file for each.

Which cards a patient has is Stripe's to say (the cards attached to the patient's customer in
the clinic's portal-default account); the consent to keep each one is ours, recorded when it is
saved (the Procentive warning: a saved card can be charged by the patient, their representative
and the clinic's staff, so who agreed to which wording, and when, is kept).
"""

from __future__ import annotations

from clinic_payments.domain.errors import NotFoundError
from clinic_payments.domain.model import (
    Caller,
    CardConsent,
    CardSetup,
    SavedCard,
    SetupIntentSnapshot,
)
from clinic_payments.domain.payments.rules import ConsentGiven
from clinic_payments.domain.payments.service import PaymentService
from clinic_payments.domain.ports import Clock, CustomerStore, StripeGateways

CARD_NOT_FOUND = "That saved card was not found for this patient."


class SavedCardService:
    def __init__(
        self,
        repository: CustomerStore,
        stripe: StripeGateways,
        payments: PaymentService,
        clock: Clock,
    ) -> None:
        self._repo = repository
        self._stripe = stripe
        self._payments = payments  # the customer, account and consent rules of payments
        self._clock = clock

    def list(self, clinic_id: str, patient_id: str) -> list[SavedCard]:
        account = self._payments.saved_cards_account(clinic_id)
        customer = self._repo.get_customer_id(clinic_id, patient_id, account.account_id)
        if customer is None:
            return []  # never paid nor saved a card here: no need to ask Stripe
        gateway = self._stripe.for_account(clinic_id, account.account_id)
        cards = gateway.list_cards(customer)
        consents = {
            c.payment_method_id: c.consent
            for c in self._repo.card_consents(clinic_id, patient_id)
            if c.account_id == account.account_id
        }
        return [SavedCard(card, consents.get(card.id)) for card in cards]

    def start_setup(
        self,
        caller: Caller,
        clinic_id: str,
        patient_id: str,
        given: ConsentGiven | None,
        setup_id: str,
    ) -> tuple[CardSetup, SetupIntentSnapshot]:
        """Record the consent, then create (or, for a retried request, find) the SetupIntent
        whose client secret the portal confirms with Stripe.js."""
        setup = self._repo.get_card_setup(clinic_id, patient_id, setup_id)
        if setup is None:
            consent = self._payments.consent_to_save_card(caller, clinic_id, given)
            account = self._payments.saved_cards_account(clinic_id)
            customer = self._payments.customer_id(clinic_id, patient_id, account.account_id)
            setup = CardSetup(
                id=setup_id,
                clinic_id=clinic_id,
                patient_id=patient_id,
                account_id=account.account_id,
                customer_id=customer,
                consent=consent,
                created_at=self._clock.now(),
            )
            if not self._repo.put_card_setup(setup):
                # Another attempt of the same request wrote it first: carry on from that one.
                found = self._repo.get_card_setup(clinic_id, patient_id, setup_id)
                if found is None:
                    raise NotFoundError("The card setup was not found.")
                setup = found
        gateway = self._stripe.for_account(clinic_id, setup.account_id)
        intent = gateway.create_setup_intent(
            customer=setup.customer_id,
            # Ids only (Stripe is not a HIPAA business associate); setup_id finds the consent.
            metadata={"clinic_id": clinic_id, "patient_id": patient_id, "setup_id": setup.id},
            idempotency_key=f"{setup.id}:create",
        )
        return setup, intent

    def record_setup(self, clinic_id: str, account_id: str, intent: SetupIntentSnapshot) -> bool:
        """setup_intent.succeeded: the consent given for the setup now belongs to the card it
        saved. Idempotent. False for a SetupIntent this API did not create."""
        meta = intent.metadata
        setup_id, patient_id = meta.get("setup_id"), meta.get("patient_id")
        if meta.get("clinic_id") != clinic_id or not setup_id or not patient_id:
            return False
        setup = self._repo.get_card_setup(clinic_id, patient_id, setup_id)
        if setup is None or setup.account_id != account_id or setup.customer_id != intent.customer:
            return False
        if intent.status != "succeeded" or not intent.payment_method:
            return False
        if setup.payment_method_id is not None:
            return True  # reconciled already: a repeat, or the card has been removed since
        consent = CardConsent(
            payment_method_id=intent.payment_method,
            account_id=account_id,
            consent=setup.consent,
            setup_id=setup.id,
        )
        self._repo.attach_card_consent(setup, consent)
        return True

    def remove(self, clinic_id: str, patient_id: str, payment_method_id: str) -> None:
        """Detach the card at Stripe, if it is this patient's, and forget its consent."""
        account = self._payments.saved_cards_account(clinic_id)
        customer = self._repo.get_customer_id(clinic_id, patient_id, account.account_id)
        if customer is None:
            raise NotFoundError(CARD_NOT_FOUND)
        gateway = self._stripe.for_account(clinic_id, account.account_id)
        _card, owner = gateway.retrieve_payment_method(payment_method_id)
        if owner != customer:
            # Another patient's card (or none of ours): say not found, reveal nothing.
            raise NotFoundError(CARD_NOT_FOUND)
        # Detached first: a consent left behind lists nothing (Stripe says which cards exist),
        # whereas a card left attached without its consent record would still be chargeable.
        gateway.detach_payment_method(payment_method_id)
        self._repo.forget_card_consent(clinic_id, patient_id, payment_method_id)
