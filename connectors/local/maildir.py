"""Read and write Maildir++ mail stores as Dovecot and Courier lay them out.

Layout: ``root/{cur,new,tmp}`` is the INBOX; a folder is ``root/.Parent.Child/`` with each
segment in IMAP modified UTF-7 and ``.`` as the hierarchy separator. A message is one file
named ``<unique>:2,<info>``: ``unique`` never changes once the file is delivered (it is the
source_id and the target_ref), ``info`` holds the flags as letters in ASCII order:

- ``D`` ``\\Draft``, ``F`` ``\\Flagged``, ``P`` ``$Forwarded`` (passed), ``R`` ``\\Answered``,
  ``S`` ``\\Seen``, ``T`` ``\\Deleted`` (trashed);
- ``a`` to ``z``: keywords, numbered in the folder's ``dovecot-keywords`` file as Dovecot
  does. A folder holds at most 26 keywords this way; further ones are not stored.

Dovecot ignores ``P``: the sink writes ``$Forwarded`` both as ``P`` (for mutt and Courier)
and as a keyword letter (for Dovecot).

The internal date is the file's mtime, as Dovecot reads it. An mtime has no UTC offset, so
the offset of the source's internal date is lost: the instant is kept, the zone is not
(``INTERNAL_DATE_OFFSET_KEPT``). SPECIAL-USE roles are not stored in a Maildir: the source
reports the INBOX role only, and the sink uses the conventional names (``Sent``, ``Drafts``,
``Trash``, ``Junk``, ``Archive``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from imapclient import imap_utf7

from connectors.base import (
    Container,
    ContainerRefused,
    ItemRef,
    ItemRejected,
    Listing,
    Message,
    PutResult,
    SinkCapabilities,
    SourceCapabilities,
    SourceNote,
    StoredItem,
    fingerprint_of,
)
from connectors.headers import MessageHeaders

INTERNAL_DATE_OFFSET_KEPT = False
"""A Maildir keeps the instant of the internal date (mtime) but not its UTC offset."""

INBOX = ("INBOX",)
INFO_SEPARATOR = ":2,"
KEYWORDS_FILE = "dovecot-keywords"
SUBSCRIPTIONS_FILE = "subscriptions"
MAX_KEYWORDS = 26
SYSTEM_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF_FLAG = {flag: letter for letter, flag in SYSTEM_LETTERS.items()}
ACK_BATCH = 32
"""Messages renamed into ``cur/`` before one directory fsync acknowledges them all."""


class MaildirSource:
    """A Maildir++ store read as a mail source.

    Each listing is complete; its cursor is a hash of the folder's file names (which carry
    the flags) and keyword table, so an unchanged folder answers an empty listing without
    a single ``stat``.
    """

    capabilities = SourceCapabilities(delta=True, flag_changes=False)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def containers(self) -> list[Container]:
        found = []
        for entry in os.scandir(self.root):
            if _is_folder_dir(entry):
                found.append(Container(folder_path(entry.name), None, entry.name))
        found.sort(key=lambda container: container.path)
        return [Container(INBOX, "inbox", "INBOX"), *found]

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        folder = _Folder(self._directory(container))
        names = folder.names()
        keywords = folder.keywords()
        state = hashlib.sha256()
        for subdir, name in names:
            state.update(f"{subdir}/{name}\n".encode())
        state.update("\0".join(keywords).encode())
        new_cursor = {"state": state.hexdigest()}
        if cursor == new_cursor:
            return Listing([], new_cursor, complete=False)
        refs: dict[str, ItemRef] = {}
        for subdir, name in names:
            try:
                stat = (folder.directory / subdir / name).stat()
            except FileNotFoundError:
                continue
            unique, info = split_name(name)
            refs[unique] = ItemRef(
                unique, stat.st_size, flags_of(info, keywords),
                datetime.fromtimestamp(stat.st_mtime, UTC),
            )
        return Listing(list(refs.values()), new_cursor, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        folder = _Folder(self._directory(container))
        keywords = folder.keywords()
        # Names, not Path objects: a folder of 40,000 messages would hold 20 MB of them.
        files = {split_name(name)[0]: (subdir, name) for subdir, name in folder.names()}
        for source_id in source_ids:
            found = files.get(source_id)
            path = folder.directory / found[0] / found[1] if found else None
            message = self._message(folder, source_id, path, keywords)
            if message is not None:
                yield message

    def close(self) -> None:
        pass

    def _directory(self, container: Container) -> Path:
        return folder_dir(self.root, container.native_name or maildir_name(container.path))

    def _message(
        self, folder: _Folder, unique: str, path: Path | None, keywords: list[str]
    ) -> Message | None:
        # A file may be renamed (flags) or moved (new/ -> cur/) by a mail client between
        # the listing and the read: look it up again once before giving up.
        for attempt in range(2):
            if attempt:
                path = folder.locate(unique)
            if path is None:
                return None
            try:
                with path.open("rb") as stream:
                    headers = MessageHeaders.read(stream)
                    stream.seek(0)
                    fingerprint, size = fingerprint_of(stream)
                    mtime = os.fstat(stream.fileno()).st_mtime
            except FileNotFoundError:
                continue
            return Message(
                source_id=unique,
                fingerprint=fingerprint,
                size=size,
                flags=flags_of(split_name(path.name)[1], keywords),
                internal_date=datetime.fromtimestamp(mtime, UTC),
                open=lambda folder=folder, unique=unique, path=path: folder.open(unique, path),
                message_id=headers.message_id,
                subject=headers.subject,
            )
        return None


class MaildirSink:
    """A Maildir++ store written as a mail sink, crash-safe: a message is acknowledged
    only once its file and the ``cur/`` directory entry are on disk."""

    internal_date_offset_kept = INTERNAL_DATE_OFFSET_KEPT
    capabilities = SinkCapabilities(
        max_item_size=None,
        separator=".",
        forbidden_chars="/",
        keywords=True,
        special_folders={
            "inbox": INBOX,
            "sent": ("Sent",),
            "drafts": ("Drafts",),
            "trash": ("Trash",),
            "junk": ("Junk",),
            "archive": ("Archive",),
        },
    )

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._counter = 0
        self._host = _escaped_hostname()
        self._notes: list[SourceNote] = []

    def ensure_container(self, path: Sequence[str]) -> str:
        path = tuple(path)
        self.native_name(path)
        self._make_store()
        if _is_inbox(path):
            return "INBOX"
        for depth in range(1, len(path) + 1):
            native = maildir_name(path[:depth])
            directory = self.root / native
            if not (directory / "cur").is_dir():
                _make_maildir(directory)
                (directory / "maildirfolder").touch()
                _fsync_dir(self.root)
                self._subscribe(native[1:])
        return maildir_name(path)

    def _make_store(self) -> None:
        """The store is made on first write, not when the sink is opened: a plan opens the
        sink to read its capabilities and must leave nothing behind."""
        if not (self.root / "cur").is_dir():
            _make_maildir(self.root)

    def put_many(self, native_name: str, messages: Iterable[Message]) -> Iterator[PutResult]:
        self._make_store()
        folder = _Folder(folder_dir(self.root, native_name))
        cur = folder.directory / "cur"
        pending: list[PutResult] = []
        try:
            for message in messages:
                letters, dropped = self._info(folder, message.flags)
                if dropped:
                    self._notes.append(SourceNote("flags_not_kept", message.source_id,
                                                  " ".join(dropped)))
                unique = self._deliver(folder, message, letters)
                pending.append(PutResult(message.source_id, unique))
                if len(pending) >= ACK_BATCH:
                    _fsync_dir(cur)
                    yield from pending
                    pending = []
        except Exception:
            # What is already in cur/ is acknowledged before the error goes up, so the
            # ledger need not recover it with find().
            if pending:
                _fsync_dir(cur)
                yield from pending
            raise
        if pending:
            _fsync_dir(cur)
            yield from pending

    def native_name(self, path: Sequence[str]) -> str:
        path = tuple(path)
        _check_path(path)
        return maildir_name(path)

    def count(self, native_name: str) -> int:
        return len(_Folder(folder_dir(self.root, native_name)).names())

    def fingerprints(self, native_name: str, target_refs: Sequence[str]
                     ) -> Iterator[tuple[str, str]]:
        paths = _Folder(folder_dir(self.root, native_name)).paths()
        for unique in target_refs:
            path = paths.get(unique)
            if path is None:
                continue
            try:
                with path.open("rb") as stream:
                    yield unique, fingerprint_of(stream)[0]
            except FileNotFoundError:
                continue

    def set_flags(self, native_name: str, target_ref: str, flags: frozenset[str]) -> None:
        folder = _Folder(folder_dir(self.root, native_name))
        path = folder.locate(target_ref)
        if path is None:
            raise ItemRejected(f"{native_name}: no message {target_ref}")
        letters, dropped = self._info(folder, flags)
        if dropped:
            self._notes.append(SourceNote("flags_not_kept", target_ref, " ".join(dropped)))
        name = target_ref + INFO_SEPARATOR + letters
        target = folder.directory / "cur" / name
        if path != target:
            os.rename(path, target)
            _fsync_dir(target.parent)
            if path.parent != target.parent:
                _fsync_dir(path.parent)

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredItem]:
        folder = _Folder(folder_dir(self.root, native_name))
        keywords = folder.keywords()
        for subdir, name in folder.names():
            path = folder.directory / subdir / name
            unique, info = split_name(name)
            try:
                stat = path.stat()
                fingerprint = None
                if fingerprints:
                    with path.open("rb") as stream:
                        fingerprint = fingerprint_of(stream)[0]
            except FileNotFoundError:
                continue
            yield StoredItem(
                target_ref=unique,
                size=stat.st_size,
                flags=flags_of(info, keywords),
                fingerprint=fingerprint,
                internal_date=datetime.fromtimestamp(stat.st_mtime, UTC),
            )

    def close(self) -> None:
        pass

    def _deliver(self, folder: _Folder, message: Message, letters: str) -> str:
        """Write the message to ``tmp/``, fsync it, and rename it into ``cur/``. The caller
        fsyncs ``cur/`` before acknowledging."""
        base = self._new_base()
        temporary = folder.directory / "tmp" / base
        try:
            with temporary.open("xb") as target:
                with message.open() as source:
                    size = _copy(source, target)
                target.flush()
                if message.internal_date is not None:
                    stamp = message.internal_date.timestamp()
                    os.utime(target.fileno(), (stamp, stamp))
                os.fsync(target.fileno())
            unique = f"{base},S={size}"
            os.rename(temporary, folder.directory / "cur" / (unique + INFO_SEPARATOR + letters))
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return unique

    def _new_base(self) -> str:
        with self._lock:
            self._counter += 1
            counter = self._counter
        now = time.time()
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        return f"{seconds}.M{micros}P{os.getpid()}Q{counter}.{self._host}"

    def _info(self, folder: _Folder, flags: frozenset[str]) -> tuple[str, list[str]]:
        """The info letters for ``flags``, and the keywords that found no letter left."""
        letters = {LETTER_OF_FLAG[flag] for flag in flags if flag in LETTER_OF_FLAG}
        wanted = sorted(flag for flag in flags if not flag.startswith("\\"))
        if wanted:
            with self._lock:
                table = folder.keywords()
                added = [keyword for keyword in wanted if keyword not in table]
                room = MAX_KEYWORDS - len(table)
                if added and room > 0:
                    table = [*table, *added[:room]]
                    folder.write_keywords(table)
            letters.update(chr(ord("a") + table.index(k)) for k in wanted if k in table)
            return "".join(sorted(letters)), [k for k in wanted if k not in table]
        return "".join(sorted(letters)), []

    def drain_notes(self) -> list[SourceNote]:
        """Keywords a folder had no room for (26 at most), message by message."""
        notes, self._notes = self._notes, []
        return notes

    def _subscribe(self, name: str) -> None:
        path = self.root / SUBSCRIPTIONS_FILE
        with self._lock:
            existing = path.read_text("utf-8").splitlines() if path.exists() else []
            if name not in existing:
                _write_atomically(path, "".join(line + "\n" for line in [*existing, name]))


class _Folder:
    """One Maildir directory (``cur``, ``new``, ``tmp`` and the keyword table)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self) -> list[tuple[str, str]]:
        """``(subdir, file name)`` of every delivered message, sorted."""
        found = []
        for subdir in ("cur", "new"):
            try:
                entries = os.listdir(self.directory / subdir)
            except FileNotFoundError:
                continue
            found.extend((subdir, name) for name in entries if not name.startswith("."))
        found.sort()
        return found

    def paths(self) -> dict[str, Path]:
        """The file of every message, by unique name."""
        return {
            split_name(name)[0]: self.directory / subdir / name for subdir, name in self.names()
        }

    def locate(self, unique: str) -> Path | None:
        return self.paths().get(unique)

    def open(self, unique: str, path: Path) -> IO[bytes]:
        try:
            return path.open("rb")
        except FileNotFoundError:
            moved = self.locate(unique)
            if moved is None:
                raise
            return moved.open("rb")

    def keywords(self) -> list[str]:
        """The keyword table: index 0 is letter ``a``. Unknown indexes are kept as holes."""
        try:
            text = (self.directory / KEYWORDS_FILE).read_text("utf-8")
        except FileNotFoundError:
            return []
        table: dict[int, str] = {}
        for line in text.splitlines():
            number, _space, keyword = line.partition(" ")
            if number.isdigit() and keyword and int(number) < MAX_KEYWORDS:
                table[int(number)] = keyword
        return [table.get(index, "") for index in range(max(table, default=-1) + 1)]

    def write_keywords(self, table: list[str]) -> None:
        lines = "".join(f"{index} {keyword}\n" for index, keyword in enumerate(table) if keyword)
        _write_atomically(self.directory / KEYWORDS_FILE, lines)


