"""The rows and totals of reports, as work units and principals fill them from several
threads: a unit's outcome, its notes and failed items, a verify's findings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from connectors.base import BasculeError, SourceNote
from mappings.folders import FolderDecision
from mappings.users import UserMapping
from migrate.compare import FAULTS, FolderCheck
from migrate.mail import UnitResult
from reports.files import message_columns
from reports.i18n import Size, Text

ENTRY_COLUMNS = [
    "principal", "target", "folder", "target_folder", "action", "messages", "bytes",
    "to_copy", "copied", "failed", "source_id", "target_ref", "code", "message_en",
    "message_fr",
]


def text_of(error: Exception) -> Text:
    english, french = getattr(error, "message_en", None), getattr(error, "message_fr", None)
    if isinstance(english, str) and isinstance(french, str):
        detail = getattr(error, "error_code", "")
        prefix = f"{detail}: " if detail else ""
        return Text.both(getattr(error, "code", "error"), prefix + english, prefix + french)
    if isinstance(error, BasculeError):
        return Text.of(error.code, **{"detail": error.detail, **error.params})
    return Text.of("error", detail=f"{type(error).__name__}: {error}")




def note_rows(user: UserMapping, notes: list[SourceNote]) -> list[dict[str, Any]]:
    """Report rows for what a source noticed about a principal's folders."""
    return [{"principal": user.source, "target": user.target,
             "folder": note.subject if note.code.endswith("folder_skipped") else "",
             "source_id": "" if note.code.endswith("folder_skipped") else note.subject,
             "action": "skip" if note.code.endswith("folder_skipped") else "note",
             **message_columns(note_text(note))} for note in notes]


def note_text(note: SourceNote) -> Text:
    return Text.of(note.code, detail=note.detail, **note.params)


def error_row(user: UserMapping, text: Text) -> dict[str, Any]:
    return {"principal": user.source, "target": user.target, "action": "error",
            **message_columns(text)}


def decided(decision: FolderDecision) -> tuple[str, list[Text]]:
    """The report's action for a folder copied (``rename`` when a rule renamed it), and why."""
    action = "rename" if any(c.startswith("renamed") for c in decision.reasons) else "copy"
    return action, [Text.of(code, detail=decision.detail) for code in decision.reasons]


def joined(reasons: list[Text]) -> dict[str, str]:
    if not reasons:
        return {}
    return {"code": " ".join(r.code for r in reasons),
            "message_en": "; ".join(r.en for r in reasons),
            "message_fr": "; ".join(r.fr for r in reasons)}


@dataclass
class RunReport:
    """The rows and totals of a run, filled by units from several threads."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: {
        "copied": 0, "bytes": 0, "flag_updates": 0, "failed": 0, "skipped": 0,
        "recovered": 0, "units_failed": 0, "units_interrupted": 0, "units_not_started": 0,
        "over_quota": 0, "over_quota_bytes": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)
    quota: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(principal, target) -> [messages, bytes] a full mailbox kept out."""

    def add(self, base: dict[str, Any], action: str, reasons: list[Text],
            result: UnitResult, failed_unit: bool = False) -> None:
        """A unit's rows: its outcome (also when it failed part way: what it did before
        counts), its notes and its failed items."""
        rows = [{**base, "action": action, "copied": result.copied,
                 "bytes": result.copied_bytes, "failed": result.failed, **joined(reasons)}]
        rows += [{**base, "action": "note",
                  "source_id": "" if note.code == "removed_at_source" else note.subject,
                  **message_columns(note_text(note))}
                 for note in result.notes]
        if result.recovered:
            rows.append({**base, "action": "note", "messages": result.recovered,
                         **message_columns(Text.of("found_on_target", count=result.recovered))})
        if result.converted:
            rows.append({**base, "action": "note", "messages": len(result.converted),
                         "source_id": " ".join(result.converted),
                         **message_columns(Text.of("line_endings_converted"))})
        if result.deleted_at_source:
            rows.append({**base, "action": "note", "messages": result.deleted_at_source,
                         **message_columns(Text.of("deleted_at_source"))})
        rows += [{**base, "action": "failed", "source_id": sid, **message_columns(text_of(e))}
                 for sid, e in result.errors]
        with self.lock:
            for key, value in (("copied", result.copied), ("bytes", result.copied_bytes),
                               ("flag_updates", result.flag_updates), ("failed", result.failed),
                               ("recovered", result.recovered),
                               ("units_failed", int(failed_unit)),
                               ("units_interrupted", int(result.interrupted)),
                               ("over_quota", result.quota_left),
                               ("over_quota_bytes", result.quota_left_bytes)):
                self.totals[key] += value
            if result.quota_left:
                left = self.quota.setdefault((base["principal"], base["target"]), [0, 0])
                left[0] += result.quota_left
                left[1] += result.quota_left_bytes
            self.rows.extend(rows)

    def not_started(self, base: dict[str, Any]) -> None:
        """A unit the run stopped before it began: the next run starts it."""
        with self.lock:
            self.totals["units_not_started"] += 1
            self.rows.append({**base, "action": "not_started",
                              **message_columns(Text.of("unit_not_started"))})

    def quota_rows(self) -> list[dict[str, Any]]:
        """One row per mailbox found full, with what it kept out."""
        return [{"principal": principal, "target": target, "action": "over_quota",
                 "messages": count, "bytes": size,
                 **message_columns(Text.of("mailbox_full", count=count, size=Size(size)))}
                for (principal, target), (count, size) in sorted(self.quota.items())]


FINDING_TOTALS = {
    "missing_on_target": "missing", "fingerprint_mismatch": "missing",
    "duplicate_on_target": "duplicates", "not_in_source": "not_in_source",
    "flags_mismatch": "flags_differ", "date_mismatch": "dates_differ",
    "changed_since_copy": "changed_at_source", "deleted_at_source": "deleted_at_source",
}
"""The verify summary's total that counts each finding."""


@dataclass
class VerifyTally:
    """The rows and counts of a verify, filled by principals checked side by side."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "checked": 0, "target_items": 0, "mismatches": 0, "missing": 0, "duplicates": 0,
        "not_in_source": 0, "flags_differ": 0, "dates_differ": 0, "changed_at_source": 0,
        "deleted_at_source": 0, "errors": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, base: dict[str, Any], check: FolderCheck) -> None:
        """One target folder's rows: what was checked, then each finding."""
        rows = [{**base, "action": "verified", "messages": check.source_messages,
                 "copied": check.target_messages, "failed": check.faults}]
        rows += [{**base, "action": "mismatch" if f.code in FAULTS else "note",
                  "source_id": f.source_id, "target_ref": f.target_ref,
                  **message_columns(Text.of(f.code, **f.params))} for f in check.findings]
        with self.lock:
            self.counts["checked"] += check.source_messages
            self.counts["target_items"] += check.target_messages
            self.counts["mismatches"] += check.faults
            for finding in check.findings:
                self.counts[FINDING_TOTALS[finding.code]] += 1
            self.rows.extend(rows)

    def add_error(self, user: UserMapping, text: Text) -> None:
        with self.lock:
            self.counts["mismatches"] += 1
            self.counts["errors"] += 1
            self.rows.append(error_row(user, text))
