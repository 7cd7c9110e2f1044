"""A local folder as the sink of calendars (``.ics``), contacts (``.vcf``) and files, and as
their source (``FolderSource``: the same layout, read back).

Each container is a folder under the root; each document a file in it (files keep their
sub-folders). Writing is idempotent by name: a document written again lands on the same
file, so a re-run after a crash leaves no duplicate. A file is written to a temporary name,
fsynced, then moved into place, and its modification time is the source's. A file's
version is its inode number and change time (``st_ctime_ns``, which no program can set
back): any write, by bascule or by someone else, gives a new one. Folders the sink creates
are ``0700`` and files ``0600`` whatever the umask (``connectors.local.private``): they hold
people's calendars, contacts and files.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
import unicodedata
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import BinaryIO

from connectors.base import (
    ANY_VERSION,
    Container,
    ContainerRefused,
    Document,
    DocumentListing,
    DocumentRef,
    DocumentStored,
    ItemRejected,
    Path,
    SinkCapabilities,
    SourceNote,
    StoredDocument,
    VersionConflict,
    fingerprint_of,
)
from connectors.local.objects import FileObject, Reader, objects, versioned
from connectors.local.private import create_file, make_folders
from mappings.names import PATH_TOO_LONG, POSIX, NameRules, PathTooLong

TEMPORARY_SUFFIX = ".bascule-part"
CHUNK = 1 << 20


def with_temporary_names(rules: NameRules) -> NameRules:
    """``rules`` for a sink writing through temporary files: a name ending like them is
    renamed, or ``inventory`` would never list it."""
    return replace(rules, refused_endings=(*rules.refused_endings, TEMPORARY_SUFFIX))


def container_names(path: Path, rules: NameRules) -> tuple[list[str], list[SourceNote]]:
    """A container's segments as a target of files with ``rules`` holds them (in composed
    Unicode form, NFC), and a ``renamed_container`` note for each one ``rules`` changed."""
    composed = [unicodedata.normalize("NFC", segment) for segment in path]
    try:
        names, _ = rules.path(composed)
    except PathTooLong as error:
        raise ContainerRefused(str(error), code=PATH_TOO_LONG) from None
    return names, [SourceNote("renamed_container", "/".join(names), segment)
                   for segment, whole, name in zip(path, composed, names, strict=True)
                   if name != whole]


def item_names(native_name: str, document: Document, rules: NameRules
               ) -> tuple[list[str], str | None]:
    """Where a document goes in the container ``native_name``, segment by segment from the
    root (its sub-folders and name as the source gave them, but for ``rules``), and the
    code of the first rule that changed one. Raises ``ItemRejected`` (``path_too_long``)
    when its folders alone are longer than the target takes."""
    container = native_name.split("/") if native_name else []
    try:
        names, changes = rules.path([*container, *document.folder, document.name])
    except PathTooLong as error:
        raise ItemRejected(f"{document.name}: {error}", code=PATH_TOO_LONG) from None
    return names, changes[0][2] if changes else None


class FolderSink:
    """Writes documents under ``root``, as a ``DocumentSink``; container paths and names
    never leave it."""

    def __init__(self, root: FsPath, names: NameRules = POSIX) -> None:
        """``names``: the names the file system takes (``mappings.names``); a Linux one's
        by default."""
        self.root = FsPath(root)
        self.names = with_temporary_names(names)
        self.capabilities = SinkCapabilities(separator="/", forbidden_chars="\0",
                                             names=self.names)
        self._notes: list[SourceNote] = []

    def ensure_container(self, path: Path) -> str:
        """The folder for a container (created if missing), as a path relative to root. A
        segment it cannot hold as it is gets renamed by its name rules, and a note says so
        (``drain_notes``)."""
        names, notes = container_names(path, self.names)
        self._notes += notes
        folder = self.root.joinpath(*names)
        self._inside(folder)
        make_folders(folder)
        return "/".join(names)

    def put(self, native_name: str, document: Document, expected: str | None = None
            ) -> DocumentStored:
        """Write the document where its (safe) name puts it, if ``expected`` holds there."""
        target, renamed = self._place(native_name, document)
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
        try:
            if "sha256:" + digest.hexdigest() != document.fingerprint:
                raise ItemRejected(f"{document.name}: content changed while it was read",
                                   code="invalid_message")
            if document.modified is not None:
                stamp = document.modified.timestamp()
                os.utime(temporary, (stamp, stamp))
            self._move_into_place(temporary, target, expected)
        finally:
            temporary.unlink(missing_ok=True)
        _fsync_dir(target.parent)
        return DocumentStored(target.relative_to(self.root).as_posix(),
                              _version(target.lstat()), renamed)

    def fingerprint(self, document: Document) -> str:
        """A file holds the document's bytes: its own fingerprint."""
        return document.fingerprint

    def find(self, native_name: str, document: Document) -> StoredDocument | None:
        target, _ = self._place(native_name, document)
        return self._stored(target, fingerprint=True)

    def remove(self, native_name: str, target_ref: str, expected: str = ANY_VERSION) -> None:
        """Delete a document written before under another name, if it is still at version
        ``expected``; the folders it leaves empty go too, up to the container's folder."""
        path = self.root.joinpath(*target_ref.split("/"))
        self._inside(path)
        current = self._stored(path)
        if current is None:
            return
        if expected != ANY_VERSION and current.version != expected:
            raise VersionConflict(f"{target_ref} changed on the target", current=current)
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
            if path.name.endswith(TEMPORARY_SUFFIX):
                continue
            stored = self._stored(path, fingerprints)
            if stored is not None:
                yield stored

    def close(self) -> None:
        """Nothing to release: files are closed as they are written."""

    def _place(self, native_name: str, document: Document) -> tuple[FsPath, str | None]:
        """Where the document goes, and the rule that changed a name on the way, if any."""
        parts, renamed = item_names(native_name, document, self.names)
        target = self.root.joinpath(*parts)
        self._inside(target)
        return target, renamed

    def _move_into_place(self, temporary: FsPath, target: FsPath, expected: str | None
                         ) -> None:
        """Put the written file at its name if ``expected`` holds: a hard link for a
        create-only write (it fails if the name is taken, whoever took it), a rename over
        the version expected otherwise."""
        if expected is None:
            try:
                os.link(temporary, target, follow_symlinks=False)
            except FileExistsError:
                current = self._stored(target)
                raise VersionConflict(f"{target.name} already exists on the target",
                                      current=current) from None
            return
        if expected != ANY_VERSION:
            current = self._stored(target)
            if current is None or current.version != expected:
                raise VersionConflict(f"{target.name} is not the version copied before",
                                      current=current)
        os.replace(temporary, target)

    def _stored(self, path: FsPath, fingerprint: bool = False) -> StoredDocument | None:
        """The regular file at ``path`` as an item, or ``None`` (nothing, a folder, a link:
        links are never followed, so never items)."""
        try:
            status = path.lstat()
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        digest = None
        if fingerprint:
            with _open_no_follow(path) as body:
                digest = fingerprint_of(body)[0]
        return StoredDocument(path.relative_to(self.root).as_posix(), _version(status),
                              status.st_size,
                              datetime.fromtimestamp(status.st_mtime, UTC), digest)

    def drain_notes(self) -> list[SourceNote]:
        """The containers renamed since the last call, each said once."""
        notes, self._notes = self._notes, []
        return notes

    def _inside(self, path: FsPath) -> None:
        root = self.root.resolve()
        if root != path.resolve() and root not in path.resolve().parents:
            raise ContainerRefused(f"{path} is outside {root}")


