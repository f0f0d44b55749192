"""Clinic Stripe keys in Secrets Manager, read through Powertools Parameters with a cache."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.exceptions import ClientError

from clinic_payments.domain.model import StripeKeys

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.client import SecretsManagerClient

# A rotated key is used everywhere within a minute (the same bound as settings, ports.py).
CACHE_SECONDS = 60
MIN_SIGNING_KEY_BYTES = 32


class SecretsManagerClinicSecrets:
    """ClinicSecrets port. Secret name: {prefix}/{clinic_id}/stripe/{account_id}."""

    def __init__(self, client: SecretsManagerClient, prefix: str) -> None:
        self._client = client
        self._provider = SecretsProvider(boto3_client=client)
        self._prefix = prefix.rstrip("/")

    def name(self, clinic_id: str, account_id: str) -> str:
        return f"{self._prefix}/{clinic_id}/stripe/{account_id}"

    def get_keys(self, clinic_id: str, account_id: str) -> StripeKeys | None:
        try:
            value: Any = self._provider.get(
                self.name(clinic_id, account_id), max_age=CACHE_SECONDS, transform="json"
            )
        except GetParameterError as exc:
            if "ResourceNotFoundException" in repr(exc.__cause__) or "ResourceNotFound" in str(exc):
                return None
            raise
        if not isinstance(value, dict):
            return None
        return StripeKeys(
            secret_key=str(value["secret_key"]),
            publishable_key=str(value["publishable_key"]),
            webhook_secret=str(value["webhook_secret"]),
        )

    def put_keys(self, clinic_id: str, account_id: str, keys: StripeKeys) -> None:
        name = self.name(clinic_id, account_id)
        secret = json.dumps(
            {
                "secret_key": keys.secret_key,
                "publishable_key": keys.publishable_key,
                "webhook_secret": keys.webhook_secret,
            }
        )
        try:
            self._client.put_secret_value(SecretId=name, SecretString=secret)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self._client.create_secret(
                Name=name,
                SecretString=secret,
                Tags=[{"Key": "clinic_id", "Value": clinic_id}],
            )
        self._provider.clear_cache()


class SecretsManagerSigningKey:
    """SigningKey port: the pay-link signing key, one secret (a random string of 32+ characters),
    read through Powertools Parameters with the same cache as the clinic keys."""

    def __init__(self, client: SecretsManagerClient, name: str) -> None:
        self._provider = SecretsProvider(boto3_client=client)
        self._name = name

    def get(self) -> bytes:
        if not self._name:
            raise RuntimeError("PAY_LINK_SIGNING_KEY_NAME is not set")
        value: Any = self._provider.get(self._name, max_age=CACHE_SECONDS)
        key = str(value).encode("utf-8")
        if len(key) < MIN_SIGNING_KEY_BYTES:
            raise RuntimeError(f"the secret {self._name} is shorter than 32 characters")
        return key
