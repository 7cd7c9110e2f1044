"""The IMAP mail sink: folders, pipelined APPENDs, recovery lookups and inventories.

Folders, searches, flags and inventories go through imapclient (``ImapSession``); message
bodies go through ``AppendPipeline``, which keeps many APPENDs in flight. Folder names
(``native_name``) are Unicode strings with the server's separator; modified UTF-7 exists
only on the wire.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import imapclient
from imapclient import exceptions as imap_errors

from connectors.base import (
    CHANGED,
    GONE,
    LINK_PAUSES,
    REMOVED,
    ConnectError,
    ContainerRefused,
    ItemRejected,
    Message,
    Path,
    PutResult,
    RemovalRefused,
    SendUnconfirmed,
    SinkCapabilities,
    SourceNote,
    StoredItem,
    all_at_once,
    computed_once,
)
from connectors.imap.append import (
    AppendConnectionLost,
    AppendPipeline,
    AppendReceipt,
    ListRefused,
    storable_flags,
)
from connectors.imap.fetch import fetch
from connectors.imap.session import (
    CONNECTION_DROPPED,
    ImapCredentials,
    ImapEndpoint,
    ImapSession,
    dropped,
    join_path,
    list_with_status,
    read_list_status,
    send_list_status,
)

SPECIAL_USE_ROLES = {
    b"\\sent": "sent",
    b"\\drafts": "drafts",
    b"\\trash": "trash",
    b"\\junk": "junk",
    b"\\archive": "archive",
}
WHOLE_BODY_LIMIT = 1 << 20
"""Bodies up to this size are fetched whole, several per FETCH; bigger ones in parts."""
PART_SIZE = 1 << 20
FETCH_BATCH_BYTES = 8 << 20
METADATA_BATCH = 1000
FOLDERS_AT_ONCE = 200
"""Folders created per burst of pipelined commands: their answers fit in socket buffers."""
WIDEN_AT = 1000
"""Messages expected in one folder per connection it borrows (``ImapSink.allowance``)."""
DEALT_AHEAD = 64
"""Messages dealt to a connection's thread at once, and not yet taken by it: each holds its
body (in memory when small), beyond what the read-ahead counts."""
HOLD_TIMEOUT = 120.0
"""Longest a new sink waits for its own place in the account's ``AppendAllowance``."""
DEAL_RUN_BYTES = 1 << 20
"""A run of messages dealt at once ends at this many bytes (or ``DEALT_AHEAD`` messages)."""
RESOLVE_BATCH = 64
"""Without UIDPLUS, acknowledged messages are located on the target this many at a time."""
FORBIDDEN_IN_NAMES = "".join(chr(code) for code in (
    *range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029))
"""What a mailbox name must not hold (RFC 6855 section 3: control characters, delete, line
and paragraph separators); servers refuse such names (Dovecot: "Control characters not
allowed in new mailbox names"), so the engine's name rules replace these characters."""
RECONNECTS = len(LINK_PAUSES)
"""Times in a row a dropped APPEND connection is opened again before the sink gives up; a
server that refuses the new connection, or does not greet on it, ends it at once."""


@dataclass(frozen=True)
class FolderListing:
    """A target account's folder list, as its first sink read it."""

    folders: list[tuple[tuple[bytes, ...], bytes, str]]
    counts: dict[str, int]
    """Each folder's message count, where the server has LIST-STATUS."""
    capabilities: frozenset[str]
    """The server's, as the connection that listed saw them (APPENDLIMIT)."""

    @cached_property
    def names(self) -> frozenset[str]:
        """Every folder listed, INBOX in capitals whatever the server wrote."""
        return frozenset("INBOX" if name.upper() == "INBOX" else name
                         for _, _, name in self.folders)


class AccountFolders:
    """What the sinks of one target account share: its folder list, read once
    (``ImapSink._listing``), the folders created and written since, and INBOX's
    PERMANENTFLAGS. The lock guards every field."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.listing: FolderListing | None = None
        self.known: set[str] = set()
        """Folders known to exist: listed, or created by one of the account's sinks."""
        self.written: set[str] = set()
        """Folders appended to: their listed counts no longer hold."""
        self.permanent_flags: tuple[bytes, ...] | None = None


class AppendAllowance:
    """The APPEND connections one account may hold at once, shared by its sinks. Each sink
    holds its own while it lives (waiting for them if need be); a folder with many messages
    borrows what is free while it sends, and gives a connection back between two runs of
    messages as soon as a sink waits for its own: the account's count never goes over."""

    def __init__(self, size: int, widest: int | None = None) -> None:
        self._changed = threading.Condition()
        self._free = size
        self._waiting = 0
        self.widest = widest if widest is not None else size
        """The most connections one folder appends over, its own included."""

    def hold(self, count: int, timeout: float = HOLD_TIMEOUT) -> None:
        """Take ``count`` for a sink's own connections. After ``timeout`` (a sink never
        closed keeps what it held) they are taken all the same, rather than wait forever."""
        with self._changed:
            self._waiting += 1
            try:
                self._changed.wait_for(lambda: self._free >= count, timeout)
            finally:
                self._waiting -= 1
            self._free -= count

    def borrow(self, wanted: int) -> int:
        """Up to ``wanted`` connections that are free, none while a sink waits."""
        with self._changed:
            taken = 0 if self._waiting else max(0, min(wanted, self._free))
            self._free -= taken
            return taken

    def wanted_back(self) -> bool:
        return self._waiting > 0

    def give_back(self, count: int = 1) -> None:
        with self._changed:
            self._free += count
            self._changed.notify_all()


