"""The audit command: every patient account of a clinic recomputed, and compared with Stripe."""

from __future__ import annotations

import pytest

from local.aws import client
from scripts.audit import main as audit
from tests.conftest import make_clinic
from tests.integration.test_payments import deliver, portal_pays, start_card_payment

pytestmark = pytest.mark.integration


@pytest.fixture
def clinic(stack):
    return make_clinic(stack, allow_credit_topups=True)


def settled_card_payment(clinic, patient, amount):
    invoice = clinic.create_invoice(patient, amount)
    payment = start_card_payment(clinic, patient, invoice["id"])
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    return invoice, payment, intent


def test_a_clinic_whose_accounts_add_up_reports_nothing(clinic, capsys):
    for patient in ("pat_a", "pat_b"):
        _, _, intent = settled_card_payment(clinic, patient, 3000)
        deliver(clinic, intent["id"])
        clinic.pay(patient, {"method": "cash", "amount": 500}, role="staff")
    assert audit(["--clinic", clinic.clinic_id]) == 0
    out = capsys.readouterr().out
    assert "2 patients" in out
    assert "all accounts add up" in out


def test_a_tampered_invoice_is_reported(clinic, capsys):
    invoice, _, intent = settled_card_payment(clinic, "pat_a", 3000)
    deliver(clinic, intent["id"])
    client("dynamodb", clinic.stack.moto_url).update_item(
        TableName=clinic.stack.table_name,
        Key={
            "pk": {"S": f"CLINIC#{clinic.clinic_id}#PATIENT#pat_a"},
            "sk": {"S": f"INVOICE#{invoice['id']}"},
        },
        UpdateExpression="SET amount_paid = :x",
        ExpressionAttributeValues={":x": {"N": "2000"}},
    )
    assert audit(["--clinic", clinic.clinic_id]) == 1
    out = capsys.readouterr().out
    assert f"invoice {invoice['id']}" in out
    assert "amount_paid 2000" in out


def test_money_captured_at_stripe_but_not_settled_is_reported(clinic, capsys):
    _, payment, _ = settled_card_payment(clinic, "pat_a", 3000)  # its webhook never arrives
    assert audit(["--clinic", clinic.clinic_id]) == 1
    out = capsys.readouterr().out
    assert f"payment {payment['id']}: captured at Stripe but not settled here" in out
    assert audit(["--clinic", clinic.clinic_id, "--no-stripe"]) == 0


def test_a_balance_that_is_not_the_sum_of_its_ledger_is_reported(clinic, capsys):
    clinic.pay("pat_a", {"method": "cash", "amount": 700}, role="staff")  # all credit
    client("dynamodb", clinic.stack.moto_url).update_item(
        TableName=clinic.stack.table_name,
        Key={"pk": {"S": f"CLINIC#{clinic.clinic_id}#PATIENT#pat_a"}, "sk": {"S": "CREDIT#usd"}},
        UpdateExpression="ADD balance :x",
        ExpressionAttributeValues={":x": {"N": "100"}},
    )
    assert audit(["--clinic", clinic.clinic_id, "--no-stripe"]) == 1
    assert "credit usd: balance 800 != ledger 700" in capsys.readouterr().out
