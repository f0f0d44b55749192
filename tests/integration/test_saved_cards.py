"""Saved cards through the handlers, against moto and the Stripe fake: add one without paying
(a SetupIntent the portal confirms with Stripe.js, reconciled by setup_intent.succeeded), list
them with their consent, charge them, remove them; and every way that is refused."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from clinic_payments.wiring import container

from tests.support import stripe_control
from tests.support.portal import DECLINED, VISA, confirm_card, confirm_card_setup

pytestmark = pytest.mark.integration

CARDS = "/v1/clinics/{clinic_id}/patients/{patient_id}/payment-methods"
CARD = CARDS + "/{pm_id}"
WORDING = "2026-11-01"  # the test clinic's card-on-file wording version
CONSENT = {"agreed": True, "wording_version": WORDING}
SETUP_INTENTS = "POST /v1/setup_intents"


@pytest.fixture(autouse=True)
def _no_faults_left(stack) -> Iterator[None]:
    yield
    stripe_control.clear_faults(stack.stripe_url)


def as_patient(patient: str) -> dict[str, Any]:
    return {"role": "patient", "patient_ids": (patient,)}


def add_card(
    clinic, patient, body=None, *, key=None, role="patient", patient_ids=None, sub=None
) -> tuple[int, Any]:
    return clinic.call(
        "POST",
        CARDS,
        {"patient_id": patient},
        role=role,
        patient_ids=patient_ids if patient_ids is not None else (patient,),
        sub=sub,
        body={"consent": CONSENT} if body is None else body,
        headers={"Idempotency-Key": key or secrets.token_hex(8)},
    )


def list_cards(clinic, patient, *, role="patient", patient_ids=None) -> list[dict[str, Any]]:
    status, body = clinic.call(
        "GET",
        CARDS,
        {"patient_id": patient},
        role=role,
        patient_ids=patient_ids if patient_ids is not None else (patient,),
    )
    assert status == 200, body
    assert body["next_cursor"] is None
    return list(body["items"])


def remove_card(clinic, patient, pm_id, *, role="patient", patient_ids=None) -> tuple[int, Any]:
    return clinic.call(
        "DELETE",
        CARD,
        {"patient_id": patient, "pm_id": pm_id},
        role=role,
        patient_ids=patient_ids if patient_ids is not None else (patient,),
    )


def portal_confirms(clinic, setup, number=VISA) -> tuple[int, dict[str, Any]]:
    """What Stripe.js's confirmCardSetup does with the client secret the API returned."""
    return confirm_card_setup(
        clinic.stack.stripe_url,
        setup["setup_intent_id"],
        setup["client_secret"],
        setup["publishable_key"],
        number,
    )


def deliver_setup(clinic, setup_intent_id, times=1) -> list[tuple[int, Any]]:
    """Stripe's setup_intent.succeeded, built from the SetupIntent as the fake holds it."""
    event = clinic.intent_event(clinic.setup_intent(setup_intent_id), "setup_intent.succeeded")
    return [clinic.signed_webhook(event) for _ in range(times)]


def save_card(clinic, patient, **add) -> str:
    """Add a card without paying, as the portal does, and let the webhook reconcile it."""
    status, setup = add_card(clinic, patient, **add)
    assert status == 201, setup
    code, confirmed = portal_confirms(clinic, setup)
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    assert deliver_setup(clinic, setup["setup_intent_id"]) == [(200, {"received": True})]
    return str(confirmed["payment_method"])


def charge(clinic, patient, pm_id, invoice_id, *, role="patient", **extra) -> tuple[int, Any]:
    return clinic.pay(
        patient,
        {
            "method": "card",
            "payment_method_id": pm_id,
            "allocations": [{"invoice_id": invoice_id}],
            **extra,
        },
        role=role,
    )


# -- adding a card ---------------------------------------------------------------------------