class _Lease:
    """The connections a send borrowed (slots ``own`` and up), each given back once: when
    ``_spread`` retires it for a sink that waits, or when the send ends."""

    def __init__(self, sink: ImapSink, own: int, borrowed: int) -> None:
        self.own = own
        self._sink = sink
        self._lock = threading.Lock()
        self._borrowed = set(range(own, own + borrowed))

    def wanted_back(self) -> bool:
        allowance = self._sink._allowance
        return allowance is not None and allowance.wanted_back()

    def returning(self, retired: set[int]) -> bool:
        """Whether one of these slots is still to be given back."""
        return bool(retired & self._borrowed)

    def give_back(self, slot: int) -> None:
        """The slot's connection logged out and its place returned to the account."""
        with self._lock:
            if slot not in self._borrowed:
                return
            self._borrowed.discard(slot)
        pipeline = self._sink._pipelines.pop(slot, None)
        if pipeline is not None:
            pipeline.logout()
        assert self._sink._allowance is not None
        self._sink._allowance.give_back()

    def end(self) -> None:
        for slot in sorted(self._borrowed):
            self.give_back(slot)


class ImapSink:
    """A ``MailSink`` on an IMAP server (Dovecot, Cyrus, BlueMind...).

    ``connections`` > 1 spreads APPENDs over that many pipelines, which helps a server whose
    APPEND is bound by fsync rather than by the network. ``allowance``: the APPEND
    connections of the account, shared by all its sinks; each holds its own
    ``connections`` in it while it lives, and a folder told (``expect``) to bring
    ``WIDEN_AT`` messages or more borrows what the others leave free for as long as it
    sends: the target's own work on one folder then runs on more of its processes, as many
    as the account's other folders do not use.
    """

    def __init__(self, endpoint: ImapEndpoint, credentials: ImapCredentials,
                 connections: int = 1, allowance: AppendAllowance | None = None,
                 account: AccountFolders | None = None) -> None:
        self._endpoint = endpoint
        self._credentials = credentials
        self._connections = max(1, connections)
        self._allowance = allowance
        self._held = 0
        """Of the allowance, what this sink holds for its own connections, until closed."""
        if allowance is not None:
            allowance.hold(self._connections)
            self._held = self._connections
        self._account = account or AccountFolders()
        self._expected: dict[str, int] = {}
        self._session = ImapSession(endpoint, credentials)
        self._pipelines: dict[int, AppendPipeline] = {}
        self._opening: Future[AppendPipeline] | None = None
        """The first APPEND connection, signing in in the background (``_open_ahead``)."""
        self._selected: tuple[int, str, bool] | None = None
        """The selection this sink may rely on; reset to select again."""
        self._on_server: tuple[int, str] | None = None
        """What the control connection last selected, even when ``_selected`` was reset."""
        self._uidvalidity = 0
        self._notes: list[SourceNote] = []

    @computed_once
    def capabilities(self) -> SinkCapabilities:
        listed = self._first_listing  # first: the separator is learnt from it
        separator = self._session.separator
        special: dict[str, Path] = {"inbox": ("INBOX",)}
        for flags, _delimiter, name in listed:
            for flag in flags:
                role = SPECIAL_USE_ROLES.get(flag.lower())
                if role and role not in special:
                    special[role] = _split(name, separator)
        return SinkCapabilities(
            max_item_size=_append_limit(self._listing().capabilities),
            separator=separator or "/",
            forbidden_chars=FORBIDDEN_IN_NAMES,
            keywords=self._keywords_kept(),
            special_folders=special,
            crlf_only=True,
        )

    @computed_once
    def _first_listing(self) -> list[tuple[tuple[bytes, ...], bytes, str]]:
        """Every folder of the account, listed once for all the account's sinks (the
        capabilities and the folders known to exist are read from it), with each one's
        message count where the server has LIST-STATUS."""
        folders = self._listing().folders
        self._session.learn_separator(folders)
        return folders

    def _listing(self) -> FolderListing:
        """The account's folder list: read on this sink's control connection by the first
        of the account's sinks that asks, taken as it is by the others, which open no
        control connection unless they need one (a recovery lookup, a flag change)."""
        account = self._account
        with account.lock:
            if account.listing is None:
                account.listing = self._list_on_pipeline() or self._list_on_session()
                account.known.update(name for _flags, _delimiter, name in
                                     account.listing.folders)
            return account.listing

    def _list_on_pipeline(self) -> FolderListing | None:
        """The folder list read on the first APPEND connection, which a pass that copies
        anything opens anyway: a connection fewer per account. None where the server has no
        LIST-STATUS or refuses it, or the connection broke (the control connection lists
        then)."""
        try:
            pipeline = self._pipeline(0)
            if "LIST-STATUS" not in pipeline.capabilities:
                return None
            listed = pipeline.list_folders()
        except AppendConnectionLost:
            self._pipelines.pop(0, None)
            return None
        except ListRefused:
            return None
        # Taken into the account's listing by ``_listing``, the lock held.
        self._account.permanent_flags = listed.permanent_flags
        return FolderListing(folders=listed.folders, counts=listed.counts,
                             capabilities=pipeline.capabilities)

    def _list_on_session(self) -> FolderListing:
        folders, statuses = self._session.call(self._list_and_select_inbox)
        return FolderListing(
            folders=folders,
            counts={name: answer["MESSAGES"] for name, answer in statuses.items()
                    if "MESSAGES" in answer},
            capabilities=self._session.capabilities)

    def _listed_empty(self, name: str) -> bool:
        """The folder held nothing when first listed, and none of the account's sinks has
        written to it since."""
        return self._listing().counts.get(name) == 0 and name not in self._account.written

    def _known_folders(self) -> set[str]:
        """The folders known to exist: the first listing's, and those created since by the
        account's sinks. One another client deletes meanwhile is not noticed: its APPENDs
        fail, and the next run's sink lists it missing and creates it."""
        _ = self._first_listing
        return self._account.known

    def native_name(self, path: Path) -> str:
        try:
            return join_path(path, self._session.separator)
        except ValueError as error:
            raise ContainerRefused(str(error)) from error

    def ensure_container(self, path: Path) -> str:
        native_name = self.native_name(path)
        for name in self._missing([path]):
            self._create(name)
        self._open_ahead()
        return native_name

    def ensure_containers(self, paths: Sequence[Path]) -> dict[Path, bool]:
        """Create the missing folders of ``paths`` and their parents, many CREATEs in one
        round trip on the first APPEND connection; answer those of ``paths`` that exist now,
        each with whether it holds nothing (created now, or empty in the first listing).
        Those the server refuses (or a lost connection) are left out, for
        ``ensure_container`` to say why."""
        nameable = [path for path in paths if self._nameable(path)]
        missing = self._missing(nameable)
        created: set[str] = set()
        try:
            for start in range(0, len(missing), FOLDERS_AT_ONCE):
                created |= self._pipeline(0).create_folders(
                    missing[start:start + FOLDERS_AT_ONCE])
        except AppendConnectionLost:
            self._pipelines.pop(0, None)
        known = self._known_folders()
        with self._account.lock:
            known.update(created)
        return {path: name in created or self._listed_empty(name)
                for path, name in ((path, self.native_name(path)) for path in nameable)
                if name in known or name.upper() == "INBOX"}

    def _nameable(self, path: Path) -> bool:
        try:
            self.native_name(path)
        except ContainerRefused:
            return False
        return True

    def _missing(self, paths: Sequence[Path]) -> list[str]:
        """Native names of the folders and parents of ``paths`` not known to exist, parents
        first."""
        known = self._known_folders()
        wanted: dict[str, int] = {}
        for path in paths:
            for depth in range(1, len(path) + 1):
                name = self.native_name(path[:depth])
                if name not in known and name.upper() != "INBOX":
                    wanted[name] = depth
        return sorted(wanted, key=lambda name: (wanted[name], name))

    def put_many(self, native_name: str, messages: Iterable[Message]) -> Iterator[PutResult]:
        with self._account.lock:
            self._account.written.add(native_name)
        messages = self._noting_lost_flags(messages)
        if not self._uidplus():
            yield from self._put_resolving_refs(native_name, messages)
            return
        for message, receipt in self._append(native_name, messages):
            # A selection made before this message landed may not show it: select again.
            self._selected = None
            yield _put_result(message, receipt)

    def listed_count(self, native_name: str) -> int | None:
        listing = self._account.listing
        with self._account.lock:
            if listing is None or native_name in self._account.written:
                return None
        wanted = "INBOX" if native_name.upper() == "INBOX" else native_name
        if wanted in listing.counts:
            return listing.counts[wanted]
        # Not in the folder list: it did not exist then, and none of the account's sinks
        # has written to it since (a plan into a new account counts nothing, no round trip).
        return 0 if wanted not in listing.names else None

    def count(self, native_name: str) -> int:
        def status(client: imapclient.IMAPClient) -> int:
            if self._on_server == (id(client), native_name):
                # STATUS of the folder this connection has selected answers what the
                # connection last saw (Dovecot): what others appended since needs a NOOP.
                client.noop()
            try:
                answer = client.folder_status(native_name, [b"MESSAGES"])
            except imap_errors.IMAPClientError:
                if _exists(client, native_name):
                    raise
                return 0
            return int(answer[b"MESSAGES"])

        return self._session.call(status)

    def fingerprints(self, native_name: str, target_refs: Sequence[str]
                     ) -> Iterator[tuple[str, str]]:
        def read(client: imapclient.IMAPClient) -> list[tuple[str, str]]:
            uidvalidity = self._select(client, native_name, readonly=True)
            wanted = [int(uid) for validity, _, uid in (ref.partition(":") for ref in target_refs)
                      if validity == str(uidvalidity) and uid.isdigit()]
            found = []
            for start in range(0, len(wanted), METADATA_BATCH):
                rows = fetch(client, wanted[start:start + METADATA_BATCH], ["RFC822.SIZE"])
                sizes = [(uid, rows[uid][b"RFC822.SIZE"]) for uid in sorted(rows)]
                found += [(f"{uidvalidity}:{uid}", fingerprint)
                          for uid, fingerprint in _body_fingerprints(client, sizes)]
            return found

        yield from self._session.call(read)

    def set_flags(self, native_name: str, target_ref: str, flags: frozenset[str]) -> None:
        ref_validity, _, uid = target_ref.partition(":")

        def store(client: imapclient.IMAPClient) -> None:
            uidvalidity = self._select(client, native_name, readonly=False)
            if ref_validity != str(uidvalidity) or not uid.isdigit():
                raise ItemRejected(f"{target_ref} is not a message of {native_name} "
                                   f"(UIDVALIDITY {uidvalidity})", code="server_error")
            client.set_flags([int(uid)], storable_flags(flags), silent=True)

        try:
            self._session.call(store)
        except imap_errors.IMAPClientError as error:
            raise ItemRejected(str(error), code="server_error") from error

    def remove_messages(self, native_name: str, stored: Mapping[str, frozenset[str]]
                        ) -> dict[str, str]:
        """``UID STORE +FLAGS (\\Deleted)`` on the messages whose flags are still those
        bascule gave them, then ``UID EXPUNGE`` of exactly those UIDs (RFC 4315): a message
        someone else marked deleted in the folder stays. Without UIDPLUS only a plain
        EXPUNGE exists, which would remove those too: ``RemovalRefused``. A ref of another
        UIDVALIDITY (the folder was made again) or absent is ``GONE``. The flags are read
        then marked in two commands: a change made on the target between them is not seen.
        Marked then cut before the EXPUNGE, a message keeps ``\\Deleted``, which the next
        call does not count as a change."""
        if "UIDPLUS" not in self._session.capabilities:
            raise RemovalRefused(f"{self._endpoint.host}:{self._endpoint.port}")
        with self._account.lock:
            self._account.written.add(native_name)  # its listed count no longer holds

        def remove(client: imapclient.IMAPClient) -> dict[str, str]:
            fates = dict.fromkeys(stored, GONE)
            uidvalidity = self._select(client, native_name, readonly=False)
            # A selection made before may not have seen what other clients expunged or
            # flagged since (Dovecot answers a FETCH of an expunged message it has not yet
            # told this connection of): NOOP brings their news.
            client.noop()
            refs = {int(uid): ref for ref, (validity, _, uid)
                    in ((ref, ref.partition(":")) for ref in stored)
                    if validity == str(uidvalidity) and uid.isdigit()}
            marked = []
            for start in range(0, len(refs), METADATA_BATCH):
                rows = fetch(client, sorted(refs)[start:start + METADATA_BATCH], ["FLAGS"])
                for uid, row in rows.items():
                    if uid not in refs:
                        continue
                    if self._as_stored(_flag_names(row[b"FLAGS"])) == self._as_stored(
                            stored[refs[uid]]):
                        marked.append(uid)
                    else:
                        fates[refs[uid]] = CHANGED
            if marked:
                client.add_flags(marked, [b"\\Deleted"], silent=True)
                client.uid_expunge(marked)
                fates.update((refs[uid], REMOVED) for uid in marked)
            return fates

        try:
            return self._session.call(remove)
        except imap_errors.IMAPClientError as error:
            raise ItemRejected(f"{native_name}: {_server_text(error)}",
                               code="server_error") from error

    def _as_stored(self, flags: frozenset[str]) -> frozenset[str]:
        """What the folder keeps of ``flags``, for comparing: case aside (IMAP flags are
        case-insensitive), ``\\Deleted`` aside (``remove_messages``)."""
        kept = set(flags) - set(self._lost_flags(flags))
        return frozenset(flag.lower() for flag in kept) - {"\\deleted", "\\recent"}

    def inventory(self, native_name: str, fingerprints: bool = False) -> Iterator[StoredItem]:
        """Every message of the folder, a thousand at a time. A connection that drops raises
        ``ConnectError``: a listing resumed on a new connection could miss or repeat items."""
        try:
            client = self._session.client
            uidvalidity = self._select(client, native_name, readonly=True)
            uids = sorted(client.search("ALL"))
            for start in range(0, len(uids), METADATA_BATCH):
                chunk = uids[start:start + METADATA_BATCH]
                rows = fetch(client, chunk, ["RFC822.SIZE", "FLAGS", "INTERNALDATE"])
                hashes: dict[int, str] = {}
                if fingerprints:
                    hashes = dict(_body_fingerprints(
                        client, [(uid, rows[uid][b"RFC822.SIZE"]) for uid in chunk
                                 if uid in rows]))
                for uid in chunk:
                    if uid not in rows:
                        continue
                    row = rows[uid]
                    yield StoredItem(
                        target_ref=f"{uidvalidity}:{uid}",
                        size=row[b"RFC822.SIZE"],
                        flags=_flag_names(row[b"FLAGS"]),
                        fingerprint=hashes.get(uid),
                        internal_date=_aware(row.get(b"INTERNALDATE")),
                    )
        except CONNECTION_DROPPED as error:
            self._session.reset()
            self._selected = None
            raise dropped(self._endpoint, error) from error

    def drain_notes(self) -> list[SourceNote]:
        """Flags the server cannot keep (keywords that are not IMAP atoms, or any keyword
        when PERMANENTFLAGS lacks ``\\*``), message by message."""
        notes, self._notes = self._notes, []
        return notes

    def _lost_flags(self, flags: frozenset[str]) -> list[str]:
        kept = set(storable_flags(flags))
        if not self.capabilities.keywords:
            kept = {flag for flag in kept if flag.startswith("\\")}
        return sorted(set(flags) - kept - {"\\Recent"})

    def _noting_lost_flags(self, messages: Iterable[Message]) -> Iterator[Message]:
        for message in messages:
            lost = self._lost_flags(message.flags)
            if lost:
                self._notes.append(SourceNote("flags_not_kept", message.source_id,
                                              " ".join(lost)))
            yield message

    def close(self) -> None:
        held, self._held = self._held, 0
        if held:
            assert self._allowance is not None
            self._allowance.give_back(held)
        pipelines, self._pipelines = self._pipelines, {}
        opening, self._opening = self._opening, None
        if opening is not None:
            # Still signing in, or never used: logged out once it is open.
            opening.add_done_callback(
                lambda done: done.exception() is None and done.result().logout())
        all_at_once([self._session.close, *(pipeline.logout for pipeline in pipelines.values())])

    def _open_ahead(self) -> None:
        """Sign the first APPEND connection in while the caller goes on: a unit that asks
        for its folder is about to write to it (a folder with nothing new is settled at
        planning, and no unit runs for it), and the two round trips of that sign-in then
        overlap the source's listing instead of preceding the first APPEND."""
        if 0 in self._pipelines or self._opening is not None:
            return
        opening: Future[AppendPipeline] = Future()

        def sign_in() -> None:
            try:
                opening.set_result(AppendPipeline(self._endpoint, self._credentials))
            except BaseException as error:  # noqa: BLE001 (handed to whoever takes it)
                opening.set_exception(error)

        self._opening = opening
        threading.Thread(target=sign_in, name="append-sign-in", daemon=True).start()

    def expect(self, native_name: str, count: int) -> None:
        self._expected[native_name] = count

    def _borrowed(self, native_name: str) -> int:
        """Connections taken from the allowance for the next send into the folder: as many
        as are free (up to one per ``WIDEN_AT`` messages expected), none for a small one."""
        wanted = self._expected.pop(native_name, 0) // WIDEN_AT
        if self._allowance is None or not wanted:
            return 0
        return self._allowance.borrow(min(wanted, self._allowance.widest - self._connections))

    def _append(self, native_name: str, messages: Iterable[Message]) -> Iterator[
            tuple[Message, AppendReceipt]]:
        borrowed = self._borrowed(native_name)
        lease = _Lease(self, self._connections, borrowed)
        connections = self._connections + borrowed
        try:
            if connections == 1:
                yield from self._append_on(0, native_name, messages)
            else:
                yield from _spread(connections, lambda slot, queued: self._append_on(
                    slot, native_name, queued), messages, lease)
        finally:
            # Borrowed connections go back: logged out, for another folder to open.
            lease.end()

    def _append_on(self, slot: int, native_name: str, messages: Iterable[Message]) -> Iterator[
            tuple[Message, AppendReceipt]]:
        """Append through the pipeline of ``slot``, reopening it when it drops: its
        in-flight messages come back ``SendUnconfirmed`` (they may be stored), the others go
        on through the new connection. A connection that cannot be opened again raises."""
        remaining = iter(messages)
        failures = 0
        while True:
            pipeline = self._pipeline(slot)
            try:
                for result in pipeline.append(native_name, remaining):
                    failures = 0
                    yield result
                return
            except AppendConnectionLost as lost:
                del self._pipelines[slot]
                failures += 1
                if failures > RECONNECTS:
                    raise
                if lost.unsent:
                    remaining = itertools.chain(lost.unsent, remaining)
            except GeneratorExit:
                # The caller stopped listening with APPENDs in flight: this connection's
                # state is unknown, so it is not reused.
                del self._pipelines[slot]
                pipeline.logout()
                raise

    def _pipeline(self, slot: int) -> AppendPipeline:
        """The pipeline of ``slot``, opened if needed. A server that refuses or ignores a new
        connection is down: that raises at once. One that cut it during the login may be
        behind a flaky link: it is tried again, with a growing pause."""
        opening = self._opening if slot == 0 else None
        if opening is not None:
            self._opening = None
            with contextlib.suppress(Exception):
                # A failed sign-in ahead is tried again below, where its error is raised.
                self._pipelines[0] = opening.result()
        for attempt in range(RECONNECTS + 1):
            if slot in self._pipelines:
                break
            try:
                self._pipelines[slot] = AppendPipeline(self._endpoint, self._credentials)
            except ConnectError as error:
                if error.code != "connection_lost" or attempt == RECONNECTS:
                    raise
                time.sleep(LINK_PAUSES[attempt])
        return self._pipelines[slot]

    def _put_resolving_refs(self, native_name: str, messages: Iterable[Message]) -> Iterator[
            PutResult]:
        """Without UIDPLUS the server does not say where a message went: look at the UIDs
        that appeared since the batch began and match them by size, then by content."""
        locator = _Locator(self, native_name)
        acknowledged: list[tuple[Message, AppendReceipt]] = []
        for message, receipt in self._append(native_name, messages):
            acknowledged.append((message, receipt))
            if len(acknowledged) >= RESOLVE_BATCH:
                yield from locator.resolve(acknowledged)
                acknowledged = []
        yield from locator.resolve(acknowledged)
        self._selected = None

    def _uidplus(self) -> bool:
        return self._pipeline(0).uidplus

    def _create(self, native_name: str) -> None:
        def create(client: imapclient.IMAPClient) -> None:
            try:
                client.create_folder(native_name)
            except CONNECTION_DROPPED:
                raise
            except imap_errors.IMAPClientError as error:
                if not _exists(client, native_name):
                    raise ContainerRefused(f"{native_name}: {_server_text(error)}") from error
                return
            client.subscribe_folder(native_name)

        self._session.call(create)
        known = self._known_folders()
        with self._account.lock:
            known.add(native_name)

    def _select(self, client: imapclient.IMAPClient, native_name: str, readonly: bool) -> int:
        """Select the folder (again only when needed); answer its UIDVALIDITY."""
        key = (id(client), native_name, readonly)
        if self._selected != key:
            try:
                status = client.select_folder(native_name, readonly=readonly)
            except CONNECTION_DROPPED:
                raise
            except imap_errors.IMAPClientError as error:
                raise ContainerRefused(f"{native_name}: {_server_text(error)}") from error
            self._selected = key
            self._on_server = key[:2]
            self._uidvalidity = int(status[b"UIDVALIDITY"])
        return self._uidvalidity

    def _list_and_select_inbox(self, client: imapclient.IMAPClient
                               ) -> tuple[list[tuple[Any, Any, str]], dict[str, dict[str, int]]]:
        """The folder list with each folder's count and, where the server has LIST-STATUS,
        INBOX selected in the same round trip for its PERMANENTFLAGS (``_keywords_kept``)."""
        capabilities = self._session.capabilities
        if "LIST-STATUS" not in capabilities:
            return list_with_status(client, capabilities, ("MESSAGES",))
        imap = client._imap
        listing = send_list_status(client, capabilities, ("MESSAGES",))
        select = imap._command("SELECT", '"INBOX"')
        try:
            found = read_list_status(client, listing)
        finally:
            # Read whatever the LIST said: the SELECT's answer must not be left behind.
            selected, _ = imap._command_complete("SELECT", select)
        self._selected = None
        self._on_server = (id(client), "INBOX")
        if selected == "OK":
            imap.state, imap.is_readonly = "SELECTED", False
            # Taken into the account's listing by ``_listing``, the lock held.
            self._account.permanent_flags = client._process_select_response(
                imap.untagged_responses).get(b"PERMANENTFLAGS", ())
        else:
            imap.state = "AUTH"
        return found

    def _keywords_kept(self) -> bool:
        """Whether INBOX accepts new keywords for good (``\\*`` in PERMANENTFLAGS). Read-write
        SELECT: EXAMINE answers an empty PERMANENTFLAGS since nothing can be stored. Read
        with the first listing where it could be."""
        _ = self._first_listing
        account = self._account
        if account.permanent_flags is None:
            def permanent(client: imapclient.IMAPClient) -> tuple[bytes, ...]:
                self._selected = None
                self._on_server = (id(client), "INBOX")
                return client.select_folder("INBOX").get(b"PERMANENTFLAGS", ())

            flags = self._session.call(permanent)
            with account.lock:
                account.permanent_flags = flags
        return b"\\*" in account.permanent_flags


