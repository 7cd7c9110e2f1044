"""The two protocol families every connector implements: mail, and documents (calendar
objects, contacts, files).

A source pulls, a sink pushes; each method's docstring states its contract at the edges.
What a connector may do besides (telling what it noticed, listing page by page) is an
optional ability, discovered with ``isinstance`` on a runtime-checkable protocol, never
assumed. The items, errors and roles these protocols speak of are in ``connectors.base``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from connectors.base import (
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    DocumentStored,
    Listing,
    Message,
    Path,
    PutResult,
    SinkCapabilities,
    SourceNote,
    StoredDocument,
    StoredItem,
)


class MailSource(Protocol):
    """A place messages come from."""

    def containers(self) -> list[Container]:
        """Every mail folder of the account, parents before children. Folders that cannot be
        selected (``\\Noselect``) are left out; their children are listed. Each may carry
        its ``state`` (the cursor ``list_changes`` would answer now) when the listing gives
        it for free."""

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        """Items new or changed since ``cursor`` (``None``: everything). Never raises for an
        unknown or stale cursor: it answers a complete listing with ``reset`` set when the
        epoch changed."""

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        """The messages named, with their bodies, in any order. An id that no longer exists is
        skipped silently (the engine notices it is missing). Bodies are streamed: a large
        message is spooled to disk, never held whole in memory."""

    def close(self) -> None:
        """Log out and release connections. Safe to call twice."""


@runtime_checkable
class NotingSource(Protocol):
    """An optional ability of a source: telling what it noticed (hidden folders left out,
    items it could not read, names it had to change). Discovered, never assumed."""

    def drain_notes(self) -> list[SourceNote]:
        """The notes gathered since the last call, oldest first; each is given once."""


@runtime_checkable
class PagedSource(Protocol):
    """An optional ability of a source: naming every item of a container page by page,
    without holding the listing, for readers of a whole container (verify)."""

    def id_pages(self, container: Container) -> Iterator[list[str]]:
        """The source ids of every item, in lists of bounded length, in no set order."""


class MailSink(Protocol):
    """A place messages go to."""

    capabilities: SinkCapabilities

    def ensure_container(self, path: Path) -> str:
        """Create the folder (and its parents) if missing; answer its native name.
        Raises ``ContainerRefused`` when the target will not have that name."""

    def put_many(self, native_name: str, messages: Iterable[Message]) -> Iterator[PutResult]:
        """Store the messages with their flags and internal date, bytes unchanged; yield one
        result per message, in order, as soon as the target acknowledged it. The sink may
        pipeline: a result may come after later messages were sent.

        A message the target refuses yields a result whose ``error`` is ``ItemRejected`` and
        the others go on. A message whose fate is unknown (the connection dropped before the
        answer) yields ``SendUnconfirmed``; the sink may reconnect and go on with the next
        ones. When it cannot go on, it raises ``ConnectError`` after yielding a result for
        every message it took from ``messages``. The caller may stop iterating ``messages``
        at any time (a stop asked for, a full mailbox): the sink then answers what it sent."""

    def native_name(self, path: Path) -> str:
        """The folder's native name, whether it exists or not; creates nothing. Raises
        ``ContainerRefused`` when the target cannot have that name."""

    def count(self, native_name: str) -> int:
        """How many items the folder holds (0 when it does not exist), cheaply: no listing."""

    def fingerprints(self, native_name: str, target_refs: Sequence[str]
                     ) -> Iterator[tuple[str, str]]:
        """``(target_ref, fingerprint)`` of the stored items named, reading their bodies in
        bounded memory; a ref no longer there is left out. With ``inventory`` this is how
        the engine finds, by content, what is already on the target after a crash, a lost
        ledger or a user's own filing."""

    def set_flags(self, native_name: str, target_ref: str, flags: frozenset[str]) -> None:
        """Replace the flags of a stored item."""

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredItem]:
        """Every item of the folder; with ``fingerprints``, reading each body to hash it."""

    def close(self) -> None:
        """Log out and release connections. Safe to call twice."""