def test_a_card_added_without_paying_is_listed_with_its_consent(clinic):
    status, setup = add_card(clinic, "pat_a", sub="patient-a")
    assert status == 201, setup
    assert set(setup) == {"setup_intent_id", "client_secret", "publishable_key"}
    assert setup["client_secret"].startswith(setup["setup_intent_id"] + "_secret_")
    assert setup["setup_intent_id"].startswith("seti_")
    assert setup["publishable_key"] == clinic.publishable_key
    assert list_cards(clinic, "pat_a") == []  # nothing saved until the portal confirms

    code, confirmed = portal_confirms(clinic, setup)
    assert (code, confirmed["status"]) == (200, "succeeded"), confirmed
    assert deliver_setup(clinic, setup["setup_intent_id"]) == [(200, {"received": True})]

    [card] = list_cards(clinic, "pat_a")
    consent = card.pop("consent")
    assert card == {
        "id": confirmed["payment_method"],
        "brand": "visa",
        "last4": "4242",
        "exp_month": 12,
        "exp_year": 2030,
        "wallet": None,  # a card entered as it is
    }
    assert consent["wording_version"] == WORDING
    assert consent["by"] == {"sub": "patient-a", "role": "patient"}
    assert consent["at"]
    # Staff see the same card and consent.
    assert list_cards(clinic, "pat_a", role="staff", patient_ids=())[0]["consent"] == consent


def test_the_setup_intent_carries_ids_only_and_is_for_off_session_use(clinic):
    status, setup = add_card(clinic, "pat_a")
    assert status == 201, setup
    intent = clinic.setup_intent(setup["setup_intent_id"])
    assert intent["usage"] == "off_session"
    assert set(intent["metadata"]) == {"clinic_id", "patient_id", "setup_id"}
    assert (intent["metadata"]["clinic_id"], intent["metadata"]["patient_id"]) == (
        clinic.clinic_id,
        "pat_a",
    )
    customer = container().repository.get_customer_id(clinic.clinic_id, "pat_a", "main")
    assert intent["customer"] == customer
    stripe_customer = clinic.stripe().v1.customers.retrieve(customer).to_dict()
    assert (stripe_customer.get("name"), stripe_customer.get("email")) == (None, None)


def test_the_card_is_listed_before_the_webhook_without_consent_then_with_it(clinic):
    status, setup = add_card(clinic, "pat_a")
    assert status == 201
    code, _ = portal_confirms(clinic, setup)
    assert code == 200
    # Stripe has the card already (the source of truth); the consent follows with the event.
    [card] = list_cards(clinic, "pat_a")
    assert card["consent"] is None
    deliver_setup(clinic, setup["setup_intent_id"])
    assert list_cards(clinic, "pat_a")[0]["consent"]["wording_version"] == WORDING


def test_a_repeated_setup_webhook_changes_nothing(clinic):
    status, setup = add_card(clinic, "pat_a")
    assert status == 201
    portal_confirms(clinic, setup)
    event = clinic.intent_event(
        clinic.setup_intent(setup["setup_intent_id"]), "setup_intent.succeeded"
    )
    assert [clinic.signed_webhook(event) for _ in range(3)] == [(200, {"received": True})] * 3
    first = list_cards(clinic, "pat_a")
    deliver_setup(clinic, setup["setup_intent_id"], times=2)  # other event ids, same intent
    assert list_cards(clinic, "pat_a") == first
    assert len(first) == 1


def test_staff_add_a_card_and_the_consent_says_it_was_staff(clinic):
    pm_id = save_card(clinic, "pat_a", role="staff", patient_ids=(), sub="staff-7")
    [card] = list_cards(clinic, "pat_a")
    assert card["id"] == pm_id
    assert card["consent"]["by"] == {"sub": "staff-7", "role": "staff"}


def test_a_representative_adds_a_card_for_a_patient_they_act_for(clinic):
    save_card(clinic, "pat_a", patient_ids=("pat_parent", "pat_a"), sub="parent-1")
    [card] = list_cards(clinic, "pat_a")
    assert card["consent"]["by"] == {"sub": "parent-1", "role": "patient"}
    # Another patient of the same representative has no card.
    assert list_cards(clinic, "pat_parent", patient_ids=("pat_parent", "pat_a")) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"consent": {"agreed": False, "wording_version": WORDING}},
        {"consent": {"agreed": True, "wording_version": "2020-01-01"}},
    ],
    ids=["missing", "not-agreed", "old-wording"],
)
def test_adding_a_card_needs_consent_to_the_current_wording(clinic, body):
    before = stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS)
    status, error = add_card(clinic, "pat_a", body)
    assert (status, error["error"]["code"]) == (422, "consent_required"), error
    assert stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS) == before


def test_consent_must_be_a_strict_boolean_agreement(clinic):
    status, error = add_card(
        clinic, "pat_a", {"consent": {"agreed": "yes", "wording_version": WORDING}}
    )
    assert (status, error["error"]["code"]) == (422, "validation_error"), error


