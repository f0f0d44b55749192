"""Account credit through the handlers: top-ups (new and saved card), balance and activity,
applying credit, staff adjustments, concurrency, and the ledger adding up after each."""

from __future__ import annotations

import random
import threading

import pytest
from clinic_payments.wiring import RuntimeSettings, build_container

from tests.conftest import make_clinic
from tests.integration.test_payments import deliver, portal_pays, saved_card
from tests.support import stripe_control

pytestmark = pytest.mark.integration

CREDIT = "/v1/clinics/{clinic_id}/patients/{patient_id}/credit"
TOPUP = CREDIT + "/topups"
ADJUST = CREDIT + "/adjustments"
APPLY = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/apply-credit"
CONSENT = {"agreed": True, "wording_version": "2026-11-01"}


@pytest.fixture
def clinic(stack):
    return make_clinic(stack, allow_credit_topups=True)


def topup(clinic, body, *, role="patient", key=None, sub=None):
    return clinic.call(
        "POST",
        TOPUP,
        {"patient_id": "pat_a"},
        role=role,
        patient_ids=("pat_a",),
        sub=sub,
        body=body,
        headers={"Idempotency-Key": key or f"topup-{random.random()}"},
    )


def credit(clinic, patient="pat_a", **query):
    status, body = clinic.call("GET", CREDIT, {"patient_id": patient}, query=query or None)
    assert status == 200, body
    return body


def apply(clinic, invoice_id, body, *, key=None, role="patient"):
    return clinic.call(
        "POST",
        APPLY,
        {"patient_id": "pat_a", "invoice_id": invoice_id},
        role=role,
        patient_ids=("pat_a",),
        body=body,
        headers={"Idempotency-Key": key or f"apply-{random.random()}"},
    )


def adjust(clinic, amount, reason="goodwill", *, key=None, role="staff"):
    return clinic.call(
        "POST",
        ADJUST,
        {"patient_id": "pat_a"},
        role=role,
        body={"amount": amount, "reason": reason},
        headers={"Idempotency-Key": key or f"adjust-{random.random()}"},
    )


def test_a_topup_with_a_new_card_is_saved_and_shows_as_collected_by_the_patient(clinic):
    status, payment = topup(
        clinic, {"amount": 5000, "location_id": "loc_main", "consent": CONSENT}, sub="pt-7"
    )
    assert status == 201, payment
    assert (payment["purpose"], payment["status"]) == ("credit_topup", "requires_payment_method")
    assert (payment["allocations"], payment["credit_amount"]) == ([], 5000)
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"])
    view = credit(clinic)
    assert (view["currency"], view["balance"]) == ("usd", 5000)
    [entry] = view["activity"]
    assert (entry["type"], entry["amount"], entry["payment_id"]) == ("topup", 5000, payment["id"])
    assert entry["location_id"] == "loc_main"
    assert entry["actor"] == {"sub": "pt-7", "role": "patient"}
    # The new card was saved to the patient's customer (setup_future_usage).
    customer = clinic.intent(intent["id"])["customer"]
    cards = clinic.stripe().v1.payment_methods.list(params={"customer": customer, "type": "card"})
    assert len(cards.data) >= 1
    clinic.check_invariant("pat_a")


def test_a_topup_with_a_saved_card_settles_at_once(clinic):
    card = saved_card(clinic, "pat_a")
    status, payment = topup(
        clinic, {"amount": 2500, "location_id": "loc_main", "payment_method_id": card}
    )
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    assert credit(clinic)["balance"] == 2500
    clinic.check_invariant("pat_a")


def test_a_topup_is_charged_to_the_primary_account(stack):
    clinic = make_clinic(stack, allow_credit_topups=True)
    status, _ = clinic.call(
        "PUT",
        "/v1/clinics/{clinic_id}/stripe-accounts/{account_id}",
        {"account_id": "portal"},
        role="admin",
        body={
            "name": "Portal",
            "secret_key": f"sk_test_portal_{clinic.clinic_id}",
            "publishable_key": f"pk_test_portal_{clinic.clinic_id}",
            "webhook_secret": "whsec_portal_secret",
            "portal_default": True,
        },
    )
    assert status == 200
    status, payment = topup(clinic, {"amount": 1000, "location_id": "loc_main", "consent": CONSENT})
    assert status == 201, payment
    assert payment["publishable_key"] == clinic.publishable_key  # the primary account's


def test_a_topup_is_refused_when_the_clinic_switch_is_off(stack):
    clinic = make_clinic(stack, allow_credit_topups=False)
    before = stripe_control.count(stack.stripe_url)
    status, body = topup(clinic, {"amount": 1000, "location_id": "loc_main", "consent": CONSENT})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert "top-up" in body["error"]["message"]
    assert stripe_control.count(stack.stripe_url) == before


