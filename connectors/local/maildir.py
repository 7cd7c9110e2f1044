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

The source follows no symbolic link inside the store and says what it leaves out (see
``connectors.local.store``): links, hidden files, empty files, files that do not start like a
message, and anything beside ``cur``, ``new``, ``tmp`` and the bookkeeping files of Dovecot,
Courier and mbsync (``BOOKKEEPING_NAMES``, ``BOOKKEEPING_PREFIXES``). The sink writes
folders ``0700`` and files ``0600`` (``connectors.local.private``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from imapclient import imap_utf7

from connectors.base import (
    CHANGED,
    GONE,
    REMOVED,
    Container,
    ContainerRefused,
    ItemRef,
    ItemRejected,
    Listing,
    Message,
    PutResult,
    SinkCapabilities,
    SourceNote,
    StoredItem,
    fingerprint_of,
    flag_set,
)
from connectors.headers import MessageHeaders
from connectors.local.private import create_file, make_folders
from connectors.local.store import (
    FILE,
    FOLDER,
    LINK,
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

INTERNAL_DATE_OFFSET_KEPT = False
"""A Maildir keeps the instant of the internal date (mtime) but not its UTC offset."""

INBOX = ("INBOX",)
INFO_SEPARATOR = ":2,"
KEYWORDS_FILE = "dovecot-keywords"
SUBSCRIPTIONS_FILE = "subscriptions"
MAX_KEYWORDS = 26
NAME_MAX_BYTES = 255
"""The longest file name most file systems take (ext4, XFS, btrfs), in bytes."""
SYSTEM_LETTERS = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}
LETTER_OF_FLAG = {flag: letter for letter, flag in SYSTEM_LETTERS.items()}
MAILDIR_DIRS = ("cur", "new", "tmp")
MESSAGE_DIRS = ("cur", "new")
"""Where delivered messages are; ``tmp/`` holds deliveries under way and is never read."""
BOOKKEEPING_NAMES = frozenset({
    "maildirfolder",  # Maildir++: this directory is a folder
    "maildirsize",  # Maildir++ quota
    SUBSCRIPTIONS_FILE,
    ".uidvalidity",  # mbsync (isync)
    ".isyncuidmap.db",  # mbsync, older versions
})
BOOKKEEPING_PREFIXES = (
    "dovecot-",  # dovecot-uidlist, dovecot-keywords, dovecot-uidvalidity.*, dovecot-acl...
    "dovecot.",  # dovecot.index*, dovecot.list.index*, dovecot.mailbox.log
    "courierimap",  # courierimapuiddb, courierimapsubscribed, courierimapkeywords/...
    "courierpop3d",  # courierpop3dsizelist
    ".mbsyncstate",  # mbsync's sync state, its journal and its new copy
)
"""Files (and Courier's folders) the servers and sync tools keep beside the mail: not
messages, not reported."""
ACK_BATCH = 32
"""Messages renamed into ``cur/`` before one directory fsync acknowledges them all."""


class MaildirSource:
    """A Maildir++ store read as a mail source.

    Each listing is complete; its cursor is a hash of the folder's entry names (which carry
    the flags) and keyword table, so an unchanged folder answers an empty listing without
    a single ``stat``; a changed one opens each file once, to read its first bytes. The
    cursor also keeps what the listing left out of ``cur/`` and ``new/``, so that every pass
    reports it again, changed or not.
    """


    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._notes: list[SourceNote] = []

    def containers(self) -> list[Container]:
        """The INBOX and every ``.Folder`` directory that has a ``cur/`` or ``new/``; the
        other entries of the root are reported here, once per call."""
        found = []
        with open_store(self.root) as root:
            for entry in root.entries():
                if entry.kind == FOLDER and entry.name.startswith("."):
                    if self._is_folder(root, entry.name):
                        found.append(Container(folder_path(entry.name), None, entry.name))
                    continue
                note = _layout_note(root, entry, entry.name)
                if note is not None:
                    self._notes.append(note)
        found.sort(key=lambda container: container.path)
        return [Container(INBOX, "inbox", "INBOX"), *found]

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        folder = _Folder(self.root, self._native(container))
        if folder.parts:
            self._notes.extend(folder.layout_notes())
        scanned = folder.scan()
        keywords = folder.keywords()
        state = hashlib.sha256()
        for subdir, entry in scanned:
            state.update(f"{subdir}/{entry.name}\0{entry.kind}\n".encode())
        state.update("\0".join(keywords).encode())
        if cursor is not None and cursor.get("state") == state.hexdigest():
            self._notes.extend(SourceNote(*note) for note in cursor.get("left_out", []))
            return Listing([], cursor, complete=False)
        refs, notes = folder.read_refs(scanned, keywords)
        self._notes.extend(notes)
        new_cursor = {"state": state.hexdigest(),
                      "left_out": [[n.code, n.subject, n.detail] for n in notes]}
        return Listing(refs, new_cursor, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        folder = _Folder(self.root, self._native(container))
        keywords = folder.keywords()
        # A message listed may have been made a link since: it is found, and refused when
        # opened, rather than silently missing.
        located = folder.located(anything=True)
        for source_id in source_ids:
            message = self._message(folder, source_id, located.get(source_id), keywords)
            if message is not None:
                yield message

    def drain_notes(self) -> list[SourceNote]:
        """What the store holds that is not read as mail, and why; each note given once."""
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        pass

    def _native(self, container: Container) -> str:
        return container.native_name or maildir_name(container.path)

    def _is_folder(self, root: Folder, name: str) -> bool:
        try:
            with root.folder(name) as folder:
                if any(folder.has(subdir) for subdir in MESSAGE_DIRS):
                    return True
        except LinkNotFollowed as error:  # made a link since the root was listed
            self._notes.append(SourceNote("symlink_skipped", name, error.target))
            return False
        except (FileNotFoundError, NotADirectoryError):
            return False
        self._notes.append(SourceNote("not_maildir_skipped", name))
        return False

    def _message(
        self, folder: _Folder, unique: str, where: tuple[str, str] | None, keywords: list[str]
    ) -> Message | None:
        # A file may be renamed (flags) or moved (new/ -> cur/) by a mail client between
        # the listing and the read: look it up again once before giving up.
        for attempt in range(2):
            if attempt:
                where = folder.locate(unique)
            if where is None:
                return None
            subdir, name = where
            try:
                with folder.open_file(subdir, name) as stream:
                    headers = MessageHeaders.read(stream)
                    stream.seek(0)
                    fingerprint, size = fingerprint_of(stream)
                    mtime_ns = os.fstat(stream.fileno()).st_mtime_ns
            except FileNotFoundError:
                continue
            except (LinkNotFollowed, NotARegularFile) as error:
                # Replaced since it was listed: nothing of it is read.
                self._notes.append(refused(error, folder.subject(subdir, name)))
                return None
            return Message(
                source_id=unique,
                fingerprint=fingerprint,
                size=size,
                flags=flags_of(split_name(name)[1], keywords),
                internal_date=_moment(mtime_ns),
                open=lambda folder=folder, unique=unique, where=where: folder.open(unique, *where),
                read_headers=headers.known(),
            )
        return None


class MaildirSink:
    """A Maildir++ store written as a mail sink, crash-safe: a message is acknowledged
    only once its file and the ``cur/`` directory entry are on disk."""

    internal_date_offset_kept = INTERNAL_DATE_OFFSET_KEPT
    capabilities = SinkCapabilities(
        max_item_size=None,
        separator=".",
        forbidden_chars="/\0",
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
        # The target's own path is the batch's choice, link or not; reads inside it (the
        # keyword table, recovery, verify) then follow no link, as the source's do.
        self.root = Path(root).resolve()
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
                try:
                    create_file(directory / "maildirfolder").close()
                except FileExistsError:
                    pass
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
        folder = _Folder(self.root, native_name)
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
        name = maildir_name(path)
        # A Maildir++ folder is one directory whatever its depth: the whole path must fit
        # in one file name.
        if len(name.encode("utf-8")) > NAME_MAX_BYTES:
            raise ContainerRefused(
                f"folder {'/'.join(path)!r} makes a Maildir++ directory name of "
                f"{len(name.encode('utf-8'))} bytes; the file system takes {NAME_MAX_BYTES}")
        return name

    def count(self, native_name: str) -> int:
        return len(_Folder(self.root, native_name).messages())

    def fingerprints(self, native_name: str, target_refs: Sequence[str]
                     ) -> Iterator[tuple[str, str]]:
        folder = _Folder(self.root, native_name)
        located = folder.located()
        for unique in target_refs:
            where = located.get(unique)
            if where is None:
                continue
            try:
                with folder.open_file(*where) as stream:
                    yield unique, fingerprint_of(stream)[0]
            except (FileNotFoundError, LinkNotFollowed, NotARegularFile):
                continue

    def set_flags(self, native_name: str, target_ref: str, flags: frozenset[str]) -> None:
        folder = _Folder(self.root, native_name)
        where = folder.locate(target_ref)
        if where is None:
            raise ItemRejected(f"{native_name}: no message {target_ref}")
        path = folder.directory.joinpath(*where)
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

    def remove_messages(self, native_name: str, stored: Mapping[str, frozenset[str]]
                        ) -> dict[str, str]:
        """Unlink each message file whose name still carries the flags bascule gave it:
        a reader that changes a message's flags renames its file, so the unlink of the
        name just read fails for a message changed meanwhile (``CHANGED`` if it is still
        there under another name, ``GONE`` if not). The directories are synced before the
        answer."""
        folder = _Folder(self.root, native_name)
        located = folder.located()
        keywords = folder.keywords()
        fates: dict[str, str] = {}
        emptied: set[str] = set()
        for unique, flags in stored.items():
            where = located.get(unique)
            if where is None:
                fates[unique] = GONE
                continue
            subdir, name = where
            held = flags_of(split_name(name)[1], keywords)
            kept = {flag for flag in flags if flag in LETTER_OF_FLAG or flag in keywords}
            if held - {"\\Deleted"} != kept - {"\\Deleted"}:
                fates[unique] = CHANGED
                continue
            try:
                os.unlink(folder.directory / subdir / name)
            except FileNotFoundError:
                fates[unique] = GONE if folder.locate(unique) is None else CHANGED
                continue
            fates[unique] = REMOVED
            emptied.add(subdir)
        for subdir in sorted(emptied):
            _fsync_dir(folder.directory / subdir)
        return fates

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredItem]:
        folder = _Folder(self.root, native_name)
        keywords = folder.keywords()
        for subdir, entry in folder.messages(sizes=True):
            unique, info = split_name(entry.name)
            fingerprint = None
            if fingerprints:
                try:
                    with folder.open_file(subdir, entry.name) as stream:
                        fingerprint = fingerprint_of(stream)[0]
                except (FileNotFoundError, LinkNotFollowed, NotARegularFile):
                    continue
            yield StoredItem(
                target_ref=unique,
                size=entry.size,
                flags=flags_of(info, keywords),
                fingerprint=fingerprint,
                internal_date=_moment(entry.mtime_ns),
            )

    def close(self) -> None:
        pass

    def _deliver(self, folder: _Folder, message: Message, letters: str) -> str:
        """Write the message to ``tmp/``, fsync it, and rename it into ``cur/``. The caller
        fsyncs ``cur/`` before acknowledging."""
        base = self._new_base()
        temporary = folder.directory / "tmp" / base
        try:
            with create_file(temporary) as target:
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
    """One Maildir directory (``cur``, ``new``, ``tmp`` and the keyword table), read without
    following links."""

    def __init__(self, root: Path, native: str) -> None:
        self.root = root
        self.directory = folder_dir(root, native)
        self.parts: tuple[str, ...] = () if native == "INBOX" else (native,)

    def subject(self, *names: str) -> str:
        """An entry's path relative to the store, as notes name it."""
        return subject_of(*self.parts, *names)

    def scan(self, sizes: bool = False) -> list[tuple[str, Entry]]:
        """``(subdir, entry)`` of everything in ``cur/`` and ``new/``, sorted. A ``cur`` or
        ``new`` that is a link is not read (the listing of its parent reports it)."""
        found = []
        for subdir in MESSAGE_DIRS:
            try:
                with Folder.at(self.root, (*self.parts, subdir)) as listed:
                    found.extend((subdir, entry) for entry in listed.entries(sizes))
            except (FileNotFoundError, NotADirectoryError, LinkNotFollowed):
                continue
        found.sort(key=lambda item: (item[0], item[1].name))
        return found

    def messages(self, sizes: bool = False) -> list[tuple[str, Entry]]:
        """The entries of ``scan`` that are delivered messages: regular, not hidden."""
        return [(subdir, entry) for subdir, entry in self.scan(sizes)
                if entry.kind == FILE and not entry.name.startswith(".")]

    def located(self, anything: bool = False) -> dict[str, tuple[str, str]]:
        """``(subdir, file name)`` of every message, by unique name; with ``anything``, of
        every entry that is not hidden, whatever it is now (opening it will tell)."""
        return {split_name(entry.name)[0]: (subdir, entry.name)
                for subdir, entry in self.scan()
                if not entry.name.startswith(".") and (anything or entry.kind == FILE)}

    def locate(self, unique: str) -> tuple[str, str] | None:
        return self.located().get(unique)

    def open_file(self, subdir: str, name: str) -> IO[bytes]:
        return open_file(self.root, (*self.parts, subdir, name))

    def open(self, unique: str, subdir: str, name: str) -> IO[bytes]:
        try:
            return self.open_file(subdir, name)
        except FileNotFoundError:
            moved = self.locate(unique)
            if moved is None:
                raise
            return self.open_file(*moved)

    def layout_notes(self) -> list[SourceNote]:
        """What this folder's directory holds beside ``cur``, ``new``, ``tmp`` and the
        bookkeeping files."""
        try:
            with Folder.at(self.root, self.parts) as directory:
                return [note for entry in directory.entries()
                        if (note := _layout_note(directory, entry, self.subject(entry.name)))]
        except (FileNotFoundError, NotADirectoryError, LinkNotFollowed):
            return []  # gone, or made a link since the root was listed (reported there)

    def read_refs(self, scanned: list[tuple[str, Entry]], keywords: list[str]
                  ) -> tuple[list[ItemRef], list[SourceNote]]:
        """The listing's refs for the entries of ``scan``, and what is left out and why.
        Each file is opened (without following a link) and its first bytes read."""
        refs: dict[str, ItemRef] = {}
        notes: list[SourceNote] = []
        for subdir in MESSAGE_DIRS:
            entries = [entry for where, entry in scanned if where == subdir]
            if not entries:
                continue
            try:
                listed = Folder.at(self.root, (*self.parts, subdir))
            except (FileNotFoundError, NotADirectoryError, LinkNotFollowed):
                continue
            with listed:
                for entry in entries:
                    ref, note = self._read_ref(listed, subdir, entry, keywords)
                    if ref is not None:
                        refs[ref.source_id] = ref
                    if note is not None:
                        notes.append(note)
        return list(refs.values()), notes

    def _read_ref(self, listed: Folder, subdir: str, entry: Entry, keywords: list[str]
                  ) -> tuple[ItemRef | None, SourceNote | None]:
        subject = self.subject(subdir, entry.name)
        note = left_out(listed, entry, subject)
        if note is not None:
            return None, note
        if entry.kind != FILE:
            return None, SourceNote("special_file_skipped", subject)
        try:
            probe = listed.probe(entry.name)
        except FileNotFoundError:
            return None, None  # renamed or moved since the scan: the next listing sees it
        except (LinkNotFollowed, NotARegularFile) as error:
            return None, refused(error, subject)
        if probe.size == 0:
            return None, SourceNote("empty_file_skipped", subject)
        if not looks_like_message(probe.head):
            return None, SourceNote("not_a_message_skipped", subject)
        unique, info = split_name(entry.name)
        return ItemRef(unique, probe.size, flags_of(info, keywords), _moment(probe.mtime_ns)), None

    def keywords(self) -> list[str]:
        """The keyword table: index 0 is letter ``a``. Unknown indexes are kept as holes."""
        try:
            with open_file(self.root, (*self.parts, KEYWORDS_FILE)) as stream:
                text = stream.read().decode("utf-8")
        except (FileNotFoundError, NotADirectoryError, LinkNotFollowed, NotARegularFile):
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
    return flag_set(flags)


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


def _is_bookkeeping(entry: Entry) -> bool:
    return entry.kind in (FILE, FOLDER) and (
        entry.name in BOOKKEEPING_NAMES or entry.name.startswith(BOOKKEEPING_PREFIXES))


def _layout_note(directory: Folder, entry: Entry, subject: str) -> SourceNote | None:
    """Why an entry of the root or of a ``.Folder`` directory is not read, or ``None`` when
    it belongs there (``cur``, ``new``, ``tmp``, bookkeeping)."""
    if entry.kind != LINK and _is_bookkeeping(entry):
        return None
    note = left_out(directory, entry, subject)
    if note is not None or (entry.kind == FOLDER and entry.name in MAILDIR_DIRS):
        return note
    return not_mail(entry, subject, "not_maildir_skipped")


def _moment(mtime_ns: int) -> datetime:
    return datetime.fromtimestamp(mtime_ns / 1_000_000_000, UTC)


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
    for subdir in MAILDIR_DIRS:
        make_folders(directory / subdir)


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    temporary.unlink(missing_ok=True)  # left by a crash of a process with the same id
    with create_file(temporary) as stream:
        stream.write(text.encode("utf-8"))
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _escaped_hostname() -> str:
    """The host name as Dovecot puts it in a file name: ``/`` and ``:`` escaped, and ``,``
    too since it would read as a field of the name."""
    host = socket.gethostname() or "localhost"
    return host.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")