def _version(status: os.stat_result) -> str:
    return f"{status.st_ino}:{status.st_ctime_ns}"


def _open_no_follow(path: FsPath) -> BinaryIO:
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def _fsync_dir(folder: FsPath) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class FolderSource:
    """Reads calendars (``.ics``), contacts (``.vcf``) and files from the layout ``FolderSink``
    writes, as a ``DocumentSource``: an export taken with bascule, or made by hand.

    Under ``root`` (``<path>/<login>/<workload>``): for calendars and contacts, every folder
    holding files is a container (``Contacts/Élus``), each file in it one item; for files,
    every top folder is a drive, and every file below it an item with its sub-folders. An
    item's id is its path inside its container, its version its size and modification time
    (``st_mtime_ns``): a file changed in place gets a new one. Links are never followed,
    each a note; nor are the sink's temporary files read.

    A calendar or contacts file holding several objects (a whole calendar's export, an
    address book's) is cut into one item per object (``connectors.local.objects``), as a
    DAV server holds them: the item's id is the file's path, ``#`` and the object's UID (or
    ``#`` and its place in the file, without one), its name ``<file>-<UID>.ics`` (or
    ``.vcf``), its version the SHA-256 of its bytes; the file gets a note saying how many
    items it made.
    """

    def __init__(self, root: FsPath, workload: str) -> None:
        self.root = FsPath(root)
        self.workload = workload
        self._notes: list[SourceNote] = []
        self._noted: set[FsPath] = set()

    def document_containers(self, workload: str) -> list[Container]:
        if not self.root.is_dir() or self.root.is_symlink():
            return []
        if workload == "files":
            folders = [entry for entry in sorted(self.root.iterdir())
                       if self._visible(entry) and entry.is_dir()]
        else:
            folders = [folder for folder in sorted(self._folders(self.root))
                       if any(self._items(folder))]
        return [Container(path=folder.relative_to(self.root).parts,
                          native_name=folder.relative_to(self.root).as_posix())
                for folder in folders]

    def list_documents(self, container: Container, cursor: dict | None) -> DocumentListing:
        folder = self.root / container.native_name
        refs = []
        for path in self._items(folder):
            status = path.lstat()
            inside = path.relative_to(folder)
            parts = self._parts(path)
            if not parts:
                refs.append(DocumentRef(inside.as_posix(), _source_version(status),
                                        status.st_size, path.name, inside.parent.parts))
                continue
            self._notes.append(SourceNote("export_file_split", inside.as_posix(),
                                          params={"count": len(parts)}))
            refs += [DocumentRef(_part_id(inside, part), part.version, part.size,
                                 _part_name(path.name, part, self.workload),
                                 inside.parent.parts)
                     for part in parts]
        return DocumentListing(refs, {}, complete=True)

    def fetch_documents(self, container: Container, refs: list[DocumentRef]
                        ) -> Iterator[Document]:
        folder = self.root / container.native_name
        cut: dict[str, dict[str, FileObject]] = {}
        """The parts of each file cut into several items, read again here: a file changed
        since the listing is read as it is now."""
        for ref in refs:
            path = folder / ref.source_id
            whole, key = _cut_id(folder, ref.source_id)
            if whole:
                part = self._part(folder, whole, key, cut.setdefault(whole, {}))
                if part is not None:
                    yield part
                continue
            try:
                status = path.lstat()
                if not stat.S_ISREG(status.st_mode):
                    continue
                with _open_no_follow(path) as body:
                    fingerprint, size = fingerprint_of(body)
            except FileNotFoundError:  # deleted since the listing: the next one says so
                self._notes.append(SourceNote("gone_before_read", ref.source_id))
                continue
            except OSError as error:
                self._notes.append(SourceNote("unreadable_item", ref.source_id, str(error)))
                continue
            yield Document(ref.source_id, _source_version(status), path.name,
                           FsPath(ref.source_id).parent.parts, fingerprint, size,
                           datetime.fromtimestamp(status.st_mtime, UTC),
                           functools.partial(_open_no_follow, path))

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        """Nothing to release: files are closed as they are read."""

    def _visible(self, entry: FsPath) -> bool:
        """Not hidden, not a temporary file of the sink's, and not a link (noted)."""
        if entry.name.startswith(".") or entry.name.endswith(TEMPORARY_SUFFIX):
            return False
        if entry.is_symlink():
            if entry not in self._noted:
                self._noted.add(entry)
                self._notes.append(SourceNote("symlink_skipped",
                                              entry.relative_to(self.root).as_posix(),
                                              os.readlink(entry)))
            return False
        return True

    def _folders(self, folder: FsPath) -> Iterator[FsPath]:
        for entry in sorted(folder.iterdir()):
            if self._visible(entry) and entry.is_dir():
                yield entry
                yield from self._folders(entry)

    def _parts(self, path: FsPath) -> list[FileObject]:
        """The objects of a calendar or contacts file holding more than one, with their
        versions; ``[]`` for any other file (read whole, as it is)."""
        if self.workload == "files":
            return []
        try:
            with _open_no_follow(path) as body:
                found = objects(body)
                return versioned(body, found) if len(found) > 1 else []
        except OSError:
            return []  # read whole, where what went wrong is said

    def _part(self, folder: FsPath, whole: str, key: str, parts: dict[str, FileObject]
              ) -> Document | None:
        """One object of a file cut into several, as a document; ``None`` if the file
        holds it no more (noted if the file cannot be read)."""
        path = folder / whole
        inside = FsPath(whole)
        try:
            if not parts:
                parts.update((part.key, part) for part in self._parts(path))
            status = path.lstat()
        except OSError as error:
            self._notes.append(SourceNote("unreadable_item", path.name, str(error)))
            return None
        part = parts.get(key)
        if part is None:
            return None
        return Document(_part_id(inside, part), part.version,
                        _part_name(path.name, part, self.workload), (), part.version, part.size,
                        datetime.fromtimestamp(status.st_mtime, UTC),
                        functools.partial(_open_part, path, part.ranges))

    def _items(self, folder: FsPath) -> Iterator[FsPath]:
        """A container's items: its own files, and for a drive every file below it."""
        for entry in sorted(folder.iterdir()):
            if not self._visible(entry):
                continue
            if entry.is_file():
                yield entry
            elif entry.is_dir() and self.workload == "files":
                yield from self._items(entry)


