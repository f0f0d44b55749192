"""Saved cards (patient, staff): list, add without paying (a SetupIntent), remove."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import PATIENT_OR_STAFF, current_caller, guarded
from clinic_payments.api.idempotency import idempotent, resource_id
from clinic_payments.api.models import AddPaymentMethodRequest, CardSetupOut, SavedCardListOut
from clinic_payments.api.observability import logger
from clinic_payments.api.presenters import saved_card_out
from clinic_payments.api.routes._common import PATIENT, no_content, ok, responses
from clinic_payments.api.services import repository, saved_cards
from clinic_payments.domain.payments.rules import ConsentGiven
from clinic_payments.domain.ports import ClinicConfigStore
from clinic_payments.domain.saved_cards import SavedCardService


def saved_cards_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        f"{PATIENT}/payment-methods",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Saved cards"],
        summary="The patient's saved cards, each with the consent on file",
        responses=responses(200, SavedCardListOut, 401, 403, 404, 503),
    )
    def list_payment_methods(
        clinic_id: str,
        patient_id: str,
        service: Annotated[SavedCardService, Depends(saved_cards)],
    ) -> Any:
        cards = service.list(clinic_id, patient_id)
        return ok(SavedCardListOut(items=[saved_card_out(c) for c in cards]))

    @router.post(
        f"{PATIENT}/payment-methods",
        middlewares=[*guarded(*PATIENT_OR_STAFF), idempotent("cset")],
        tags=["Saved cards"],
        summary="Save a card without paying: a SetupIntent to confirm with Stripe.js "
        "(consent and Idempotency-Key required)",
        responses=responses(201, CardSetupOut, 400, 401, 403, 404, 409, 415, 422, 503),
    )
    def add_payment_method(
        clinic_id: str,
        patient_id: str,
        request: Annotated[AddPaymentMethodRequest, Body()],
        service: Annotated[SavedCardService, Depends(saved_cards)],
        accounts: Annotated[ClinicConfigStore, Depends(repository)],
    ) -> Any:
        setup_id = resource_id(router)
        logger.append_keys(clinic_id=clinic_id, setup_id=setup_id)
        given = (
            ConsentGiven(request.consent.agreed, request.consent.wording_version)
            if request.consent
            else None
        )
        setup, intent = service.start_setup(
            current_caller(router), clinic_id, patient_id, given, setup_id
        )
        account = accounts.get_account(clinic_id, setup.account_id, cached=True)
        return ok(
            CardSetupOut(
                setup_intent_id=intent.id,
                client_secret=intent.client_secret,
                publishable_key=account.publishable_key if account else None,
            ),
            201,
        )

    @router.delete(
        f"{PATIENT}/payment-methods/<pm_id>",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Saved cards"],
        summary="Remove a saved card: detached at Stripe, its consent forgotten",
        responses=no_content(401, 403, 404, 422, 503),
    )
    def remove_payment_method(
        clinic_id: str,
        patient_id: str,
        pm_id: str,
        service: Annotated[SavedCardService, Depends(saved_cards)],
    ) -> Any:
        service.remove(clinic_id, patient_id, pm_id)
        return Response(status_code=204, content_type=None, body=None)

    return router