def test_a_replayed_add_returns_the_same_client_secret_and_makes_one_setup_intent(clinic):
    before = stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS)
    first = add_card(clinic, "pat_a", key="add-card-1")
    second = add_card(clinic, "pat_a", key="add-card-1")
    assert first[0] == 201
    assert first == second
    assert stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS) == before + 1
    status, error = add_card(
        clinic, "pat_a", {"consent": {**CONSENT, "wording_version": "x"}}, key="add-card-1"
    )
    assert (status, error["error"]["code"]) == (422, "idempotency_key_reused")


def test_adding_a_card_needs_an_idempotency_key(clinic):
    status, error = clinic.call(
        "POST", CARDS, {"patient_id": "pat_a"}, **as_patient("pat_a"), body={"consent": CONSENT}
    )
    assert (status, error["error"]["code"]) == (400, "idempotency_key_required")


def test_stripe_down_while_adding_answers_503_and_the_retry_resumes(clinic):
    stripe_control.fault(
        clinic.stack.stripe_url,
        method="POST",
        path_prefix="/v1/setup_intents",
        mode="error_after",
        status=500,
        times=3,  # the SDK retries twice with the same idempotency key
    )
    status, error = add_card(clinic, "pat_a", key="flaky-add")
    assert (status, error["error"]["code"]) == (503, "payment_provider_unavailable"), error
    stripe_control.clear_faults(clinic.stack.stripe_url)
    before = stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS)
    status, setup = add_card(clinic, "pat_a", key="flaky-add")
    assert status == 201, setup
    # The SetupIntent made before the failure is the one returned: Stripe replayed it.
    assert stripe_control.count(clinic.stack.stripe_url, SETUP_INTENTS) == before
    code, confirmed = portal_confirms(clinic, setup)
    assert code == 200, confirmed
    deliver_setup(clinic, setup["setup_intent_id"])
    assert list_cards(clinic, "pat_a")[0]["consent"]["wording_version"] == WORDING


def test_a_card_declined_at_setup_is_not_listed(clinic):
    status, setup = add_card(clinic, "pat_a")
    assert status == 201
    code, declined = portal_confirms(clinic, setup, DECLINED)
    assert code == 402, declined
    assert declined["error"]["code"] == "card_declined"
    assert list_cards(clinic, "pat_a") == []
    # The same SetupIntent can still take another card.
    code, confirmed = portal_confirms(clinic, setup, VISA)
    assert (code, confirmed["status"]) == (200, "succeeded")
    deliver_setup(clinic, setup["setup_intent_id"])
    assert [c["last4"] for c in list_cards(clinic, "pat_a")] == ["4242"]


def test_a_setup_intent_this_api_did_not_create_is_ignored(clinic):
    save_card(clinic, "pat_a")  # the patient's customer exists
    customer = container().repository.get_customer_id(clinic.clinic_id, "pat_a", "main")
    stray = clinic.stripe().v1.setup_intents.create(
        params={
            "customer": customer,
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        }
    )
    code, _ = confirm_card_setup(
        clinic.stack.stripe_url, stray.id, str(stray.client_secret), clinic.publishable_key, VISA
    )
    assert code == 200
    assert deliver_setup(clinic, stray.id) == [(200, {"received": True})]
    cards = list_cards(clinic, "pat_a")
    assert len(cards) == 2
    assert [c["consent"] is None for c in cards].count(True) == 1  # no consent was given for it


def test_a_patient_with_no_stripe_customer_lists_nothing_without_asking_stripe(clinic):
    listings = "GET /v1/payment_methods"
    before = stripe_control.count(clinic.stack.stripe_url, listings)
    assert list_cards(clinic, "pat_new") == []
    assert stripe_control.count(clinic.stack.stripe_url, listings) == before
    save_card(clinic, "pat_a")
    assert len(list_cards(clinic, "pat_a")) == 1
    assert stripe_control.count(clinic.stack.stripe_url, listings) == before + 1


# -- saving a card while paying ------------------------------------------------------------------


def test_a_card_saved_while_paying_is_listed_with_the_payments_consent(clinic):
    invoice = clinic.create_invoice("pat_a", 2000)
    status, payment = clinic.pay(
        "pat_a",
        {
            "method": "card",
            "allocations": [{"invoice_id": invoice["id"]}],
            "save_card": True,
            "consent": CONSENT,
        },
        sub="patient-a",
    )
    assert status == 201, payment
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, intent = confirm_card(
        clinic.stack.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"]
    )
    assert code == 200, intent
    event = clinic.intent_event(clinic.intent(intent_id))
    assert clinic.signed_webhook(event) == (200, {"received": True})

    [card] = list_cards(clinic, "pat_a")
    assert card["id"] == intent["payment_method"]
    assert card["consent"] == {
        "wording_version": WORDING,
        "by": {"sub": "patient-a", "role": "patient"},
        "at": payment["consent"]["at"],
    }
    clinic.check_invariant("pat_a")


