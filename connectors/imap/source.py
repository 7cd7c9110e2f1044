"""Read mail from an IMAP server: folders, what changed since a cursor, and bodies.

The cursor of a folder is ``{"uidvalidity", "uidnext", "exists", "highestmodseq"}`` (the
last one only when the server advertises CONDSTORE). With CONDSTORE an unchanged folder
costs one EXAMINE, and a changed one lists only new and re-flagged messages; without it
(Exchange Online) every pass lists the whole folder, UIDs, sizes and flags, so the engine
can tell flag changes and deletions by comparing.

Bodies are read with ``BODY.PEEK[]`` (never marking anything read): small messages many per
command, large ones in partial chunks, each spooled while hashed.
"""

from __future__ import annotations

import imaplib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import imapclient
from imapclient import exceptions as imap_errors

from connectors.base import (
    SYSTEM_FLAGS,
    Container,
    ItemRef,
    Listing,
    Message,
    flag_set,
)
from connectors.headers import MessageHeaders
from connectors.imap.fetch import fetch, parse_fetch
from connectors.imap.session import (
    ImapCredentials,
    ImapEndpoint,
    ImapSession,
    join_path,
    list_with_status,
)
from connectors.imap.session import split_name as split_mailbox_name
from connectors.spool import Spool

BATCH_BYTES = 4 << 20
"""Bytes of bodies asked for in one FETCH: the reply is held in memory while it is parsed."""
LARGE_MESSAGE = 16 << 20
"""Messages bigger than this are read in chunks of ``CHUNK_BYTES``, straight to disk."""
CHUNK_BYTES = 4 << 20
"""imaplib and the parser copy a chunk about four times: memory stays near 16 MiB, and a
100 MiB message costs 25 round trips, not a hundred."""
UIDS_PER_COMMAND = 1000
"""UIDs named in one command: keeps the command line under servers' limits (64 KiB)."""
MESSAGES_PER_BATCH = 200
SMALL_FOLDER_BYTES = 1 << 20
"""A folder the folder list says holds no more than this is listed with its bodies: one
round trip for what a copy reads of it, held until it is fetched."""
LISTED_BODIES_BYTES = 8 << 20
"""The most such a listing reads of bodies whatever the folder became since the folder
list (grown, or emptied and filled again): each of the messages it counted is read up to
an equal share of this (``ImapSource._first_listing``)."""

ROLE_OF_ATTRIBUTE = {
    "\\SENT": "sent",
    "\\DRAFTS": "drafts",
    "\\TRASH": "trash",
    "\\JUNK": "junk",
    "\\ARCHIVE": "archive",
}
NOT_SELECTABLE = frozenset({"\\NOSELECT", "\\NONEXISTENT"})
SYSTEM_FLAG_BY_NAME = {flag.upper(): flag for flag in SYSTEM_FLAGS}
METADATA = ["RFC822.SIZE", "FLAGS", "INTERNALDATE"]
_Metadata = tuple[int, frozenset[str], datetime | None]
"""A message's size, flags and internal date."""


@dataclass(frozen=True)
class _FolderState:
    """What EXAMINE said of a folder."""

    uidvalidity: int
    uidnext: int | None
    exists: int
    highestmodseq: int | None

    def cursor(self) -> dict[str, Any]:
        cursor: dict[str, Any] = {
            "uidvalidity": self.uidvalidity,
            "uidnext": self.uidnext,
            "exists": self.exists,
        }
        if self.highestmodseq is not None:
            cursor["highestmodseq"] = self.highestmodseq
        return cursor


class _EpochChanged(Exception):
    """UIDVALIDITY changed while reading: every UID asked for is void."""


