"""Read a local store without following symbolic links, and say what it holds that is not mail.

Every folder below a store's root is opened with ``O_NOFOLLOW`` relative to its parent's
descriptor, and every file likewise relative to its folder's: a link anywhere inside the
store (a message file, a folder, ``cur/`` itself) is refused by the open itself, so nothing
can swap a checked entry for a link before it is read. A file opened this way that is not
a regular file (a pipe, a device) is refused too, before a byte is read.

The store's root itself is the batch's choice and is opened as given, except that the
root's last component must not be a link either (``store_is_symlink``).

What a source leaves out is said with a ``SourceNote`` whose subject is the entry's path
relative to the root, ``/``-separated; the codes are in ``reports.i18n``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Self

from connectors.base import ConnectError, SourceNote

FILE, FOLDER, LINK, OTHER = "file", "folder", "link", "other"
"""What an entry is, as its folder says (``lstat``): never what a link points to."""

HEAD_SIZE = 1024
"""Bytes read from the start of a file to tell whether it holds mail."""
MESSAGE_START = re.compile(rb"From |[!-9;-~]+[ \t]*:")
"""A message starts with a header field (RFC 5322: a name of printable ASCII but ``:``,
then ``:``) or with an mbox ``From `` line that some exporters leave in."""

_OPEN_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
"""``O_NONBLOCK``: opening a named pipe must not wait for a writer; it is refused after."""


class LinkNotFollowed(OSError):
    """An entry below the store's root is a symbolic link: it was not opened."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(errno.ELOOP, f"symbolic link not followed: {name} -> {target}")
        self.target = target


