"""Saved cards on the fakes: consent first, a SetupIntent reconciled once by its webhook, a card
listed only when Stripe has it and removed only when it is this patient's."""

from __future__ import annotations

from dataclasses import replace
from unittest import mock

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.errors import (
    ConflictError,
    ConsentRequiredError,
    NotFoundError,
    PaymentProviderUnavailableError,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import (
    AccountStatus,
    Actor,
    CardSetup,
    PaymentMethodType,
    PaymentStatus,
    Role,
    SetupIntentSnapshot,
)
from clinic_payments.domain.payments.rules import ConsentGiven, PaymentRequest
from clinic_payments.domain.webhooks import WebhookOutcome

from tests.unit.fakes import (
    ACCOUNT,
    CLINIC,
    OTHER_PATIENT,
    PATIENT,
    STAFF,
    World,
    intent_event,
    make_world,
    patient_caller,
    setup_event,
    stripe_account,
)

pytestmark = pytest.mark.unit

WORDING = "2026-11-01"  # ClinicSettings' default card-on-file wording version
AGREED = ConsentGiven(True, WORDING)


@pytest.fixture
def world() -> World:
    return make_world()


def start(world: World, caller=None, patient_id: str = PATIENT, setup_id: str = ""):
    return world.saved_cards.start_setup(
        caller or patient_caller(patient_id), CLINIC, patient_id, AGREED, setup_id or new_id("cset")
    )


def saved_without_paying(world: World, patient_id: str = PATIENT, caller=None) -> str:
    """Start a setup, let the portal confirm it, deliver setup_intent.succeeded: the pm id."""
    _setup, intent = start(world, caller, patient_id)
    done = world.gateway.confirm_setup(intent.id)
    assert world.deliver(setup_event(done)) is WebhookOutcome.PROCESSED
    assert done.payment_method is not None
    return done.payment_method


def card_payment(world: World, pm_id: str, caller=STAFF, **fields):
    invoice = world.invoice(2500)
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(invoice.id)],
        payment_method_id=pm_id,
        **fields,
    )
    return world.payments.create(caller, CLINIC, PATIENT, request, new_id("pay"))


# -- adding a card ----------------------------------------------------------------------------


def test_consent_is_recorded_before_the_setup_intent_with_ids_only_in_its_metadata(world):
    setup, intent = start(world, setup_id="cset_1")
    stored = world.repo.get_card_setup(CLINIC, PATIENT, "cset_1")
    assert stored == setup
    assert setup.consent.by == Actor("patient-1", Role.PATIENT)
    assert (setup.consent.agreed, setup.consent.wording_version) == (True, WORDING)
    assert setup.consent.at == world.clock.now()
    [call] = world.gateway.calls_named("create_setup_intent")
    assert call.args == {
        "customer": setup.customer_id,
        "metadata": {"clinic_id": CLINIC, "patient_id": PATIENT, "setup_id": "cset_1"},
        "idempotency_key": "cset_1:create",
    }
    assert intent.client_secret is not None
    assert intent.client_secret.startswith(intent.id + "_secret_")


@pytest.mark.parametrize(
    "given",
    [None, ConsentGiven(False, WORDING), ConsentGiven(True, "2020-01-01")],
    ids=["missing", "not-agreed", "old-wording"],
)
def test_adding_a_card_without_current_consent_writes_nothing_and_calls_no_stripe(world, given):
    with pytest.raises(ConsentRequiredError):
        world.saved_cards.start_setup(patient_caller(), CLINIC, PATIENT, given, "cset_1")
    assert world.repo.get_card_setup(CLINIC, PATIENT, "cset_1") is None
    assert world.gateway.calls == []


def test_the_patients_customer_is_the_one_payments_use(world):
    customer = world.customer_for(PATIENT)  # made by an earlier payment
    setup, _ = start(world)
    assert setup.customer_id == customer
    assert len(world.gateway.calls_named("create_customer")) == 1  # none made by the setup


def test_a_first_setup_creates_the_customer_once_and_payments_reuse_it(world):
    setup, _ = start(world)
    start(world)  # a second card
    assert len(world.gateway.calls_named("create_customer")) == 1
    assert world.repo.get_customer_id(CLINIC, PATIENT, ACCOUNT) == setup.customer_id


