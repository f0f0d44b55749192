"""Payments through the handlers, against moto and the Stripe fake: every money path and its
failures. After each, the money invariant of DESIGN.md is checked on the table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from clinic_payments.domain.reconciling import Reconciler
from clinic_payments.wiring import RuntimeSettings, build_container, container

from tests.support import stripe_control
from tests.support.portal import (
    CHARGE_DECLINED,
    DECLINED,
    THREE_D_SECURE,
    VISA,
    authenticate,
    confirm_card,
)

pytestmark = pytest.mark.integration

PAY = "/v1/clinics/{clinic_id}/patients/{patient_id}/payments"


@pytest.fixture(autouse=True)
def _no_faults_left(stack) -> Iterator[None]:
    yield
    stripe_control.clear_faults(stack.stripe_url)


def start_card_payment(clinic, patient, invoice_id, **extra):
    status, payment = clinic.pay(
        patient, {"method": "card", "allocations": [{"invoice_id": invoice_id}], **extra}
    )
    assert status == 201, payment
    return payment


def portal_pays(clinic, payment, number=VISA):
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, intent = confirm_card(
        clinic.stack.stripe_url,
        intent_id,
        payment["client_secret"],
        payment["publishable_key"],
        number,
    )
    return code, intent


def deliver(clinic, intent_id, event_type="payment_intent.succeeded", times=1):
    """The intent's event, `times` times (their answers); a succeeded one is followed, as at
    Stripe, by its charge.succeeded (which carries the card's brand and last four)."""
    intent = clinic.intent(intent_id)
    answers = [clinic.signed_webhook(clinic.intent_event(intent, event_type)) for _ in range(times)]
    if event_type == "payment_intent.succeeded":
        status, body = clinic.signed_webhook(clinic.charge_event(intent))
        assert status == 200, body
    return answers


def saved_card(clinic, patient, number=VISA):
    """Save a card the way a patient does: pay with save_card and consent, confirm in the portal.

    Cards that cannot be charged now (charge-time declines, 3DS) are attached to the patient's
    customer directly, as a card saved earlier would be.
    """
    if number != VISA:
        saved_card(clinic, patient)  # the patient's Stripe customer now exists
        customer = container().repository.get_customer_id(clinic.clinic_id, patient, "main")
        client = clinic.stripe()
        pm = client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            }
        )
        client.v1.payment_methods.attach(pm.id, params={"customer": customer})
        return pm.id
    invoice = clinic.create_invoice(patient, 100)
    payment = start_card_payment(
        clinic,
        patient,
        invoice["id"],
        save_card=True,
        consent={"agreed": True, "wording_version": "2026-11-01"},
    )
    code, intent = portal_pays(clinic, payment, number)
    assert code == 200, intent
    deliver(clinic, intent["id"])
    return intent["payment_method"]


def charge_saved_card(clinic, card, invoice_id, *, off_session=False, role="patient", sub=None):
    """Pay one invoice of pat_a with a saved card (on-session, or off-session by staff)."""
    body = {
        "method": "card",
        "payment_method_id": card,
        "allocations": [{"invoice_id": invoice_id}],
    }
    if off_session:
        body["off_session"] = True
    return clinic.pay("pat_a", body, role=role, sub=sub)


def test_new_card_payment_settles_through_the_webhook(clinic):
    invoice = clinic.create_invoice("pat_a", 12000, 3000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    assert payment["status"] == "requires_payment_method"
    assert payment["amount"] == 15000
    code, intent = portal_pays(clinic, payment)
    assert (code, intent["status"]) == (200, "succeeded")
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"  # until Stripe tells us

    [(status, body)] = deliver(clinic, intent["id"])
    assert (status, body) == (200, {"received": True})
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["status"], paid["amount_paid"], paid["balance_due"]) == ("paid", 15000, 0)
    assert [p["payment_id"] for p in paid["payments"]] == [payment["id"]]
    settled = clinic.payment("pat_a", payment["id"])
    assert settled["status"] == "succeeded"
    assert settled["confirmation_number"]
    assert settled["payment_method"]["last4"] == "4242"
    assert settled["client_secret"] is None
    clinic.check_invariant("pat_a")