def test_a_topup_with_a_new_card_needs_consent_and_a_location(clinic):
    status, body = topup(clinic, {"amount": 1000, "location_id": "loc_main"})
    assert (status, body["error"]["code"]) == (422, "consent_required")
    status, body = topup(clinic, {"amount": 1000, "consent": CONSENT})
    assert (status, body["error"]["details"][0]["field"]) == (422, "location_id")
    status, body = topup(clinic, {"amount": 1000, "location_id": "loc_nowhere", "consent": CONSENT})
    assert status == 422


def test_a_duplicate_topup_webhook_credits_once(clinic):
    _, payment = topup(clinic, {"amount": 3000, "location_id": "loc_main", "consent": CONSENT})
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"], times=4)
    event = clinic.intent_event(clinic.intent(intent["id"]))
    for _ in range(3):
        assert clinic.signed_webhook(event)[0] == 200
    view = credit(clinic)
    assert view["balance"] == 3000
    assert len(view["activity"]) == 1
    clinic.check_invariant("pat_a")


def test_a_replayed_topup_key_returns_the_first_response_and_charges_once(clinic):
    card = saved_card(clinic, "pat_a")
    body = {"amount": 1200, "location_id": "loc_main", "payment_method_id": card}
    before = stripe_control.count(clinic.stack.stripe_url)
    first = topup(clinic, body, key="topup-replay")
    second = topup(clinic, body, key="topup-replay")
    assert first == second
    assert stripe_control.count(clinic.stack.stripe_url) == before + 1
    assert credit(clinic)["balance"] == 1200


def test_credit_applies_partially_then_fully(clinic):
    adjust(clinic, 5000)
    invoice = clinic.create_invoice("pat_a", 8000)
    status, partly = apply(clinic, invoice["id"], {"amount": 3000})
    assert status == 200, partly
    assert (partly["status"], partly["balance_due"]) == ("partially_paid", 5000)
    assert partly["payments"][-1]["method"] == "credit"
    status, body = apply(clinic, invoice["id"], {})  # the smaller of credit (2000) and 5000
    assert status == 200, body
    assert (body["amount_paid"], body["balance_due"]) == (5000, 3000)
    assert credit(clinic)["balance"] == 0
    adjust(clinic, 4000)
    status, paid = apply(clinic, invoice["id"], {})  # the smaller: the balance due, 3000
    assert (paid["status"], paid["balance_due"]) == ("paid", 0)
    view = credit(clinic)
    assert view["balance"] == 1000
    applied = [e for e in view["activity"] if e["type"] == "applied"]
    assert [e["amount"] for e in applied] == [-3000, -2000, -3000]
    assert all(e["invoice_id"] == invoice["id"] for e in applied)
    clinic.check_invariant("pat_a")


def test_applying_more_than_the_credit_or_the_balance_is_refused(clinic):
    adjust(clinic, 1000)
    invoice = clinic.create_invoice("pat_a", 5000)
    status, body = apply(clinic, invoice["id"], {"amount": 2000})
    assert (status, body["error"]["code"]) == (409, "insufficient_credit")
    small = clinic.create_invoice("pat_a", 500)
    status, body = apply(clinic, small["id"], {"amount": 800})
    assert (status, body["error"]["code"]) == (422, "validation_error")
    status, body = apply(clinic, invoice["id"], {"amount": 0})
    assert status == 422
    assert credit(clinic)["balance"] == 1000
    clinic.check_invariant("pat_a")


def test_applying_with_no_credit_or_to_a_paid_invoice_is_refused(clinic):
    invoice = clinic.create_invoice("pat_a", 500)
    status, body = apply(clinic, invoice["id"], {})
    assert (status, body["error"]["code"]) == (409, "insufficient_credit")
    adjust(clinic, 1000)
    apply(clinic, invoice["id"], {})
    status, body = apply(clinic, invoice["id"], {})
    assert (status, body["error"]["code"]) == (409, "invoice_not_payable")


def test_a_replayed_apply_key_applies_once(clinic):
    adjust(clinic, 3000)
    invoice = clinic.create_invoice("pat_a", 5000)
    first = apply(clinic, invoice["id"], {"amount": 1000}, key="apply-once")
    second = apply(clinic, invoice["id"], {"amount": 1000}, key="apply-once")
    assert first == second
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 1000
    assert credit(clinic)["balance"] == 2000


def test_an_adjustment_is_recorded_with_its_reason_and_actor(clinic):
    status, entry = adjust(clinic, 1500, "goodwill: long wait")
    assert status == 201, entry
    assert (entry["type"], entry["amount"], entry["reason"]) == (
        "adjustment",
        1500,
        "goodwill: long wait",
    )
    assert entry["actor"] == {"sub": "test-staff", "role": "staff"}
    status, entry = adjust(clinic, -500, "correction")
    assert status == 201
    assert credit(clinic)["balance"] == 1000


