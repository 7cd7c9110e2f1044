"""A CalDAV or CardDAV server as the sink of calendars, task lists or contacts: one
collection per calendar, task list or address book, one resource per calendar object (a UID
with its overrides), task or contact, as a ``DocumentSink``.

The user's home is found from the batch's URL (``connectors.dav.discovery``). A container is
the collection of that home whose display name is the container's name and which takes the
workload's component (events, tasks), made with MKCALENDAR (RFC 4791) or an extended MKCOL
(RFC 5689) when there is none; its URL ends in a slug of the name
(``conseil-municipal-3fa2b1c4``, ``taches-5d1e9a0b-tasks`` for a task list), its display
name is the name itself.

A server that schedules (RFC 6638) would mail every attendee of what is written. The batch's
``scheduling`` and the server's profile (``connectors.dav.profiles``) say how it is kept
from it: ``SCHEDULE-AGENT=CLIENT`` on every ORGANIZER and ATTENDEE (``mappings.scheduling``),
or, for a server that ignores that, the attendees left out, each event so written a note
for the report.

A contact goes in a vCard version the server takes: as it is when every address book of the
home lists its version (``supported-address-data``, within what the profile says the server
keeps), as vCard 3.0 otherwise (``mappings.vcard``); a photo that does not decode or is too
big is left out. Each thing so dropped is a note for the report.

A DAV server stores what it was given rewritten (lines refolded, properties reordered,
CATEGORIES split), so this sink compares meanings, not bytes: the fingerprint it answers is
``mappings.ical_fingerprint.semantic_fingerprint`` of what the server holds, and
``fingerprint(document)`` that of a document, equal when the server kept its meaning.
Versions are the server's ETags; every write is conditional on one (``If-Match``) or on
nothing being there (``If-None-Match: *``).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Iterator
from typing import IO
from urllib.parse import unquote

from connectors.base import (
    ANY_VERSION,
    CREATE_ONLY,
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
from connectors.dav.client import DAV, XML, DavClient, DavRefused, Resource
from connectors.dav.discovery import KINDS, Collection, DavHome
from connectors.dav.profiles import DROP_ATTENDEES, PROTECT
from mappings.contacts import Note
from mappings.ical_fingerprint import BOM, semantic_fingerprint
from mappings.object_facts import ObjectFacts
from mappings.orphans import Standalone, orphans
from mappings.scheduling import WithoutAttendees, client_scheduled
from mappings.vcard import DEFAULT_VERSIONS, for_server

CHUNK = 1 << 16
SPOOLED_IN_MEMORY = 1 << 20
CARD_HELD = 4 << 20
"""The largest vCard converted to a version the server takes: it is held whole for that
(a photo of 1 MiB, the most a card keeps, takes 1.4 MiB in base64)."""
"""A prepared object larger than this waits on disk, not in memory, until it is sent."""
NAME_MAX = 120
"""The longest resource name written: servers keep names in databases and file systems
whose limits differ (255 bytes on most)."""
JOINER = " / "
"""Between the segments of a nested source folder, in the one display name a flat list of
calendars or address books gives it."""
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._~@+=-]")
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")


ITEM_PROPERTIES = [(DAV, "getetag"), (DAV, "getcontentlength"), (DAV, "resourcetype")]


def resource_name(name: str) -> tuple[str, str | None]:
    """A resource name every DAV server takes, and why it changed (``None`` if it did not).

    Kept as it is: ASCII letters and digits, ``. _ ~ @ + = -``, not first a dot, at most
    120 characters. Otherwise each other character becomes ``_``, a leading dot ``_``, the
    name is cut to fit, and ``~`` with 8 hex digits of the original's SHA-256 goes before
    its extension, so that two names changed alike stay apart."""
    safe = _UNSAFE_IN_NAME.sub("_", unicodedata.normalize("NFC", name))
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe == name and len(safe) <= NAME_MAX:
        return name, None
    stem, dot, extension = safe.rpartition(".")
    if not dot or not stem or len(extension) > 8:
        stem, dot, extension = safe, "", ""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = stem[:NAME_MAX - len(digest) - len(extension) - 2]
    return f"{stem}~{digest}{dot}{extension}", "renamed_file_name"


def display_name(path: Path) -> str:
    """The name a calendar or address book shows for a source folder: its segments joined,
    in the composed Unicode form, each character XML cannot carry changed to ``_``."""
    joined = JOINER.join(unicodedata.normalize("NFC", segment) for segment in path)
    return _XML_INVALID.sub("_", joined) or "_"


def slug(name: str) -> str:
    """The last segment of a new collection's URL: the name in lower-case ASCII words, and
    8 hex digits of its SHA-256, so that names alike in ASCII stay apart."""
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = _SLUG_UNSAFE.sub("-", ascii_only.lower()).strip("-")[:40].rstrip("-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{words or 'collection'}-{digest}"


class DavSink:
    """Writes one workload (``calendar``, ``tasks`` or ``contacts``) of one account into its
    home."""

    def __init__(self, client: DavClient, workload: str, *, rewrite: str | None = PROTECT,
                 standalone_orphans: bool = False, max_item_size: int | None = None,
                 parallel_writes: int = 1, vcard_versions: frozenset[str] | None = None
                 ) -> None:
        """``rewrite`` is how calendar objects are changed before they are written:
        ``PROTECT``, ``DROP_ATTENDEES`` or ``None`` (``connectors.dav.profiles.rewrite``);
        ``standalone_orphans`` writes each occurrence whose series is not in its object as
        a standalone event (``Profile.requires_master``); ``vcard_versions`` the versions the
        server's profile says it keeps as given, where that is fewer than it lists
        (``Profile.vcard_versions``)."""
        self.capabilities = SinkCapabilities(separator="", forbidden_chars="",
                                             max_item_size=max_item_size,
                                             parallel_writes=parallel_writes)
        self.client = client
        self.account = DavHome(client, KINDS[workload])
        self.kind = self.account.kind
        # A VTODO may have attendees too (a task assigned to someone): a scheduling server
        # would mail them as it would for an event.
        self.rewrite = rewrite if self.kind.component is not None else None
        self.standalone_orphans = standalone_orphans and self.kind.component is not None
        self._notes: list[SourceNote] = []
        self._creating = threading.Lock()
        self._kept_versions = vcard_versions
        self._vcard_versions: frozenset[str] | None = None

    # --- containers -----------------------------------------------------------------------

    def ensure_coloured_container(self, path: Path, colour: str) -> str:
        """As ``ensure_container``; a calendar or task list it makes shows ``colour``."""
        return self.ensure_container(path, colour)

    def ensure_container(self, path: Path, colour: str | None = None) -> str:
        """The collection whose display name is the folder's name, or whose URL is the one
        this sink gives that name, made if there is none. A name XML cannot carry is
        changed, a server may change it too (Xandikos trims spaces): a note says so
        (``drain_notes``)."""
        asked = JOINER.join(unicodedata.normalize("NFC", segment) for segment in path)
        shown = display_name(path)
        place = f"{self.account.path}{slug(shown)}{self.kind.slug_suffix}/"
        with self._creating:
            found = self._collection(shown, place)
            if found is None:
                method, body = self.kind.make_body(shown, colour)
                response = self.client.request(method, place, body=body,
                                               headers={"Content-Type": XML})
                with response:
                    # Refused, unless made meanwhile by another run.
                    found = self._collection(shown, place)
                    if response.status_code not in (200, 201) and found is None:
                        raise ContainerRefused(str(DavRefused(method, place, response)))
                if found is None:
                    found = (shown, place)
        kept, native = found
        if kept != asked:
            self._notes.append(SourceNote("renamed_container", kept, JOINER.join(path)))
        return native

    def default_container(self) -> str | None:
        """The account's default calendar or address book (``DavHome.default_collection``),
        or ``None`` when the server made none."""
        return self.account.default_collection()

    def drain_notes(self) -> list[SourceNote]:
        """The containers renamed, the events written without their attendees and those
        whose orphan occurrences were written standalone since the last call, each said
        once."""
        notes, self._notes = self._notes, []
        return notes

    def _named(self) -> dict[str, str]:
        """Path -> display name of every collection of this kind in the home that takes its
        objects, in the server's order."""
        found: dict[str, str] = {}
        collections = self.account.collections()
        self._learn_versions(collections)
        for collection in collections:
            if self.kind.takes(collection):
                found.setdefault(collection.path, collection.display_name)
        return found

    def vcard_versions(self) -> frozenset[str]:
        """The vCard versions a card may be written in as it is (any other is written as
        3.0, ``mappings.vcard``): those every address book of the home lists, within the
        profile's. Learnt from the first listing of the home that holds an address book, so
        that ``put`` and ``fingerprint`` agree for the rest of the sink's life."""
        if self._vcard_versions is None:
            self._learn_versions(self.account.collections())
        return self._vcard_versions or DEFAULT_VERSIONS

    def _learn_versions(self, collections: list[Collection]) -> None:
        if self._vcard_versions is not None or self.kind.component is not None or \
                not collections:
            return
        common = frozenset.intersection(*(c.vcard_versions or DEFAULT_VERSIONS
                                          for c in collections))
        if self._kept_versions is not None:
            common &= self._kept_versions
        self._vcard_versions = common or DEFAULT_VERSIONS

    def _collection(self, shown: str, place: str) -> tuple[str, str] | None:
        """(display name, path) of the collection named ``shown``, or else of the one at
        ``place`` whatever the server shows as its name; ``None`` when neither is there."""
        named = self._named()
        by_name = next((path for path, name in named.items() if name == shown), None)
        if by_name is not None:
            return shown, by_name
        return (named[place], place) if place in named else None

    # --- items ----------------------------------------------------------------------------

    def fingerprint(self, document: Document) -> str:
        """What ``find`` and ``inventory`` answer for this document once the server holds
        it: the fingerprint of its meaning."""
        found = self._orphans(document)
        with document.open() as body:
            chunks, _, _ = self._rewritten(_without_bom(_chunks(body)), found)
            return semantic_fingerprint(chunks)

    def put(self, native_name: str, document: Document, expected: str | None = None
            ) -> DocumentStored:
        """Write the document (with the scheduling protection for a calendar object) if
        ``expected`` holds where its name puts it; one larger than the batch says the server
        takes is refused without a request."""
        name, renamed = resource_name(document.name)
        place = self._inside(native_name, native_name + name)
        largest = self.capabilities.max_item_size
        if largest is not None and document.size > largest:
            raise ItemRejected(f"{document.name}: {document.size} bytes, the target takes "
                               f"{largest} at most", code="too_big")
        headers = {"Content-Type": self.kind.content_type}
        if expected is CREATE_ONLY:
            headers["If-None-Match"] = "*"
        elif expected != ANY_VERSION:
            headers["If-Match"] = expected
        body, meaning = self._prepared(document)
        try:
            response = self.client.request("PUT", place, headers=headers, body=body)
        finally:
            if not isinstance(body, bytes):
                body.close()
        with response:
            if response.status_code == 412:
                raise VersionConflict(f"{name}: not as expected on the target ({expected})",
                                      current=self._stored(place))
            if response.status_code not in (200, 201, 204):
                raise _refusal(document, DavRefused("PUT", place, response))
            version = response.headers.get("ETag")
        if not version:  # the server changed what it stored (RFC 4791, 5.3.4): ask it
            stored = self._stored(place)
            version = stored.version if stored is not None else ""
        return DocumentStored(place, version, renamed, fingerprint=meaning)

    def find(self, native_name: str, document: Document) -> StoredDocument | None:
        name, _ = resource_name(document.name)
        return self._read(self._inside(native_name, native_name + name))

    def inventory(self, native_name: str, fingerprints: bool = False
                  ) -> Iterator[StoredDocument]:
        native = self._inside(native_name, native_name)
        # A default calendar may hold events and tasks both: each workload sees its own.
        members = (self.client.propfind(native, "1", ITEM_PROPERTIES)
                   if self.kind.component is None else
                   self.client.calendar_query(native, self.kind.component, ITEM_PROPERTIES))
        for resource in members:
            if resource.path.rstrip("/") == native.rstrip("/") or \
                    f"{{{DAV}}}collection" in resource.kinds() or \
                    not resource.path.startswith(native):
                continue
            if not fingerprints:
                yield _listed(resource)
            elif (stored := self._read(resource.path)) is not None:
                yield stored

    def remove(self, native_name: str, target_ref: str, expected: str = ANY_VERSION) -> None:
        place = self._inside(native_name, target_ref)
        headers = {} if expected == ANY_VERSION else {"If-Match": expected}
        with self.client.request("DELETE", place, headers=headers) as response:
            if response.status_code in (404, 410):
                return  # gone already
            if response.status_code == 412:
                raise VersionConflict(f"{target_ref} changed on the target",
                                      current=self._stored(place))
            if response.status_code not in (200, 204):
                raise ItemRejected(str(DavRefused("DELETE", place, response)))

    def close(self) -> None:
        self.client.close()

    # --- helpers --------------------------------------------------------------------------

    def _prepared(self, document: Document) -> tuple[bytes | IO[bytes], str]:
        """The bytes to send, without a byte-order mark (as ``bytes`` up to 1 MiB, beyond
        that in a file on disk to be closed), and the fingerprint of their meaning; refused
        when the content is not what the source announced."""
        found = self._orphans(document)
        spool = tempfile.SpooledTemporaryFile(max_size=SPOOLED_IN_MEMORY)  # noqa: SIM115
        digest = hashlib.sha256()

        def read(body: IO[bytes]) -> Iterator[bytes]:
            for chunk in _chunks(body):
                digest.update(chunk)
                yield chunk

        def kept(chunks: Iterable[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                spool.write(chunk)
                yield chunk

        facts = ObjectFacts()
        card_notes: list[Note] = []
        try:
            with document.open() as body:
                chunks, dropped, standalone = self._rewritten(
                    facts(_without_bom(read(body))), found, card_notes)
                meaning = semantic_fingerprint(kept(chunks))
            if "sha256:" + digest.hexdigest() != document.fingerprint:
                raise ItemRejected(f"{document.name}: content changed while it was read",
                                   code="invalid_message")
            if not facts.has_uid:
                raise ItemRejected(f"{document.name}: no UID", code="dav_no_uid")
            if dropped is not None and dropped.dropped:
                self._notes.append(SourceNote("attendees_dropped", document.source_id,
                                              params={"count": dropped.dropped}))
            if self.kind.component is not None:
                self._note_zones(document, facts)
            if standalone is not None and standalone.converted:
                self._notes.append(SourceNote("orphan_standalone", document.source_id,
                                              params={"count": standalone.converted}))
            self._notes += [SourceNote(note.code, document.source_id, note.detail,
                                       dict(note.params)) for note in card_notes]
            if spool.tell() <= SPOOLED_IN_MEMORY:
                # Still in memory: sent as bytes, which a redirect can send again.
                with spool:
                    spool.seek(0)
                    return spool.read(), meaning
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool, meaning

    def _note_zones(self, document: Document, facts: ObjectFacts) -> None:
        """A note for the time zones the object names without describing them: servers keep
        it, and its clients read those times as they guess."""
        unknown, undescribed = facts.unknown_zones(), facts.undescribed_zones()
        if unknown:
            self._notes.append(SourceNote("object_zone_unknown", document.source_id,
                                          params={"zones": ", ".join(unknown)}))
        if undescribed:
            self._notes.append(SourceNote("object_zone_not_described", document.source_id,
                                          params={"zones": ", ".join(undescribed)}))

    def _orphans(self, document: Document) -> dict[int, str]:
        """The orphan occurrences of a calendar object this sink writes standalone, found by
        a first reading of the document (``mappings.orphans.orphans``)."""
        if not self.standalone_orphans:
            return {}
        with document.open() as body:
            return orphans(_without_bom(_chunks(body)))

    def _rewritten(self, chunks: Iterable[bytes], found: dict[int, str],
                   card_notes: list[Note] | None = None
                   ) -> tuple[Iterable[bytes], WithoutAttendees | None, Standalone | None]:
        """The chunks as this sink writes them, with what counts the attendees left out when
        it leaves them out and the orphan occurrences made standalone when there are. A
        vCard is written in a version the server takes (``_card``), what it could not carry
        added to ``card_notes``."""
        if self.kind.workload == "contacts":
            return self._card(chunks, card_notes), None, None
        standalone = Standalone(found) if found else None
        if standalone is not None:
            chunks = standalone(chunks)
        if self.rewrite == PROTECT:
            return client_scheduled(chunks), None, standalone
        if self.rewrite == DROP_ATTENDEES:
            dropped = WithoutAttendees()
            return dropped(chunks), dropped, standalone
        return chunks, None, standalone

    def _card(self, chunks: Iterable[bytes], card_notes: list[Note] | None
              ) -> Iterator[bytes]:
        """A vCard in a version the server takes: read whole to be converted (``mappings.
        vcard``) while it is no larger than ``CARD_HELD``; a larger one goes as it is,
        streamed, and a server that does not take its version refuses it, a line in the
        report."""
        held: list[bytes] = []
        size = 0
        iterator = iter(chunks)
        for chunk in iterator:
            held.append(chunk)
            size += len(chunk)
            if size > CARD_HELD:
                yield from held
                yield from iterator
                return
        card = b"".join(held)
        served, notes = for_server(card, self.vcard_versions())
        if card_notes is not None:
            card_notes += notes
        yield card if served is None else served

    def _read(self, place: str) -> StoredDocument | None:
        """The item at ``place`` read whole, in chunks, and fingerprinted, or ``None``."""
        # Not compressed: a server compressing a large object on the fly spends more time
        # on it than the link saves (Cyrus: 3.7 s against 0.6 s for 64 MiB on loopback).
        with self.client.request("GET", place, headers={"Accept-Encoding": "identity"},
                                 stream=True) as response:
            if response.status_code in (404, 410):
                return None
            if response.status_code != 200:
                raise ConnectError(str(DavRefused("GET", place, response)),
                                   code="dav_refused", where=self.client.where)
            size = 0

            def counted() -> Iterator[bytes]:
                nonlocal size
                for chunk in response.iter_content(CHUNK):
                    size += len(chunk)
                    yield chunk

            meaning = semantic_fingerprint(counted())
            return StoredDocument(place, response.headers.get("ETag", ""), size,
                                  fingerprint=meaning)

    def _stored(self, place: str) -> StoredDocument | None:
        """The item at ``place`` with its version and size, without its content."""
        return next((_listed(resource) for resource in
                     self.client.propfind(place, "0", ITEM_PROPERTIES)
                     if f"{{{DAV}}}collection" not in resource.kinds()), None)

    def _inside(self, native_name: str, place: str) -> str:
        """``place``, refused unless it is inside the collection ``native_name`` of this
        account's home: a name never leads elsewhere."""
        parts = place.split("/")
        if not native_name.startswith(self.account.path) or not place.startswith(native_name) or \
                any(part in (".", "..") for part in parts):
            raise ContainerRefused(f"{place} is outside {native_name or self.account.path}")
        return place


def _listed(resource: Resource) -> StoredDocument:
    """An item as a PROPFIND answer gives it: where, at which version, how big."""
    return StoredDocument(resource.path, resource.text(DAV, "getetag") or "",
                          int(resource.text(DAV, "getcontentlength") or 0))


def _chunks(body: IO[bytes]) -> Iterator[bytes]:
    while chunk := body.read(CHUNK):
        yield chunk


def _without_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks without a leading byte-order mark, which means nothing in UTF-8 and which
    servers refuse (Cyrus: ``valid-address-data`` for a vCard)."""
    head = b""
    iterator = iter(chunks)
    for chunk in iterator:
        head += chunk
        if len(head) >= len(BOM) or not BOM.startswith(head):
            break
    yield head.removeprefix(BOM)
    yield from iterator


UID_TAKEN = frozenset({"no-uid-conflict", "unique-scheduling-object-resource"})
"""Preconditions of a server that holds the object's UID in another resource already: in the
same collection (RFC 4791 5.3.2.1, Radicale) or in another calendar of the user (RFC 6638
3.2.4.1: Cyrus refuses a UID a second time across all of a user's calendars, scheduling
object or not; ``tests/test_dav_sink.py``)."""


def _refusal(document: Document, refused: DavRefused) -> ItemRejected:
    if refused.condition in UID_TAKEN:
        return ItemRejected(str(refused), code="dav_uid_taken",
                            params={"holder": unquote(refused.holder) or "?"})
    code = {413: "too_big", 507: "over_quota"}.get(refused.status)
    if code is None:
        code = "server_error" if refused.status >= 500 else "dav_invalid_object"
    return ItemRejected(f"{document.name}: {refused}", code=code)

