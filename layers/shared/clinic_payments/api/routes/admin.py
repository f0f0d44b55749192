"""Clinic administration (admin): settings and Stripe accounts. Card-on-file terms (anyone)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from aws_lambda_powertools.event_handler.depends import Depends
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter

from clinic_payments.api.auth import ADMIN, PATIENT_OR_STAFF, current_caller, guarded
from clinic_payments.api.models import (
    CardOnFileTermsOut,
    SettingsOut,
    SettingsRequest,
    StripeAccountListOut,
    StripeAccountOut,
    StripeAccountRequest,
)
from clinic_payments.api.presenters import account_out, settings_out
from clinic_payments.api.routes._common import CLINIC, ok, responses
from clinic_payments.api.services import admin
from clinic_payments.domain.administering import AccountUpdate, AdminService
from clinic_payments.domain.model import (
    AccountStatus,
    ClinicProfile,
    ClinicSettings,
    FeeRate,
    Location,
    TaxRate,
    default_fee_schedule,
)

# Shown before a card is saved, and agreed to by version (the Procentive warning, in our words).
CARD_ON_FILE_TERMS = (
    "By saving this card you authorise {clinic} to keep it on file with its payment processor "
    "and to charge it for amounts you owe. A saved card can be used by you, by anyone who "
    "represents you on your account (for example a parent or guardian), and by the clinic's "
    "staff. You can remove the card at any time from your account."
)


def admin_router() -> APIGatewayHttpRouter:
    router = APIGatewayHttpRouter()

    @router.get(
        f"{CLINIC}/settings",
        middlewares=[*guarded(*ADMIN)],
        tags=["Clinic administration"],
        responses=responses(200, SettingsOut, 401, 403),
    )
    def get_settings(clinic_id: str, service: Annotated[AdminService, Depends(admin)]) -> Any:
        return ok(settings_out(service.settings(clinic_id)))

    @router.put(
        f"{CLINIC}/settings",
        middlewares=[*guarded(*ADMIN)],
        tags=["Clinic administration"],
        responses=responses(200, SettingsOut, 401, 403, 415, 422),
    )
    def put_settings(
        clinic_id: str,
        request: Annotated[SettingsRequest, Body()],
        service: Annotated[AdminService, Depends(admin)],
    ) -> Any:
        current = service.settings(clinic_id)
        settings = ClinicSettings(
            clinic_id=clinic_id,
            clinic_name=request.clinic_name,
            currency=request.currency,
            accept_portal_payments=request.accept_portal_payments,
            allow_credit_topups=request.allow_credit_topups,
            email_pay_online_requests=request.email_pay_online_requests,
            pass_processing_fees=request.pass_processing_fees,
            fee_schedule=(
                {m: FeeRate(Decimal(r.percent), r.fixed) for m, r in request.fee_schedule.items()}
                if request.fee_schedule is not None
                else current.fee_schedule or default_fee_schedule()
            ),
            tax_rates=[TaxRate(t.id, t.name, t.percent) for t in request.tax_rates],
            locations=[Location(loc.id, loc.name) for loc in request.locations],
            card_on_file_wording_version=(
                request.card_on_file_wording_version or current.card_on_file_wording_version
            ),
            timezone=request.timezone or current.timezone,
            profile=(
                ClinicProfile(**request.profile.model_dump())
                if request.profile is not None
                else current.profile
            ),
        )
        return ok(settings_out(service.put_settings(settings)))

    @router.get(
        f"{CLINIC}/stripe-accounts",
        middlewares=[*guarded(*ADMIN)],
        tags=["Clinic administration"],
        responses=responses(200, StripeAccountListOut, 401, 403),
    )
    def list_accounts(clinic_id: str, service: Annotated[AdminService, Depends(admin)]) -> Any:
        items = [account_out(a) for a in service.accounts(clinic_id)]
        return ok(StripeAccountListOut(items=items))

    @router.put(
        f"{CLINIC}/stripe-accounts/<account_id>",
        middlewares=[*guarded(*ADMIN)],
        tags=["Clinic administration"],
        summary="Add or update a Stripe account; keys go to Secrets Manager only",
        responses=responses(200, StripeAccountOut, 401, 403, 415, 422),
    )
    def put_account(
        clinic_id: str,
        account_id: str,
        request: Annotated[StripeAccountRequest, Body()],
        service: Annotated[AdminService, Depends(admin)],
    ) -> Any:
        account = service.put_account(
            current_caller(router),
            clinic_id,
            account_id,
            AccountUpdate(
                name=request.name,
                status=AccountStatus(request.status),
                admin_default=request.admin_default,
                portal_default=request.portal_default,
                primary=request.primary,
                secret_key=request.secret_key,
                publishable_key=request.publishable_key,
                webhook_secret=request.webhook_secret,
            ),
        )
        return ok(account_out(account))

    @router.get(
        f"{CLINIC}/card-on-file-terms",
        middlewares=[*guarded(*PATIENT_OR_STAFF)],
        tags=["Saved cards"],
        responses=responses(200, CardOnFileTermsOut, 401, 403),
    )
    def card_on_file_terms(clinic_id: str, service: Annotated[AdminService, Depends(admin)]) -> Any:
        settings = service.settings(clinic_id)
        text = CARD_ON_FILE_TERMS.format(clinic=settings.clinic_name or "the clinic")
        return ok(
            CardOnFileTermsOut(wording_version=settings.card_on_file_wording_version, text=text)
        )

    return router
