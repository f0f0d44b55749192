"""The AWS side of the local stack: a moto server on loopback and the PaymentsTable in it."""

from __future__ import annotations

import os
import socket
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from local.template import table_definition, ttl_attribute

REGION = "us-east-1"
# moto accepts any credentials; these make sure boto3 never looks for real ones.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MotoHandle:
    server: ThreadedMotoServer
    url: str

    def stop(self) -> None:
        self.server.stop()


def start_moto(port: int | None = None) -> MotoHandle:
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return MotoHandle(server=server, url=f"http://127.0.0.1:{port}")


def aws_env(moto_url: str, table_name: str, secrets_prefix: str) -> dict[str, str]:
    """The environment a handler sees locally: the template's variables, pointed at moto."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "TABLE_NAME": table_name,
        "CLINIC_SECRETS_PREFIX": secrets_prefix,
    }


def client(service: str, moto_url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def create_payments_table(moto_url: str, table_name: str) -> None:
    """Create the table from template.yaml's own definition (key schema, GSI1, TTL)."""
    ddb = client("dynamodb", moto_url)
    ddb.create_table(TableName=table_name, **table_definition())
    ttl = ttl_attribute()
    if ttl:
        ddb.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl},
        )


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)