@runtime_checkable
class SizedSendSink(Protocol):
    """An optional ability of a mail sink: told how many messages its next ``put_many``
    into a folder brings, it may spread a large one over more connections."""

    def expect(self, native_name: str, count: int) -> None:
        """The next ``put_many`` into ``native_name`` brings about ``count`` messages."""


@runtime_checkable
class RemovingMailSink(Protocol):
    """An optional ability of a mail sink: removing messages it stored, and nothing else,
    for the source's deletions (``deletions = "remove"``)."""

    def remove_messages(self, native_name: str, stored: Mapping[str, frozenset[str]]
                        ) -> dict[str, str]:
        """Remove the messages named (``target_ref`` -> the flags bascule last gave it),
        each only while it still holds those flags, ``\\Deleted`` and ``\\Recent`` aside
        (a message bytes never change: its flags are what a person changes by reading,
        flagging, answering or labelling it). Answers each ref's fate (``REMOVED``,
        ``GONE``, ``CHANGED``) once the target confirmed what it did. Removes nothing it
        was not asked to: no other message of the folder, marked deleted or not.

        Raises ``RemovalRefused`` before changing anything when the target cannot remove
        single messages; ``ConnectError`` when it cannot be reached (what was removed
        before is gone all the same: a second call answers it ``GONE``); ``ItemRejected``
        when the target refuses."""


@runtime_checkable
class LateVersionSink(Protocol):
    """An optional ability of a document sink: leaving a write's version to be asked for
    later, with others', where the write's answer does not give it and asking for it alone
    would cost a round trip per item."""

    def defer_versions(self) -> None:
        """From now on ``put`` may answer ``PENDING_VERSION``, for ``versions`` to fill."""

    def versions(self, native_name: str, written: Sequence[tuple[DocumentStored, int]]
                 ) -> list[DocumentStored]:
        """Each item written (with its size) as ``put`` answered it, its version now the
        target's, asked for at once for many (one request a folder). An item no longer
        there, or of another size there, was written over by someone in between: it gets
        ``CHANGED_VERSION``, so that its next write is a conflict, never an overwrite.
        Raises ``ConnectError`` when the target cannot be asked."""


@runtime_checkable
class ListedCountSink(Protocol):
    """An optional ability of a mail sink: how many items a folder held when this command
    listed the account's folders, without a round trip (and without a connection of its
    own)."""

    def listed_count(self, native_name: str) -> int | None:
        """The folder's count in this command's folder list, if none of the command's sinks
        has written to it since: 0 for a folder the list did not hold, None when the list
        holds it without a count. Anything stored there before the command began (an
        earlier run cut while sending) is counted."""


@runtime_checkable
class FolderBatchSink(Protocol):
    """An optional ability of a mail sink: creating a principal's folders at once, before
    the units that fill them run: one round trip for a whole tree where one folder at a
    time pays several, and no two connections of an account creating folders together."""

    def ensure_containers(self, paths: Sequence[Path]) -> dict[Path, bool]:
        """Create those of the folders (and their parents) that are missing; answer those
        of ``paths`` that exist now, each with whether it holds nothing (this call created
        it, or it was empty when the sink first listed the account): then it holds nothing a
        run sent before, and its first send needs no count. A name the target refuses, or a
        folder it fails to create, is left out of the answer and raises nothing here:
        ``ensure_container`` of that path raises it when its unit runs. Raises
        ``ConnectError`` only when the target cannot be reached."""


@runtime_checkable
class DefaultContainerSink(Protocol):
    """An optional ability of a document sink: knowing the account's own default calendar or
    address book, into which the source's default one goes (``DEFAULT_CONTAINER``) rather
    than into a new one by its name."""

    def default_container(self) -> str | None:
        """The native name of the account's default container for the sink's workload, or
        ``None`` when the target has none (the source's default is then made by its name,
        as any other)."""


