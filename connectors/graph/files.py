"""Read OneDrive and SharePoint document libraries through Microsoft Graph: drives, delta
listings with folder paths, files streamed from their download URLs and checked against the
hashes Graph gives.

Pages of Microsoft's Graph documentation each behaviour comes from (learn.microsoft.com/graph):

- ``api/drive-get``: ``GET /users/{id}/drive`` is the user's OneDrive.
- ``api/site-getallsites``: ``GET /sites/getAllSites`` enumerates every site of the tenant
  (application permissions only), personal (OneDrive) sites included; ``api/resources/site``:
  ``isPersonalSite`` tells those apart. ``api/site-search``: ``GET /sites?search=*`` is the
  older way, used where ``getAllSites`` is refused. ``api/drive-list``:
  ``GET /sites/{id}/drives`` lists a site's document libraries.
- ``api/driveitem-delta``: pages ending in an ``@odata.deltaLink``, to be called again for
  the changes since; deleted items come with the ``deleted`` facet (and without ``name`` in
  OneDrive for Business); the same item may come more than once, the last one counts;
  ``parentReference`` has no ``path`` in delta, so items are tracked by id; a token the
  service cannot use answers ``410 Gone`` (``resyncChangesApplyDifferences``...), and a full
  enumeration starts again. OneDrive for Business omits ``cTag`` from delta.
- ``api/driveitem-list-children``: ``GET /drives/{id}/items/{id}/children``, paged; read
  under a folder that delta shows renamed or moved, since delta does not list its
  descendants again.
- ``api/resources/driveitem``: ``eTag`` covers metadata and content, ``cTag`` content only;
  ``@microsoft.graph.downloadUrl`` needs no authentication and lasts about an hour.
- ``api/resources/package``: an item with a ``package`` facet (a OneNote notebook) has no
  ``file`` nor ``folder`` facet; its children are the notebook's own parts.
- ``api/resources/hashes``: ``quickXorHash`` (base64; the one OneDrive for work or school
  always gives), ``sha1Hash`` and ``sha256Hash`` (hex).
- ``api/resources/filesysteminfo``: ``fileSystemInfo.lastModifiedDateTime`` is the time the
  file was last changed on the user's device, the one their file manager showed; the item's
  own ``lastModifiedDateTime`` is when the service got it.

A document's ``version`` is the item's ``eTag``, not its ``cTag``: delta in OneDrive for
Business does not give the ``cTag``, and a renamed or moved file must reach the target too,
which only the ``eTag`` tells (the engine then copies it again under its new name).

What an expired download URL answers the documentation does not say (SharePoint answers 401
in field reports); any refusal of the download URL is taken as expiry: the item is read again
for a fresh URL, once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import requests

from connectors.base import (
    ConnectError,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    Path,
    SourceNote,
)
from connectors.graph.quickxor import QuickXorHash
from connectors.graph.session import GraphError, GraphSession, graph_instant
from connectors.graph.sharing import drive_grants
from connectors.spool import Spool
from mappings.sharing import Grant

WORKLOAD = "files"
ONEDRIVE_PATH: Path = ("OneDrive",)
SITES_ROOT = "Sites"
DELTA_SELECT = ("id,name,size,eTag,cTag,file,folder,package,root,deleted,parentReference,"
                "fileSystemInfo")
ITEM_SELECT = ("id,name,size,eTag,file,fileSystemInfo,parentReference,"
               "@microsoft.graph.downloadUrl")
PARENT_SELECT = "id,name,parentReference,root,folder,package"
DELTA_PAGE_SIZE = 500
CHILDREN_PAGE = 1000
EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
"""Answers of a download URL that mean "ask Graph for a fresh one"."""
DOWNLOAD_ATTEMPTS = 3
"""A download whose connection drops is started again, from the same URL."""
MAX_DEPTH = 400
"""Guards the walk up a folder chain against a cycle in what the service answers."""


@dataclass(frozen=True)
class _Node:
    """A folder-like item of a drive, as far as paths need it."""

    name: str
    parent_id: str | None
    kind: str
    """``root``, ``folder`` or ``package``."""


class GraphFileSource:
    """The OneDrive of one user (``document_containers``), and any drive given as a container
    (a document library: ``connectors.graph.spaces``), as a ``DocumentSource`` for
    ``files``.

    ``user`` is the id or user principal name. Notes (``drain_notes``): ``not_a_file`` (a
    OneNote notebook or another item that is not a file; subject: its path),
    ``hash_mismatch`` and ``unreadable_item`` (subject: the item id)."""

    def __init__(self, session: GraphSession, user: str, *,
                 page_size: int = DELTA_PAGE_SIZE) -> None:
        self._session = session
        self._user = quote(user, safe="@")
        self._page_size = page_size
        self._trees: dict[str, dict[str, _Node]] = {}
        self._notes: list[SourceNote] = []

    # --- DocumentSource

    def document_containers(self, workload: str) -> list[Container]:
        if workload != WORKLOAD:
            return []
        try:
            drive = self._session.get_json(f"users/{self._user}/drive",
                                           {"$select": "id,name,driveType"})
        except GraphError as error:
            if error.status == 404:
                return []  # no OneDrive was ever provisioned for this user
            raise
        return [Container(path=ONEDRIVE_PATH, native_name=str(drive["id"]))]

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        link = (cursor or {}).get("delta_link")
        if link:
            folders = (cursor or {}).get("folders") or {}
            try:
                return self._round(container, str(link), complete=False, before=folders)
            except GraphError as error:
                if error.status != 410:
                    raise
        return self._round(container, None, complete=True, before={})

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        """One file at a time, each spooled to disk past a few MB while it is hashed."""
        for ref in {ref.source_id: ref for ref in refs}.values():
            document = self._fetch(container, ref)
            if document is not None:
                yield document

    def sharing(self, container: Container) -> Iterator[Grant]:
        """Who may see each item of the drive (``connectors.graph.sharing``)."""
        return drive_grants(self._session, container)

    def close(self) -> None:
        """Nothing of its own to release: the Graph session is shared and closed by its
        owner."""

    def drain_notes(self) -> list[SourceNote]:
        notes, self._notes = self._notes, []
        return notes

    # --- listings

    def _round(self, container: Container, link: str | None, *, complete: bool,
               before: dict[str, list[str | None]]) -> DocumentListing:
        """One delta round. ``before`` is the drive's folders as the last round left them
        (id -> [name, parent id, kind]), to tell which folders were renamed or moved."""
        drive = container.native_name
        if link is None:
            pages = self._session.pages(f"drives/{quote(drive, safe='!')}/root/delta",
                                        {"$select": DELTA_SELECT, "$top": self._page_size})
        else:
            pages = self._session.pages(link)
        latest: dict[str, dict[str, Any]] = {}
        for item in pages.values():
            latest.pop(str(item["id"]), None)
            latest[str(item["id"])] = item
        if pages.delta_link is None:
            raise GraphError(502, "NoDeltaLink", "the delta round ended without a deltaLink",
                             link or drive)
        remembered = {item_id: _Node(str(name), parent, str(kind))
                      for item_id, (name, parent, kind) in before.items()}
        tree = self._trees.setdefault(drive, {})
        if not tree:
            tree.update(remembered)
        for item_id, item in latest.items():
            node = _node_of(item)
            if "deleted" in item:
                tree.pop(item_id, None)
            elif node is not None:
                tree[item_id] = node
        refs: list[DocumentRef] = []
        removed: list[str] = []
        for item_id, item in latest.items():
            if "deleted" in item:
                if "folder" not in item and "package" not in item:
                    removed.append(item_id)
                continue
            if "root" in item or "folder" in item:
                continue
            folder = self._folder_path(drive, _parent_id(item))
            if folder is None:
                continue  # a part of a OneNote notebook: the notebook itself is noted
            name = str(item.get("name", ""))
            if "file" not in item:
                kind = (item.get("package") or {}).get("type", "package") \
                    if "package" in item else "no file facet"
                self._notes.append(SourceNote("not_a_file",
                                              "/".join((*container.path, *folder, name)),
                                              str(kind)))
                continue
            refs.append(_ref(item, folder))
        relocated = self._relocated(drive, remembered, latest, {ref.source_id for ref in refs})
        folders = {item_id: [node.name, node.parent_id, node.kind]
                   for item_id, node in tree.items()}
        return DocumentListing(refs=refs,
                               cursor={"delta_link": pages.delta_link, "folders": folders},
                               complete=complete, removed=removed, relocated=relocated)

    def _relocated(self, drive: str, remembered: dict[str, _Node],
                   latest: dict[str, dict[str, Any]], listed: set[str]) -> list[DocumentRef]:
        """The files under each folder this round shows renamed or moved: delta lists the
        folder alone, its descendants keep their eTag. ``remembered`` is the drive's folders
        as the last round left them."""
        moved = []
        for item_id, item in latest.items():
            if item_id not in remembered or "deleted" in item or "folder" not in item:
                continue
            old_path = _path_of(item_id, remembered.get, drive)
            new_path = self._folder_path(drive, item_id)
            if new_path is not None and old_path is not None and old_path != new_path:
                moved.append((item_id, new_path))
        found: dict[str, DocumentRef] = {}
        walked: list[Path] = []
        # Parents first: a folder moved with its moved parent is walked once, with it.
        for folder_id, path in sorted(moved, key=lambda pair: len(pair[1])):
            if any(path[:len(done)] == done for done in walked):
                continue
            walked.append(path)
            for ref in self._files_under(drive, folder_id, path):
                if ref.source_id not in listed:
                    found[ref.source_id] = ref
        return list(found.values())

    def _files_under(self, drive: str, folder_id: str, path: Path) -> Iterator[DocumentRef]:
        """Every file below a folder, with its path, through the children lists."""
        pending = [(folder_id, path)]
        while pending:
            current, where = pending.pop()
            children = self._session.pages(
                f"drives/{quote(drive, safe='!')}/items/{quote(current)}/children",
                {"$select": DELTA_SELECT, "$top": CHILDREN_PAGE})
            for child in children.values():
                if "folder" in child:
                    pending.append((str(child["id"]), (*where, str(child.get("name", "")))))
                elif "file" in child:
                    yield _ref(child, where)

    def _folder_path(self, drive: str, parent_id: str | None) -> Path | None:
        """The path of a folder under the drive's root; ``None`` inside a package or under a
        folder deleted since (its delta entry comes in a later round)."""
        tree = self._trees.setdefault(drive, {})
        return _path_of(parent_id,
                        lambda item_id: tree.get(item_id) or self._read_parent(drive, item_id),
                        drive)

    def _read_parent(self, drive: str, item_id: str) -> _Node | None:
        """A folder a delta round did not list (a later round lists only what changed, and
        its parents only when the service adds them): read by id."""
        try:
            item = self._session.get_json(f"drives/{quote(drive, safe='!')}/items/"
                                          f"{quote(item_id)}", {"$select": PARENT_SELECT})
        except GraphError as error:
            if error.status == 404:
                return None
            raise
        node = _node_of(item) or _Node(str(item.get("name", "")), _parent_id(item), "folder")
        self._trees.setdefault(drive, {})[item_id] = node
        return node

    # --- content

    def _fetch(self, container: Container, ref: DocumentRef) -> Document | None:
        drive = container.native_name
        url = f"drives/{quote(drive, safe='!')}/items/{quote(ref.source_id)}"
        refreshed = False
        dropped = 0
        while True:
            try:
                item = self._session.get_json(url, {"$select": ITEM_SELECT})
            except GraphError as error:
                if error.status == 404:
                    return None  # gone since the listing: the engine notices
                return self._unreadable(ref, f"HTTP {error.status} {error.graph_code}")
            if "file" not in item:
                return None
            download = item.get("@microsoft.graph.downloadUrl")
            if not download:
                return self._unreadable(ref, "Graph gave no download URL")
            expected = _expected_hashes(item)
            try:
                spool, found = _download(self._session, str(download), expected)
            except (GraphError, ConnectError) as error:
                if not _expired(error) or refreshed:
                    return self._unreadable(ref, str(error))
                refreshed = True
                continue
            except requests.RequestException as error:
                dropped += 1
                if dropped >= DOWNLOAD_ATTEMPTS:
                    return self._unreadable(ref, str(error))
                continue
            break
        wrong = [f"{name}: Graph says {expected[name]}, content hashes to {found[name]}"
                 for name in expected if found[name].lower() != expected[name].lower()]
        if wrong:
            spool.close()
            self._notes.append(SourceNote("hash_mismatch", ref.source_id, "; ".join(wrong)))
            return None
        name = ref.name or str(item.get("name", ""))
        folder = ref.folder if ref.name else self._folder_path(drive, _parent_id(item)) or ()
        return Document(source_id=ref.source_id, version=ref.version or str(item.get("eTag", "")),
                        name=name, folder=folder, fingerprint=spool.fingerprint,
                        size=spool.size, modified=_modified(item), open=spool.open,
                        source_hashes=dict(expected))

    def _unreadable(self, ref: DocumentRef, reason: str) -> None:
        self._notes.append(SourceNote("unreadable_item", ref.source_id, reason))


def site_drives(session: GraphSession) -> list[Container]:
    """The document libraries of every SharePoint site of the tenant (personal OneDrive sites
    left out: they come with their users), as containers ``("Sites", site, library)``."""
    return [container for container, _ in site_drives_named(session)]


def site_drives_named(session: GraphSession) -> list[tuple[Container, set[str]]]:
    """``site_drives``, each with the names its site answers to (display name, short name,
    id), case-folded."""
    try:
        sites = list(session.pages("sites/getAllSites",
                                   {"$select": "id,displayName,name,isPersonalSite"}).values())
    except GraphError as error:
        if error.status not in (400, 404, 501):
            raise
        sites = list(session.pages("sites", {"search": "*"}).values())
    found: list[tuple[Container, set[str]]] = []
    for site in sites:
        if site.get("isPersonalSite"):
            continue
        site_name = str(site.get("displayName") or site.get("name") or site["id"])
        names = {str(site.get(key, "")).casefold() for key in ("displayName", "name", "id")}
        drives = session.pages(f"sites/{quote(str(site['id']), safe=',')}/drives",
                               {"$select": "id,name,driveType"})
        for drive in drives.values():
            if drive.get("driveType", "documentLibrary") != "documentLibrary":
                continue
            found.append((Container(path=(SITES_ROOT, site_name, str(drive["name"])),
                                    native_name=str(drive["id"])), names - {""}))
    return found


def _ref(item: dict[str, Any], folder: Path) -> DocumentRef:
    return DocumentRef(source_id=str(item["id"]), version=str(item.get("eTag", "")),
                       size=int(item.get("size") or 0), name=str(item.get("name", "")),
                       folder=folder)


def _path_of(folder_id: str | None, node_of: Callable[[str], _Node | None],
             drive: str) -> Path | None:
    """A folder's path under the drive's root, walking up through ``node_of``; ``None`` when
    a folder of the chain is unknown or is a package."""
    names: list[str] = []
    current = folder_id
    for _ in range(MAX_DEPTH):
        if current is None:
            return tuple(reversed(names))
        node = node_of(current)
        if node is None or node.kind == "package":
            return None
        if node.kind == "root":
            return tuple(reversed(names))
        names.append(node.name)
        current = node.parent_id
    raise GraphError(502, "FolderCycle", "the folder chain does not reach the root", drive)


def _node_of(item: dict[str, Any]) -> _Node | None:
    if "root" in item:
        return _Node("", None, "root")
    if "package" in item:
        return _Node(str(item.get("name", "")), _parent_id(item), "package")
    if "folder" in item:
        return _Node(str(item.get("name", "")), _parent_id(item), "folder")
    return None


def _parent_id(item: dict[str, Any]) -> str | None:
    parent = (item.get("parentReference") or {}).get("id")
    return str(parent) if parent else None


def _expected_hashes(item: dict[str, Any]) -> dict[str, str]:
    hashes = ((item.get("file") or {}).get("hashes")) or {}
    return {name: str(hashes[name]) for name in ("quickXorHash", "sha1Hash", "sha256Hash")
            if hashes.get(name)}


def _download(session: GraphSession, url: str,
              expected: dict[str, str]) -> tuple[Spool, dict[str, str]]:
    """The content spooled, and the hashes named in ``expected`` as Graph writes them."""
    quick_xor = QuickXorHash() if "quickXorHash" in expected else None
    sha1 = hashlib.sha1() if "sha1Hash" in expected else None
    spool = Spool()
    try:
        with session.stream(url) as chunks:
            for chunk in chunks:
                spool.write(chunk)
                if quick_xor is not None:
                    quick_xor.update(chunk)
                if sha1 is not None:
                    sha1.update(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seal()
    found: dict[str, str] = {"sha256Hash": spool.fingerprint.removeprefix("sha256:")}
    if quick_xor is not None:
        found["quickXorHash"] = quick_xor.b64digest()
    if sha1 is not None:
        found["sha1Hash"] = sha1.hexdigest()
    return spool, found


def _expired(error: GraphError | ConnectError) -> bool:
    if isinstance(error, GraphError):
        return error.status in EXPIRED_STATUSES
    # The session answers a 401 on a request it sent without a token as a refused login.
    return error.code == "auth_failed"


def _modified(item: dict[str, Any]) -> datetime | None:
    """When the user last saved the file on a device (``fileSystemInfo``), not when it
    reached the service."""
    return graph_instant((item.get("fileSystemInfo") or {}).get("lastModifiedDateTime"))
