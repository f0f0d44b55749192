"""The soak's in-process checks, through the same container the handlers use: the audit
(`domain.audit`, as `make audit`) and a reconciler run that does not wait five minutes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta


def in_process_checks(
    clinic_id: str,
) -> tuple[Callable[[bool, Sequence[str]], list[str]], Callable[[], None]]:
    from clinic_payments.adapters.clock import SystemClock
    from clinic_payments.domain.audit import Auditor
    from clinic_payments.domain.reconciling import Reconciler
    from clinic_payments.wiring import container

    def audit(with_stripe: bool, patients: Sequence[str]) -> list[str]:
        """The soak's own patients (it made every account of its clinic): no Scan of the
        table for them, whose answer grows with everything written."""
        c = container()
        auditor = Auditor(c.repository, c.stripe if with_stripe else None)
        return [
            f"patient {patient}: {difference}"
            for patient in patients
            for difference in auditor.audit_patient(clinic_id, patient)
        ]

    def reconcile() -> None:
        c = container()
        reconciler = Reconciler(
            c.repository,
            c.payments,
            c.stripe,
            SystemClock(),
            min_age=timedelta(0),
            receipts=c.receipts,
        )
        reconciler.run()

    return audit, reconcile
