"""Read mbox files (Thunderbird profiles, ``*.mbox`` exports) as a mail source.

``root`` is either one mbox file, read as the INBOX, or a directory: each mbox file in it is
a container, Thunderbird style (``Name`` holds the messages of folder ``Name``, its children
are in ``Name.sbd/``; ``Name.mbox`` is folder ``Name`` too). Thunderbird's own files (``.msf``
indexes, ``.dat``, ``.json``, ``.sqlite``, ``.html`` and ``*.mozmsgs/`` search copies) are
not mail and not reported. Every other file that is not an mbox is reported and left out: one
that does not start with a ``From `` line (random bytes, a text), an empty file that no
``.msf`` or ``.sbd`` shows to be an empty Thunderbird folder, a hidden file, an Outlook file.
No symbolic link inside the tree is followed (``connectors.local.store``), and a store that is
one file is not read through a link either.

A message starts after a ``From `` separator line (``From sender Www Mmm dd hh:mm:ss yyyy``);
the single blank line a writer puts before the next separator is not part of the message. A
``From `` line inside a body that does not carry a date in that form does not split the
message. ``>From `` quoting is NOT undone: the bytes are kept exactly as in the file, since
mboxo and mboxrd files cannot be told apart and undoing one would corrupt the other.

Flags come from the ``Status``, ``X-Status``, ``X-Mozilla-Status`` and ``X-Mozilla-Keys``
headers when present; the internal date from the separator line's date, read as UTC.

source_id = ``"<offset>:<hash>"``: the byte offset of the separator line and a short hash of
that line, so an id into a file that was rewritten since (compacted by Thunderbird) is
recognised as gone instead of reading the wrong message.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Self

from connectors.base import (
    ConnectError,
    Container,
    ItemRef,
    Listing,
    Message,
    SourceNote,
    fingerprint_of,
)
from connectors.headers import MessageHeaders
from connectors.local.store import (
    FOLDER,
    Entry,
    Folder,
    LinkNotFollowed,
    NotARegularFile,
    left_out,
    not_mail,
    open_file,
    open_store,
    open_store_file,
    refused,
    subject_of,
)

INBOX = ("INBOX",)
SCAN_CHUNK = 1 << 20
SEPARATOR = re.compile(
    rb"From \S*\s+(?:[A-Z][a-z]{2}\s+)?"
    rb"(?P<date>[A-Z][a-z]{2}\s+\d{1,2}\s+\d{1,2}:\d{2}:\d{2}\s+\d{4})"
)
"""A separator line: ``From`` then a ctime date (the weekday is sometimes missing)."""
LONGEST_SEPARATOR = 512
MOZILLA_FLAGS = {
    0x0001: "\\Seen",
    0x0002: "\\Answered",
    0x0004: "\\Flagged",
    0x0008: "\\Deleted",
    0x1000: "$Forwarded",
}
X_STATUS_LETTERS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
THUNDERBIRD_FILES = (".msf", ".dat", ".json", ".sqlite", ".html")
"""Suffixes of the files Thunderbird keeps beside its mbox files (indexes, filters, logs)."""
THUNDERBIRD_SEARCH_COPIES = ".mozmsgs"
"""Folders of one-message copies Thunderbird makes for the desktop's search (Windows, macOS)."""


@dataclass(frozen=True)
class _Entry:
    """Where one message lies in its mbox file."""

    source_id: str
    start: int
    """First byte of the message, just after the separator line."""
    end: int
    internal_date: datetime | None


