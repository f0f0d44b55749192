"""The daily audit on the fakes: every account audited once, page by page, within its budget."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from clinic_payments.domain.allocation import RequestedAllocation
from clinic_payments.domain.audit import Auditor, Difference
from clinic_payments.domain.daily_audit import (
    AccountDirectory,
    AccountPage,
    DailyAudit,
    PatientAccount,
)
from clinic_payments.domain.ids import new_id
from clinic_payments.domain.model import PaymentMethodType
from clinic_payments.domain.payments.rules import PaymentRequest

from tests.unit.fakes import CLINIC, OTHER_PATIENT, PATIENT, STAFF, World, make_world

pytestmark = pytest.mark.unit

PLENTY_MS = 600_000


class ListedAccounts:
    """AccountDirectory over a fixed list, served in pages; the cursor is the next index."""

    def __init__(self, accounts: list[PatientAccount]) -> None:
        self.accounts = accounts
        self.pages = 0

    def patient_accounts(self, cursor: str | None, page_size: int) -> AccountPage:
        start = int(cursor or 0)
        page = self.accounts[start : start + page_size]
        self.pages += 1
        end = start + len(page)
        return AccountPage(page, str(end) if end < len(self.accounts) else None)


class CountingAuditor(Auditor):
    def __init__(self, world: World) -> None:
        super().__init__(world.repo, None)
        self.audited: list[PatientAccount] = []

    def audit_patient(self, clinic_id: str, patient_id: str) -> list[Difference]:
        self.audited.append(PatientAccount(clinic_id, patient_id))
        return super().audit_patient(clinic_id, patient_id)


def accounts_of(world: World) -> list[PatientAccount]:
    repo = world.repo
    keys = set(repo.invoices) | set(repo.payments) | set(repo.ledger)
    return [PatientAccount(c, p) for c, p in sorted(keys)]


def plenty() -> int:
    return PLENTY_MS


def countdown(*remaining_ms: int) -> Callable[[], int]:
    values: Iterator[int] = itertools.chain(remaining_ms, itertools.repeat(remaining_ms[-1]))
    return lambda: next(values)


@pytest.fixture
def world() -> World:
    """Two patients whose accounts add up: one paid exactly, one overpaid into credit."""
    world = make_world()
    for patient, amount in ((PATIENT, 5000), (OTHER_PATIENT, 3000)):
        invoice = world.invoice(5000, patient_id=patient)
        world.payments.create(
            STAFF,
            CLINIC,
            patient,
            PaymentRequest(PaymentMethodType.CASH, [RequestedAllocation(invoice.id)], 5650),
            new_id("pay"),
        )
        world.invoice(amount, patient_id=patient)
    return world


def test_accounts_that_add_up_report_no_difference(world: World) -> None:
    directory = ListedAccounts(accounts_of(world))
    auditor = CountingAuditor(world)

    report = DailyAudit(directory, auditor, page_size=1).run(plenty)

    assert report.differences == []
    assert report.accounts == 2
    assert report.complete
    assert auditor.audited == directory.accounts
    assert directory.pages == 2


def test_a_tampered_account_is_reported_with_its_ids(world: World) -> None:
    [invoice, *_] = world.repo.all_invoices(CLINIC, OTHER_PATIENT)
    world.repo.invoices[(CLINIC, OTHER_PATIENT)][invoice.id] = replace(
        invoice, amount_paid=invoice.amount_paid - 100
    )

    auditor = Auditor(world.repo, None, pause=lambda _: None)

    report = DailyAudit(ListedAccounts(accounts_of(world)), auditor).run(plenty)

    assert report.differences
    assert {(d.clinic_id, d.patient_id) for d in report.differences} == {(CLINIC, OTHER_PATIENT)}
    assert all(d.difference.subject == f"invoice {invoice.id}" for d in report.differences)
    assert report.complete


def test_an_account_on_two_pages_is_audited_once(world: World) -> None:
    first, second = accounts_of(world)
    directory = ListedAccounts([first, second, second])
    auditor = CountingAuditor(world)

    report = DailyAudit(directory, auditor, page_size=2).run(plenty)

    assert auditor.audited == [first, second]
    assert report.accounts == 2
    assert report.complete


def test_the_audit_stops_in_time_to_report_and_says_it_is_incomplete(world: World) -> None:
    auditor = CountingAuditor(world)
    audit = DailyAudit(ListedAccounts(accounts_of(world)), auditor, page_size=5, reserve_ms=30_000)

    # Enough for the first page and its first account, then under the reserve.
    report = audit.run(countdown(PLENTY_MS, PLENTY_MS, 29_000))

    assert report.accounts == 1
    assert auditor.audited == accounts_of(world)[:1]
    assert not report.complete


def test_no_time_left_audits_nothing(world: World) -> None:
    directory = ListedAccounts(accounts_of(world))

    report = DailyAudit(directory, Auditor(world.repo, None)).run(countdown(1_000))

    assert (report.accounts, report.complete, directory.pages) == (0, False, 0)


def test_the_audit_stops_at_its_cap(world: World) -> None:
    directory: AccountDirectory = ListedAccounts(accounts_of(world))

    report = DailyAudit(directory, Auditor(world.repo, None), max_accounts=1).run(plenty)

    assert report.accounts == 1
    assert not report.complete


def test_an_account_that_cannot_be_read_is_a_difference_and_the_rest_are_audited(
    world: World,
) -> None:
    unreadable, readable = accounts_of(world)

    class UnreadableFirstAccount(CountingAuditor):
        def audit_patient(self, clinic_id: str, patient_id: str) -> list[Difference]:
            found = super().audit_patient(clinic_id, patient_id)
            if PatientAccount(clinic_id, patient_id) == unreadable:
                raise ValueError("an item the codec cannot read")
            return found

    auditor = UnreadableFirstAccount(world)

    report = DailyAudit(ListedAccounts([unreadable, readable]), auditor).run(plenty)

    [found] = report.differences
    assert (found.clinic_id, found.patient_id) == (unreadable.clinic_id, unreadable.patient_id)
    assert found.difference == Difference("account", "could not be audited (ValueError)")
    assert auditor.audited == [unreadable, readable]
    assert report.accounts == 2
    assert report.complete
