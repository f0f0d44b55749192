"""PaymentService on the fakes: record first, charge once, settle exactly once."""

from __future__ import annotations

import contextlib
import copy
import itertools
import socket
from dataclasses import replace
from typing import Any
from unittest import mock

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.audit import audit_account
from clinic_payments.domain.errors import (
    AmountTooSmallError,
    CardDeclinedError,
    ConflictError,
    ConsentRequiredError,
    DomainError,
    ForbiddenError,
    InsufficientCreditError,
    NotFoundError,
    PaymentFailedError,
    PaymentProviderUnavailableError,
    PaymentRequiresActionError,
    ValidationError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.invoices.rules import status_after
from clinic_payments.domain.model import (
    Allocation,
    Caller,
    Failure,
    InvoiceStatus,
    LedgerEntryType,
    Payment,
    PaymentMethodType,
    PaymentPurpose,
    PaymentStatus,
)
from clinic_payments.domain.money import fee_for
from clinic_payments.domain.payments.rules import ConsentGiven, PaymentRequest
from clinic_payments.domain.ports import SettlementWrite, StripeObjectLink
from clinic_payments.domain.refunds.service import RefundService
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tests.unit.fakes import (
    ACCOUNT,
    CLINIC,
    OTHER_PATIENT,
    PATIENT,
    STAFF,
    Decline,
    Outcome,
    Refused,
    RequiresAction,
    Succeed,
    Unavailable,
    World,
    intent_event,
    make_world,
    patient_caller,
)

pytestmark = pytest.mark.unit

PATIENT_CALLER = patient_caller(PATIENT)
WORDING = "2026-11-01"  # ClinicSettings' default card-on-file wording version


@pytest.fixture
def world() -> World:
    return make_world()


def card(*invoice_ids: str, **fields: Any) -> PaymentRequest:
    allocations = [RequestedAllocation(i) for i in invoice_ids] or None
    return PaymentRequest(method=PaymentMethodType.CARD, allocations=allocations, **fields)


def cash(*invoice_ids: str, **fields: Any) -> PaymentRequest:
    allocations = [RequestedAllocation(i) for i in invoice_ids] or None
    return PaymentRequest(method=PaymentMethodType.CASH, allocations=allocations, **fields)


def pay(
    world: World,
    caller: Caller,
    request: PaymentRequest,
    *,
    patient_id: str = PATIENT,
    payment_id: str | None = None,
) -> Payment:
    return world.payments.create(caller, CLINIC, patient_id, request, payment_id or new_id("pay"))


def link_of(payment: Payment) -> StripeObjectLink:
    return StripeObjectLink(CLINIC, payment.patient_id, payment.id, ACCOUNT)


def confirm_in_portal(world: World, payment: Payment, status: str = "succeeded") -> Payment:
    """The patient confirms with Stripe.js; Stripe's answer then reaches settle_intent."""
    assert payment.stripe_payment_intent_id is not None
    card_id = world.gateway.add_card(payment.stripe_customer_id)
    intent = world.gateway.set_intent(
        payment.stripe_payment_intent_id, status, payment_method=world.gateway.cards[card_id][0]
    )
    settled = world.payments.settle_intent(link_of(payment), intent)
    assert settled is not None
    return settled


def state_of(world: World) -> dict[str, Any]:
    repo = world.repo
    return copy.deepcopy(
        {
            "invoices": repo.invoices,
            "payments": repo.payments,
            "ledger": repo.ledger,
            "credits": repo.credits,
            "pending": repo.pending,
        }
    )


def test_unit_tests_cannot_reach_a_server() -> None:
    with pytest.raises(RuntimeError, match="sockets disabled"):
        socket.create_connection(("127.0.0.1", 9))
    with socket.socket() as sock, pytest.raises(RuntimeError, match="sockets disabled"):
        sock.connect(("127.0.0.1", 9))


# -- cash and check ---------------------------------------------------------------------------


def test_cash_by_staff_settles_at_once(world: World) -> None:
    invoice = world.invoice(5000)
    payment = pay(world, STAFF, cash(invoice.id))

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.amount_received == 5000
    assert payment.allocations == [Allocation(invoice.id, 5000)]
    assert (payment.credit_amount, payment.fee_amount) == (0, 0)
    assert payment.confirmation_number
    assert payment.created_by == STAFF.actor()
    stored = world.stored_invoice(invoice.id)
    assert (stored.status, stored.amount_paid, stored.balance_due) == (InvoiceStatus.PAID, 5000, 0)
    assert [(r.payment_id, r.amount, r.method) for r in stored.payments] == [
        (payment.id, 5000, "cash")
    ]
    assert stored.paid_at is not None
    assert world.repo.ledger_entries(CLINIC, PATIENT) == []
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 0
    assert world.stripe.requested == []  # no Stripe for cash
    assert not world.repo.is_pending(payment)


def test_a_check_above_the_invoice_sends_the_rest_to_credit(world: World) -> None:
    invoice = world.invoice(5000)
    request = PaymentRequest(
        method=PaymentMethodType.CHECK,
        allocations=[RequestedAllocation(invoice.id)],
        amount=7000,
        reference="chk 1042",
    )
    payment = pay(world, STAFF, request)

    assert (payment.status, payment.credit_amount) == (PaymentStatus.SUCCEEDED, 2000)
    [entry] = world.repo.ledger_entries(CLINIC, PATIENT)
    assert (entry.type, entry.amount, entry.payment_id) == (
        LedgerEntryType.OVERPAYMENT,
        2000,
        payment.id,
    )
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 2000
    assert world.stored_invoice(invoice.id).amount_paid == 5000


@pytest.mark.parametrize("method", [PaymentMethodType.CASH, PaymentMethodType.CHECK])
def test_cash_or_check_by_a_patient_is_forbidden(world: World, method: PaymentMethodType) -> None:
    invoice = world.invoice(5000)
    request = PaymentRequest(method=method, allocations=[RequestedAllocation(invoice.id)])
    with pytest.raises(ForbiddenError):
        pay(world, PATIENT_CALLER, request)
    assert world.repo.all_payments() == []
    assert world.stored_invoice(invoice.id).amount_paid == 0


def test_an_off_session_charge_by_a_patient_is_forbidden(world: World) -> None:
    invoice = world.invoice(5000)
    request = card(invoice.id, payment_method_id=world.saved_card(), off_session=True)
    with pytest.raises(ForbiddenError):
        pay(world, PATIENT_CALLER, request)
    assert world.gateway.calls_named("create_payment_intent") == []


def test_an_unknown_location_is_refused(world: World) -> None:
    invoice = world.invoice(5000)
    with pytest.raises(ValidationError) as caught:
        pay(world, STAFF, cash(invoice.id, location_id="loc_nowhere"))
    assert caught.value.details == [{"field": "location_id", "issue": "unknown location"}]


def test_a_clinic_without_settings_cannot_take_payments(world: World) -> None:
    with pytest.raises(NotFoundError):
        world.payments.create(STAFF, "clinic_unknown", PATIENT, cash(amount=100), new_id("pay"))


# -- card: new card in the portal -----------------------------------------------------------


def test_a_new_card_payment_awaits_a_payment_method_with_a_client_secret(world: World) -> None:
    invoice = world.invoice(5000)
    payment = pay(world, PATIENT_CALLER, card(invoice.id))

    assert payment.status is PaymentStatus.REQUIRES_PAYMENT_METHOD
    [intent_id] = world.gateway.intent_ids()
    assert payment.stripe_payment_intent_id == intent_id
    assert payment.client_secret == world.gateway.intents[intent_id].client_secret
    assert payment.stripe_customer_id is not None
    [call] = world.gateway.calls_named("create_payment_intent")
    assert call.args["amount"] == 5000
    assert call.args["confirm"] is False
    assert call.args["idempotency_key"] == f"{payment.id}:create"
    # Ids only: Stripe is not a HIPAA business associate.
    assert call.args["metadata"] == {
        "clinic_id": CLINIC,
        "patient_id": PATIENT,
        "payment_id": payment.id,
        "invoice_ids": invoice.id,  # ids only: what the webhook's settlement reads
    }
    assert world.repo.get_stripe_link(intent_id) == link_of(payment)
    assert world.repo.is_pending(payment)
    assert world.stored_invoice(invoice.id).amount_paid == 0


def test_a_portal_payment_confirmed_with_stripe_js_settles(world: World) -> None:
    invoice = world.invoice(5000)
    payment = confirm_in_portal(world, pay(world, PATIENT_CALLER, card(invoice.id)))

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.amount_received == 5000
    assert payment.payment_method is not None
    assert payment.payment_method.last4 == "4242"
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID
    assert not world.repo.is_pending(payment)


def test_one_stripe_customer_per_patient_and_account(world: World) -> None:
    first = pay(world, PATIENT_CALLER, card(world.invoice(1000).id))
    second = pay(world, PATIENT_CALLER, card(world.invoice(2000).id))
    other = pay(
        world,
        patient_caller(OTHER_PATIENT),
        card(world.invoice(3000, patient_id=OTHER_PATIENT).id),
        patient_id=OTHER_PATIENT,
    )

    assert first.stripe_customer_id == second.stripe_customer_id
    assert other.stripe_customer_id not in (None, first.stripe_customer_id)
    created = world.gateway.calls_named("create_customer")
    assert sorted(c.args["patient_id"] for c in created) == [PATIENT, OTHER_PATIENT]


# -- card: saved card -------------------------------------------------------------------------


def test_a_saved_card_charge_settles_at_once(world: World) -> None:
    invoice = world.invoice(5000)
    card_id = world.saved_card()
    payment = pay(world, STAFF, card(invoice.id, payment_method_id=card_id, off_session=True))

    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.payment_method is not None
    assert (payment.payment_method.id, payment.payment_method.last4) == (card_id, "4242")
    [call] = world.gateway.calls_named("create_payment_intent")
    assert (call.args["confirm"], call.args["off_session"]) == (True, True)
    assert call.args["payment_method"] == card_id
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID


def test_a_saved_card_of_another_customer_is_not_found_and_not_charged(world: World) -> None:
    invoice = world.invoice(5000)
    someone_elses = world.saved_card(OTHER_PATIENT)
    with pytest.raises(NotFoundError):
        pay(world, STAFF, card(invoice.id, payment_method_id=someone_elses))

    # Stripe refuses a card of another customer (asked once, no second request to check
    # first): nothing is created, nothing charged.
    assert world.gateway.intent_ids() == []
    [payment] = world.repo.all_payments()
    assert payment.status is PaymentStatus.FAILED
    assert payment.failure is not None
    assert payment.failure.code == "payment_method_not_found"
    assert world.stored_invoice(invoice.id).amount_paid == 0


@pytest.mark.parametrize("with_intent", [True, False], ids=["intent-returned", "error-only"])
def test_a_decline_raises_card_declined_with_the_failed_payment(
    world: World, with_intent: bool
) -> None:
    invoice = world.invoice(5000)
    card_id = world.saved_card()
    world.gateway.script(Decline("card_declined", "insufficient_funds", with_intent=with_intent))
    with pytest.raises(CardDeclinedError) as caught:
        pay(world, STAFF, card(invoice.id, payment_method_id=card_id))

    failed = caught.value.payment
    assert isinstance(failed, Payment)
    assert failed.status is PaymentStatus.FAILED
    assert failed.failure is not None
    assert (failed.failure.code, failed.failure.decline_code) == (
        "card_declined",
        "insufficient_funds",
    )
    assert world.stored_payment(failed.id) == failed
    stored = world.stored_invoice(invoice.id)
    assert (stored.status, stored.amount_paid) == (InvoiceStatus.OPEN, 0)
    # A failed attempt on an intent stays watched by the reconciler (the payer may confirm it
    # again); a failure Stripe never recorded an intent for has nothing left to wait for.
    assert world.repo.is_pending(failed) is with_intent


@pytest.mark.parametrize("with_intent", [True, False], ids=["intent-returned", "error-only"])
def test_an_expired_card_is_reported_alike_whether_or_not_stripe_returned_the_intent(
    world: World, with_intent: bool
) -> None:
    # Stripe reports some declines with their own code (expired_card, incorrect_cvc) and no
    # decline_code. The adapter turns every card error into CardDeclinedError; a confirm-time
    # decline comes back as an intent with last_error instead, and must read the same.
    invoice = world.invoice(5000)
    card_id = world.saved_card()
    world.gateway.script(
        Decline("expired_card", None, "Your card has expired.", with_intent=with_intent)
    )
    with pytest.raises(CardDeclinedError) as caught:
        pay(world, STAFF, card(invoice.id, payment_method_id=card_id))
    assert caught.value.payment.failure.code == "expired_card"


def test_a_card_needing_authentication_raises_requires_action_with_the_payment(
    world: World,
) -> None:
    invoice = world.invoice(5000)
    world.gateway.script(RequiresAction())
    with pytest.raises(PaymentRequiresActionError) as caught:
        pay(world, STAFF, card(invoice.id, payment_method_id=world.saved_card()))
    payment = caught.value.payment
    assert payment.status is PaymentStatus.REQUIRES_ACTION
    assert payment.client_secret is not None
    assert world.stored_invoice(invoice.id).amount_paid == 0


def test_provider_unavailable_leaves_the_payment_processing_not_failed(world: World) -> None:
    invoice = world.invoice(5000)
    world.gateway.script(Unavailable())
    with pytest.raises(PaymentProviderUnavailableError) as caught:
        pay(world, STAFF, card(invoice.id, payment_method_id=world.saved_card()))

    assert isinstance(caught.value.payment, Payment)
    stored = world.stored_payment(caught.value.payment.id)
    assert stored.status is PaymentStatus.PROCESSING
    assert stored.failure is None
    assert world.repo.is_pending(stored)  # the reconciler will look at it
    assert world.stored_invoice(invoice.id).amount_paid == 0


def test_a_card_charge_under_the_minimum_is_refused_before_anything_is_written(
    world: World,
) -> None:
    invoice = world.invoice(49)
    with pytest.raises(AmountTooSmallError) as caught:
        pay(world, STAFF, card(invoice.id, payment_method_id=world.saved_card()))
    assert caught.value.details[0]["minimum"] == 50
    assert caught.value.details[0]["charge"] == 49
    assert "create_payment_intent" not in [c.name for c in world.gateway.calls]
    assert world.repo.all_payments(CLINIC, PATIENT) == []


def test_cash_settles_what_is_under_the_card_minimum(world: World) -> None:
    invoice = world.invoice(49)
    payment = pay(world, STAFF, cash(invoice.id))
    assert payment.status is PaymentStatus.SUCCEEDED
    assert world.stored_invoice(invoice.id).amount_paid == 49


@pytest.mark.parametrize(
    "refusal",
    [
        AmountTooSmallError("Amount must convert to at least 50 cents.", [{"code": "x"}]),
        PaymentFailedError("Invalid payment_method_types[0]: must be one of card"),
    ],
    ids=["stripe-minimum", "invalid-request"],
)
def test_a_request_stripe_refuses_fails_the_payment_and_its_retry_charges_nothing(
    world: World, refusal: DomainError
) -> None:
    invoice = world.invoice(5000)
    request = card(invoice.id, payment_method_id=world.saved_card())
    payment_id = new_id("pay")
    world.gateway.script(Refused(refusal))
    with pytest.raises(type(refusal)):
        pay(world, STAFF, request, payment_id=payment_id)
    stored = world.stored_payment(payment_id)
    assert stored.status is PaymentStatus.FAILED
    assert stored.failure is not None
    assert stored.failure.message == refusal.message
    assert not world.repo.is_pending(stored)
    creates = len([c for c in world.gateway.calls if c.name == "create_payment_intent"])
    with pytest.raises(DomainError):
        pay(world, STAFF, request, payment_id=payment_id)
    assert len([c for c in world.gateway.calls if c.name == "create_payment_intent"]) == creates
    assert world.stored_invoice(invoice.id).amount_paid == 0


@pytest.mark.parametrize(
    "after_create", [False, True], ids=["stripe-never-saw-it", "stripe-created-it"]
)
def test_a_retry_after_a_provider_error_resumes_the_same_payment(
    world: World, after_create: bool
) -> None:
    invoice = world.invoice(5000)
    request = card(invoice.id, payment_method_id=world.saved_card())
    payment_id = new_id("pay")
    world.gateway.script(Unavailable(after_create=after_create))
    with pytest.raises(PaymentProviderUnavailableError):
        pay(world, STAFF, request, payment_id=payment_id)

    payment = pay(world, STAFF, request, payment_id=payment_id)

    assert payment.id == payment_id
    assert payment.status is PaymentStatus.SUCCEEDED
    calls = world.gateway.calls_named("create_payment_intent")
    assert [c.args["idempotency_key"] for c in calls] == [f"{payment_id}:create"] * 2
    assert len(world.gateway.intents) == 1  # one charge, not two
    assert len(world.repo.all_payments()) == 1
    stored = world.stored_invoice(invoice.id)
    assert (stored.amount_paid, len(stored.payments)) == (5000, 1)


def test_a_retried_request_for_a_settled_payment_charges_nothing_more(world: World) -> None:
    invoice = world.invoice(5000)
    request = card(invoice.id, payment_method_id=world.saved_card())
    first = pay(world, STAFF, request)
    before = state_of(world)

    again = pay(world, STAFF, request, payment_id=first.id)

    assert again == first
    assert len(world.gateway.calls_named("create_payment_intent")) == 1
    assert state_of(world) == before


def test_a_retried_declined_payment_raises_the_decline_again(world: World) -> None:
    invoice = world.invoice(5000)
    request = card(invoice.id, payment_method_id=world.saved_card())
    world.gateway.script(Decline())
    with pytest.raises(CardDeclinedError) as first:
        pay(world, STAFF, request)
    with pytest.raises(CardDeclinedError):
        pay(world, STAFF, request, payment_id=first.value.payment.id)
    assert len(world.gateway.calls_named("create_payment_intent")) == 1


# -- settlement -------------------------------------------------------------------------------


def test_settling_an_intent_twice_changes_nothing(world: World) -> None:
    invoice = world.invoice(5000)
    payment = confirm_in_portal(world, pay(world, PATIENT_CALLER, card(invoice.id)))
    assert payment.status is PaymentStatus.SUCCEEDED
    before, writes = state_of(world), world.repo.settle_calls
    intent = world.gateway.retrieve_payment_intent(str(payment.stripe_payment_intent_id))

    again = world.payments.settle_intent(link_of(payment), intent)

    assert again == payment
    assert state_of(world) == before
    assert world.repo.settle_calls == writes


def test_settlement_when_the_invoice_was_paid_meanwhile_goes_to_credit(world: World) -> None:
    invoice = world.invoice(5000)
    by_card = pay(world, PATIENT_CALLER, card(invoice.id))
    by_cash = pay(world, STAFF, cash(invoice.id))  # at the front desk, meanwhile

    settled = confirm_in_portal(world, by_card)

    assert settled.status is PaymentStatus.SUCCEEDED
    assert (settled.allocations, settled.credit_amount) == ([], 5000)
    stored = world.stored_invoice(invoice.id)
    assert stored.amount_paid == 5000
    assert [r.payment_id for r in stored.payments] == [by_cash.id]
    [entry] = world.repo.ledger_entries(CLINIC, PATIENT)
    assert (entry.type, entry.amount, entry.payment_id) == (
        LedgerEntryType.OVERPAYMENT,
        5000,
        by_card.id,
    )
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 5000


def test_settlement_when_the_invoice_was_partly_paid_meanwhile_splits(world: World) -> None:
    invoice = world.invoice(5000)
    by_card = pay(world, PATIENT_CALLER, card(invoice.id))
    pay(world, STAFF, PaymentRequest(PaymentMethodType.CASH, amount=1500))

    settled = confirm_in_portal(world, by_card)

    assert settled.allocations == [Allocation(invoice.id, 3500)]
    assert settled.credit_amount == 1500
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID
    assert world.repo.get_credit(CLINIC, PATIENT, "usd").balance == 1500


def test_a_failed_portal_attempt_can_be_retried_and_succeed(world: World) -> None:
    invoice = world.invoice(5000)
    payment = pay(world, PATIENT_CALLER, card(invoice.id))
    intent_id = str(payment.stripe_payment_intent_id)
    declined = world.gateway.set_intent(
        intent_id,
        "requires_payment_method",
        last_error=Failure("card_declined", "generic_decline", "Your card was declined."),
    )
    failed = world.payments.record_failure(link_of(payment), declined)
    assert failed is not None
    assert failed.status is PaymentStatus.FAILED

    settled = confirm_in_portal(world, payment)

    assert settled.status is PaymentStatus.SUCCEEDED
    assert settled.failure is None
    assert world.stored_invoice(invoice.id).status is InvoiceStatus.PAID


# -- saving a card ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "consent",
    [
        pytest.param(None, id="no-consent"),
        pytest.param(ConsentGiven(False, WORDING), id="not-agreed"),
        pytest.param(ConsentGiven(True, "2020-01-01"), id="outdated-wording"),
    ],
)
def test_saving_a_card_needs_consent_to_the_current_wording(
    world: World, consent: ConsentGiven | None
) -> None:
    invoice = world.invoice(5000)
    with pytest.raises(ConsentRequiredError):
        pay(world, PATIENT_CALLER, card(invoice.id, save_card=True, consent=consent))
    assert world.repo.all_payments() == []
    assert world.stripe.requested == []