def maildir_name(path: Sequence[str]) -> str:
    """The Maildir++ directory name of a folder path: ``.Projets.&AMk-t&AOk- 2024``."""
    if _is_inbox(tuple(path)):
        return "INBOX"
    return "." + ".".join(imap_utf7.encode(segment).decode("ascii") for segment in path)


def folder_path(directory_name: str) -> tuple[str, ...]:
    """The folder path of a Maildir++ directory name (the reverse of ``maildir_name``)."""
    return tuple(_decode_segment(segment) for segment in directory_name[1:].split("."))


def folder_dir(root: Path, native: str) -> Path:
    """The directory of a native name; refuses a name that would leave ``root``."""
    if native == "INBOX":
        return root
    if not native.startswith(".") or native in (".", "..") or "/" in native or "\0" in native:
        raise ContainerRefused(f"not a Maildir++ folder name: {native!r}")
    return root / native


def split_name(name: str) -> tuple[str, str]:
    """``(unique, info)`` of a message file name; info is empty for a file in ``new/``."""
    unique, separator, info = name.partition(INFO_SEPARATOR)
    return unique, info if separator else ""


def flags_of(info: str, keywords: list[str]) -> frozenset[str]:
    flags = set()
    for letter in info:
        if letter in SYSTEM_LETTERS:
            flags.add(SYSTEM_LETTERS[letter])
        elif "a" <= letter <= "z":
            index = ord(letter) - ord("a")
            if index < len(keywords) and keywords[index]:
                flags.add(keywords[index])
    return frozenset(flags)