class ImapSource:
    """A mailbox read over IMAP, through one connection (reopened once if it drops)."""

    # Without CONDSTORE a pass lists the whole folder with its flags: the engine still learns
    # of every flag change, by comparing.

    def __init__(self, endpoint: ImapEndpoint, credentials: ImapCredentials) -> None:
        self._session = ImapSession(endpoint, credentials)
        self._selected: tuple[imapclient.IMAPClient, str, _FolderState] | None = None
        self._condstore_enabled_on: imapclient.IMAPClient | None = None
        self._listed: tuple[imapclient.IMAPClient, str, int, dict[int, _Metadata]] | None = None
        """The last listing's metadata (client, mailbox, UIDVALIDITY, metadata by UID): the
        fetch that follows it on the same selection asks only for bodies."""
        self._listed_bodies: dict[int, bytes] = {}
        """The bodies the last listing read with the metadata (a small folder's), by UID,
        for the fetch that follows it; each is handed out once."""

    def containers(self) -> list[Container]:
        folders, states, sizes = self._session.call(self._folders_and_states)
        found = []
        for raw_attributes, delimiter, name in folders:
            attributes = {_text(a).upper() for a in raw_attributes}
            if attributes & NOT_SELECTABLE:
                continue
            separator = _text(delimiter) if delimiter else None
            if name.upper() == "INBOX":
                role: str | None = "inbox"
            else:
                role = next(
                    (ROLE_OF_ATTRIBUTE[a] for a in sorted(attributes) if a in ROLE_OF_ATTRIBUTE),
                    None,
                )
            path = ("INBOX",) if role == "inbox" else split_mailbox_name(name, separator)
            state = states.get(name)
            found.append(Container(
                path=path, role=role, native_name=name,
                # Without CONDSTORE an equal cursor says nothing of flags changed.
                state=state if state is not None and "highestmodseq" in state else None,
                count=state["exists"] if state is not None else None,
                size=sizes.get(name)))
        # A path sorts before every path it is a prefix of: parents come first.
        return sorted(found, key=lambda container: container.path)

    def _folders_and_states(self, client: imapclient.IMAPClient
                            ) -> tuple[list[tuple[Any, Any, str]], dict[str, dict[str, Any]],
                                       dict[str, int]]:
        """Every folder, the cursor of each as a listing would answer it now and the bytes
        it holds (``STATUS=SIZE``), in one round trip where the server has LIST-STATUS; the
        folders alone elsewhere."""
        condstore = self._session.has("CONDSTORE")
        items = (("MESSAGES", "UIDNEXT", "UIDVALIDITY")
                 + (("HIGHESTMODSEQ",) if condstore else ())
                 + (("SIZE",) if self._session.has("STATUS=SIZE") else ()))
        folders, statuses = list_with_status(client, self._session.capabilities, items)
        self._session.learn_separator(folders)
        states = {}
        sizes = {name: answer["SIZE"] for name, answer in statuses.items() if "SIZE" in answer}
        for name, answer in statuses.items():
            if "UIDVALIDITY" not in answer or "MESSAGES" not in answer:
                continue
            modseq = answer.get("HIGHESTMODSEQ")
            states[name] = _FolderState(
                uidvalidity=answer["UIDVALIDITY"], uidnext=answer.get("UIDNEXT"),
                exists=answer["MESSAGES"],
                highestmodseq=modseq if condstore and modseq is not None else None,
            ).cursor()
        return folders, states, sizes

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        mailbox = self._mailbox(container)
        if cursor is None and container.count:
            # A first listing of a folder the folder list says is not empty: its EXAMINE
            # and its listing go together, one round trip; a small one's bodies with them.
            small = container.size is not None and container.size <= SMALL_FOLDER_BYTES
            return self._session.call(lambda client: self._first_listing(
                client, mailbox, read_bodies=container.count if small else 0))
        return self._session.call(lambda client: self._list_changes(client, mailbox, cursor))

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        mailbox = self._mailbox(container)
        state, metadata = self._session.call(lambda client: self._listed_metadata(client, mailbox))
        wanted = sorted(
            {
                uid
                for uidvalidity, uid in map(_parse_source_id, source_ids)
                if uidvalidity == state.uidvalidity
            }
        )
        try:
            unknown = [uid for uid in wanted if uid not in metadata]
            if unknown:
                metadata = {**metadata, **self._session.call(
                    lambda client: self._metadata(client, mailbox, state.uidvalidity, unknown))}
            small = [uid for uid in wanted if uid in metadata and metadata[uid][0] <= LARGE_MESSAGE]
            large = [uid for uid in wanted if uid in metadata and metadata[uid][0] > LARGE_MESSAGE]
            prefetched = self._prefetched(mailbox, state.uidvalidity)
            read, small = ([uid for uid in small if uid in prefetched],
                           [uid for uid in small if uid not in prefetched])
            for uid in read:
                yield _message(state.uidvalidity, uid, Spool.from_chunks([prefetched.pop(uid)]),
                               metadata[uid])
            for batch in _batches(small, metadata):
                bodies = self._session.call(
                    lambda client, batch=batch: self._bodies(
                        client, mailbox, state.uidvalidity, batch
                    )
                )
                for uid in batch:
                    if uid in bodies:
                        spool = Spool.from_chunks([bodies.pop(uid)])
                        yield _message(state.uidvalidity, uid, spool, metadata[uid])
            for uid in large:
                spool = self._spool_in_chunks(mailbox, state.uidvalidity, uid)
                if spool is not None:
                    yield _message(state.uidvalidity, uid, spool, metadata[uid])
        except _EpochChanged:
            return

    def id_pages(self, container: Container) -> Iterator[list[str]]:
        """Every message's source id, a thousand at a time: a reader of a whole folder
        (verify) then holds a page of messages, not the folder."""
        mailbox = self._mailbox(container)

        def search(client: imapclient.IMAPClient) -> tuple[int, list[int]]:
            state = self._examine(client, mailbox, fresh=True)
            return state.uidvalidity, sorted(client.search("ALL")) if state.exists else []

        uidvalidity, uids = self._session.call(search)
        for start in range(0, len(uids), UIDS_PER_COMMAND):
            yield [f"{uidvalidity}:{uid}" for uid in uids[start:start + UIDS_PER_COMMAND]]

    def close(self) -> None:
        self._selected = None
        self._session.close()

    def _mailbox(self, container: Container) -> str:
        return container.native_name or join_path(container.path, self._session.separator)

    def _examine(
        self, client: imapclient.IMAPClient, mailbox: str, *, fresh: bool = False
    ) -> _FolderState:
        """Select ``mailbox`` read-only on this connection, unless it already is (and
        ``fresh`` is false: a fresh EXAMINE is what makes the counters current)."""
        if not fresh and self._selected is not None and self._selected[:2] == (client, mailbox):
            return self._selected[2]
        self._enable_condstore(client)
        self._selected = None
        return self._state(client, mailbox, client.select_folder(mailbox, readonly=True))

    def _condstore_to_enable(self, client: imapclient.IMAPClient) -> bool:
        """Whether CONDSTORE can and must still be enabled on ``client``: once enabled,
        EXAMINE reports HIGHESTMODSEQ."""
        return (self._session.has("CONDSTORE") and self._session.has("ENABLE")
                and self._condstore_enabled_on is not client)

    def _enable_condstore(self, client: imapclient.IMAPClient) -> None:
        if self._condstore_to_enable(client):
            client.enable("CONDSTORE")
            self._condstore_enabled_on = client

    def _state(self, client: imapclient.IMAPClient, mailbox: str, response: dict[bytes, Any]
               ) -> _FolderState:
        """The folder's state from its EXAMINE's answer, now selected on ``client``."""
        condstore = self._session.has("CONDSTORE")
        modseq = response.get(b"HIGHESTMODSEQ")
        if condstore and modseq is None:
            # A CONDSTORE server that cannot ENABLE still answers STATUS.
            modseq = client.folder_status(mailbox, ["HIGHESTMODSEQ"]).get(b"HIGHESTMODSEQ")
        uidnext = response.get(b"UIDNEXT")
        if uidnext is None:
            uidnext = client.folder_status(mailbox, ["UIDNEXT"]).get(b"UIDNEXT")
        state = _FolderState(
            uidvalidity=int(response[b"UIDVALIDITY"]),
            uidnext=int(uidnext) if uidnext is not None else None,
            exists=int(response.get(b"EXISTS", 0)),
            highestmodseq=int(modseq) if condstore and modseq is not None else None,
        )
        self._selected = (client, mailbox, state)
        return state

    def _listed_metadata(
        self, client: imapclient.IMAPClient, mailbox: str
    ) -> tuple[_FolderState, dict[int, _Metadata]]:
        """The folder's state and the metadata its last listing read, when this connection
        still has it selected as the listing left it; else a fresh EXAMINE and nothing.
        Flags changed since the listing reach the target with the next delta pass: their
        MODSEQ is above the listing's cursor."""
        listed = self._listed
        if (listed is not None and listed[:2] == (client, mailbox) and self._selected is not None
                and self._selected[:2] == (client, mailbox)
                and self._selected[2].uidvalidity == listed[2]):
            return self._selected[2], listed[3]
        return self._examine(client, mailbox, fresh=True), {}

    def _examine_same_epoch(
        self, client: imapclient.IMAPClient, mailbox: str, uidvalidity: int
    ) -> None:
        if self._examine(client, mailbox).uidvalidity != uidvalidity:
            raise _EpochChanged

    def _list_changes(
        self, client: imapclient.IMAPClient, mailbox: str, cursor: dict[str, Any] | None
    ) -> Listing:
        state = self._examine(client, mailbox, fresh=True)
        if cursor is None or cursor.get("uidvalidity") != state.uidvalidity:
            return self._complete_listing(client, mailbox, state, reset=cursor is not None)
        old_modseq = cursor.get("highestmodseq")
        if state.highestmodseq is None or old_modseq is None:
            return self._complete_listing(client, mailbox, state, reset=False)
        if state.cursor() == cursor:
            return Listing(refs=[], cursor=cursor, complete=False)
        # MODSEQ n matches n and above; what the cursor saw is n itself.
        changed = _refs(
            client, state.uidvalidity, sorted(client.search(["MODSEQ", str(int(old_modseq) + 1)]))
        )
        self._remember(client, mailbox, state, changed)
        old_uidnext = int(cursor.get("uidnext") or 0)
        new_uidnext = state.uidnext or old_uidnext
        arrived = sum(1 for ref in changed if old_uidnext <= _uid(ref.source_id) < new_uidnext)
        if int(cursor.get("exists", -1)) + arrived != state.exists:
            # Something was expunged: only a complete listing tells the engine what.
            return self._complete_listing(client, mailbox, state, reset=False)
        return Listing(refs=changed, cursor=state.cursor(), complete=False)

    def _prefetched(self, mailbox: str, uidvalidity: int) -> dict[int, bytes]:
        """The bodies the last listing read, when it listed this folder in this epoch."""
        listed = self._listed
        if listed is None or listed[1:3] != (mailbox, uidvalidity):
            self._listed_bodies = {}
        return self._listed_bodies

    def _first_listing(self, client: imapclient.IMAPClient, mailbox: str, *,
                       read_bodies: int = 0) -> Listing:
        """EXAMINE and ``UID FETCH 1:*`` sent together, then both answers read: a folder
        that turned out empty answers the FETCH with nothing; one that could not be
        examined fails the FETCH too, and its EXAMINE's answer is what is raised.
        ``read_bodies``: the folder list said the folder small and holding that many
        messages; the bodies of its first that many are read in the same round trip, each
        up to an equal share of ``LISTED_BODIES_BYTES``, so that what is read stays under
        it whatever the folder became since. A body read whole (as long as its
        RFC822.SIZE) is kept for the fetch that follows; one cut at its share is fetched
        again then."""
        imap = client._imap  # imapclient cannot send two commands before reading: imaplib can
        enable = None
        if self._condstore_to_enable(client):
            if imap.state == "AUTH":  # in the same round trip too (ENABLE needs that state)
                enable = imap._command("ENABLE", "CONDSTORE")
            else:
                self._enable_condstore(client)
        self._selected = None
        imap.untagged_responses = {}  # as imaplib's select does
        imap.is_readonly = True
        examine = imap._command("EXAMINE", client._normalise_folder(mailbox))
        imap.state = "SELECTED"  # imaplib refuses a UID command in any other state
        fetch = imap._command("UID", "FETCH", "1:*", f"({' '.join(METADATA)})")
        share = LISTED_BODIES_BYTES // read_bodies if read_bodies > 0 else 0
        read = (imap._command("FETCH", f"1:{read_bodies}", f"(UID BODY.PEEK[]<0.{share}>)")
                if share else None)
        # Every answer is read, whatever the first says, so that none is left behind.
        if enable is not None:
            enabled, _ = _completed(imap, "ENABLE", enable)
            if enabled == "OK":
                self._condstore_enabled_on = client
        status, data = _completed(imap, "EXAMINE", examine)
        fetched, fetched_data = _completed(imap, "FETCH", fetch)
        if read is not None:
            # The server may answer both FETCHes at once (Dovecot runs them side by side):
            # their lines are told apart by what they hold, not by order.
            _completed(imap, "FETCH", read)
        _, lines = imap._untagged_response(fetched, fetched_data, "FETCH")
        if status != "OK":
            imap.state = "AUTH"
            client._checkok("select", status, data)
        state = self._state(client, mailbox,
                            client._process_select_response(imap.untagged_responses))
        response = _parsed_fetch(fetched, lines)
        refs = _refs_of(state.uidvalidity, response)
        self._remember(client, mailbox, state, refs, {
            uid: item[b"BODY[]<0>"] for uid, item in response.items()
            if isinstance(item.get(b"BODY[]<0>"), bytes)
            and len(item[b"BODY[]<0>"]) == item.get(b"RFC822.SIZE")})
        return Listing(refs=refs, cursor=state.cursor(), complete=True)

    def _complete_listing(
        self, client: imapclient.IMAPClient, mailbox: str, state: _FolderState, *, reset: bool
    ) -> Listing:
        refs = _all_refs(client, state.uidvalidity) if state.exists else []
        self._remember(client, mailbox, state, refs)
        return Listing(refs=refs, cursor=state.cursor(), complete=True, reset=reset)

    def _remember(self, client: imapclient.IMAPClient, mailbox: str, state: _FolderState,
                  refs: list[ItemRef], bodies: dict[int, bytes] | None = None) -> None:
        self._listed = (client, mailbox, state.uidvalidity, {
            _uid(ref.source_id): (ref.size, ref.flags, ref.internal_date) for ref in refs})
        self._listed_bodies = bodies or {}

    def _metadata(
        self, client: imapclient.IMAPClient, mailbox: str, uidvalidity: int, uids: list[int]
    ) -> dict[int, _Metadata]:
        self._examine_same_epoch(client, mailbox, uidvalidity)
        return {
            _uid(ref.source_id): (ref.size, ref.flags, ref.internal_date)
            for ref in _refs(client, uidvalidity, uids)
        }

    def _bodies(
        self, client: imapclient.IMAPClient, mailbox: str, uidvalidity: int, uids: list[int]
    ) -> dict[int, bytes]:
        self._examine_same_epoch(client, mailbox, uidvalidity)
        response = fetch(client, uids, ["BODY.PEEK[]"])
        return {
            uid: data[b"BODY[]"]
            for uid, data in response.items()
            if isinstance(data.get(b"BODY[]"), bytes)
        }

    def _spool_in_chunks(self, mailbox: str, uidvalidity: int, uid: int) -> Spool | None:
        """The message read ``CHUNK_BYTES`` at a time; ``None`` if it vanished meanwhile.

        The end is where the server sends a short chunk, not RFC822.SIZE: some servers
        (Exchange) give an approximate size."""
        # To disk from the first byte: the message is known to be large.
        spool = Spool(memory_limit=1)
        while True:
            offset = spool.size

            def read_chunk(client: imapclient.IMAPClient, offset: int = offset) -> bytes | None:
                self._examine_same_epoch(client, mailbox, uidvalidity)
                response = fetch(client, [uid], [f"BODY.PEEK[]<{offset}.{CHUNK_BYTES}>"])
                if uid not in response:
                    return None
                chunk = response[uid].get(f"BODY[]<{offset}>".encode("ascii"))
                return chunk if isinstance(chunk, bytes) else b""

            chunk = self._session.call(read_chunk)
            if chunk is None:
                spool.close()
                return None
            spool.write(chunk)
            if len(chunk) < CHUNK_BYTES:
                return spool.seal()


