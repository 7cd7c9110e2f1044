"""The item model, errors and roles every connector shares; imports nothing else of bascule.

The protocols a source or a sink provides are in ``connectors.protocols``; how a connector
makes itself known is in ``connectors.registry``.

Terminology, shared by every connector:

CONTAINER
    A place that holds items: a mail folder, later a calendar, an address book or a drive
    folder. It is named by a *path*, a tuple of segments with no separator in it
    (``("Inbox", "Projets", "Été 2024")``); each connector turns a path into its own
    native name (IMAP modified UTF-7 with the server's separator, a Maildir++ folder...).
    A container may carry a *role* (``inbox``, ``sent``, ``drafts``, ``trash``, ``junk``,
    ``archive``) when the source knows it is a well-known folder, ``default`` for a user's
    default calendar or contact folder.

SOURCE_ID
    The identity of an item at the source, stable across runs as long as the source's own
    epoch holds (IMAP: ``"UIDVALIDITY:UID"``; Maildir: the unique part of the file name).
    Never a header such as Message-ID: two different messages may share one, and a message
    may have none.

FINGERPRINT
    ``"sha256:<hex>"`` of the raw bytes of the item. The sink computes the same value on
    what it holds, so a re-run finds what is already there. A document sink whose server
    rewrites what it stores (a CalDAV server refolds and reorders) answers instead the
    fingerprint of the item's meaning (``"ical:<hex>"``), and tells which one a document
    will have there (``DocumentSink.fingerprint``).

TARGET_REF
    What the sink answers when it has stored an item, enough to find it again
    (IMAP: ``"UIDVALIDITY:UID"``; Maildir: the unique part of the file name).

VERSION
    What a document sink answers for each write and takes back for the next one (an ETag,
    a Schedule-Tag, a file's mtime and size): writes are conditional on it, so that an item
    the target's users changed since it was copied is never overwritten unseen. A source's
    ``DocumentRef.version`` is the same idea on the other side (Graph changeKey, cTag).

CURSOR
    A JSON-serialisable dict the source returns with each listing and gets back on the next
    pass. Only the source reads it; the engine stores it in the ledger.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

ROLES = ("inbox", "sent", "drafts", "trash", "junk", "archive")
"""Well-known folder roles, as RFC 6154 SPECIAL-USE names them (plus the INBOX)."""
DEFAULT_CONTAINER = "default"
"""The role of a user's default calendar or contact folder: it goes into the target's own
default one, where the target has one (``DefaultContainerSink``)."""

SYSTEM_FLAGS = frozenset({"\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"})
"""IMAP system flags that can be set on APPEND (``\\Recent`` cannot)."""

Path = tuple[str, ...]


class computed_once:
    """A property computed on first read and kept on its instance: ``cached_property``
    without its lock. Before Python 3.12 that lock is one for the whole class, so that one
    instance computing it (round trips to a server) holds up the first read of every other
    instance: eight principals signing in at once did it one after another. Two threads
    reading it first on the same instance may both compute it; the last answer stays."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = self.compute(instance)
        instance.__dict__[self.name] = value
        return value


@dataclass(frozen=True)
class Container:
    """A folder as its connector sees it."""

    path: Path
    role: str | None = None
    native_name: str = ""
    """The connector's own name for it (IMAP mailbox name, Maildir++ folder name)."""
    state: dict[str, Any] | None = field(default=None, compare=False)
    """The cursor a listing of it would answer now, when the folder list told it at no
    cost (IMAP ``LIST-STATUS`` with CONDSTORE): a container whose last cursor equals it has
    nothing new, no change of flags and no deletion, without a round trip of its own.
    ``None``: unknown, the container must be listed."""
    count: int | None = field(default=None, compare=False)
    """How many items it holds, when the folder list told it at no cost; ``None``:
    unknown."""
    size: int | None = field(default=None, compare=False)
    """How many bytes its items hold, when the folder list told it at no cost (IMAP
    ``STATUS=SIZE``); ``None``: unknown."""
    colour: str | None = field(default=None, compare=False)
    """The colour the source shows it in, ``#RRGGBB`` (a calendar's); ``None``: none."""
    part: str | None = field(default=None, compare=False)
    """Which part of the account it comes from when the source has several, counted apart
    by the reports (``archive``: an online archive's folder); ``None``: the account's own.
    A part's folders come under a top folder of their own (``Archives``), whose name no
    folder rule reads as a well-known folder's."""


