"""Calendars, contacts and files: copy one container (a work unit), checkpointing in the
ledger. Protocol-free: it speaks to a ``DocumentSource`` and a folder sink."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

from connectors.base import (
    BasculeError,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    DocumentSource,
    SourceNote,
)
from connectors.local.documents import FolderSink
from migrate.ledger import DONE, Ledger, Unit
from migrate.mail import SilentProgress, UnitProgress, UnitResult, source_notes

INFLIGHT_CHUNK = 16
ITEM_FAILURES = ("unreadable_item", "hash_mismatch")
"""Source notes that mean an item could not be copied: failures, retried by a later run."""


class DocumentUnit:
    """Copies one calendar, address book or drive into a folder of the target."""

    def __init__(self, ledger: Ledger, unit: Unit, source: DocumentSource, sink: FolderSink,
                 container: Container, target_path: tuple[str, ...],
                 progress: UnitProgress | None = None) -> None:
        self.ledger = ledger
        self.unit = unit
        self.source = source
        self.sink = sink
        self.container = container
        self.target_path = target_path
        self.progress = progress or SilentProgress()
        self.result = UnitResult()

    def run(self) -> UnitResult:
        native = self.sink.ensure_container(self.target_path)
        self.ledger.update_unit(self.unit.id, target_container=native, status="running")
        listing = self.source.list_documents(self.container, self.unit.cursor)
        known = self.ledger.items_of(self.unit.id)
        wanted = self._wanted(listing, known)
        self.progress.planned(len(wanted), sum(ref.size for ref in wanted))
        if wanted:
            self._copy(native, wanted, known)
        self._take_notes()
        self.result.deleted_at_source = sum(
            1 for sid in listing.removed if known.get(sid) and known[sid].status == DONE)
        self.ledger.refresh_counts(self.unit.id)
        self.ledger.update_unit(self.unit.id, cursor=listing.cursor,
                                status="failed" if self.result.failed else "done",
                                last_error=None)
        return self.result

    def _wanted(self, listing: DocumentListing, known: dict) -> list[DocumentRef]:
        """New items, items whose version changed, and items not yet done."""
        wanted = [ref for ref in listing.refs
                  if ref.source_id not in known or known[ref.source_id].status != DONE
                  or known[ref.source_id].version != ref.version]
        if not listing.complete:
            listed = {ref.source_id for ref in listing.refs}
            wanted += [DocumentRef(sid, record.version or "", record.size or 0)
                       for sid, record in known.items()
                       if record.status != DONE and sid not in listed
                       and sid not in listing.removed]
        return wanted

    def _copy(self, native: str, refs: list[DocumentRef], known: dict) -> None:
        for chunk in _chunks(self.source.fetch_documents(self.container, refs), INFLIGHT_CHUNK):
            self.ledger.mark_inflight(self.unit.id, [
                {"source_id": d.source_id, "fingerprint": d.fingerprint, "size": d.size,
                 "version": d.version} for d in chunk])
            outcomes = []
            for document in chunk:
                try:
                    target_ref, renamed = self.sink.put(native, document)
                except BasculeError as error:
                    outcomes.append({"source_id": document.source_id,
                                     "error_code": error.code, "error_detail": error.detail})
                    self.result.failed += 1
                    self.result.errors.append((document.source_id, error))
                    continue
                previous = known.get(document.source_id)
                if previous is not None and previous.target_ref not in (None, target_ref):
                    # Renamed or moved at the source: the copy under the old name goes.
                    self.sink.remove(previous.target_ref)
                if renamed:
                    self.result.notes.append(SourceNote(renamed, target_ref, document.name))
                self.result.notes.extend(document.notes)
                outcomes.append({"source_id": document.source_id, "target_ref": target_ref})
                self.result.copied += 1
                self.result.copied_bytes += document.size
                self.progress.advanced(1, document.size)
            self.ledger.record_outcomes(self.unit.id, outcomes)

    def _take_notes(self) -> None:
        failures = []
        for note in source_notes(self.source):
            if note.code in ITEM_FAILURES:
                error = BasculeError(note.detail, code=note.code)
                failures.append({"source_id": note.subject, "error_code": note.code,
                                 "error_detail": note.detail})
                self.result.errors.append((note.subject, error))
            else:
                self.result.notes.append(note)
        self.ledger.record_outcomes(self.unit.id, failures)
        self.result.failed += len(failures)


def _chunks(documents: Iterator[Document], size: int) -> Iterator[list[Document]]:
    iterator = iter(documents)
    while chunk := list(islice(iterator, size)):
        yield chunk
