"""Calendars, contacts and files: copy one container (a work unit), checkpointing in the
ledger. Protocol-free: it speaks to a ``DocumentSource`` and a ``DocumentSink``.

Every write is conditional on what the ledger last saw on the target: nothing for a first
copy, the version the target answered for a copy made before. A write whose condition
fails is looked at: the document already there (a crash between the write and its record:
its bytes, or its meaning where the target rewrites what it stores) is recorded without
writing. Anything else there is someone else's: a file a person changed since bascule wrote
it, a file of the same name put there by someone, or another source item whose name came
out the same under the target's name rules (``a:b`` and ``a_b``, or two names differing by
case on a target that folds it). The batch's ``on_conflict`` decides (``Changes``), never
silently: ``keep_both`` (the default) writes the document beside it, under its name with
``~`` and 8 hex digits of its source id (``mappings.names.distinct``); ``skip`` leaves it and
counts the item failed, with a ``version_conflict`` line; ``overwrite`` replaces it, with an
``overwritten_on_target`` line. Each of these is a line in the report.

Items deleted at the source since the last pass are left on the target and counted
(``deleted_at_source``), or removed from it with ``deletions = "remove"``: each only if
nobody changed it on the target since (else it stays, with a ``left_on_target`` line)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, replace
from typing import Literal

from connectors.base import (
    ANY_VERSION,
    CREATE_ONLY,
    DEFAULT_CONTAINER,
    PENDING_VERSION,
    BasculeError,
    ConnectError,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    DocumentStored,
    SourceNote,
    StoredDocument,
    VersionConflict,
)
from connectors.protocols import (
    ColouredContainerSink,
    DefaultContainerSink,
    DocumentSink,
    DocumentSource,
    LateVersionSink,
)
from mappings.names import RENAMED_TAKEN, distinct
from migrate.compare import Finding, FolderCheck
from migrate.ledger import DONE, GONE, ItemRecord, Ledger, Unit
from migrate.mail import (
    Brakes,
    SilentProgress,
    UnitProgress,
    UnitResult,
    source_notes,
    take_source_notes,
)
from migrate.prefetch import read_ahead

INFLIGHT_CHUNK = 16
CHUNK_BYTES = 32 << 20
"""A chunk ends at this many bytes too: a large file's write starts once it is read, not
once the source has read (and hashed) fifteen more; and the documents held in memory by
the chunks in flight (a source's spools keep up to 4 MiB each there) stay about 100 MiB."""
CHUNKS_IN_FLIGHT = 3
Attempt = tuple[DocumentStored | None, bool, BasculeError | None]
"""What a write came to: where the target holds it, whether it was written (not found
there already), or the error that stopped it."""
RETRY_WAITS = (0.5, 2.0)
"""Seconds before each new try of a write whose connection dropped or timed out."""
TRANSIENT = frozenset({"connection_lost", "timeout"})
KEEP_BOTH, SKIP, OVERWRITE = "keep_both", "skip", "overwrite"
REPORT, REMOVE = "report", "remove"
OVERWRITTEN = "overwritten_on_target"


@dataclass(frozen=True)
class Changes:
    """What a pass does with what changed on either side since the last one (the batch's
    ``[run]`` options ``on_conflict`` and ``deletions``; see the module's docstring)."""

    on_conflict: Literal["keep_both", "skip", "overwrite"] = KEEP_BOTH
    deletions: Literal["report", "remove"] = REPORT


class DocumentUnit:
    """Copies one calendar, address book or drive into a folder of the target.

    ``result`` is filled as the unit goes, so that a unit that raises still tells what it
    did before."""

    def __init__(self, ledger: Ledger, unit: Unit, source: DocumentSource, sink: DocumentSink,
                 container: Container, target_path: tuple[str, ...],
                 progress: UnitProgress | None = None, brakes: Brakes | None = None,
                 result: UnitResult | None = None, changes: Changes = Changes()) -> None:
        self.ledger = ledger
        self.changes = changes
        self.unit = unit
        self.source = source
        self.sink = sink
        self.container = container
        self.target_path = target_path
        self.progress = progress or SilentProgress()
        self.brakes = brakes or Brakes()
        self.result = result if result is not None else UnitResult()

    def run(self) -> UnitResult:
        started = time.monotonic()
        native = None
        if self.container.role == DEFAULT_CONTAINER and isinstance(self.sink,
                                                                   DefaultContainerSink):
            native = self.sink.default_container()
        if native is None and self.container.colour and isinstance(self.sink,
                                                                   ColouredContainerSink):
            native = self.sink.ensure_coloured_container(self.target_path,
                                                         self.container.colour)
        if native is None:
            native = self.sink.ensure_container(self.target_path)
        self.result.notes.extend(source_notes(self.sink))  # containers it had to rename
        self.ledger.update_unit(self.unit.id, target_container=native, status="running",
                                last_run=self.unit.planned_run)
        listing = self.source.list_documents(self.container, self.unit.cursor)
        known = self.ledger.items_of(self.unit.id)
        wanted = self._wanted(listing, known)
        self.progress.planned(len(wanted), sum(ref.size for ref in wanted))
        if wanted:
            self._copy(native, wanted, known)
        take_source_notes(self.ledger, self.unit, self.source, self.result)
        removed = [known[sid] for sid in self._removed(listing, known)]
        if self.changes.deletions == REMOVE and not self.result.interrupted:
            removed = self._remove(native, removed)
        else:
            self.ledger.mark_gone(self.unit.id, [r.source_id for r in removed
                                                 if r.status == DONE])
        self.result.deleted_at_source = len(removed)
        if self.result.interrupted:
            # The cursor stays where it was: what was not reached is listed again next time.
            self.ledger.refresh_counts(self.unit.id, status="interrupted", last_error=None)
        else:
            self.ledger.refresh_counts(self.unit.id, cursor=listing.cursor,
                                       status="failed" if self.result.failed else "done",
                                       last_error=None, timed=self.unit.timed(
                                           started, self.result.copied,
                                           self.result.copied_bytes))
        return self.result

    def _wanted(self, listing: DocumentListing, known: dict) -> list[DocumentRef]:
        """New items, items whose version changed or whose folder moved, and items not yet
        done."""
        wanted = [ref for ref in listing.refs if _stale(known.get(ref.source_id), ref)]
        chosen = {ref.source_id for ref in wanted}
        wanted += [ref for ref in listing.relocated if ref.source_id not in chosen]
        if not listing.complete:
            listed = {ref.source_id for ref in listing.refs}
            listed |= {ref.source_id for ref in listing.relocated}
            wanted += [DocumentRef(sid, record.version or "", record.size or 0)
                       for sid, record in known.items()
                       if record.status != DONE and sid not in listed
                       and sid not in listing.removed]
        return wanted

    @staticmethod
    def _removed(listing: DocumentListing, known: dict[str, ItemRecord]) -> list[str]:
        """Copied items the source no longer has: those its delta says it removed, those
        a pass before found removed (``GONE``: a delta says it once), and, from a listing
        of everything, those it does not list."""
        listed = {ref.source_id for ref in listing.refs} | \
            {ref.source_id for ref in listing.relocated}
        gone = set(listing.removed) | {sid for sid, record in known.items()
                                       if record.status == GONE}
        if listing.complete:
            gone |= set(known) - listed
        return sorted(sid for sid in gone - listed
                      if sid in known and known[sid].status in (DONE, GONE)
                      and known[sid].target_ref)

    def _remove(self, native: str, removed: list[ItemRecord]) -> list[ItemRecord]:
        """Delete from the target the copies of items deleted at the source, each only at
        the version bascule wrote; answer those left there (changed on the target since,
        each with a ``left_on_target`` line, or not deleted for an error, counted
        failed)."""
        left: list[ItemRecord] = []
        gone: list[str] = []
        for record in removed:
            assert record.target_ref is not None
            try:
                self.sink.remove(native, record.target_ref,
                                 record.target_version or ANY_VERSION)
            except VersionConflict:
                self.result.notes.append(SourceNote("left_on_target", record.target_ref))
                left.append(record)
                continue
            except BasculeError as error:
                self.result.failed += 1
                self.result.errors.append((record.source_id, error))
                left.append(record)
                continue
            gone.append(record.source_id)
            self.result.notes.append(SourceNote("removed_on_target", record.target_ref))
        if gone:
            self.ledger.rekey(self.unit.id, {}, forget=gone)
        return left

    def _copy(self, native: str, refs: list[DocumentRef], known: dict) -> None:
        """The documents in chunks, each chunk marked in flight, written (as many at once
        as the sink takes: each write is conditional and stands alone), then recorded.

        Nothing waits for anything else it could overlap with: the source reads ahead in a
        thread of its own (``read_ahead``: a local file is read and hashed there, a
        download spooled); the versions a sink left for later are asked for in a thread of
        their own too, each chunk's once its writes are done (a folder listing, whose
        answer took this thread half its time: the writers stood idle meanwhile); and the
        next chunk is marked and its writes started before the chunk before is waited for
        and recorded, so the writers never stand idle at a chunk's end. ``CHUNKS_IN_FLIGHT``
        chunks at most are marked and not yet recorded: with two, the writers of small files
        into Apache stood idle a seventh of the time, waiting for a chunk to be listed and
        recorded before the next could start."""
        lanes = max(1, self.sink.capabilities.parallel_writes)
        size = max(INFLIGHT_CHUNK, 4 * lanes)
        if isinstance(self.sink, LateVersionSink):
            self.sink.defer_versions()  # asked for per chunk by _versioned
        fetched = read_ahead(self.source.fetch_documents(self.container, refs),
                             size=lambda document: document.size, max_items=2 * size)
        pending: list[tuple[list[Document], Future[list[tuple[Document, Attempt]]]]] = []
        full = False
        with closing(fetched), \
                ThreadPoolExecutor(lanes, thread_name_prefix="document-write") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="document-versions") as versions:
            for chunk in _chunks(fetched, size):
                if self.brakes.stop.is_set():
                    self.result.interrupted = True
                    break
                self.ledger.mark_inflight(self.unit.id, [
                    {"source_id": d.source_id, "fingerprint": d.fingerprint, "size": d.size,
                     "version": d.version, "source_hashes": d.source_hashes} for d in chunk])
                writes = [pool.submit(self._attempt, native, document,
                                      known.get(document.source_id)) for document in chunk]
                pending.append((chunk, versions.submit(self._written, native, chunk, writes)))
                if len(pending) == CHUNKS_IN_FLIGHT and self._record(*pending.pop(0)):
                    full = True
                    break
            while pending:
                full = self._record(*pending.pop(0)) or full
        if full:
            self._space_full(refs)

    def _written(self, native: str, chunk: list[Document], writes: list[Future[Attempt]]
                 ) -> list[tuple[Document, Attempt]]:
        """A chunk's writes once done, with the versions the sink left for later."""
        return self._versioned(native, [
            (document, write.result()) for document, write in zip(chunk, writes, strict=True)])

    def _record(self, chunk: list[Document], written: Future[list[tuple[Document, Attempt]]]
                ) -> bool:
        """Wait for a chunk's writes and versions and record them; whether the space was
        found full."""
        attempted = written.result()
        self.ledger.record_outcomes(self.unit.id, [
            self._outcome(document, *attempt) for document, attempt in attempted])
        self.result.notes.extend(source_notes(self.sink))  # what it changed
        return any(error is not None and error.code == "over_quota"
                   for _, (_, _, error) in attempted)

    def _versioned(self, native: str, attempted: list[tuple[Document, Attempt]]
                   ) -> list[tuple[Document, Attempt]]:
        """The chunk's writes with the versions a sink left for later asked for at once
        (``LateVersionSink``); where it cannot say them, those items are counted failed
        (they are on the target: the next run finds them there)."""
        late = [index for index, (_, (stored, _, _)) in enumerate(attempted)
                if stored is not None and stored.version == PENDING_VERSION]
        if not late or not isinstance(self.sink, LateVersionSink):
            return attempted
        try:
            filled = self.sink.versions(native, [
                (attempted[index][1][0], attempted[index][0].size) for index in late])
        except ConnectError as error:
            answered: list[Attempt] = [(None, False, error)] * len(late)
        else:
            answered = [(stored, attempted[index][1][1], None)
                        for index, stored in zip(late, filled, strict=True)]
        settled = list(attempted)
        for index, attempt in zip(late, answered, strict=True):
            settled[index] = (attempted[index][0], attempt)
        return settled

    def _attempt(self, native: str, document: Document, previous: ItemRecord | None
                 ) -> tuple[DocumentStored | None, bool, BasculeError | None]:
        """One document written, and its former copy removed if it moved; what the sink
        said, whether it was written, or the error that stopped it."""
        try:
            stored, written = self._write_again(native, document, previous)
        except VersionConflict as conflict:
            try:
                stored, written = self._settle(native, document, conflict)
            except BasculeError as error:
                return None, False, error
        except BasculeError as error:
            return None, False, error
        if previous is not None and previous.target_ref not in (None, stored.target_ref):
            self._remove_old(native, previous)
        return stored, written, None

    def _write_again(self, native: str, document: Document, previous: ItemRecord | None
                     ) -> tuple[DocumentStored, bool]:
        """``_write``, tried again after each of ``RETRY_WAITS`` where its connection
        dropped or timed out. A try carries the same condition as the one before, so one
        that reached the target before its answer was lost is found there (``_write``'s
        recovery), not written twice."""
        for wait in RETRY_WAITS:
            try:
                return self._write(native, document, previous)
            except ConnectError as error:
                if error.code not in TRANSIENT or self.brakes.stop.is_set():
                    raise
            time.sleep(wait)
        return self._write(native, document, previous)

    def _space_full(self, refs: list[DocumentRef]) -> None:
        """The target refused an item for want of room: nothing more is sent into this
        space, and what it could not take is counted for the report's line (a full space
        refuses every item after the first: one line, not one per item). The cursor stays,
        so the next run sends them once the quota is raised."""
        outcomes = self.ledger.outcomes_of(self.unit.id, [ref.source_id for ref in refs])
        left = [ref for ref in refs if outcomes.get(ref.source_id, ("", None))[0] != DONE]
        self.result.interrupted = True
        self.result.space_full = True
        self.result.quota_left = len(left)
        self.result.quota_left_bytes = sum(ref.size for ref in left)

    def _outcome(self, document: Document, stored: DocumentStored | None, written: bool,
                 error: BasculeError | None) -> dict:
        """The ledger's outcome for one document, counted in the unit's result (one refused
        for want of room in the space's line, ``_space_full``)."""
        if error is not None:
            if error.code != "over_quota":
                self.result.failed += 1
                self.result.errors.append((document.source_id, error))
            return {"source_id": document.source_id, "error_code": error.code,
                    "error_detail": error.detail}
        assert stored is not None
        if stored.renamed:
            self.result.notes.append(SourceNote(stored.renamed, stored.target_ref,
                                                document.name))
        self.result.notes.extend(document.notes)
        if written:
            self.result.copied += 1
            self.result.copied_bytes += document.size
        else:
            self.result.recovered += 1
        self.progress.advanced(1, document.size)
        return {"source_id": document.source_id, "target_ref": stored.target_ref,
                "target_version": stored.version, "target_fingerprint": stored.fingerprint}

    def _write(self, native: str, document: Document, previous: ItemRecord | None
               ) -> tuple[DocumentStored, bool]:
        """Write the document on the condition the ledger knows of; where it is, and
        whether it was written (not when its bytes were found already there)."""
        if previous is not None and previous.target_version:
            expected: str | None = previous.target_version
        elif previous is not None and previous.status == DONE and previous.target_ref:
            expected = ANY_VERSION  # written before versions were recorded
        else:
            expected = CREATE_ONLY
        try:
            return self.sink.put(native, document, expected), True
        except VersionConflict as conflict:
            found = self.sink.find(native, document)
            expected_there = self.sink.fingerprint(document)
            if found is not None and found.fingerprint == expected_there:
                return DocumentStored(found.target_ref, found.version, fingerprint=(
                    None if expected_there == document.fingerprint else expected_there)), False
            if found is None and expected is not CREATE_ONLY:
                # Nothing where the version was expected: the source renamed the item (its
                # old copy goes once the new one is written), or the target's user deleted
                # it (the changed item is written again).
                return self.sink.put(native, document, CREATE_ONLY), True
            raise VersionConflict(conflict.detail, current=found) from None

    def _settle(self, native: str, document: Document, conflict: VersionConflict
                ) -> tuple[DocumentStored, bool]:
        """Someone else's item is where the document goes: what ``on_conflict`` says."""
        policy = self.changes.on_conflict
        if policy == OVERWRITE:
            current = conflict.current.version if conflict.current else ANY_VERSION
            try:
                stored = self.sink.put(native, document, current or ANY_VERSION)
            except VersionConflict:  # changed again meanwhile: this time it wins
                stored = self.sink.put(native, document, ANY_VERSION)
            return replace(stored, renamed=OVERWRITTEN), True
        if policy == SKIP:
            raise conflict
        apart = replace(document, name=distinct(document.name, document.source_id))
        try:
            stored, written = self.sink.put(native, apart, CREATE_ONLY), True
        except VersionConflict:
            found = self.sink.find(native, apart)
            if found is None or found.fingerprint != self.sink.fingerprint(apart):
                raise
            stored, written = DocumentStored(found.target_ref, found.version), False
        return replace(stored, renamed=RENAMED_TAKEN), written

    def _remove_old(self, native: str, previous: ItemRecord) -> None:
        """The copy under an item's former name or place, once the new one is written;
        kept, with a note, if someone changed it on the target since."""
        assert previous.target_ref is not None
        try:
            self.sink.remove(native, previous.target_ref, previous.target_version or ANY_VERSION)
        except VersionConflict:
            self.result.notes.append(SourceNote("left_on_target", previous.target_ref))