def test_a_card_used_once_without_save_card_is_not_kept(clinic):
    invoice = clinic.create_invoice("pat_a", 2000)
    status, payment = clinic.pay(
        "pat_a", {"method": "card", "allocations": [{"invoice_id": invoice["id"]}]}
    )
    assert status == 201, payment
    intent_id = payment["client_secret"].split("_secret_")[0]
    code, _ = confirm_card(
        clinic.stack.stripe_url, intent_id, payment["client_secret"], payment["publishable_key"]
    )
    assert code == 200
    clinic.signed_webhook(clinic.intent_event(clinic.intent(intent_id)))
    assert list_cards(clinic, "pat_a") == []
    clinic.check_invariant("pat_a")


# -- charging it -------------------------------------------------------------------------------


def test_the_new_card_is_charged_on_session_and_off_session_by_staff(clinic):
    pm_id = save_card(clinic, "pat_a")
    first = clinic.create_invoice("pat_a", 2500)
    status, payment = charge(clinic, "pat_a", pm_id, first["id"])
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    assert payment["payment_method"] == {
        "id": pm_id,
        "brand": "visa",
        "last4": "4242",
        "wallet": None,
    }
    assert clinic.invoice("pat_a", first["id"])["status"] == "paid"

    second = clinic.create_invoice("pat_a", 4000)
    status, payment = charge(clinic, "pat_a", pm_id, second["id"], role="staff", off_session=True)
    assert status == 201, payment
    assert payment["status"] == "succeeded"
    assert payment["created_by"]["role"] == "staff"
    assert clinic.invoice("pat_a", second["id"])["status"] == "paid"
    clinic.check_invariant("pat_a")


# -- another patient ------------------------------------------------------------------------------


def test_another_patient_can_neither_list_nor_remove_the_card(clinic):
    pm_id = save_card(clinic, "pat_a")
    # pat_b's own token on pat_a's cards: not theirs, not found.
    status, body = clinic.call("GET", CARDS, {"patient_id": "pat_a"}, **as_patient("pat_b"))
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = remove_card(clinic, "pat_a", pm_id, patient_ids=("pat_b",))
    assert (status, body["error"]["code"]) == (404, "not_found")
    # pat_a's card through pat_b's own account: not one of pat_b's cards.
    assert list_cards(clinic, "pat_b") == []
    status, body = remove_card(clinic, "pat_b", pm_id)
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = remove_card(clinic, "pat_b", pm_id, role="staff", patient_ids=())
    assert (status, body["error"]["code"]) == (404, "not_found")
    # Nothing happened to it.
    assert [c["id"] for c in list_cards(clinic, "pat_a")] == [pm_id]
    assert clinic.stripe().v1.payment_methods.retrieve(pm_id).customer is not None


def test_another_clinic_is_refused(clinic, stack):
    from tests.conftest import make_clinic

    other = make_clinic(stack)
    status, body = clinic.call(
        "GET",
        CARDS,
        {"patient_id": "pat_a"},
        claims={"sub": "x", "clinic_id": other.clinic_id, "role": "staff", "patient_ids": []},
    )
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_another_patients_new_card_cannot_be_charged(clinic):
    pm_of_b = save_card(clinic, "pat_b")
    invoice = clinic.create_invoice("pat_a", 2500)
    before = stripe_control.count(clinic.stack.stripe_url)
    status, body = charge(clinic, "pat_a", pm_of_b, invoice["id"], role="staff", off_session=True)
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert stripe_control.count(clinic.stack.stripe_url) == before
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"
    clinic.check_invariant("pat_a")


# -- removing it -----------------------------------------------------------------------------------