class MboxSource:
    """An mbox file, or a directory tree of them, read as a mail source."""


    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._indexes: dict[str, tuple[tuple[int, int], dict[str, _Entry]]] = {}
        self._notes: list[SourceNote] = []

    def containers(self) -> list[Container]:
        if self._single_file():
            return self._single_container()
        found = []
        with open_store(self.root) as root:
            for parts in self._walk(root, ()):
                folder = _folder_path(Path(*parts))
                role = "inbox" if len(folder) == 1 and folder[0].upper() == "INBOX" else None
                found.append(Container(folder, role, "/".join(parts)))
        found.sort(key=lambda container: (container.role != "inbox", container.path))
        return found

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        try:
            stream = self._open(container, SCAN_CHUNK)
        except (FileNotFoundError, NotADirectoryError):
            return Listing([], {}, complete=True)
        except (LinkNotFollowed, NotARegularFile) as error:
            self._notes.append(refused(error, container.native_name))
            return Listing([], {}, complete=True)
        with stream:
            status = os.fstat(stream.fileno())
            new_cursor = {"size": status.st_size, "mtime_ns": status.st_mtime_ns,
                          "inode": status.st_ino}
            if cursor == new_cursor:
                return Listing([], new_cursor, complete=False)
            refs = []
            for entry in self._index(container, stream).values():
                stream.seek(entry.start)
                headers = MessageHeaders(stream.read(min(entry.end - entry.start, 1 << 16)))
                refs.append(ItemRef(entry.source_id, entry.end - entry.start,
                                    _flags(headers), entry.internal_date or headers.date))
        return Listing(refs, new_cursor, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        try:
            with self._open(container, SCAN_CHUNK) as stream:
                index = self._index(container, stream)
        except (FileNotFoundError, NotADirectoryError):
            return
        except (LinkNotFollowed, NotARegularFile) as error:
            self._notes.append(refused(error, container.native_name))
            return
        for source_id in source_ids:
            entry = index.get(source_id)
            if entry is None:
                continue
            try:
                with _Slice(self._open(container), entry.start, entry.end) as stream:
                    headers = MessageHeaders.read(stream)
                with _Slice(self._open(container), entry.start, entry.end) as stream:
                    fingerprint, size = fingerprint_of(stream)
            except FileNotFoundError:
                continue
            except (LinkNotFollowed, NotARegularFile) as error:
                self._notes.append(refused(error, container.native_name))
                return
            yield Message(
                source_id=source_id,
                fingerprint=fingerprint,
                size=size,
                flags=_flags(headers),
                internal_date=entry.internal_date or headers.date,
                open=lambda entry=entry: _Slice(self._open(container), entry.start, entry.end),
                read_headers=headers.known(),
            )

    def drain_notes(self) -> list[SourceNote]:
        """What the tree holds that is not read as mail, and why; each note given once."""
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        self._indexes.clear()

    def _single_file(self) -> bool:
        """Whether the store is one mbox file rather than a tree (a link is neither: it is
        refused when opened)."""
        try:
            return not stat.S_ISDIR(os.lstat(self.root).st_mode)
        except FileNotFoundError:
            return False

    def _single_container(self) -> list[Container]:
        try:
            with open_store_file(self.root) as stream:
                head = stream.read(len(b"From "))
        except LinkNotFollowed as error:
            raise ConnectError(error.target, code="store_is_symlink") from None
        except OSError as error:
            raise ConnectError(f"{self.root}: {error.strerror}", code="unreachable") from None
        if head and head != b"From ":
            self._notes.append(SourceNote("not_mbox_skipped", self.root.name))
            return []
        return [Container(INBOX, "inbox", self.root.name)]

    def _open(self, container: Container, buffering: int = -1) -> IO[bytes]:
        """The container's mbox file, opened without following a link."""
        if self._single_file():
            return open_store_file(self.root, buffering)
        parts = container.native_name.split("/") if container.native_name else []
        return open_file(self.root, parts, buffering)

    def _walk(self, directory: Folder, parts: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        """The relative paths of the mbox files under ``directory``; what is not one is
        reported."""
        entries = directory.entries()
        names = {entry.name for entry in entries}
        for entry in entries:
            subject = subject_of(*parts, entry.name)
            note = left_out(directory, entry, subject)
            if note is not None:
                self._notes.append(note)
            elif entry.kind == FOLDER:
                if not entry.name.endswith(THUNDERBIRD_SEARCH_COPIES):
                    yield from self._walk_into(directory, parts, entry.name)
            elif not entry.name.lower().endswith(THUNDERBIRD_FILES):
                note = self._not_mbox(directory, entry, subject, names)
                if note is None:
                    yield (*parts, entry.name)
                else:
                    self._notes.append(note)

    def _walk_into(self, directory: Folder, parts: tuple[str, ...], name: str
                   ) -> Iterator[tuple[str, ...]]:
        try:
            child = directory.folder(name)
        except LinkNotFollowed as error:  # made a link since its folder was listed
            self._notes.append(SourceNote("symlink_skipped", subject_of(*parts, name),
                                          error.target))
            return
        except (FileNotFoundError, NotADirectoryError):
            return
        with child:
            yield from self._walk(child, (*parts, name))

    def _not_mbox(self, directory: Folder, entry: Entry, subject: str, names: set[str]
                  ) -> SourceNote | None:
        """Why a file of the tree is not an mbox, or ``None`` if it is one."""
        try:
            with directory.open(entry.name) as stream:
                head = stream.read(len(b"From "))
        except FileNotFoundError:
            return None  # gone since the listing: its container will list nothing
        except (LinkNotFollowed, NotARegularFile) as error:
            return refused(error, subject)
        if head == b"From ":
            return None
        if head:
            return not_mail(entry, subject, "not_mbox_skipped")
        # Thunderbird keeps an empty folder as an empty file beside its index or its
        # sub-folders' directory.
        if (entry.name.lower().endswith(".mbox") or f"{entry.name}.msf" in names
                or f"{entry.name}.sbd" in names):
            return None
        return not_mail(entry, subject, "empty_file_skipped")

    def _index(self, container: Container, stream: IO[bytes]) -> dict[str, _Entry]:
        """The messages of a file, by source_id; scanned again when the file changed."""
        status = os.fstat(stream.fileno())
        version = (status.st_size, status.st_mtime_ns)
        cached = self._indexes.get(container.native_name)
        if cached is not None and cached[0] == version:
            return cached[1]
        entries = {entry.source_id: entry for entry in _scan(stream, status.st_size)}
        self._indexes[container.native_name] = (version, entries)
        return entries


class _Slice:
    """A read-only stream over bytes ``start`` to ``end`` of a file."""

    def __init__(self, file: IO[bytes], start: int, end: int) -> None:
        self._file = file
        self._file.seek(start)
        self._left = end - start

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        chunk = self._file.read(size)
        self._left -= len(chunk)
        return chunk

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scan(stream: IO[bytes], size: int) -> Iterator[_Entry]:
    """Read the file once, in chunks, and yield where each message lies."""
    separators = list(_separators(stream))
    for number, (offset, line_end, line) in enumerate(separators):
        end = separators[number + 1][0] if number + 1 < len(separators) else size
        end -= _blank_line_before(stream, line_end, end)
        digest = hashlib.sha256(line).hexdigest()[:12]
        yield _Entry(f"{offset}:{digest}", line_end, end, _separator_date(line))


def _separators(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """``(offset, end of line, line)`` of every separator line, reading the file once.

    Lines are read at most ``LONGEST_SEPARATOR`` bytes at a time, so a body made of one
    huge line is never held whole."""
    stream.seek(0)
    position = 0
    at_line_start = True
    while line := stream.readline(LONGEST_SEPARATOR):
        if (
            at_line_start
            and line.startswith(b"From ")
            and line.endswith(b"\n")
            and SEPARATOR.match(line)
        ):
            yield position, position + len(line), line
        at_line_start = line.endswith(b"\n")
        position += len(line)


def _blank_line_before(stream: IO[bytes], start: int, end: int) -> int:
    """How many bytes of the blank line a writer put before the next separator (0 if
    there is none) end the range ``start``..``end``."""
    tail_start = max(start, end - 4)
    stream.seek(tail_start)
    tail = stream.read(end - tail_start)
    if tail.endswith(b"\r\n\r\n"):
        return 2
    if tail.endswith(b"\n\n"):
        return 1
    return 0


def _separator_date(line: bytes) -> datetime | None:
    match = SEPARATOR.match(line)
    if match is None:
        return None
    text = " ".join(match.group("date").decode("ascii").split())
    try:
        return datetime.strptime(text, "%b %d %H:%M:%S %Y").replace(tzinfo=UTC)
    except ValueError:
        return None


def _flags(headers: MessageHeaders) -> frozenset[str]:
    flags: set[str] = set()
    raw = headers.raw
    if "R" in str(raw.get("Status", "")):
        flags.add("\\Seen")
    for letter in str(raw.get("X-Status", "")):
        if letter in X_STATUS_LETTERS:
            flags.add(X_STATUS_LETTERS[letter])
    mozilla = str(raw.get("X-Mozilla-Status", "")).strip()
    if mozilla:
        try:
            bits = int(mozilla, 16)
        except ValueError:
            bits = 0
        flags.update(flag for bit, flag in MOZILLA_FLAGS.items() if bits & bit)
    flags.update(str(raw.get("X-Mozilla-Keys", "")).split())
    return frozenset(flags)


def _mbox_files(root: Path) -> Iterator[Path]:
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if not name.startswith(".") and _looks_like_mbox(path):
                yield path


def _looks_like_mbox(path: Path) -> bool:
    if path.suffix.lower() in (".msf", ".dat", ".json", ".sqlite", ".html"):
        return False
    with path.open("rb") as stream:
        head = stream.read(5)
    return head == b"From " or (head == b"" and path.suffix.lower() == ".mbox")


def _folder_path(relative: Path) -> tuple[str, ...]:
    parts = [part.removesuffix(".sbd") for part in relative.parts[:-1]]
    name = relative.name
    if name.lower().endswith(".mbox"):
        name = name[: -len(".mbox")]
    return (*parts, name)