def test_saving_a_card_with_consent_records_who_agreed_and_tells_stripe(world: World) -> None:
    invoice = world.invoice(5000)
    payment = pay(
        world,
        PATIENT_CALLER,
        card(invoice.id, save_card=True, consent=ConsentGiven(True, WORDING)),
    )
    assert payment.consent is not None
    assert (payment.consent.agreed, payment.consent.wording_version) == (True, WORDING)
    assert payment.consent.by == PATIENT_CALLER.actor()
    [call] = world.gateway.calls_named("create_payment_intent")
    assert call.args["save_card"] is True


# -- processing fee pass-through --------------------------------------------------------------


def test_a_passed_on_fee_is_charged_on_top_and_never_applied_to_the_invoice() -> None:
    world = make_world(pass_processing_fees=True)
    invoice = world.invoice(10000)
    payment = pay(world, PATIENT_CALLER, card(invoice.id))

    rate = world.repo.settings[CLINIC].fee_schedule["card"]
    assert payment.fee_amount == fee_for(10000, rate.percent, rate.fixed) == 330
    assert payment.charge_amount == 10330
    [call] = world.gateway.calls_named("create_payment_intent")
    assert call.args["amount"] == 10330

    settled = confirm_in_portal(world, payment)

    assert (settled.amount_received, settled.amount, settled.fee_amount) == (10330, 10000, 330)
    assert settled.allocations == [Allocation(invoice.id, 10000)]
    assert settled.credit_amount == 0
    stored = world.stored_invoice(invoice.id)
    assert (stored.amount_paid, stored.status) == (10000, InvoiceStatus.PAID)
    assert world.repo.ledger_entries(CLINIC, PATIENT) == []