def test_a_removed_card_is_detached_and_can_no_longer_be_charged(clinic):
    status, setup = add_card(clinic, "pat_a")
    assert status == 201, setup
    code, confirmed = portal_confirms(clinic, setup)
    assert code == 200, confirmed
    deliver_setup(clinic, setup["setup_intent_id"])
    pm_id = confirmed["payment_method"]
    status, body = remove_card(clinic, "pat_a", pm_id)
    assert (status, body) == (204, None)
    assert list_cards(clinic, "pat_a") == []
    assert clinic.stripe().v1.payment_methods.retrieve(pm_id).customer is None
    assert container().repository.card_consents(clinic.clinic_id, "pat_a") == []

    invoice = clinic.create_invoice("pat_a", 2500)
    before = stripe_control.count(clinic.stack.stripe_url)
    for role, extra in (("patient", {}), ("staff", {"off_session": True})):
        status, body = charge(clinic, "pat_a", pm_id, invoice["id"], role=role, **extra)
        assert (status, body["error"]["code"]) == (404, "not_found"), role
    assert stripe_control.count(clinic.stack.stripe_url) == before  # no PaymentIntent
    assert clinic.invoice("pat_a", invoice["id"])["status"] == "open"
    clinic.check_invariant("pat_a")

    # Removing it again: not found, and a late webhook does not bring the consent back.
    status, body = remove_card(clinic, "pat_a", pm_id)
    assert (status, body["error"]["code"]) == (404, "not_found")
    deliver_setup(clinic, setup["setup_intent_id"])
    assert container().repository.card_consents(clinic.clinic_id, "pat_a") == []


def test_staff_remove_a_card_and_the_others_stay(clinic):
    first = save_card(clinic, "pat_a")
    second = save_card(clinic, "pat_a")
    assert {c["id"] for c in list_cards(clinic, "pat_a")} == {first, second}
    status, _ = remove_card(clinic, "pat_a", first, role="staff", patient_ids=())
    assert status == 204
    [left] = list_cards(clinic, "pat_a")
    assert (left["id"], left["consent"]["wording_version"]) == (second, WORDING)


def test_removing_an_unknown_card_or_a_malformed_id_is_refused(clinic):
    save_card(clinic, "pat_a")
    status, body = remove_card(clinic, "pat_a", "pm_doesnotexist123")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = remove_card(clinic, "pat_a", "card_1234")
    assert (status, body["error"]["code"]) == (422, "validation_error")
    assert body["error"]["details"][0]["field"] == "pm_id"
    status, body = remove_card(clinic, "pat_new", "pm_doesnotexist123")  # no customer at all
    assert (status, body["error"]["code"]) == (404, "not_found")


def test_stripe_down_while_listing_or_removing_is_a_503_and_nothing_is_forgotten(clinic):
    pm_id = save_card(clinic, "pat_a")
    for method, prefix in (
        ("GET", "/v1/payment_methods"),
        ("POST", f"/v1/payment_methods/{pm_id}"),
    ):
        # Three times: the SDK retries twice.
        stripe_control.fault(
            clinic.stack.stripe_url, method=method, path_prefix=prefix, mode="error_before", times=3
        )
    status, body = clinic.call("GET", CARDS, {"patient_id": "pat_a"}, **as_patient("pat_a"))
    assert (status, body["error"]["code"]) == (503, "payment_provider_unavailable")
    status, body = remove_card(clinic, "pat_a", pm_id)
    assert (status, body["error"]["code"]) == (503, "payment_provider_unavailable")
    stripe_control.clear_faults(clinic.stack.stripe_url)
    [card] = list_cards(clinic, "pat_a")
    assert (card["id"], card["consent"]["wording_version"]) == (pm_id, WORDING)


def test_dynamodb_reconciles_a_setup_with_one_card_only(clinic):
    from clinic_payments.domain.model import CardConsent

    status, setup = add_card(clinic, "pat_a")
    assert status == 201
    repo = container().repository
    intent = clinic.setup_intent(setup["setup_intent_id"])
    stored = repo.get_card_setup(clinic.clinic_id, "pat_a", intent["metadata"]["setup_id"])
    assert stored is not None
    first = CardConsent("pm_first", "main", stored.consent, setup_id=stored.id)
    assert repo.attach_card_consent(stored, first) is True
    assert repo.attach_card_consent(stored, first) is True  # the same card again: no-op
    other = CardConsent("pm_other", "main", stored.consent, setup_id=stored.id)
    assert repo.attach_card_consent(stored, other) is False
    assert repo.card_consents(clinic.clinic_id, "pat_a") == [first]
    reconciled = repo.get_card_setup(clinic.clinic_id, "pat_a", stored.id)
    assert reconciled is not None
    assert reconciled.payment_method_id == "pm_first"