class _Locator:
    """Finds, without UIDPLUS, the UIDs of messages appended during one ``put_many``."""

    def __init__(self, sink: ImapSink, native_name: str) -> None:
        self._sink = sink
        self._native_name = native_name
        status = sink._session.call(
            lambda c: c.folder_status(native_name, [b"UIDNEXT", b"UIDVALIDITY"]))
        self._uidvalidity = int(status[b"UIDVALIDITY"])
        self._next_uid = int(status[b"UIDNEXT"])
        self._unclaimed: dict[int, int] = {}
        self._hashes: dict[int, str] = {}

    def resolve(self, acknowledged: list[tuple[Message, AppendReceipt]]) -> Iterator[PutResult]:
        stored = [message for message, receipt in acknowledged if receipt.error is None]
        refs = self._sink._session.call(lambda c: self._locate(c, stored)) if stored else {}
        for message, receipt in acknowledged:
            if receipt.error is not None:
                yield PutResult(message.source_id, None, receipt.error)
            else:
                yield PutResult(message.source_id, refs.get(id(message)))

    def _locate(self, client: imapclient.IMAPClient, messages: list[Message]) -> dict[int, str]:
        self._sink._selected = None
        uidvalidity = self._sink._select(client, self._native_name, readonly=True)
        if uidvalidity != self._uidvalidity:
            return {}
        new_uids = [uid for uid in client.search(["UID", f"{self._next_uid}:*"])
                    if uid >= self._next_uid]
        if new_uids:
            rows = fetch(client, new_uids, ["RFC822.SIZE"])
            self._unclaimed.update({uid: row[b"RFC822.SIZE"] for uid, row in rows.items()})
            self._next_uid = max(new_uids) + 1
        refs: dict[int, str] = {}
        for message in messages:
            uid = self._claim(client, message)
            if uid is not None:
                refs[id(message)] = f"{uidvalidity}:{uid}"
        return refs

    def _claim(self, client: imapclient.IMAPClient, message: Message) -> int | None:
        """The first unclaimed new UID holding this message: by size when only one UID has
        that size, else by content (another client may deliver mail meanwhile)."""
        same_size = sorted(uid for uid, size in self._unclaimed.items() if size == message.size)
        if len(same_size) == 1:
            chosen: int | None = same_size[0]
        else:
            chosen = None
            for uid in same_size:
                if uid not in self._hashes:
                    self._hashes.update(_body_fingerprints(client, [(uid, message.size)]))
                if self._hashes.get(uid) == message.fingerprint:
                    chosen = uid
                    break
        if chosen is not None:
            del self._unclaimed[chosen]
        return chosen


