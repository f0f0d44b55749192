"""The local moto's transactions back up the items they name, not the whole table
(local/aws.py): a failed transaction must still leave every item as it was, whichever way it
failed, and a committed one must keep all its writes."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from botocore.exceptions import ClientError

from local.aws import client

pytestmark = pytest.mark.integration


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _get(ddb: Any, table: str, pk: str, sk: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = ddb.get_item(
        TableName=table, Key=_key(pk, sk), ConsistentRead=True
    ).get("Item")
    return found


def test_a_canceled_transaction_leaves_every_item_as_it_was(stack: Any) -> None:
    ddb = client("dynamodb", stack.moto_url)
    table, pk = stack.table_name, f"TX#{secrets.token_hex(4)}"
    ddb.put_item(TableName=table, Item={**_key(pk, "B"), "n": {"N": "1"}})
    ddb.put_item(TableName=table, Item={**_key(pk, "C"), "n": {"N": "5"}})
    ddb.put_item(TableName=table, Item={**_key(pk, "D"), "n": {"N": "0"}})
    with pytest.raises(ClientError) as raised:
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**_key(pk, "A"), "n": {"N": "9"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": _key(pk, "B"),
                        "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"Delete": {"TableName": table, "Key": _key(pk, "C")}},
                {
                    "ConditionCheck": {
                        "TableName": table,
                        "Key": _key(pk, "D"),
                        "ConditionExpression": "n = :never",
                        "ExpressionAttributeValues": {":never": {"N": "42"}},
                    }
                },
            ]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _get(ddb, table, pk, "A") is None
    assert _get(ddb, table, pk, "B") == {**_key(pk, "B"), "n": {"N": "1"}}
    assert _get(ddb, table, pk, "C") == {**_key(pk, "C"), "n": {"N": "5"}}


def test_a_committed_transaction_keeps_all_its_writes(stack: Any) -> None:
    ddb = client("dynamodb", stack.moto_url)
    table, pk = stack.table_name, f"TX#{secrets.token_hex(4)}"
    ddb.put_item(TableName=table, Item={**_key(pk, "B"), "n": {"N": "1"}})
    ddb.transact_write_items(
        TransactItems=[
            {"Put": {"TableName": table, "Item": {**_key(pk, "A"), "n": {"N": "9"}}}},
            {
                "Update": {
                    "TableName": table,
                    "Key": _key(pk, "B"),
                    "UpdateExpression": "SET n = n + :one",
                    "ConditionExpression": "n = :seen",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":seen": {"N": "1"}},
                }
            },
        ]
    )
    assert _get(ddb, table, pk, "A") == {**_key(pk, "A"), "n": {"N": "9"}}
    assert _get(ddb, table, pk, "B") == {**_key(pk, "B"), "n": {"N": "2"}}


def test_two_operations_on_one_item_are_refused_and_change_nothing(stack: Any) -> None:
    ddb = client("dynamodb", stack.moto_url)
    table, pk = stack.table_name, f"TX#{secrets.token_hex(4)}"
    ddb.put_item(TableName=table, Item={**_key(pk, "B"), "n": {"N": "1"}})
    with pytest.raises(ClientError):
        ddb.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**_key(pk, "A"), "n": {"N": "9"}}}},
                {"Put": {"TableName": table, "Item": {**_key(pk, "B"), "n": {"N": "7"}}}},
                {"Delete": {"TableName": table, "Key": _key(pk, "B")}},
            ]
        )
    assert _get(ddb, table, pk, "A") is None
    assert _get(ddb, table, pk, "B") == {**_key(pk, "B"), "n": {"N": "1"}}