def test_intent_metadata_carries_ids_only_and_a_generic_description(clinic):
    invoice = clinic.create_invoice("pat_a", 5000, memo="Physiotherapy for lower back pain")
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    assert intent["metadata"] == {
        "clinic_id": clinic.clinic_id,
        "patient_id": "pat_a",
        "payment_id": payment["id"],
        "invoice_ids": invoice["id"],  # ids only: what the webhook's settlement reads
    }
    assert intent["description"] == "Clinic services"
    customer = clinic.stripe().v1.customers.retrieve(intent["customer"]).to_dict()
    assert customer.get("name") is None
    assert customer.get("email") is None


def test_the_same_webhook_delivered_ten_times_settles_once(clinic):
    invoice = clinic.create_invoice("pat_a", 8000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"], amount=10000)
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    event = clinic.intent_event(clinic.intent(intent["id"]))
    results = [clinic.signed_webhook(event) for _ in range(10)]
    assert all(r == (200, {"received": True}) for r in results)
    # And ten distinct events about the same intent change nothing more either.
    deliver(clinic, intent["id"], times=3)
    paid = clinic.invoice("pat_a", invoice["id"])
    assert paid["amount_paid"] == 8000
    assert len(paid["payments"]) == 1
    assert clinic.invoices("pat_a")["summary"]["available_credit"] == 2000
    clinic.check_invariant("pat_a")


def test_webhook_before_the_synchronous_response_settles_once(clinic):
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", 4000)
    # A saved-card charge succeeds inside the request; the webhook for it may come first.
    status, payment = charge_saved_card(clinic, card, invoice["id"])
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    intent_id = (
        container()
        .repository.get_payment(clinic.clinic_id, "pat_a", payment["id"])
        .stripe_payment_intent_id
    )
    deliver(clinic, intent_id, times=2)
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["amount_paid"], len(paid["payments"])) == (4000, 1)
    clinic.check_invariant("pat_a")


def test_saved_card_payment_succeeds_on_session(clinic):
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", 2500)
    status, payment = charge_saved_card(clinic, card, invoice["id"])
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    assert payment["payment_method"]["last4"] == "4242"
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_staff_charge_a_saved_card_off_session_and_the_activity_says_who(clinic):
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", 2500)
    status, payment = charge_saved_card(
        clinic, card, invoice["id"], off_session=True, role="staff", sub="staff-42"
    )
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    assert payment["created_by"] == {"sub": "staff-42", "role": "staff"}


def test_a_patient_may_not_charge_off_session(clinic):
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", 2500)
    status, body = charge_saved_card(clinic, card, invoice["id"], off_session=True)
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"


def test_another_patients_saved_card_is_refused_and_nothing_is_charged(clinic):
    card_of_b = saved_card(clinic, "pat_b")
    invoice = clinic.create_invoice("pat_a", 2500)
    before = stripe_control.count(clinic.stack.stripe_url)
    status, body = charge_saved_card(clinic, card_of_b, invoice["id"])
    assert status == 404, body
    assert stripe_control.count(clinic.stack.stripe_url) == before
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"


def test_declined_saved_card_answers_402_and_leaves_the_invoice_open(clinic):
    card = saved_card(clinic, "pat_a", CHARGE_DECLINED)
    invoice = clinic.create_invoice("pat_a", 2500)
    status, body = charge_saved_card(clinic, card, invoice["id"])
    assert status == 402, body
    error = body["error"]
    assert error["code"] == "card_declined"
    assert error["payment"]["status"] == "failed"
    assert error["payment"]["failure"]["code"] == "card_declined"
    assert error["payment"]["failure"]["message"]
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"
    clinic.check_invariant("pat_a")