def _spread(
    connections: int,
    append_on: Callable[[int, Iterable[Message]], Iterator[tuple[Message, AppendReceipt]]],
    messages: Iterable[Message],
    lease: _Lease | None = None,
) -> Iterator[tuple[Message, AppendReceipt]]:
    """Deal the messages in runs of up to ``DEALT_AHEAD`` messages or ``DEAL_RUN_BYTES``
    to one thread per connection, each run to a thread with no run waiting (at most one
    waits per thread); yield the receipts in the messages' order. Each thread owns its
    connection, so no socket is shared; a run goes across threads in one hand-over (a batch
    of small messages then makes one MULTIAPPEND of one connection). Once a connection fails
    for good, no more messages are dealt: the ones dealt are answered (the failed
    connection's as unconfirmed), then its error is raised. A borrowed connection
    (``lease``) that another sink of the account waits for is dealt nothing more: once it
    has sent what it was dealt, it is given back."""
    inboxes: list[queue.Queue[tuple[list[Message], int] | None]] = [
        queue.Queue(maxsize=1) for _ in range(connections)]
    outboxes: list[queue.Queue[tuple[Message, AppendReceipt] | BaseException]] = [
        queue.Queue() for _ in range(connections)]
    stop = threading.Event()
    broken = threading.Event()
    ended = [False] * connections
    room = threading.Condition()
    dealt_bytes = [0] * connections
    active = list(range(connections))
    """The slots still dealt to."""
    retired: set[int] = set()
    """Borrowed slots dealt nothing more, to give back once they have sent what they were."""

    def queued(slot: int) -> Iterator[Message]:
        while not stop.is_set():
            try:
                dealt = inboxes[slot].get(timeout=0.1)
            except queue.Empty:
                continue
            if dealt is None:
                ended[slot] = True
                return
            run, size = dealt
            with room:
                dealt_bytes[slot] -= size
                room.notify_all()
            yield from run

    def deal(run: list[Message], size: int) -> int:
        """Hand the run to a connection with nothing waiting, the first such after the one
        dealt to last: a connection the server answers slowly holds up none of the
        others. After a failure, to the next in turn, without waiting."""
        with room:
            while not broken.is_set() and all(dealt_bytes[slot] for slot in active):
                room.wait(timeout=0.1)
            after = active.index(last[0]) + 1 if last[0] in active else 0
            turns = active[after:] + active[:after]
            slot = next((slot for slot in turns if not dealt_bytes[slot]), turns[0])
            dealt_bytes[slot] += size
            last[0] = slot
        inboxes[slot].put((run, size))
        return slot

    def work(slot: int) -> None:
        try:
            for result in append_on(slot, queued(slot)):
                outboxes[slot].put(result)
            if slot in retired and lease is not None:
                lease.give_back(slot)
        except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
            outboxes[slot].put(error)
            broken.set()
        # Once this connection is gone, what is still dealt to it comes back unanswered
        # (nothing is, once the end of the messages was read).
        for message in () if ended[slot] else queued(slot):
            outboxes[slot].put((message, AppendReceipt(error=SendUnconfirmed(
                "the connection carrying this message failed"))))

    workers = [threading.Thread(target=work, args=(slot,), daemon=True)
               for slot in range(connections)]
    for worker in workers:
        worker.start()
    order: deque[list[int]] = deque()
    """``[slot, messages not yet answered]`` of each run dealt, oldest first."""

    def answers(block: bool) -> Iterator[tuple[Message, AppendReceipt]]:
        while order:
            slot, left = order[0]
            try:
                answer = outboxes[slot].get(block=block)
            except queue.Empty:
                return
            if isinstance(answer, BaseException):
                raise answer
            if left == 1:
                order.popleft()
            else:
                order[0][1] = left - 1
            yield answer

    last = [-1]
    """The slot dealt to last."""

    def deal_run(run: list[Message], size: int) -> None:
        if (lease is not None and len(active) > lease.own and lease.wanted_back()
                and not lease.returning(retired)):
            slot = active.pop()  # the last borrowed: it ends after what it was dealt
            retired.add(slot)
            inboxes[slot].put(None)
        order.append([deal(run, size), len(run)])

    try:
        run: list[Message] = []
        run_bytes = 0
        for message in messages:
            if broken.is_set():
                break
            run.append(message)
            run_bytes += message.size
            if len(run) >= DEALT_AHEAD or run_bytes >= DEAL_RUN_BYTES:
                deal_run(run, run_bytes)
                run, run_bytes = [], 0
                yield from answers(block=False)
        if run and not broken.is_set():
            deal_run(run, run_bytes)
        for slot in active:
            inboxes[slot].put(None)
        yield from answers(block=True)
    finally:
        stop.set()
        for inbox in inboxes:
            # Wakes a worker waiting for its next message (a full inbox has none waiting).
            with contextlib.suppress(queue.Full):
                inbox.put_nowait(None)
        for worker in workers:
            worker.join()


