"""The AWS side of the local stack: a moto server on loopback and the PaymentsTable in it."""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import boto3
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

from local.template import table_definition, ttl_attribute

REGION = "us-east-1"
# moto accepts any credentials; these make sure boto3 never looks for real ones.
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Receipts and pay-online requests come from this address (verified in moto's SES).
RECEIPTS_FROM = "receipts@clinic-payments.test"
# Where emailed pay links point: the portal's pay page (there is none locally).
PAY_LINK_BASE_URL = "https://portal.clinic-payments.test"


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _AtomicDynamoDB:
    """One DynamoDB request at a time inside moto.

    DynamoDB evaluates a conditional write or a transaction atomically; moto's backend does
    not lock, so two concurrent requests can both pass the same condition. Serialising
    DynamoDB calls gives the local stack DynamoDB's atomicity (other services run freely), so
    concurrency tests exercise the project's conditions rather than moto's race.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            with self._lock:
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)


MAILBOX_PATH = "/_local/ses/messages"


class _Mailbox:
    """`GET /_local/ses/messages?to=<address>`: the raw emails moto's SES accepted for one
    recipient (oldest first), as JSON `[{"id", "source", "destinations", "raw_data"}]`.

    moto's own `/moto-api/data.json` serialises every tracked object of every service (each
    DynamoDB item included), so reading one email that way grows with the whole test run.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != MAILBOX_PATH or environ.get("REQUEST_METHOD") != "GET":
            return self._app(environ, start_response)
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import RawMessage, ses_backends

        wanted = parse_qs(str(environ.get("QUERY_STRING", ""))).get("to", [None])[0]
        found = [
            {
                "id": message.id,
                "source": message.source,
                "destinations": list(message.destinations),
                "raw_data": message.raw_data,
            }
            for message in list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)
            if isinstance(message, RawMessage)
            and (wanted is None or any(wanted in d for d in message.destinations))
        ]
        body = json.dumps(found).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


class _LoopbackMotoServer(ThreadedMotoServer):
    def _server_entry(self) -> None:
        app = _Mailbox(_AtomicDynamoDB(DomainDispatcherApplication(create_backend_app)))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()


@dataclass
class MotoHandle:
    server: ThreadedMotoServer
    url: str

    def stop(self) -> None:
        self.server.stop()


def start_moto(port: int | None = None) -> MotoHandle:
    port = port or free_port()
    # moto's werkzeug logs every request line; the local stack has its own access log.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = _LoopbackMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return MotoHandle(server=server, url=f"http://127.0.0.1:{port}")


def aws_env(
    moto_url: str,
    table_name: str,
    secrets_prefix: str,
    pay_link_base_url: str = PAY_LINK_BASE_URL,
) -> dict[str, str]:
    """The environment a handler sees locally: the template's variables, pointed at moto."""
    return {
        **FAKE_CREDENTIALS,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "TABLE_NAME": table_name,
        "CLINIC_SECRETS_PREFIX": secrets_prefix,
        "RECEIPTS_FROM_ADDRESS": RECEIPTS_FROM,
        "PAY_LINK_BASE_URL": pay_link_base_url,
        "PAY_LINK_SIGNING_KEY_NAME": pay_link_key_name(secrets_prefix),
    }


def pay_link_key_name(secrets_prefix: str) -> str:
    """The pay-link signing key's secret, named as template.yaml names it."""
    return f"{secrets_prefix}-pay-link-signing-key"


def verify_receipts_sender(moto_url: str) -> None:
    """Verify the sender in SES, as a deployment does once by hand (docs/deploy.md): moto, like
    SES, refuses to send from an address that is not a verified identity."""
    client("ses", moto_url).verify_email_identity(EmailAddress=RECEIPTS_FROM)


def create_pay_link_signing_key(moto_url: str, secrets_prefix: str) -> None:
    """A random pay-link signing key in Secrets Manager, as a deployment creates it once."""
    client("secretsmanager", moto_url).create_secret(
        Name=pay_link_key_name(secrets_prefix), SecretString=secrets.token_urlsafe(48)
    )


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
