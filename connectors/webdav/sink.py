"""Drives written into a WebDAV file store, as a ``DocumentSink`` of the ``files`` workload.

Terms: the **root** is the collection the batch's URL names for the account (its personal
space); a **container** is a drive, a collection under the root; an item's ``target_ref`` is
its path under the root, percent-decoded (``OneDrive/Délibérations/2024/budget.pdf``), its
version the ETag the server gives it.

A write never leaves half a file where the file goes: the content is PUT as a stream, with
its length, to a hidden temporary name beside it (``.<digest>.bascule-part``), hashed as it
goes; only once the server has it whole, and its hash is the document's, is it MOVEd onto
its name. The MOVE carries the write's condition: ``Overwrite: F`` for a create-only write,
and for a replace the ETag expected (weak or strong alike), as RFC 4918's ``If`` header on
the destination (10.4), checked by a PROPFIND just before as well: WsgiDAV 4.4 ignores an
ETag there (a MOVE naming a wrong one overwrites the file: ``tests/test_webdav_sink.py``);
Apache honours it. A DELETE carries its condition the same way. A server that stores a
PUT under its name only once it has it whole (``whole_puts``: Apache) gets the file PUT
straight to its name with the same condition (``If-None-Match: *`` for a create-only
write). A write cut short
(the source's stream broke, the process was killed) leaves at most a temporary file, which
is no item (``inventory`` passes it over) and which the next write of the same name
replaces.

Nextcloud (``oc_headers``, ``chunk_size``): files are PUT straight to their names with
``X-OC-Mtime`` and ``OC-Checksum``; those larger than a chunk go through an upload folder
and are assembled at their names by a MOVE carrying the write's condition (``Overwrite:
F``, or the ``If`` header with the ETag), once their hash is the document's
(``connectors.webdav.chunked``).

A file's modification time is set where the server takes it, with a PROPPATCH of
``getlastmodified`` once the file is in place (RFC 4918 makes it protected: WsgiDAV takes it
when configured to, Apache never); where it is refused, or the profile says it would be,
the drive's report says once that its files carry their upload date (``mtime_not_kept``).

Names: ``/`` and NUL cannot be in a WebDAV segment whatever the server; ``.`` and ``..`` are
no names; the server's own rules (its profile's, or the batch's ``names``) say what else it
refuses; a name ending like the temporary files would never be listed. Each is renamed by
the stated rule of ``mappings.names``, and the report says so. Every other character is sent
percent-encoded: no name can reach outside the root.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from connectors.base import (
    ANY_VERSION,
    CHANGED_VERSION,
    CREATE_ONLY,
    PENDING_VERSION,
    ConnectError,
    ContainerRefused,
    Document,
    DocumentStored,
    ItemRejected,
    Path,
    SinkCapabilities,
    SourceNote,
    StoredDocument,
    VersionConflict,
)
from connectors.dav.client import DAV, XML, DavClient, DavRefused, Resource, Response
from connectors.local.documents import (
    TEMPORARY_SUFFIX,
    container_names,
    item_names,
    with_temporary_names,
)
from connectors.webdav import chunked
from connectors.webdav.chunked import Hashing, check_whole, refuse_unless
from mappings.names import POSIX, NameRules

CHUNK = 1 << 16
LISTED = [(DAV, "resourcetype"), (DAV, "getetag"), (DAV, "getcontentlength"),
          (DAV, "getlastmodified")]
NAME_LOCKS = 64
LISTED_SHARE = 4
"""``versions`` lists a folder where the files it settles there are at least a quarter of
what the folder held at its last listing."""
_PROPSTAT_STATUS = re.compile(rb"<(?:\w+:)?status>\s*HTTP/[\d.]+\s+(\d{3})")


class WebDavSink:
    """Writes one account's drives under its root collection."""

    def __init__(self, client: DavClient, max_item_size: int | None = None,
                 sets_mtime: bool | None = None, parallel_writes: int = 1,
                 whole_puts: bool = False, oc_headers: bool = False,
                 chunk_size: int | None = None, names: NameRules = POSIX) -> None:
        """``sets_mtime``: whether the server takes a file's modification time
        (``connectors.webdav.profiles``); ``None``: asked with the first file.
        ``whole_puts``: the server stores a PUT under its name only once it has it whole
        (Apache), so the file is PUT straight to its name with its condition
        (``If-None-Match: *``, or ``If`` with its ETag): one request where a temporary name
        and a MOVE take two.
        ``parallel_writes``: files written at once into a drive, each on a connection of
        its own; two writes of one name wait for each other (they share its temporary
        file).
        ``oc_headers``: each write carries the file's modification time as ``X-OC-Mtime``
        and its SHA-256 as ``OC-Checksum`` (Nextcloud), and the answer says whether the time
        was taken (``X-OC-MTime: accepted``); no PROPPATCH is sent.
        ``chunk_size``: files larger than this go by Nextcloud's chunked upload
        (``connectors.webdav.chunked``), in chunks of this size, through the upload
        collection beside a root under ``remote.php/dav/files/<user>/``.
        ``names``: the names the server takes (``mappings.names``)."""
        self.client = client
        self.names = with_temporary_names(names)
        self.root = client.base_path if client.base_path.endswith("/") \
            else client.base_path + "/"
        self.capabilities = SinkCapabilities(separator="/", forbidden_chars="\0",
                                             max_item_size=max_item_size,
                                             parallel_writes=parallel_writes,
                                             names=self.names)
        self._lock = threading.Lock()
        self._making = threading.Lock()
        self._names = [threading.Lock() for _ in range(NAME_LOCKS)]
        """Writes of one name wait for each other; names share these by their hash."""
        self._notes: list[SourceNote] = []
        self._made: set[str] = set()
        self._sets_mtime = sets_mtime
        self._whole_puts = whole_puts
        self._deferring = False
        self._listed: dict[str, int] = {}
        """Files each folder held at its last listing by ``versions``."""
        self._oc_headers = oc_headers
        self._chunk_size = chunk_size
        self._uploads = chunked.uploads_path(self.root) if chunk_size else None
        self._mtime_said: set[str] = set()
        """The drives whose report says their files' modification times were not kept."""

    # --- DocumentSink ---------------------------------------------------------------

    def ensure_container(self, path: Path) -> str:
        """The drive's collection (created with its parents if missing), as its path under
        the root; a segment renamed by the name rule is noted (``renamed_container``)."""
        names, notes = container_names(path, self.names)
        self._notes += notes
        native = "/".join(names)
        if not native:
            raise ContainerRefused("a drive needs a name")
        self._collections(native)
        return native

    def put(self, native_name: str, document: Document, expected: str | None = None
            ) -> DocumentStored:
        """Stream the document to a temporary name beside its place, then MOVE it there if
        ``expected`` holds (see the module's docstring)."""
        largest = self.capabilities.max_item_size
        if largest is not None and document.size > largest:
            raise ItemRejected(f"{document.name}: {document.size} bytes, the batch takes "
                               f"{largest} at most", code="too_big")
        target_ref, renamed = self._place(native_name, document)
        folder, _, name = target_ref.rpartition("/")
        try:
            self._collections(folder)
        except ContainerRefused as refused:  # a sub-folder of this item's: its own failure
            raise ItemRejected(f"{document.name}: {refused}", code="name_refused") from None
        place = self.root + target_ref
        with self._names[hash(target_ref) % NAME_LOCKS]:
            answer: Mapping[str, str] | None = None
            if self._uploads is not None and self._chunk_size is not None and \
                    document.size > self._chunk_size:
                condition = ({"Overwrite": "F"} if expected is CREATE_ONLY
                             else self._condition(place, target_ref, expected))
                try:
                    answer = chunked.upload(self.client, self._uploads, place, document,
                                            self._chunk_size, self._oc(document), condition,
                                            target_ref)
                except VersionConflict as conflict:
                    raise VersionConflict(str(conflict), current=self._stat(target_ref)
                                          ) from None
            elif self._whole_puts:
                condition = ({"If-None-Match": "*"} if expected is CREATE_ONLY
                             else self._condition(place, target_ref, expected))
                try:
                    answer = self._upload(place, document, {**condition, **self._oc(document)},
                                          target_ref)
                except ItemRejected as refused:
                    if refused.code == "invalid_message":  # it took what is not the source's
                        self._forget(place)
                    raise
            else:
                temporary = f"{self.root}{folder}/.{_short(name)}{TEMPORARY_SUFFIX}"
                try:
                    self._upload(temporary, document)
                    self._move(temporary, place, target_ref, expected)
                except BaseException:
                    self._forget(temporary)
                    raise
            if document.modified is not None and self._oc_headers:
                if answer is None or answer.get("X-OC-MTime", "").lower() != "accepted":
                    self._mtime_not_kept(native_name, "X-OC-Mtime not accepted")
            elif document.modified is not None:
                self._set_mtime(native_name, place, document.modified)
                answer = None  # the date changed the version the write answered
            version = self._written(target_ref, answer)
        if version is None:
            raise ConnectError(f"{place}: not found right after it was written",
                               code="connection_lost", where=self.client.where)
        return DocumentStored(target_ref, version, renamed)

    def fingerprint(self, document: Document) -> str:
        """A file store keeps the bytes: the document's own fingerprint."""
        return document.fingerprint

    def find(self, native_name: str, document: Document) -> StoredDocument | None:
        target_ref, _ = self._place(native_name, document)
        stored = self._stat(target_ref)
        if stored is None:
            return None
        return replace(stored, fingerprint=self._hash(target_ref))

    def inventory(self, native_name: str, fingerprints: bool = False
                  ) -> Iterator[StoredDocument]:
        """Every file under the drive's collection, sub-collections included, one PROPFIND
        of depth 1 per collection (servers refuse ``infinity``); temporary files passed
        over."""
        pending = [native_name]
        while pending:
            folder = pending.pop(0)
            for inside, resource in self._members_of(folder):
                if resource is None:
                    pending.append(inside)
                    continue
                stored = _stored(inside, resource)
                yield replace(stored, fingerprint=self._hash(inside)) if fingerprints \
                    else stored

    def remove(self, native_name: str, target_ref: str, expected: str = ANY_VERSION) -> None:
        """Delete the file (at version ``expected`` unless ``ANY_VERSION``), then each
        collection it leaves empty inside the drive's."""
        try:
            headers = self._condition(self.root + target_ref, target_ref, expected)
        except VersionConflict as conflict:
            if conflict.current is None:
                return  # gone already
            raise
        response = self.client.request("DELETE", self.root + target_ref, headers=headers)
        with response:
            if response.status_code == 412:
                raise VersionConflict(f"{target_ref}: changed on the target",
                                      current=self._stat(target_ref))
            if response.status_code not in (200, 204, 404):
                raise DavRefused("DELETE", target_ref, response)
        folder = target_ref.rpartition("/")[0]
        while folder != native_name and folder.startswith(native_name + "/"):
            if any(True for _ in self._members(folder)):
                break
            with self.client.request("DELETE", self.root + folder + "/") as response:
                if response.status_code not in (200, 204, 404):
                    break
            self._made.discard(folder)
            folder = folder.rpartition("/")[0]

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        return notes

    # --- LateVersionSink ------------------------------------------------------------

    def defer_versions(self) -> None:
        self._deferring = True

    def versions(self, native_name: str, written: Sequence[tuple[DocumentStored, int]]
                 ) -> list[DocumentStored]:
        """The versions of files written, one PROPFIND of depth 1 a folder where the
        files to settle are a good part of what the folder holds (as its last listing
        counted it: listing a folder of 40,000 files for 16 of them, chunk after chunk,
        would cost more than it saves), a HEAD a file elsewhere."""
        by_folder: dict[str, list[int]] = {}
        for index, (stored, _) in enumerate(written):
            by_folder.setdefault(stored.target_ref.rpartition("/")[0], []).append(index)
        found: dict[str, StoredDocument | None] = {}
        for folder, indexes in by_folder.items():
            if len(indexes) * LISTED_SHARE >= self._listed.get(folder, len(indexes)):
                try:
                    listed = {inside: _stored(inside, resource) for inside, resource in
                              self._members_of(folder) if resource is not None}
                except DavRefused:
                    # WsgiDAV answers 500 to a listing that meets a file another write
                    # moves away meanwhile: each file is asked for on its own instead.
                    listed = None
                if listed is not None:
                    self._listed[folder] = len(listed)
                    found.update({written[i][0].target_ref:
                                  listed.get(written[i][0].target_ref) for i in indexes})
                    continue
            found.update({written[i][0].target_ref: self._head(written[i][0].target_ref)
                          for i in indexes})
        answered = []
        for stored, size in written:
            there = found.get(stored.target_ref)
            same = there is not None and there.version and there.size == size
            answered.append(replace(stored, version=there.version if same and there
                                    else CHANGED_VERSION))
        return answered

    def close(self) -> None:
        self.client.close()

    # --- writing --------------------------------------------------------------------

    def _upload(self, path: str, document: Document, condition: dict[str, str] | None = None,
                target_ref: str = "") -> Mapping[str, str]:
        """PUT the content to ``path``, with its length and ``condition`` (and any other
        header given with it), hashed as it is sent; refuse what does not hash to the
        document's fingerprint (it changed while it was read). Returns the answer's
        headers."""
        digest = hashlib.sha256()
        with document.open() as body:
            stream = Hashing(body, digest, document.size)
            response = self.client.request(
                "PUT", path, body=stream,  # type: ignore[arg-type]
                headers={"Content-Length": str(document.size),
                         "Content-Type": "application/octet-stream", **(condition or {})})
        with response:
            if response.status_code == 412:
                raise VersionConflict(f"{target_ref}: changed on the target",
                                      current=self._stat(target_ref))
            refuse_unless("PUT", path, response, document, (200, 201, 204))
        check_whole(document, stream.sent, digest)
        return response.headers

    def _oc(self, document: Document) -> dict[str, str]:
        """Nextcloud's headers for a write: the modification time (whole seconds), and the
        checksum it stores without checking it (developer manual, "Special Headers")."""
        if not self._oc_headers:
            return {}
        headers = {}
        if document.modified is not None:
            headers["X-OC-Mtime"] = str(int(document.modified.timestamp()))
        if document.fingerprint.startswith("sha256:"):
            headers["OC-Checksum"] = "SHA256:" + document.fingerprint.removeprefix("sha256:")
        return headers

    def _written(self, target_ref: str,
                 answer: Mapping[str, str] | None) -> str | None:
        """The version of a file just written (``None``: not there): the ETag its write
        answered, where it answered one (WsgiDAV, Nextcloud) and nothing changed the file
        since; else, once ``defer_versions`` was called, ``PENDING_VERSION`` for
        ``versions`` to ask with others'; else ``_head``'s."""
        etag = answer.get("ETag") if answer is not None else None
        if etag:
            return _quoted(etag.strip())
        if self._deferring:
            return PENDING_VERSION
        stored = self._head(target_ref)
        return stored.version if stored is not None else None

    def _head(self, target_ref: str) -> StoredDocument | None:
        """A file's version and size from a HEAD (Apache answers a PUT without an ETag),
        which costs the server and bascule less than a PROPFIND (no properties to gather,
        no XML to read); from a PROPFIND only where HEAD gives no ETag."""
        with self.client.request("HEAD", self.root + target_ref) as response:
            if response.status_code == 404:
                return None
            etag = response.headers.get("ETag") if response.status_code == 200 else None
            length = response.headers.get("Content-Length")
        if etag and length and length.isdigit():
            return StoredDocument(target_ref, _quoted(etag.strip()), int(length))
        return self._stat(target_ref)

    def _condition(self, place: str, target_ref: str, expected: str | None
                   ) -> dict[str, str]:
        """The headers that make a write over ``place`` (or its deletion) happen only if
        ``expected`` holds: none for ``ANY_VERSION``; for a version, the ETag found there,
        checked first, in the ``If`` header; ``CREATE_ONLY`` is the caller's
        (``If-None-Match``, or ``Overwrite: F`` for a MOVE)."""
        if expected is CREATE_ONLY or expected == ANY_VERSION:
            return {}
        current = self._stat(target_ref)
        if current is None or not _same(current.version, expected):
            raise VersionConflict(f"{target_ref}: not at the version expected",
                                  current=current)
        return {"If": f"<{self.client.url(place)}> ([{current.version}])"}

    def _move(self, temporary: str, place: str, target_ref: str, expected: str | None
              ) -> None:
        headers = {"Destination": self.client.url(place),
                   "Overwrite": "F" if expected is CREATE_ONLY else "T",
                   **self._condition(place, target_ref, expected)}
        with self.client.request("MOVE", temporary, headers=headers) as response:
            if response.status_code == 412:
                raise VersionConflict(f"{target_ref}: changed on the target",
                                      current=self._stat(target_ref))
            if response.status_code not in (200, 201, 204):
                raise ItemRejected(str(DavRefused("MOVE", temporary, response)),
                                   code="server_error")

    def _set_mtime(self, native_name: str, place: str, modified: datetime) -> None:
        """Give the file its source's modification time where the server takes it (a
        PROPPATCH of ``getlastmodified``); where it does not, the drive's report says once
        that its files carry their upload date (``mtime_not_kept``)."""
        refusal = "" if self._sets_mtime is not False else "getlastmodified read-only"
        if not refusal:
            stamp = format_datetime(modified.astimezone(UTC), usegmt=True)
            body = ('<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:">'
                    f"<D:set><D:prop><D:getlastmodified>{stamp}</D:getlastmodified></D:prop>"
                    "</D:set></D:propertyupdate>").encode()
            with self.client.request("PROPPATCH", place, body=body,
                                     headers={"Content-Type": XML}) as response:
                status = _proppatch_status(response)
            if status == 200:
                self._sets_mtime = True
                return
            refusal = f"PROPPATCH getlastmodified: {status}"
            self._sets_mtime = False
        self._mtime_not_kept(native_name, refusal)

    def _mtime_not_kept(self, native_name: str, refusal: str) -> None:
        """The drive's report says once that its files carry their upload date."""
        with self._lock:
            if native_name not in self._mtime_said:
                self._mtime_said.add(native_name)
                self._notes.append(SourceNote("mtime_not_kept", native_name, refusal))

    def _forget(self, temporary: str) -> None:
        """Delete a temporary file; one left behind (the server gone) is no item, and the
        next write of the same name replaces it."""
        try:
            self.client.request("DELETE", temporary).close()
        except ConnectError:
            pass

    def _collections(self, folder: str) -> None:
        """Make each missing collection on the way to ``folder`` (under the root), one
        writer at a time: Apache answered 403 here to a MKCOL racing another of the same
        path."""
        path = ""
        for segment in filter(None, folder.split("/")):
            path = f"{path}/{segment}" if path else segment
            if path in self._made:
                continue
            with self._making:
                if path in self._made:
                    continue
                with self.client.request("MKCOL", self.root + path + "/") as response:
                    status = response.status_code
                if status != 201 and not self._is_collection(path):
                    raise ContainerRefused(f"MKCOL {path}: {status}" + (
                        ", a file of that name is there" if status == 405 else ""))
                self._made.add(path)

    def _is_collection(self, path: str) -> bool:
        return any(f"{{{DAV}}}collection" in resource.kinds() for resource in
                   self.client.propfind(self.root + path + "/", "0", [(DAV, "resourcetype")]))

    # --- reading --------------------------------------------------------------------

    def _stat(self, target_ref: str) -> StoredDocument | None:
        for resource in self.client.propfind(self.root + target_ref, "0", LISTED):
            if f"{{{DAV}}}collection" not in resource.kinds():
                return _stored(target_ref, resource)
        return None

    def _members_of(self, folder: str) -> Iterator[tuple[str, Resource | None]]:
        """Each member of the collection ``folder`` (a path under the root), by its path
        under the root: a file with its properties (``LISTED``), a collection with
        ``None``; temporary files passed over."""
        for resource in self.client.propfind(self.root + folder + "/", "1", LISTED):
            inside = self._inside(resource.path)
            if inside is None or inside.rstrip("/") == folder:
                continue
            if f"{{{DAV}}}collection" in resource.kinds():
                yield inside.rstrip("/"), None
            elif not inside.endswith(TEMPORARY_SUFFIX):
                yield inside, resource

    def _hash(self, target_ref: str) -> str:
        digest = hashlib.sha256()
        with self.client.request("GET", self.root + target_ref, stream=True) as response:
            if response.status_code != 200:
                raise DavRefused("GET", target_ref, response)
            for chunk in response.iter_content(CHUNK):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest()

    def _members(self, folder: str) -> Iterator[str]:
        for resource in self.client.propfind(self.root + folder + "/", "1",
                                             [(DAV, "resourcetype")]):
            inside = self._inside(resource.path)
            if inside is not None and inside.rstrip("/") != folder:
                yield inside

    def _inside(self, path: str) -> str | None:
        """A path the server names, under the root, or ``None`` for one outside it."""
        if not path.startswith(self.root) or ".." in path.split("/"):
            return None
        return path[len(self.root):]

    def _place(self, native_name: str, document: Document) -> tuple[str, str | None]:
        """Where the document goes under the root, and the rule that changed a name on the
        way, if any."""
        parts, renamed = item_names(native_name, document, self.names)
        return "/".join(parts), renamed