@dataclass(frozen=True, slots=True)
class ItemRef:
    """What a listing says of one message, without its body."""

    source_id: str
    size: int
    flags: frozenset[str]
    internal_date: datetime | None = None


@dataclass(frozen=True)
class Message:
    """One message with its body. ``open()`` streams the raw bytes, unchanged."""

    source_id: str
    fingerprint: str
    size: int
    flags: frozenset[str]
    internal_date: datetime | None
    open: Callable[[], IO[bytes]]
    read_headers: Callable[[], Any] | None = field(default=None, repr=False, compare=False)
    """Gives its headers (``connectors.headers.MessageHeaders``: Message-ID, Subject,
    Date), read from the first bytes of the body unless the source read them anyway."""

    @computed_once
    def headers(self) -> Any:
        """The headers, read the first time they are asked for (while the body can be
        opened): a copy never needs them, and parsing every message's headers cost a tenth
        of the CPU of a large copy."""
        return self.read_headers() if self.read_headers is not None else None

    @property
    def message_id(self) -> str | None:
        return self.headers.message_id if self.headers is not None else None

    @property
    def subject(self) -> str | None:
        return self.headers.subject if self.headers is not None else None


@dataclass(frozen=True)
class Listing:
    """What changed in a container since a cursor.

    ``refs`` lists new items and items whose flags changed. When ``complete`` is true it lists
    every item the container holds (first pass, no usable cursor, or a source that cannot tell
    changes apart); the engine then also learns which items disappeared. ``reset`` says the
    source's identity epoch changed (IMAP UIDVALIDITY): every source_id stored before is void.
    """

    refs: list[ItemRef]
    cursor: dict[str, Any]
    complete: bool
    reset: bool = False


@dataclass(frozen=True)
class PutResult:
    """The sink's answer for one message of a ``put_many`` call."""

    source_id: str
    target_ref: str | None
    error: ItemRejected | SendUnconfirmed | None = None


@dataclass(frozen=True, slots=True)
class StoredItem:
    """One item as the sink holds it, for recovery and verify."""

    target_ref: str
    size: int
    flags: frozenset[str]
    fingerprint: str | None = None
    internal_date: datetime | None = None


@dataclass(frozen=True)
class SourceNote:
    """Something a source left out, changed or could not read, for the reports.

    ``code`` is a catalogue code (``reports.i18n``); ``subject`` a source_id or a folder
    path joined with ``/``; ``detail`` and ``params`` the values its sentence names (a
    ``count`` chooses its plural form).
    """

    code: str
    subject: str
    detail: str = ""
    params: dict[str, object] = field(default_factory=dict, hash=False)


def tallied_notes(tally: Counter[tuple[str, str]]) -> list[SourceNote]:
    """Per container, how many items carried each kind of note, ``(path, code)`` -> count,
    as notes ``<code>_total`` with their ``count``, in order; the tally is emptied."""
    notes = [SourceNote(f"{code}_total", path, params={"count": count})
             for (path, code), count in sorted(tally.items())]
    tally.clear()
    return notes


