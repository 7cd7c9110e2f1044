"""Read a folder tree of ``.eml`` files, one message per file, as a mail source.

Each directory is a container; the root is the INBOX. There are no flags in an ``.eml``
file; the internal date is the Date header, or the file's mtime when the header is missing
or unreadable. source_id = the path of the file relative to the root, ``/``-separated.

No symbolic link inside the tree is followed (``connectors.local.store``). Every file that is
not read is reported with its reason: a link, a hidden file or folder, an Outlook ``.msg``
(convert it first, e.g. with ``msgconvert``) or ``.pst``, any other file that is not
``.eml``, and an ``.eml`` that is empty or does not start like a message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import (
    Container,
    ItemRef,
    Listing,
    Message,
    SourceNote,
    fingerprint_of,
)
from connectors.headers import MessageHeaders
from connectors.local.store import (
    FILE,
    FOLDER,
    Entry,
    Folder,
    LinkNotFollowed,
    NotARegularFile,
    left_out,
    looks_like_message,
    not_mail,
    open_file,
    open_store,
    refused,
    subject_of,
)

INBOX = ("INBOX",)


def mtime_of(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1_000_000_000, UTC)


class EmlSource:
    """A directory tree of ``.eml`` files (``*.eml``, any case).

    A listing's cursor is a hash of the names, kinds, sizes and mtimes of everything in the
    directory; it also keeps what the listing left out, so that every pass reports it again.
    """


    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._notes: list[SourceNote] = []

    def containers(self) -> list[Container]:
        """The root (INBOX) and every directory below it that is neither hidden nor a link
        (the listing of its parent reports those)."""
        found = [Container(INBOX, "inbox", "")]
        with open_store(self.root) as root:
            found.extend(self._walk(root, ()))
        return found

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        parts = _parts(container)
        try:
            directory = Folder.at(self.root, parts)
        except (FileNotFoundError, NotADirectoryError, LinkNotFollowed):
            return Listing([], {}, complete=True)  # gone, or made a link: its parent says so
        with directory:
            entries = directory.entries(sizes=True)
            state = hashlib.sha256()
            for entry in entries:
                state.update(f"{entry.name}\0{entry.kind}\0{entry.size}\0{entry.mtime_ns}\n"
                             .encode())
            if cursor is not None and cursor.get("state") == state.hexdigest():
                self._notes.extend(SourceNote(*note) for note in cursor.get("left_out", []))
                return Listing([], cursor, complete=False)
            refs = []
            notes = []
            for entry in entries:
                ref, note = self._ref(directory, parts, entry)
                if ref is not None:
                    refs.append(ref)
                if note is not None:
                    notes.append(note)
        self._notes.extend(notes)
        new_cursor = {"state": state.hexdigest(),
                      "left_out": [[n.code, n.subject, n.detail] for n in notes]}
        return Listing(refs, new_cursor, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        for source_id in source_ids:
            parts = _source_parts(source_id)
            if parts is None:
                continue
            try:
                with open_file(self.root, parts) as stream:
                    headers = MessageHeaders.read(stream)
                    stream.seek(0)
                    fingerprint, size = fingerprint_of(stream)
                    mtime_ns = os.fstat(stream.fileno()).st_mtime_ns
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (LinkNotFollowed, NotARegularFile) as error:
                self._notes.append(refused(error, source_id))
                continue
            yield Message(
                source_id=source_id,
                fingerprint=fingerprint,
                size=size,
                flags=frozenset(),
                internal_date=headers.date or mtime_of(mtime_ns),
                open=lambda parts=parts: open_file(self.root, parts),
                read_headers=headers.known(),
            )

    def drain_notes(self) -> list[SourceNote]:
        """What the tree holds that is not read as mail, and why; each note given once."""
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        pass

    def _walk(self, directory: Folder, parts: tuple[str, ...]) -> Iterator[Container]:
        for entry in directory.entries():
            if entry.kind != FOLDER or entry.name.startswith("."):
                continue
            try:
                child = directory.folder(entry.name)
            except (FileNotFoundError, NotADirectoryError, LinkNotFollowed):
                continue  # gone or made a link since listed: the parent's listing says so
            path = (*parts, entry.name)
            with child:
                yield Container(path, None, "/".join(path))
                yield from self._walk(child, path)

    def _ref(self, directory: Folder, parts: tuple[str, ...], entry: Entry
             ) -> tuple[ItemRef | None, SourceNote | None]:
        """The listing's ref for one entry of a directory, or why it is not read."""
        subject = subject_of(*parts, entry.name)
        note = left_out(directory, entry, subject)
        if note is not None or entry.kind != FILE:
            return None, note  # a sub-folder is a container of its own
        if not entry.name.lower().endswith(".eml"):
            return None, not_mail(entry, subject, "not_eml_skipped")
        try:
            probe = directory.probe(entry.name)
        except FileNotFoundError:
            return None, None
        except (LinkNotFollowed, NotARegularFile) as error:
            return None, refused(error, subject)
        if probe.size == 0:
            return None, SourceNote("empty_file_skipped", subject)
        if not looks_like_message(probe.head):
            return None, SourceNote("not_a_message_skipped", subject)
        return ItemRef(subject, probe.size, frozenset(), mtime_of(probe.mtime_ns)), None


def _parts(container: Container) -> tuple[str, ...]:
    """The directory of a container, relative to the root (the INBOX is the root)."""
    if container.native_name:
        return tuple(container.native_name.split("/"))
    return () if container.path == INBOX else container.path


def _source_parts(source_id: str) -> tuple[str, ...] | None:
    """The path a source_id names, or None if it would leave the root."""
    parts = tuple(source_id.split("/"))
    if any(part in ("", ".", "..") or "\0" in part for part in parts):
        return None
    return parts