def test_declined_new_card_records_the_failure_and_a_retry_can_succeed(clinic):
    invoice = clinic.create_invoice("pat_a", 3000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    code, declined = portal_pays(clinic, payment, DECLINED)
    assert code == 402, declined
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    assert (
        clinic.signed_webhook(clinic.intent_event(intent, "payment_intent.payment_failed"))[0]
        == 200
    )
    failed = clinic.payment("pat_a", payment["id"])
    assert failed["status"] == "failed"
    assert failed["failure"]["code"] == "card_declined"
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"

    code, retried = portal_pays(clinic, payment, VISA)
    assert (code, retried["status"]) == (200, "succeeded")
    deliver(clinic, retried["id"])
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_saved_card_that_needs_3ds_answers_payment_requires_action(clinic):
    card = saved_card(clinic, "pat_a", THREE_D_SECURE)
    invoice = clinic.create_invoice("pat_a", 2500)
    status, body = charge_saved_card(clinic, card, invoice["id"])
    assert status == 402, body
    assert body["error"]["code"] == "payment_requires_action"
    payment = body["error"]["payment"]
    assert payment["status"] == "requires_action"
    assert payment["client_secret"]  # the patient finishes authentication in the portal
    intent_id = payment["client_secret"].split("_secret_")[0]
    assert (
        authenticate(
            clinic.stack.stripe_url, intent_id, payment["client_secret"], clinic.publishable_key
        )
        == 200
    )
    deliver(clinic, intent_id)
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_cash_and_check_by_staff_settle_at_once(clinic):
    first = clinic.create_invoice("pat_a", 1000)
    second = clinic.create_invoice("pat_a", 2000)
    status, cash = clinic.pay(
        "pat_a",
        {
            "method": "cash",
            "allocations": [{"invoice_id": first["id"]}],
            "reference": "1.1.2026 1000 CA",
        },
        role="staff",
    )
    assert status == 201, cash
    assert (cash["status"], cash["reference"]) == ("succeeded", "1.1.2026 1000 CA")
    status, check = clinic.pay(
        "pat_a",
        {"method": "check", "allocations": [{"invoice_id": second["id"], "amount": 500}]},
        role="staff",
    )
    assert status == 201, check
    part = clinic.invoice("pat_a", second["id"])
    assert (part["status"], part["balance_due"]) == ("partially_paid", 1500)
    clinic.check_invariant("pat_a")


def test_a_patient_cannot_record_cash(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    status, body = clinic.pay(
        "pat_a", {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}
    )
    assert status == 403, body


def test_amount_only_pays_oldest_first_and_the_rest_becomes_credit(clinic):
    old = clinic.create_invoice("pat_a", 3000)
    new = clinic.create_invoice("pat_a", 4000)
    status, payment = clinic.pay("pat_a", {"method": "cash", "amount": 5000}, role="staff")
    assert status == 201, payment
    assert payment["allocations"] == [
        {"invoice_id": old["id"], "amount": 3000},
        {"invoice_id": new["id"], "amount": 2000},
    ]
    status, more = clinic.pay("pat_a", {"method": "cash", "amount": 2500}, role="staff")
    assert (more["allocations"], more["credit_amount"]) == (
        [{"invoice_id": new["id"], "amount": 2000}],
        500,
    )
    summary = clinic.invoices("pat_a")["summary"]
    assert summary == {
        "outstanding_count": 0,
        "outstanding_amount": 0,
        "currency": "usd",
        "available_credit": 500,
    }
    clinic.check_invariant("pat_a")


def test_allocations_larger_than_the_balance_are_refused(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    status, body = clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 1001}]},
        role="staff",
    )
    assert status == 422, body
    assert body["error"]["details"][0]["field"] == "allocations.0.amount"


def test_a_retried_request_replays_the_first_response_and_creates_no_second_intent(clinic):
    invoice = clinic.create_invoice("pat_a", 1500)
    body = {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    before = stripe_control.count(clinic.stack.stripe_url)
    first = clinic.pay("pat_a", body, key="retry-key-1")
    second = clinic.pay("pat_a", body, key="retry-key-1")
    assert first == second
    assert first[0] == 201
    assert stripe_control.count(clinic.stack.stripe_url) == before + 1


def test_the_same_key_with_another_body_is_refused(clinic):
    invoice = clinic.create_invoice("pat_a", 1500)
    clinic.pay(
        "pat_a", {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}, key="k2"
    )
    status, body = clinic.pay(
        "pat_a",
        {"method": "card", "amount": 200, "allocations": [{"invoice_id": invoice["id"]}]},
        key="k2",
    )
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reused")


def test_keys_are_scoped_to_the_caller(clinic):
    invoice = clinic.create_invoice("pat_a", 1500)
    body = {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 500}]}
    one = clinic.pay("pat_a", body, key="shared", role="staff", sub="staff-1")
    two = clinic.pay("pat_a", body, key="shared", role="staff", sub="staff-2")
    assert one[1]["id"] != two[1]["id"]
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 1000


