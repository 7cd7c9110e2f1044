"""Drives read from a WebDAV file store, as a ``DocumentSource`` of the ``files`` workload: a
batch moves them from one DAV server to another (or to a local folder), and ``verify`` reads
a WebDAV target back.

The layout is the one ``connectors.webdav.sink`` writes, read back: the **root** is the
collection the batch's URL names for the account; each collection directly under it is a
**drive** (one container, ``(name,)``), and every file below a drive, at any depth, is an
item of it with its sub-collections as its folder. A batch WebDAV → WebDAV, or WebDAV →
folder, keeps the layout.

Listings are PROPFINDs of depth 1, one per collection (servers refuse ``infinity``: RFC
4918 9.1 lets them), and always ``complete``: WebDAV has no change feed for files, and a
complete listing is how the engine learns what was deleted. An item's ``source_id`` is its
path inside its drive, percent-decoded (``Délibérations/2024/PV.pdf``): stable across runs
while the file stays there (a file moved is a new item, the old one deleted at the source).
Its version is its ETag, weak or not alike (Apache gives a file written within the last
second a weak one, the strong one with the same tag after: one version, not two); a
server that gives none is versioned by ``getlastmodified`` and ``getcontentlength``.

Passed over without a note: the sink's temporary files (hidden names ending in
``.bascule-part``, ``.<digest>.bascule-part``: a write of bascule's cut short, no one's
file; a visible name ending so is a user's file, read, and renamed by the target's rule).
Passed over with a note each, once: names beginning with ``.`` (hidden: clients' own files such as
``.DS_Store``; ``hidden_file_skipped``, and ``webdav_hidden_folder_skipped`` for a collection
with what it holds), and files at the top of the root, in no drive
(``file_outside_drives``). Refused, with a note (``webdav_name_refused``), and never read: a
member the server names on another server, or whose path is not one segment below the
collection listed (``..``, ``.``, an encoded ``/`` that decodes into two segments, NUL):
nothing read can come from outside the root.

A file is read with one GET, not compressed, streamed into a spool (``connectors.spool``:
memory up to a few MB, a temporary file past that) and hashed as it arrives: its SHA-256 is
the document's fingerprint, its ``Last-Modified`` (RFC 4918 15.7: ``getlastmodified`` is
that header's value) its modification time, its ETag its version (the listing's, when the
GET gives none: a server that lists ETags but sends none would otherwise copy its files
again on every run). A file gone between its listing and its reading is passed over with a
note (``gone_before_read``); one the server will not give, or whose transfer breaks, with
``unreadable_item`` (a failure, asked again by the next run).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from connectors.base import (
    ConnectError,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    SourceNote,
)
from connectors.dav.client import DAV, DavClient, DavRefused, Resource
from connectors.local.documents import TEMPORARY_SUFFIX
from connectors.spool import Spool

WORKLOAD = "files"
CHUNK = 1 << 16
LISTED = [(DAV, "resourcetype"), (DAV, "getetag"), (DAV, "getcontentlength"),
          (DAV, "getlastmodified")]
COLLECTION = f"{{{DAV}}}collection"
GONE = frozenset({404, 410})


class WebDavSource:
    """Reads one account's drives under its root collection."""

    def __init__(self, client: DavClient) -> None:
        self.client = client
        self.root = client.base_path if client.base_path.endswith("/") \
            else client.base_path + "/"
        self._notes: list[SourceNote] = []
        self._noted: set[SourceNote] = set()

    # --- DocumentSource -------------------------------------------------------------------

    def document_containers(self, workload: str) -> list[Container]:
        """The collections directly under the root, by name; none for a root that does not
        exist (an account that never had a space). A file at the top of the root is in no
        drive: it is noted once (``file_outside_drives``), not read."""
        if workload != WORKLOAD:
            return []
        drives = []
        for name, kinds, _ in self._members(""):
            if COLLECTION in kinds:
                drives.append(name)
            else:
                self._note("file_outside_drives", name)
        return [Container(path=(name,), native_name=name) for name in sorted(drives)]

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        """Every file of the drive, sub-collections walked breadth first."""
        refs = []
        pending: deque[tuple[str, ...]] = deque([()])
        while pending:
            folder = pending.popleft()
            for name, kinds, resource in self._members("/".join((container.native_name,
                                                                 *folder))):
                if COLLECTION in kinds:
                    pending.append((*folder, name))
                    continue
                size = _length(resource)
                refs.append(DocumentRef("/".join((*folder, name)), _version(resource, size),
                                        size, name, folder))
        return DocumentListing(refs, {}, complete=True)

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        """One file at a time, each spooled while it is hashed."""
        for ref in refs:
            document = self._read(container, ref)
            if document is not None:
                yield document

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        self.client.close()

    # --- listings -------------------------------------------------------------------------

    def _members(self, folder: str) -> Iterator[tuple[str, set[str], Resource]]:
        """``(name, resource types, resource)`` of each member of the collection ``folder``
        (a path under the root, ``""`` for the root) that is neither hidden nor a temporary
        file; a hidden member, or one named outside the collection, is noted (once) and
        left out. A collection gone answers nothing; any other refusal raises
        ``ConnectError`` (``dav_refused``)."""
        place = self.root + (folder + "/" if folder else "")
        try:
            yield from self._named(folder, place)
        except DavRefused as refused:
            # Never a listing with a folder missing: its files would count as deleted.
            raise ConnectError(str(refused), code="dav_refused",
                               where=self.client.where) from None

    def _named(self, folder: str, place: str) -> Iterator[tuple[str, set[str], Resource]]:
        for resource in self.client.propfind(place, "1", LISTED):
            if resource.path.rstrip("/") == place.rstrip("/") and not resource.server:
                continue
            name = resource.path[len(place):].rstrip("/") \
                if resource.path.startswith(place) else ""
            if resource.server not in ("", self.client.origin.lower()) or not name or \
                    "/" in name or "\0" in name or name in (".", ".."):
                self._note("webdav_name_refused", folder or "/",
                           resource.server + resource.path)
            elif name.startswith(".") and name.endswith(TEMPORARY_SUFFIX):
                continue  # a write of bascule's cut short: no one's file
            elif name.startswith("."):
                self._note("webdav_hidden_folder_skipped" if COLLECTION in resource.kinds()
                           else "hidden_file_skipped", "/".join(filter(None, (folder, name))))
            else:
                yield name, resource.kinds(), resource

    def _note(self, code: str, subject: str, detail: str = "") -> None:
        """A note about a place, given once whatever the number of listings that meet it."""
        note = SourceNote(code, subject, detail)
        if note not in self._noted:
            self._noted.add(note)
            self._notes.append(note)

    # --- content --------------------------------------------------------------------------

    def _read(self, container: Container, ref: DocumentRef) -> Document | None:
        """The file, or ``None`` with a note. Its path is made of names ``_members``
        accepted (none holds ``/``, none is ``.`` or ``..``), each percent-encoded by the
        client: it names a resource under the root, and only that one. A ref that did not
        come from a listing (a ledger edited by hand) is checked again."""
        inside = f"{container.native_name}/{ref.source_id}"
        if any(segment in ("", ".", "..") or "\0" in segment for segment in inside.split("/")):
            self._note("webdav_name_refused", "/".join(container.path), inside)
            return None
        path = self.root + inside
        # Not compressed: the bytes hashed are the file's, and a server compressing on the
        # fly spends more than the link saves.
        with self.client.request("GET", path, headers={"Accept-Encoding": "identity"},
                                 stream=True) as response:
            if response.status_code in GONE:
                self._notes.append(SourceNote("gone_before_read", ref.source_id))
                return None
            if response.status_code != 200:
                self._notes.append(SourceNote("unreadable_item", ref.source_id,
                                              str(DavRefused("GET", path, response))))
                return None
            spool = Spool()
            try:
                for chunk in response.iter_content(CHUNK):
                    spool.write(chunk)
            except ConnectError as error:  # the answer cut short
                spool.close()
                self._notes.append(SourceNote("unreadable_item", ref.source_id, str(error)))
                return None
            spool.seal()
            etag = _plain(response.headers.get("ETag", ""))
            modified = _http_date(response.headers.get("Last-Modified"))
        return Document(source_id=ref.source_id,
                        version=etag or ref.version,
                        name=ref.name, folder=ref.folder, fingerprint=spool.fingerprint,
                        size=spool.size, modified=modified, open=spool.open)


def _length(resource: Resource) -> int:
    size = (resource.text(DAV, "getcontentlength") or "").strip()
    return int(size) if size.isdigit() else 0


def _version(resource: Resource, size: int) -> str:
    """The ETag (weak or strong alike), else ``getlastmodified`` and the length."""
    return _plain(resource.text(DAV, "getetag") or "") or \
        _dated(_http_date(resource.text(DAV, "getlastmodified")), size)


def _plain(etag: str) -> str:
    """An ETag without its weakness mark and quotes, as one version whether weak or not."""
    return etag.strip().removeprefix("W/").strip('"')


def _dated(modified: datetime | None, size: int) -> str:
    """A version for a server that gives no ETag."""
    return f"{modified.isoformat() if modified is not None else ''}:{size}"


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
