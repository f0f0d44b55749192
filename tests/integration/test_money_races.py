"""Two movements of the same money at once, through the handlers (moto + the Stripe fake), with
real threads and the overlap forced: one request is held at a point inside it (at Stripe, or
just before its DynamoDB transaction) until the other has finished, then let go. No sleeps and
no timing: each hold waits for an event. Each pair ends with one refused (409) or both correct,
and the money invariant (the audit) clean. Issue 8, part 1.

The held request runs in a worker thread; the other runs in the test's thread while it is held.
The two are always different functions (as on Lambda, one container each).
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from clinic_payments.adapters.dynamo_repository import DynamoPaymentsRepository
from clinic_payments.adapters.stripe_gateway import StripeGateway
from clinic_payments.domain.reconciling import Reconciler
from clinic_payments.wiring import container

from tests.conftest import make_clinic
from tests.integration.test_credit import adjust, apply, credit, topup
from tests.integration.test_payments import deliver, portal_pays, saved_card, start_card_payment
from tests.integration.test_refunds import refund

pytestmark = pytest.mark.integration

# Only a bound on a broken test (a hold never reached or never released), never an expectation
# of how long anything takes.
GIVE_UP = 300.0


class Hold:
    """Holds the first call of `owner.name` (whichever thread makes it) until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> None:
        original = getattr(owner, name)
        self.reached = threading.Event()
        self._release = threading.Event()
        self._taken = threading.Lock()
        self._first = True

        def held(*args: Any, **kwargs: Any) -> Any:
            with self._taken:
                mine, self._first = self._first, False
            if mine:
                self.reached.set()
                if not self._release.wait(GIVE_UP):
                    raise RuntimeError(f"{name} was held and never released")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, held)

    def wait_reached(self) -> None:
        assert self.reached.wait(GIVE_UP), "the held request never got there"

    def release(self) -> None:
        self._release.set()


@pytest.fixture
def worker() -> Iterator[Callable[[Callable[[], Any]], Future[Any]]]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool.submit


@pytest.fixture
def clinic(stack):
    return make_clinic(stack, allow_credit_topups=True)


def key() -> str:
    return secrets.token_hex(8)


def held_while(
    hold: Hold, worker: Callable[[Callable[[], Any]], Future[Any]], first: Callable[[], Any]
) -> Callable[[Callable[[], Any]], tuple[Any, Any]]:
    """Start `first` in the worker, wait until it is held, then run the other to its end in
    this thread, release the first and return both answers."""
    started = worker(first)

    def then(other: Callable[[], Any]) -> tuple[Any, Any]:
        try:
            hold.wait_reached()
            second = other()
        finally:
            hold.release()
        return started.result(timeout=GIVE_UP), second

    return then


def cash_with_credit(clinic, invoice_total: int, amount: int) -> tuple[dict, dict]:
    invoice = clinic.create_invoice("pat_a", invoice_total)
    status, payment = clinic.pay(
        "pat_a",
        {"method": "cash", "amount": amount, "allocations": [{"invoice_id": invoice["id"]}]},
        role="staff",
    )
    assert status == 201, payment
    return invoice, payment


def card_with_credit(clinic, invoice_total: int, amount: int) -> tuple[dict, dict]:
    invoice = clinic.create_invoice("pat_a", invoice_total)
    started = start_card_payment(clinic, "pat_a", invoice["id"], amount=amount)
    code, intent = portal_pays(clinic, started)
    assert code == 200
    deliver(clinic, intent["id"])
    payment = clinic.payment("pat_a", started["id"])
    assert payment["status"] == "succeeded", payment
    return invoice, payment


# -- refund x apply-credit: the issue's reproduction ----------------------------------------