def test_a_missing_idempotency_key_is_a_400(clinic):
    invoice = clinic.create_invoice("pat_a", 1500)
    status, body = clinic.call(
        "POST",
        PAY,
        {"patient_id": "pat_a"},
        role="patient",
        patient_ids=("pat_a",),
        body={"method": "card", "allocations": [{"invoice_id": invoice["id"]}]},
    )
    assert (status, body["error"]["code"]) == (400, "idempotency_key_required")


def saved_card_charge_with_stripe_failing(clinic, amount, mode):
    """A saved-card charge while Stripe fails: `error_before` (nothing done) or `error_after`
    (the card is charged, then the answer is lost). Returns the request body and invoice."""
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", amount)
    body = {
        "method": "card",
        "payment_method_id": card,
        "allocations": [{"invoice_id": invoice["id"]}],
    }
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/payment_intents",
        mode=mode,
        status=500,
        times=3,  # the SDK retries twice with the same idempotency key
    )
    return body, invoice


def test_stripe_5xx_leaves_the_payment_processing_and_the_retry_resumes_it(clinic):
    body, invoice = saved_card_charge_with_stripe_failing(clinic, 2200, "error_before")
    status, failed = clinic.pay("pat_a", body, key="flaky-1")
    assert (status, failed["error"]["code"]) == (503, "payment_provider_unavailable")
    payment = failed["error"]["payment"]
    assert payment["status"] == "processing"  # outcome unknown: never "failed"
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"

    stripe_control.clear_faults(clinic.stack.stripe_url)
    status, done = clinic.pay("pat_a", body, key="flaky-1")
    assert status == 201, done
    assert (done["id"], done["status"]) == (payment["id"], "succeeded")
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_a_charge_whose_answer_was_lost_is_not_charged_twice_on_retry(clinic):
    body, invoice = saved_card_charge_with_stripe_failing(clinic, 2300, "error_after")
    before = stripe_control.count(clinic.stack.stripe_url)
    status, _ = clinic.pay("pat_a", body, key="lost-1")
    assert status == 503
    stripe_control.clear_faults(clinic.stack.stripe_url)
    status, done = clinic.pay("pat_a", body, key="lost-1")
    assert (status, done["status"]) == (201, "succeeded")
    # One intent was executed at Stripe; the retries were idempotent replays.
    assert stripe_control.count(clinic.stack.stripe_url) == before + 1
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["amount_paid"], len(paid["payments"])) == (2300, 1)
    clinic.check_invariant("pat_a")


def test_a_crash_after_stripe_succeeded_is_settled_by_the_webhook(clinic):
    body, invoice = saved_card_charge_with_stripe_failing(clinic, 2400, "error_after")
    status, failed = clinic.pay("pat_a", body, key="crash-1")
    assert status == 503
    payment_id = failed["error"]["payment"]["id"]
    stripe_control.clear_faults(clinic.stack.stripe_url)
    # The patient never retries. Stripe's event names the payment in its metadata.
    customer = container().repository.get_customer_id(clinic.clinic_id, "pat_a", "main")
    intents = (
        clinic.stripe().v1.payment_intents.list(params={"customer": customer}).to_dict()["data"]
    )
    [intent] = [i for i in intents if i["metadata"].get("payment_id") == payment_id]
    assert intent["status"] == "succeeded"
    assert clinic.signed_webhook(clinic.intent_event(intent))[0] == 200
    assert clinic.payment("pat_a", payment_id)["status"] == "succeeded"
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_the_reconciler_settles_a_payment_whose_webhook_was_lost(clinic):
    invoice = clinic.create_invoice("pat_a", 2600)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    code, _ = portal_pays(clinic, payment)
    assert code == 200
    c = container()
    reconciler = Reconciler(
        c.repository, c.payments, c.stripe, _Later(minutes=10), min_age=timedelta(minutes=5)
    )
    report = reconciler.run(limit=1000)
    assert report.settled >= 1, report
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


