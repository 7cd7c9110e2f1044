"""The mail workload: plan a principal's folders, copy one folder (a work unit), verify it.

Protocol-free: it speaks to connectors only through ``MailSource`` and ``MailSink``.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol, TypeVar

from connectors.base import (
    CHANGED,
    REMOVED,
    SYSTEM_FLAGS,
    BasculeError,
    ConnectError,
    Container,
    ItemRef,
    ItemRejected,
    Message,
    RemovalRefused,
    SendUnconfirmed,
    SinkCapabilities,
    SourceNote,
)
from connectors.lines import with_crlf
from connectors.protocols import (
    ListedCountSink,
    MailSink,
    MailSource,
    RemovingMailSink,
    SizedSendSink,
)
from connectors.spool import MEMORY_LIMIT as SPOOL_MEMORY_LIMIT
from mappings.folders import FolderDecision, FolderRules
from migrate.ledger import DONE, FAILED, UNSETTLED, ItemRecord, Ledger, Unit
from migrate.matching import TargetIndex
from migrate.prefetch import read_ahead
from reports.i18n import Text

WORKLOAD = "mail"
INFLIGHT_CHUNK = 64
"""Messages recorded in flight per ledger commit: fewer commits, a small re-check window."""
OUTCOME_CHUNK = 128
REMOVE_CHUNK = 64
"""Messages removed from the target per round trip, each chunk forgotten by the ledger once
the target confirmed it."""


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
    source: MailSource, rules: FolderRules, sink: MailSink
) -> list[tuple[Container, FolderDecision]]:
    """Where each source folder goes. The source's folder list and the sink's capabilities
    are read at once: on a new pair, both logins and listings overlap."""
    with ThreadPoolExecutor(max_workers=1) as meanwhile:
        asked = meanwhile.submit(lambda: sink.capabilities)
        containers = source.containers()
        capabilities = asked.result()
    decisions = rules.decide(
        [(c.path, c.role) for c in containers],
        target_separator=capabilities.separator,
        target_forbidden=capabilities.forbidden_chars,
        target_special=capabilities.special_folders,
        literal={c.path[:1] for c in containers if c.part},
    )
    by_path = {c.path: c for c in containers}
    return [(by_path[d.source], d) for d in decisions]


def settled(container: Container, unit: Unit | None, target: str | None,
            removing: bool = False) -> bool:
    """Whether a folder's unit has nothing to do, from what the source's folder list said of
    it, without a round trip of its own: unchanged since a pass that left nothing behind
    into the same target folder ``target`` (its native name), or empty and never copied
    from. A folder emptied since a pass that copied from it is not settled: its run
    reports the deletions. Nor, when ``removing`` the source's deletions, is one whose
    ledger holds more copies than the folder holds messages (``may_hold_deleted``)."""
    if unit is None or unit.status == "pending":
        return container.count == 0
    if unit.status != "done" or unit.failed or unit.target_container != target:
        return False
    if removing and may_hold_deleted(container, unit.copied):
        return False
    if container.state is not None and unit.cursor == container.state:
        return True
    return container.count == 0 and unit.copied == 0


def may_hold_deleted(container: Container, copied: int) -> bool:
    """Whether copies recorded done (``copied``) may include messages the source deleted
    since: more of them than the folder list says the folder holds, or a folder list that
    does not say. A pass that only reported deletions left their copies recorded, and the
    source's next delta tells nothing of them: a pass that removes them lists the folder
    whole. (Copies of deleted messages that new arrivals outnumber are not noticed this
    way; the next deletion in the folder lists it whole.)"""
    return container.count is None or copied > container.count


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
    """Bytes the target acknowledged, not bytes tried."""
    recovered: int = 0
    """Messages found on the target by content, not sent again."""
    flag_updates: int = 0
    failed: int = 0
    deleted_at_source: int = 0
    """Copies of items deleted at the source, left on the target (``deletions = "report"``,
    or a target that cannot remove them)."""
    removed_on_target: int = 0
    """Copies of messages deleted at the source that this unit removed from the target."""
    left_on_target: int = 0
    """Copies of messages deleted at the source left on the target, changed there since."""
    interrupted: bool = False
    """The unit stopped before its end (a stop asked for, the mailbox full)."""
    quota_left: int = 0
    quota_left_bytes: int = 0
    """Messages (and their bytes) not copied because the target mailbox is full; items of a
    document unit whose target space is full (``space_full``)."""
    space_full: bool = False
    """The quota counts are a document space's, said with its unit; a mailbox's are said
    once for the principal."""
    converted: list[str] = field(default_factory=list)
    """Source ids of messages whose bare LF line endings became CRLF."""
    notes: list[SourceNote] = field(default_factory=list)
    """What the source noticed while this unit ran, other than unreadable items."""
    errors: list[tuple[str, BasculeError]] = field(default_factory=list)


@dataclass
class Brakes:
    """What stops a unit from sending more, checked before each message: a stop asked for
    by the user or the engine (``stop``), or the principal's target mailbox found full
    (``mailbox_full``, shared by the principal's units). Messages already sent are answered
    and recorded; the others are left for the next run."""

    stop: threading.Event = field(default_factory=threading.Event)
    mailbox_full: threading.Event = field(default_factory=threading.Event)

    def engaged(self) -> bool:
        return self.stop.is_set() or self.mailbox_full.is_set()


SEND_ROUNDS = 6
"""Passes over a folder's unconfirmed sends within one unit: after a dropped connection, the
messages it left unanswered are looked for on the target, and sent again if absent. What is
still unconfirmed after that (a message that breaks the connection each time it is sent) is
left for the next run, which looks for it first too."""


class MailUnit:
    """Copies one source folder to one target folder, checkpointing in the ledger.

    ``result`` is filled as the unit goes, so that a unit that raises still tells what it
    did before. ``target_empty``: the target folder was created by this run's planning or
    found empty then, so it holds nothing an earlier run sent and needs no count before the
    first send.

    Messages deleted at the source since they were copied are left on the target and
    counted (``deleted_at_source``), or, with ``remove_deleted`` (``deletions =
    "remove"``), removed from it by a sink that can (``RemovingMailSink``): each only while
    its flags are those bascule last gave it, so that one a person read, flagged, answered
    or labelled on the target stays (``left_on_target``); one moved or deleted there is
    gone already. Each chunk is forgotten by the ledger once the target confirmed it: a
    run cut in between finds the rest removed already, and forgets them then. Nothing is
    removed in a pass where the source renumbered its messages, nor in one cut short."""

    def __init__(
        self, ledger: Ledger, unit: Unit, source: MailSource, sink: MailSink,
        container: Container, target_path: tuple[str, ...],
        progress: UnitProgress | None = None, max_item_size: int | None = None,
        brakes: Brakes | None = None, result: UnitResult | None = None,
        target_empty: bool = False, remove_deleted: bool = False,
    ) -> None:
        self.ledger = ledger
        self.unit = unit
        self.source = source
        self.sink = sink
        self.container = container
        self.target_path = target_path
        self.progress = progress or SilentProgress()
        self.max_item_size = size_limit(sink.capabilities.max_item_size, max_item_size)
        self.brakes = brakes or Brakes()
        self.result = result if result is not None else UnitResult()
        self.target_empty = target_empty
        self.remove_deleted = remove_deleted

    def run(self) -> UnitResult:
        started = time.monotonic()
        self.native = self.sink.ensure_container(self.target_path)
        self.ledger.update_unit(self.unit.id, target_container=self.native, status="running",
                                last_run=self.unit.planned_run)
        listing = self.source.list_changes(self.container, self.unit.cursor)
        known = self.ledger.items_of(self.unit.id)
        if listing.reset:
            self._rekey(listing.refs, known)
            known = self.ledger.items_of(self.unit.id)
        elif self.remove_deleted and not listing.complete and may_hold_deleted(
                self.container, sum(1 for rec in known.values() if rec.status == DONE)):
            listing = self.source.list_changes(self.container, None)
        listed = {ref.source_id: ref for ref in listing.refs}

        to_copy = [sid for sid, ref in listed.items() if _needs_copy(known.get(sid))]
        deleted: list[ItemRecord] = []
        if listing.complete:
            deleted = [rec for sid, rec in known.items()
                       if rec.status == DONE and sid not in listed]
        else:
            to_copy += [sid for sid, rec in known.items() if rec.status != DONE and sid not in listed]

        self._update_flags(listed, known)
        to_copy = self._refuse_too_big(to_copy, listed)
        sizes = {sid: listed[sid].size if sid in listed else (known[sid].size or 0)
                 for sid in to_copy}
        self.progress.planned(len(to_copy), sum(sizes.values()))
        if to_copy and not self.brakes.engaged():
            self._copy(to_copy, known)
        if self.brakes.engaged():
            self._note_left_behind(to_copy, sizes)
        if deleted and self.remove_deleted and not listing.reset and not self.brakes.engaged():
            deleted = self._remove(deleted)
        self.result.deleted_at_source = len(deleted)
        self._take_notes()
        if self.result.interrupted:
            # The cursor stays where it was: what was not reached is listed again next time.
            self.ledger.refresh_counts(self.unit.id, status="interrupted", last_error=None)
        else:
            # Its step timed for the next plan's estimate, with its end, in one write.
            self.ledger.refresh_counts(
                self.unit.id, cursor=listing.cursor,
                status="failed" if self.result.failed else "done", last_error=None,
                timed=self.unit.timed(started, self.result.copied, self.result.copied_bytes))
        return self.result

    def _remove(self, deleted: list[ItemRecord]) -> list[ItemRecord]:
        """Remove from the target the copies of messages deleted at the source, a chunk at a
        time, each chunk forgotten once the target confirmed it; answer those left there
        because the target cannot remove single messages (with a note) or for an error
        (counted failed). Those changed on the target since are counted apart. A stop asked
        for ends it between chunks, the unit interrupted."""
        if not isinstance(self.sink, RemovingMailSink):
            self.result.notes.append(SourceNote("removal_unsupported", shown(self.target_path)))
            return deleted
        left: list[ItemRecord] = []
        for start in range(0, len(deleted), REMOVE_CHUNK):
            chunk = deleted[start:start + REMOVE_CHUNK]
            if self.brakes.engaged():
                self.result.interrupted = True
                return left + deleted[start:]
            stored = {rec.target_ref: rec.flags for rec in chunk if rec.target_ref}
            try:
                fates = self.sink.remove_messages(self.native, stored)
            except RemovalRefused:
                self.result.notes.append(SourceNote("removal_unsupported",
                                                    shown(self.target_path)))
                return left + deleted[start:]
            except ConnectError:
                raise  # the unit fails as for any target lost; the next run asks again
            except BasculeError as error:
                self.result.failed += len(chunk)
                self.result.errors += [(rec.source_id, error) for rec in chunk]
                continue
            forget = []
            for rec in chunk:
                fate = fates.get(rec.target_ref) if rec.target_ref else None
                if fate == CHANGED:
                    self.result.left_on_target += 1
                elif fate is None:
                    left.append(rec)
                else:
                    forget.append(rec.source_id)
                    if fate == REMOVED:
                        self.result.removed_on_target += 1
            if forget:
                self.ledger.rekey(self.unit.id, {}, forget)
        return left

    def _note_left_behind(self, to_copy: list[str], sizes: dict[str, int]) -> None:
        """After the brakes: whether anything was left for the next run, and what a full
        mailbox kept out (messages never sent, or refused as over quota)."""
        outcomes = self.ledger.outcomes_of(self.unit.id, to_copy)
        left = [sid for sid in to_copy if outcomes.get(sid, ("", None))[0] != DONE]
        self.result.interrupted = bool(left)
        if self.brakes.mailbox_full.is_set():
            kept_out = [sid for sid in left if outcomes.get(sid, ("", None))[0] != FAILED
                        or outcomes[sid][1] == "over_quota"]
            self.result.quota_left = len(kept_out)
            self.result.quota_left_bytes = sum(sizes[sid] for sid in kept_out)

    def _take_notes(self) -> None:
        self.result.notes.extend(source_notes(self.sink))
        take_source_notes(self.ledger, self.unit, self.source, self.result)

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
        self.result.flag_updates += len(changes)

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

    def _copy(self, to_copy: list[str], known: dict[str, ItemRecord]) -> None:
        """Send what is missing, in rounds: what a round leaves unconfirmed is looked for on
        the target by the next one before it is sent again."""
        unsettled = any(known[sid].status in UNSETTLED for sid in to_copy if sid in known)
        index = self._target_index(force=unsettled)
        pending = to_copy
        for tries in range(1, SEND_ROUNDS + 1):
            unconfirmed = self._send(pending, index)
            if not unconfirmed or self.brakes.engaged():
                break
            index = self._target_index(force=True)
            pending = unconfirmed
        self.result.failed += len(unconfirmed)
        self.result.errors += [(sid, SendUnconfirmed(params={
            "detail": Text.of("cut_while_sent", count=tries)})) for sid in unconfirmed]

    def _target_index(self, force: bool) -> TargetIndex | None:
        """The target folder's unclaimed messages, when it may hold some: always after an
        unconfirmed send, else when it holds more messages than the ledger accounts for
        (never in a folder this run created or found empty: all it holds was recorded in
        flight first)."""
        principal = self.unit.principal
        if not force and (self.target_empty or self._stored() <= self.ledger.claimed_count(
                principal, self.native)):
            return None
        index = TargetIndex(self.sink, self.native,
                            self.ledger.claimed_refs(principal, self.native))
        return index if index.unclaimed else None

    def _stored(self) -> int:
        """How many messages the target folder holds: as this command's folder list counted
        them where the sink kept that count (what an earlier run left there is in it),
        else asked."""
        listed = (self.sink.listed_count(self.native)
                  if isinstance(self.sink, ListedCountSink) else None)
        return listed if listed is not None else self.sink.count(self.native)

    def _send(self, source_ids: list[str], index: TargetIndex | None) -> list[str]:
        """One round: fetch, match against the target, send the rest. Answers the source ids
        whose send was not confirmed."""
        outcomes: list[dict[str, Any]] = []
        unconfirmed: list[str] = []
        sent: dict[str, int] = {}
        fetched = fetch_as_stored(self.source, self.container, source_ids,
                                  self.sink.capabilities, self.result.converted)
        messages = self._marked(self._unmatched(read_ahead(fetched, size=_held_in_memory),
                                                index, outcomes), sent)
        if isinstance(self.sink, SizedSendSink):
            self.sink.expect(self.native, len(source_ids))
        try:
            for result in self.sink.put_many(self.native, messages):
                size = sent.pop(result.source_id, 0)
                outcome = {"source_id": result.source_id}
                if result.error is None and result.target_ref:
                    outcome["target_ref"] = result.target_ref
                    self.result.copied += 1
                    self.result.copied_bytes += size
                elif isinstance(result.error, SendUnconfirmed) or result.error is None:
                    error = result.error or SendUnconfirmed("no target reference in the answer")
                    outcome.update(error_code=error.code, error_detail=error.detail,
                                   unconfirmed=True)
                    unconfirmed.append(result.source_id)
                else:
                    outcome.update(error_code=result.error.code, error_detail=result.error.detail)
                    if result.error.code == "over_quota":
                        self.brakes.mailbox_full.set()
                    else:
                        self.result.failed += 1
                        self.result.errors.append((result.source_id, result.error))
                outcomes.append(outcome)
                if len(outcomes) >= OUTCOME_CHUNK:
                    self._record(outcomes)
        finally:
            # Sent and never answered (the sink gave up, or this thread is leaving): the
            # target may hold them.
            outcomes += [{"source_id": sid, "error_code": "unconfirmed", "unconfirmed": True,
                          "error_detail": "no answer before the connection ended"}
                         for sid in sent]
            self._record(outcomes)
        return unconfirmed

    def _record(self, outcomes: list[dict[str, Any]]) -> None:
        self.ledger.record_outcomes(self.unit.id, outcomes)
        outcomes.clear()

    def _unmatched(self, messages: Iterable[Message], index: TargetIndex | None,
                   outcomes: list[dict[str, Any]]) -> Iterator[Message]:
        """The messages not found on the target; those found are recorded done where they
        are, their flags set to the source's."""
        for message in messages:
            found = index.claim(message.fingerprint, message.size) if index else None
            if found is None:
                yield message
                continue
            flags = frozenset(storable_flags_of(message.flags, self.sink.capabilities))
            if flags != frozenset(storable_flags_of(found.flags, self.sink.capabilities)):
                self.sink.set_flags(self.native, found.target_ref, flags)
            outcomes.append({**_inflight_record(message), "target_ref": found.target_ref})
            self.result.recovered += 1
            self.progress.advanced(1, message.size)

    def _marked(self, messages: Iterable[Message], sent: dict[str, int]) -> Iterator[Message]:
        """Yield messages to the sink, each recorded in flight in a committed transaction
        before the sink can send a byte of it; none once the brakes are on."""
        for chunk in chunks(_until_braked(messages, self.brakes), INFLIGHT_CHUNK):
            self.ledger.mark_inflight(self.unit.id, (_inflight_record(m) for m in chunk))
            for message in chunk:
                if self.brakes.engaged():
                    return
                sent[message.source_id] = message.size
                self.progress.advanced(1, message.size)
                yield message


def _until_braked(messages: Iterable[Message], brakes: Brakes) -> Iterator[Message]:
    for message in messages:
        if brakes.engaged():
            return
        yield message


def storable_flags_of(flags: frozenset[str], capabilities: SinkCapabilities) -> set[str]:
    """The flags a target keeps of these: system flags only, when it keeps no keywords."""
    kept = {flag for flag in flags if flag.lower() != "\\recent"}
    return kept if capabilities.keywords else kept & SYSTEM_FLAGS


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
    return record is None or record.status in (FAILED, *UNSETTLED)


def _inflight_record(message: Message) -> dict:
    return {
        "source_id": message.source_id, "fingerprint": message.fingerprint, "size": message.size,
        "flags": message.flags,
        "internal_date": message.internal_date.isoformat() if message.internal_date else None,
    }
