"""The Clock port: ISO 8601 UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from clinic_payments.domain.timeutil import to_iso


class SystemClock:
    def now(self) -> str:
        return to_iso(datetime.now(UTC))