class NotARegularFile(OSError):
    """An entry opened as a file is a pipe, a socket, a device or a folder."""

    def __init__(self, name: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file: {name}")


@dataclass(frozen=True)
class Entry:
    """One entry of a folder: its name and kind (``FILE``, ``FOLDER``, ``LINK``, ``OTHER``),
    and for a file its size and modification time as the listing saw them."""

    name: str
    kind: str
    size: int = 0
    mtime_ns: int = 0


@dataclass(frozen=True)
class Probe:
    """A file's size and modification time from its open descriptor, and its first bytes."""

    size: int
    mtime_ns: int
    head: bytes


class Folder:
    """A folder of the store, held open by descriptor: entries are listed and files opened
    relative to it, never through a path that a link could redirect."""

    def __init__(self, descriptor: int) -> None:
        self._descriptor = descriptor

    @classmethod
    def at(cls, root: Path, parts: Sequence[str] = ()) -> Folder:
        """Open ``root/parts...``. Raises ``LinkNotFollowed`` when one of the parts (or the
        root's own last component) is a link, ``NotADirectoryError`` when one is a file,
        ``FileNotFoundError`` when one is missing."""
        descriptor = _open_root(Path(root))
        try:
            for part in parts:
                _check_part(part)
                following = _open_folder(part, descriptor)
                os.close(descriptor)
                descriptor = following
        except BaseException:
            os.close(descriptor)
            raise
        return cls(descriptor)

    def entries(self, sizes: bool = False) -> list[Entry]:
        """Every entry but ``.`` and ``..``, sorted by name; with ``sizes``, files with their
        size and mtime (one ``lstat`` each; the kinds alone cost none on most file systems)."""
        found = []
        with os.scandir(self._descriptor) as scan:
            for entry in scan:
                if entry.is_symlink():
                    found.append(Entry(entry.name, LINK))
                elif entry.is_dir(follow_symlinks=False):
                    found.append(Entry(entry.name, FOLDER))
                elif entry.is_file(follow_symlinks=False):
                    if not sizes:
                        found.append(Entry(entry.name, FILE))
                        continue
                    try:
                        status = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    found.append(Entry(entry.name, FILE, status.st_size, status.st_mtime_ns))
                else:
                    found.append(Entry(entry.name, OTHER))
        found.sort(key=lambda entry: entry.name)
        return found

    def folder(self, name: str) -> Folder:
        """The sub-folder ``name``, opened without following a link."""
        _check_part(name)
        return Folder(_open_folder(name, self._descriptor))

    def has(self, name: str) -> bool:
        """Whether the entry exists, whatever it is (a link counts, and is not followed)."""
        try:
            os.stat(name, dir_fd=self._descriptor, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def open(self, name: str, buffering: int = -1) -> BinaryIO:
        """The regular file ``name`` for reading; a link or a special file is refused."""
        _check_part(name)
        return _open_file(name, self._descriptor, buffering)

    def probe(self, name: str) -> Probe:
        """Open ``name`` as ``open`` does, and read its size, mtime and first bytes."""
        with self.open(name) as stream:
            status = os.fstat(stream.fileno())
            return Probe(status.st_size, status.st_mtime_ns, stream.read(HEAD_SIZE))

    def read_link(self, name: str) -> str:
        """Where the link ``name`` points, as written in it (the link is not followed)."""
        return _read_link(name, self._descriptor)

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file(root: Path, parts: Sequence[str], buffering: int = -1) -> BinaryIO:
    """The regular file ``root/parts...`` for reading, with no link followed below ``root``."""
    if not parts:
        raise IsADirectoryError(str(root))
    with Folder.at(root, parts[:-1]) as folder:
        return folder.open(parts[-1], buffering)


def open_store(root: Path) -> Folder:
    """The store's root folder. A root that cannot be read is the principal's problem, not
    an item's: it raises ``ConnectError``."""
    try:
        return Folder.at(root)
    except LinkNotFollowed as error:
        raise ConnectError(error.target, code="store_is_symlink") from None
    except OSError as error:
        raise ConnectError(f"{root}: {error.strerror}", code="unreachable") from None


def open_store_file(path: Path, buffering: int = -1) -> BinaryIO:
    """A store that is one file (an mbox), for reading: its folder is the batch's and is
    followed, the file itself must not be a link."""
    return _open_file(str(path), None, buffering)


def looks_like_message(head: bytes) -> bool:
    """Whether a file starting with ``head`` can be a mail message."""
    return MESSAGE_START.match(head) is not None


def subject_of(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def left_out(folder: Folder, entry: Entry, subject: str) -> SourceNote | None:
    """The note for an entry no store reads, whatever its kind (a link, a hidden entry, a
    pipe or a device), or ``None`` for an ordinary file or folder."""
    if entry.kind == LINK:
        return SourceNote("symlink_skipped", subject, folder.read_link(entry.name))
    if entry.name.startswith("."):
        code = "hidden_folder_skipped" if entry.kind == FOLDER else "hidden_file_skipped"
        return SourceNote(code, subject)
    if entry.kind == OTHER:
        return SourceNote("special_file_skipped", subject)
    return None


def refused(error: LinkNotFollowed | NotARegularFile, subject: str) -> SourceNote:
    """The note for a file that turned out, when opened, to be a link or not a file."""
    if isinstance(error, LinkNotFollowed):
        return SourceNote("symlink_skipped", subject, error.target)
    return SourceNote("special_file_skipped", subject)


def not_mail(entry: Entry, subject: str, default: str) -> SourceNote:
    """The note for a file a store does not read: Outlook's own formats say how to convert
    them; anything else gets the store's ``default`` code."""
    suffix = os.path.splitext(entry.name)[1].lower()
    if suffix == ".msg":
        return SourceNote("outlook_msg_skipped", subject)
    if suffix in (".pst", ".ost"):
        return SourceNote("outlook_pst_skipped", subject)
    return SourceNote(default, subject)


def _open_file(name: str, folder: int | None, buffering: int = -1) -> BinaryIO:
    try:
        descriptor = os.open(name, _OPEN_FILE, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkNotFollowed(name, _read_link(name, folder)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise NotARegularFile(name)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb", buffering)
    except BaseException:
        os.close(descriptor)
        raise


def _read_link(name: str, folder: int | None) -> str:
    try:
        return os.readlink(name, dir_fd=folder)
    except OSError:
        return "?"


def _open_root(root: Path) -> int:
    try:
        return os.open(root, _OPEN_FOLDER)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and root.is_symlink():
            raise LinkNotFollowed(root.name, _read_link(str(root), None)) from None
        raise


def _open_folder(name: str, parent: int) -> int:
    try:
        return os.open(name, _OPEN_FOLDER, dir_fd=parent)
    except OSError as error:
        # O_DIRECTORY with O_NOFOLLOW answers ENOTDIR for a link: tell the two apart.
        if error.errno in (errno.ELOOP, errno.ENOTDIR) and stat.S_ISLNK(
            os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
        ):
            raise LinkNotFollowed(name, _read_link(name, parent)) from None
        raise


def _check_part(part: str) -> None:
    if part in ("", ".", "..") or "/" in part or "\0" in part:
        raise FileNotFoundError(errno.ENOENT, f"not a name inside the store: {part!r}")
