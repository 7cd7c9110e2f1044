"""Read an Exchange mailbox through EWS: its mail folders and its online archive's, listings
through SyncFolderItems, MIME bodies streamed.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer) each
behaviour comes from:

- ``web-service-reference/distinguishedfolderid``: ``msgfolderroot`` (the top of the
  mailbox's folders), ``inbox``, ``sentitems``, ``drafts``, ``deleteditems``,
  ``junkemail`` and ``archivemsgfolderroot`` (the top of the online archive) address a
  folder whatever the mailbox's language; a mailbox without an archive answers
  ``ErrorFolderNotFound`` for the last one (or no archive mailbox, ``ErrorNoArchive...``).
- ``web-service-reference/findfolder-operation``, ``indexedpagefolderview``: every folder
  below a root (``Traversal="Deep"``), page by page.
- ``web-service-reference/folderclass``: mail folders are ``IPF.Note`` and its
  sub-classes (``IPF.Note.*``); calendars, contacts, tasks and the rest are left to their
  own workloads.
- ``web-service-reference/syncfolderitems-operation``: the items of a folder as ``Create``,
  ``Update``, ``Delete`` and ``ReadFlagChange`` changes since a ``SyncState``, at most
  ``MaxChangesReturned`` (512) per answer, until ``IncludesLastItemInRange``; no state is
  a full listing. A state the server no longer takes answers ``ErrorInvalidSyncStateData``:
  the folder is listed whole again (ids hold, so nothing is reset).
- ``web-service-reference/getitem-operation``, ``mimecontent``: the MIME of a message,
  base64 in the answer (read by ``connectors.ews.answers``).
- ``web-service-reference/extendedfielduri``: MAPI properties by tag. The follow-up flag is
  PidTagFlagStatus (``0x1090``, Integer; 2 = flagged), which EWS exposes as ``t:Flag`` only
  from Exchange 2013 and exchangelib not at all.

A message's flags: ``\\Seen`` from ``IsRead``, ``\\Flagged`` from the flag status,
``\\Draft`` from ``IsDraft``, categories as IMAP keywords (the Graph source's rule, every
renamed one noted); its internal date is ``DateTimeReceived``. ``Size`` is Exchange's size of
the item in its store, close to the MIME's: what a listing says; the fetched message carries
the exact size of its bytes.

The online archive's folders come after the mailbox's, under ``archive_root`` (one segment,
``Archives`` by default), with no role (its inbox is not the user's inbox), ``part``
``"archive"`` so that reports count them apart.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

import requests

from connectors.base import Container, ItemRef, Listing, Message, Path, SourceNote
from connectors.ews.answers import FLAG_STATUS_TAG, FLAGGED, GetItemReader, ReadItem, instant
from connectors.ews.client import (
    TRANSIENT,
    EwsClient,
    EwsFault,
    attribute,
    checked,
    response_messages,
)
from connectors.ews.folders import FolderRow, extended, find_folders, from_cursor, sync_items
from connectors.ews.folders import messages as _m
from connectors.ews.folders import types as _t
from connectors.graph.mail import category_keyword
from connectors.headers import MessageHeaders

ROLE_OF_DISTINGUISHED = {"inbox": "inbox", "sentitems": "sent", "drafts": "drafts",
                         "deleteditems": "trash", "junkemail": "junk"}
"""Distinguished folder ids -> bascule roles. Exchange has no distinguished id for
Outlook's Archive folder before 2016, and an archive folder is recognised by its name
(``mappings.folders``) as any other source's."""
ROOT = "msgfolderroot"
ARCHIVE_ROOT = "archivemsgfolderroot"
ARCHIVE_PART = "archive"
MAIL_CLASS = "IPF.Note"
MISSING = frozenset({"ErrorFolderNotFound", "ErrorArchiveMailboxNotEnabled",
                     "ErrorItemNotFound"})
