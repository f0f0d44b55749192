"""Clinic administration: settings, and Stripe accounts whose keys live in Secrets Manager only."""

from __future__ import annotations

from dataclasses import dataclass, replace

from clinic_payments.domain.errors import NotFoundError, ValidationError
from clinic_payments.domain.model import (
    AccountStatus,
    Caller,
    ClinicSettings,
    StripeAccount,
    StripeKeys,
)
from clinic_payments.domain.ports import ClinicConfigStore, ClinicSecrets, Clock


@dataclass(frozen=True)
class AccountUpdate:
    name: str
    status: AccountStatus
    admin_default: bool
    portal_default: bool
    primary: bool
    secret_key: str | None = None
    publishable_key: str | None = None
    webhook_secret: str | None = None


def _last4(value: str) -> str:
    return value[-4:]


class AdminService:
    def __init__(self, repository: ClinicConfigStore, secrets: ClinicSecrets, clock: Clock):
        self._repo = repository
        self._secrets = secrets
        self._clock = clock

    def settings(self, clinic_id: str) -> ClinicSettings:
        return self._repo.get_settings(clinic_id) or ClinicSettings(clinic_id=clinic_id)

    def put_settings(self, settings: ClinicSettings) -> ClinicSettings:
        ids = [t.id for t in settings.tax_rates]
        if len(ids) != len(set(ids)):
            raise ValidationError("Tax rate ids must be unique.")
        loc_ids = [loc.id for loc in settings.locations]
        if len(loc_ids) != len(set(loc_ids)):
            raise ValidationError("Location ids must be unique.")
        self._repo.put_settings(settings)
        return settings

    def accounts(self, clinic_id: str) -> list[StripeAccount]:
        return self._repo.list_accounts(clinic_id)

    def put_account(
        self, caller: Caller, clinic_id: str, account_id: str, update: AccountUpdate
    ) -> StripeAccount:
        existing = self._repo.get_account(clinic_id, account_id)
        given = (update.secret_key, update.publishable_key, update.webhook_secret)
        if existing is None and None in given:
            raise ValidationError(
                "A new Stripe account needs secret_key, publishable_key and webhook_secret."
            )
        if any(given):
            keys = self._merged_keys(clinic_id, account_id, update)
            self._secrets.put_keys(clinic_id, account_id, keys)
        else:
            stored = self._secrets.get_keys(clinic_id, account_id)
            if stored is None:
                raise NotFoundError("The account's keys are missing; send them again.")
            keys = stored
        account = StripeAccount(
            clinic_id=clinic_id,
            account_id=account_id,
            name=update.name,
            status=update.status,
            admin_default=update.admin_default,
            portal_default=update.portal_default,
            primary=update.primary,
            secret_key_last4=_last4(keys.secret_key),
            publishable_key_last4=_last4(keys.publishable_key),
            webhook_secret_last4=_last4(keys.webhook_secret),
            publishable_key=keys.publishable_key,
            updated_at=self._clock.now(),
            updated_by=caller.actor(),
        )
        self._repo.put_account(account)
        # Only one admin default, one portal default and one primary per clinic.
        for other in self._repo.list_accounts(clinic_id):
            if other.account_id == account_id:
                continue
            cleared = replace(
                other,
                admin_default=other.admin_default and not account.admin_default,
                portal_default=other.portal_default and not account.portal_default,
                primary=other.primary and not account.primary,
            )
            if cleared != other:
                self._repo.put_account(cleared)
        return account

    def _merged_keys(self, clinic_id: str, account_id: str, update: AccountUpdate) -> StripeKeys:
        current = self._secrets.get_keys(clinic_id, account_id)
        secret_key = update.secret_key or (current.secret_key if current else None)
        publishable = update.publishable_key or (current.publishable_key if current else None)
        webhook = update.webhook_secret or (current.webhook_secret if current else None)
        if not (secret_key and publishable and webhook):
            raise ValidationError("secret_key, publishable_key and webhook_secret are required.")
        if not secret_key.startswith(("sk_", "rk_")):
            raise ValidationError(
                "secret_key must be a Stripe secret or restricted key (sk_... or rk_...).",
                [{"field": "secret_key", "issue": "not a Stripe secret key"}],
            )
        if not publishable.startswith("pk_"):
            raise ValidationError(
                "publishable_key must start with pk_.",
                [{"field": "publishable_key", "issue": "not a publishable key"}],
            )
        if not webhook.startswith("whsec_"):
            raise ValidationError(
                "webhook_secret must start with whsec_.",
                [{"field": "webhook_secret", "issue": "not a webhook signing secret"}],
            )
        live = secret_key.startswith(("sk_live_", "rk_live_"))
        if live != publishable.startswith("pk_live_"):
            raise ValidationError("The secret and publishable keys are of different modes.")
        return StripeKeys(secret_key, publishable, webhook)
