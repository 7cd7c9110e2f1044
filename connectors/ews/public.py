"""Exchange public folders as spaces (the ``public:`` lines of the users table,
``mappings.spaces``): each line's folder and every folder below it, its mail read as a
mailbox's (``connectors.ews.mail``), its calendars and contacts as a mailbox's
(``connectors.ews.pim``), with listings that need no synchronisation state.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer) each
behaviour comes from:

- ``exchange-web-services/public-folder-access-with-ews-in-exchange``: FindFolder,
  GetFolder, FindItem and GetItem work on public folders; SyncFolderHierarchy and
  SyncFolderItems do not, and FindFolder takes only a ``Shallow`` traversal there
  (``web-service-reference/syncfolderitems-operation``, ``findfolder-operation``).
- ``web-service-reference/distinguishedfolderid``: ``publicfoldersroot`` is the top of
  the tree, named without a ``Mailbox``; its children are the folders users see.
- ``web-service-reference/finditem-operation``, ``indexedpageitemview``: a folder's items
  page by page, from ``Offset`` until ``IncludesLastItemInRange``; ``IndexedPagingOffset``
  is where the next page starts. Mail is asked in ``DateTimeReceived`` order, oldest first
  (``sortorder``), so that a message arriving during a listing comes after the pages read.
- ``web-service-reference/itemid``: each item's ``ChangeKey`` changes with the item. With no
  synchronisation state, each pass lists a folder whole and its cursor keeps every item's
  ChangeKey (``{"versions": {id: change key}}``): what differs is what changed, what is
  missing went, as the Graph calendar listing does.
- ``exchange-web-services/public-folder-access-with-ews-in-exchange``: public folders belong
  to no user's mailbox, their access is each folder's client permissions, and Exchange 2013
  and later reach the tree through the caller's own mailbox (its default public folder
  hierarchy mailbox). The reference names no impersonation for them: the service account
  reads them as itself, without ``ExchangeImpersonation`` (its ApplicationImpersonation
  right gives nothing here), so it needs a mailbox and read access to each folder copied
  (``Add-PublicFolderClientPermission ... -AccessRights Reviewer``).
- ``exchange-web-services/how-to-route-public-folder-hierarchy-requests`` and
  ``...-content-requests``: where several public folder mailboxes sit on several servers,
  ``X-AnchorMailbox`` and ``X-PublicFolderMailbox`` route a request to the one holding the
  folder, values read through Autodiscover. Not sent: the service endpoint the batch names
  proxies the request itself, which costs a hop, not an answer.

Every line of the table is resolved together, once per command (``PublicTree``, shared
through the connector's context), so that two lines copying one folder are told apart from
one line alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.base import (
    BasculeError,
    Container,
    DocumentListing,
    DocumentRef,
    ItemRef,
    Listing,
    Path,
    SourceNote,
)
from connectors.ews.client import (
    EwsClient,
    attribute,
    checked,
    response_messages,
)
from connectors.ews.folders import find_folders
from connectors.ews.folders import messages as _m
from connectors.ews.folders import types as _t
from connectors.ews.mail import PROPERTIES, EwsMailSource, _mail
from connectors.ews.pim import FOLDER_CLASSES, EwsPimSource
from mappings.spaces import public_folder

PUBLIC_PART = "public"
"""``Container.part`` of a public folder: the reports count them apart."""
AS_ITSELF = ""
"""The mailbox a request names to be sent as the signed-in account itself."""
ROOT = '<t:DistinguishedFolderId Id="publicfoldersroot"/>'
ITEM_PAGE = 500
"""Items per FindItem page (Exchange's EWSFindCountLimit allows 1000 by default)."""
OLDEST_FIRST = ('<m:SortOrder><t:FieldOrder Order="Ascending">'
                '<t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder></m:SortOrder>')


class PublicFolderNotResolved(BasculeError):
    """A public folder line that cannot be copied. Codes: ``public_folder_not_found``
    (``path``; ``missing``: the first name nothing answers to; ``names``: the folders there),
    ``public_folder_overlap`` (``folder``, ``other``: the other line copying it)."""


@dataclass(frozen=True)
class PublicFolder:
    """One folder of a line's tree: its path from the line's folder (whose name comes
    first), its class (``""`` when it names none) and its count of items."""

    folder_id: str
    path: Path
    folder_class: str
    count: int | None


def check_public(client: EwsClient) -> None:
    """Read the top of the public folder tree as the signed-in account: a refused login
    raises ``ConnectError`` before anything moves."""
    body = client.call(AS_ITSELF, "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly"
                                  f"</t:BaseShape></m:FolderShape><m:FolderIds>{ROOT}"
                                  "</m:FolderIds></m:GetFolder>")
    for message in response_messages(body):
        checked(message)


class PublicTree:
    """Every ``public:`` line of ``sources`` (the users table's source column) resolved on
    first use: each line's folders, or why it cannot be copied."""

    def __init__(self, client: EwsClient, sources: list[str]) -> None:
        self._client = client
        self._sources = [s for s in sources if public_folder(s) is not None]
        self._resolved: dict[str, list[PublicFolder] | PublicFolderNotResolved] | None = None
        self._children: dict[str, list[PublicFolder]] = {}
        self._lock = threading.Lock()

    def folders(self, source: str) -> list[PublicFolder]:
        """The folders a line copies, its own first, parents before children; raises
        ``PublicFolderNotResolved``."""
        key = source.strip().casefold()
        with self._lock:
            if self._resolved is None:
                self._resolved = self._resolve(self._sources)
            found = self._resolved.get(key)
            if found is None:  # a line not in the table this tree was made from
                found = self._resolve([source])[key]
        if isinstance(found, PublicFolderNotResolved):
            raise found
        return found

    def _resolve(self, sources: list[str]
                 ) -> dict[str, list[PublicFolder] | PublicFolderNotResolved]:
        resolved: dict[str, list[PublicFolder] | PublicFolderNotResolved] = {}
        for source in sources:
            names = public_folder(source)
            assert names is not None  # the users table refuses a malformed line
            try:
                resolved[source.strip().casefold()] = self._subtree(self._find(names))
            except PublicFolderNotResolved as error:
                resolved[source.strip().casefold()] = error
        claimed: dict[str, str] = {}
        for source in sources:
            found = resolved[source.strip().casefold()]
            if isinstance(found, PublicFolderNotResolved):
                continue
            for folder in found:
                other = claimed.setdefault(folder.folder_id, source)
                if other != source:
                    resolved[source.strip().casefold()] = PublicFolderNotResolved(
                        code="public_folder_overlap",
                        params={"folder": "/".join(folder.path), "other": other})
                    break
        return resolved

    def _find(self, names: tuple[str, ...]) -> PublicFolder:
        """The folder at ``names``, walked down from the root one level at a time."""
        parent, found = ROOT, None
        for name in names:
            children = self._children_of(parent)
            match = next((c for c in children if c.path[-1].casefold() == name.casefold()),
                         None)
            if match is None:
                raise PublicFolderNotResolved(code="public_folder_not_found", params={
                    "path": "\\" + "\\".join(names), "missing": name,
                    "names": ", ".join(sorted(c.path[-1] for c in children)) or "—"})
            found = match
            parent = f"<t:FolderId Id={attribute(match.folder_id)}/>"
        assert found is not None
        return found

    def _subtree(self, top: PublicFolder) -> list[PublicFolder]:
        """``top`` (its path its own name) and every folder below it, depth first."""
        found: list[PublicFolder] = []

        def walk(folder: PublicFolder, path: Path) -> None:
            found.append(PublicFolder(folder.folder_id, path, folder.folder_class,
                                      folder.count))
            for child in self._children_of(f"<t:FolderId Id={attribute(folder.folder_id)}/>"):
                walk(child, (*path, child.path[-1]))

        walk(top, (top.path[-1],))
        return found

    def _children_of(self, parent: str) -> list[PublicFolder]:
        """A folder's children (``Shallow``: the only traversal public folders take), page
        by page, each with its name as its path; kept for the command."""
        known = self._children.get(parent)
        if known is not None:
            return known
        children = [PublicFolder(folder_id=row.folder_id, path=(row.name,),
                                 folder_class=row.folder_class, count=row.count)
                    for row in find_folders(self._client, AS_ITSELF, parent,
                                            traversal="Shallow")]
        self._children[parent] = children
        return children


def find_items(client: EwsClient, folder_id: str, properties: str, order: str,
               each: Callable[[Any], None]) -> None:
    """Every item of a public folder through FindItem, page by page, each given to
    ``each`` as its element."""
    offset = 0
    while True:
        body = client.call(AS_ITSELF, (
            '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
            + (f"<t:AdditionalProperties>{properties}</t:AdditionalProperties>"
               if properties else "")
            + f'</m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="{ITEM_PAGE}" '
            f'Offset="{offset}" BasePoint="Beginning"/>{order}'
            f"<m:ParentFolderIds><t:FolderId Id={attribute(folder_id)}/></m:ParentFolderIds>"
            "</m:FindItem>"))
        [message] = [checked(m) for m in response_messages(body)]
        page = message.find(_m("RootFolder"))
        listed = page.find(_t("Items")) if page is not None else None
        got = 0
        for element in listed if listed is not None else ():
            if isinstance(element.tag, str):
                got += 1
                each(element)
        next_offset = page.get("IndexedPagingOffset") if page is not None else None
        offset = int(next_offset) if next_offset and next_offset.isdigit() else offset + got
        if page is None or not got or \
                page.get("IncludesLastItemInRange", "true").lower() == "true":
            return


def change_key(element: Any) -> tuple[str, str]:
    """An item element's id and ChangeKey."""
    item_id = element.find(_t("ItemId"))
    if item_id is None:
        return "", ""
    return item_id.get("Id", ""), item_id.get("ChangeKey", "")


class PublicMailSource(EwsMailSource):
    """The mail folders of a ``public:`` line, as a ``MailSource``: each listing whole
    (``complete``), from which the engine learns what went and whose flags changed."""

    def __init__(self, client: EwsClient, source: str, tree: PublicTree, *,
                 workers: int = 2) -> None:
        super().__init__(client, AS_ITSELF, workers=workers)
        self._source = source
        self._tree = tree

    def containers(self) -> list[Container]:
        """The mail folders; a folder no workload takes (notes, journal...) is a note
        (``public_folder_kind_skipped``), its sub-folders taken as they are."""
        found = []
        for folder in self._tree.folders(self._source):
            if _mail(folder.folder_class):
                found.append(Container(path=folder.path, native_name=folder.folder_id,
                                       count=folder.count, part=PUBLIC_PART))
            elif not any(_of_class(folder.folder_class, wanted)
                         for wanted in FOLDER_CLASSES.values()):
                self._notes.append(SourceNote("public_folder_kind_skipped",
                                              "/".join(folder.path), folder.folder_class))
        return found

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        refs: dict[str, ItemRef] = {}
        versions: dict[str, str] = {}

        def each(element: Any) -> None:
            ref = self._ref(element)
            refs[ref.source_id] = ref
            versions[ref.source_id] = change_key(element)[1]

        find_items(self._client, container.native_name, PROPERTIES, OLDEST_FIRST, each)
        before: dict[str, str] = (cursor or {}).get("versions") or {}
        gone = sum(1 for source_id in before if source_id not in versions)
        with self._lock:
            self._sizes.update((ref.source_id, ref.size) for ref in refs.values())
            if gone:
                self._notes.append(SourceNote("removed_at_source", "/".join(container.path),
                                              params={"count": gone}))
        return Listing(refs=list(refs.values()), cursor={"versions": versions}, complete=True)


class PublicPimSource(EwsPimSource):
    """The calendars and address books of a ``public:`` line, as a ``DocumentSource``: each
    listing compares every item's ChangeKey with those its cursor kept."""

    def __init__(self, client: EwsClient, source: str, tree: PublicTree, *,
                 user_map: Callable[[str], str | None] = lambda address: None,
                 time_zone: str = "UTC") -> None:
        super().__init__(client, AS_ITSELF, user_map=user_map, time_zone=time_zone)
        self._source = source
        self._tree = tree

    def _containers(self, workload: str) -> list[Container]:
        wanted = FOLDER_CLASSES[workload]
        return [Container(path=folder.path, native_name=folder.folder_id, count=folder.count,
                          part=PUBLIC_PART)
                for folder in self._tree.folders(self._source)
                if _of_class(folder.folder_class, wanted)]

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        extension = "vcf" if self._workload(container) == "contacts" else "ics"
        refs: dict[str, DocumentRef] = {}

        def each(element: Any) -> None:
            source_id, version = change_key(element)
            if source_id:
                self._kinds[source_id] = str(element.tag).rsplit("}", 1)[-1]
                refs[source_id] = DocumentRef(source_id, version,
                                              name=self._name(source_id, extension))

        find_items(self._client, container.native_name, "", "", each)
        before: dict[str, str] = (cursor or {}).get("versions") or {}
        return DocumentListing(
            refs=[ref for source_id, ref in refs.items() if before.get(source_id) != ref.version],
            cursor={"versions": {source_id: ref.version for source_id, ref in refs.items()}},
            complete="versions" not in (cursor or {}),
            removed=[source_id for source_id in before if source_id not in refs])


def _of_class(folder_class: str, wanted: str) -> bool:
    """Whether a folder class is ``wanted`` or one of its sub-classes (``IPF.Contact.*``)."""
    return folder_class == wanted or folder_class.startswith(wanted + ".")
