"""The soak: random money operations through the local stack, with faults, audited as it goes.

Every step picks an operation (invoices, payments of every method, saved cards, top-ups,
applying and adjusting credit, refunds, disputes, voids, reconciler runs, duplicated and
shuffled webhooks) for a random patient, sometimes with a fault injected first: Stripe failing
before or after it acted, slow, rate limiting; DynamoDB throttling or a transaction conflict.
Requests answered 503 (or not answered) are retried later with the same Idempotency-Key, as a
client would. A fixed seed replays the same run.

What counts as a violation: an audit difference (`domain.audit`: ledgers, balances, invoices,
payments and Stripe agree), a PaymentIntent charged twice for one payment, a 500, a body with a
traceback or a key. Refusals (4xx) are outcomes, counted by code.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "stripe" / "fixtures3.json"
WORDING = "2026-11-01"  # the clinic's card-on-file wording version (settings default)
FORBIDDEN = re.compile(r"Traceback|sk_(test|live)_|rk_(test|live)_|whsec_")
# The functions serving the money routes (template.yaml), whose containers the soak may kill.
PAY, TOPUP, REFUND = "PayInvoiceFunction", "TopupCreditFunction", "RefundPaymentFunction"
CARDS = {  # Stripe's test PaymentMethod ids (the fake knows them too)
    "visa": "pm_card_visa",
    "declined": "pm_card_chargeDeclined",
    "insufficient": "pm_card_chargeDeclinedInsufficientFunds",
    "three_d_secure": "pm_card_threeDSecure2Required",
}


@dataclass(frozen=True)
class Target:
    """One clinic on a running local stack, and how to act as its users."""

    api_url: str
    stripe_url: str
    moto_url: str
    clinic_id: str
    account_id: str
    secret_key: str
    publishable_key: str
    webhook_secret: str
    token: Callable[[str, tuple[str, ...]], str]  # (role, patient ids) -> a signed JWT
    # Kills one warm container of a function (the local gateway's workers), as when a Lambda
    # dies mid-request; None where the gateway cannot.
    kill_worker: Callable[[str], bool] | None = None


@dataclass
class Reply:
    status: int
    body: Any
    text: str


@dataclass
class Call:
    """A request to retry with the same Idempotency-Key until it has an answer."""

    operation: str
    method: str
    path: str
    body: Any
    role: str
    patient: str
    key: str
    attempts: int = 1
    killed: bool = False  # its container was killed mid-request: a 500 is what Lambda gives


@dataclass
class Patient:
    id: str
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)  # succeeded, by id
    intents: dict[str, str] = field(default_factory=dict)  # payment id -> PaymentIntent id
    cards: list[str] = field(default_factory=list)
    disputes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # open ones


@dataclass
class Report:
    seed: int
    steps: int = 0
    operations: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    audits: int = 0
    violations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"soak seed={self.seed}: {self.steps} steps, {sum(self.operations.values())} "
            f"operations, {self.retries} retries, {self.audits} audits, "
            f"{sum(self.faults.values())} faults injected, {len(self.violations)} violations",
            "operations: " + _counts(self.operations),
            "faults:     " + (_counts(self.faults) or "none"),
            "outcomes:   " + _counts(self.outcomes),
        ]
        out += [f"VIOLATION {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            out.append(f"... and {len(self.violations) - 50} more violations")
        return out


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


class Soak:
    def __init__(
        self,
        target: Target,
        *,
        seed: int,
        audit: Callable[[bool, Sequence[str]], list[str]],
        reconcile: Callable[[], None],
        patients: int = 4,
        audit_every: int = 100,
        fault_rate: float = 0.15,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.t = target
        self.rng = random.Random(seed)
        self.report = Report(seed=seed)
        self._audit = audit
        self._reconcile = reconcile
        self._audit_every = audit_every
        self._fault_rate = fault_rate
        self._log = log
        self._patients = [Patient(f"soak_p{seed}_{i}") for i in range(patients)]
        self._retry: list[tuple[int, Call]] = []
        self._keys = 0
        self._dispute_template = json.loads(FIXTURES.read_text())["resources"]["dispute"]
        self._operations: list[tuple[Callable[[Patient], None], int]] = [
            (self.new_invoice, 14),
            (self.pay_cash, 8),
            (self.pay_card_in_portal, 12),
            (self.save_card, 3),
            (self.charge_saved_card, 8),
            (self.top_up, 5),
            (self.apply_credit, 8),
            (self.adjust_credit, 4),
            (self.refund, 8),
            (self.dispute, 3),
            (self.void_invoice, 3),
            (self.reconcile, 3),
            (self.replay_webhooks, 4),
        ]

    # -- the run ------------------------------------------------------------------------

    def run(self, steps: int) -> Report:
        for step in range(1, steps + 1):
            self.report.steps = step
            self._retry_due(step)
            operation = self.rng.choices(
                [op for op, _ in self._operations], [w for _, w in self._operations]
            )[0]
            patient = self.rng.choice(self._patients)
            self.report.operations[operation.__name__] += 1
            operation(patient)
            if step % self._audit_every == 0:
                self._check(f"step {step}")
                self._log(f"step {step}: {len(self.report.violations)} violations so far")
        self._finish()
        return self.report

    def _finish(self) -> None:
        self._clear_faults()
        # What is still in doubt is retried until it has an answer: a request whose container
        # was killed keeps its Idempotency-Key locked for up to a minute (request_in_progress).
        deadline = time.monotonic() + 150
        while self._retry and time.monotonic() < deadline:
            due, self._retry = self._retry, []
            for _, call in due:
                call.killed = False
                self._send(call)
            if self._retry:
                time.sleep(2)
        for call in (c for _, c in self._retry):
            self._violation(f"{call.operation} {call.key} never got an answer")
        # The fake delivers webhooks about a second after the event; a failing refund turns
        # failed 1.5 s after it was made.
        time.sleep(4)
        self.reconcile(None)
        self._check("end", with_stripe=True)
        self._no_double_charges()

    def _check(self, when: str, *, with_stripe: bool = False) -> None:
        """The ledger audit as it goes; against Stripe too at the end, once webhooks in flight
        have arrived (mid-run, a payment Stripe captured a second ago is not settled yet)."""
        self.report.audits += 1
        for difference in self._audit(with_stripe, [p.id for p in self._patients]):
            self._violation(f"audit at {when}: {difference}")

    def _violation(self, text: str) -> None:
        """Recorded, and said at once: a long run that dies still shows what it found."""
        self.report.violations.append(text)
        self._log(f"VIOLATION {text}")

    # -- HTTP ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Reply | None:
        data = raw
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["content-type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers["content-type"] = "application/x-www-form-urlencoded"
        request = urllib.request.Request(url, data=data, method=method, headers=all_headers)  # noqa: S310 - loopback
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            self.report.outcomes[f"no answer ({type(exc).__name__})"] += 1
            return None
        text = payload.decode("utf-8", "replace")
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = None
        return Reply(status, parsed, text)

    def _api(
        self,
        operation: str,
        method: str,
        path: str,
        patient: Patient,
        *,
        role: str = "staff",
        body: Any = None,
        idempotent: bool = True,
        function: str | None = None,
    ) -> Reply | None:
        call = Call(operation, method, path, body, role, patient.id, self._new_key(operation))
        if not idempotent:
            call.key = ""
        if function is not None and self._kill_now():
            return self._send_and_kill(call, function)
        return self._send(call)

    def _kill_now(self) -> bool:
        return self.t.kill_worker is not None and self.rng.random() < self._fault_rate / 4

    def _send_and_kill(self, call: Call, function: str) -> Reply | None:
        """The request runs while its function's container is killed a moment later."""
        assert self.t.kill_worker is not None
        delay = self.rng.uniform(0.0, 0.3)
        answer: list[Reply | None] = []
        call.killed = True
        sender = threading.Thread(target=lambda: answer.append(self._send(call)), daemon=True)
        sender.start()
        time.sleep(delay)
        if self.t.kill_worker(function):
            self.report.faults["container killed"] += 1
        sender.join(timeout=180)
        return answer[0] if answer else None

    def _send(self, call: Call) -> Reply | None:
        headers = {"authorization": "Bearer " + self.t.token(call.role, (call.patient,))}
        if call.key:
            headers["Idempotency-Key"] = call.key
        reply = self._request(
            call.method, self.t.api_url + call.path, body=call.body, headers=headers
        )
        code = _error_code(reply)
        label = f"{call.operation}:{reply.status if reply else 'none'}" + (
            f":{code}" if code else ""
        )
        self.report.outcomes[label] += 1
        if reply is not None:
            found = FORBIDDEN.search(reply.text)
            if found:
                self._violation(f"{label} answered {found.group(0)!r}")
            crashed = call.killed and reply.status in (500, 502)
            if not crashed and (reply.status == 500 or code == "internal_error"):
                self._violation(f"{label}: {reply.text[:300]}")
        in_doubt = (
            reply is None
            or reply.status in (503, 504)
            or code == "request_in_progress"
            or (call.killed and reply.status in (500, 502))
        )
        if in_doubt and call.key and call.method != "GET":
            call.attempts += 1
            self._retry.append((self.report.steps + self.rng.randint(1, 15), call))
            self.report.retries += 1
        return reply

    def _retry_due(self, step: int) -> None:
        due = [call for when, call in self._retry if when <= step]
        self._retry = [(when, call) for when, call in self._retry if when > step]
        for call in due:
            call.killed = False
            reply = self._send(call)
            if reply is not None and reply.status in (200, 201):
                self._remember(call, reply)

    def _remember(self, call: Call, reply: Reply) -> None:
        """What a retried request finally did, for the operations that build on it."""
        patient = next(p for p in self._patients if p.id == call.patient)
        body = reply.body if isinstance(reply.body, dict) else {}
        if body.get("status") == "succeeded" and str(body.get("id", "")).startswith("pay_"):
            patient.payments[body["id"]] = body

    def _new_key(self, operation: str) -> str:
        self._keys += 1
        return f"soak-{self.report.seed}-{self._keys}-{operation}"

    def _patient_path(self, patient: Patient, rest: str = "") -> str:
        return f"/v1/clinics/{self.t.clinic_id}/patients/{patient.id}{rest}"

    def _stripe(self, method: str, path: str, form: dict[str, str] | None = None) -> Reply | None:
        auth = {"authorization": f"Bearer {self.t.secret_key}"}
        return self._request(method, self.t.stripe_url + path, form=form, headers=auth)

    # -- faults ---------------------------------------------------------------------------

    def _maybe_stripe_fault(self, path_prefix: str) -> None:
        if self.rng.random() >= self._fault_rate:
            return
        mode = self.rng.choice(["error_before", "error_after", "delay", "rate_limit"])
        spec: dict[str, Any] = {"method": "POST", "path_prefix": path_prefix, "times": 1}
        if mode == "delay":
            spec.update(mode="delay", seconds=0.3)
        elif mode == "rate_limit":
            spec.update(mode="error_before", status=429)
        else:
            spec.update(mode=mode, status=self.rng.choice([500, 502, 503]))
        self._request(
            "POST",
            self.t.stripe_url + "/_compat/faults",
            raw=json.dumps(spec).encode(),
            headers={"content-type": "application/json"},
        )
        self.report.faults[f"stripe {mode}"] += 1

    def _maybe_dynamodb_fault(self) -> None:
        if self.rng.random() >= self._fault_rate / 2:
            return
        error = self.rng.choice(["throttle", "throttle", "conflict"])
        operation = self.rng.choice(["TransactWriteItems", "*"])
        times = self.rng.randint(1, 6) if error == "throttle" else self.rng.randint(1, 2)
        self._request(
            "POST",
            self.t.moto_url + "/_local/dynamodb/faults",
            raw=json.dumps({"operation": operation, "error": error, "times": times}).encode(),
        )
        self.report.faults[f"dynamodb {error}"] += 1

    def _clear_faults(self) -> None:
        self._request("DELETE", self.t.stripe_url + "/_compat/faults")
        self._request("DELETE", self.t.moto_url + "/_local/dynamodb/faults")

    def _with_faults(self, stripe_path: str | None, action: Callable[[], Any]) -> Any:
        if stripe_path is not None:
            self._maybe_stripe_fault(stripe_path)
        self._maybe_dynamodb_fault()
        try:
            return action()
        finally:
            self._clear_faults()

    # -- reading the account ------------------------------------------------------------

    def _open_invoices(self, patient: Patient) -> list[dict[str, Any]]:
        reply = self._api(
            "list_invoices",
            "GET",
            self._patient_path(patient, "/invoices?status=open&limit=100"),
            patient,
            idempotent=False,
        )
        if reply is None or reply.status != 200:
            return []
        return list(reply.body["items"])

    def _allocation(self, patient: Patient) -> dict[str, Any] | None:
        """A random way to pay: one or two open invoices (full or part), or an amount."""
        invoices = self._open_invoices(patient)
        if not invoices or self.rng.random() < 0.2:
            return {"amount": self.rng.randint(100, 30_000)}
        chosen = self.rng.sample(invoices, k=min(len(invoices), self.rng.choice([1, 1, 2])))
        allocations: list[dict[str, Any]] = []
        for invoice in chosen:
            if self.rng.random() < 0.5:
                allocations.append({"invoice_id": invoice["id"]})
            else:
                due = int(invoice["balance_due"])
                allocations.append(
                    {"invoice_id": invoice["id"], "amount": self.rng.randint(1, due)}
                )
        request: dict[str, Any] = {"allocations": allocations}
        if self.rng.random() < 0.2:  # an overpayment: the rest becomes credit
            covered = sum(
                a.get("amount") or int(i["balance_due"])
                for a, i in zip(allocations, chosen, strict=True)
            )
            request["amount"] = covered + self.rng.randint(1, 5000)
        return request

    # -- operations -----------------------------------------------------------------------

    def new_invoice(self, patient: Patient) -> None:
        lines = [
            {"description": f"Visit {n}", "unit_amount": self.rng.randint(300, 20_000)}
            for n in range(self.rng.randint(1, 3))
        ]
        self._api(
            "new_invoice",
            "POST",
            self._patient_path(patient, "/invoices"),
            patient,
            body={"lines": lines},
        )

    def pay_cash(self, patient: Patient) -> None:
        request = self._allocation(patient)
        if request is None:
            return
        request["method"] = self.rng.choice(["cash", "check"])
        reply = self._with_faults(
            None,
            lambda: self._api(
                "pay_cash",
                "POST",
                self._patient_path(patient, "/payments"),
                patient,
                body=request,
                function=PAY,
            ),
        )
        self._keep_payment(patient, reply)

    def pay_card_in_portal(self, patient: Patient) -> None:
        request = self._allocation(patient)
        if request is None:
            return
        request["method"] = "card"
        reply = self._with_faults(
            "/v1/payment_intents",
            lambda: self._api(
                "pay_card",
                "POST",
                self._patient_path(patient, "/payments"),
                patient,
                role="patient",
                body=request,
                function=PAY,
            ),
        )
        if reply is None or reply.status != 201:
            return
        self._confirm_in_portal(patient, reply.body)

    def _confirm_in_portal(self, patient: Patient, payment: dict[str, Any]) -> None:
        secret = payment.get("client_secret")
        if not secret:
            return
        intent_id = secret.split("_secret_")[0]
        patient.intents[payment["id"]] = intent_id
        card = self.rng.choices(
            ["visa", "declined", "insufficient", "three_d_secure"], [70, 10, 5, 15]
        )[0]
        if self.rng.random() < 0.05:
            return  # the patient closes the page: the payment waits, then the reconciler
        confirmed = self._request(
            "POST",
            f"{self.t.stripe_url}/v1/payment_intents/{intent_id}/confirm",
            form={
                "key": self.t.publishable_key,
                "client_secret": secret,
                "payment_method": CARDS[card],
            },
        )
        self.report.outcomes[
            f"portal_confirm:{card}:{confirmed.status if confirmed else 'none'}"
        ] += 1
        if card == "three_d_secure" and self.rng.random() < 0.8:
            self._request(
                "POST",
                f"{self.t.stripe_url}/v1/payment_intents/{intent_id}/_authenticate?success=true",
                form={"key": self.t.publishable_key, "client_secret": secret},
            )
        if card in ("visa", "three_d_secure"):
            patient.payments.setdefault(payment["id"], payment)

    def save_card(self, patient: Patient) -> None:
        reply = self._api(
            "save_card",
            "POST",
            self._patient_path(patient, "/payment-methods"),
            patient,
            role="patient",
            body={"consent": {"agreed": True, "wording_version": WORDING}},
        )
        if reply is None or reply.status != 201:
            return
        setup = reply.body
        confirmed = self._request(
            "POST",
            f"{self.t.stripe_url}/v1/setup_intents/{setup['setup_intent_id']}/confirm",
            form={
                "key": self.t.publishable_key,
                "client_secret": setup["client_secret"],
                "payment_method": CARDS["visa"],
            },
        )
        if (
            confirmed is not None
            and confirmed.status == 200
            and confirmed.body.get("payment_method")
        ):
            patient.cards.append(str(confirmed.body["payment_method"]))

    def charge_saved_card(self, patient: Patient) -> None:
        if not patient.cards:
            return self.save_card(patient)
        request = self._allocation(patient)
        if request is None:
            return None
        off_session = self.rng.random() < 0.6
        request.update(method="card", payment_method_id=self.rng.choice(patient.cards))
        if off_session:
            request["off_session"] = True
        reply = self._with_faults(
            "/v1/payment_intents",
            lambda: self._api(
                "charge_saved_card",
                "POST",
                self._patient_path(patient, "/payments"),
                patient,
                role="staff" if off_session else "patient",
                body=request,
                function=PAY,
            ),
        )
        self._keep_payment(patient, reply)
        return None

    def top_up(self, patient: Patient) -> None:
        body: dict[str, Any] = {"amount": self.rng.randint(500, 20_000), "location_id": "loc_main"}
        if patient.cards and self.rng.random() < 0.7:
            body["payment_method_id"] = self.rng.choice(patient.cards)
        else:
            body["consent"] = {"agreed": True, "wording_version": WORDING}
        reply = self._with_faults(
            "/v1/payment_intents",
            lambda: self._api(
                "top_up",
                "POST",
                self._patient_path(patient, "/credit/topups"),
                patient,
                role="patient",
                body=body,
                function=TOPUP,
            ),
        )
        if reply is not None and reply.status == 201 and reply.body.get("client_secret"):
            self._confirm_in_portal(patient, reply.body)
        self._keep_payment(patient, reply)

    def apply_credit(self, patient: Patient) -> None:
        invoices = self._open_invoices(patient)
        if not invoices:
            return
        invoice = self.rng.choice(invoices)
        body: dict[str, Any] = {}
        if self.rng.random() < 0.5:
            body["amount"] = self.rng.randint(1, int(invoice["balance_due"]))
        self._with_faults(
            None,
            lambda: self._api(
                "apply_credit",
                "POST",
                self._patient_path(patient, f"/invoices/{invoice['id']}/apply-credit"),
                patient,
                role=self.rng.choice(["patient", "staff"]),
                body=body,
            ),
        )

    def adjust_credit(self, patient: Patient) -> None:
        amount = self.rng.randint(-5000, 5000) or 1
        self._with_faults(
            None,
            lambda: self._api(
                "adjust_credit",
                "POST",
                self._patient_path(patient, "/credit/adjustments"),
                patient,
                body={"amount": amount, "reason": "soak"},
            ),
        )

    def refund(self, patient: Patient) -> None:
        if not patient.payments:
            return
        payment_id = self.rng.choice(sorted(patient.payments))
        amount = int(patient.payments[payment_id].get("amount") or 0)
        body: dict[str, Any] = {"reason": "requested_by_customer"}
        if amount > 1 and self.rng.random() < 0.6:
            body["amount"] = self.rng.randint(1, amount)
        self._with_faults(
            "/v1/refunds",
            lambda: self._api(
                "refund",
                "POST",
                self._patient_path(patient, f"/payments/{payment_id}/refunds"),
                patient,
                body=body,
                function=REFUND,
            ),
        )

    def dispute(self, patient: Patient) -> None:
        if patient.disputes and self.rng.random() < 0.6:
            intent_id, dispute = patient.disputes.pop(self.rng.randrange(len(patient.disputes)))
            closed = {**dispute, "status": self.rng.choice(["lost", "won"])}
            self._post_event("charge.dispute.closed", closed)
            return
        candidates = [p for p in patient.payments if p in patient.intents]
        if not candidates:
            return
        payment_id = self.rng.choice(sorted(candidates))
        intent_id = patient.intents[payment_id]
        amount = int(patient.payments[payment_id].get("charge_amount") or 0)
        if amount <= 0:
            return
        dispute = copy.deepcopy(self._dispute_template)
        dispute.update(
            id=f"dp_soak_{self.report.seed}_{self._new_key('dp')[-12:]}",
            amount=self.rng.randint(1, amount),
            payment_intent=intent_id,
            charge=None,
            status="needs_response",
        )
        self._post_event("charge.dispute.created", dispute)
        patient.disputes.append((intent_id, dispute))

    def void_invoice(self, patient: Patient) -> None:
        invoices = [i for i in self._open_invoices(patient) if int(i["amount_paid"]) == 0]
        if not invoices:
            return
        invoice = self.rng.choice(invoices)
        self._api(
            "void_invoice",
            "POST",
            self._patient_path(patient, f"/invoices/{invoice['id']}/void"),
            patient,
        )

    def reconcile(self, _patient: Patient | None) -> None:
        self._reconcile()

    def replay_webhooks(self, _patient: Patient) -> None:
        """Stripe delivers at least once and in any order: send recent events again, shuffled,
        some twice."""
        listing = self._stripe("GET", "/v1/events?limit=20")
        if listing is None or listing.status != 200:
            return
        events = list(listing.body.get("data") or [])
        chosen = self.rng.sample(events, k=min(len(events), self.rng.randint(1, 6)))
        chosen += self.rng.sample(chosen, k=len(chosen) // 2)
        self.rng.shuffle(chosen)
        for event in chosen:
            self._post_raw_event(json.dumps(event))
            self.report.faults["webhook replayed"] += 1

    # -- webhooks -------------------------------------------------------------------------

    def _post_event(self, event_type: str, obj: dict[str, Any]) -> None:
        event = {
            "id": f"evt_soak_{self._new_key('evt')}",
            "object": "event",
            "api_version": None,
            "created": int(time.time()),
            "data": {"object": obj},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self._post_raw_event(json.dumps(event))

    def _post_raw_event(self, payload: str) -> None:
        stamp = int(time.time())
        mac = hmac.new(
            self.t.webhook_secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256
        ).hexdigest()
        url = f"{self.t.api_url}/v1/webhooks/stripe/{self.t.clinic_id}/{self.t.account_id}"
        for _ in range(5):  # Stripe retries a 5xx
            reply = self._request(
                "POST",
                url,
                raw=payload.encode(),
                headers={
                    "Stripe-Signature": f"t={stamp},v1={mac}",
                    "content-type": "application/json",
                },
            )
            status = reply.status if reply else "none"
            self.report.outcomes[f"webhook:{status}"] += 1
            if reply is not None and reply.status < 500:
                if reply.status != 200:
                    self._violation(f"webhook answered {reply.status}: {reply.text[:200]}")
                return

    # -- bookkeeping and the final checks ----------------------------------------------------

    def _keep_payment(self, patient: Patient, reply: Reply | None) -> None:
        if reply is None or not isinstance(reply.body, dict):
            return
        body = reply.body
        if reply.status == 201 and body.get("status") == "succeeded":
            patient.payments[body["id"]] = body

    def _no_double_charges(self) -> None:
        """At most one succeeded PaymentIntent per payment: nothing charged twice at Stripe."""
        succeeded: Counter[str] = Counter()
        after = None
        while True:
            query = "/v1/payment_intents?limit=100" + (f"&starting_after={after}" if after else "")
            page = self._stripe("GET", query)
            if page is None or page.status != 200:
                self._violation(f"cannot list PaymentIntents: {page and page.text[:200]}")
                return
            for intent in page.body["data"]:
                payment_id = (intent.get("metadata") or {}).get("payment_id")
                if intent.get("status") == "succeeded" and payment_id:
                    succeeded[payment_id] += 1
            if not page.body.get("has_more") or not page.body["data"]:
                break
            after = page.body["data"][-1]["id"]
        for payment_id, n in succeeded.items():
            if n > 1:
                self._violation(f"payment {payment_id} charged {n} times at Stripe")
        self.report.outcomes["stripe succeeded intents"] = sum(succeeded.values())


def _error_code(reply: Reply | None) -> str | None:
    if reply is None or reply.status < 400 or not isinstance(reply.body, dict):
        return None
    error = reply.body.get("error")
    return str(error.get("code")) if isinstance(error, dict) else None