def test_cash_carries_no_processing_fee() -> None:
    world = make_world(pass_processing_fees=True)
    payment = pay(world, STAFF, cash(world.invoice(10000).id))
    assert (payment.fee_amount, payment.amount_received) == (0, 10000)


# -- credit currency --------------------------------------------------------------------------


def test_credit_is_never_a_sum_of_two_currencies(world: World) -> None:
    usd = world.invoice(1000)
    cad = world.invoice(1000, currency="cad")
    pay(world, STAFF, PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(usd.id)], 1500))
    try:
        pay(
            world,
            STAFF,
            PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(cad.id)], 1500),
        )
    except DomainError:
        return  # refusing a second currency of credit is one way to keep the balance whole
    entries = world.repo.ledger_entries(CLINIC, PATIENT)
    for currency in ("usd", "cad"):
        credit = world.repo.get_credit(CLINIC, PATIENT, currency)
        in_currency = [e.amount for e in entries if e.currency == currency]
        assert credit.balance == sum(in_currency) == 500, (currency, credit)


# -- the money invariant under random interleavings ---------------------------------------------


def assert_money_invariant(world: World, in_doubt: set[str]) -> None:
    """DESIGN.md: every amount captured is applied to invoices, held as credit, or recorded as
    fee; no invoice is paid beyond its total; nothing is counted twice, nothing lost."""
    repo = world.repo
    payments = {p.id: p for p in repo.all_payments()}
    refs_by_payment: dict[str, list[Allocation]] = {}
    for (_, _), invoices in repo.invoices.items():
        for inv in invoices.values():
            refs = inv.payments
            assert inv.amount_paid == sum(r.amount for r in refs), inv.id
            assert 0 <= inv.amount_paid <= inv.total, inv.id
            # A refund's line and the line of its failure are two movements of one refund id.
            moves = {(r.payment_id, r.method) for r in refs}
            assert len(moves) == len(refs), f"{inv.id} counted twice"
            if inv.status is InvoiceStatus.VOID:
                assert inv.amount_paid == 0
            else:
                assert inv.status is status_after(inv.total, inv.amount_paid), inv.id
            for ref in refs:
                refs_by_payment.setdefault(ref.payment_id, []).append(
                    Allocation(inv.id, ref.amount)
                )
    ledger = {key: list(entries) for key, entries in repo.ledger.items()}
    for p in payments.values():
        credited = sum(
            e.amount
            for e in ledger.get((p.clinic_id, p.patient_id), [])
            if e.payment_id == p.id
            and e.type in (LedgerEntryType.TOPUP, LedgerEntryType.OVERPAYMENT)
        )
        if p.status is PaymentStatus.SUCCEEDED:
            applied = sum(a.amount for a in p.allocations)
            assert p.amount_received == applied + p.credit_amount + p.fee_amount, p.id
            assert p.amount_received == p.amount + p.fee_amount, p.id
            assert sorted(refs_by_payment.get(p.id, []), key=str) == sorted(p.allocations, key=str)
            assert credited == p.credit_amount, p.id
            if p.method is PaymentMethodType.CARD:
                intent = world.gateway.intents[str(p.stripe_payment_intent_id)]
                assert intent.amount_received == p.amount_received, p.id
        else:
            assert p.amount_received == 0, p.id
            assert p.id not in refs_by_payment, f"{p.id} ({p.status}) applied to an invoice"
            assert credited == 0, f"{p.id} ({p.status}) credited"
    for key, entries in ledger.items():
        for currency in {e.currency for e in entries}:
            in_currency = [e for e in entries if e.currency == currency]
            credit = repo.get_credit(*key, currency)
            assert credit.balance == sum(e.amount for e in in_currency), key
            assert credit.version == len(in_currency), key
    for intent in world.gateway.intents.values():
        if intent.status != "succeeded":
            continue
        # Captured at Stripe: settled here, or still in doubt (the answer was lost).
        owner = payments[intent.metadata["payment_id"]]
        assert owner.status is PaymentStatus.SUCCEEDED or owner.id in in_doubt, owner.id