class _Later:
    """A clock some minutes ahead, so the payment just made counts as left behind."""

    def __init__(self, minutes: int) -> None:
        self.minutes = minutes

    def now(self) -> str:
        from datetime import UTC, datetime

        from clinic_payments.domain.timeutil import to_iso

        return to_iso(datetime.now(UTC) + timedelta(minutes=self.minutes))


def test_two_concurrent_payments_never_pay_an_invoice_beyond_its_total(clinic):
    invoice = clinic.create_invoice("pat_a", 5000)
    payments = [start_card_payment(clinic, "pat_a", invoice["id"]) for _ in range(2)]
    intents = []
    for payment in payments:
        code, intent = portal_pays(clinic, payment)
        assert code == 200
        intents.append(intent["id"])
    # Two webhooks settle at the same time, each through its own container (own clients).
    settings = RuntimeSettings.from_environ()
    containers = [build_container(settings) for _ in intents]
    links = [containers[0].repository.get_stripe_link(i) for i in intents]
    snapshots = [
        containers[0].stripe.for_account(clinic.clinic_id, "main").retrieve_payment_intent(i)
        for i in intents
    ]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def settle(index: int) -> None:
        try:
            barrier.wait()
            containers[index].payments.settle_intent(links[index], snapshots[index])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=settle, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["status"], paid["amount_paid"]) == ("paid", 5000)
    assert clinic.invoices("pat_a")["summary"]["available_credit"] == 5000
    clinic.check_invariant("pat_a")


def test_a_payment_on_an_invoice_voided_meanwhile_becomes_credit(clinic):
    invoice = clinic.create_invoice("pat_a", 1800)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    status, _ = clinic.call(
        "POST",
        "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void",
        {"patient_id": "pat_a", "invoice_id": invoice["id"]},
    )
    assert status == 200
    code, intent = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"])
    settled = clinic.payment("pat_a", payment["id"])
    assert (settled["allocations"], settled["credit_amount"]) == ([], 1800)
    assert clinic.invoices("pat_a")["summary"]["available_credit"] == 1800
    clinic.check_invariant("pat_a")


