"""The StripeGateways port: the gateway of each clinic account, one stripe-python client per key.

stripe-python is imported with the first gateway asked for, not with this module: the payment
service is built with this object, and a function that only reads payments (ReadAccountFunction)
then never loads the SDK.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from clinic_payments.domain.errors import PaymentProviderUnavailableError
from clinic_payments.domain.ports import ClinicSecrets

if TYPE_CHECKING:
    import stripe

    from clinic_payments.adapters.stripe_gateway import StripeGateway


class StripeGateways:
    """A gateway per clinic account, its client built once per key."""

    def __init__(self, secrets: ClinicSecrets, api_base: str | None = None) -> None:
        self._secrets = secrets
        self._api_base = api_base
        self._clients: dict[str, stripe.StripeClient] = {}
        self._lock = threading.Lock()

    def for_account(self, clinic_id: str, account_id: str) -> StripeGateway:
        from clinic_payments.adapters.stripe_gateway import StripeGateway, new_client

        keys = self._secrets.get_keys(clinic_id, account_id)
        if keys is None:
            raise PaymentProviderUnavailableError("The clinic's Stripe account is not configured.")
        with self._lock:
            client = self._clients.get(keys.secret_key)
            if client is None:
                client = new_client(keys.secret_key, self._api_base)
                self._clients[keys.secret_key] = client
        return StripeGateway(client)
