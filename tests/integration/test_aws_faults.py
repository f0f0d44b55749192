"""DynamoDB busy or conflicting, as the local moto server injects it: what botocore's own
retries absorb is invisible, what they do not is a 503 `service_unavailable` (never a 500), and
the client's retry with the same Idempotency-Key finishes the work once."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.aws_control import clear_dynamodb_faults, dynamodb_fault, dynamodb_faults

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_dynamodb_faults_left(stack) -> Iterator[None]:
    yield
    clear_dynamodb_faults(stack.moto_url)


def cash(clinic, invoice_id, key):
    return clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice_id}]},
        role="staff",
        key=key,
    )


def injected(moto_url, kind):
    """How many faults of `kind` the server has injected since it started (all tests')."""
    return dynamodb_faults(moto_url)["injected"].get(kind, 0)


def test_one_throttled_transaction_is_retried_by_botocore_and_the_payment_settles(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    before = injected(clinic.stack.moto_url, "TransactWriteItems:throttle")
    dynamodb_fault(clinic.stack.moto_url, "TransactWriteItems", "throttle", times=1)
    status, payment = cash(clinic, invoice["id"], "k1")
    assert (status, payment["status"]) == (201, "succeeded"), payment
    assert injected(clinic.stack.moto_url, "TransactWriteItems:throttle") - before == 1
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 5000
    clinic.check_invariant("pat_a")


def test_throttling_past_botocores_retries_is_a_503_and_the_retry_pays_once(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    key = secrets.token_hex(8)
    dynamodb_fault(clinic.stack.moto_url, "*", "throttle", times=20)
    status, body = cash(clinic, invoice["id"], key)
    assert status == 503, body
    assert body["error"]["code"] == "service_unavailable"
    assert "Traceback" not in str(body)
    clear_dynamodb_faults(clinic.stack.moto_url)
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 0
    status, payment = cash(clinic, invoice["id"], key)  # same key: resumes, not a new payment
    assert (status, payment["status"]) == (201, "succeeded"), payment
    status, again = cash(clinic, invoice["id"], key)
    assert (status, again["id"]) == (201, payment["id"])
    invoice_now = clinic.invoice("pat_a", invoice["id"])
    assert invoice_now["amount_paid"] == 5000
    assert [p["payment_id"] for p in invoice_now["payments"]] == [payment["id"]]
    clinic.check_invariant("pat_a")


def test_a_transaction_conflict_is_retried_and_counted_once(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    before = injected(clinic.stack.moto_url, "TransactWriteItems:conflict")
    dynamodb_fault(clinic.stack.moto_url, "TransactWriteItems", "conflict", times=2)
    status, payment = cash(clinic, invoice["id"], "k3")
    assert (status, payment["status"]) == (201, "succeeded"), payment
    assert injected(clinic.stack.moto_url, "TransactWriteItems:conflict") - before == 2
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 5000
    clinic.check_invariant("pat_a")


@pytest.mark.parametrize("error", ["throttle", "conflict"])
@pytest.mark.parametrize(
    "operation", ["GetItem", "Query", "TransactWriteItems", "PutItem", "UpdateItem"]
)
def test_no_dynamodb_operation_failing_for_good_is_a_500(clinic, operation, error):
    """Whichever call stays down: a 503 (or the work done), nothing half-written. The retry
    then finishes it, unless the outage also kept the key's lock from being released: then it
    is `request_in_progress` until the lock expires, and still nothing is counted twice."""
    invoice = clinic.create_invoice("pat_a", 5000)
    key = secrets.token_hex(8)
    # A transaction meeting others 50 times in a row is no longer contention but an outage of
    # its own; a few conflicts are what DynamoDB gives.
    times = 3 if (operation, error) == ("TransactWriteItems", "conflict") else 50
    dynamodb_fault(clinic.stack.moto_url, operation, error, times=times)
    status, body = cash(clinic, invoice["id"], key)
    clear_dynamodb_faults(clinic.stack.moto_url)
    assert status in (201, 503), body
    if status == 503:
        assert body["error"]["code"] == "service_unavailable"
        status, body = cash(clinic, invoice["id"], key)
        assert (status, body.get("error", {}).get("code")) in (
            (201, None),
            (409, "request_in_progress"),
        )
    paid = clinic.invoice("pat_a", invoice["id"])["amount_paid"]
    assert paid == (5000 if status == 201 else paid)
    assert paid in (0, 5000)
    clinic.check_invariant("pat_a")