def test_a_retried_setup_returns_the_same_setup_intent(world):
    first = start(world, setup_id="cset_retry")
    second = start(world, setup_id="cset_retry")
    assert first == second
    assert len(world.stripe.gateway(CLINIC, ACCOUNT).setups) == 1


def test_no_customer_no_record_when_stripe_is_down_before_anything(world):
    world.gateway.unavailable = True
    with pytest.raises(PaymentProviderUnavailableError):
        start(world, setup_id="cset_down")
    assert world.repo.get_card_setup(CLINIC, PATIENT, "cset_down") is None
    assert world.repo.get_customer_id(CLINIC, PATIENT, ACCOUNT) is None


def test_stripe_down_at_the_setup_intent_keeps_the_consent_and_the_retry_resumes(world):
    world.customer_for(PATIENT)
    world.gateway.unavailable = True
    with pytest.raises(PaymentProviderUnavailableError):
        start(world, setup_id="cset_later")
    kept = world.repo.get_card_setup(CLINIC, PATIENT, "cset_later")
    assert kept is not None  # consent recorded before Stripe was asked
    world.gateway.unavailable = False
    world.clock.advance()
    again, intent = start(world, setup_id="cset_later")
    assert again == kept  # the consent given the first time, not a new one
    assert list(world.gateway.setups) == [intent.id]


def test_a_setup_written_by_a_concurrent_attempt_is_taken_over(world):
    earlier = replace(start(world, setup_id="cset_race")[0], created_at="2026-01-01T00:00:00.000Z")
    world.repo.card_setups[(CLINIC, PATIENT)]["cset_race"] = earlier
    # This attempt read before the other one wrote, so it finds its put refused.
    with mock.patch.object(world.repo, "get_card_setup", side_effect=[None, earlier]):
        again, _ = start(world, setup_id="cset_race")
    assert again == earlier


def test_a_clinic_without_an_active_account_cannot_save_cards(world):
    world.repo.put_account(replace(stripe_account(), status=AccountStatus.INACTIVE))
    with pytest.raises(ConflictError):
        start(world)
    assert world.gateway.calls == []


def test_cards_are_saved_in_the_portal_default_account(world):
    world.repo.put_account(replace(stripe_account(), portal_default=False))
    world.repo.put_account(replace(stripe_account("acct_portal"), admin_default=False))
    setup, _ = start(world, caller=STAFF)
    assert setup.account_id == "acct_portal"


# -- setup_intent.succeeded -------------------------------------------------------------------


def test_the_webhook_moves_the_consent_onto_the_card_it_saved(world):
    setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id, last4="1881")
    assert world.deliver(setup_event(done)) is WebhookOutcome.PROCESSED

    [saved] = world.saved_cards.list(CLINIC, PATIENT)
    assert (saved.card.id, saved.card.last4) == (done.payment_method, "1881")
    assert saved.consent == setup.consent
    [record] = world.repo.card_consents(CLINIC, PATIENT)
    assert (record.setup_id, record.payment_id, record.account_id) == (setup.id, None, ACCOUNT)


def test_a_repeated_setup_event_changes_nothing(world):
    _setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id)
    event = setup_event(done)
    world.deliver(event)
    before = world.repo.card_consents(CLINIC, PATIENT)
    assert world.deliver(event) is WebhookOutcome.DUPLICATE
    assert world.deliver(setup_event(done)) is WebhookOutcome.PROCESSED  # another event id
    assert world.repo.card_consents(CLINIC, PATIENT) == before


def _stranger(world: World, **changes) -> SetupIntentSnapshot:
    _setup, intent = start(world)
    return replace(world.gateway.confirm_setup(intent.id), **changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata": {}},
        {"metadata": {"clinic_id": "clinic_b", "patient_id": PATIENT, "setup_id": "x"}},
        {"metadata": {"clinic_id": CLINIC, "patient_id": PATIENT, "setup_id": "cset_unknown"}},
        {"customer": "cus_someone_else"},
        {"status": "requires_payment_method", "payment_method": None},
    ],
    ids=["no-metadata", "other-clinic", "unknown-setup", "other-customer", "not-succeeded"],
)
def test_a_setup_intent_that_is_not_one_of_ours_is_ignored(world, changes):
    stranger = _stranger(world, **changes)
    assert world.deliver(setup_event(stranger)) is WebhookOutcome.IGNORED
    assert world.repo.card_consents(CLINIC, PATIENT) == []


