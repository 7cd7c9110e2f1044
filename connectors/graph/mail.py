"""Read a Microsoft 365 mailbox through Microsoft Graph: folders, delta listings, MIME bodies.

Pages of Microsoft's Graph documentation each behaviour comes from (learn.microsoft.com/graph):

- ``api/user-list-mailfolders``, ``api/mailfolder-list-childfolders``: the folders under the
  root, then each folder's ``childFolders``; hidden folders only with
  ``includeHiddenFolders=true``, told apart by ``isHidden``; search folders are listed too.
- ``api/resources/mailfolder``, "Well-known folder names": ``/mailFolders/inbox`` and the
  like address a folder whatever the mailbox's language.
- ``api/resources/mailsearchfolder``: a search folder is virtual, it shows messages that live
  in other folders. Copying it would duplicate them, so it is left out.
- ``api/message-delta``, ``delta-query-messages``: a per-folder round of pages ending in an
  ``@odata.deltaLink``; a later round from that link lists added and changed messages and
  ``@removed`` entries; ``$select`` and ``$expand`` are given once, in the first request;
  ``Prefer: odata.maxpagesize`` sets the page size.
- ``delta-query-overview``, "Synchronization reset": a delta token the service no longer
  knows answers 410 Gone; the client starts a full round again.
- ``outlook-immutable-id``: with ``Prefer: IdType="ImmutableId"`` on every request, a message
  keeps its id when it moves to another folder of the mailbox, so a source id stored in the
  ledger stays valid across passes and across a delta reset.
- ``outlook-get-mime-message``: ``GET /users/{id}/messages/{id}/$value`` is the MIME.
- ``api/resources/singlevaluelegacyextendedproperty``, ``outlook-extended-properties-overview``:
  MAPI properties through ``singleValueExtendedProperties``. The listing asks for
  ``PidTagMessageSize`` (``Integer 0x0E08``, MS-OXPROPS 2.797), Exchange's size of the item
  in its store: close to the MIME size, not equal to it. It is what a listing says (plan,
  size limits); the fetched message carries the exact size of its bytes.

Hidden folders are left out by default: Outlook and Outlook on the web do not show them, and
in Exchange Online they hold what applications keep for themselves (sync state, Skype or
Teams data...), not the user's mail. Their paths are kept in ``hidden_folders`` so the plan
can name them; ``include_hidden=True`` migrates them too.

What the engine may read besides the ``MailSource`` protocol:

- ``hidden_folders`` and ``search_folders``: paths left out by ``containers()``;
- ``removed``: ids a delta round reported ``@removed`` in the last ``list_changes`` call;
- ``unreadable``: ``(source_id, reason)`` of messages whose MIME Graph would not give;
- ``keyword_renames``: category -> IMAP keyword, for every category that had to change.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from connectors.base import (
    Container,
    ItemRef,
    Listing,
    Message,
    Path,
    SourceNote,
)
from connectors.graph.session import GraphError, GraphSession, delta_round, graph_instant
from connectors.headers import MessageHeaders
from connectors.spool import Spool

ROLE_OF_WELL_KNOWN = {"inbox": "inbox", "sentitems": "sent", "drafts": "drafts",
                      "deleteditems": "trash", "junkemail": "junk", "archive": "archive"}
"""Well-known folder names (mailfolder resource page) -> bascule roles."""
SIZE_PROPERTY = "Integer 0x0E08"
"""PidTagMessageSize as Graph names a MAPI property: type, then property tag."""
MESSAGE_SELECT = "isRead,isDraft,flag,categories,receivedDateTime"
SIZE_EXPAND = f"singleValueExtendedProperties($filter=id eq '{SIZE_PROPERTY}')"
IMMUTABLE_ID = 'IdType="ImmutableId"'
FOLDER_SELECT = "id,displayName,childFolderCount,isHidden"
DELTA_PAGE_SIZE = 200
"""Messages per delta page asked for: fewer round trips (Graph's default is 10)."""
STALE_DELTA_CODES = frozenset({"SyncStateNotFound", "SyncStateInvalid", "ResyncRequired"})
GONE_CODES = frozenset({"ErrorItemNotFound", "ItemNotFound"})
DOWNLOAD_ATTEMPTS = 3
"""A body whose connection drops mid-way is downloaded again from the start."""
ATOM_SPECIALS = frozenset('(){ %*"\\]')
"""RFC 3501 atom-specials beside controls: characters an IMAP keyword may not hold."""
KEYWORD_REPLACEMENT = "_"


def check_access(session: GraphSession, user: str) -> None:
    """Sign in and read one folder of ``user``'s mailbox, so that a wrong tenant, a refused
    secret or certificate (``GraphAuthError`` with its AADSTS code) or a missing admin consent
    (``GraphAuthError`` with Graph's code) stops a run before any item moves. A mailbox that
    does not exist raises ``GraphError`` (``ErrorInvalidUser``)."""
    session.get_json(f"users/{quote(user, safe='@')}/mailFolders/inbox", {"$select": "id"},
                     headers={"Prefer": IMMUTABLE_ID})


class GraphMailSource:
    """The mail of one Graph mailbox (a user or a shared mailbox), as a ``MailSource``.

    ``user`` is the id or user principal name, written the same way in every URL: the
    session's per-mailbox concurrency cap counts requests by that form. ``workers`` requests
    go at once, for the folder walk and for bodies (no more than the session's per-mailbox cap
    is useful)."""


    def __init__(self, session: GraphSession, user: str, *, include_hidden: bool = False,
                 page_size: int = DELTA_PAGE_SIZE, workers: int = 4) -> None:
        self._session = session
        self._user = quote(user, safe="@")
        self._include_hidden = include_hidden
        self._page_size = page_size
        self._workers = max(1, workers)
        self._known: dict[str, ItemRef] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.hidden_folders: list[Path] = []
        self.search_folders: list[Path] = []
        self.removed: list[str] = []
        self.unreadable: list[tuple[str, str]] = []
        self.keyword_renames: dict[str, str] = {}
        self._notes: list[SourceNote] = []
        self._renames_noted: set[str] = set()

    # --- MailSource

    def containers(self) -> list[Container]:
        self.hidden_folders, self.search_folders = [], []
        pool = self._executor()
        # The folder tree, the well-known names and the archive question do not depend on one
        # another: asked together, a mailbox's walk costs about the depth of its tree in round
        # trips instead of one per folder and per well-known name. The session keeps them
        # within the mailbox's concurrency limit.
        tree = pool.submit(self._children, None)
        archive = pool.submit(self._archive_notes)
        roles = {name: pool.submit(self._well_known_id, name) for name in ROLE_OF_WELL_KNOWN}
        children = self._folder_tree(pool, tree)
        role_of = {folder_id: ROLE_OF_WELL_KNOWN[name]
                   for name, future in roles.items() if (folder_id := future.result())}
        found: list[Container] = []
        self._place(children, None, (), role_of, found)
        self._notes += [SourceNote("hidden_folder_skipped", "/".join(p))
                        for p in self.hidden_folders]
        self._notes += [SourceNote("search_folder_skipped", "/".join(p))
                        for p in self.search_folders]
        self._notes += archive.result()
        return found

    def _archive_notes(self) -> list[SourceNote]:
        """Whether the user has an In-Place Archive, which Graph v1.0 cannot read
        (outlook-mailbox-type-support page). Only the beta ``settings/exchange`` endpoint
        tells (exchangesettings-get page); when it cannot be asked, say so too."""
        url = self._session.graph_url.rsplit("/", 1)[0] + f"/beta/users/{self._user}" \
            "/settings/exchange"
        try:
            settings = self._session.get_json(url)
        except GraphError as error:
            return [SourceNote("in_place_archive_unknown", self._user, error.graph_code)]
        archive = settings.get("inPlaceArchiveMailboxId")
        return [SourceNote("in_place_archive", self._user, str(archive))] if archive else []

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        for source_id, reason in self.unreadable:
            notes.append(SourceNote("unreadable_item", source_id, reason))
        self.unreadable = []
        for category, keyword in sorted(self.keyword_renames.items()):
            if category not in self._renames_noted:
                self._renames_noted.add(category)
                notes.append(SourceNote("keyword_renamed", "", f"{category} → {keyword}"))
        return notes

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        link = (cursor or {}).get("delta_link")
        if link:
            try:
                return self._round(container, str(link), complete=False)
            except GraphError as error:
                if not _stale_delta(error):
                    raise
        # No cursor, or one Graph forgot: a full round. Ids are immutable, so the ids stored
        # before stay valid and the epoch did not change (reset stays false).
        return self._round(container, None, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        """Bodies are downloaded ``workers`` at a time and yielded in the order asked."""
        pool = self._executor()
        pending: deque[tuple[str, Future[_Download]]] = deque()
        ids = iter(dict.fromkeys(source_ids))
        try:
            while True:
                while len(pending) < 2 * self._workers:
                    source_id = next(ids, None)
                    if source_id is None:
                        break
                    pending.append((source_id, pool.submit(self._download, source_id,
                                                           self._known.get(source_id))))
                if not pending:
                    return
                source_id, future = pending.popleft()
                outcome = future.result()
                if outcome.message is not None:
                    yield outcome.message
                elif outcome.unreadable:
                    self.unreadable.append((source_id, outcome.unreadable))
        finally:
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                if not future.cancelled() and future.exception() is None:
                    future.result().discard()

    def close(self) -> None:
        """Stop the download threads. The session is shared with other workloads: its owner
        closes it."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    # --- folders

    def _well_known_id(self, name: str) -> str | None:
        """The id of a well-known folder, ``None`` when the mailbox has none (e.g. no
        archive folder: the role is simply absent)."""
        try:
            folder = self._session.get_json(f"users/{self._user}/mailFolders/{name}",
                                            {"$select": "id"})
        except GraphError as error:
            if error.status == 404:
                return None
            raise
        return str(folder["id"])

    def _children(self, folder_id: str | None) -> list[dict[str, Any]]:
        """The folders under ``folder_id`` (``None``: the top of the mailbox)."""
        url = f"users/{self._user}/mailFolders"
        if folder_id is not None:
            url += f"/{quote(folder_id, safe='=')}/childFolders"
        params = {"includeHiddenFolders": "true", "$select": FOLDER_SELECT}
        return list(self._session.pages(url, params).values())

    def _folder_tree(self, pool: ThreadPoolExecutor, top: Future[list[dict[str, Any]]]
                     ) -> dict[str | None, list[dict[str, Any]]]:
        """Folder id -> its children, every folder's children listed as soon as the folder
        is known, siblings' at once."""
        children: dict[str | None, list[dict[str, Any]]] = {}
        listing: dict[Future[list[dict[str, Any]]], str | None] = {top: None}
        try:
            while listing:
                done, _ = wait(listing, return_when=FIRST_COMPLETED)
                for future in done:
                    parent = listing.pop(future)
                    children[parent] = future.result()
                    for folder in children[parent]:
                        if not self._left_out(folder) and folder.get("childFolderCount", 1):
                            folder_id = str(folder["id"])
                            listing[pool.submit(self._children, folder_id)] = folder_id
        finally:
            for future in listing:
                future.cancel()
        return children

    def _left_out(self, folder: dict[str, Any]) -> bool:
        return _search_folder(folder) or bool(folder.get("isHidden") and not self._include_hidden)

    def _place(self, children: dict[str | None, list[dict[str, Any]]], parent_id: str | None,
               parent: Path, roles: dict[str, str], found: list[Container]) -> None:
        """The folders under ``parent_id``, each followed by its own, as the tree walks."""
        for folder in children.get(parent_id, ()):
            path = (*parent, str(folder["displayName"]))
            if _search_folder(folder):
                self.search_folders.append(path)
                continue
            if self._left_out(folder):
                self.hidden_folders.append(path)
                continue
            folder_id = str(folder["id"])
            found.append(Container(path=path, role=roles.get(folder_id), native_name=folder_id))
            self._place(children, folder_id, path, roles, found)

    # --- listings

    def _headers(self) -> dict[str, str]:
        # Two preferences in one Prefer header, comma-separated: the same as two header lines
        # (RFC 7240 section 2; RFC 9110 section 5.3).
        return {"Prefer": f"odata.maxpagesize={self._page_size}, {IMMUTABLE_ID}"}

    def _round(self, container: Container, link: str | None, *, complete: bool) -> Listing:
        if link is None:
            folder = quote(container.native_name, safe="=")
            pages = self._session.pages(
                f"users/{self._user}/mailFolders/{folder}/messages/delta",
                {"$select": MESSAGE_SELECT, "$expand": SIZE_EXPAND}, self._headers())
        else:
            pages = self._session.pages(link, headers=self._headers())
        changed, removed, next_link = delta_round(pages, self._ref,
                                                  link or container.native_name)
        for source_id in removed:
            self._known.pop(source_id, None)
        self._known.update(changed)
        self.removed = list(removed)
        if removed:
            self._notes.append(SourceNote("removed_at_source", "/".join(container.path),
                                          params={"count": len(removed)}))
        return Listing(refs=list(changed.values()), cursor={"delta_link": next_link},
                       complete=complete)

    def _ref(self, item: dict[str, Any]) -> ItemRef:
        """A message's flags, date and size as a listing or a GET gives them."""
        flags = set()
        if item.get("isRead"):
            flags.add("\\Seen")
        if (item.get("flag") or {}).get("flagStatus") == "flagged":
            flags.add("\\Flagged")
        if item.get("isDraft"):
            flags.add("\\Draft")
        for category in item.get("categories") or ():
            keyword = category_keyword(str(category))
            if keyword != category:
                self.keyword_renames[str(category)] = keyword
            flags.add(keyword)
        size = 0
        for prop in item.get("singleValueExtendedProperties") or ():
            if str(prop.get("id", "")).lower() == SIZE_PROPERTY.lower():
                try:
                    size = int(prop.get("value") or 0)
                except ValueError:
                    size = 0
        return ItemRef(source_id=str(item["id"]), size=size, flags=frozenset(flags),
                       internal_date=graph_instant(item.get("receivedDateTime")))

    # --- bodies

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="graph-mail")
        return self._pool

    def _download(self, source_id: str, ref: ItemRef | None) -> _Download:
        """One message: its metadata if the listing did not give it, then its MIME."""
        message_url = f"users/{self._user}/messages/{quote(source_id, safe='=')}"
        try:
            if ref is None:
                ref = self._ref(self._session.get_json(
                    message_url, {"$select": MESSAGE_SELECT, "$expand": SIZE_EXPAND},
                    headers={"Prefer": IMMUTABLE_ID}))
            spool = self._spool(f"{message_url}/$value")
        except GraphError as error:
            if error.status == 404 or error.graph_code in GONE_CODES:
                return _Download()
            return _Download(unreadable=f"HTTP {error.status} {error.graph_code}: "
                                        f"{error.message}")
        message = Message(source_id=source_id, fingerprint=spool.fingerprint, size=spool.size,
                          flags=ref.flags, internal_date=ref.internal_date, open=spool.open,
                          read_headers=MessageHeaders.reader(spool.open))
        return _Download(message, spool=spool)

    def _spool(self, url: str) -> Spool:
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            spool = Spool()
            try:
                with self._session.stream(url, headers={"Prefer": IMMUTABLE_ID}) as chunks:
                    for chunk in chunks:
                        spool.write(chunk)
                return spool.seal()
            except requests.RequestException:
                spool.close()
                if attempt == DOWNLOAD_ATTEMPTS:
                    raise
            except BaseException:
                spool.close()
                raise
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class _Download:
    """A fetched message, or why there is none (``unreadable`` empty: the message is gone)."""

    message: Message | None = None
    unreadable: str = ""
    spool: Spool | None = None

    def discard(self) -> None:
        """Release a body downloaded ahead that the caller no longer wants."""
        if self.spool is not None:
            self.spool.close()


def _search_folder(folder: dict[str, Any]) -> bool:
    return str(folder.get("@odata.type", "")).endswith("mailSearchFolder")


def _stale_delta(error: GraphError) -> bool:
    return error.status == 410 or error.graph_code in STALE_DELTA_CODES


def category_keyword(category: str) -> str:
    """An Outlook category as an IMAP keyword (RFC 3501: an atom of printable ASCII).

    Accents are taken off (``Catégorie bleue`` -> ``Categorie_bleue``), so users still read
    their category; spaces, atom-specials and other symbols become ``_``. A category whose
    letters are not all Latin (``会議``, ``Ωμέγα 2``), or with no letter or digit at all,
    becomes ``category_`` and a short hash of its name: a row of ``_`` would tell the user
    nothing, the hash is stable from one pass to the next and distinct per category. Every
    renamed category is in ``GraphMailSource.keyword_renames`` for the report."""
    folded = unicodedata.normalize("NFKD", category)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    keyword = "".join(c if 0x20 < ord(c) < 0x7F and c not in ATOM_SPECIALS
                      else KEYWORD_REPLACEMENT for c in folded)
    unreadable = any(c.isalpha() and not c.isascii() for c in folded)
    if unreadable or not re.search(r"[A-Za-z0-9]", keyword):
        digest = hashlib.sha256(category.encode("utf-8")).hexdigest()[:8]
        keyword = f"category_{digest}"
    return keyword
