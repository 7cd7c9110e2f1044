"""The verify's report: each target folder (or document container) checked against its
source, each finding a row, and the totals of its summary."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reports.files import message_columns
from reports.i18n import Text
from reports.rows import Principal, ending, error_row

FAULTS = ("missing_on_target", "fingerprint_mismatch", "duplicate_on_target",
          "not_in_source", "flags_mismatch", "date_mismatch", "changed_since_copy")
"""Findings that make ``verify`` fail; ``deleted_at_source`` only informs."""

FINDING_TOTALS = {
    "missing_on_target": "missing", "fingerprint_mismatch": "content_differs",
    "duplicate_on_target": "duplicates", "not_in_source": "not_in_source",
    "flags_mismatch": "flags_differ", "date_mismatch": "dates_differ",
    "changed_since_copy": "changed_at_source", "deleted_at_source": "deleted_at_source",
}
"""The verify summary's total that counts each finding."""


class Finding(Protocol):
    """One difference between both sides (``migrate.compare.Finding``): a code of
    ``FINDING_TOTALS``, the items it names and the values its sentence shows."""

    @property
    def code(self) -> str: ...

    @property
    def source_id(self) -> str: ...

    @property
    def target_ref(self) -> str: ...

    @property
    def params(self) -> Mapping[str, object]: ...


class Check(Protocol):
    """One target folder against its source (``migrate.compare.FolderCheck``)."""

    @property
    def source_messages(self) -> int: ...

    @property
    def target_messages(self) -> int: ...

    @property
    def findings(self) -> Sequence[Finding]: ...


def faults(findings: Sequence[Finding]) -> int:
    """How many of the findings make ``verify`` fail."""
    return sum(1 for finding in findings if finding.code in FAULTS)


@dataclass
class VerifyTally:
    """The rows and counts of a verify, filled by principals checked side by side."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "checked": 0, "target_items": 0, "mismatches": 0, "missing": 0, "content_differs": 0,
        "duplicates": 0, "not_in_source": 0, "flags_differ": 0, "dates_differ": 0, "changed_at_source": 0,
        "deleted_at_source": 0, "errors": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, base: dict[str, Any], check: Check) -> None:
        """One target folder's rows: what was checked, then each finding."""
        found = faults(check.findings)
        rows = [{**base, "action": "verified", "messages": check.source_messages,
                 "copied": check.target_messages, "failed": found}]
        rows += [{**base, "action": "mismatch" if f.code in FAULTS else "note",
                  "source_id": f.source_id, "target_ref": f.target_ref,
                  **message_columns(Text.of(f.code, **f.params))} for f in check.findings]
        with self.lock:
            self.counts["checked"] += check.source_messages
            self.counts["target_items"] += check.target_messages
            self.counts["mismatches"] += found
            for finding in check.findings:
                self.counts[FINDING_TOTALS[finding.code]] += 1
            self.rows.extend(rows)

    def add_error(self, user: Principal, text: Text) -> None:
        """A principal or container that could not be checked: it counts as a mismatch."""
        with self.lock:
            self.counts["mismatches"] += 1
            self.counts["errors"] += 1
            self.rows.append(error_row(user, text))

    def summary(self, users: int) -> dict[str, int]:
        return {**self.counts, "users": users}

    def document(self, batch: str, users: int, stopped: Text | None) -> dict[str, Any]:
        return {"batch": batch, "summary": self.summary(users), **ending(stopped)}
