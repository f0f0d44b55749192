"""What one request costs in calls (DynamoDB calls and the items they read, Stripe requests,
other AWS calls), for a patient with a short history and one with a long one: the same request,
the same counts, if its cost does not grow with the patient's history.

Requests go through the handlers in this process (as the integration tests send them) against
moto and the Stripe fake, counted by tests/support/calls.py. Each is sent once before it is
counted: the counts are a warm container's, for a patient who already has a Stripe customer
and a saved card, with explicit allocations and no receipt email (the issue's budgets).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from local.template import routes
from tests.conftest import Api
from tests.support.apigw import claims_for, context, http_event
from tests.support.calls import Calls, counting
from tests.support.portal import VISA, confirm_card

PATIENT = "/v1/clinics/{clinic_id}/patients/{patient_id}"
HISTORIES = (5, 300)
PDF = "application/pdf"
# The budgets, printed beside the counts.
BUDGETS = {
    "staff charge, saved card, off session": "1 Stripe, <= 4 DynamoDB",
    "start a portal card payment": "1 Stripe, <= 4 DynamoDB",
    "cash payment": "<= 3 DynamoDB",
    "webhook payment_intent.succeeded": "0 Stripe, <= 2 DynamoDB",
    "webhook, the same event again": "1 DynamoDB",
    "list invoices": "1 Query (a page of 5)",
    "receipt, JSON": "1 round trip",
    "receipt, PDF": "1 round trip",
    "apply credit": "<= 3 DynamoDB",
}


@dataclass(frozen=True)
class Cost:
    dynamodb: int
    items: int
    stripe: int
    other_aws: int

    @classmethod
    def of(cls, calls: Calls) -> Cost:
        return cls(
            len(calls.dynamodb()), calls.items_read, calls.stripe_total(), len(calls.other_aws())
        )


class Patient:
    """One patient of the bench clinic, driven the way the portal and the staff app do."""

    def __init__(self, clinic: Api, patient_id: str) -> None:
        self.clinic = clinic
        self.id = patient_id

    def call(
        self,
        method: str,
        path: str,
        role: str = "staff",
        ids: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """A route of this patient's, `path` as the template names it below PATIENT."""
        status, body = self.clinic.call(
            method,
            PATIENT + path,
            {"patient_id": self.id, **(ids or {})},
            role=role,
            patient_ids=(self.id,) if role == "patient" else (),
            **kwargs,
        )
        if status >= 300:
            raise SystemExit(f"make bench: {method} {path} answered {status}: {body}")
        return body

    def get_pdf(self, path: str, ids: dict[str, str]) -> None:
        """A PDF route (its body is base64, not JSON), as the patient asks for it."""
        route = PATIENT + path
        [module] = {r.module for r in routes() if (r.method, r.path) == ("GET", route)}
        event = http_event(
            "GET",
            route,
            {"clinic_id": self.clinic.clinic_id, "patient_id": self.id, **ids},
            claims=claims_for("patient", self.clinic.clinic_id, (self.id,)),
            headers={"Accept": PDF},
        )
        response = import_module(module).lambda_handler(event, context())
        if response["statusCode"] != 200:
            raise SystemExit(f"make bench: GET {path} answered {response}")

    def invoice(self, amount: int = 5000) -> str:
        return str(self.clinic.create_invoice(self.id, amount)["id"])

    def pay(self, body: dict[str, Any], role: str = "staff") -> dict[str, Any]:
        key = {"Idempotency-Key": secrets.token_hex(8)}
        return dict(self.call("POST", "/payments", role, body=body, headers=key))

    def pay_cash(self, invoice_id: str) -> dict[str, Any]:
        return self.pay({"method": "cash", "allocations": [{"invoice_id": invoice_id}]})

    def start_card_payment(self, invoice_id: str, **extra: Any) -> dict[str, Any]:
        body = {"method": "card", "allocations": [{"invoice_id": invoice_id}], **extra}
        return self.pay(body, role="patient")

    def confirm_in_portal(self, payment: dict[str, Any]) -> dict[str, Any]:
        """Stripe.js's confirmCardPayment; the PaymentIntent as a webhook event carries it."""
        intent_id = payment["client_secret"].split("_secret_")[0]
        status, intent = confirm_card(
            self.clinic.stack.stripe_url,
            intent_id,
            payment["client_secret"],
            payment["publishable_key"],
            VISA,
        )
        if status != 200:
            raise SystemExit(f"make bench: the Stripe fake refused the card: {intent}")
        return self.clinic.intent(intent_id)

    def deliver(self, event: dict[str, Any]) -> None:
        status, body = self.clinic.signed_webhook(event)
        if status != 200:
            raise SystemExit(f"make bench: the webhook answered {status}: {body}")

    def save_card(self) -> str:
        """A card saved the way a patient saves one (pay with consent, confirm, the webhook):
        the patient then has a Stripe customer and a card on file."""
        payment = self.start_card_payment(
            self.invoice(100),
            save_card=True,
            consent={"agreed": True, "wording_version": "2026-11-01"},
        )
        intent = self.confirm_in_portal(payment)
        self.deliver(self.clinic.intent_event(intent))
        return str(intent["payment_method"])

    def grow_history(self, invoices: int) -> None:
        """`invoices` more invoices, made by the API as staff make them; one in five paid."""
        for n in range(invoices):
            invoice_id = self.invoice(1000 + n)
            if n % 5 == 0:
                self.pay_cash(invoice_id)

    def give_credit(self, amount: int) -> None:
        self.call(
            "POST",
            "/credit/adjustments",
            body={"amount": amount, "reason": "goodwill"},
            headers={"Idempotency-Key": secrets.token_hex(8)},
        )


