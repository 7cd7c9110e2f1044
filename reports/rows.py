"""The rows every report is made of, and the columns of its CSV.

A row is a plain dict keyed by ``ENTRY_COLUMNS``: who (``principal``, ``target``), where
(``folder``, ``target_folder``), what (``action``), counts, and a reason as its code and
its sentence in each language. What the rows are made from comes from the engine as
objects read by their attributes (the protocols below): reports import nothing of the
engine, the connectors or the mappings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from reports.files import message_columns
from reports.i18n import Text

ENTRY_COLUMNS = [
    "principal", "target", "folder", "target_folder", "action", "messages", "bytes",
    "to_copy", "copied", "failed", "source_id", "target_ref", "code", "message_en",
    "message_fr",
]


class Principal(Protocol):
    """A line of the users table: who at the source, who on the target."""

    @property
    def source(self) -> str: ...

    @property
    def target(self) -> str: ...


class Note(Protocol):
    """Something a source left out, changed or could not read (``connectors.base.SourceNote``):
    a catalogue code, its subject (a source id or a folder path), its detail and parameters."""

    @property
    def code(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def params(self) -> Mapping[str, object]: ...


class Decision(Protocol):
    """What the folder rules decided for a source folder (``mappings.folders.FolderDecision``):
    the codes of the rules that applied, and the detail they name."""

    @property
    def reasons(self) -> Sequence[str]: ...

    @property
    def detail(self) -> str: ...


class Refusal(Protocol):
    """An error with a catalogue code (``connectors.base.BasculeError``). One that explains
    itself in both languages also has ``message_en`` and ``message_fr``, and may name the
    server's own code in ``error_code``."""

    @property
    def code(self) -> str: ...

    @property
    def detail(self) -> str: ...

    @property
    def params(self) -> Mapping[str, object]: ...


def refusal_text(error: Refusal) -> Text:
    """What a person reads of an error with a code."""
    english, french = getattr(error, "message_en", None), getattr(error, "message_fr", None)
    if isinstance(english, str) and isinstance(french, str):
        detail = getattr(error, "error_code", "")
        prefix = f"{detail}: " if detail else ""
        return Text.both(error.code, prefix + english, prefix + french)
    return Text.of(error.code, **{"detail": error.detail, **error.params})


def note_text(note: Note) -> Text:
    return Text.of(note.code, detail=note.detail, **note.params)


def note_rows(user: Principal, notes: Iterable[Note]) -> list[dict[str, Any]]:
    """Report rows for what a source noticed about a principal's folders."""
    return [{"principal": user.source, "target": user.target,
             "folder": note.subject if note.code.endswith("folder_skipped") else "",
             "source_id": "" if note.code.endswith("folder_skipped") else note.subject,
             "action": "skip" if note.code.endswith("folder_skipped") else "note",
             **message_columns(note_text(note))} for note in notes]


def error_row(user: Principal, text: Text) -> dict[str, Any]:
    """A principal the command could not go through, and why."""
    return {"principal": user.source, "target": user.target, "action": "error",
            **message_columns(text)}


def problem_rows(problems: Iterable[Text]) -> list[dict[str, Any]]:
    """What stands in the way of the whole batch, before any principal."""
    return [{"principal": "", "action": "error", **message_columns(p)} for p in problems]


def unit_columns(user: Principal, spec: Mapping[str, Any]) -> dict[str, Any]:
    """The columns naming a unit in the reports, from the spec the planner wrote for it."""
    return {"principal": user.source, "target": user.target, "folder": spec.get("folder", ""),
            "target_folder": spec.get("target_folder", "")}


def reasons_of(codes: Iterable[str], detail: str) -> list[Text]:
    """The sentences of the folder rules that applied, each naming the rule's detail."""
    return [Text.of(code, detail=detail) for code in codes]


def decided(decision: Decision) -> tuple[str, list[Text]]:
    """The report's action for a folder copied (``rename`` when a rule renamed it), and why."""
    action = "rename" if any(c.startswith("renamed") for c in decision.reasons) else "copy"
    return action, reasons_of(decision.reasons, decision.detail)


def joined(reasons: list[Text]) -> dict[str, str]:
    """Several reasons in one row's code and message columns."""
    if not reasons:
        return {}
    return {"code": " ".join(r.code for r in reasons),
            "message_en": "; ".join(r.en for r in reasons),
            "message_fr": "; ".join(r.fr for r in reasons)}


def skip_row(base: dict[str, Any], reasons: list[Text]) -> dict[str, Any]:
    """A folder the rules leave at the source."""
    return {**base, "action": "skip", **joined(reasons)}


def ending(stopped: Text | None) -> dict[str, Any]:
    """How a command ended early, for its report's document (nothing when it did not)."""
    return {} if stopped is None else {"stopped": message_columns(stopped)}
