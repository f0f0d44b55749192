"""Payment states only move forward, whatever order Stripe's events arrive in."""

from __future__ import annotations

import pytest
from clinic_payments.domain.model import FINAL_STATUSES, PaymentStatus
from clinic_payments.domain.payments.states import may_move, status_from_intent, statuses_before
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

S = PaymentStatus
ALL = list(PaymentStatus)
NON_FINAL = [s for s in ALL if s not in FINAL_STATUSES]
# How far along each status is, as Stripe's PaymentIntent lifecycle has it.
PROGRESS = {
    S.REQUIRES_PAYMENT_METHOD: 0,
    S.FAILED: 0,
    S.REQUIRES_ACTION: 1,
    S.PROCESSING: 1,
    S.SUCCEEDED: 2,
    S.CANCELED: 2,
}


@pytest.mark.parametrize(
    ("intent_status", "status"),
    [
        ("requires_payment_method", S.REQUIRES_PAYMENT_METHOD),
        ("requires_confirmation", S.REQUIRES_PAYMENT_METHOD),
        ("requires_action", S.REQUIRES_ACTION),
        ("processing", S.PROCESSING),
        ("requires_capture", S.PROCESSING),
        ("succeeded", S.SUCCEEDED),
        ("canceled", S.CANCELED),
    ],
)
def test_status_from_intent_maps_stripes_statuses(intent_status: str, status: S) -> None:
    assert status_from_intent(intent_status) is status


def test_an_unknown_intent_status_is_treated_as_in_flight() -> None:
    # Unknown outcome: never failed, never succeeded; the reconciler asks again later.
    assert status_from_intent("some_future_status") is S.PROCESSING


@pytest.mark.parametrize("final", sorted(FINAL_STATUSES))
@pytest.mark.parametrize("new", ALL)
def test_a_final_state_never_moves(final: S, new: S) -> None:
    assert not may_move(final, new)


@pytest.mark.parametrize("current", NON_FINAL)
def test_succeeded_is_reachable_from_every_non_final_state(current: S) -> None:
    assert may_move(current, S.SUCCEEDED)
    assert current in statuses_before(S.SUCCEEDED)


def test_statuses_before_succeeded_are_exactly_the_non_final_ones() -> None:
    assert sorted(statuses_before(S.SUCCEEDED)) == sorted(NON_FINAL)


@pytest.mark.parametrize("status", ALL)
def test_a_status_does_not_move_to_itself(status: S) -> None:
    assert not may_move(status, status)
    assert status not in statuses_before(status)


@pytest.mark.parametrize("late", [S.PROCESSING, S.REQUIRES_ACTION, S.REQUIRES_PAYMENT_METHOD])
def test_an_out_of_order_event_after_success_is_ignored(late: S) -> None:
    assert not may_move(S.SUCCEEDED, late)


def test_a_failed_payment_may_be_retried_and_succeed() -> None:
    assert may_move(S.FAILED, S.SUCCEEDED)
    assert may_move(S.FAILED, S.PROCESSING)
    assert may_move(S.FAILED, S.REQUIRES_ACTION)


@pytest.mark.parametrize("current", [S.REQUIRES_PAYMENT_METHOD, S.REQUIRES_ACTION, S.PROCESSING])
def test_an_attempt_in_flight_may_fail(current: S) -> None:
    assert may_move(current, S.FAILED)


@pytest.mark.parametrize("current", [S.REQUIRES_ACTION, S.PROCESSING])
def test_a_payment_in_flight_does_not_go_back_to_requiring_a_payment_method(current: S) -> None:
    assert not may_move(current, S.REQUIRES_PAYMENT_METHOD)


@pytest.mark.parametrize("new", ALL)
def test_statuses_before_is_exactly_where_may_move_allows(new: S) -> None:
    assert set(statuses_before(new)) == {s for s in ALL if may_move(s, new)}


@given(events=st.lists(st.sampled_from(ALL), max_size=40), start=st.sampled_from(NON_FINAL))
@settings(max_examples=200)
def test_random_event_orders_never_leave_a_final_state_or_go_backwards(
    events: list[S], start: S
) -> None:
    status = start
    for event in events:
        if not may_move(status, event):
            continue
        assert status not in FINAL_STATUSES, f"moved out of final {status} to {event}"
        # Only a failure goes back (an attempt in flight failed); nothing else loses progress.
        assert event is S.FAILED or PROGRESS[event] >= PROGRESS[status], f"{status} -> {event}"
        status = event
    finals = [e for e in events if e in FINAL_STATUSES]
    if finals:
        # The first final event, wherever it came, is where the payment ends up.
        assert status is finals[0]
    else:
        assert status not in FINAL_STATUSES
