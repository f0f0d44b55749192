"""The one retry of an optimistic write: read, plan, write again while what was read moved."""

from __future__ import annotations

import pytest
from clinic_payments.domain import contention
from clinic_payments.domain.contention import WRITE_ATTEMPTS, until_written
from clinic_payments.domain.errors import ConflictError, NotFoundError, StaleWriteError


@pytest.fixture(autouse=True)
def paused(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    paused: list[int] = []
    monkeypatch.setattr(contention, "pause_before_retry", paused.append)
    return paused


def test_a_write_that_met_a_moved_read_is_tried_again_from_a_new_read(
    paused: list[int],
) -> None:
    seen: list[int] = []

    def attempt(number: int) -> str:
        seen.append(number)
        if number < 3:
            raise StaleWriteError("the credit moved")
        return "written"

    assert until_written(attempt, "too fast") == "written"
    assert seen == [0, 1, 2, 3]
    assert paused == [0, 1, 2]  # a pause after each stale attempt, growing with it


def test_after_the_last_attempt_it_is_a_conflict_and_nothing_else_is_tried() -> None:
    calls: list[int] = []

    def attempt(number: int) -> None:
        calls.append(number)
        raise StaleWriteError("moved again")

    with pytest.raises(ConflictError) as raised:
        until_written(attempt, "The credit is changing too fast; try again.")
    assert raised.value.message == "The credit is changing too fast; try again."
    assert calls == list(range(WRITE_ATTEMPTS))


def test_any_other_error_is_the_answer_at_once() -> None:
    calls: list[int] = []

    def attempt(number: int) -> None:
        calls.append(number)
        raise NotFoundError("Invoice not found.")

    with pytest.raises(NotFoundError):
        until_written(attempt, "too fast")
    assert calls == [0]
