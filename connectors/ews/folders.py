"""Folder listings and item changes through EWS, as every reader of a mailbox or of the
public folders needs them: FindFolder and SyncFolderItems, page by page.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer):

- ``web-service-reference/findfolder-operation``, ``indexedpagefolderview``: the folders
  below a parent (``Traversal="Deep"``: all of them; ``"Shallow"``: its children, the only
  traversal public folders take), ``MaxEntriesReturned`` at a time from ``Offset`` until the
  answer's ``IncludesLastItemInRange``.
- ``web-service-reference/folderclass``: a folder's class (``IPF.Note``, ``IPF.Appointment``
  ...); a folder given without one is read by the kind of its element (``CalendarFolder``,
  ``ContactsFolder``, ``TasksFolder``; a plain ``Folder`` holds mail, as Outlook shows it).
- ``web-service-reference/extendedfielduri``: PidTagAttributeHidden (``0x10F4``), a folder
  Outlook does not show.
- ``web-service-reference/syncfolderitems-operation``: a folder's items as ``Create``,
  ``Update``, ``Delete`` and ``ReadFlagChange`` changes since a ``SyncState`` (none: the
  whole folder), at most ``MaxChangesReturned`` (512) per answer, until
  ``IncludesLastItemInRange``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from connectors.base import Container, SourceNote
from connectors.ews.client import (
    MESSAGES_NS,
    TYPES_NS,
    EwsClient,
    EwsFault,
    attribute,
    checked,
    response_messages,
)

T = TypeVar("T")

HIDDEN_TAG = 0x10F4
"""PidTagAttributeHidden (MS-OXPROPS 2.602): a folder Outlook does not show."""
FOLDER_PAGE = 500
CHANGES_PAGE = 512
"""Changes per SyncFolderItems answer: the most the operation gives."""
FOLDER_PROPERTIES = ('<t:FieldURI FieldURI="folder:DisplayName"/>'
                     '<t:FieldURI FieldURI="folder:FolderClass"/>'
                     '<t:FieldURI FieldURI="folder:ParentFolderId"/>'
                     '<t:FieldURI FieldURI="folder:TotalCount"/>'
                     '<t:FieldURI FieldURI="folder:ChildFolderCount"/>'
                     f'<t:ExtendedFieldURI PropertyTag="{HIDDEN_TAG:#06x}" '
                     'PropertyType="Boolean"/>')
CLASS_OF_KIND = {"CalendarFolder": "IPF.Appointment", "ContactsFolder": "IPF.Contact",
                 "TasksFolder": "IPF.Task", "Folder": ""}
"""The class a folder element implies when it names none (``t:<kind>`` for another kind,
a search folder: no workload takes it)."""


def types(name: str) -> str:
    return f"{{{TYPES_NS}}}{name}"


def messages(name: str) -> str:
    return f"{{{MESSAGES_NS}}}{name}"


@dataclass(frozen=True)
class FolderRow:
    """One folder a listing gave."""

    folder_id: str
    parent_id: str
    name: str
    folder_class: str
    """Its class, or the one its element's kind implies (``CLASS_OF_KIND``)."""
    count: int | None
    hidden: bool = False


def find_folders(client: EwsClient, mailbox: str, parent: str, *,
                 traversal: str = "Deep") -> list[FolderRow]:
    """The folders below ``parent`` (a ``FolderId`` or ``DistinguishedFolderId`` element),
    page by page, as ``mailbox`` (``""``: as the signed-in account itself)."""
    folders: list[FolderRow] = []
    offset = 0
    while True:
        body = client.call(mailbox, (
            f'<m:FindFolder Traversal="{traversal}"><m:FolderShape><t:BaseShape>IdOnly'
            f"</t:BaseShape><t:AdditionalProperties>{FOLDER_PROPERTIES}"
            "</t:AdditionalProperties></m:FolderShape>"
            f'<m:IndexedPageFolderView MaxEntriesReturned="{FOLDER_PAGE}" '
            f'Offset="{offset}" BasePoint="Beginning"/>'
            f"<m:ParentFolderIds>{parent}</m:ParentFolderIds></m:FindFolder>"))
        [message] = [checked(m) for m in response_messages(body)]
        page = message.find(messages("RootFolder"))
        listed = page.find(types("Folders")) if page is not None else None
        got = 0
        for element in listed if listed is not None else ():
            if not isinstance(element.tag, str):
                continue
            got += 1
            folders.append(_row(element))
        offset += got
        if page is None or not got or \
                page.get("IncludesLastItemInRange", "true").lower() == "true":
            return folders


