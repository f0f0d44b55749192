"""Optimistic writes that lost a race: how often to try again, and how long to wait between.

Every credit movement is written on the credit item's version as read (credit/lots.py), so
writers of one patient's credit that overlap make each other re-read and re-plan. A short
jittered pause spreads the next attempts out, so a burst of them does not collide again and
again (what DynamoDB's own guidance for transaction conflicts recommends).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, TypeVar

from clinic_payments.domain.errors import ConflictError, StaleWriteError

# Eight writers of one patient's credit at once (tests/integration/test_credit.py) need more
# than 16 tries on a busy machine; 24 with pauses up to 0.4 s stay within about 4 s in all.
_T = TypeVar("_T")

WRITE_ATTEMPTS: Final = 24
_FIRST_PAUSE: Final = 0.005  # seconds
_LONGEST_PAUSE: Final = 0.4


def pause_before_retry(attempt: int) -> None:
    """Sleep a random time up to an exponentially growing bound (full jitter)."""
    bound = min(_FIRST_PAUSE * 2**attempt, _LONGEST_PAUSE)
    time.sleep(random.uniform(0, bound))  # noqa: S311 - spreading retries, not a secret


def until_written(attempt: Callable[[int], _T], exhausted: str) -> _T:
    """Read, plan and write (`attempt`, given its number from 0) until the write is not stale:
    a StaleWriteError means what it read moved, so it pauses and tries again from a new read.
    After WRITE_ATTEMPTS, ConflictError(`exhausted`): nothing was written, the caller may retry."""
    for number in range(WRITE_ATTEMPTS):
        try:
            return attempt(number)
        except StaleWriteError:
            pause_before_retry(number)
    raise ConflictError(exhausted)