def test_a_setup_event_from_another_account_of_the_clinic_is_ignored(world):
    world.repo.put_account(replace(stripe_account("acct_other"), portal_default=False))
    world.secrets.put_keys(CLINIC, "acct_other", world.secrets.keys[(CLINIC, ACCOUNT)])
    _setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id)
    assert world.deliver(setup_event(done), account_id="acct_other") is WebhookOutcome.IGNORED
    assert world.repo.card_consents(CLINIC, PATIENT) == []


def test_a_failed_consent_write_is_retried_by_stripes_redelivery(world):
    _setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id)
    event = setup_event(done)
    world.repo.fail_next("attach_card_consent", RuntimeError("DynamoDB unavailable"))
    with pytest.raises(RuntimeError):
        world.deliver(event)
    assert not world.repo.event_processed(f"{CLINIC}#{ACCOUNT}", event.id)  # 5xx: redelivered
    assert world.deliver(event) is WebhookOutcome.PROCESSED
    assert len(world.repo.card_consents(CLINIC, PATIENT)) == 1


def test_a_setup_reconciled_already_is_not_reconciled_again(world):
    setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id)
    reconciled = replace(setup, payment_method_id="pm_elsewhere")
    world.repo.card_setups[(CLINIC, PATIENT)][setup.id] = reconciled
    assert world.deliver(setup_event(done)) is WebhookOutcome.PROCESSED
    assert world.repo.card_consents(CLINIC, PATIENT) == []


# -- saved while paying --------------------------------------------------------------------------


def test_a_card_saved_while_paying_gets_its_consent_record_when_the_payment_settles(world):
    invoice = world.invoice(4000)
    request = PaymentRequest(
        PaymentMethodType.CARD,
        [RequestedAllocation(invoice.id)],
        save_card=True,
        consent=AGREED,
    )
    payment = world.payments.create(patient_caller(), CLINIC, PATIENT, request, "pay_save")
    assert world.repo.card_consents(CLINIC, PATIENT) == []  # not before the payment succeeds
    pm_id = world.gateway.add_card(payment.stripe_customer_id)
    card = world.gateway.cards[pm_id][0]
    intent = world.gateway.set_intent(
        str(payment.stripe_payment_intent_id), "succeeded", payment_method=card
    )
    world.deliver(intent_event(intent))

    [record] = world.repo.card_consents(CLINIC, PATIENT)
    assert (record.payment_method_id, record.payment_id, record.setup_id) == (
        pm_id,
        "pay_save",
        None,
    )
    assert record.consent == payment.consent
    [saved] = world.saved_cards.list(CLINIC, PATIENT)
    assert saved.consent == payment.consent


def test_a_payment_without_save_card_records_no_consent(world):
    invoice = world.invoice(4000)
    request = PaymentRequest(PaymentMethodType.CARD, [RequestedAllocation(invoice.id)])
    payment = world.payments.create(patient_caller(), CLINIC, PATIENT, request, "pay_once")
    intent = world.gateway.set_intent(str(payment.stripe_payment_intent_id), "succeeded")
    world.deliver(intent_event(intent))
    assert world.repo.card_consents(CLINIC, PATIENT) == []


def test_a_failed_payment_that_would_have_saved_the_card_records_no_consent(world):
    invoice = world.invoice(4000)
    request = PaymentRequest(
        PaymentMethodType.CARD, [RequestedAllocation(invoice.id)], save_card=True, consent=AGREED
    )
    payment = world.payments.create(patient_caller(), CLINIC, PATIENT, request, "pay_fail")
    intent = world.gateway.set_intent(str(payment.stripe_payment_intent_id), "canceled")
    world.deliver(intent_event(intent, "payment_intent.canceled"))
    assert world.repo.card_consents(CLINIC, PATIENT) == []