@dataclass(frozen=True)
class SinkCapabilities:
    """What a sink can do, read by the planner before anything moves."""

    max_item_size: int | None = None
    separator: str = "/"
    """Hierarchy separator: a source folder name containing it must be renamed."""
    forbidden_chars: str = ""
    """Characters a folder name may not contain on this target, beyond the separator."""
    keywords: bool = True
    """Whether user keywords ($label1, categories...) are kept."""
    special_folders: dict[str, Path] = field(default_factory=dict)
    """Role -> path of the folder that carries it on the target."""
    parallel_writes: int = 1
    """How many documents the engine may write at once into one container, each write
    standing alone (a DAV server takes several requests at once; a file system is bound by
    its syncs)."""
    names: Any = None
    """A target of files: the names it takes and how it renames the others, as
    ``mappings.names.NameRules`` (which this shared model cannot name); ``None`` for
    others."""
    crlf_only: bool = False
    """The target stores and serves every line ending as CRLF, whatever it was given (IMAP
    servers do: RFC 3501 messages are CRLF). The engine then converts bare LF itself, so
    that what it records and later compares is what the target holds."""


class BasculeError(Exception):
    """An error with a stable code the reports translate (the catalogue: ``reports.i18n``).

    ``detail`` is what a server or the system said, shown as it came; ``params`` are the
    values the code's sentence names (a login, a path, a line), so that the sentence is
    written whole in the reader's language.
    """

    code = "error"

    def __init__(self, detail: str = "", *, code: str | None = None,
                 params: dict[str, object] | None = None) -> None:
        self.params = dict(params or {})
        super().__init__(detail or ", ".join(f"{key}={value}"
                                             for key, value in self.params.items()))
        self.detail = detail
        if code:
            self.code = code


class ConnectError(BasculeError):
    """The server cannot be reached or refuses the login: codes ``unreachable``,
    ``no_greeting`` (it accepted the connection and said nothing), ``timeout`` (it stopped
    answering), ``auth_failed``, ``tls_failed``. ``where`` names the server (``host:port``)."""

    code = "unreachable"

    def __init__(self, detail: str = "", *, code: str | None = None, where: str = "",
                 params: dict[str, object] | None = None) -> None:
        super().__init__(detail, code=code, params=params)
        self.where = where

    @property
    def server_down(self) -> bool:
        """Whether the server itself fails (not this login): every account on it would."""
        return self.code in SERVER_DOWN


SERVER_DOWN = frozenset({"unreachable", "no_greeting", "timeout", "connection_lost"})
LINK_PAUSES = (0.5, 1.0, 2.0, 4.0)
"""Seconds waited before each new try after a connection was cut (``connection_lost``): a
flaky link gets a few chances, a server down is given up on at once."""


class ItemRejected(BasculeError):
    """The target refused one item, for certain (it answered no): codes ``too_big``,
    ``over_quota``, ``invalid_message``, ``server_error``. The item was not stored and may
    be sent again without looking for it first."""

    code = "server_error"


class SendUnconfirmed(BasculeError):
    """The item was sent, or may have been, and the target never answered (connection lost,
    timeout, BYE): it may be stored. It is looked for on the target before it is sent again."""

    code = "unconfirmed"


class VersionConflict(ItemRejected):
    """A conditional write found the target not as expected: something already there for a
    create-only write, another version (or nothing) for a replace. ``current`` is what the
    target holds now, if anything. Nothing was written."""

    code = "version_conflict"

    def __init__(self, detail: str = "", *, current: StoredDocument | None = None) -> None:
        super().__init__(detail)
        self.current = current


class RemovalRefused(BasculeError):
    """The target cannot remove single messages without touching others (an IMAP server
    without UIDPLUS, whose EXPUNGE removes every message marked deleted, someone else's
    too): code ``removal_unsupported``. Nothing was changed."""

    code = "removal_unsupported"


REMOVED, GONE, CHANGED = "removed", "gone", "changed"
"""What a mail sink's ``remove_messages`` says of each message: removed now; not there
(moved or deleted on the target, its folder gone or renumbered); left there, changed
since bascule last wrote it."""


class ContainerRefused(BasculeError):
    """The target refused to create or open a container: code ``name_refused``."""

    code = "name_refused"