def _completed(imap: imaplib.IMAP4, name: str, tag: bytes) -> tuple[str, list[Any]]:
    """A command's answer, a BAD one returned rather than raised (imaplib raises it)."""
    try:
        return imap._command_complete(name, tag)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as error:
        return "BAD", [str(error).encode()]


def _refs(client: imapclient.IMAPClient, uidvalidity: int, uids: list[int]) -> list[ItemRef]:
    refs = []
    for start in range(0, len(uids), UIDS_PER_COMMAND):
        response = fetch(client, uids[start : start + UIDS_PER_COMMAND], METADATA)
        refs += [ref for uid in sorted(response) if (ref := _ref(uidvalidity, uid, response[uid]))]
    return refs


def _ref(uidvalidity: int, uid: int, data: dict[bytes, Any]) -> ItemRef | None:
    if b"RFC822.SIZE" not in data:
        return None
    date = data.get(b"INTERNALDATE")
    return ItemRef(
        source_id=f"{uidvalidity}:{uid}",
        size=int(data[b"RFC822.SIZE"]),
        flags=_flags(data.get(b"FLAGS", ())),
        internal_date=date if isinstance(date, datetime) else None,
    )


def _all_refs(client: imapclient.IMAPClient, uidvalidity: int) -> list[ItemRef]:
    """Every message of the selected folder with its metadata, in one command (``UID FETCH
    1:*``) where a SEARCH then FETCHes of a thousand UIDs each would pay a round trip each."""
    # imapclient's fetch keeps only the UIDs it was given, so the range goes through its
    # imaplib connection.
    status, data = client._imap.uid("FETCH", "1:*", f"({' '.join(METADATA)})")
    return _refs_of(uidvalidity, _parsed_fetch(status, data))