def _row(element: Any) -> FolderRow:
    folder_id = element.find(types("FolderId"))
    parent = element.find(types("ParentFolderId"))
    count = element.findtext(types("TotalCount"))
    kind = element.tag.rsplit("}", 1)[-1]
    return FolderRow(
        folder_id=folder_id.get("Id", "") if folder_id is not None else "",
        parent_id=parent.get("Id", "") if parent is not None else "",
        name=element.findtext(types("DisplayName")) or "",
        folder_class=element.findtext(types("FolderClass"))
        or CLASS_OF_KIND.get(kind, f"t:{kind}"),
        count=int(count) if count and count.isdigit() else None,
        hidden=(extended(element, HIDDEN_TAG) or "").lower() == "true")


def extended(element: Any, tag: int) -> str | None:
    """The value of an element's extended property of that tag, if it carries it."""
    for prop in element.iter(types("ExtendedProperty")):
        uri = prop.find(types("ExtendedFieldURI"))
        if uri is not None and _tag_of(uri.get("PropertyTag", "")) == tag:
            return prop.findtext(types("Value"))
    return None


def _tag_of(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


@dataclass
class ItemChanges:
    """What SyncFolderItems said of a folder since a state, the later change of an item
    standing for the earlier ones."""

    changed: dict[str, Any] = field(default_factory=dict)
    """Item id -> its element (created or updated), with the properties asked for."""
    removed: set[str] = field(default_factory=set)
    read_only: set[str] = field(default_factory=set)
    """Items whose read state alone changed: their change gives no other property."""
    state: str | None = None


def sync_items(client: EwsClient, mailbox: str, folder_id: str, state: str | None,
               properties: str = "") -> ItemChanges:
    """Every change of a folder's items since ``state`` (``None``: the whole folder), page
    by page, each item with ``properties`` (``AdditionalProperties`` elements). Raises
    ``EwsFault`` for a state the server no longer takes (``ErrorInvalidSyncStateData``)."""
    found = ItemChanges(state=state)
    while True:
        body = client.call(mailbox, (
            "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
            + (f"<t:AdditionalProperties>{properties}</t:AdditionalProperties>"
               if properties else "")
            + f"</m:ItemShape><m:SyncFolderId><t:FolderId Id={attribute(folder_id)}/>"
            "</m:SyncFolderId>"
            + (f"<m:SyncState>{escape(found.state)}</m:SyncState>" if found.state else "")
            + f"<m:MaxChangesReturned>{CHANGES_PAGE}</m:MaxChangesReturned>"
            "</m:SyncFolderItems>"))
        [message] = [checked(m) for m in response_messages(body)]
        changes = message.find(messages("Changes"))
        for change in changes if changes is not None else ():
            if isinstance(change.tag, str):
                _take(found, change)
        new_state = message.findtext(messages("SyncState")) or found.state
        last = (message.findtext(messages("IncludesLastItemInRange")) or "true").lower()
        done = last == "true" or new_state == found.state
        found.state = new_state
        if done:
            return found


def _take(found: ItemChanges, change: Any) -> None:
    kind = change.tag.rsplit("}", 1)[-1]
    if kind in ("Create", "Update"):
        item = next((e for e in change if isinstance(e.tag, str)), None)
        item_id = item.find(types("ItemId")) if item is not None else None
        if item_id is not None:
            source_id = item_id.get("Id", "")
            found.changed[source_id] = item
            found.removed.discard(source_id)
            found.read_only.discard(source_id)
        return
    item_id = change.find(types("ItemId"))
    source_id = item_id.get("Id", "") if item_id is not None else ""
    if kind == "Delete" and source_id:
        found.changed.pop(source_id, None)
        found.read_only.discard(source_id)
        found.removed.add(source_id)
    elif kind == "ReadFlagChange" and source_id and source_id not in found.changed:
        found.read_only.add(source_id)


STALE_STATE = frozenset({"ErrorInvalidSyncStateData", "ErrorInvalidSyncState"})


def from_cursor(listing: Callable[[str | None], T], container: Container,
                cursor: dict[str, Any] | None, notes: list[SourceNote]) -> T:
    """``listing`` from the cursor's sync state; from none (the whole folder) when there is
    none, or when the server no longer takes it (noted: ids hold, nothing is reset)."""
    state = (cursor or {}).get("sync_state")
    if state:
        try:
            return listing(str(state))
        except EwsFault as fault:
            if fault.ews_code not in STALE_STATE:
                raise
            notes.append(SourceNote("ews_sync_state_refused", "/".join(container.path),
                                    fault.ews_code))
    return listing(None)