def test_saving_a_card_needs_consent(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    status, body = clinic.pay(
        "pat_a",
        {"method": "card", "save_card": True, "allocations": [{"invoice_id": invoice["id"]}]},
    )
    assert (status, body["error"]["code"]) == (422, "consent_required")
    status, body = clinic.pay(
        "pat_a",
        {
            "method": "card",
            "save_card": True,
            "consent": {"agreed": True, "wording_version": "2020-01-01"},
            "allocations": [{"invoice_id": invoice["id"]}],
        },
    )
    assert (status, body["error"]["code"]) == (422, "consent_required")


def test_consent_is_recorded_with_who_and_when(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    payment = start_card_payment(
        clinic,
        "pat_a",
        invoice["id"],
        save_card=True,
        consent={"agreed": True, "wording_version": "2026-11-01"},
    )
    assert payment["consent"]["by"] == {"sub": "test-patient", "role": "patient"}
    assert payment["consent"]["wording_version"] == "2026-11-01"
    assert payment["consent"]["at"]


def test_processing_fee_pass_through_grosses_up_the_charge(stack):
    from tests.conftest import make_clinic

    clinic = make_clinic(stack, pass_processing_fees=True)
    invoice = clinic.create_invoice("pat_a", 10000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    assert (payment["amount"], payment["fee_amount"], payment["charge_amount"]) == (
        10000,
        330,
        10330,
    )
    intent = clinic.intent(payment["client_secret"].split("_secret_")[0])
    assert intent["amount"] == 10330
    code, _ = portal_pays(clinic, payment)
    assert code == 200
    deliver(clinic, intent["id"])
    paid = clinic.invoice("pat_a", invoice["id"])
    assert (paid["status"], paid["amount_paid"]) == ("paid", 10000)  # the fee is never applied
    clinic.check_invariant("pat_a")


def test_client_secret_is_shown_only_to_its_owner(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    payment = start_card_payment(clinic, "pat_a", invoice["id"])
    assert payment["client_secret"]
    status, seen_by_staff = clinic.call(
        "GET",
        PAY + "/{payment_id}",
        {"patient_id": "pat_a", "payment_id": payment["id"]},
        role="staff",
    )
    assert status == 200
    assert seen_by_staff["client_secret"] is None


def test_staff_charge_a_saved_card_in_the_account_where_cards_are_saved(stack):
    from tests.conftest import make_clinic

    clinic = make_clinic(stack)  # "main": admin default, portal default, primary
    portal_pk = f"pk_test_portal_{clinic.clinic_id}"
    status, _ = clinic.call(
        "PUT",
        "/v1/clinics/{clinic_id}/stripe-accounts/{account_id}",
        {"account_id": "portal"},
        role="admin",
        body={
            "name": "Portal",
            "secret_key": f"sk_test_portal_{clinic.clinic_id}",
            "publishable_key": portal_pk,
            "webhook_secret": "whsec_portal_secret",
            "portal_default": True,
        },
    )
    assert status == 200
    invoice = clinic.create_invoice("pat_a", 2000)
    status, payment = clinic.pay(
        "pat_a",
        {
            "method": "card",
            "save_card": True,
            "allocations": [{"invoice_id": invoice["id"]}],
            "consent": {"agreed": True, "wording_version": "2026-11-01"},
        },
        role="staff",
    )
    assert status == 201, payment
    # Staff saving a card while paying use the account where the patient's cards are listed.
    assert payment["publishable_key"] == portal_pk


def _conflict_next_transaction(clinic):
    import json
    import urllib.request

    # DynamoDB cancels the next transaction for a concurrent one.
    request = urllib.request.Request(  # noqa: S310 - loopback moto
        f"{clinic.stack.moto_url}/_local/dynamodb/faults",
        data=json.dumps(
            {"operation": "TransactWriteItems", "error": "conflict", "times": 1}
        ).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


def test_a_transaction_conflict_linking_the_intent_is_503_and_the_retry_charges_once(clinic):
    invoice = clinic.create_invoice("pat_a", 2700)
    before = stripe_control.count(clinic.stack.stripe_url)
    # The transaction that links the new PaymentIntent (and records the answer) is canceled.
    _conflict_next_transaction(clinic)
    body = {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    status, answer = clinic.pay("pat_a", body, key="conflict-1")
    assert (status, answer["error"]["code"]) == (503, "service_unavailable"), answer
    status, payment = clinic.pay("pat_a", body, key="conflict-1")
    assert (status, payment["status"]) == (201, "requires_payment_method"), payment
    assert stripe_control.count(clinic.stack.stripe_url) == before + 1  # one intent
    code, intent = portal_pays(clinic, payment)
    assert (code, intent["status"]) == (200, "succeeded")
    deliver(clinic, intent["id"])
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_a_transaction_conflict_settling_a_saved_card_is_read_again_and_charges_once(clinic):
    card = saved_card(clinic, "pat_a")
    invoice = clinic.create_invoice("pat_a", 2700)
    before = stripe_control.count(clinic.stack.stripe_url)
    # The transaction that links the intent and settles the charge is canceled: it is planned
    # again from a new read, and Stripe is not asked again.
    _conflict_next_transaction(clinic)
    body = {
        "method": "card",
        "payment_method_id": card,
        "allocations": [{"invoice_id": invoice["id"]}],
    }
    status, payment = clinic.pay("pat_a", body, key="conflict-2")
    assert (status, payment["status"]) == (201, "succeeded"), payment
    assert clinic.pay("pat_a", body, key="conflict-2")[1] == payment  # replayed
    assert stripe_control.count(clinic.stack.stripe_url) == before + 1
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")