def _chunks(documents: Iterable[Document], size: int) -> Iterator[list[Document]]:
    """``documents`` in lists of ``size``, or fewer where they reach ``CHUNK_BYTES``
    together, read lazily: a list is handed over as soon as it is full, before the next
    document is asked for."""
    chunk: list[Document] = []
    weight = 0
    for document in documents:
        chunk.append(document)
        weight += document.size
        if len(chunk) == size or weight >= CHUNK_BYTES:
            yield chunk
            chunk, weight = [], 0
    if chunk:
        yield chunk


def plan_documents(source: DocumentSource, container: Container, known: dict
                   ) -> tuple[int, int, int, int]:
    """(items, bytes, items to copy, bytes to copy) from a complete listing, no content."""
    listing = source.list_documents(container, None)
    items = size = to_copy = to_copy_size = 0
    for ref in listing.refs:
        items += 1
        size += ref.size
        if _stale(known.get(ref.source_id), ref):
            to_copy += 1
            to_copy_size += ref.size
    return items, size, to_copy, to_copy_size


READ_BACK_SHA256, READ_BACK_MEANING, NOT_VERIFIED = (
    "read_back_sha256", "read_back_meaning", "not_verified")
"""How ``verify`` checked an item (``ItemCheck.verified_by``): the target's bytes read back
and hashed; the target's copy read back and compared by meaning (a sink that rewrites what it
stores, ``DocumentStored.fingerprint``); or not at all, the finding's code says why. A
checksum a target keeps beside a file is never taken for its bytes: Nextcloud stores the
``OC-Checksum`` it is sent (read back as ``oc:checksums``) without checking it against the
content, so its files are read back like any other's."""
MATCH, MISMATCH, MISSING, EXTRA, CHANGED = (
    "match", "mismatch", "missing", "extra", "changed_at_source")