def _part_id(inside: FsPath, part: FileObject) -> str:
    """``<file>#<UID>``, or ``<file>##<n>`` for an object without UID (its place)."""
    return f"{inside.as_posix()}#{part.key}"


def _cut_id(folder: FsPath, source_id: str) -> tuple[str, str]:
    """``(file, key)`` of an object's id (``_part_id``), ``("", "")`` for a whole file's:
    the file is the shortest part before a ``#`` that names a file of the folder."""
    if (folder / source_id).is_file():
        return "", ""
    at = source_id.find("#")
    while at > 0:
        if (folder / source_id[:at]).is_file():
            return source_id[:at], source_id[at + 1:]
        at = source_id.find("#", at + 1)
    return "", ""


def _part_name(file_name: str, part: FileObject, workload: str) -> str:
    """``<file's stem>-<UID>.<its extension>``; ``-n<place>`` without UID; ``.vcf`` or
    ``.ics`` for a file without extension."""
    stem, dot, extension = file_name.rpartition(".")
    if not dot:
        stem, extension = file_name, "vcf" if workload == "contacts" else "ics"
    tail = f"n{part.key[1:]}" if part.uid is None or part.key.startswith("#") else part.key
    return f"{stem}-{tail}.{extension}"


def _open_part(path: FsPath, ranges: list[tuple[int, int]]) -> Reader:
    return Reader(_open_no_follow(path), ranges)


def _source_version(status: os.stat_result) -> str:
    return f"{status.st_size}:{status.st_mtime_ns}"
