"""The metrics template.yaml's alarms watch, as the handlers write them (embedded metric format)."""

from __future__ import annotations

import secrets

import pytest

from tests.conftest import Api
from tests.integration.test_daily_audit_function import emitted

pytestmark = pytest.mark.integration


def odd_event() -> dict[str, object]:
    return {
        "id": f"evt_{secrets.token_hex(8)}",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_700_000_000,
        "livemode": False,
        "data": {"object": {"id": "pi_unknown", "object": "payment_intent"}},
    }


def test_a_webhook_answered_5xx_counts_as_failed(clinic: Api, monkeypatch, capsys) -> None:
    from clinic_payments.wiring import container

    def table_unavailable(*_args: object) -> None:
        raise ConnectionError("DynamoDB did not answer")

    monkeypatch.setattr(container().webhooks, "handle", table_unavailable)
    capsys.readouterr()

    status, body = clinic.signed_webhook(odd_event())

    assert status == 500, body
    metrics = emitted(capsys.readouterr().out)
    assert {k: v for k, v in metrics.items() if k[0] == "WebhookEvents"} == {
        ("WebhookEvents", "failed"): 1
    }


def test_a_webhook_refused_4xx_is_not_a_failure(clinic: Api, capsys) -> None:
    capsys.readouterr()

    status, _ = clinic.signed_webhook(odd_event(), secret="whsec_someone_else")

    assert status == 400
    assert ("WebhookEvents", "failed") not in emitted(capsys.readouterr().out)


def test_a_payment_is_counted_with_its_status_as_the_outcome(clinic: Api, capsys) -> None:
    invoice = clinic.create_invoice("pat_a", 2000)
    capsys.readouterr()

    status, body = clinic.pay(
        "pat_a",
        {"method": "cash", "amount": 2000, "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )

    assert status == 201, body
    metrics = emitted(capsys.readouterr().out)
    assert metrics[("Payments", "succeeded")] == 1
    assert not [name for name, _ in metrics if name.startswith("Payment_")]