def _parsed_fetch(status: str, lines: list[Any]) -> dict[int, dict[bytes, Any]]:
    """FETCH lines as imaplib holds them, by UID (the lines of one UID merged)."""
    if status != "OK":
        raise imap_errors.IMAPClientError(f"FETCH 1:* failed: {lines!r}")
    return parse_fetch(lines)


def _refs_of(uidvalidity: int, response: dict[int, dict[bytes, Any]]) -> list[ItemRef]:
    return [ref for uid in sorted(response) if (ref := _ref(uidvalidity, uid, response[uid]))]


def _batches(
    uids: list[int], metadata: dict[int, _Metadata]
) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 0
    for uid in uids:
        message_size = metadata[uid][0]
        if batch and (size + message_size > BATCH_BYTES or len(batch) >= MESSAGES_PER_BATCH):
            yield batch
            batch, size = [], 0
        batch.append(uid)
        size += message_size
    if batch:
        yield batch


def _message(
    uidvalidity: int, uid: int, spool: Spool, metadata: _Metadata
) -> Message:
    _size, flags, internal_date = metadata
    return Message(
        source_id=f"{uidvalidity}:{uid}",
        fingerprint=spool.fingerprint,
        size=spool.size,
        flags=flags,
        internal_date=internal_date,
        open=spool.open,
        read_headers=MessageHeaders.reader(spool.open),
    )


def _flags(raw: Sequence[bytes | str]) -> frozenset[str]:
    """Flags as the target should get them: ``\\Recent`` dropped (the server sets it), system
    flags in their canonical spelling, keywords unchanged."""
    flags = set()
    for flag in map(_text, raw):
        if flag.upper() == "\\RECENT":
            continue
        flags.add(SYSTEM_FLAG_BY_NAME.get(flag.upper(), flag))
    return flag_set(flags)


def _parse_source_id(source_id: str) -> tuple[int, int]:
    """``(uidvalidity, uid)``; ``(0, 0)`` (matching nothing) for a malformed id."""
    uidvalidity, _, uid = source_id.partition(":")
    if not (uidvalidity.isdigit() and uid.isdigit()):
        return 0, 0
    return int(uidvalidity), int(uid)


def _uid(source_id: str) -> int:
    return _parse_source_id(source_id)[1]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