VERIFIED = "item_verified"


@dataclass(frozen=True)
class ItemCheck:
    """One item of a document container as ``verify`` found it: a source item (its ledger
    record, the target's copy) or an item of the target the source has not.

    ``outcome`` is ``match``, ``mismatch`` (the copy read back is not what was written),
    ``missing``, ``changed_at_source`` (since it was copied) or ``extra``; ``code`` is
    ``item_verified`` for a match, else the finding's. ``source_hashes`` is the ledger's
    (``ItemRecord.source_hashes``): how the source was checked when read; ``written`` the
    SHA-256 of the bytes sent, which the sink hashed as it sent them; ``read_back`` what the
    target's copy hashes to now (``sha256:`` of its bytes, or its meaning's fingerprint)."""

    source_id: str
    target_ref: str
    outcome: str
    verified_by: str
    code: str
    source_size: int | None = None
    target_size: int | None = None
    source_hashes: str | None = None
    written: str | None = None
    read_back: str | None = None


def verify_documents(ledger: Ledger, unit: Unit, source: DocumentSource, sink: DocumentSink,
                     container: Container, nested: tuple[str, ...] = (), *,
                     each: Callable[[ItemCheck], None]) -> FolderCheck:
    """Every item the source lists is copied, at its version, the target holds what was
    recorded when it was copied (the bytes, or their meaning where the sink rewrites them),
    and it holds nothing else (``nested`` names the folders inside this one that other
    units fill). Contents are compared by hash, read back from the target now, never by
    size. ``each`` is given every item's ``ItemCheck`` as soon as it is known, so that a
    caller writes them out as they come."""
    listing = source.list_documents(container, None)
    known = ledger.items_of(unit.id)
    inside = tuple(folder + "/" for folder in nested)
    stored = {s.target_ref: s for s in sink.inventory(unit.target_container or "",
                                                       fingerprints=True)
              if not s.target_ref.startswith(inside)}
    check = FolderCheck(len(listing.refs), len(stored))
    for ref in listing.refs:
        record = known.get(ref.source_id)
        target = stored.get(record.target_ref) if record and record.target_ref else None
        if record is None or record.status != DONE or target is None:
            finding = Finding("missing_on_target", ref.source_id)
            outcome = MISSING
        elif record.version != ref.version:
            finding = Finding("changed_since_copy", ref.source_id, target.target_ref)
            outcome = CHANGED
        elif target.fingerprint != (record.target_fingerprint or record.fingerprint):
            finding = Finding("fingerprint_mismatch", ref.source_id, target.target_ref)
            outcome = MISMATCH
        else:
            finding, outcome = None, MATCH
        if finding is not None:
            check.findings.append(finding)
        each(_item_check(ref.source_id, outcome, finding, record, target, ref.size))
    listed = {ref.source_id for ref in listing.refs}
    meant = {record.target_ref: record for record in known.values() if record.target_ref}
    for target_ref in sorted(set(stored) - {known[sid].target_ref for sid in listed
                                            if sid in known}):
        code = "deleted_at_source" if target_ref in meant else "not_in_source"
        finding = Finding(code, "", target_ref)
        check.findings.append(finding)
        record = meant.get(target_ref)
        each(_item_check(record.source_id if record else "", EXTRA, finding, record,
                         stored[target_ref], None))
    return check


