"""A local folder as the sink of calendars (``.ics``), contacts (``.vcf``) and files.

Each container is a folder under the root; each document a file in it (files keep their
sub-folders). Writing is idempotent by name: a document written again replaces the same
file, so a re-run after a crash leaves no duplicate. A file is written to a temporary name,
fsynced, then renamed, and its modification time is the source's. Folders the sink creates
are ``0700`` and files ``0600`` whatever the umask (``connectors.local.private``): they hold
people's calendars, contacts and files.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path as FsPath

from connectors.base import ContainerRefused, Document, ItemRejected, Path, fingerprint_of
from connectors.local.private import create_file, make_folders

NAME_MAX_BYTES = 255
"""The longest file name most file systems take (ext4, XFS, btrfs), in UTF-8 bytes."""
REPLACEMENT = "_"
TEMPORARY_SUFFIX = ".bascule-part"
CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredDocument:
    target_ref: str
    size: int
    mtime: float
    fingerprint: str | None = None


def safe_name(name: str) -> tuple[str, str | None]:
    """A file name this folder can hold, and why it changed (``None`` if it did not).

    Rules, in order: ``/`` and NUL become ``_``; ``.``, ``..`` and the empty name become
    ``_``, ``_.``...; a name longer than 255 UTF-8 bytes keeps its extension and is cut, with
    8 hex digits of its SHA-256 so two long names stay apart. Names are kept in the
    composed Unicode form (NFC) the source gave, never normalised otherwise.
    """
    changed = name.replace("/", REPLACEMENT).replace("\0", REPLACEMENT)
    if changed in ("", ".", ".."):
        changed = REPLACEMENT + changed
    if len(changed.encode("utf-8")) > NAME_MAX_BYTES:
        stem, dot, extension = changed.rpartition(".")
        if not dot or len(extension) > 16:
            stem, extension = changed, ""
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
        tail = f"~{digest}" + (f".{extension}" if extension else "")
        budget = NAME_MAX_BYTES - len(tail.encode("utf-8"))
        cut = stem.encode("utf-8")[:budget].decode("utf-8", "ignore")
        changed = cut + tail
    if changed == name:
        return name, None
    return changed, "renamed_file_name"


class FolderSink:
    """Writes documents under ``root``; container paths and names never leave it."""

    def __init__(self, root: FsPath) -> None:
        self.root = FsPath(root)

    def ensure_container(self, path: Path) -> str:
        """The folder for a container (created if missing), as a path relative to root."""
        names = [self._segment(segment) for segment in path]
        folder = self.root.joinpath(*names)
        self._inside(folder)
        make_folders(folder)
        return "/".join(names)

    def put(self, native_name: str, document: Document) -> tuple[str, str | None]:
        """Write the document; answer its target_ref (path relative to root) and the rename
        reason if its name or a sub-folder's had to change."""
        reasons = []
        parts = []
        for segment in (*document.folder, document.name):
            safe, reason = safe_name(segment)
            parts.append(safe)
            if reason:
                reasons.append(reason)
        target = self.root.joinpath(*native_name.split("/"), *parts) if native_name else \
            self.root.joinpath(*parts)
        self._inside(target)
        make_folders(target.parent)
        short = hashlib.sha256(target.name.encode("utf-8")).hexdigest()[:16]
        temporary = target.with_name(f".{short}{TEMPORARY_SUFFIX}")
        temporary.unlink(missing_ok=True)  # left by a crash: made again, private from the start
        digest = hashlib.sha256()
        with document.open() as body, create_file(temporary) as out:
            while chunk := body.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if "sha256:" + digest.hexdigest() != document.fingerprint:
            temporary.unlink(missing_ok=True)
            raise ItemRejected(f"{document.name}: content changed while it was read",
                               code="invalid_message")
        if document.modified is not None:
            stamp = document.modified.timestamp()
            os.utime(temporary, (stamp, stamp))
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        return target.relative_to(self.root).as_posix(), reasons[0] if reasons else None

    def remove(self, target_ref: str, native_name: str = "") -> None:
        """Delete a document written before under another name; gone already is fine. The
        folders it leaves empty go too, up to the container's folder ``native_name``."""
        path = self.root.joinpath(*target_ref.split("/"))
        self._inside(path)
        path.unlink(missing_ok=True)
        container = self.root.joinpath(*native_name.split("/")) if native_name else self.root
        folder = path.parent
        while container in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or gone): the folders above are not empty either
            folder = folder.parent

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredDocument]:
        folder = self.root.joinpath(*native_name.split("/")) if native_name else self.root
        if not folder.is_dir():
            return
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or path.name.endswith(TEMPORARY_SUFFIX):
                continue
            stat = path.stat()
            fingerprint = None
            if fingerprints:
                with path.open("rb") as body:
                    fingerprint = fingerprint_of(body)[0]
            yield StoredDocument(path.relative_to(self.root).as_posix(), stat.st_size,
                                 stat.st_mtime, fingerprint)

    def close(self) -> None:
        """Nothing to release: files are closed as they are written."""

    @staticmethod
    def _segment(segment: str) -> str:
        return safe_name(unicodedata.normalize("NFC", segment))[0]

    def _inside(self, path: FsPath) -> None:
        root = self.root.resolve()
        if root != path.resolve() and root not in path.resolve().parents:
            raise ContainerRefused(f"{path} is outside {root}")


def _fsync_dir(folder: FsPath) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
