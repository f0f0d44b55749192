"""The daily audit: every patient account of every clinic recomputed by the audit `make audit`
and the tests use (`Auditor.audit_patient`), page by page, within a time budget and a cap.

It reads the table only. Checking each card payment against Stripe, as `make audit` does, would
retrieve every card payment ever made, every day, under the clinics' own Stripe rate limits;
payments Stripe and the table may disagree on are the non-final ones, which the reconciler asks
Stripe about every five minutes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from clinic_payments.domain.audit import Auditor, Difference


@dataclass(frozen=True)
class PatientAccount:
    clinic_id: str
    patient_id: str


@dataclass(frozen=True)
class AccountPage:
    accounts: list[PatientAccount]
    # Where the next page starts; None after the last page.
    cursor: str | None


class AccountDirectory(Protocol):
    """Every patient account in the store, one bounded page at a time (a Scan: never on a
    request path)."""

    def patient_accounts(self, cursor: str | None, page_size: int) -> AccountPage: ...


@dataclass(frozen=True)
class AccountDifference:
    clinic_id: str
    patient_id: str
    difference: Difference


@dataclass
class DailyAuditReport:
    accounts: int = 0
    differences: list[AccountDifference] = field(default_factory=list)
    # Every account in the store was audited (not cut short by the time budget or the cap).
    complete: bool = False


class DailyAudit:
    def __init__(
        self,
        directory: AccountDirectory,
        auditor: Auditor,
        *,
        page_size: int = 500,
        max_accounts: int = 200_000,
        reserve_ms: int = 30_000,
    ) -> None:
        self._directory = directory
        self._auditor = auditor
        self._page_size = page_size
        self._max_accounts = max_accounts
        self._reserve_ms = reserve_ms

    def run(self, time_left_ms: Callable[[], int]) -> DailyAuditReport:
        """Audit accounts until the store is exhausted, `max_accounts` were audited, or less than
        `reserve_ms` is left (enough to publish the report before the function times out)."""
        report = DailyAuditReport()
        seen: set[PatientAccount] = set()
        cursor: str | None = None
        while time_left_ms() > self._reserve_ms:
            page = self._directory.patient_accounts(cursor, self._page_size)
            for account in page.accounts:
                # One account's items may straddle two pages.
                if account in seen:
                    continue
                if len(seen) >= self._max_accounts or time_left_ms() <= self._reserve_ms:
                    return report
                seen.add(account)
                report.accounts += 1
                report.differences += [
                    AccountDifference(account.clinic_id, account.patient_id, difference)
                    for difference in self._audit(account)
                ]
            if page.cursor is None:
                report.complete = True
                return report
            cursor = page.cursor
        return report

    def _audit(self, account: PatientAccount) -> list[Difference]:
        try:
            return self._auditor.audit_patient(account.clinic_id, account.patient_id)
        except Exception as exc:  # noqa: BLE001 - one unreadable account must not hide the rest
            # A record that cannot be read back is itself a difference; the rest are audited.
            return [Difference("account", f"could not be audited ({type(exc).__name__})")]