# -- listing --------------------------------------------------------------------------------------


def test_a_patient_without_a_stripe_customer_lists_nothing_and_stripe_is_not_asked(world):
    assert world.saved_cards.list(CLINIC, PATIENT) == []
    assert world.gateway.calls == []


def test_a_card_without_a_consent_record_is_listed_with_none(world):
    pm_id = world.saved_card()  # attached at Stripe some other way
    [saved] = world.saved_cards.list(CLINIC, PATIENT)
    assert (saved.card.id, saved.consent) == (pm_id, None)


def test_only_the_patients_own_cards_are_listed(world):
    mine = saved_without_paying(world)
    theirs = saved_without_paying(world, OTHER_PATIENT)
    assert [s.card.id for s in world.saved_cards.list(CLINIC, PATIENT)] == [mine]
    assert [s.card.id for s in world.saved_cards.list(CLINIC, OTHER_PATIENT)] == [theirs]


# -- charging and removing ---------------------------------------------------------------


def test_a_card_saved_without_paying_can_be_charged_off_session_by_staff(world):
    pm_id = saved_without_paying(world)
    payment = card_payment(world, pm_id, off_session=True)
    assert payment.status is PaymentStatus.SUCCEEDED
    assert payment.payment_method is not None
    assert payment.payment_method.id == pm_id


def test_removing_a_card_detaches_it_and_forgets_its_consent(world):
    pm_id = saved_without_paying(world)
    world.saved_cards.remove(CLINIC, PATIENT, pm_id)
    assert world.gateway.cards[pm_id][1] is None
    assert world.repo.card_consents(CLINIC, PATIENT) == []
    assert world.saved_cards.list(CLINIC, PATIENT) == []


def test_a_removed_card_cannot_be_charged_and_no_intent_is_created(world):
    pm_id = saved_without_paying(world)
    world.saved_cards.remove(CLINIC, PATIENT, pm_id)
    with pytest.raises(NotFoundError):
        card_payment(world, pm_id)
    assert world.gateway.intent_ids() == []  # Stripe refused the detached card


def test_a_replayed_setup_event_after_removal_does_not_bring_the_consent_back(world):
    _setup, intent = start(world)
    done = world.gateway.confirm_setup(intent.id)
    world.deliver(setup_event(done))
    assert done.payment_method is not None
    world.saved_cards.remove(CLINIC, PATIENT, done.payment_method)
    assert world.deliver(setup_event(done)) is WebhookOutcome.PROCESSED
    assert world.repo.card_consents(CLINIC, PATIENT) == []


@pytest.mark.parametrize("whose", ["other-patient", "unknown", "removed", "no-customer"])
def test_removing_a_card_that_is_not_this_patients_is_not_found_and_detaches_nothing(world, whose):
    if whose == "other-patient":
        world.customer_for(PATIENT)
        pm_id = saved_without_paying(world, OTHER_PATIENT)
    elif whose == "unknown":
        world.customer_for(PATIENT)
        pm_id = "pm_unknown"
    elif whose == "removed":
        pm_id = saved_without_paying(world)
        world.saved_cards.remove(CLINIC, PATIENT, pm_id)
    else:
        pm_id = saved_without_paying(world, OTHER_PATIENT)
    detached_before = len(world.gateway.calls_named("detach_payment_method"))
    with pytest.raises(NotFoundError):
        world.saved_cards.remove(CLINIC, PATIENT, pm_id)
    assert len(world.gateway.calls_named("detach_payment_method")) == detached_before
    if whose == "other-patient":
        assert world.gateway.cards[pm_id][1] is not None
        assert len(world.repo.card_consents(CLINIC, OTHER_PATIENT)) == 1


def test_the_card_setup_record_keeps_who_agreed_for_a_representative(world):
    representative = patient_caller(PATIENT, OTHER_PATIENT, sub="parent-1")
    setup, _ = start(world, caller=representative, patient_id=OTHER_PATIENT)
    assert isinstance(setup, CardSetup)
    assert setup.patient_id == OTHER_PATIENT
    assert setup.consent.by == Actor("parent-1", Role.PATIENT)
