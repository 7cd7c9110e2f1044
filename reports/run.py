"""The run's report: each unit's outcome, its notes and failed items, the mailboxes found
full, and the totals the ledger keeps for the run."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from reports.files import message_columns
from reports.i18n import Size, Text
from reports.rows import (
    Note,
    Principal,
    Refusal,
    ending,
    error_row,
    joined,
    note_text,
    refusal_text,
)


class UnitOutcome(Protocol):
    """What a unit did (``migrate.mail.UnitResult``), as far as the report reads it."""

    @property
    def copied(self) -> int: ...

    @property
    def copied_bytes(self) -> int: ...

    @property
    def recovered(self) -> int: ...

    @property
    def flag_updates(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def deleted_at_source(self) -> int: ...

    @property
    def removed_on_target(self) -> int: ...

    @property
    def left_on_target(self) -> int: ...

    @property
    def interrupted(self) -> bool: ...

    @property
    def quota_left(self) -> int: ...

    @property
    def quota_left_bytes(self) -> int: ...

    @property
    def space_full(self) -> bool: ...

    @property
    def converted(self) -> Sequence[str]: ...

    @property
    def notes(self) -> Sequence[Note]: ...

    @property
    def errors(self) -> Sequence[tuple[str, Refusal]]: ...


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

    def planned(self, rows: list[dict[str, Any]], skipped: int) -> None:
        """What the planner decided not to run for a principal (folders skipped, notes of the
        source)."""
        with self.lock:
            self.rows.extend(rows)
            self.totals["skipped"] += skipped

    def add(self, base: dict[str, Any], action: str, reasons: list[Text],
            result: UnitOutcome, failed_unit: bool = False) -> None:
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
        for count, code in ((result.removed_on_target, "messages_removed_on_target"),
                            (result.left_on_target, "messages_left_on_target")):
            if count:
                rows.append({**base, "action": "note", "messages": count,
                             **message_columns(Text.of(code, count=count))})
        rows += [{**base, "action": "failed", "source_id": sid,
                  **message_columns(refusal_text(e))} for sid, e in result.errors]
        if result.quota_left and result.space_full:
            rows.append({**base, "action": "over_quota", "messages": result.quota_left,
                         "bytes": result.quota_left_bytes, **message_columns(Text.of(
                             "space_full", count=result.quota_left,
                             size=Size(result.quota_left_bytes)))})
        with self.lock:
            for key, value in (("copied", result.copied), ("bytes", result.copied_bytes),
                               ("flag_updates", result.flag_updates), ("failed", result.failed),
                               ("recovered", result.recovered),
                               ("units_failed", int(failed_unit)),
                               ("units_interrupted", int(result.interrupted)),
                               ("over_quota", result.quota_left),
                               ("over_quota_bytes", result.quota_left_bytes)):
                self.totals[key] += value
            if result.quota_left and not result.space_full:
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

    def principal_failed(self, user: Principal, text: Text) -> None:
        """A principal whose units could not be decided: counted as a failed unit."""
        with self.lock:
            self.rows.append(error_row(user, text))
            self.totals["units_failed"] += 1

    def quota_rows(self) -> list[dict[str, Any]]:
        """One row per mailbox found full, with what it kept out."""
        return [{"principal": principal, "target": target, "action": "over_quota",
                 "messages": count, "bytes": size,
                 **message_columns(Text.of("mailbox_full", count=count, size=Size(size)))}
                for (principal, target), (count, size) in sorted(self.quota.items())]

    def entries(self) -> list[dict[str, Any]]:
        """Every row of the report: the units', then the mailboxes found full."""
        return self.rows + self.quota_rows()

    def status(self, signalled: bool, stopped: bool) -> str:
        """How the run ended, as the ledger and the report keep it: ``interrupted`` by a
        signal, ``stopped`` by the engine (a server down, the ledger failing), ``failed``
        when an item, a unit or a full mailbox was left behind, else ``done``."""
        if signalled:
            return "interrupted"
        if stopped:
            return "stopped"
        totals = self.totals
        if totals["failed"] or totals["units_failed"] or totals["over_quota"]:
            return "failed"
        return "done"

    def document(self, batch: str, run_id: int, status: str, stopped: Text | None,
                 notices: list[Text]) -> dict[str, Any]:
        return {"batch": batch, "run_id": run_id, "status": status, "summary": self.totals,
                **ending(stopped), "notices": [message_columns(n) for n in notices]}