def test_an_adjustment_below_zero_is_refused_and_changes_nothing(clinic):
    adjust(clinic, 700)
    status, body = adjust(clinic, -701, "correction")
    assert (status, body["error"]["code"]) == (409, "insufficient_credit")
    view = credit(clinic)
    assert (view["balance"], len(view["activity"])) == (700, 1)
    clinic.check_invariant("pat_a")


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 100},
        {"amount": 0, "reason": "x"},
        {"amount": 1.5, "reason": "x"},
        {"reason": "x"},
    ],
    ids=["no-reason", "zero", "float", "no-amount"],
)
def test_an_invalid_adjustment_is_422(clinic, body):
    status, out = clinic.call(
        "POST", ADJUST, {"patient_id": "pat_a"}, body=body, headers={"Idempotency-Key": "k"}
    )
    assert (status, out["error"]["code"]) == (422, "validation_error")


def test_patients_may_not_adjust_credit(clinic):
    status, body = adjust(clinic, 1000, role="patient")
    assert status == 403, body


def test_overpayments_appear_in_the_activity(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    clinic.pay(
        "pat_a",
        {"method": "cash", "amount": 1600, "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )
    [entry] = credit(clinic)["activity"]
    assert (entry["type"], entry["amount"]) == ("overpayment", 600)


def test_activity_pages_newest_first(clinic):
    for amount in (100, 200, 300, 400, 500):
        adjust(clinic, amount)
    first = credit(clinic, limit="2")
    assert [e["amount"] for e in first["activity"]] == [500, 400]
    second = credit(clinic, limit="2", cursor=first["next_cursor"])
    third = credit(clinic, limit="2", cursor=second["next_cursor"])
    assert [e["amount"] for e in second["activity"] + third["activity"]] == [300, 200, 100]
    assert third["next_cursor"] is None


def test_fifty_interleaved_topups_and_applications_end_with_the_exact_balance(clinic):
    """25 adjustments (+1000) and 25 applications (-100..) race over 5 invoices."""
    invoices = [clinic.create_invoice("pat_a", 20_000) for _ in range(5)]
    adjust(clinic, 2_500)  # enough for the applications whatever the order
    settings = RuntimeSettings.from_environ()
    from clinic_payments.domain.model import Caller, Role

    staff = Caller(sub="racer", role=Role.STAFF, clinic_id=clinic.clinic_id)
    operations = [("adjust", i) for i in range(25)] + [("apply", i) for i in range(25)]
    random.Random(7).shuffle(operations)
    errors: list[BaseException] = []
    lock = threading.Lock()
    queue = list(operations)

    def worker() -> None:
        c = build_container(settings)  # own clients, as separate Lambda containers would have
        while True:
            with lock:
                if not queue:
                    return
                kind, i = queue.pop()
            try:
                if kind == "adjust":
                    c.credit.adjust(
                        staff, clinic.clinic_id, "pat_a", 1000, "race", "usd", f"adj_race{i:04d}"
                    )
                else:
                    invoice = invoices[i % 5]
                    c.credit.apply(
                        staff, clinic.clinic_id, "pat_a", invoice["id"], 100, f"cra_race{i:04d}"
                    )
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    expected = 2_500 + 25 * 1000 - 25 * 100
    assert credit(clinic)["balance"] == expected
    paid = sum(clinic.invoice("pat_a", inv["id"])["amount_paid"] for inv in invoices)
    assert paid == 25 * 100
    clinic.check_invariant("pat_a")


def test_credit_recorded_before_lots_reads_as_one_legacy_lot_and_is_spent_first(clinic):
    from clinic_payments.adapters import codec
    from clinic_payments.domain.model import Actor, LedgerEntry, LedgerEntryType, Role

    from local.aws import client

    # A CREDIT item as written before lots existed (balance and version only), with its entry.
    ddb = client("dynamodb", clinic.stack.moto_url)
    pk = codec.patient_pk(clinic.clinic_id, "pat_a")
    old = {"pk": pk, "sk": "CREDIT#usd", "currency": "usd", "balance": 1500, "version": 1}
    entry = LedgerEntry(
        "adj_00legacy",
        LedgerEntryType.ADJUSTMENT,
        1500,
        "usd",
        "2026-01-05T10:00:00.000Z",
        Actor("staff-0", Role.STAFF),
        reason="before lots",
    )
    for item in (old, codec.ledger_to_item(clinic.clinic_id, "pat_a", entry)):
        ddb.put_item(
            TableName=clinic.stack.table_name,
            Item={k: _serialize(v) for k, v in item.items()},
        )
    assert credit(clinic)["lots"] == [{"id": "legacy", "amount": 1500, "at": ""}]
    clinic.check_invariant("pat_a")

    assert adjust(clinic, 700)[0] == 201
    invoice = clinic.create_invoice("pat_a", 1000)
    assert apply(clinic, invoice["id"], {"amount": 1000})[0] == 200
    lots = credit(clinic)["lots"]
    # The oldest lot (the legacy one) paid first; the adjustment's lot is whole.
    assert [lot["amount"] for lot in lots] == [500, 700]
    assert lots[0]["id"] == "legacy"
    assert credit(clinic)["balance"] == 1200
    clinic.check_invariant("pat_a")


def _serialize(value):
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer().serialize(value)