"""What GetFolder answers for a distinguished folder the mailbox does not have."""
GONE = frozenset({"ErrorItemNotFound", "ErrorMessageNotFound"})
PAGE = 512
"""Changes per SyncFolderItems answer: the most the operation gives."""
BATCH_ITEMS = 16
"""Messages asked for in one GetItem: fewer round trips for small ones."""
BATCH_BYTES = 1 << 20
"""A GetItem asks for no more than this many listed bytes at once, but always one item: a
large message comes alone, streamed like any other."""
CHUNK = 1 << 16
PROPERTIES = ('<t:FieldURI FieldURI="message:IsRead"/>'
              '<t:FieldURI FieldURI="item:IsDraft"/>'
              '<t:FieldURI FieldURI="item:Categories"/>'
              '<t:FieldURI FieldURI="item:DateTimeReceived"/>'
              '<t:FieldURI FieldURI="item:Size"/>'
              f'<t:ExtendedFieldURI PropertyTag="{FLAG_STATUS_TAG:#06x}" '
              'PropertyType="Integer"/>')
def distinguished(name: str, mailbox: str) -> str:
    return (f'<t:DistinguishedFolderId Id="{name}"><t:Mailbox><t:EmailAddress>'
            f'{escape(mailbox)}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>')


def check_access(client: EwsClient, mailbox: str) -> None:
    """Sign in and read the top of ``mailbox``'s folders: a refused login, a missing
    impersonation right or an unknown mailbox raise ``ConnectError`` (``ews_login_refused``,
    ``ews_impersonation_denied``, ``ews_no_mailbox``), before anything moves."""
    body = client.call(mailbox, "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly"
                                "</t:BaseShape></m:FolderShape><m:FolderIds>"
                                f"{distinguished(ROOT, mailbox)}</m:FolderIds></m:GetFolder>")
    for message in response_messages(body):
        checked(message)