@runtime_checkable
class ColouredContainerSink(Protocol):
    """An optional ability of a document sink: giving a container it makes the colour the
    source showed it in (a calendar's colour)."""

    def ensure_coloured_container(self, path: Path, colour: str) -> str:
        """As ``ensure_container``; a container it makes takes ``colour`` (``#RRGGBB``). One
        already there keeps its own: its user may have chosen another."""


class DocumentSource(Protocol):
    """A place calendars, address books or drives come from. ``workload`` is one of
    ``calendar``, ``contacts``, ``files``."""

    def document_containers(self, workload: str) -> list[Container]:
        """Calendars, contact folders, or drives (a OneDrive, a document library) of the
        principal, parents before children."""

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        """Items new or changed since ``cursor`` (``None``: everything, ``complete``)."""

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        """The items named, with their content streamed (spooled, never whole in memory). An
        item gone meanwhile is skipped. An item that cannot be read, or whose content does
        not match the source's own hash, is not yielded: the source keeps a ``SourceNote``
        (``unreadable_item`` or ``hash_mismatch``, subject = source_id) for ``drain_notes``."""

    def close(self) -> None:
        """Release what the source holds of its own. Safe to call twice."""


class DocumentSink(Protocol):
    """A place calendars, address books or drives go to, one container per calendar,
    address book or drive, one item per calendar object, contact or file.

    Every write is conditional (``expected``): ``CREATE_ONLY`` (``None``) writes only where
    nothing is, a version writes only over that version, ``ANY_VERSION`` over whatever is
    there. A write whose condition fails raises ``VersionConflict`` and changes nothing: an
    item the target's users created or changed is never overwritten unseen. The target
    answers each write with its new version, which the engine keeps for the next one."""

    capabilities: SinkCapabilities

    def ensure_container(self, path: Path) -> str:
        """Create the container (and its parents) if missing; answer its native name. Safe
        to call twice. Raises ``ContainerRefused`` when the target will not have that name;
        a name from the source never leads outside the sink's root."""

    def put(self, native_name: str, document: Document, expected: str | None = None
            ) -> DocumentStored:
        """Store the document's bytes (streamed, never whole in memory), its name and, where
        the target keeps it, its modification time. The name is the document's own, changed
        by the sink's stated rule where the target refuses it (``DocumentStored.renamed``).
        The same document written twice lands at the same ``target_ref``: a write is
        idempotent by name, never a second copy. Raises ``VersionConflict`` (see above),
        ``ItemRejected`` when the target refuses it, ``ConnectError`` when it cannot be
        reached; after a ``ConnectError`` the write may or may not have happened, and
        ``find`` tells."""

    def fingerprint(self, document: Document) -> str:
        """The fingerprint ``find`` and ``inventory`` answer for this document once the
        target holds it unchanged: ``document.fingerprint`` where the target keeps bytes;
        where it rewrites them, the fingerprint of the document's meaning, which the
        target's rewriting keeps (reading the document, streamed)."""

    def find(self, native_name: str, document: Document) -> StoredDocument | None:
        """What the target holds where ``put`` would write this document, with its
        fingerprint, or ``None``: how the engine learns, after a crash between a write and
        its record, whether the write happened (the fingerprint equals
        ``fingerprint(document)``)."""

    def inventory(self, native_name: str, fingerprints: bool = False
                  ) -> Iterator[StoredDocument]:
        """Every item of the container, sub-folders included, in bounded memory; with
        ``fingerprints``, reading each one to hash it. Temporary files of a write cut short
        are not items."""

    def remove(self, native_name: str, target_ref: str, expected: str = "*") -> None:
        """Delete an item (written before under another name or place): only at version
        ``expected`` unless it is ``ANY_VERSION``; gone already is fine. Containers it
        leaves empty inside ``native_name`` go too."""

    def close(self) -> None:
        """Release connections. Safe to call twice."""
