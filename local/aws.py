"""The AWS side of the local stack: a moto server on loopback and the PaymentsTable in it."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import secrets
import socket
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

import boto3
from moto.core.common_models import BaseModel
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
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

    It also takes injected faults (`POST /_local/dynamodb/faults` with a DynamoDBFault as JSON,
    `GET` lists the pending ones, `DELETE` clears them): throttling and transaction conflicts
    as DynamoDB answers them, for fault tests and the soak.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()
        self.faults: list[DynamoDBFault] = []
        self.injected: Counter[str] = Counter()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == DYNAMODB_FAULTS_PATH:
            return self._control(environ, start_response)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target.startswith("DynamoDB_"):
            with self._lock:
                operation = target.split(".", 1)[-1]
                fault = self._take_fault(operation)
                if fault is not None:
                    status, body = fault.answer(operation, _read_wsgi_body(environ))
                    self.injected[f"{fault.operation}:{fault.error}"] += 1
                    start_response(
                        status,
                        [
                            ("Content-Type", "application/x-amz-json-1.0"),
                            ("Content-Length", str(len(body))),
                        ],
                    )
                    return [body]
                return list(self._app(environ, start_response))
        return self._app(environ, start_response)

    def _take_fault(self, operation: str) -> DynamoDBFault | None:
        for fault in self.faults:
            if fault.matches(operation):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD")
        with self._lock:
            if method == "POST":
                try:
                    spec = json.loads(_read_wsgi_body(environ))
                    fault = DynamoDBFault(**spec)
                    if fault.error not in ("throttle", "conflict") or fault.times < 1:
                        raise ValueError("error is throttle or conflict; times >= 1")
                except (TypeError, ValueError) as exc:
                    return _json_reply(start_response, "400 Bad Request", {"error": str(exc)})
                self.faults.append(fault)
                return _json_reply(start_response, "200 OK", asdict(fault))
            if method == "DELETE":
                self.faults.clear()
                return _json_reply(start_response, "200 OK", {"cleared": True})
            return _json_reply(
                start_response,
                "200 OK",
                {"pending": [asdict(f) for f in self.faults], "injected": dict(self.injected)},
            )


def _read_wsgi_body(environ: dict[str, Any]) -> bytes:
    """Reads the body and puts it back, so the wrapped app can read it again."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


MAILBOX_PATH = "/_local/ses/messages"
DYNAMODB_FAULTS_PATH = "/_local/dynamodb/faults"
# What DynamoDB answers when it throttles, or cancels a transaction that met another one
# (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
_THROTTLED = "ProvisionedThroughputExceededException"
_CANCELED = "TransactionCanceledException"
_CONFLICT = "TransactionConflictException"


@dataclass
class DynamoDBFault:
    """The next `times` calls of `operation` (e.g. "TransactWriteItems", "UpdateItem", or "*")
    fail as DynamoDB fails: `throttle` (botocore retries it itself) or `conflict` (a transaction
    cancelled for a concurrent one, TransactionConflict on every item; on a single-item call,
    TransactionConflictException)."""

    operation: str
    error: str = "throttle"
    times: int = 1

    def matches(self, operation: str) -> bool:
        return self.operation in ("*", operation)

    def answer(self, operation: str, body: bytes) -> tuple[str, bytes]:
        if self.error == "conflict" and operation != "TransactWriteItems":
            # A single-item write that meets an ongoing transaction on its item.
            error = {
                "__type": f"com.amazonaws.dynamodb.v20120810#{_CONFLICT}",
                "message": "Transaction is ongoing for the item (injected by the local stack)",
            }
            return "400 Bad Request", json.dumps(error).encode()
        if self.error == "conflict":
            try:
                items = len(json.loads(body or b"{}").get("TransactItems", [])) or 1
            except ValueError:
                items = 1
            reasons = [{"Code": "TransactionConflict", "Message": "Transaction is ongoing"}] * items
            error = {
                "__type": f"com.amazonaws.dynamodb.v20120810#{_CANCELED}",
                "Message": "Transaction cancelled, please refer cancellation reasons for "
                "specific reasons [" + ", ".join(["TransactionConflict"] * items) + "]",
                "CancellationReasons": reasons,
            }
        else:
            error = {
                "__type": f"com.amazonaws.dynamodb.v20120810#{_THROTTLED}",
                "message": "The level of configured provisioned throughput for the table was "
                "exceeded. (injected by the local stack)",
            }
        return "400 Bad Request", json.dumps(error).encode()


