"""The verify's report: each target folder (or document container) checked against its
source, each finding a row, and the totals of its summary; beside it, the items' report
(``verify-files-<UTC time>.csv``, ``ITEM_COLUMNS``): one row per item of a document
container (file, event, contact, task), written as it is checked, saying how it was
verified, with the hashes compared, and how its source was checked when it was read."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reports.files import CsvStream, message_columns
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

ITEMS_REPORT = "verify-files"
ITEM_COLUMNS = [
    "principal", "target", "workload", "container", "source_id", "target_path",
    "source_size", "target_size", "source_hash", "source_check", "written_sha256",
    "target_sha256", "verified_by", "outcome", "code", "message_en", "message_fr"]
"""The items' report: sizes at the source (its listing now) and on the target; the hashes
the source gave and checked when the item was read (``name:value``) and ``source_check``
(``source_hash_matched``, ``no_source_hash``: the SHA-256 of the bytes read is all there is,
``source_check_not_recorded``: copied by an earlier bascule; empty for an item never read);
the SHA-256 of the bytes written, hashed as they were sent, and of the target's bytes read
back now (empty where the target is compared by meaning); ``verified_by``
(``migrate.documents.READ_BACK_SHA256``...) and ``outcome`` (``match``, ``mismatch``,
``missing``, ``changed_at_source``, ``extra``), then the code and its sentences."""


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


class ItemCheck(Protocol):
    """One item of a document container as verify found it
    (``migrate.documents.ItemCheck``)."""

    @property
    def source_id(self) -> str: ...

    @property
    def target_ref(self) -> str: ...

    @property
    def outcome(self) -> str: ...

    @property
    def verified_by(self) -> str: ...

    @property
    def code(self) -> str: ...

    @property
    def source_size(self) -> int | None: ...

    @property
    def target_size(self) -> int | None: ...

    @property
    def source_hashes(self) -> str | None: ...

    @property
    def written(self) -> str | None: ...

    @property
    def read_back(self) -> str | None: ...


def source_check(item: ItemCheck) -> str:
    """How the item's source was checked when a copy read it (``source_hash_matched``,
    ``no_source_hash``, ``source_check_not_recorded``), or ``""`` for an item no copy read."""
    if item.written is None:
        return ""
    if item.source_hashes is None:
        return "source_check_not_recorded"
    return "source_hash_matched" if item.source_hashes else "no_source_hash"


def item_row(base: dict[str, Any], item: ItemCheck) -> dict[str, Any]:
    """The items' report's row of one item (``ITEM_COLUMNS``)."""
    checked = source_check(item)
    if item.code == "item_verified":
        names = ", ".join(pair.split(":", 1)[0] for pair in (item.source_hashes or "").split())
        text = Text.of(item.code, how=Text.of(item.verified_by),
                       source=Text.of(checked, hashes=names))
    else:
        text = Text.of(item.code)
    return {**base, "source_id": item.source_id, "target_path": item.target_ref,
            "source_size": item.source_size, "target_size": item.target_size,
            "source_hash": item.source_hashes, "source_check": checked,
            "written_sha256": _sha256(item.written), "target_sha256": _sha256(item.read_back),
            "verified_by": item.verified_by, "outcome": item.outcome,
            **message_columns(text)}


def _sha256(fingerprint: str | None) -> str:
    """The hexadecimal digest of a ``sha256:`` fingerprint (as ``sha256sum`` prints it);
    empty for another kind (a meaning's) or none."""
    return fingerprint.removeprefix("sha256:") if fingerprint and fingerprint.startswith(
        "sha256:") else ""


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
    """The rows and counts of a verify, filled by principals checked side by side; the
    items' rows go to ``items`` as they come (``add_item``), none kept."""

    items: CsvStream | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "checked": 0, "target_items": 0, "mismatches": 0, "missing": 0, "content_differs": 0,
        "duplicates": 0, "not_in_source": 0, "flags_differ": 0, "dates_differ": 0, "changed_at_source": 0,
        "deleted_at_source": 0, "errors": 0, "read_back_sha256": 0,
        "read_back_meaning": 0, "not_verified": 0, "source_hash_matched": 0,
        "no_source_hash": 0, "source_check_not_recorded": 0})
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

    def add_item(self, base: dict[str, Any], item: ItemCheck) -> None:
        """One item of a document container: its row written out, and, for an item of the
        source (not an ``extra``), how it was verified and how its source was checked
        counted."""
        row = item_row(base, item)
        with self.lock:
            if item.outcome != "extra":
                self.counts[item.verified_by] += 1
                if row["source_check"]:
                    self.counts[row["source_check"]] += 1
            if self.items is not None:
                self.items.write(row)

    def add_error(self, user: Principal, text: Text) -> None:
        """A principal or container that could not be checked: it counts as a mismatch."""
        with self.lock:
            self.counts["mismatches"] += 1
            self.counts["errors"] += 1
            self.rows.append(error_row(user, text))

    def summary(self, users: int) -> dict[str, int]:
        return {**self.counts, "users": users}

    def document(self, batch: str, users: int, stopped: Text | None) -> dict[str, Any]:
        named = {"items_report": self.items.path.name} if self.items is not None else {}
        return {"batch": batch, "summary": self.summary(users), **named, **ending(stopped)}
