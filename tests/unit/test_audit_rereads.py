"""The audit of a live account: a difference counts only if it holds when the account is read again.

An account is read in several requests, so a payment that settles between two of them shows a
difference that is not there (its ledger entry read, the payment read before it settled). The
soak met this while webhooks were landing; a real difference must still be reported.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.audit import Auditor
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import Payment, PaymentMethodType, PaymentStatus
from clinic_payments.domain.payments.rules import PaymentRequest

from tests.unit.fakes import CLINIC, PATIENT, STAFF, InMemoryPaymentsRepository, World, make_world

pytestmark = pytest.mark.unit


class TornFirstRead(InMemoryPaymentsRepository):
    """The first read of the payments sees them before they settled; every later read is true."""

    def __init__(self, real: InMemoryPaymentsRepository) -> None:
        self.__dict__.update(real.__dict__)
        self.payment_reads = 0

    def all_payments(self, clinic_id: str, patient_id: str) -> list[Payment]:
        self.payment_reads += 1
        payments = super().all_payments(clinic_id, patient_id)
        if self.payment_reads > 1:
            return payments
        return [replace(p, status=PaymentStatus.REQUIRES_PAYMENT_METHOD) for p in payments]


@pytest.fixture
def world() -> World:
    """One patient who overpaid an invoice in cash: 650 of the payment is credit."""
    world = make_world()
    invoice = world.invoice(5000)
    world.payments.create(
        STAFF,
        CLINIC,
        PATIENT,
        PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(invoice.id)], 5650),
        new_id("pay"),
    )
    return world


def test_a_difference_seen_only_while_a_payment_settles_is_not_reported(world: World) -> None:
    torn = TornFirstRead(world.repo)
    pauses: list[float] = []
    auditor = Auditor(torn, None, pause=pauses.append)

    assert auditor.audit_patient(CLINIC, PATIENT) == []
    assert torn.payment_reads == 2
    assert pauses == [0.5]


def test_the_torn_read_is_what_a_single_read_would_have_reported(world: World) -> None:
    auditor = Auditor(TornFirstRead(world.repo), None, rereads=0)

    found = [str(d) for d in auditor.audit_patient(CLINIC, PATIENT)]

    assert any(d.endswith("requires_payment_method but credited") for d in found)
    assert any(d.startswith("invoice ") for d in found)


def test_a_difference_that_holds_on_every_read_is_reported(world: World) -> None:
    [invoice] = world.repo.all_invoices(CLINIC, PATIENT)
    world.repo.invoices[(CLINIC, PATIENT)][invoice.id] = replace(
        invoice, amount_paid=invoice.amount_paid - 100
    )
    pauses: list[float] = []

    found = Auditor(world.repo, None, pause=pauses.append).audit_patient(CLINIC, PATIENT)

    assert {d.subject for d in found} == {f"invoice {invoice.id}"}
    assert pauses == [0.5, 1.0]


def test_a_difference_that_moves_to_another_subject_between_reads_is_not_reported(
    world: World,
) -> None:
    """The first read is torn (the payment and its invoice); the second shows the credit out of
    step instead (changed during the pause): no subject holds on every read."""
    torn = TornFirstRead(world.repo)
    key = (CLINIC, PATIENT, "usd")
    pauses: list[float] = []

    def tamper_after_first_read(seconds: float) -> None:
        pauses.append(seconds)
        torn.credits[key] = replace(torn.credits[key], balance=600)

    found = Auditor(torn, None, pause=tamper_after_first_read).audit_patient(CLINIC, PATIENT)

    assert found == []
    assert pauses == [0.5]
    # What the second read saw: the credit, a subject the first read did not have.
    subjects = {d.subject for d in Auditor(torn, None, rereads=0).audit_patient(CLINIC, PATIENT)}
    assert "credit usd" in subjects
    assert not any(s.startswith(("payment ", "invoice ")) for s in subjects)