def _check_path(path: tuple[str, ...]) -> None:
    if not path:
        raise ContainerRefused("empty folder path")
    for segment in path:
        if not segment or segment in (".", ".."):
            raise ContainerRefused(f"folder name {segment!r} refused")
        bad = [char for char in "./\0" if char in segment]
        if bad:
            raise ContainerRefused(
                f"folder name {segment!r} contains {bad[0]!r}, which Maildir++ does not allow",
            )


def _is_inbox(path: tuple[str, ...]) -> bool:
    return len(path) == 1 and path[0].upper() == "INBOX"


def _is_folder_dir(entry: os.DirEntry[str]) -> bool:
    return (
        entry.name.startswith(".")
        and entry.name not in (".", "..")
        and entry.is_dir()
        and os.path.isdir(os.path.join(entry.path, "cur"))
    )


def _decode_segment(segment: str) -> str:
    try:
        return imap_utf7.decode(segment.encode("ascii"))
    except (UnicodeError, ValueError):
        return segment


def _copy(source: IO[bytes], target: IO[bytes], chunk_size: int = 1 << 20) -> int:
    size = 0
    while chunk := source.read(chunk_size):
        target.write(chunk)
        size += len(chunk)
    return size


def _make_maildir(directory: Path) -> None:
    for subdir in ("cur", "new", "tmp"):
        (directory / subdir).mkdir(parents=True, exist_ok=True)


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with temporary.open("w", encoding="utf-8") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _escaped_hostname() -> str:
    """The host name as Dovecot puts it in a file name: ``/`` and ``:`` escaped, and ``,``
    too since it would read as a field of the name."""
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