Run = Callable[[str, Callable[[], object]], None]


def costs_for(clinic: Api, patient_id: str, history: int) -> dict[str, Cost]:
    """Every request's cost for one patient with `history` invoices."""
    patient = Patient(clinic, patient_id)
    # (local/aws.py's moto backs up only the items a transaction names: a history of 300
    # invoices is made at the same cost per invoice as the first)
    card = patient.save_card()  # paying an invoice: the first of the history
    patient.grow_history(history - 1)
    patient.give_credit(100_000)
    costs: dict[str, Cost] = {}

    def warm(_label: str, request: Callable[[], object]) -> None:
        request()

    def count(label: str, request: Callable[[], object]) -> None:
        with counting(clinic.stack.stripe_url) as calls:
            request()
        costs[label] = Cost.of(calls)

    # Every request once to warm the container, then once counted: each on invoices of its own.
    for run in (warm, count):
        every_request(patient, card, run)
    return costs


def every_request(patient: Patient, card: str, run: Run) -> None:
    charged = patient.invoice()
    run(
        "staff charge, saved card, off session",
        lambda: patient.pay(
            {
                "method": "card",
                "payment_method_id": card,
                "off_session": True,
                "allocations": [{"invoice_id": charged}],
            }
        ),
    )
    portal_invoice = patient.invoice()
    started: dict[str, Any] = {}
    run(
        "start a portal card payment",
        lambda: started.update(patient.start_card_payment(portal_invoice)),
    )
    event = patient.clinic.intent_event(patient.confirm_in_portal(started))
    run("webhook payment_intent.succeeded", lambda: patient.deliver(event))
    run("webhook, the same event again", lambda: patient.deliver(event))
    cash_invoice = patient.invoice()
    paid: dict[str, Any] = {}
    run("cash payment", lambda: paid.update(patient.pay_cash(cash_invoice)))
    # a page of 5 (a short history has no more): the same page at either size
    run("list invoices", lambda: patient.call("GET", "/invoices", query={"limit": "5"}))
    receipt, ids = "/payments/{payment_id}/receipt", {"payment_id": paid["id"]}
    run("receipt, JSON", lambda: patient.call("GET", receipt, role="patient", ids=ids))
    run("receipt, PDF", lambda: patient.get_pdf(receipt, ids))
    credited = {"invoice_id": patient.invoice()}
    run(
        "apply credit",
        lambda: patient.call(
            "POST",
            "/invoices/{invoice_id}/apply-credit",
            ids=credited,
            body={"amount": 1000},
            headers={"Idempotency-Key": secrets.token_hex(8)},
        ),
    )


def report(costs: dict[int, dict[str, Cost]]) -> list[str]:
    small, large = (costs[history] for history in HISTORIES)
    span = "  ".join(f"{f'-- {history} invoices --':^25}" for history in HISTORIES)
    columns = f"{'DynamoDB':>8}{'items':>6}{'Stripe':>7}{'AWS':>4}"
    lines = [
        "DynamoDB calls, items they read, Stripe requests, other AWS calls (Secrets Manager, SES)",
        f"{'':<38}{span}",
        f"{'request':<38}{columns}  {columns}  {'history':<8}goal",
    ]
    for label, budget in BUDGETS.items():
        a, b = small[label], large[label]
        lines.append(
            f"{label:<38}{_cells(a)}  {_cells(b)}  {'same' if a == b else 'differs':<8}{budget}"
        )
    return lines


def _cells(cost: Cost) -> str:
    return f"{cost.dynamodb:>8}{cost.items:>6}{cost.stripe:>7}{cost.other_aws:>4}"