@dataclass(frozen=True)
class DocumentRef:
    """What a listing says of one calendar object, contact or file, without its content.

    ``version`` changes whenever the item changes at the source (Graph changeKey, eTag,
    cTag); an item whose version differs from the one copied is copied again, in place.
    """

    source_id: str
    version: str
    size: int = 0
    name: str = ""
    folder: Path = ()
    """Sub-folder inside the container (files), ``()`` for calendars and address books."""


@dataclass(frozen=True)
class Document:
    """One calendar object (``.ics``), contact (``.vcf``) or file, with its content.

    ``name`` is the file name the sink should use (``<uid>.ics``, ``<uid>.vcf``, or the
    file's own name); ``fingerprint`` is the SHA-256 of exactly the bytes ``open()`` gives;
    ``source_hashes`` are what the source says the content hashes to (e.g.
    ``{"quickXorHash": "..."}``), already checked by the source against the bytes it read.
    """

    source_id: str
    version: str
    name: str
    folder: Path
    fingerprint: str
    size: int
    modified: datetime | None
    open: Callable[[], IO[bytes]]
    source_hashes: dict[str, str] = field(default_factory=dict)
    notes: tuple[SourceNote, ...] = ()
    """What could not be carried for this item (e.g. an unknown time zone), for the report."""


@dataclass(frozen=True)
class DocumentListing:
    """Documents new or changed since a cursor, and those removed (source ids)."""

    refs: list[DocumentRef]
    cursor: dict[str, Any]
    complete: bool
    removed: list[str] = field(default_factory=list)
    relocated: list[DocumentRef] = field(default_factory=list)
    """Items unchanged themselves whose place changed with a renamed or moved parent
    folder: to be written again under their new path, whatever their version."""


CREATE_ONLY = None
"""``expected`` of a document write that must not replace anything (HTTP ``If-None-Match: *``)."""
ANY_VERSION = "*"
"""``expected`` of a document write that replaces whatever is there, or creates it."""
PENDING_VERSION = "\0pending"
"""A write's version not asked for yet (``connectors.protocols.LateVersionSink``)."""
CHANGED_VERSION = '"bascule:changed-since-written"'
"""The version recorded for an item found changed between its write and the reading of its
version: it matches no version a target gives, so its next write is a conflict."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One document as the sink holds it: where, at which version, and what it weighs."""

    target_ref: str
    version: str
    size: int
    modified: datetime | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class DocumentStored:
    """A document sink's answer to a write: where the item is, at which version, and the
    name rule that changed its name or a folder's (a code for the report), if one did."""

    target_ref: str
    version: str
    renamed: str | None = None
    fingerprint: str | None = None
    """What ``find`` and ``inventory`` answer for the item while it stays as written, when
    that is not the document's own fingerprint (a sink that rewrites)."""


@functools.lru_cache(maxsize=4096)
def _shared_flags(flags: tuple[str, ...]) -> frozenset[str]:
    return frozenset(flags)


def flag_set(flags: Iterable[str]) -> frozenset[str]:
    """The flags as a set shared by every item that has the same ones: a listing of 40,000
    messages holds a few dozen sets, not 40,000."""
    return _shared_flags(tuple(sorted(set(flags))))


def fingerprint_of(stream: IO[bytes], chunk_size: int = 1 << 20) -> tuple[str, int]:
    """``("sha256:<hex>", size)`` of a stream, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(chunk_size):
        digest.update(chunk)
        size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def fingerprint_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def all_at_once(goodbyes: Iterable[Callable[[], None]]) -> None:
    """Call each, side by side, and return once all have: goodbyes that each wait for a
    server's answer cost one round trip together instead of one each. The first error
    raised is raised again once every call has ended."""
    calls = list(goodbyes)
    errors: list[BaseException] = []

    def call(goodbye: Callable[[], None]) -> None:
        try:
            goodbye()
        except BaseException as error:  # noqa: BLE001 (raised again below)
            errors.append(error)

    threads = [threading.Thread(target=call, args=(goodbye,), daemon=True)
               for goodbye in calls[1:]]
    for thread in threads:
        thread.start()
    if calls:
        call(calls[0])
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