def test_issue_8_a_card_refund_held_at_stripe_leaves_no_credit_to_apply(
    clinic, monkeypatch, worker
):
    """Invoice A (100) paid with 2100 (2000 of credit), invoice B (5000). The refund of 2000 is
    at Stripe while 2000 of credit is applied to B: the refund reserved its own lot before
    asking Stripe, so the application finds no credit. Never 1,900 given back untaken."""
    a, payment = card_with_credit(clinic, 100, 2100)
    b = clinic.create_invoice("pat_a", 5000)
    hold = Hold(monkeypatch, StripeGateway, "create_refund")
    (refunded, applied) = held_while(
        hold, worker, lambda: refund(clinic, payment["id"], {"amount": 2000, "reason": "x"})
    )(lambda: apply(clinic, b["id"], {"amount": 2000}, role="staff"))

    assert applied[0] == 409, applied
    assert applied[1]["error"]["code"] == "insufficient_credit"
    assert refunded[0] == 201, refunded
    [record] = refunded[1]["refunds"]
    assert (record["status"], record["from_credit"], record["from_invoices"]) == (
        "succeeded",
        2000,
        [],
    )
    assert clinic.invoice("pat_a", b["id"])["amount_paid"] == 0
    assert clinic.invoice("pat_a", a["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_issue_8_the_application_landing_before_the_refunds_write_makes_it_refuse(
    clinic, monkeypatch, worker
):
    """Same money, the other order: the refund has read the credit and is about to write when
    the application commits. The refund's transaction fails its credit condition, re-plans
    with what is left (invoice A's 100) and refuses the whole: 409, nothing taken."""
    a, payment = cash_with_credit(clinic, 100, 2100)
    b = clinic.create_invoice("pat_a", 5000)
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "record_refund")
    (refunded, applied) = held_while(
        hold, worker, lambda: refund(clinic, payment["id"], {"amount": 2000, "reason": "x"})
    )(lambda: apply(clinic, b["id"], {"amount": 2000}, role="staff"))

    assert applied[0] == 200, applied
    assert applied[1]["amount_paid"] == 2000
    assert refunded[0] == 409, refunded
    assert "Only 100" in refunded[1]["error"]["message"]
    assert clinic.payment("pat_a", payment["id"])["refunds"] == []
    assert clinic.invoice("pat_a", a["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_issue_8_the_refund_landing_before_the_applications_write_takes_its_lot(
    clinic, monkeypatch, worker
):
    _, payment = cash_with_credit(clinic, 100, 2100)
    b = clinic.create_invoice("pat_a", 5000)
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "apply_credit")
    (applied, refunded) = held_while(
        hold, worker, lambda: apply(clinic, b["id"], {"amount": 2000}, role="staff")
    )(lambda: refund(clinic, payment["id"], {"amount": 2000, "reason": "x"}))

    assert refunded[0] == 201, refunded
    assert refunded[1]["refunds"][0]["from_credit"] == 2000
    assert applied[0] == 409, applied
    assert applied[1]["error"]["code"] == "insufficient_credit"
    assert credit(clinic)["balance"] == 0
    clinic.check_invariant("pat_a")


# -- refund x negative adjustment -----------------------------------------------------------


def test_a_negative_adjustment_while_a_refund_is_at_stripe_is_refused(clinic, monkeypatch, worker):
    _, payment = card_with_credit(clinic, 100, 2100)
    hold = Hold(monkeypatch, StripeGateway, "create_refund")
    (refunded, adjusted) = held_while(
        hold, worker, lambda: refund(clinic, payment["id"], {"amount": 2000, "reason": "x"})
    )(lambda: adjust(clinic, -2000, "correction"))

    assert adjusted[0] == 409, adjusted
    assert adjusted[1]["error"]["code"] == "insufficient_credit"
    assert refunded[0] == 201, refunded
    assert credit(clinic)["balance"] == 0
    clinic.check_invariant("pat_a")


def test_a_refund_whose_credit_an_adjustment_took_first_is_refused(clinic, monkeypatch, worker):
    _, payment = cash_with_credit(clinic, 100, 2100)
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "record_refund")
    (refunded, adjusted) = held_while(
        hold, worker, lambda: refund(clinic, payment["id"], {"amount": 2000, "reason": "x"})
    )(lambda: adjust(clinic, -1500, "correction"))

    assert adjusted[0] == 201, adjusted
    assert refunded[0] == 409, refunded
    assert credit(clinic)["balance"] == 500
    clinic.check_invariant("pat_a")


# -- refund x payment -------------------------------------------------------------------------


def test_a_payment_landing_before_a_refunds_write_makes_it_plan_again(clinic, monkeypatch, worker):
    invoice = clinic.create_invoice("pat_a", 3000)
    status, first = clinic.pay(
        "pat_a",
        {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 2000}]},
        role="staff",
    )
    assert status == 201, first
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "record_refund")
    rest = {"method": "cash", "allocations": [{"invoice_id": invoice["id"], "amount": 1000}]}
    (refunded, paid) = held_while(
        hold, worker, lambda: refund(clinic, first["id"], {"amount": 1500, "reason": "x"})
    )(lambda: clinic.pay("pat_a", rest, role="staff"))

    assert paid[0] == 201, paid
    assert refunded[0] == 201, refunded
    assert refunded[1]["refunds"][0]["from_invoices"] == [
        {"invoice_id": invoice["id"], "amount": 1500}
    ]
    after = clinic.invoice("pat_a", invoice["id"])
    assert (after["amount_paid"], after["status"]) == (1500, "partially_paid")
    clinic.check_invariant("pat_a")


# -- payment x apply-credit ---------------------------------------------------------------------


def test_credit_applied_while_a_card_payment_is_at_stripe_sends_the_payment_to_credit(
    clinic, monkeypatch, worker
):
    invoice = clinic.create_invoice("pat_a", 4000)
    assert adjust(clinic, 4000)[0] == 201
    pm = saved_card(clinic, "pat_a")
    hold = Hold(monkeypatch, StripeGateway, "create_payment_intent")
    body = {
        "method": "card",
        "payment_method_id": pm,
        "allocations": [{"invoice_id": invoice["id"]}],
    }
    (paid, applied) = held_while(hold, worker, lambda: clinic.pay("pat_a", body, key=key()))(
        lambda: apply(clinic, invoice["id"], {}, role="staff")
    )

    assert applied[0] == 200, applied
    assert paid[0] == 201, paid
    # The invoice could no longer take it: the money became credit, nothing lost.
    assert (paid[1]["status"], paid[1]["allocations"], paid[1]["credit_amount"]) == (
        "succeeded",
        [],
        4000,
    )
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 4000
    assert credit(clinic)["balance"] == 4000
    clinic.check_invariant("pat_a")


