"""A CalDAV or CardDAV server as the source of calendars or contacts, as a
``DocumentSource``: a batch moves them from one DAV server to another, and ``verify`` reads a
DAV target back.

The account's home is found as the sink finds it (``connectors.dav.discovery``). Every
calendar that takes events (its ``supported-calendar-component-set`` names VEVENT, or it
names nothing) and every address book of the home is a container, named by its display
name; the default one (``DavHome.default_collection``) has the role ``default``. An item is
one resource of the collection: its ``source_id`` is its path (stable while it stays
there), its version its ETag, its content the bytes the server serves for it, read as they
come (``GET``, spooled) and hashed as they are (``fingerprint``); a sink that compares
meanings reads them again for theirs.

Listings use a WebDAV sync-collection REPORT (RFC 6578) where the collection answers one:
the first gives every member and a sync token, the unit's cursor; the next give only what
changed since and what went. A token the server no longer takes (RFC 6578, 3.2:
``valid-sync-token``) means a full listing again, with a note. A collection that answers
no sync REPORT is listed with a PROPFIND of its members' ETags, the cursor keeping them so
that a later pass answers what changed.

An href a server answers that names another server, or a place that is not a member of the
collection (``..``, a deeper path), is never read: a note names it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape

from connectors.base import (
    DEFAULT_CONTAINER,
    ConnectError,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    SourceNote,
)
from connectors.dav.client import DAV, DavClient, DavRefused, Resource
from connectors.dav.discovery import KINDS, Collection, DavHome
from connectors.spool import Spool

CHUNK = 1 << 16
EVENT = "VEVENT"
MEMBER_PROPERTIES = [(DAV, "getetag"), (DAV, "getcontentlength"), (DAV, "resourcetype")]
TRUNCATED = 507
"""The status a sync-collection answer gives its own collection when it stopped before the
end (RFC 6578, 3.6): the token it ends with carries on from there."""


class DavSource:
    """Reads the calendars or address books of one account of a DAV server."""

    def __init__(self, client: DavClient) -> None:
        self.client = client
        self._homes: dict[str, DavHome] = {}
        self._notes: list[SourceNote] = []

    # --- DocumentSource -------------------------------------------------------------------

    def document_containers(self, workload: str) -> list[Container]:
        """The default collection first, then the others by name; two of one name are told
        apart by the last segment of their URL, with a note."""
        if workload not in KINDS:
            return []
        home = self._home(workload)
        collections = [c for c in home.collections()
                       if workload != "calendar" or not c.components or EVENT in c.components]
        default = home.default_collection() if collections else None
        collections.sort(key=lambda c: (c.path != default, _shown(c), c.path))
        taken: set[str] = set()
        found = []
        for collection in collections:
            name = _shown(collection)
            if name in taken:
                name = f"{name} ({_segment(collection.path)})"
                self._notes.append(SourceNote("duplicate_container_name", name,
                                              collection.path))
            taken.add(name)
            found.append(Container(path=(name,), native_name=collection.path,
                                   role=DEFAULT_CONTAINER if collection.path == default
                                   else None))
        return found

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        """Through a sync REPORT where the collection answers one, else a PROPFIND. A
        collection gone answers an empty listing; any other refusal raises
        ``ConnectError`` (``dav_refused``)."""
        try:
            return self._listing(container, cursor or {})
        except DavRefused as refused:
            if refused.status in (404, 410):
                return DocumentListing([], {}, complete=True)
            raise ConnectError(str(refused), code="dav_refused",
                               where=self.client.where) from None

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        """Each item read with a GET, not compressed, spooled as it arrives."""
        for ref in refs:
            if not self._member(container, ref.source_id, ""):
                continue
            document = self._read(ref)
            if document is not None:
                yield document

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        return notes

    def close(self) -> None:
        self.client.close()

    # --- listings -------------------------------------------------------------------------

    def _listing(self, container: Container, cursor: dict[str, Any]) -> DocumentListing:
        if "etags" in cursor:
            return self._propfind_listing(container, cursor["etags"])
        token = cursor.get("sync_token")
        try:
            return self._sync_listing(container, token)
        except DavRefused as refused:
            if refused.status in (404, 410) or not (400 <= refused.status < 500
                                                    or refused.status == 501):
                raise
            if token is None:  # no sync REPORT here
                return self._propfind_listing(container, None)
            self._notes.append(SourceNote("sync_token_refused", _subject(container),
                                          str(refused)))
            return self._listing(container, {})

    def _sync_listing(self, container: Container, token: str | None) -> DocumentListing:
        """Every member (no token) or what changed since ``token``, as many REPORTs as the
        server needs to give it all."""
        changed: dict[str, DocumentRef] = {}
        removed: dict[str, None] = {}
        place = container.native_name
        complete = token is None
        while True:
            truncated = False
            with self.client.report(place, _sync_body(token), depth="0") as answer:
                for resource in answer:
                    if resource.path.rstrip("/") == place.rstrip("/") and not resource.server:
                        truncated = truncated or resource.status == TRUNCATED
                        continue
                    if not self._member(container, resource.path, resource.server):
                        continue
                    if resource.status in (404, 410):
                        changed.pop(resource.path, None)
                        removed[resource.path] = None
                    elif (ref := _ref(resource)) is not None:
                        removed.pop(resource.path, None)
                        changed[resource.path] = ref
                next_token = answer.sync_token
            if not next_token:
                raise ConnectError(f"REPORT {place}: no sync token in the answer",
                                   code="dav_refused", where=self.client.where)
            if not truncated or next_token == token:
                break
            token = next_token
        return DocumentListing(list(changed.values()), {"sync_token": next_token},
                               complete=complete, removed=list(removed))

    def _propfind_listing(self, container: Container, before: dict[str, str] | None
                          ) -> DocumentListing:
        """The members' ETags; with those of a former pass, only what changed."""
        refs = {}
        for resource in self.client.propfind(container.native_name, "1", MEMBER_PROPERTIES):
            if resource.path.rstrip("/") == container.native_name.rstrip("/") and \
                    not resource.server:
                continue
            if self._member(container, resource.path, resource.server) and \
                    (ref := _ref(resource)) is not None:
                refs[ref.source_id] = ref
        etags = {source_id: ref.version for source_id, ref in refs.items()}
        if before is None:
            return DocumentListing(list(refs.values()), {"etags": etags}, complete=True)
        return DocumentListing([ref for ref in refs.values()
                                if before.get(ref.source_id) != ref.version],
                               {"etags": etags}, complete=False,
                               removed=[source_id for source_id in before
                                        if source_id not in refs])

    # --- items ----------------------------------------------------------------------------

    def _read(self, ref: DocumentRef) -> Document | None:
        # Not compressed: a server compressing on the fly spends more than the link saves.
        with self.client.request("GET", ref.source_id, headers={"Accept-Encoding": "identity"},
                                 stream=True) as response:
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                self._notes.append(SourceNote("unreadable_item", ref.source_id,
                                              str(DavRefused("GET", ref.source_id, response))))
                return None
            spool = Spool()
            for chunk in response.iter_content(CHUNK):
                spool.write(chunk)
            spool.seal()
            version = response.headers.get("ETag") or ref.version
            modified = _http_date(response.headers.get("Last-Modified"))
        return Document(ref.source_id, version, _segment(ref.source_id), (), spool.fingerprint,
                        spool.size, modified, spool.open)

    def _member(self, container: Container, path: str, server: str) -> bool:
        """Whether ``path`` is a member of the container on this server; a note when the
        server named anything else."""
        place = container.native_name
        name = path[len(place):] if path.startswith(place) else ""
        if (not server or server == self.client.origin.lower()) and name and \
                "/" not in name and name not in (".", ".."):
            return True
        self._notes.append(SourceNote("dav_href_outside", _subject(container), server + path))
        return False

    def _home(self, workload: str) -> DavHome:
        if workload not in self._homes:
            self._homes[workload] = DavHome(self.client, KINDS[workload])
        return self._homes[workload]


def _ref(resource: Resource) -> DocumentRef | None:
    """A member as a listing gives it, ``None`` for a sub-collection or one without ETag."""
    etag = resource.text(DAV, "getetag")
    if f"{{{DAV}}}collection" in resource.kinds() or not etag:
        return None
    return DocumentRef(resource.path, etag, int(resource.text(DAV, "getcontentlength") or 0),
                       _segment(resource.path))


def _sync_body(token: str | None) -> bytes:
    token_element = f"<D:sync-token>{escape(token)}</D:sync-token>" if token else \
        "<D:sync-token/>"
    return ('<?xml version="1.0" encoding="utf-8"?><D:sync-collection xmlns:D="DAV:">'
            f"{token_element}<D:sync-level>1</D:sync-level><D:prop><D:getetag/>"
            "<D:getcontentlength/><D:resourcetype/></D:prop></D:sync-collection>").encode()


def _shown(collection: Collection) -> str:
    return collection.display_name.strip() or _segment(collection.path)


def _segment(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def _subject(container: Container) -> str:
    return "/".join(container.path)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