def _short(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]


def _stored(target_ref: str, resource: Resource) -> StoredDocument:
    etag = resource.text(DAV, "getetag") or ""
    size = resource.text(DAV, "getcontentlength")
    modified = resource.text(DAV, "getlastmodified")
    return StoredDocument(target_ref, _quoted(etag.strip()), int(size) if size else 0,
                          _date(modified))


def _same(etag: str, other: str) -> bool:
    """Whether two ETags name the same version, weak or not (RFC 9110 8.8.3.2): Apache
    gives a file written less than a second ago a weak one, ``W/"3-6620ccd391727"``, and
    the strong one with the same tag after."""
    return etag.removeprefix("W/") == other.removeprefix("W/")


def _quoted(etag: str) -> str:
    """An ETag as ``If-Match`` takes it: quoted (a server may list it bare)."""
    if not etag or etag.startswith(('"', 'W/"')):
        return etag
    return '"' + etag + '"'


def _proppatch_status(response: Response) -> int:
    """The status a PROPPATCH answer gives its property (in a multi-status body), or the
    answer's own."""
    if response.status_code != 207:
        return response.status_code
    found = _PROPSTAT_STATUS.search(response.content)
    return int(found.group(1)) if found else 0


def _date(text: str | None) -> datetime | None:
    try:
        return parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError):
        return None