def _item_check(source_id: str, outcome: str, finding: Finding | None,
                record: ItemRecord | None, target: StoredDocument | None,
                source_size: int | None) -> ItemCheck:
    """What ``verify_documents`` tells of one item: it was verified by what it compared, the
    copy read back against what was written, only where it could compare them (a matching
    or mismatching copy of the item the source lists now)."""
    read_back = target.fingerprint if target is not None else None
    if outcome in (MATCH, MISMATCH) and read_back:
        how = READ_BACK_SHA256 if read_back.startswith("sha256:") else READ_BACK_MEANING
    else:
        how = NOT_VERIFIED
    if target is not None:
        target_ref = target.target_ref
    else:  # missing: where the ledger says it went, if anywhere
        target_ref = record.target_ref or "" if record is not None else ""
    return ItemCheck(
        source_id, target_ref, outcome, how, finding.code if finding is not None else VERIFIED,
        source_size=source_size, target_size=target.size if target is not None else None,
        source_hashes=record.source_hashes if record is not None else None,
        written=record.fingerprint if record is not None else None, read_back=read_back)


def _stale(record: ItemRecord | None, ref: DocumentRef) -> bool:
    """Not copied yet, not copied whole, or changed at the source since."""
    return record is None or record.status != DONE or record.version != ref.version