def _body_fingerprints(client: imapclient.IMAPClient, sizes: list[tuple[int, int]]) -> Iterator[
        tuple[int, str]]:
    """``(uid, fingerprint)`` of bodies, small ones several per FETCH, big ones in parts, so
    memory holds at most a few megabytes whatever the message size."""
    batch: list[int] = []
    batch_bytes = 0
    for uid, size in sizes:
        if size > WHOLE_BODY_LIMIT:
            yield uid, _fingerprint_in_parts(client, uid)
            continue
        batch.append(uid)
        batch_bytes += size
        if batch_bytes >= FETCH_BATCH_BYTES:
            yield from _fingerprint_whole(client, batch)
            batch, batch_bytes = [], 0
    if batch:
        yield from _fingerprint_whole(client, batch)


def _fingerprint_whole(client: imapclient.IMAPClient, uids: list[int]) -> Iterator[
        tuple[int, str]]:
    rows = fetch(client, uids, ["BODY.PEEK[]"])
    for uid in uids:
        if uid in rows:
            yield uid, "sha256:" + hashlib.sha256(rows[uid][b"BODY[]"]).hexdigest()


def _fingerprint_in_parts(client: imapclient.IMAPClient, uid: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while True:
        rows = fetch(client, [uid], [f"BODY.PEEK[]<{offset}.{PART_SIZE}>"])
        part = rows.get(uid, {}).get(f"BODY[]<{offset}>".encode()) or b""
        digest.update(part)
        offset += len(part)
        if len(part) < PART_SIZE:
            return "sha256:" + digest.hexdigest()


def _put_result(message: Message, receipt: AppendReceipt) -> PutResult:
    if receipt.error is not None:
        return PutResult(message.source_id, None, receipt.error)
    ref = f"{receipt.uidvalidity}:{receipt.uid}" if receipt.uid is not None else None
    return PutResult(message.source_id, ref)


def _exists(client: imapclient.IMAPClient, native_name: str) -> bool:
    """Exact-name LIST: ``folder_exists`` would read ``%`` and ``*`` in a name as wildcards."""
    wanted = native_name.upper() if native_name.upper() == "INBOX" else native_name
    for _flags, _delimiter, name in client.list_folders("", native_name):
        if (name.upper() if name.upper() == "INBOX" else name) == wanted:
            return True
    return False


def _split(name: str, separator: str | None) -> Path:
    return tuple(name.split(separator)) if separator else (name,)


def _append_limit(capabilities: frozenset[str]) -> int | None:
    for capability in capabilities:
        name, _, value = capability.partition("=")
        if name == "APPENDLIMIT" and value.isdigit():
            return int(value)
    return None


def _flag_names(flags: Iterable[bytes | str]) -> frozenset[str]:
    names = (flag.decode("utf-8", "replace") if isinstance(flag, bytes) else flag
             for flag in flags)
    return frozenset(name for name in names if name.lower() != "\\recent")


def _aware(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _server_text(error: BaseException) -> str:
    text = str(error)
    return text[2:-1] if text.startswith(("b'", 'b"')) else text