class EwsMailSource:
    """The mail of one Exchange mailbox, and of its online archive, as a ``MailSource``.

    ``workers`` GetItem requests go at once for bodies (the client's throttle bounds them
    per mailbox and per server whatever this says)."""

    def __init__(self, client: EwsClient, mailbox: str, *, archive_root: str = "Archives",
                 workers: int = 2) -> None:
        self._client = client
        self._mailbox = mailbox
        self._archive_root = archive_root
        self._workers = max(1, workers)
        self._sizes: dict[str, int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._notes: list[SourceNote] = []
        self._unreadable: list[tuple[str, str]] = []
        self.keyword_renames: dict[str, str] = {}
        self._renames_noted: set[str] = set()
        self._lock = threading.Lock()

    # --- MailSource

    def containers(self) -> list[Container]:
        roots = self._distinguished()
        found: list[Container] = []
        role_of = {folder_id: ROLE_OF_DISTINGUISHED[name] for name, folder_id in roots.items()
                   if name in ROLE_OF_DISTINGUISHED}
        found += self._tree(ROOT, roots[ROOT], (), role_of, None)
        if ARCHIVE_ROOT in roots:
            found += self._tree(ARCHIVE_ROOT, roots[ARCHIVE_ROOT], (self._archive_root,), {},
                                ARCHIVE_PART)
        return found

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        return from_cursor(lambda state: self._sync(container, state), container, cursor,
                           self._notes)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        """Bodies are read ``workers`` GetItem requests at a time, yielded in the order
        asked."""
        pool = self._executor()
        pending: deque[Future[list[_Fetched]]] = deque()
        batches = iter(self._batches(list(dict.fromkeys(source_ids))))
        try:
            while True:
                while len(pending) < self._workers:
                    batch = next(batches, None)
                    if batch is None:
                        break
                    pending.append(pool.submit(self._get_items, batch))
                if not pending:
                    return
                fetched = pending.popleft().result()
                try:
                    while fetched:
                        outcome = fetched.pop(0)
                        if outcome.message is not None:
                            yield outcome.message
                        elif outcome.unreadable:
                            self._unreadable.append((outcome.source_id, outcome.unreadable))
                finally:
                    for left in fetched:
                        left.discard()
        finally:
            for future in pending:
                future.cancel()
            for future in pending:
                if not future.cancelled() and future.exception() is None:
                    for left in future.result():
                        left.discard()

    def drain_notes(self) -> list[SourceNote]:
        with self._lock:
            notes, self._notes = self._notes, []
            unreadable, self._unreadable = self._unreadable, []
        notes[:0] = self._client.take_server_notes()
        notes += [SourceNote("unreadable_item", source_id, reason)
                  for source_id, reason in unreadable]
        for category, keyword in sorted(self.keyword_renames.items()):
            if category not in self._renames_noted:
                self._renames_noted.add(category)
                notes.append(SourceNote("keyword_renamed", "", f"{category} → {keyword}"))
        return notes

    def close(self) -> None:
        """Stop the download threads; the client is shared: the command closes it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # --- folders

    def _distinguished(self) -> dict[str, str]:
        """Distinguished name -> folder id, for the roots and the roles this mailbox has."""
        names = [ROOT, *ROLE_OF_DISTINGUISHED, ARCHIVE_ROOT]
        ids = "".join(distinguished(name, self._mailbox) for name in names)
        body = self._client.call(self._mailbox, (
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
            f"<m:FolderIds>{ids}</m:FolderIds></m:GetFolder>"))
        found: dict[str, str] = {}
        for name, message in zip(names, response_messages(body), strict=False):
            if message.get("ResponseClass") == "Error":
                # A mailbox without an archive, or without one of the role folders, simply
                # lacks it; any other refusal is the mailbox's.
                if name == ROOT or message.findtext(_m("ResponseCode")) not in MISSING:
                    checked(message)
                continue
            folder_id = message.find(f".//{_t('FolderId')}")
            if folder_id is not None:
                found[name] = folder_id.get("Id", "")
        if ROOT not in found:
            raise EwsFault("ErrorFolderNotFound", f"{self._mailbox}: {ROOT}")
        return found

    def _tree(self, root_name: str, root_id: str, prefix: Path, roles: dict[str, str],
              part: str | None) -> list[Container]:
        """The mail folders below a root, parents before children, each path from the
        root's, under ``prefix``. A folder of another kind is left out with all it holds; a
        hidden mail folder too, noted (``hidden_folder_skipped``), as the Graph source does:
        Outlook does not show it, and Exchange keeps what applications store for
        themselves there."""
        children: dict[str, list[FolderRow]] = {}
        for folder in find_folders(self._client, self._mailbox,
                                   distinguished(root_name, self._mailbox)):
            children.setdefault(folder.parent_id, []).append(folder)
        found: list[Container] = []

        def place(parent_id: str, parent: Path) -> None:
            for folder in children.get(parent_id, ()):
                if not _mail(folder.folder_class):
                    continue
                path = (*parent, folder.name)
                if folder.hidden:
                    self._notes.append(SourceNote("hidden_folder_skipped", "/".join(path)))
                    continue
                found.append(Container(path=path, role=roles.get(folder.folder_id),
                                       native_name=folder.folder_id, count=folder.count,
                                       part=part))
                place(folder.folder_id, path)

        place(root_id, prefix)
        return found

    # --- listings

    def _sync(self, container: Container, state: str | None) -> Listing:
        """Every change since ``state`` (``None``: the whole folder), page by page."""
        found = sync_items(self._client, self._mailbox, container.native_name, state,
                           PROPERTIES)
        changed = {source_id: self._ref(item) for source_id, item in found.changed.items()}
        if found.read_only:
            changed.update(self._refs(sorted(found.read_only)))
        with self._lock:
            for source_id in found.removed:
                self._sizes.pop(source_id, None)
            self._sizes.update((ref.source_id, ref.size) for ref in changed.values())
            if found.removed:
                self._notes.append(SourceNote("removed_at_source", "/".join(container.path),
                                              params={"count": len(found.removed)}))
        return Listing(refs=list(changed.values()), cursor={"sync_state": found.state},
                       complete=state is None)

    def _ref(self, item: Any) -> ItemRef:
        """A listed item's flags, date and size."""
        item_id = item.find(_t("ItemId"))
        flag = extended(item, FLAG_STATUS_TAG)
        flag_status = int(flag) if flag and flag.isdigit() else 0
        categories = [c.text or "" for c in item.iter(_t("String"))]
        size = item.findtext(_t("Size"))
        return ItemRef(
            source_id=item_id.get("Id", "") if item_id is not None else "",
            size=int(size) if size and size.isdigit() else 0,
            flags=self._flags((item.findtext(_t("IsRead")) or "").lower() == "true",
                              flag_status, (item.findtext(_t("IsDraft")) or "").lower()
                              == "true", categories),
            internal_date=instant(item.findtext(_t("DateTimeReceived"))))

    def _refs(self, source_ids: list[str]) -> dict[str, ItemRef]:
        """The flags of items whose read state changed, asked for whole."""
        refs: dict[str, ItemRef] = {}
        for start in range(0, len(source_ids), PAGE):
            body = self._client.call(self._mailbox, self._get_item(
                source_ids[start:start + PAGE], mime=False))
            for message in response_messages(body):
                if message.get("ResponseClass") == "Error":
                    continue
                item = message.find(f"{_m('Items')}/*")
                if item is not None:
                    ref = self._ref(item)
                    refs[ref.source_id] = ref
        return refs

    def _flags(self, is_read: bool, flag_status: int, is_draft: bool,
               categories: list[str]) -> frozenset[str]:
        flags = set()
        if is_read:
            flags.add("\\Seen")
        if flag_status == FLAGGED:
            flags.add("\\Flagged")
        if is_draft:
            flags.add("\\Draft")
        for category in categories:
            keyword = category_keyword(category)
            if keyword != category:
                with self._lock:
                    self.keyword_renames[category] = keyword
            flags.add(keyword)
        return frozenset(flags)

    # --- bodies

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="ews-mail")
        return self._pool

    def _batches(self, source_ids: list[str]) -> Iterator[list[str]]:
        batch: list[str] = []
        size = 0
        for source_id in source_ids:
            listed = self._sizes.get(source_id, 0)
            if batch and (len(batch) >= BATCH_ITEMS or size + listed > BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(source_id)
            size += listed
        if batch:
            yield batch

    def _get_item(self, source_ids: list[str], *, mime: bool) -> str:
        ids = "".join(f"<t:ItemId Id={attribute(source_id)}/>" for source_id in source_ids)
        content = '<t:FieldURI FieldURI="item:MimeContent"/>' if mime else ""
        return ("<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
                f"<t:AdditionalProperties>{content}{PROPERTIES}</t:AdditionalProperties>"
                f"</m:ItemShape><m:ItemIds>{ids}</m:ItemIds></m:GetItem>")

    def _get_items(self, source_ids: list[str]) -> list[_Fetched]:
        """One GetItem with the MIME of each message, read as it arrives."""

        def read(response: requests.Response) -> list[ReadItem]:
            reader = GetItemReader()
            try:
                for chunk in response.iter_content(CHUNK):
                    reader.feed(chunk)
                reader.close()
            except BaseException:
                reader.discard()
                raise
            self._client.note_version(reader.version)
            if reader.fault is not None:
                reader.discard()
                raise reader.fault
            crowded = next((item.error for item in reader.items if item.error in TRANSIENT),
                           None)
            if crowded is not None:
                # Throttled item by item: the request is sent again whole, once allowed.
                reader.discard()
                raise EwsFault(crowded, back_off=reader.back_off)
            return reader.items

        items = self._client.exchange(self._mailbox, self._get_item(source_ids, mime=True),
                                      read)
        return [self._fetched(source_id, item)
                for source_id, item in zip(source_ids, items, strict=False)]

    def _fetched(self, source_id: str, item: ReadItem) -> _Fetched:
        if item.error in GONE:
            item.discard()
            return _Fetched(source_id)
        if item.error:
            item.discard()
            return _Fetched(source_id, unreadable=f"{item.error}: {item.message}".rstrip(": "))
        spool = item.spool
        if spool is None:
            return _Fetched(source_id, unreadable="ErrorNoMimeContent")
        flags = self._flags(item.is_read, item.flag_status, item.is_draft, item.categories)
        message = Message(source_id=source_id, fingerprint=spool.fingerprint, size=spool.size,
                          flags=flags, internal_date=item.received, open=spool.open,
                          read_headers=MessageHeaders.reader(spool.open))
        return _Fetched(source_id, message=message, item=item)


@dataclass
class _Fetched:
    source_id: str
    message: Message | None = None
    unreadable: str = ""
    item: ReadItem | None = None

    def discard(self) -> None:
        if self.item is not None:
            self.item.discard()


def _mail(folder_class: str) -> bool:
    """Whether a folder holds mail: ``IPF.Note`` or a sub-class, or a plain ``t:Folder``
    given no class (as a client that creates one without it leaves it; Outlook shows it
    with the mail folders)."""
    return not folder_class or folder_class == MAIL_CLASS or folder_class.startswith(MAIL_CLASS + ".")