PATIENTS = st.sampled_from([PATIENT, OTHER_PATIENT])
SAVED_CARD_OUTCOMES = st.sampled_from(
    ["succeed", "decline", "decline_error_only", "requires_action", "lost", "lost_after_create"]
)


class PaymentsMachine(RuleBasedStateMachine):
    """Random invoices and payments, in random orders, with Stripe's answers lost or late."""

    def __init__(self) -> None:
        super().__init__()
        # Ids carry the time and random bits, and invoices are listed in id order: a replayed
        # example would see another order and draw differently. Ids count up instead.
        counter = itertools.count()

        def sequential_id(prefix: str, now_ms: int | None = None) -> str:
            return f"{prefix}_{next(counter):026d}"

        self._id_patches = [
            mock.patch(f"{module}.new_id", sequential_id)
            for module in (
                "clinic_payments.domain.invoices.rules",
                "clinic_payments.domain.payments.service",
                "clinic_payments.domain.refunds.service",
                __name__,
            )
        ]
        for patch in self._id_patches:
            patch.start()
        self.world = make_world()
        self.awaiting: list[Payment] = []  # card payments waiting for the cardholder
        self.in_doubt: dict[str, tuple[str, PaymentRequest]] = {}  # lost answers
        self.settled_cards: list[Payment] = []

    def teardown(self) -> None:
        for patch in self._id_patches:
            patch.stop()

    @initialize(pass_fees=st.booleans())
    def configure(self, pass_fees: bool) -> None:
        settings = self.world.repo.settings[CLINIC]
        settings.pass_processing_fees = pass_fees
        settings.allow_credit_topups = True

    # -- helpers ------------------------------------------------------------------------

    def payable(self, patient_id: str) -> list[str]:
        return [i.id for i in self.world.repo.all_invoices(CLINIC, patient_id) if i.is_payable]

    def request(
        self, data: st.DataObject, patient_id: str, method: PaymentMethodType
    ) -> PaymentRequest:
        payable = self.payable(patient_id)
        allocate: bool = data.draw(st.booleans(), label="allocate")
        if payable and allocate:
            chosen = data.draw(st.lists(st.sampled_from(payable), min_size=1, unique=True))
            allocations = []
            for invoice_id in chosen:
                due = self.world.stored_invoice(invoice_id, patient_id).balance_due
                allocations.append(
                    RequestedAllocation(invoice_id, data.draw(st.none() | st.integers(1, due)))
                )
            extra = data.draw(st.none() | st.integers(0, 5_000), label="extra")
            amount = None
            if extra is not None:
                amount = extra + sum(
                    a.amount or self.world.stored_invoice(a.invoice_id, patient_id).balance_due
                    for a in allocations
                )
            return PaymentRequest(method, allocations, amount)
        return PaymentRequest(method, None, data.draw(st.integers(1, 30_000), label="amount"))

    def refused_as_too_small(self, patient_id: str, attempt: Any) -> bool:
        """Run a card payment; True if it was refused under Stripe's minimum, which must have
        changed nothing (no payment, no intent)."""
        payments = len(self.world.repo.all_payments(CLINIC, patient_id))
        intents = len(self.world.gateway.intents)
        refusal: list[AmountTooSmallError] = []
        try:
            attempt()
        except AmountTooSmallError as exc:
            refusal.append(exc)
        if not refusal:
            return False
        event("a card charge under Stripe's minimum was refused")
        assert refusal[0].details[0]["charge"] < refusal[0].details[0]["minimum"]
        assert len(self.world.repo.all_payments(CLINIC, patient_id)) == payments
        assert len(self.world.gateway.intents) == intents
        return True

    def settle_by_webhook(self, payment: Payment, intent_id: str) -> None:
        intent = self.world.gateway.retrieve_payment_intent(intent_id)
        kind = {
            "succeeded": "payment_intent.succeeded",
            "requires_payment_method": "payment_intent.payment_failed",
        }.get(intent.status, "payment_intent.processing")
        self.world.deliver(intent_event(intent, kind))

    # -- rules --------------------------------------------------------------------------

    @rule(patient=PATIENTS, amounts=st.lists(st.integers(1, 20_000), min_size=1, max_size=3))
    def create_invoice(self, patient: str, amounts: list[int]) -> None:
        self.world.invoice(*amounts, patient_id=patient)

    @rule(data=st.data(), patient=PATIENTS)
    def void_an_invoice(self, data: st.DataObject, patient: str) -> None:
        invoices = self.world.repo.all_invoices(CLINIC, patient)
        if not invoices:
            return
        invoice = data.draw(st.sampled_from(invoices))
        try:
            self.world.invoices.void(CLINIC, patient, invoice.id)
        except ConflictError:
            assert invoice.amount_paid > 0 or invoice.status is InvoiceStatus.VOID
        else:
            assert invoice.amount_paid == 0

    @rule(data=st.data(), patient=PATIENTS)
    def pay_cash(self, data: st.DataObject, patient: str) -> None:
        request = self.request(data, patient, PaymentMethodType.CASH)
        payment = pay(self.world, STAFF, request, patient_id=patient)
        assert payment.status is PaymentStatus.SUCCEEDED

    @rule(data=st.data(), patient=PATIENTS, outcome=SAVED_CARD_OUTCOMES)
    def charge_a_saved_card(self, data: st.DataObject, patient: str, outcome: str) -> None:
        base = self.request(data, patient, PaymentMethodType.CARD)
        request = replace(base, payment_method_id=self.world.saved_card(patient), off_session=True)
        outcomes: dict[str, Outcome] = {
            "succeed": Succeed(),
            "decline": Decline(),
            "decline_error_only": Decline(with_intent=False),
            "requires_action": RequiresAction(),
            "lost": Unavailable(),
            "lost_after_create": Unavailable(after_create=True),
        }
        self.world.gateway.script(outcomes[outcome])
        payment_id = new_id("pay")
        raised: list[DomainError] = []

        def attempt() -> None:
            try:
                pay(self.world, STAFF, request, patient_id=patient, payment_id=payment_id)
            except (
                CardDeclinedError,
                PaymentRequiresActionError,
                PaymentProviderUnavailableError,
            ) as exc:
                raised.append(exc)

        if self.refused_as_too_small(patient, attempt):
            self.world.gateway.forget_script()  # the outcome scripted for it stays unused
            return
        payment = self.world.stored_payment(payment_id, patient)
        expected = {
            "succeed": (None, PaymentStatus.SUCCEEDED),
            "decline": (CardDeclinedError, PaymentStatus.FAILED),
            "decline_error_only": (CardDeclinedError, PaymentStatus.FAILED),
            "requires_action": (PaymentRequiresActionError, PaymentStatus.REQUIRES_ACTION),
            "lost": (PaymentProviderUnavailableError, PaymentStatus.PROCESSING),
            "lost_after_create": (PaymentProviderUnavailableError, PaymentStatus.PROCESSING),
        }[outcome]
        assert (type(raised[0]) if raised else None, payment.status) == expected
        if payment.status is PaymentStatus.SUCCEEDED:
            self.settled_cards.append(payment)
        elif payment.status is PaymentStatus.REQUIRES_ACTION:
            self.awaiting.append(payment)
        elif payment.status is PaymentStatus.PROCESSING:
            self.in_doubt[payment_id] = (patient, request)

    @precondition(lambda self: self.in_doubt)
    @rule(data=st.data(), by_webhook=st.booleans())
    def resolve_a_lost_answer(self, data: st.DataObject, by_webhook: bool) -> None:
        payment_id = data.draw(st.sampled_from(sorted(self.in_doubt)))
        patient, request = self.in_doubt[payment_id]
        captured = [
            i for i in self.world.gateway.intents.values() if i.metadata["payment_id"] == payment_id
        ]
        if by_webhook and captured:
            # The request died; Stripe's webhook names the payment in the intent's metadata.
            self.settle_by_webhook(self.world.stored_payment(payment_id, patient), captured[0].id)
            payment = self.world.stored_payment(payment_id, patient)
        else:
            payment = pay(self.world, STAFF, request, patient_id=patient, payment_id=payment_id)
        assert payment.status is PaymentStatus.SUCCEEDED
        del self.in_doubt[payment_id]
        self.settled_cards.append(payment)

    @rule(data=st.data(), patient=PATIENTS)
    def start_a_portal_payment(self, data: st.DataObject, patient: str) -> None:
        request = self.request(data, patient, PaymentMethodType.CARD)
        started: list[Payment] = []
        if self.refused_as_too_small(
            patient,
            lambda: started.append(
                pay(self.world, patient_caller(patient), request, patient_id=patient)
            ),
        ):
            return
        [payment] = started
        assert payment.status is PaymentStatus.REQUIRES_PAYMENT_METHOD
        self.awaiting.append(payment)

    @precondition(lambda self: self.awaiting)
    @rule(data=st.data(), succeeds=st.booleans(), by_webhook=st.booleans())
    def the_cardholder_finishes(
        self, data: st.DataObject, succeeds: bool, by_webhook: bool
    ) -> None:
        payment = data.draw(st.sampled_from(self.awaiting))
        intent_id = str(payment.stripe_payment_intent_id)
        if succeeds:
            self.world.gateway.set_intent(intent_id, "succeeded")
        else:
            self.world.gateway.set_intent(
                intent_id,
                "requires_payment_method",
                last_error=Failure("card_declined", "do_not_honor", "Declined."),
            )
        current = self.world.stored_payment(payment.id, payment.patient_id)
        if by_webhook or current.status is PaymentStatus.FAILED:
            self.settle_by_webhook(payment, intent_id)
        else:
            # The request that started it died after Stripe answered; its retry (the same
            # payment id, released by the idempotency layer) asks Stripe again.
            with contextlib.suppress(CardDeclinedError):
                pay(
                    self.world,
                    patient_caller(payment.patient_id),
                    PaymentRequest(PaymentMethodType.CARD),
                    patient_id=payment.patient_id,
                    payment_id=payment.id,
                )
        after = self.world.stored_payment(payment.id, payment.patient_id)
        if succeeds:
            assert after.status is PaymentStatus.SUCCEEDED
            self.awaiting.remove(payment)
            self.settled_cards.append(after)
        else:
            assert after.status is PaymentStatus.FAILED
            assert after.failure is not None

    @precondition(lambda self: self.settled_cards)
    @rule(data=st.data(), via=st.sampled_from(["settle", "webhook", "retry"]))
    def a_duplicate_settlement_changes_nothing(self, data: st.DataObject, via: str) -> None:
        payment = data.draw(st.sampled_from(self.settled_cards))
        before = state_of(self.world)
        intent_id = str(payment.stripe_payment_intent_id)
        if via == "settle":
            intent = self.world.gateway.retrieve_payment_intent(intent_id)
            self.world.payments.settle_intent(link_of(payment), intent)
        elif via == "webhook":
            self.settle_by_webhook(payment, intent_id)
        else:
            pay(
                self.world,
                STAFF,
                PaymentRequest(PaymentMethodType.CARD),
                patient_id=payment.patient_id,
                payment_id=payment.id,
            )
        assert state_of(self.world) == before

    @precondition(lambda self: self.awaiting)
    @rule(data=st.data(), rival=st.sampled_from(["card", "cash"]))
    def a_rival_payment_lands_during_settlement(self, data: st.DataObject, rival: str) -> None:
        """Between settlement's read of the invoices and its transaction, another payment to
        the same patient settles: the transaction must fail its conditions and re-plan."""
        payment = data.draw(st.sampled_from(self.awaiting))
        patient = payment.patient_id
        others = [p for p in self.awaiting if p.patient_id == patient and p.id != payment.id]
        world = self.world
        raced: list[str] = []

        def rival_settles(write: SettlementWrite) -> None:
            world.repo.before_settle = None  # once
            seen = {c.invoice_id: c.seen_amount_paid for c in write.invoices}
            if rival == "card" and others:
                other = data.draw(st.sampled_from(others), label="rival")
                intent_id = str(other.stripe_payment_intent_id)
                world.gateway.set_intent(intent_id, "succeeded")
                settled = world.payments.settle_intent(
                    link_of(other), world.gateway.retrieve_payment_intent(intent_id)
                )
                assert settled is not None
                assert settled.status is PaymentStatus.SUCCEEDED
                self.awaiting.remove(other)
                self.settled_cards.append(settled)
            elif payment.allocations:
                target = payment.allocations[0].invoice_id
                if world.stored_invoice(target, patient).is_payable:
                    pay(world, STAFF, cash(target), patient_id=patient)
            raced.extend(
                invoice_id
                for invoice_id, paid in seen.items()
                if world.stored_invoice(invoice_id, patient).amount_paid != paid
            )

        stale_before = world.repo.stale_writes
        world.repo.before_settle = rival_settles
        intent_id = str(payment.stripe_payment_intent_id)
        world.gateway.set_intent(intent_id, "succeeded")
        settled = world.payments.settle_intent(
            link_of(payment), world.gateway.retrieve_payment_intent(intent_id)
        )
        world.repo.before_settle = None
        assert settled is not None
        assert settled.status is PaymentStatus.SUCCEEDED
        if raced:
            event("a rival payment raced the settlement")
            assert world.repo.stale_writes > stale_before  # the stale write was retried
        self.awaiting.remove(payment)
        self.settled_cards.append(settled)

    # -- account credit (issue 4): top-ups, applications, adjustments ------------------------

    @rule(patient=PATIENTS, amount=st.integers(1, 20_000))
    def top_up_with_a_saved_card(self, patient: str, amount: int) -> None:
        self.world.gateway.script(Succeed())
        request = PaymentRequest(
            PaymentMethodType.CARD,
            amount=amount,
            payment_method_id=self.world.saved_card(patient),
            location_id="loc_main",
            purpose=PaymentPurpose.CREDIT_TOPUP,
        )
        before = self.world.repo.get_credit(CLINIC, patient, "usd").balance
        done: list[Payment] = []
        if self.refused_as_too_small(
            patient,
            lambda: done.append(
                pay(self.world, patient_caller(patient), request, patient_id=patient)
            ),
        ):
            self.world.gateway.forget_script()
            return
        [payment] = done
        assert payment.status is PaymentStatus.SUCCEEDED
        assert self.world.repo.get_credit(CLINIC, patient, "usd").balance == before + amount
        self.settled_cards.append(payment)

    @rule(data=st.data(), patient=PATIENTS, ask=st.none() | st.integers(1, 30_000))
    def apply_credit(self, data: st.DataObject, patient: str, ask: int | None) -> None:
        payable = self.payable(patient)
        if not payable:
            return
        invoice_id = data.draw(st.sampled_from(payable))
        invoice = self.world.stored_invoice(invoice_id, patient)
        before = self.world.repo.get_credit(CLINIC, patient, invoice.currency).balance
        try:
            after = self.world.credit.apply(STAFF, CLINIC, patient, invoice_id, ask, new_id("cra"))
        except InsufficientCreditError:
            assert (ask is None and before == 0) or (ask is not None and ask > before)
            return
        except ValidationError:
            assert ask is not None
            assert ask > invoice.balance_due
            return
        taken = after.amount_paid - invoice.amount_paid
        expected = min(before, invoice.balance_due) if ask is None else ask
        assert taken == expected
        assert self.world.repo.get_credit(CLINIC, patient, invoice.currency).balance == (
            before - taken
        )

    @rule(patient=PATIENTS, amount=st.integers(-5_000, 5_000).filter(bool))
    def adjust_credit(self, patient: str, amount: int) -> None:
        before = self.world.repo.get_credit(CLINIC, patient, "usd").balance
        try:
            self.world.credit.adjust(STAFF, CLINIC, patient, amount, "test", "usd", new_id("adj"))
        except InsufficientCreditError:
            assert before + amount < 0
            return
        assert self.world.repo.get_credit(CLINIC, patient, "usd").balance == before + amount

    # -- refunds (issue 8): all of it taken back, before Stripe, whatever lands meanwhile -----

    @rule(
        data=st.data(),
        ask=st.none() | st.integers(1, 30_000),
        credit_first=st.booleans(),
        rival=st.sampled_from(["none", "apply", "adjust", "stripe_refuses"]),
    )
    def refund(self, data: st.DataObject, ask: int | None, credit_first: bool, rival: str) -> None:
        world = self.world
        candidates = sorted(
            (
                p
                for p in world.repo.all_payments()
                if p.status is PaymentStatus.SUCCEEDED
                and p.amount_received > p.refunded_amount
                and p.dispute is None
            ),
            key=lambda p: p.id,
        )
        if not candidates:
            return
        payment = data.draw(st.sampled_from(candidates))
        patient = payment.patient_id

        def rival_moves_while_stripe_refunds() -> None:
            world.gateway.before_refund = None  # once
            with contextlib.suppress(DomainError):
                if rival == "apply" and self.payable(patient):
                    target = self.payable(patient)[0]
                    world.credit.apply(STAFF, CLINIC, patient, target, None, new_id("cra"))
                elif rival == "adjust":
                    world.credit.adjust(
                        STAFF, CLINIC, patient, -500, "race", payment.currency, new_id("adj")
                    )

        if rival == "stripe_refuses":
            world.gateway.refuse_refunds.append(PaymentFailedError("Refused by Stripe."))
        else:
            world.gateway.before_refund = rival_moves_while_stripe_refunds
        service = RefundService(world.repo, world.stripe, world.clock)
        try:
            after = service.refund(
                STAFF,
                CLINIC,
                patient,
                payment.id,
                ask,
                "requested_by_customer",
                new_id("ref"),
                take_credit_first=credit_first,
            )
        except ConflictError:
            event("a refund was refused (409)")
            assert world.stored_payment(payment.id, patient).refunds == payment.refunds
            return
        except PaymentFailedError:
            assert rival == "stripe_refuses"
            assert payment.method is PaymentMethodType.CARD
            # Released: it counts for nothing, and gave back exactly what it reserved.
            stored = world.stored_payment(payment.id, patient)
            assert stored.refunded_amount == payment.refunded_amount
            return
        finally:
            world.gateway.before_refund = None
            world.gateway.refuse_refunds.clear()
        event(f"a refund went through ({payment.method.value})")
        wanted = payment.amount_received - payment.refunded_amount if ask is None else ask
        assert after.refunded_amount == payment.refunded_amount + wanted
        assert [r.uncovered for r in after.refunds] == [0] * len(after.refunds)

    @invariant()
    def money_is_neither_lost_nor_counted_twice(self) -> None:
        assert_money_invariant(self.world, set(self.in_doubt))
        for patient in (PATIENT, OTHER_PATIENT):
            differences = audit_account(
                self.world.repo.all_invoices(CLINIC, patient),
                self.world.repo.all_payments(CLINIC, patient),
                self.world.repo.all_ledger(CLINIC, patient),
                self.world.repo.list_credits(CLINIC, patient),
            )
            assert differences == [], differences


PaymentsMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
test_the_money_invariant_holds_under_random_interleavings = PaymentsMachine.TestCase
