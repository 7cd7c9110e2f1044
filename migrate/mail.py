"""The mail workload: plan a principal's folders, copy one folder (a work unit), verify it.

Protocol-free: it speaks to connectors only through ``MailSource`` and ``MailSink``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Protocol, TypeVar

from connectors.base import (
    SYSTEM_FLAGS,
    BasculeError,
    Container,
    ItemRef,
    ItemRejected,
    MailSink,
    MailSource,
    Message,
    SinkCapabilities,
    SourceNote,
)
from connectors.lines import with_crlf
from connectors.spool import MEMORY_LIMIT as SPOOL_MEMORY_LIMIT
from mappings.folders import FolderDecision, FolderRules
from migrate.ledger import DONE, FAILED, INFLIGHT, ItemRecord, Ledger, Unit
from migrate.prefetch import read_ahead

WORKLOAD = "mail"
INFLIGHT_CHUNK = 64
"""Messages recorded in flight per ledger commit: fewer commits, a small re-check window."""
OUTCOME_CHUNK = 128


def container_key(path: tuple[str, ...]) -> str:
    """The ledger's name for a source folder: its path, segments joined by a character that
    no IMAP or Maildir name carries."""
    return "\x1f".join(path)


def path_of(key: str) -> tuple[str, ...]:
    return tuple(key.split("\x1f"))


def shown(path: tuple[str, ...] | None) -> str:
    return "/".join(path) if path else ""


@dataclass
class FolderPlan:
    """One source folder in the plan, and what a run would do with it."""

    container: Container
    decision: FolderDecision
    messages: int = 0
    bytes: int = 0
    to_copy: int = 0
    to_copy_bytes: int = 0
    flag_updates: int = 0
    too_big: list[ItemRef] = field(default_factory=list)


def decide_folders(
    source: MailSource, rules: FolderRules, capabilities: SinkCapabilities
) -> list[tuple[Container, FolderDecision]]:
    containers = source.containers()
    decisions = rules.decide(
        [(c.path, c.role) for c in containers],
        target_separator=capabilities.separator,
        target_forbidden=capabilities.forbidden_chars,
        target_special=capabilities.special_folders,
    )
    by_path = {c.path: c for c in containers}
    return [(by_path[d.source], d) for d in decisions]


def plan_folder(
    source: MailSource, plan: FolderPlan, known: dict[str, ItemRecord], max_item_size: int | None,
) -> None:
    """Fill in counts without moving anything. Reads the listing, never the bodies."""
    listing = source.list_changes(plan.container, None)
    for ref in listing.refs:
        plan.messages += 1
        plan.bytes += ref.size
        record = known.get(ref.source_id)
        if max_item_size is not None and ref.size > max_item_size:
            plan.too_big.append(ref)
        elif record is None or record.status != DONE:
            plan.to_copy += 1
            plan.to_copy_bytes += ref.size
        elif record.flags != ref.flags:
            plan.flag_updates += 1


class UnitProgress(Protocol):
    """Where a unit says how much it is about to copy, then how much it has sent."""

    def planned(self, items: int, size: int) -> None: ...

    def advanced(self, items: int, size: int) -> None: ...


class SilentProgress:
    def planned(self, items: int, size: int) -> None:
        pass

    def advanced(self, items: int, size: int) -> None:
        pass


def source_notes(source: object) -> list[SourceNote]:
    """What a source (or a sink) noticed since it was last asked, if it can tell."""
    drain = getattr(source, "drain_notes", None)
    return drain() if drain is not None else []


def fetch_as_stored(
    source: MailSource, container: Container, source_ids: list[str],
    capabilities: SinkCapabilities, converted: list[str] | None = None,
) -> Iterator[Message]:
    """The source's messages as the target will hold them: with CRLF line endings for a
    target that stores nothing else, so fingerprints compare with what it serves. The ids
    of converted messages are appended to ``converted``."""
    for message in source.fetch(container, source_ids):
        if capabilities.crlf_only:
            crlf = with_crlf(message)
            if crlf is not None:
                if converted is not None:
                    converted.append(message.source_id)
                message = crlf
        yield message


@dataclass
class UnitResult:
    copied: int = 0
    copied_bytes: int = 0
    recovered: int = 0
    flag_updates: int = 0
    failed: int = 0
    deleted_at_source: int = 0
    converted: list[str] = field(default_factory=list)
    """Source ids of messages whose bare LF line endings became CRLF."""
    notes: list[SourceNote] = field(default_factory=list)
    """What the source noticed while this unit ran, other than unreadable items."""
    errors: list[tuple[str, BasculeError]] = field(default_factory=list)


class MailUnit:
    """Copies one source folder to one target folder, checkpointing in the ledger."""

    def __init__(
        self, ledger: Ledger, unit: Unit, source: MailSource, sink: MailSink,
        container: Container, target_path: tuple[str, ...],
        progress: UnitProgress | None = None, max_item_size: int | None = None,
    ) -> None:
        self.ledger = ledger
        self.unit = unit
        self.source = source
        self.sink = sink
        self.container = container
        self.target_path = target_path
        self.progress = progress or SilentProgress()
        self.max_item_size = size_limit(sink.capabilities.max_item_size, max_item_size)
        self.result = UnitResult()

    def run(self) -> UnitResult:
        self.native = self.sink.ensure_container(self.target_path)
        self.ledger.update_unit(self.unit.id, target_container=self.native, status="running")
        self._recover_inflight()
        listing = self.source.list_changes(self.container, self.unit.cursor)
        known = self.ledger.items_of(self.unit.id)
        if listing.reset:
            self._rekey(listing.refs, known)
            known = self.ledger.items_of(self.unit.id)
        listed = {ref.source_id: ref for ref in listing.refs}

        to_copy = [sid for sid, ref in listed.items() if _needs_copy(known.get(sid))]
        if listing.complete:
            self.result.deleted_at_source = sum(
                1 for sid, rec in known.items() if rec.status == DONE and sid not in listed
            )
        else:
            to_copy += [sid for sid, rec in known.items() if rec.status != DONE and sid not in listed]

        self._update_flags(listed, known)
        to_copy = self._refuse_too_big(to_copy, listed)
        self.progress.planned(len(to_copy), sum(listed[s].size for s in to_copy if s in listed))
        if to_copy:
            self._copy(to_copy)
        self._take_notes()
        self.ledger.refresh_counts(self.unit.id)
        self.ledger.update_unit(
            self.unit.id, cursor=listing.cursor,
            status="failed" if self.result.failed else "done",
            last_error=None,
        )
        return self.result

    def _take_notes(self) -> None:
        self.result.notes.extend(source_notes(self.sink))
        take_source_notes(self.ledger, self.unit, self.source, self.result)

    def _recover_inflight(self) -> None:
        """Items sent before a crash and never acknowledged in the ledger: find them on the
        target before anything is sent again."""
        known = self.ledger.items_of(self.unit.id)
        inflight = [rec for rec in known.values() if rec.status == INFLIGHT]
        if not inflight:
            return
        claimed = self.ledger.claimed_refs(self.unit.principal, self.native)
        found = []
        for record in inflight:
            if record.fingerprint is None or record.size is None:
                continue
            ref = self.sink.find(self.native, record.fingerprint, record.size, claimed)
            if ref is not None:
                claimed.add(ref)
                found.append({"source_id": record.source_id, "target_ref": ref})
        self.ledger.record_outcomes(self.unit.id, found)
        self.result.recovered = len(found)

    def _rekey(self, refs: list[ItemRef], known: dict[str, ItemRecord]) -> None:
        """The source renumbered its items (IMAP UIDVALIDITY): match the new ids to what was
        copied under the old ones by size, then by fingerprint."""
        by_size: dict[int, list[ItemRecord]] = defaultdict(list)
        for record in known.values():
            if record.status == DONE and record.size is not None and record.fingerprint:
                by_size[record.size].append(record)
        candidates = [ref.source_id for ref in refs if ref.size in by_size]
        renames: dict[str, str] = {}
        for message in fetch_as_stored(self.source, self.container, candidates,
                                       self.sink.capabilities):
            pool = by_size[message.size]
            match = next((r for r in pool if r.fingerprint == message.fingerprint), None)
            if match is not None:
                pool.remove(match)
                renames[match.source_id] = message.source_id
        forget = [sid for sid, rec in known.items() if rec.status != DONE and sid not in renames]
        self.ledger.rekey(self.unit.id, renames, forget)

    def _update_flags(self, listed: dict[str, ItemRef], known: dict[str, ItemRecord]) -> None:
        keep = None if self.sink.capabilities.keywords else SYSTEM_FLAGS
        changes = []
        for sid, ref in listed.items():
            record = known.get(sid)
            if record is None or record.status != DONE or record.target_ref is None:
                continue
            wanted = ref.flags if keep is None else ref.flags & keep
            had = record.flags if keep is None else record.flags & keep
            if wanted != had:
                try:
                    self.sink.set_flags(self.native, record.target_ref, wanted)
                except BasculeError as error:
                    self.result.errors.append((sid, error))
                    continue
                changes.append((sid, ref.flags))
        self.ledger.set_flags(self.unit.id, changes)
        self.result.flag_updates = len(changes)

    def _refuse_too_big(self, to_copy: list[str], listed: dict[str, ItemRef]) -> list[str]:
        limit = self.max_item_size
        if limit is None:
            return to_copy
        kept, refused = [], []
        for sid in to_copy:
            ref = listed.get(sid)
            if ref is not None and ref.size > limit:
                error = ItemRejected(f"{ref.size} > {limit}", code="too_big")
                refused.append({"source_id": sid, "size": ref.size, "error_code": error.code,
                                "error_detail": error.detail})
                self.result.errors.append((sid, error))
            else:
                kept.append(sid)
        self.ledger.record_outcomes(self.unit.id, refused)
        self.result.failed += len(refused)
        return kept

    def _copy(self, source_ids: list[str]) -> None:
        outcomes: list[dict] = []
        fetched = fetch_as_stored(self.source, self.container, source_ids,
                                  self.sink.capabilities, self.result.converted)
        messages = self._marked(read_ahead(fetched, size=_held_in_memory))
        for result in self.sink.put_many(self.native, messages):
            if result.error is None and result.target_ref:
                outcomes.append({"source_id": result.source_id, "target_ref": result.target_ref})
                self.result.copied += 1
            else:
                error = result.error or BasculeError("no target reference")
                outcomes.append({
                    "source_id": result.source_id, "error_code": error.code,
                    "error_detail": error.detail,
                })
                self.result.failed += 1
                self.result.errors.append((result.source_id, error))
            if len(outcomes) >= OUTCOME_CHUNK:
                self.ledger.record_outcomes(self.unit.id, outcomes)
                outcomes = []
        self.ledger.record_outcomes(self.unit.id, outcomes)

    def _marked(self, messages: Iterable[Message]) -> Iterator[Message]:
        """Yield messages to the sink, each recorded in flight in a committed transaction
        before the sink can send a byte of it."""
        for chunk in chunks(messages, INFLIGHT_CHUNK):
            self.ledger.mark_inflight(self.unit.id, (_inflight_record(m) for m in chunk))
            for message in chunk:
                self.result.copied_bytes += message.size
                self.progress.advanced(1, message.size)
                yield message


T = TypeVar("T")

ITEM_FAILURES = ("unreadable_item", "hash_mismatch")
"""Source notes that mean an item could not be copied: failures, retried by a later run."""


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter), read lazily."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def take_source_notes(ledger: Ledger, unit: Unit, source: object, result: UnitResult) -> None:
    """Items the source could not read are failures of the unit (a later run asks again);
    its other notes go to the report as they are."""
    failures = []
    for note in source_notes(source):
        if note.code in ITEM_FAILURES:
            failures.append({"source_id": note.subject, "error_code": note.code,
                             "error_detail": note.detail})
            result.errors.append((note.subject, BasculeError(note.detail, code=note.code)))
        else:
            result.notes.append(note)
    ledger.record_outcomes(unit.id, failures)
    result.failed += len(failures)


def _held_in_memory(message: Message) -> int:
    """What a fetched message weighs in memory: large bodies are spooled to disk."""
    return message.size if message.size <= SPOOL_MEMORY_LIMIT else 0


def size_limit(*limits: int | None) -> int | None:
    """The smallest of the limits that are set: the server's and the batch's."""
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _needs_copy(record: ItemRecord | None) -> bool:
    return record is None or record.status in (FAILED, INFLIGHT)


def _inflight_record(message: Message) -> dict:
    return {
        "source_id": message.source_id, "fingerprint": message.fingerprint, "size": message.size,
        "flags": message.flags,
        "internal_date": message.internal_date.isoformat() if message.internal_date else None,
    }


@dataclass
class Mismatch:
    source_id: str | None
    target_ref: str | None
    code: str
    params: dict = field(default_factory=dict)


def verify_folder(
    ledger: Ledger, unit: Unit, source: MailSource, sink: MailSink, container: Container,
) -> tuple[int, list[Mismatch]]:
    """Read both sides whole and compare, item by item, through the ledger's mapping."""
    native = unit.target_container
    listing = source.list_changes(container, None)
    ids = [r.source_id for r in listing.refs]
    source_prints = {m.source_id: (m.fingerprint, m.flags) for m in
                     fetch_as_stored(source, container, ids, sink.capabilities)}
    keep = None if sink.capabilities.keywords else SYSTEM_FLAGS
    stored = {s.target_ref: s for s in sink.inventory(native, fingerprints=True)} if native else {}
    known = ledger.items_of(unit.id)
    mismatches: list[Mismatch] = []
    for sid, (fingerprint, flags) in source_prints.items():
        record = known.get(sid)
        target = stored.get(record.target_ref) if record and record.target_ref else None
        if target is None:
            mismatches.append(Mismatch(sid, record.target_ref if record else None, "missing_on_target"))
            continue
        if target.fingerprint != fingerprint:
            mismatches.append(Mismatch(sid, target.target_ref, "fingerprint_mismatch"))
        wanted = flags if keep is None else flags & keep
        held = target.flags if keep is None else target.flags & keep
        if wanted != held:
            mismatches.append(Mismatch(sid, target.target_ref, "flags_mismatch", {
                "source": " ".join(sorted(wanted)), "target": " ".join(sorted(held))}))
    return len(source_prints), mismatches