def test_paying_an_invoice_that_credit_paid_meanwhile_is_invoice_not_payable(clinic):
    invoice = clinic.create_invoice("pat_a", 1000)
    assert adjust(clinic, 1000)[0] == 201
    assert apply(clinic, invoice["id"], {}, role="staff")[0] == 200
    body = {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}
    status, answer = clinic.pay("pat_a", body, role="staff")
    assert (status, answer["error"]["code"]) == (409, "invoice_not_payable")
    clinic.check_invariant("pat_a")


# -- void x payment -----------------------------------------------------------------------------

VOID = "/v1/clinics/{clinic_id}/patients/{patient_id}/invoices/{invoice_id}/void"


def void(clinic, invoice_id):
    return clinic.call("POST", VOID, {"patient_id": "pat_a", "invoice_id": invoice_id})


def test_a_payment_landing_before_a_voids_write_makes_the_void_a_409(clinic, monkeypatch, worker):
    invoice = clinic.create_invoice("pat_a", 2500)
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "void_invoice")
    body = {"method": "cash", "allocations": [{"invoice_id": invoice["id"]}]}
    (voided, paid) = held_while(hold, worker, lambda: void(clinic, invoice["id"]))(
        lambda: clinic.pay("pat_a", body, role="staff")
    )
    assert paid[0] == 201, paid
    assert voided[0] == 409, voided
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


def test_a_void_while_a_card_payment_is_at_stripe_sends_the_payment_to_credit(
    clinic, monkeypatch, worker
):
    invoice = clinic.create_invoice("pat_a", 2500)
    pm = saved_card(clinic, "pat_a")
    hold = Hold(monkeypatch, StripeGateway, "create_payment_intent")
    body = {
        "method": "card",
        "payment_method_id": pm,
        "allocations": [{"invoice_id": invoice["id"]}],
    }
    (paid, voided) = held_while(hold, worker, lambda: clinic.pay("pat_a", body, key=key()))(
        lambda: void(clinic, invoice["id"])
    )
    assert voided[0] == 200, voided
    assert paid[0] == 201, paid
    assert (paid[1]["allocations"], paid[1]["credit_amount"]) == ([], 2500)
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 0
    assert credit(clinic)["balance"] == 2500
    clinic.check_invariant("pat_a")


# -- top-up settlement x apply-credit -------------------------------------------------------------


def test_an_application_between_a_topups_read_and_its_settlement_is_not_lost(
    clinic, monkeypatch, worker
):
    invoice = clinic.create_invoice("pat_a", 1500)
    assert adjust(clinic, 1500)[0] == 201
    pm = saved_card(clinic, "pat_a")
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "settle")
    body = {"amount": 3000, "location_id": "loc_main", "payment_method_id": pm}
    (topped, applied) = held_while(hold, worker, lambda: topup(clinic, body, key=key()))(
        lambda: apply(clinic, invoice["id"], {}, role="staff")
    )
    assert applied[0] == 200, applied
    assert topped[0] == 201, topped
    after = credit(clinic)
    assert after["balance"] == 3000
    assert [lot["amount"] for lot in after["lots"]] == [3000]
    clinic.check_invariant("pat_a")


# -- webhook x reconciler ---------------------------------------------------------------------


class _Later:
    def now(self) -> str:
        from datetime import UTC, datetime

        from clinic_payments.domain.timeutil import to_iso

        return to_iso(datetime.now(UTC) + timedelta(minutes=10))


def test_the_webhook_and_the_reconciler_settling_at_once_settle_once(clinic, monkeypatch, worker):
    invoice = clinic.create_invoice("pat_a", 2000)
    started = start_card_payment(clinic, "pat_a", invoice["id"], amount=2600)
    intent_id = started["client_secret"].split("_secret_")[0]
    code, _ = portal_pays(clinic, started)  # captured at Stripe, not settled here yet
    assert code == 200
    event = clinic.intent_event(clinic.intent(intent_id))
    hold = Hold(monkeypatch, DynamoPaymentsRepository, "settle")
    c = container()
    reconciler = Reconciler(
        c.repository, c.payments, c.stripe, _Later(), min_age=timedelta(minutes=5)
    )
    # The webhook is held just before its settlement transaction while the reconciler settles.
    (delivered, report) = held_while(hold, worker, lambda: clinic.signed_webhook(event))(
        lambda: reconciler.run(limit=1000)
    )
    assert delivered[0] == 200, delivered
    assert report.settled >= 1, report
    payment = clinic.payment("pat_a", started["id"])
    assert (payment["status"], payment["credit_amount"]) == ("succeeded", 600)
    assert credit(clinic)["balance"] == 600
    assert clinic.invoice("pat_a", invoice["id"])["amount_paid"] == 2000
    clinic.check_invariant("pat_a")
