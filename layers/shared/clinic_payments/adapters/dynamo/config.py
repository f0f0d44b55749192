"""ClinicConfigStore: a clinic's settings and Stripe accounts, in the clinic's partition.

The money paths may read them from a per-container copy up to CONFIG_CACHE_SECONDS old
(`cached=True`); administration reads and writes the table, and a write drops the copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from clinic_payments.adapters import codec
from clinic_payments.adapters.codec import clinic_pk
from clinic_payments.adapters.dynamo.table import OnTable, Table, dump
from clinic_payments.domain.model import ClinicSettings, StripeAccount
from clinic_payments.domain.ports import CONFIG_CACHE_SECONDS

_T = TypeVar("_T")


class DynamoClinicConfig(OnTable):
    def __init__(self, table: Table, monotonic: Callable[[], float] = time.monotonic) -> None:
        super().__init__(table)
        self._monotonic = monotonic
        self._config: dict[str, tuple[float, Any]] = {}

    def _cached(self, key: str, cached: bool, read: Callable[[], _T]) -> _T:
        now = self._monotonic()
        hit = self._config.get(key) if cached else None
        if hit is not None and now - hit[0] < CONFIG_CACHE_SECONDS:
            return cast(_T, hit[1])
        value = read()
        self._config[key] = (now, value)
        return value

    def get_settings(self, clinic_id: str, *, cached: bool = False) -> ClinicSettings | None:
        def read() -> ClinicSettings | None:
            item = self._t.get(clinic_pk(clinic_id), "SETTINGS")
            return codec.settings_from(item) if item else None

        return self._cached(f"settings:{clinic_id}", cached, read)

    def put_settings(self, settings: ClinicSettings) -> None:
        self._t.client.put_item(TableName=self._t.name, Item=dump(codec.settings_to_item(settings)))
        self._config.pop(f"settings:{settings.clinic_id}", None)

    def get_account(
        self, clinic_id: str, account_id: str, *, cached: bool = False
    ) -> StripeAccount | None:
        if cached:
            accounts = self.list_accounts(clinic_id, cached=True)
            return next((a for a in accounts if a.account_id == account_id), None)
        item = self._t.get(clinic_pk(clinic_id), f"ACCOUNT#{account_id}")
        return codec.account_from(item) if item else None

    def list_accounts(self, clinic_id: str, *, cached: bool = False) -> list[StripeAccount]:
        def read() -> list[StripeAccount]:
            items = self._t.query_all(clinic_pk(clinic_id), "ACCOUNT#")
            return [codec.account_from(i) for i in items]

        return list(self._cached(f"accounts:{clinic_id}", cached, read))

    def put_account(self, account: StripeAccount) -> None:
        self._t.client.put_item(TableName=self._t.name, Item=dump(codec.account_to_item(account)))
        self._config.pop(f"accounts:{account.clinic_id}", None)