def _json_reply(start_response: Callable[..., Any], status: str, payload: Any) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


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


def _stop_tracking_model_instances() -> None:
    """moto records every model object it ever creates (each DynamoDB item version, and each
    copy a Query makes) for its `/moto-api/data.json` dashboard, and never lets go: a long run
    (the soak, a test session) grows by megabytes a step and slows down. Nothing here reads that
    dashboard (emails come from the mailbox route), so nothing is recorded."""
    if getattr(BaseModel, "_local_untracked", False):
        return
    track = BaseModel.__new__

    def untracked_new(cls: type[BaseModel], *args: Any, **kwargs: Any) -> BaseModel:
        instance = track(cls, *args, **kwargs)
        cls.instances_tracked.clear()  # type: ignore[attr-defined]
        return instance

    BaseModel.__new__ = untracked_new  # type: ignore[method-assign,assignment]
    BaseModel._local_untracked = True  # type: ignore[attr-defined]


def _roll_back_transactions_item_by_item() -> None:
    """moto backs up every table a TransactWriteItems touches (a deep copy of the whole table,
    once per item) to restore it if the transaction fails: a transaction costs the size of the
    table, and a long run slows down with every item written. DynamoDB's cost does not grow with
    the table. Here the backup is of the items the transaction names (each as it was, or its
    absence), restored the same way when moto's transaction raises: what commits and what rolls
    back is moto's own logic, unchanged; only the copy is smaller."""
    if getattr(DynamoDBBackend, "_local_item_rollback", False):
        return
    whole = DynamoDBBackend.transact_write_items

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, DynamoType, DynamoType | None, Any]] = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            key = op.get("Key") or op.get("Item")
            if table is None or not isinstance(key, dict) or table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = None
            if table.range_key_attr is not None and table.range_key_attr in key:
                range_key = DynamoType(key[table.range_key_attr])
            before = table.get_item(hash_key, range_key)
            saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        tables_module = sys.modules[DynamoDBBackend.__module__]
        backups = tables_module.copy
        # The whole-table copy moto would make is the table itself: the items above are the
        # backup. DynamoDB requests run one at a time here (_AtomicDynamoDB).
        tables_module.copy = SimpleNamespace(  # type: ignore[attr-defined]
            deepcopy=lambda value, memo=None: (
                value if isinstance(value, Table) else copy.deepcopy(value, memo)
            )
        )
        try:
            whole(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                _put_back(table, hash_key, range_key, before)
            raise
        finally:
            tables_module.copy = backups  # type: ignore[attr-defined]

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    DynamoDBBackend._local_item_rollback = True  # type: ignore[attr-defined]


def _put_back(table: Any, hash_key: Any, range_key: Any, before: Any) -> None:
    """An item as it was before a failed transaction (or gone again, if it did not exist)."""
    if range_key is None:
        if before is None:
            table.items.pop(hash_key, None)
        else:
            table.items[hash_key] = before
        return
    if before is None:
        table.items.get(hash_key, {}).pop(range_key, None)
    else:
        table.items[hash_key][range_key] = before


def _query_without_sorting_the_table() -> None:
    """moto answers every Query by listing all the table's items sorted by key (`all_items`),
    then keeping those of the partition (or of the index) and sorting them again: each Query
    costs the whole table's sort, and a long run slows down with every item written. Here a
    Query of the table lists its partition's items only, and a Query of an index lists all
    items unsorted; moto sorts, filters and pages what it keeps exactly as before."""
    if getattr(Table, "_local_partition_query", False):
        return
    whole = Table.query

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)

        def candidates() -> list[Any]:
            if index_name is None and hash_key is not None and self.range_key_attr:
                return list(self.items.get(hash_key, {}).values())
            found: list[Any] = []
            for hash_set in self.items.values():
                found.extend(hash_set.values() if self.range_key_attr else [hash_set])
            return found

        self.all_items = candidates  # type: ignore[method-assign]
        try:
            return whole(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query  # type: ignore[method-assign]
    Table._local_partition_query = True  # type: ignore[attr-defined]


def start_moto(port: int | None = None) -> MotoHandle:
    _stop_tracking_model_instances()
    _roll_back_transactions_item_by_item()
    _query_without_sorting_the_table()
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
        # No X-Ray daemon here: the Tracer records nothing and sends nothing.
        "POWERTOOLS_TRACE_DISABLED": "true",
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
