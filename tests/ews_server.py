"""An Exchange Web Services test server: a SOAP endpoint over TLS on loopback that behaves as
Microsoft's EWS reference says, for the operations exchangelib sends when it reads mailboxes.

Each behaviour cites its page of the reference ("EWS XML elements" and "EWS operations" on
learn.microsoft.com, under ``exchange/client-developer/web-service-reference/``: the page name
is given as ``ref: name``); where the reference is silent, the comment says what this server
chooses. It follows the reference, not exchangelib: where exchangelib reads an answer otherwise
(the gaps listed in the project's notes on test servers), the answer stays as the reference
shapes it.

The organisation is an ``EwsTenant`` held in memory, which tests change between two passes:

- ``tenant.add_mailbox(address, display_name="", *, password=None, language="fr",
  archive=False, system_folders=False) -> Mailbox`` makes the distinguished folders with
  their names in that language (``FOLDER_NAMES``); a ``password`` lets the mailbox's user
  sign in; ``system_folders`` adds what Exchange and Outlook put beside the user's folders
  (Recoverable Items, hidden configuration folders, Sync Issues, Conversation History...).
- ``tenant.service_account(login, password, *, impersonation=True)``: an account holding (or
  not) the ApplicationImpersonation role over every mailbox.
- ``mailbox.add_folder(path, folder_class="IPF.Note", *, archive=False) -> folder id``;
  ``path`` is a tuple of display names below the message-folder root (or the archive's), or
  starts with a distinguished id (``("inbox", "Projets")``). Missing parents are made.
- ``mailbox.deliver(path, mime, *, is_read=False, flagged=False, categories=(),
  received=None, archive=False, is_draft=None) -> item id`` (a draft by default in Drafts); ``mime`` is bytes, or a ``Path`` whose bytes are
  read only when served (a 100 MB message costs the test process no memory).
- ``mailbox.update_item(item_id, **fields)`` (``is_read``, ``flagged``, ``is_draft``,
  ``categories``, ``subject``, ``mime``; ``xml`` for an item stored as XML, an exception's
  change moving its master's version too), ``mailbox.delete_item(item_id)``, ``mailbox.move_item(item_id,
  path)``: changes a later SyncFolderItems reports; ``mailbox.rename_folder(folder_id,
  name)`` and ``mailbox.delete_folder(folder_id)``: changes SyncFolderHierarchy reports.
- ``mailbox.add_item(path, xml) -> item id``: a calendar item, contact, distribution list or
  task given as its EWS XML (``<t:CalendarItem>`` ...), returned by GetItem as stored, with
  its ids; ``t:FileAttachment`` children of ``t:Attachments`` keep their ``t:Content`` for
  GetAttachment only. ``mailbox.add_series(path, master, exceptions=..., deleted=...)``
  stores a recurring series: each exception an item only GetItem reaches, listed in the
  master's ModifiedOccurrences, the deleted occurrences in its DeletedOccurrences.
  ``tests.ews_seed`` builds such XML (``weekly_series``, ``paris_zone``, ``custom_zone``,
  ``contact``, ``distribution_list``, ``task``).
- ``store.set_permission(folder, user, level)`` on a mailbox or ``tenant.public``: a
  folder's permission for an address (or ``Default``, ``Anonymous``), by level name.
- ``tenant.add_public_folder(path, folder_class="IPF.Note") -> folder id`` and
  ``tenant.deliver_public(path, mime, ...)``, ``tenant.add_public_item(path, xml)``.
- ``seed_french_tenant(tenant)`` (from ``tests.ews_seed``, re-exported here).

``POST /autodiscover/autodiscover.xml`` answers POX Autodiscover for the tenant's mailboxes
(the EWS address as ``EwsUrl``), ``tenant.autodiscover_redirects`` with ``redirectAddr``.

``tenant.issue_token(login)`` gives an OAuth access token the server accepts as
``Authorization: Bearer`` when ``auth`` includes ``"oauth"``.

``EwsServer(tenant, *, auth=("basic", "ntlm"), version="Exchange2016")`` serves it on
``127.0.0.1`` and a free port (``.url``, ``.ca_file``; ``.start()``, ``.stop()``, or a
``with`` block). Switches and records a test may use:

- ``.busy(count, back_off_ms=..., per_item=False)``: the next ``count`` authenticated
  requests answer ``ErrorServerBusy`` with that ``BackOffMilliseconds``, as a SOAP fault or
  (``per_item``) in each response message of an answer;
- ``.max_concurrency(n)``: beyond ``n`` requests in flight on one budget, answer
  ``ErrorExceededConnectionCount`` (on-premises EWSMaxConcurrency defaults to 27). The
  budget is the signed-in account's, or with impersonation (Exchange 2013 and later) the
  impersonated mailbox's, shared by every service account;
- ``.latency(seconds)``: every answer waits that long first (benchmarks);
- ``.requests``: ``(operation, mailbox, impersonated_as)`` per authenticated request: the
  mailbox the request acts for (the impersonated one, else the signed-in user's, ``""`` for
  a service account acting for nobody) and the ``ExchangeImpersonation`` address or None;
- ``.stats``: counters (``busy``, ``refused_concurrency``, ``max_in_flight`` on one budget,
  ``tls_refused``, ``unauthorised``, one per operation...); ``.errors``: tracebacks of the server's own failures.

Operations served: ConvertId (what exchangelib's version guessing sends), GetFolder,
FindFolder, SyncFolderHierarchy, SyncFolderItems, FindItem, GetItem, GetAttachment, ExpandDL,
GetDelegate, GetServerTimeZones; any other is a SOAP fault (ErrorInvalidRequest). Answers are
written in chunks as they are made: a message's ``MimeContent`` is encoded from its stored
bytes (or file) 48 KiB at a time, never held whole as base64 (serving a 100 MB message raised
the server process's peak RSS by about 1 MiB).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import os
import re
import secrets
import ssl
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Self
from xml.sax.saxutils import escape, quoteattr

import spnego
from lxml import etree

from tests.tls import TestCertificates, TlsHTTPServer, make_test_certificates

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PATH = "/EWS/Exchange.asmx"
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
AUTODISCOVER_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
AUTODISCOVER_OUTLOOK = ("http://schemas.microsoft.com/exchange/autodiscover/outlook/"
                        "responseschema/2006a")
CHUNK = 48 * 1024
"""Bytes of MIME encoded at a time: a multiple of 3, so each piece is whole base64."""
MAX_CHANGES = 512
"""SyncFolderItems' MaxChangesReturned lies between 1 and 512 (ref: maxchangesreturned)."""

# --- what each server version says about itself ---------------------------------------------

SERVER_VERSIONS: dict[str, tuple[tuple[int, int, int, int], str]] = {
    # (MajorVersion, MinorVersion, MajorBuildNumber, MinorBuildNumber) and the Version attribute
    # of ServerVersionInfo (ref: serverversioninfo). Exchange 2016 and 2019 give the schema
    # version their cumulative updates carry, not a RequestServerVersion value.
    "Exchange2010_SP2": ((14, 3, 123, 4), "Exchange2010_SP2"),
    "Exchange2013_SP1": ((15, 0, 1497, 2), "V2_23"),
    "Exchange2016": ((15, 1, 2507, 6), "V2017_07_11"),
    "Exchange2019": ((15, 2, 1118, 7), "V2017_07_11"),
}
REQUEST_VERSIONS = ("Exchange2007", "Exchange2007_SP1", "Exchange2010", "Exchange2010_SP1",
                    "Exchange2010_SP2", "Exchange2013", "Exchange2013_SP1", "Exchange2015",
                    "Exchange2016")
"""RequestServerVersion's Version values, oldest first (ref: requestserverversion)."""
HIGHEST_REQUEST = {"Exchange2010_SP2": "Exchange2010_SP2", "Exchange2013_SP1": "Exchange2013_SP1",
                   "Exchange2016": "Exchange2016", "Exchange2019": "Exchange2016"}

# --- localised distinguished folders --------------------------------------------------------

FOLDER_NAMES: dict[str, dict[str, str]] = {
    "fr": {"msgfolderroot": "Partie supérieure de la banque d'informations",
           "inbox": "Boîte de réception", "sentitems": "Éléments envoyés",
           "deleteditems": "Éléments supprimés", "drafts": "Brouillons",
           "junkemail": "Courrier indésirable", "outbox": "Boîte d'envoi",
           "calendar": "Calendrier", "contacts": "Contacts", "tasks": "Tâches",
           "notes": "Notes", "journal": "Journal",
           "syncissues": "Problèmes de synchronisation", "conflicts": "Conflits",
           "localfailures": "Échecs locaux", "serverfailures": "Échecs du serveur",
           "conversationhistory": "Historique des conversations", "rss": "Flux RSS"},
    "en": {"msgfolderroot": "Top of Information Store", "inbox": "Inbox",
           "sentitems": "Sent Items", "deleteditems": "Deleted Items", "drafts": "Drafts",
           "junkemail": "Junk Email", "outbox": "Outbox", "calendar": "Calendar",
           "contacts": "Contacts", "tasks": "Tasks", "notes": "Notes", "journal": "Journal",
           "syncissues": "Sync Issues", "conflicts": "Conflicts",
           "localfailures": "Local Failures", "serverfailures": "Server Failures",
           "conversationhistory": "Conversation History", "rss": "RSS Feeds"},
}
DISTINGUISHED_CLASSES = {
    "inbox": "IPF.Note", "sentitems": "IPF.Note", "deleteditems": "IPF.Note",
    "drafts": "IPF.Note", "junkemail": "IPF.Note", "outbox": "IPF.Note",
    "calendar": "IPF.Appointment", "contacts": "IPF.Contact", "tasks": "IPF.Task",
    "notes": "IPF.StickyNote", "journal": "IPF.Journal",
}
"""The folders below the message-folder root the server makes in every mailbox, in the order
Outlook lists them (ref: distinguishedfolderid gives the ids; the classes are Exchange's)."""
FOLDER_ELEMENTS = {"IPF.Appointment": "CalendarFolder", "IPF.Contact": "ContactsFolder",
                   "IPF.Task": "TasksFolder"}
"""Which element a folder of that class is answered as (ref: folders-ex15websvcsotherref)."""
ITEM_KINDS = ("Message", "CalendarItem", "Contact", "DistributionList", "Task",
              "MeetingRequest", "MeetingResponse", "MeetingCancellation", "PostItem", "Item")
ITEM_CLASSES = {"CalendarItem": "IPM.Appointment", "Contact": "IPM.Contact",
                "DistributionList": "IPM.DistList", "Task": "IPM.Task", "PostItem": "IPM.Post"}
PERMISSION_LEVELS: dict[str, tuple[bool, bool, bool, bool, bool, str, str, str]] = {
    # CanCreateItems, CanCreateSubFolders, IsFolderOwner, IsFolderVisible, IsFolderContact,
    # EditItems, DeleteItems, ReadItems of each level Outlook names (ref: permissionlevel).
    "None": (False, False, False, False, False, "None", "None", "None"),
    "Owner": (True, True, True, True, True, "All", "All", "FullDetails"),
    "PublishingEditor": (True, True, False, True, False, "All", "All", "FullDetails"),
    "Editor": (True, False, False, True, False, "All", "All", "FullDetails"),
    "PublishingAuthor": (True, True, False, True, False, "Owned", "Owned", "FullDetails"),
    "Author": (True, False, False, True, False, "Owned", "Owned", "FullDetails"),
    "NoneditingAuthor": (True, False, False, True, False, "None", "Owned", "FullDetails"),
    "Reviewer": (False, False, False, True, False, "None", "None", "FullDetails"),
    "Contributor": (True, False, False, True, False, "None", "None", "None"),
}
CALENDAR_LEVELS = {
    **PERMISSION_LEVELS,
    "FreeBusyTimeOnly": (False, False, False, False, False, "None", "None", "TimeOnly"),
    "FreeBusyTimeAndSubjectAndLocation": (False, False, False, False, False, "None", "None",
                                          "TimeAndSubjectAndLocation"),
}
"""A calendar's levels add two of free/busy reading (ref: calendarpermissionlevel)."""
PR_ATTR_HIDDEN = 0x10F4
"""PidTagAttributeHidden, a Boolean ([MS-OXPROPS] 2.612)."""
PR_FLAG_STATUS = 0x1090
"""PidTagFlagStatus: 0 not flagged, 1 complete, 2 flagged ([MS-OXOFLAG] 2.2.1.1)."""


PUBLIC_SYNC = "Synchronization is not supported for public folders."
"""ref: syncfolderitems-operation and syncfolderhierarchy: "not supported for use against
Office 365 Group mailboxes or Public Folders" (the response code is this server's choice)."""


WHOLE_RESPONSES = frozenset({"GetDelegate"})
"""Operations whose response is itself a response message (ref: getdelegateresponse)."""
DELEGATE_FOLDERS = ("Calendar", "Tasks", "Inbox", "Contacts", "Notes", "Journal")
"""The folders a delegate's permissions name, in the schema's order (ref:
delegatepermissions)."""


@dataclass
class Delegate:
    """A delegate of a mailbox (ref: delegateuser): a level per folder of
    ``DELEGATE_FOLDERS``, and two switches."""

    address: str
    levels: dict[str, str]
    receive_copies: bool = False
    view_private: bool = False


class EwsError(Exception):
    """An EWS response code and its message, answered in the operation's response message."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class SoapFault(Exception):
    """An error answered as a SOAP fault with HTTP 500: what Exchange does for errors of the
    request as a whole (impersonation, throttling, schema version)."""

    def __init__(self, code: str, text: str, message_xml: str = "") -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text
        self.message_xml = message_xml


def _new_id(kind: bytes) -> str:
    # EWS ids are opaque base64 (ref: itemid); this server's carry a kind byte and 16 random
    # bytes, so ConvertId can make the other formats from them.
    return base64.b64encode(b"\x00\x00\x00\x01" + kind + uuid.uuid4().bytes).decode()


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the organisation ---------------------------------------------------------------------


@dataclass
class Attachment:
    """A file attachment of a stored item, its content kept apart for GetAttachment."""

    id: str
    element: etree._Element
    """The ``t:FileAttachment`` as given, without ``t:Content``."""
    content: bytes


@dataclass
class Item:
    """One item: a message (its MIME) or another kind stored as its EWS XML."""

    id: str
    folder: Folder
    kind: str
    mime: bytes | Path | None = None
    element: etree._Element | None = None
    is_read: bool = False
    flagged: bool = False
    is_draft: bool = False
    categories: tuple[str, ...] = ()
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    subject: str = ""
    version: int = 1
    """Bumped by any change but the read flag: the ChangeKey, and Update in a sync."""
    seq: int = 0
    """The tenant's sequence at the last change (orders a sync's changes)."""
    attachments: dict[str, Attachment] = field(default_factory=dict)
    has_attachments: bool = False
    """For a message: whether its MIME has a part given as an attachment."""

    @property
    def size(self) -> int:
        if isinstance(self.mime, Path):
            return self.mime.stat().st_size
        if self.mime is not None:
            return len(self.mime)
        assert self.element is not None
        return len(etree.tostring(self.element)) + sum(len(a.content)
                                                       for a in self.attachments.values())

    def mime_chunks(self) -> Iterator[bytes]:
        if isinstance(self.mime, Path):
            with self.mime.open("rb") as stream:
                while piece := stream.read(CHUNK):
                    yield piece
        elif self.mime is not None:
            view = memoryview(self.mime)
            for start in range(0, len(view), CHUNK):
                yield bytes(view[start:start + CHUNK])


@dataclass
class Folder:
    """One folder of a mailbox, of its archive, or of the public folder tree."""

    id: str
    owner: Store
    parent: Folder | None
    display_name: str
    folder_class: str | None
    distinguished: str | None = None
    version: int = 1
    """Bumped by a rename or a permission change: the ChangeKey, and Update in a sync (a
    folder's counts do not change it, ref: syncfolderhierarchy-operation)."""
    items: dict[str, Item] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)
    """Permission level per user address, or ``Default`` and ``Anonymous``."""
    hidden: bool = False
    """PR_ATTR_HIDDEN: a folder Outlook does not show (configuration, caches)."""

    def children(self) -> list[Folder]:
        return [f for f in self.owner.folders.values() if f.parent is self]

    def descendants(self) -> Iterator[Folder]:
        """Depth first, each folder before its children."""
        for child in self.children():
            yield child
            yield from child.descendants()

    def path(self) -> tuple[str, ...]:
        names: list[str] = []
        folder: Folder | None = self
        while folder is not None and folder.parent is not None:
            names.append(folder.display_name)
            folder = folder.parent
        return tuple(reversed(names))


class Store:
    """Folders and items with the change sequence syncs read: a mailbox (with its archive) or
    the organisation's public folders."""

    def __init__(self, tenant: EwsTenant, address: str) -> None:
        self.tenant = tenant
        self.address = address
        self.folders: dict[str, Folder] = {}
        self.distinguished: dict[str, Folder] = {}

    def _make_folder(self, parent: Folder | None, name: str, folder_class: str | None,
                     distinguished: str | None = None) -> Folder:
        with self.tenant.lock:
            folder = Folder(_new_id(b"F"), self, parent, name, folder_class, distinguished)
            # Every folder lists Default and Anonymous (ref: distinguisheduser); Default may see
            # free/busy times of a calendar, nothing of other folders, as Exchange sets them.
            folder.permissions = {
                "Default": "FreeBusyTimeOnly" if folder_class == "IPF.Appointment" else "None",
                "Anonymous": "None"}
            self.folders[folder.id] = folder
            self.tenant.folders[folder.id] = folder
            if distinguished:
                self.distinguished[distinguished] = folder
            return folder

    def _base(self, archive: bool) -> Folder:
        raise NotImplementedError

    def folder_at(self, path: str | tuple[str, ...], *, archive: bool = False,
                  create: str | None = None) -> Folder:
        """The folder at ``path`` (display names below the base folder, or a distinguished id
        first); with ``create`` (a folder class), missing folders are made with it."""
        if isinstance(path, str):
            path = (path,)
        folder = self._base(archive)
        names = list(path)
        if names and names[0] in self.distinguished:
            folder = self.distinguished[names.pop(0)]
        for name in names:
            match = next((c for c in folder.children() if c.display_name == name), None)
            if match is None:
                if create is None:
                    raise KeyError(f"no folder {name!r} in {folder.path()!r} of {self.address}")
                match = self._make_folder(folder, name, create)
            folder = match
        return folder

    def _store_item(self, folder: Folder, item: Item) -> str:
        with self.tenant.lock:
            item.seq = self.tenant.tick()
            folder.items[item.id] = item
            self.tenant.items[item.id] = item
        return item.id

    def _deliver(self, path: str | tuple[str, ...], mime: bytes | Path, *, is_read: bool,
                 flagged: bool, categories: Iterable[str], received: datetime | None,
                 archive: bool, is_draft: bool | None = None) -> str:
        folder = self.folder_at(path, archive=archive)
        if is_draft is None:
            is_draft = folder.distinguished == "drafts"
        item = Item(_new_id(b"I"), folder, "Message", mime=mime, is_read=is_read,
                    flagged=flagged, is_draft=is_draft, categories=tuple(categories),
                    received=received or datetime.now(UTC), subject=_subject_of(mime),
                    has_attachments=_has_attachments(mime))
        return self._store_item(folder, item)

    def _add_item(self, path: str | tuple[str, ...], xml: str, archive: bool) -> str:
        folder = self.folder_at(path, archive=archive)
        element = _parse_item(xml)
        kind = etree.QName(element).localname
        if kind not in ITEM_KINDS:
            raise ValueError(f"not an EWS item element: {kind}")
        item = Item(_new_id(b"I"), folder, kind, element=element)
        for name in ("ItemId", "ParentFolderId"):
            for old in element.findall(f"{{{T}}}{name}"):
                element.remove(old)
        attachments = element.find(f"{{{T}}}Attachments")
        if attachments is not None:
            for attachment in attachments:
                content = attachment.find(f"{{{T}}}Content")
                data = base64.b64decode(content.text or "") if content is not None else b""
                if content is not None:
                    attachment.remove(content)
                for old in attachment.findall(f"{{{T}}}AttachmentId"):
                    attachment.remove(old)
                attachment_id = _new_id(b"A")
                identity = etree.Element(f"{{{T}}}AttachmentId", Id=attachment_id)
                attachment.insert(0, identity)
                item.attachments[attachment_id] = Attachment(attachment_id, attachment, data)
        subject = element.find(f"{{{T}}}Subject")
        item.subject = subject.text or "" if subject is not None else ""
        read = element.find(f"{{{T}}}IsRead")
        item.is_read = read is not None and read.text == "true"
        return self._store_item(folder, item)

    def _add_series(self, path: str | tuple[str, ...], master: str, exceptions: Iterable[str],
                    deleted: Iterable[str], archive: bool) -> tuple[str, list[str]]:
        """A recurring series: the master as given, each exception an item of its own that
        only GetItem reaches (ref: modifiedoccurrences: each Occurrence gives the exception's
        ItemId, Start, End and OriginalStart), each deleted occurrence by its original start
        (ref: deletedoccurrences)."""
        master_id = self._add_item(path, master, archive)
        item = self.item(master_id)
        assert item.element is not None
        occurrences = etree.Element(f"{{{T}}}ModifiedOccurrences")
        exception_ids = []
        for xml in exceptions:
            element = _parse_item(xml)
            exception = Item(_new_id(b"I"), item.folder, "CalendarItem", element=element,
                             subject=element.findtext(f"{{{T}}}Subject") or item.subject)
            with self.tenant.lock:
                self.tenant.items[exception.id] = exception
                self.tenant.master_of[exception.id] = master_id
            exception_ids.append(exception.id)
            occurrence = etree.SubElement(occurrences, f"{{{T}}}Occurrence")
            etree.SubElement(occurrence, f"{{{T}}}ItemId", Id=exception.id, ChangeKey="1")
            for name in ("Start", "End", "OriginalStart"):
                etree.SubElement(occurrence, f"{{{T}}}{name}").text = element.findtext(
                    f"{{{T}}}{name}")
        removed = etree.Element(f"{{{T}}}DeletedOccurrences")
        for start in deleted:
            entry = etree.SubElement(removed, f"{{{T}}}DeletedOccurrence")
            etree.SubElement(entry, f"{{{T}}}Start").text = start
        later = {"MeetingTimeZone", "StartTimeZone", "EndTimeZone", "ConferenceType",
                 "AllowNewTimeProposal", "IsOnlineMeeting", "MeetingWorkspaceUrl", "NetShowUrl",
                 "EnhancedLocation", "StartWallClock", "EndWallClock", "StartTimeZoneId",
                 "EndTimeZoneId"}
        position = next((i for i, child in enumerate(item.element)
                         if isinstance(child.tag, str)
                         and etree.QName(child).localname in later), len(item.element))
        for block in (removed, occurrences):
            if len(block):
                item.element.insert(position, block)
        return master_id, exception_ids

    def item(self, item_id: str) -> Item:
        found = self.tenant.items.get(item_id)
        if found is None or found.folder.owner is not self:
            raise KeyError(item_id)
        return found

    def update_item(self, item_id: str, **fields: Any) -> None:
        """Change an item as a user would; only ``is_read`` alone leaves its version (a sync then
        says ReadFlagChange, ref: readflagchange)."""
        unknown = set(fields) - {"is_read", "flagged", "is_draft", "categories", "subject",
                                 "mime", "xml"}
        if unknown:
            raise TypeError(f"update_item does not change {sorted(unknown)}")
        with self.tenant.lock:
            item = self.item(item_id)
            xml = fields.pop("xml", None)
            if xml is not None:
                self._replace_element(item, xml)
            for name, value in fields.items():
                setattr(item, name, tuple(value) if name == "categories" else value)
            if set(fields) - {"is_read"} or xml is not None:
                item.version += 1
            if "mime" in fields:
                item.subject = _subject_of(fields["mime"])
                item.has_attachments = _has_attachments(fields["mime"])
            item.seq = self.tenant.tick()

    def _replace_element(self, item: Item, xml: str) -> None:
        """An item stored as XML given anew (``update_item(..., xml=...)``), its ids kept. An
        exception of a series changes its master too, as Exchange keeps exceptions inside
        their master (MS-OXOCAL: an Exception Attachment object of the Recurring Calendar
        object): the master's ChangeKey moves and a sync reports it updated."""
        element = _parse_item(xml)
        for name in ("ItemId", "ParentFolderId"):
            for old in element.findall(f"{{{T}}}{name}"):
                element.remove(old)
        if item.element is not None:
            for kept in ("ModifiedOccurrences", "DeletedOccurrences"):
                for block in item.element.findall(f"{{{T}}}{kept}"):
                    element.append(block)
        item.element = element
        item.subject = element.findtext(f"{{{T}}}Subject") or item.subject
        master_id = self.tenant.master_of.get(item.id)
        if master_id is not None:
            master = self.tenant.items[master_id]
            master.version += 1
            master.seq = self.tenant.tick()

    def delete_item(self, item_id: str) -> None:
        with self.tenant.lock:
            item = self.item(item_id)
            del item.folder.items[item_id]
            del self.tenant.items[item_id]

    def move_item(self, item_id: str, path: str | tuple[str, ...], *,
                  archive: bool = False) -> str:
        """Move an item; like Exchange, it gets a new id in its new folder."""
        with self.tenant.lock:
            item = self.item(item_id)
            target = self.folder_at(path, archive=archive)
            self.delete_item(item_id)
            item.id = _new_id(b"I")
            item.folder = target
            item.version += 1
            return self._store_item(target, item)

    def set_permission(self, folder: str | tuple[str, ...], user: str, level: str) -> None:
        """Give ``user`` (an address, or ``Default`` or ``Anonymous``) a permission level on a
        folder named by id or path (ref: permissionlevel, calendarpermissionlevel)."""
        if level not in CALENDAR_LEVELS:
            raise ValueError(f"level is one of {sorted(CALENDAR_LEVELS)}")
        with self.tenant.lock:
            target = (self.folders[folder] if isinstance(folder, str) and folder in self.folders
                      else self.folder_at(folder))
            target.permissions[user if user in ("Default", "Anonymous") else user.lower()] = level
            target.version += 1

    def delete_folder(self, folder_id: str) -> None:
        """Delete a folder, its subfolders and their items (a later SyncFolderHierarchy says
        Delete for each; their ids are then unknown)."""
        with self.tenant.lock:
            folder = self.folders[folder_id]
            if folder.distinguished:
                raise ValueError("a distinguished folder cannot be deleted")
            for gone in [folder, *folder.descendants()]:
                for item_id in gone.items:
                    del self.tenant.items[item_id]
                del self.folders[gone.id]
                del self.tenant.folders[gone.id]

    def rename_folder(self, folder_id: str, name: str) -> None:
        with self.tenant.lock:
            folder = self.folders[folder_id]
            folder.display_name = name
            folder.version += 1


class Mailbox(Store):
    """A user's (or a shared) mailbox: distinguished folders, and an archive if it has one."""

    def __init__(self, tenant: EwsTenant, address: str, display_name: str, password: str | None,
                 language: str, archive: bool, system_folders: bool) -> None:
        super().__init__(tenant, address)
        self.display_name = display_name or address.split("@")[0]
        self.password = password
        self.language = language
        names = FOLDER_NAMES[language]
        root = self._make_folder(None, "", None, "root")
        top = self._make_folder(root, names["msgfolderroot"], "IPF.Note", "msgfolderroot")
        for distinguished, folder_class in DISTINGUISHED_CLASSES.items():
            self._make_folder(top, names[distinguished], folder_class, distinguished)
        if system_folders:
            self._make_system_folders(root, top, names)
        self.has_archive = archive
        self.delegates: list[Delegate] = []
        self.deliver_meeting_requests = "DelegatesAndMe"
        """Where meeting requests go when there are delegates (ref: delivermeetingrequests)."""
        if archive:
            # The archive's own roots and its deleted items (ref: distinguishedfolderid:
            # archiveroot, archivemsgfolderroot, archivedeleteditems).
            archive_root = self._make_folder(None, "", None, "archiveroot")
            archive_top = self._make_folder(archive_root, names["msgfolderroot"], "IPF.Note",
                                            "archivemsgfolderroot")
            self._make_folder(archive_top, names["deleteditems"], "IPF.Note",
                              "archivedeleteditems")

    def _make_system_folders(self, root: Folder, top: Folder, names: dict[str, str]) -> None:
        """What Exchange and Outlook add to a mailbox beside the user's folders: the non-IPM
        folders below ``root``, hidden configuration folders (PR_ATTR_HIDDEN) and Outlook's
        own mail folders below the message-folder root (ref: distinguishedfolderid names
        searchfolders, recoverableitems*, syncissues, conflicts, localfailures,
        serverfailures, conversationhistory)."""
        self._make_folder(root, "Common Views", None)
        self._make_folder(root, "Finder", None, "searchfolders")
        recoverable = self._make_folder(root, "Recoverable Items", None, "recoverableitemsroot")
        for name in ("Deletions", "Purges", "Versions"):
            self._make_folder(recoverable, name, None, f"recoverableitems{name.lower()}")
        for name in ("Conversation Action Settings", "Quick Step Settings"):
            self._make_folder(top, name, "IPF.Configuration").hidden = True
        sync = self._make_folder(top, names["syncissues"], "IPF.Note", "syncissues")
        for distinguished in ("conflicts", "localfailures", "serverfailures"):
            self._make_folder(sync, names[distinguished], "IPF.Note", distinguished)
        self._make_folder(top, names["conversationhistory"], "IPF.Note", "conversationhistory")
        self._make_folder(top, names["rss"], "IPF.Note.OutlookHomepage")
        self._make_folder(self.distinguished["contacts"], "Recipient Cache",
                          "IPF.Contact.RecipientCache").hidden = True

    def _base(self, archive: bool) -> Folder:
        if archive:
            if not self.has_archive:
                raise KeyError(f"{self.address} has no archive")
            return self.distinguished["archivemsgfolderroot"]
        return self.distinguished["msgfolderroot"]

    def add_folder(self, path: tuple[str, ...], folder_class: str = "IPF.Note", *,
                   archive: bool = False) -> str:
        return self.folder_at(path, archive=archive, create=folder_class).id

    def deliver(self, path: str | tuple[str, ...], mime: bytes | Path, *, is_read: bool = False,
                flagged: bool = False, categories: Iterable[str] = (),
                received: datetime | None = None, archive: bool = False,
                is_draft: bool | None = None) -> str:
        """A message; ``is_draft`` (IsDraft: not sent yet) is by default whether it is put
        in the Drafts folder."""
        return self._deliver(path, mime, is_read=is_read, flagged=flagged,
                             categories=categories, received=received, archive=archive,
                             is_draft=is_draft)

    def add_item(self, path: str | tuple[str, ...], xml: str, *, archive: bool = False) -> str:
        return self._add_item(path, xml, archive)

    def add_delegate(self, address: str, *, calendar: str = "Editor", tasks: str = "None",
                     inbox: str = "None", contacts: str = "None", notes: str = "None",
                     journal: str = "None", receive_copies: bool = False,
                     view_private: bool = False) -> None:
        """Make ``address`` a delegate, as Outlook does: its levels are also set as the
        permissions of those folders (ref: adddelegate-operation)."""
        levels = dict(zip(DELEGATE_FOLDERS, (calendar, tasks, inbox, contacts, notes, journal),
                          strict=True))
        self.delegates.append(Delegate(address.lower(), levels, receive_copies, view_private))
        for name, level in levels.items():
            if level != "None":
                self.set_permission(self.distinguished[name.lower()].id, address, level)

    def add_series(self, path: str | tuple[str, ...], master: str, *,
                   exceptions: Iterable[str] = (), deleted: Iterable[str] = (),
                   archive: bool = False) -> tuple[str, list[str]]:
        """A recurring series (``master``, a ``t:CalendarItem`` with its ``t:Recurrence``), its
        modified occurrences (``t:CalendarItem`` each with Start, End and OriginalStart) and
        the original starts of its deleted ones: the master's id and the exceptions' ids."""
        return self._add_series(path, master, exceptions, deleted, archive)


class PublicFolders(Store):
    """The organisation's public folder tree, below ``publicfoldersroot``."""

    def __init__(self, tenant: EwsTenant) -> None:
        super().__init__(tenant, "")
        # The public folder root's children are the tree users see (ref: distinguishedfolderid,
        # publicfoldersroot); its display name is Exchange's, whatever the language.
        self._make_folder(None, "IPM_SUBTREE", None, "publicfoldersroot")

    def _base(self, archive: bool) -> Folder:
        return self.distinguished["publicfoldersroot"]


@dataclass
class ServiceAccount:
    login: str
    password: str
    impersonation: bool


class EwsTenant:
    """An Exchange organisation in memory: mailboxes, service accounts and public folders."""

    def __init__(self, netbios_domain: str = "VILLE") -> None:
        self.lock = threading.RLock()
        self.netbios_domain = netbios_domain
        self.mailboxes: dict[str, Mailbox] = {}
        self.accounts: dict[str, ServiceAccount] = {}
        self.folders: dict[str, Folder] = {}
        self.items: dict[str, Item] = {}
        self.sync_states: dict[str, tuple[str, dict[str, tuple[int, bool]]]] = {}
        self.tokens: dict[str, str] = {}
        self.master_of: dict[str, str] = {}
        """A series' exception -> its master (``add_series``)."""
        self.autodiscover_redirects: dict[str, str] = {}
        """Address -> the address Autodiscover tells a client to ask about instead."""
        """OAuth access tokens the organisation accepts, and whose they are."""
        self._seq = itertools.count(1)
        self.public = PublicFolders(self)

    def tick(self) -> int:
        return next(self._seq)

    def add_mailbox(self, address: str, display_name: str = "", *, password: str | None = None,
                    language: str = "fr", archive: bool = False,
                    system_folders: bool = False) -> Mailbox:
        mailbox = Mailbox(self, address.lower(), display_name, password, language, archive,
                          system_folders)
        self.mailboxes[mailbox.address] = mailbox
        return mailbox

    def mailbox(self, address: str) -> Mailbox:
        return self.mailboxes[address.lower()]

    def service_account(self, login: str, password: str, *,
                        impersonation: bool = True) -> ServiceAccount:
        account = ServiceAccount(login.lower(), password, impersonation)
        self.accounts[account.login] = account
        return account

    def add_public_folder(self, path: tuple[str, ...], folder_class: str = "IPF.Note") -> str:
        return self.public.folder_at(path, create=folder_class).id

    def deliver_public(self, path: tuple[str, ...], mime: bytes | Path, *, is_read: bool = False,
                       flagged: bool = False, categories: Iterable[str] = (),
                       received: datetime | None = None) -> str:
        return self.public._deliver(path, mime, is_read=is_read, flagged=flagged,
                                    categories=categories, received=received, archive=False)

    def add_public_item(self, path: tuple[str, ...], xml: str) -> str:
        return self.public._add_item(path, xml, False)

    def issue_token(self, login: str) -> str:
        """An OAuth access token for ``login`` (a service account or a mailbox), as the
        organisation's authorisation server would give one (hybrid modern authentication);
        its contents are opaque to the EWS endpoint, which only looks it up."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = login.lower()
        return token

    def credentials(self) -> dict[str, str]:
        """Every login that may sign in, with its password."""
        logins = {a.login: a.password for a in self.accounts.values()}
        logins.update({m.address: m.password for m in self.mailboxes.values() if m.password})
        return logins


def _parse_item(xml: str) -> etree._Element:
    """An item's EWS XML, the ``t:`` prefix bound to the types namespace if it is not."""
    wrapped = f'<stored xmlns:t="{T}">{xml}</stored>'
    return etree.fromstring(wrapped.encode())[0]


def _has_attachments(mime: bytes | Path) -> bool:
    """Whether a part of the message says ``Content-Disposition: attachment``, read line by
    line (a message given as a file is not loaded whole)."""
    pattern = re.compile(rb"^content-disposition:[ \t]*attachment", re.IGNORECASE | re.MULTILINE)
    if isinstance(mime, bytes):
        return pattern.search(mime) is not None
    with mime.open("rb") as stream:
        return any(pattern.match(line) for line in stream)


def _subject_of(mime: bytes | Path) -> str:
    """The decoded Subject header, read from the first 256 KiB of the message."""
    if isinstance(mime, Path):
        with mime.open("rb") as stream:
            head = stream.read(256 * 1024)
    else:
        head = mime[:256 * 1024]
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0),
              default=len(head))
    headers = BytesHeaderParser().parsebytes(head[:end])
    raw = headers.get("Subject", "")
    return str(make_header(decode_header(str(raw)))) if raw else ""


# --- answers ------------------------------------------------------------------------------


def _el(tag: str, text: str | int | None = None, **attrs: str) -> str:
    attributes = "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
    if text is None:
        return f"<{tag}{attributes}/>"
    return f"<{tag}{attributes}>{escape(str(text))}</{tag}>"


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass
class Shape:
    """What an ItemShape or FolderShape asks for (ref: itemshape, foldershape, baseshape)."""

    base: str = "Default"
    fields: set[str] = field(default_factory=set)
    """FieldURI values, and IndexedFieldURI ones (``contacts:EmailAddress``)."""
    extended: list[etree._Element] = field(default_factory=list)
    mime: bool = False
    listing: bool = False
    """A FindItem or SyncFolderItems shape: "it cannot return properties like Body or
    Attachments" (ref: syncfolderitems-operation), nor MimeContent; GetItem gives them. This
    server leaves them out of the answer rather than refusing the request."""

    @classmethod
    def parse(cls, element: etree._Element | None) -> Shape:
        if element is None:
            return cls()
        base = element.findtext(f"{{{T}}}BaseShape") or "Default"
        shape = cls(base=base)
        shape.mime = element.findtext(f"{{{T}}}IncludeMimeContent") == "true"
        additional = element.find(f"{{{T}}}AdditionalProperties")
        if additional is not None:
            for prop in additional:
                name = etree.QName(prop).localname
                if name in ("FieldURI", "IndexedFieldURI"):
                    shape.fields.add(prop.get("FieldURI", ""))
                elif name == "ExtendedFieldURI":
                    shape.extended.append(prop)
        if "item:MimeContent" in shape.fields:
            shape.mime = True
        return shape

    def wants(self, uri: str, *, default: bool = True) -> bool:
        """Whether ``uri`` is answered: asked for by name, or in the base shape (IdOnly has
        none; ``default`` says whether Default has it; AllProperties has all)."""
        if uri in self.fields:
            return True
        return self.base == "AllProperties" or (self.base == "Default" and default)


def _folder_xml(folder: Folder, shape: Shape) -> str:
    element = f"t:{FOLDER_ELEMENTS.get(folder.folder_class or '', 'Folder')}"
    parts = [_el("t:FolderId", None, Id=folder.id, ChangeKey=str(folder.version))]
    if shape.wants("folder:ParentFolderId", default=False) and folder.parent is not None:
        parts.append(_el("t:ParentFolderId", None, Id=folder.parent.id,
                         ChangeKey=str(folder.parent.version)))
    if shape.wants("folder:FolderClass", default=False) and folder.folder_class:
        parts.append(_el("t:FolderClass", folder.folder_class))
    if shape.wants("folder:DisplayName"):
        parts.append(_el("t:DisplayName", folder.display_name))
    if shape.wants("folder:TotalCount"):
        parts.append(_el("t:TotalCount", len(folder.items)))
    if shape.wants("folder:ChildFolderCount"):
        parts.append(_el("t:ChildFolderCount", len(folder.children())))
    for uri in shape.extended:
        tag = uri.get("PropertyTag")
        if tag is not None and int(tag, 0) == PR_ATTR_HIDDEN and folder.hidden:
            # A folder without the property set answers nothing for it (ref: extendedproperty).
            parts.append("<t:ExtendedProperty>" + _el("t:ExtendedFieldURI", None, **dict(
                uri.attrib)) + _el("t:Value", "true") + "</t:ExtendedProperty>")
    if shape.wants("folder:EffectiveRights", default=False):
        # The reader's rights on the folder (ref: effectiverights): this server gives every
        # signed-in reader full rights on what it may open.
        rights = ("CreateAssociated", "CreateContents", "CreateHierarchy", "Delete", "Modify",
                  "Read", "ViewPrivateItems")
        parts.append("<t:EffectiveRights>" + "".join(_el(f"t:{r}", "true") for r in rights)
                     + "</t:EffectiveRights>")
    if shape.wants("folder:PermissionSet", default=False):
        parts.append(_permission_set(folder))
    if (shape.wants("folder:UnreadCount") and element == "t:Folder"):
        parts.append(_el("t:UnreadCount", sum(not i.is_read for i in folder.items.values())))
    return f"<{element}>{''.join(parts)}</{element}>"


def _permission_set(folder: Folder) -> str:
    """ref: permissionset-permissionsettype (Permissions of Permission) and
    permissionset-calendarpermissionsettype (CalendarPermissions of CalendarPermission, for a
    calendar folder); each entry's UserId, its rights in the schema's order, its level."""
    calendar = folder.folder_class == "IPF.Appointment"
    entry, level_name = (("CalendarPermission", "CalendarPermissionLevel") if calendar
                         else ("Permission", "PermissionLevel"))
    entries = []
    for user, level in folder.permissions.items():
        if user in ("Default", "Anonymous"):
            identity = _el("t:DistinguishedUser", user)
        else:
            mailbox = folder.owner.tenant.mailboxes.get(user)
            identity = (_el("t:SID", _sid_of(user)) + _el("t:PrimarySmtpAddress", user)
                        + _el("t:DisplayName", mailbox.display_name if mailbox else user))
        rights = CALENDAR_LEVELS[level]
        names = ("CanCreateItems", "CanCreateSubFolders", "IsFolderOwner", "IsFolderVisible",
                 "IsFolderContact")
        flags = "".join(_el(f"t:{n}", _bool(v)) for n, v in zip(names, rights[:5],
                                                                strict=True))
        entries.append(f"<t:{entry}><t:UserId>{identity}</t:UserId>{flags}"
                       + _el("t:EditItems", rights[5]) + _el("t:DeleteItems", rights[6])
                       + _el("t:ReadItems", rights[7])
                       + _el(f"t:{level_name}", level if calendar or level in PERMISSION_LEVELS
                             else "Custom") + f"</t:{entry}>")
    holder = "CalendarPermissions" if calendar else "Permissions"
    return f"<t:PermissionSet><t:{holder}>{''.join(entries)}</t:{holder}></t:PermissionSet>"


def _sid_of(address: str) -> str:
    """A stable, made-up security identifier for a user (the domain part is fixed)."""
    number = int(hashlib.sha256(address.encode()).hexdigest()[:8], 16) % 1_000_000 + 1000
    return f"S-1-5-21-1004336348-1177238915-682003330-{number}"


def _flag_status(item: Item) -> int | None:
    return 2 if item.flagged else None


def _extended_xml(item: Item, shape: Shape) -> str:
    """The extended properties asked for that the item has (ref: extendedproperty: a property
    the item does not carry is left out of the answer)."""
    parts = []
    for uri in shape.extended:
        tag = uri.get("PropertyTag")
        if tag is not None and int(tag, 0) == PR_FLAG_STATUS:
            status = _flag_status(item)
            if status is not None:
                parts.append("<t:ExtendedProperty>" + _el("t:ExtendedFieldURI", None, **dict(
                    uri.attrib)) + _el("t:Value", status) + "</t:ExtendedProperty>")
    return "".join(parts)


def _item_ids(item: Item) -> str:
    return (_el("t:ItemId", None, Id=item.id, ChangeKey=str(item.version))
            + _el("t:ParentFolderId", None, Id=item.folder.id,
                  ChangeKey=str(item.folder.version)))


def _message_parts(item: Item, shape: Shape) -> Iterator[str | bytes]:
    """A message's properties in the schema's order (ref: message-ex15websvcsotherref), the
    MimeContent base64 encoded piece by piece (ref: mimecontent)."""
    element = f"t:{item.kind}"
    yield f"<{element}>"
    if shape.mime:
        yield '<t:MimeContent CharacterSet="UTF-8">'
        for piece in item.mime_chunks():
            yield base64.b64encode(piece)
        yield "</t:MimeContent>"
    yield _el("t:ItemId", None, Id=item.id, ChangeKey=str(item.version))
    if shape.wants("item:ParentFolderId", default=False):
        yield _el("t:ParentFolderId", None, Id=item.folder.id, ChangeKey=str(item.folder.version))
    if shape.wants("item:ItemClass", default=False):
        yield _el("t:ItemClass", "IPM.Note")
    if shape.wants("item:Subject"):
        yield _el("t:Subject", item.subject)
    if shape.wants("item:DateTimeReceived", default=False):
        yield _el("t:DateTimeReceived", _stamp(item.received))
    if shape.wants("item:Size", default=False):
        yield _el("t:Size", item.size)
    if shape.wants("item:Categories", default=False) and item.categories:
        yield ("<t:Categories>" + "".join(_el("t:String", c) for c in item.categories)
               + "</t:Categories>")
    if shape.wants("item:IsDraft", default=False):
        yield _el("t:IsDraft", _bool(item.is_draft))
    if shape.wants("item:DateTimeSent", default=False):
        yield _el("t:DateTimeSent", _stamp(item.received))
    if shape.wants("item:DateTimeCreated", default=False):
        yield _el("t:DateTimeCreated", _stamp(item.received))
    if shape.wants("item:HasAttachments"):
        yield _el("t:HasAttachments", _bool(item.has_attachments))
    yield _extended_xml(item, shape)
    if shape.wants("item:LastModifiedTime", default=False):
        yield _el("t:LastModifiedTime", _stamp(item.received))
    if shape.wants("item:Flag", default=False):
        # FlagStatus: NotFlagged, Flagged or Complete (ref: flagstatus).
        yield ("<t:Flag>" + _el("t:FlagStatus", "Flagged" if item.flagged else "NotFlagged")
               + "</t:Flag>")
    if shape.wants("message:IsRead"):
        yield _el("t:IsRead", _bool(item.is_read))
    yield f"</{element}>"


INDEXED_ELEMENTS = {"EmailAddress": "EmailAddresses", "PhoneNumber": "PhoneNumbers",
                    "ImAddress": "ImAddresses", "PhysicalAddress": "PhysicalAddresses"}
"""Indexed field URIs (``contacts:EmailAddress``) name one entry of a dictionary element."""


STREAMED = frozenset({"MimeContent", "Body", "UniqueBody", "TextBody", "Attachments"})
BEFORE_SIZE = frozenset({"MimeContent", "ItemClass", "Subject", "Sensitivity", "Body",
                         "Attachments", "DateTimeReceived"})
"""What comes before Size in an item (ref: item: ItemType's sequence)."""


def _stored_parts(item: Item, shape: Shape) -> Iterator[str]:
    """An item stored as its EWS XML, as it was given, with its ids first; with IdOnly and
    additional properties, only the elements asked for (ref: additionalproperties)."""
    assert item.element is not None
    wanted = {uri.split(":", 1)[-1].split(":")[0] for uri in shape.fields}
    wanted |= {INDEXED_ELEMENTS[n] for n in list(wanted) if n in INDEXED_ELEMENTS}
    element = f"t:{item.kind}"
    yield f'<{element} xmlns:t="{T}">'
    yield _item_ids(item)
    names = {etree.QName(child).localname for child in item.element}
    if shape.wants("item:ItemClass", default=False) and "ItemClass" not in names:
        yield _el("t:ItemClass", ITEM_CLASSES.get(item.kind, "IPM"))
    size = shape.wants("item:Size", default=False) and "Size" not in names
    for child in item.element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if size and name not in BEFORE_SIZE:
            yield _el("t:Size", item.size)
            size = False
        if (shape.base == "IdOnly" and name not in wanted) or (shape.listing
                                                                and name in STREAMED):
            continue
        yield etree.tostring(child, encoding="unicode", with_tail=False)
    if size:
        yield _el("t:Size", item.size)
    yield f"</{element}>"


def _item_parts(item: Item, shape: Shape) -> Iterator[str | bytes]:
    if item.element is not None:
        return _stored_parts(item, shape)
    return _message_parts(item, shape)


def _response_message(operation: str, body: Iterable[str | bytes] = (),
                      error: EwsError | None = None) -> Iterator[str | bytes]:
    """One ``m:<Operation>ResponseMessage`` (ref: responsecode; an error carries MessageText,
    ResponseCode and DescriptiveLinkKey 0)."""
    tag = f"m:{operation}ResponseMessage"
    if error is not None:
        yield (f'<{tag} ResponseClass="Error">' + _el("m:MessageText", error.text)
               + _el("m:ResponseCode", error.code) + _el("m:DescriptiveLinkKey", 0))
    else:
        yield f'<{tag} ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
    yield from body
    yield f"</{tag}>"


# --- the operations -------------------------------------------------------------------------


@dataclass
class Caller:
    """Who sent a request and for whom it acts."""

    login: str
    mailbox: Mailbox | None
    impersonated: str | None


class Operations:
    """The EWS operations, each answering its ``m:<Operation>Response`` body as pieces."""

    def __init__(self, tenant: EwsTenant, caller: Caller) -> None:
        self.tenant = tenant
        self.caller = caller

    def run(self, request: etree._Element) -> Iterator[str | bytes]:
        """The answer's pieces; an operation this server does not serve is refused before
        anything is sent."""
        operation = etree.QName(request).localname
        method = getattr(self, f"op_{operation}", None)
        if method is None:
            # ref: responsecode, ErrorInvalidRequest: "the request is invalid" (this server
            # does not know the operation).
            raise SoapFault("ErrorInvalidRequest",
                            f"The EWS test server does not serve {operation}.")
        if operation in WHOLE_RESPONSES:
            return method(request)
        return itertools.chain(
            [f'<m:{operation}Response xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'],
            method(request), [f"</m:ResponseMessages></m:{operation}Response>"])

    # folders

    def _store_for(self, mailbox_element: etree._Element | None) -> Mailbox:
        if mailbox_element is not None:
            address = (mailbox_element.findtext(f"{{{T}}}EmailAddress") or "").lower()
            if address and (self.caller.mailbox is None or address != self.caller.mailbox.address):
                if address not in self.tenant.mailboxes:
                    raise EwsError("ErrorNonExistentMailbox",
                                   "The SMTP address has no mailbox associated with it.")
                # Delegate access is not modelled: only the caller's own (or impersonated)
                # mailbox opens (ref: erroraccessdenied in responsecode).
                raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and "
                               "try again.")
        if self.caller.mailbox is None:
            raise EwsError("ErrorMissingEmailAddress", "When making a request as an account "
                           "that does not have a mailbox, you must specify the mailbox primary "
                           "SMTP address for any distinguished folders.")
        return self.caller.mailbox

    def folder(self, element: etree._Element) -> Folder:
        """The folder a ``t:FolderId`` or ``t:DistinguishedFolderId`` names."""
        name = etree.QName(element).localname
        if name == "DistinguishedFolderId":
            distinguished = element.get("Id", "")
            mailbox_element = element.find(f"{{{T}}}Mailbox")
            if distinguished == "publicfoldersroot":
                if mailbox_element is not None:
                    raise EwsError("ErrorInvalidOperation", "It is not valid to specify a "
                                   "mailbox with the public folder root.")
                return self.tenant.public.distinguished["publicfoldersroot"]
            store = self._store_for(mailbox_element)
            found = store.distinguished.get(distinguished)
            if found is None:
                # An archive root of a mailbox without archive, or an id this server does not
                # make (ref: distinguishedfolderid lists them; the code is this server's
                # choice).
                raise EwsError("ErrorFolderNotFound", "The specified folder could not be found "
                               "in the store.")
            return found
        folder_id = element.get("Id", "")
        found = self.tenant.folders.get(folder_id)
        if found is None:
            raise EwsError("ErrorFolderNotFound",
                           "The specified folder could not be found in the store.")
        self._check_access(found.owner)
        return found

    def _check_access(self, owner: Store) -> None:
        if isinstance(owner, PublicFolders):
            return
        if self.caller.mailbox is not owner:
            raise EwsError("ErrorAccessDenied", "Access is denied. Check credentials and try "
                           "again.")

    def _folder_ids(self, request: etree._Element, container: str) -> list[etree._Element]:
        holder = request.find(f"{{{M}}}{container}")
        return [] if holder is None else [e for e in holder if isinstance(e.tag, str)]

    def op_GetFolder(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: getfolder-operation: one response message per folder asked for."""
        shape = Shape.parse(request.find(f"{{{M}}}FolderShape"))
        for element in self._folder_ids(request, "FolderIds"):
            try:
                folder = self.folder(element)
            except EwsError as error:
                yield from _response_message("GetFolder", ["<m:Folders/>"], error)
                continue
            yield from _response_message(
                "GetFolder", ["<m:Folders>", _folder_xml(folder, shape), "</m:Folders>"])

    def op_FindFolder(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: findfolder-operation. Shallow gives the children, Deep every descendant (each
        before its children); "Deep traversal queries cannot be performed on public folders"
        (the error code, ErrorInvalidOperation, is this server's choice). Paged by
        IndexedPageFolderView (ref: indexedpagefolderview)."""
        traversal = request.get("Traversal", "Shallow")
        shape = Shape.parse(request.find(f"{{{M}}}FolderShape"))
        view = request.find(f"{{{M}}}IndexedPageFolderView")
        for element in self._folder_ids(request, "ParentFolderIds"):
            try:
                folder = self.folder(element)
                if traversal == "Deep" and isinstance(folder.owner, PublicFolders):
                    raise EwsError("ErrorInvalidOperation", "Deep traversal queries cannot be "
                                   "performed on public folders.")
                if traversal not in ("Shallow", "Deep"):
                    raise EwsError("ErrorInvalidOperation",
                                   f"The EWS test server does not serve a {traversal} traversal.")
            except EwsError as error:
                yield from _response_message("FindFolder", (), error)
                continue
            found = list(folder.descendants()) if traversal == "Deep" else folder.children()
            page, offset, last = _page(found, view)
            body = [(f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
                    f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="{_bool(last)}">'
                    "<t:Folders>"), *(_folder_xml(f, shape) for f in page),
                    "</t:Folders></m:RootFolder>"]
            yield from _response_message("FindFolder", body)

    # items

    def item(self, element: etree._Element) -> Item:
        found = self.tenant.items.get(element.get("Id", ""))
        if found is None:
            raise EwsError("ErrorItemNotFound",
                           "The specified object was not found in the store.")
        self._check_access(found.folder.owner)
        return found

    def op_GetItem(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: getitem-operation; MimeContent when IncludeMimeContent is true (ref:
        includemimecontent), base64 of the message's bytes (ref: mimecontent)."""
        shape = Shape.parse(request.find(f"{{{M}}}ItemShape"))
        for element in self._folder_ids(request, "ItemIds"):
            try:
                item = self.item(element)
            except EwsError as error:
                yield from _response_message("GetItem", ["<m:Items/>"], error)
                continue
            yield from _response_message(
                "GetItem", itertools.chain(["<m:Items>"], _item_parts(item, shape), ["</m:Items>"]))

    def op_FindItem(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: finditem-operation, Shallow traversal, paged by IndexedPageItemView, newest
        received first (the order without SortOrder is this server's choice; SortOrder on
        DateTimeReceived or Subject is followed, ref: sortorder). No MimeContent nor Body
        (FindItem gives no streamable property whole). A Restriction or another sort is
        answered ErrorUnsupportedQueryFilter: this server does not evaluate them."""
        shape = Shape.parse(request.find(f"{{{M}}}ItemShape"))
        shape.mime, shape.listing = False, True
        view = request.find(f"{{{M}}}IndexedPageItemView")
        for element in self._folder_ids(request, "ParentFolderIds"):
            try:
                folder = self.folder(element)
                if request.find(f"{{{M}}}CalendarView") is not None:
                    # Expanding a series into occurrences is not modelled: refused, not
                    # answered with masters as if they were occurrences.
                    raise EwsError("ErrorInvalidRequest",
                                   "The EWS test server does not expand calendar views.")
                if request.find(f"{{{M}}}Restriction") is not None:
                    raise EwsError("ErrorUnsupportedQueryFilter",
                                   "The EWS test server does not evaluate restrictions.")
                order = _sort_order(request.find(f"{{{M}}}SortOrder"))
            except EwsError as error:
                yield from _response_message("FindItem", (), error)
                continue
            found = sorted(folder.items.values(), key=order[0], reverse=order[1])
            page, offset, last = _page(found, view)
            body = itertools.chain(
                [(f'<m:RootFolder IndexedPagingOffset="{offset + len(page)}" '
                 f'TotalItemsInView="{len(found)}" IncludesLastItemInRange="{_bool(last)}">'
                 "<t:Items>")],
                *(_item_parts(i, shape) for i in page),
                ["</t:Items></m:RootFolder>"])
            yield from _response_message("FindItem", body)

    def op_GetAttachment(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: getattachment-operation: each attachment with its Content in base64."""
        for element in self._folder_ids(request, "AttachmentIds"):
            attachment_id = element.get("Id", "")
            owner = next((i for i in self.tenant.items.values()
                          if attachment_id in i.attachments), None)
            if owner is None:
                yield from _response_message("GetAttachment", ["<m:Attachments/>"], EwsError(
                    "ErrorItemNotFound", "The specified object was not found in the store."))
                continue
            try:
                self._check_access(owner.folder.owner)
            except EwsError as error:
                yield from _response_message("GetAttachment", ["<m:Attachments/>"], error)
                continue
            attachment = owner.attachments[attachment_id]
            element_name = etree.QName(attachment.element).localname
            inner = "".join(etree.tostring(c, encoding="unicode", with_tail=False)
                            for c in attachment.element if isinstance(c.tag, str))
            body = [f'<m:Attachments><t:{element_name}>', inner,
                    _el("t:Content", base64.b64encode(attachment.content).decode()),
                    f"</t:{element_name}></m:Attachments>"]
            yield from _response_message("GetAttachment", body)

    def op_ExpandDL(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: expanddl-operation: a personal distribution list named by its ItemId gives its
        members' Mailbox elements."""
        mailbox = request.find(f"{{{M}}}Mailbox")
        item_id = mailbox.find(f"{{{T}}}ItemId") if mailbox is not None else None
        try:
            if item_id is None:
                # Public distribution groups live in the directory, which is not modelled.
                raise EwsError("ErrorNameResolutionNoResults", "No results were found.")
            item = self.item(item_id)
            if item.kind != "DistributionList" or item.element is None:
                raise EwsError("ErrorItemNotFound",
                               "The specified object was not found in the store.")
        except EwsError as error:
            yield from _response_message("ExpandDL", (), error)
            return
        members = [m.find(f"{{{T}}}Mailbox") for m in item.element.iterfind(
            f"{{{T}}}Members/{{{T}}}Member")]
        members = [m for m in members if m is not None]
        body = [(f'<m:DLExpansion TotalItemsInView="{len(members)}" '
                'IncludesLastItemInRange="true">'),
                *(etree.tostring(m, encoding="unicode", with_tail=False) for m in members),
                "</m:DLExpansion>"]
        yield from _response_message("ExpandDL", body)

    # synchronisation

    def _new_state(self, scope: str, snapshot: dict[str, tuple[int, bool]]) -> str:
        token = base64.b64encode(secrets.token_bytes(33)).decode()
        with self.tenant.lock:
            self.tenant.sync_states[token] = (scope, snapshot)
        return token

    def _old_state(self, request: etree._Element, scope: str) -> dict[str, tuple[int, bool]]:
        token = request.findtext(f"{{{M}}}SyncState")
        if not token:
            return {}
        stored = self.tenant.sync_states.get(token)
        if stored is None or stored[0] != scope:
            # ref: responsecode, ErrorInvalidSyncStateData: "the sync state data is corrupt or
            # otherwise invalid" (here: unknown, or another folder's).
            raise EwsError("ErrorInvalidSyncStateData",
                           "Synchronization state data is corrupt or otherwise invalid.")
        return dict(stored[1])

    def op_SyncFolderItems(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: syncfolderitems-operation. Changes since the SyncState (none: every item, as
        Create), at most MaxChangesReturned (1 to 512, ref: maxchangesreturned), deletions
        first then the rest in the order they happened; IncludesLastItemInRange false while
        more remain. An item created then changed before the client saw it is one Create; a
        change of the read flag alone is a ReadFlagChange (ref: readflagchange). The state is
        opaque (ref: syncstate): a token for what the client has been told, kept here."""
        shape = Shape.parse(request.find(f"{{{M}}}ItemShape"))
        shape.mime, shape.listing = False, True
        ignored = {e.get("Id") for e in request.iterfind(f"{{{M}}}Ignore/{{{T}}}ItemId")}
        try:
            holder = request.find(f"{{{M}}}SyncFolderId")
            if holder is None or not len(holder):
                raise EwsError("ErrorInvalidRequest", "SyncFolderId is required.")
            folder = self.folder(holder[0])
            if isinstance(folder.owner, PublicFolders):
                raise EwsError("ErrorInvalidOperation", PUBLIC_SYNC)
            known = self._old_state(request, folder.id)
            limit = int(request.findtext(f"{{{M}}}MaxChangesReturned") or "0")
            if not 1 <= limit <= MAX_CHANGES:
                raise EwsError("ErrorInvalidArgument",
                               "MaxChangesReturned must be between 1 and 512.")
        except EwsError as error:
            # An empty state and the range flag come with the error, as Exchange answers.
            yield from _response_message("SyncFolderItems", [
                "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>"],
                error)
            return
        with self.tenant.lock:
            current = sorted(folder.items.values(), key=lambda i: i.seq)
            changes: list[tuple[str, Item | str]] = [
                ("Delete", gone) for gone in known if gone not in folder.items]
            for item in current:
                if item.id in ignored:
                    continue
                seen = known.get(item.id)
                if seen is None:
                    changes.append(("Create", item))
                elif seen[0] != item.version:
                    changes.append(("Update", item))
                elif seen[1] != item.is_read:
                    changes.append(("ReadFlagChange", item))
            sent, more = changes[:limit], len(changes) > limit
            for kind, target in sent:
                if isinstance(target, str):
                    known.pop(target, None)
                else:
                    known[target.id] = (target.version, target.is_read)
        state = self._new_state(folder.id, known)
        body: list[Iterable[str | bytes]] = [[
            _el("m:SyncState", state), _el("m:IncludesLastItemInRange", _bool(not more)),
            "<m:Changes>"]]
        for kind, target in sent:
            if isinstance(target, str):
                body.append([f"<t:Delete>{_el('t:ItemId', None, Id=target)}</t:Delete>"])
            elif kind == "ReadFlagChange":
                body.append(["<t:ReadFlagChange>",
                             _el("t:ItemId", None, Id=target.id, ChangeKey=str(target.version)),
                             _el("t:IsRead", _bool(target.is_read)), "</t:ReadFlagChange>"])
            else:
                body.append(itertools.chain([f"<t:{kind}>"], _item_parts(target, shape),
                                            [f"</t:{kind}>"]))
        body.append(["</m:Changes>"])
        yield from _response_message("SyncFolderItems", itertools.chain(*body))

    def op_SyncFolderHierarchy(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: syncfolderhierarchy-operation: the folders below SyncFolderId (without it, the
        whole mailbox below ``root``: this server's reading of "the mailbox"), Create, Update
        and Delete since the SyncState, all at once (the operation has no page size)."""
        shape = Shape.parse(request.find(f"{{{M}}}FolderShape"))
        try:
            holder = request.find(f"{{{M}}}SyncFolderId")
            if holder is not None and len(holder):
                top = self.folder(holder[0])
                if isinstance(top.owner, PublicFolders):
                    raise EwsError("ErrorInvalidOperation", PUBLIC_SYNC)
            else:
                top = self._store_for(None).distinguished["root"]
            known = self._old_state(request, "hierarchy:" + top.id)
        except EwsError as error:
            yield from _response_message("SyncFolderHierarchy", [
                "<m:SyncState/><m:IncludesLastFolderInRange>true</m:IncludesLastFolderInRange>"],
                error)
            return
        with self.tenant.lock:
            current = list(top.descendants())
            ids = {f.id for f in current}
            changes: list[str] = [f"<t:Delete>{_el('t:FolderId', None, Id=gone)}</t:Delete>"
                                  for gone in known if gone not in ids]
            for folder in current:
                seen = known.get(folder.id)
                if seen is None or seen[0] != folder.version:
                    kind = "Create" if seen is None else "Update"
                    changes.append(f"<t:{kind}>{_folder_xml(folder, shape)}</t:{kind}>")
            snapshot = {f.id: (f.version, False) for f in current}
        state = self._new_state("hierarchy:" + top.id, snapshot)
        yield from _response_message("SyncFolderHierarchy", [
            _el("m:SyncState", state), _el("m:IncludesLastFolderInRange", "true"),
            "<m:Changes>", *changes, "</m:Changes>"])

    # delegates and time zones

    def op_GetDelegate(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: getdelegate-operation, getdelegateresponse: the response message itself holds
        a DelegateUserResponseMessageType per delegate (those of UserIds, if given), then
        DeliverMeetingRequests; permissions only with IncludePermissions="true"."""
        head = f'<m:GetDelegateResponse xmlns:m="{M}" xmlns:t="{T}" '
        try:
            mailbox = self._store_for(request.find(f"{{{M}}}Mailbox"))
        except EwsError as error:
            yield (head + 'ResponseClass="Error">' + _el("m:MessageText", error.text)
                   + _el("m:ResponseCode", error.code) + _el("m:DescriptiveLinkKey", 0)
                   + "</m:GetDelegateResponse>")
            return
        wanted = {e.text.lower() for e in request.iterfind(
            f"{{{M}}}UserIds/{{{T}}}UserId/{{{T}}}PrimarySmtpAddress") if e.text}
        permissions = request.get("IncludePermissions") == "true"
        yield head + 'ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        yield "<m:ResponseMessages>"
        for delegate in mailbox.delegates:
            if wanted and delegate.address not in wanted:
                continue
            person = self.tenant.mailboxes.get(delegate.address)
            parts = [('<m:DelegateUserResponseMessageType ResponseClass="Success">'
                     "<m:ResponseCode>NoError</m:ResponseCode><m:DelegateUser><t:UserId>"),
                     _el("t:SID", _sid_of(delegate.address)),
                     _el("t:PrimarySmtpAddress", delegate.address),
                     _el("t:DisplayName", person.display_name if person else delegate.address),
                     "</t:UserId>"]
            if permissions:
                parts.append("<t:DelegatePermissions>" + "".join(
                    _el(f"t:{name}FolderPermissionLevel", level)
                    for name, level in delegate.levels.items()) + "</t:DelegatePermissions>")
            parts += [_el("t:ReceiveCopiesOfMeetingMessages", _bool(delegate.receive_copies)),
                      _el("t:ViewPrivateItems", _bool(delegate.view_private)),
                      "</m:DelegateUser></m:DelegateUserResponseMessageType>"]
            yield "".join(parts)
        yield "</m:ResponseMessages>"
        yield _el("m:DeliverMeetingRequests", mailbox.deliver_meeting_requests)
        yield "</m:GetDelegateResponse>"

    def op_GetServerTimeZones(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: getservertimezones-operation: the definitions of the Windows zones asked for
        (all the server knows without Ids); this server knows Romance Standard Time and UTC.
        An Id it does not know is ErrorTimeZone (ref: responsecode)."""
        from tests.ews_seed import SERVER_ZONES

        ids = [e.text or "" for e in request.iterfind(f"{{{M}}}Ids/{{{T}}}Id")] or list(
            SERVER_ZONES)
        unknown = [i for i in ids if i not in SERVER_ZONES]
        if unknown:
            yield from _response_message("GetServerTimeZones", (), EwsError(
                "ErrorTimeZone", f"The time zone {unknown[0]!r} is not known."))
            return
        full = request.get("ReturnFullTimeZoneData", "true") == "true"
        definitions = []
        for zone_id in ids:
            definition = SERVER_ZONES[zone_id]("TimeZoneDefinition")
            if not full:
                definition = definition.split("><t:Periods>", 1)[0] + "/>"
            definitions.append(definition)
        yield from _response_message("GetServerTimeZones", [
            "<m:TimeZoneDefinitions>", *definitions, "</m:TimeZoneDefinitions>"])

    # identifiers

    def op_ConvertId(self, request: etree._Element) -> Iterator[str | bytes]:
        """ref: convertid-operation and convertidresponsemessage: one response message per id,
        its ``m:AlternateId`` typed ``t:AlternateIdType`` (in the messages namespace, as the
        reference places it). Formats: EwsId, EwsLegacyId, EntryId (base64) and HexEntryId;
        others are answered ErrorInvalidIdMalformed (this server's choice)."""
        destination = request.get("DestinationFormat", "EwsId")
        holder = request.find(f"{{{M}}}SourceIds")
        for source in (holder if holder is not None else []):
            if not isinstance(source.tag, str):
                continue
            try:
                raw = _decode_id(source.get("Format", ""), source.get("Id", ""))
                converted = _encode_id(destination, raw)
            except EwsError as error:
                yield from _response_message("ConvertId", (), error)
                continue
            attrs = {"Format": destination, "Id": converted,
                     "Mailbox": source.get("Mailbox", "")}
            yield from _response_message("ConvertId", [
                f'<m:AlternateId xmlns:xsi="{XSI}" xsi:type="t:AlternateIdType"'
                + "".join(f" {k}={quoteattr(v)}" for k, v in attrs.items()) + "/>"])


SORT_KEYS: dict[str, Callable[[Item], Any]] = {
    "item:DateTimeReceived": lambda item: item.received,
    "item:Subject": lambda item: item.subject,
}


def _sort_order(element: etree._Element | None) -> tuple[Callable[[Item], Any], bool]:
    """The key and direction of a FindItem's SortOrder (its first FieldOrder)."""
    if element is None:
        return SORT_KEYS["item:DateTimeReceived"], True
    order = element.find(f"{{{T}}}FieldOrder")
    uri = order.find(f"{{{T}}}FieldURI") if order is not None else None
    key = SORT_KEYS.get(uri.get("FieldURI", "") if uri is not None else "")
    if order is None or key is None:
        raise EwsError("ErrorUnsupportedQueryFilter",
                       "The EWS test server sorts on DateTimeReceived or Subject only.")
    return key, order.get("Order", "Ascending") == "Descending"


def _decode_id(format_name: str, value: str) -> bytes:
    try:
        if format_name in ("EwsId", "EwsLegacyId", "EntryId"):
            raw = base64.b64decode(value, validate=True)
        elif format_name == "HexEntryId":
            raw = bytes.fromhex(value)
        else:
            raise ValueError(format_name)
    except ValueError:
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.") from None
    if len(raw) != 21 or raw[:4] != b"\x00\x00\x00\x01":
        raise EwsError("ErrorInvalidIdMalformed", "Id is malformed.")
    return raw


def _encode_id(format_name: str, raw: bytes) -> str:
    if format_name in ("EwsId", "EwsLegacyId", "EntryId"):
        return base64.b64encode(raw).decode()
    if format_name == "HexEntryId":
        return raw.hex().upper()
    raise EwsError("ErrorInvalidIdMalformed", f"The EWS test server does not make {format_name}.")


def _page(found: list[Any], view: etree._Element | None) -> tuple[list[Any], int, bool]:
    """A page of an indexed view (ref: indexedpageitemview): from Offset counted from the
    Beginning or the End, at most MaxEntriesReturned."""
    if view is None:
        return found, 0, True
    offset = int(view.get("Offset", "0"))
    limit = int(view.get("MaxEntriesReturned", str(len(found) or 1)))
    if view.get("BasePoint") == "End":
        offset = max(len(found) - offset - limit, 0)
    page = found[offset:offset + limit]
    return page, offset, offset + len(page) >= len(found)


# --- HTTP, authentication, throttling -------------------------------------------------------

_NTLM_STORE_LOCK = threading.Lock()


@contextlib.contextmanager
def _ntlm_users(path: Path) -> Iterator[None]:
    """pyspnego's NTLM acceptor reads its user file from ``NTLM_USER_FILE`` when it is made and
    when it checks an answer: servers of one process take turns pointing it at their own."""
    with _NTLM_STORE_LOCK:
        previous = os.environ.get("NTLM_USER_FILE")
        os.environ["NTLM_USER_FILE"] = str(path)
        try:
            yield
        finally:
            if previous is None:
                del os.environ["NTLM_USER_FILE"]
            else:
                os.environ["NTLM_USER_FILE"] = previous


def _fault(code: str, text: str, message_xml: str = "") -> str:
    """A SOAP fault as Exchange gives one: the code in the types namespace, the detail's
    ResponseCode and Message in the errors namespace, MessageXml in the types namespace
    (ref: ews-throttling-in-exchange shows ErrorServerBusy so)."""
    return (f'<s:Fault><faultcode xmlns:a="{T}">a:{code}</faultcode>'
            f'<faultstring xml:lang="en-US">{escape(text)}</faultstring><detail>'
            f'<e:ResponseCode xmlns:e="{E}">{code}</e:ResponseCode>'
            f'<e:Message xmlns:e="{E}">{escape(text)}</e:Message>{message_xml}'
            "</detail></s:Fault>")


class EwsHandler(BaseHTTPRequestHandler):
    """One connection. NTLM signs in a connection, not a request (IIS keeps the user for the
    connection's later requests), so the handler keeps its context and user."""

    protocol_version = "HTTP/1.1"
    server: EwsHTTPServer
    ntlm: Any = None
    ntlm_user: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test reads ``.requests`` and ``.stats``."""

    def _plain(self, status: int, text: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        body = text.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _challenge(self, token: str | None = None) -> None:
        """401 with what IIS offers (Negotiate, NTLM, Basic with the host as realm), or the NTLM
        challenge in the scheme the client used."""
        self.server.owner.count("unauthorised" if token is None else "ntlm_challenges")
        if token is not None:
            headers = [("WWW-Authenticate", token)]
        else:
            headers = []
            if "ntlm" in self.server.owner.auth:
                headers += [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
            if "basic" in self.server.owner.auth:
                headers.append(("WWW-Authenticate", 'Basic realm="127.0.0.1"'))
            if "oauth" in self.server.owner.auth:
                headers.append(("WWW-Authenticate", "Bearer"))
        self._plain(401, "401 - Unauthorized: Access is denied due to invalid credentials.",
                    headers)

    def _authenticate(self) -> str | None:
        """The login of the request's user, or None once a 401 has been answered."""
        owner = self.server.owner
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic" and "basic" in owner.auth:
            try:
                login, _, password = base64.b64decode(value).decode().partition(":")
            except ValueError:
                login = password = ""
            expected = owner.tenant.credentials().get(login.lower())
            if expected is not None and secrets.compare_digest(expected, password):
                return login.lower()
            self._challenge()
            return None
        if scheme in ("ntlm", "negotiate") and "ntlm" in owner.auth:
            return self._ntlm_step(scheme, value)
        if scheme == "bearer" and "oauth" in owner.auth:
            login = owner.tenant.tokens.get(value.strip())
            if login is not None:
                return login
            self._challenge()
            return None
        if not header and self.ntlm_user is not None:
            return self.ntlm_user
        self._challenge()
        return None

    def _ntlm_step(self, scheme: str, value: str) -> str | None:
        owner = self.server.owner
        label = "NTLM" if scheme == "ntlm" else "Negotiate"
        try:
            token = base64.b64decode(value)
        except ValueError:
            token = b""
        if not token.startswith(b"NTLMSSP\x00") or len(token) < 12:
            self._challenge()
            return None
        message_type = int.from_bytes(token[8:12], "little")
        if message_type == 1:
            with _ntlm_users(owner.ntlm_users()):
                self.ntlm = spnego.server(protocol="ntlm")
            self.ntlm_user = None
            challenge = self.ntlm.step(token)
            self._challenge(f"{label} {base64.b64encode(challenge or b'').decode()}")
            return None
        if message_type == 3 and self.ntlm is not None:
            context, self.ntlm = self.ntlm, None
            try:
                with _ntlm_users(owner.ntlm_users()):
                    context.step(token)
            except spnego.exceptions.SpnegoError:
                self._challenge()
                return None
            principal = str(context.client_principal or "")
            login = owner.login_of(principal)
            if login is None:
                self._challenge()
                return None
            self.ntlm_user = login
            return login
        self._challenge()
        return None

    def do_GET(self) -> None:
        # EWS answers POSTed SOAP only; IIS gives the WSDL or an error page on GET: this server
        # asks for credentials, then says the method is not allowed.
        if self._authenticate() is not None:
            self._plain(405, "405 - Method not allowed.")

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        place = self.path.split("?", 1)[0].lower()
        if place not in (PATH.lower(), AUTODISCOVER_PATH.lower()):
            self._plain(404, "404 - File or directory not found.")
            return
        login = self._authenticate()
        if login is None:
            return
        if place == AUTODISCOVER_PATH.lower():
            self._autodiscover(body)
            return
        try:
            request = owner.prepare(login, body)
        except SoapFault as fault:
            self._answer(500, owner.version_header(), _fault(fault.code, fault.text,
                                                             fault.message_xml))
            return
        with owner.admitted(request.budget) as refused:
            if refused is not None and refused.per_item:
                self._answer(200, owner.version_header(), refused.messages(request))
                return
            if refused is not None:
                self._answer(500, owner.version_header(), _fault(
                    refused.code, refused.text,
                    f'<t:MessageXml xmlns:t="{T}">{refused.values}</t:MessageXml>'))
                return
            owner.record(request)
            self._answer(200, owner.version_header(), request.pieces)

    def _autodiscover(self, body: bytes) -> None:
        """ref: pox-autodiscover-request-for-exchange, pox-autodiscover-response-for-exchange:
        the request names an ``EMailAddress``; the answer gives the mailbox's settings, the EWS
        address in ``EwsUrl`` of its ``EXCH`` (inside the organisation) and ``EXPR`` (outside)
        protocols, or an ``Error`` whose ``ErrorCode`` is 500 for an address the organisation
        does not know. An address of ``autodiscover_redirects`` answers ``redirectAddr`` with
        the address to ask about instead (ref: redirectaddr-pox)."""
        owner = self.server.owner
        try:
            request = etree.fromstring(body, etree.XMLParser(resolve_entities=False,
                                                             no_network=True))
            address = (request.findtext(f"{{{AUTODISCOVER_REQUEST}}}Request/"
                                        f"{{{AUTODISCOVER_REQUEST}}}EMailAddress") or "").strip()
        except etree.XMLSyntaxError:
            address = ""
        owner.count("autodiscover")
        redirect = owner.tenant.autodiscover_redirects.get(address.lower())
        mailbox = owner.tenant.mailboxes.get(address.lower())
        if redirect is not None:
            account = ("<Account><AccountType>email</AccountType><Action>redirectAddr</Action>"
                       f"<RedirectAddr>{escape(redirect)}</RedirectAddr></Account>")
        elif mailbox is not None:
            protocols = "".join(f"<Protocol><Type>{kind}</Type><EwsUrl>{escape(owner.url)}"
                                "</EwsUrl></Protocol>" for kind in ("EXCH", "EXPR"))
            account = ("<Account><AccountType>email</AccountType><Action>settings</Action>"
                       f"{protocols}</Account>")
        else:
            answer = (f'<Autodiscover xmlns="{AUTODISCOVER_RESPONSE}"><Response>'
                      '<Error Time="00:00:00" Id="1"><ErrorCode>500</ErrorCode>'
                      "<Message>The email address can't be found.</Message><DebugData/>"
                      "</Error></Response></Autodiscover>")
            self._answer_xml(answer)
            return
        user = (f"<User><DisplayName>{escape(mailbox.display_name if mailbox else '')}"
                f"</DisplayName><AutoDiscoverSMTPAddress>{escape(address)}"
                "</AutoDiscoverSMTPAddress></User>") if redirect is None else ""
        self._answer_xml(f'<Autodiscover xmlns="{AUTODISCOVER_RESPONSE}">'
                         f'<Response xmlns="{AUTODISCOVER_OUTLOOK}">{user}{account}'
                         "</Response></Autodiscover>")

    def _answer_xml(self, text: str) -> None:
        data = ('<?xml version="1.0" encoding="utf-8"?>' + text).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, status: int, header: str | None, body: str | Iterable[str | bytes]) -> None:
        """The SOAP envelope, sent chunked as it is made (a GetItem of a big message leaves in
        pieces of about 64 KiB; none is ever held whole)."""
        owner = self.server.owner
        if owner.delay:
            time.sleep(owner.delay)
        self.send_response(status)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-EWS-Test-Server", "bascule")
        self.end_headers()
        pieces = [body] if isinstance(body, str) else body
        head = (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{SOAP}">'
                + (f"<s:Header>{header}</s:Header>" if header else "") + "<s:Body>")
        buffer = bytearray(head.encode())
        for piece in itertools.chain(pieces, ["</s:Body></s:Envelope>"]):
            buffer += piece.encode() if isinstance(piece, str) else piece
            if len(buffer) >= 64 * 1024:
                self._chunk(buffer)
                buffer = bytearray()
        if buffer:
            self._chunk(buffer)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytearray) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode())
        self.wfile.write(data)
        self.wfile.write(b"\r\n")


@dataclass
class Request:
    """A request ready to be answered: its operation, caller, the throttling budget it is
    charged to, and the answer's pieces (made as they are sent)."""

    operation: str
    caller: Caller
    budget: str
    pieces: Iterator[str | bytes]
    element: etree._Element


ID_LISTS = {"GetItem": "ItemIds", "GetFolder": "FolderIds", "GetAttachment": "AttachmentIds",
            "ConvertId": "SourceIds"}
"""The list of ids of the operations that answer one response message per id."""


@dataclass
class Refusal:
    """A request throttling refuses: its code, text and MessageXml values, answered as a
    fault or, ``per_item``, as every response message of the operation's answer."""

    code: str
    text: str
    values: str
    per_item: bool = False

    def messages(self, request: Request) -> Iterator[str]:
        holder = request.element.find(f"{{{M}}}{ID_LISTS.get(request.operation, '')}")
        count = max(1, len([e for e in holder if isinstance(e.tag, str)])
                    if holder is not None else 1)
        operation = request.operation
        yield f'<m:{operation}Response xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
        for _ in range(count):
            yield (f'<m:{operation}ResponseMessage ResponseClass="Error">'
                   + _el("m:MessageText", self.text) + _el("m:ResponseCode", self.code)
                   + _el("m:DescriptiveLinkKey", 0)
                   + f"<m:MessageXml>{self.values}</m:MessageXml>"
                   + f"</m:{operation}ResponseMessage>")
        yield f"</m:ResponseMessages></m:{operation}Response>"


class EwsHTTPServer(TlsHTTPServer):
    """The EWS endpoint's HTTPS server."""

    def __init__(self, owner: EwsServer, certificates: TestCertificates) -> None:
        super().__init__(EwsHandler, certificates)
        self.owner = owner

    def tls_refused(self) -> None:
        self.owner.count("tls_refused")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is not the server's error; anything else is
        kept in ``EwsServer.errors`` (an answer cut short by it reaches the client as a broken
        connection, which says little)."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, ssl.SSLError, TimeoutError)):
            with self.owner._lock:
                self.owner.errors.append(traceback.format_exc())


class EwsServer:
    """The EWS endpoint over ``tenant``: see the module's docstring."""

    def __init__(self, tenant: EwsTenant, *, auth: Iterable[str] = ("basic", "ntlm"),
                 version: str = "Exchange2016",
                 certificates: TestCertificates | None = None) -> None:
        if version not in SERVER_VERSIONS:
            raise ValueError(f"version is one of {sorted(SERVER_VERSIONS)}")
        self.tenant = tenant
        self.auth = frozenset(a.lower() for a in auth)
        self.version = version
        self.requests: list[tuple[str, str, str | None]] = []
        self.stats: Counter[str] = Counter()
        self.errors: list[str] = []
        """Tracebacks of the server's own failures (none, in a good run)."""
        self.delay = 0.0
        self._lock = threading.Lock()
        self._busy: list[tuple[int, bool]] = []
        self._limit: int | None = None
        self._in_flight: Counter[str] = Counter()
        self._folder = TemporaryDirectory(prefix="ews-server-")
        self._certificates = certificates or make_test_certificates(
            Path(self._folder.name) / "tls")
        self._http: EwsHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.service_password = ""
        """Set by the ``ews_server`` fixture: the service account's password."""

    # switches

    def busy(self, count: int, back_off_ms: int = 50, *, per_item: bool = False) -> None:
        """The next ``count`` requests answer ErrorServerBusy: as a SOAP fault, or with
        ``per_item`` as an answer whose every response message is that error (Exchange
        gives both; ref: responsecode lists ErrorServerBusy for response messages)."""
        with self._lock:
            self._busy.extend([(back_off_ms, per_item)] * count)

    def max_concurrency(self, n: int | None) -> None:
        self._limit = n

    def latency(self, seconds: float) -> None:
        self.delay = seconds

    def count(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.stats[name] += by

    # where it listens

    @property
    def ca_file(self) -> Path:
        return self._certificates.ca_file

    @property
    def port(self) -> int:
        assert self._http is not None, "the server is not started"
        return self._http.server_address[1]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{PATH}"

    def start(self) -> Self:
        self._http = EwsHTTPServer(self, self._certificates)
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="ews-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._http = None
        self._folder.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # authentication

    def ntlm_users(self) -> Path:
        """The NTLM user file (Heimdal format, ``DOMAIN:USER:PASSWORD``): each login in UPN form
        with no domain, and ``DOMAIN\\name`` for the part before the ``@``. The format cannot
        hold a password with a colon: such a password is refused here, not mangled."""
        lines = []
        for login, password in self.tenant.credentials().items():
            if ":" in password:
                raise ValueError(f"the NTLM user file cannot hold the password of {login}")
            lines.append(f":{login}:{password}")
            lines.append(f"{self.tenant.netbios_domain}:{login.split('@')[0]}:{password}")
        # Written aside then moved in place: a handshake on another connection may be reading it.
        path = Path(self._folder.name) / "ntlm-users"
        fresh = path.with_name(f"ntlm-users.{threading.get_ident()}")
        fresh.write_text("\n".join(lines) + "\n")
        fresh.replace(path)
        return path

    def login_of(self, principal: str) -> str | None:
        """The login an NTLM principal (``DOMAIN\\user`` or ``user@domain``) signs in as."""
        logins = self.tenant.credentials()
        domain, _, user = principal.rpartition("\\")
        user = user.lower()
        if user in logins:
            return user
        if domain.upper() == self.tenant.netbios_domain:
            return next((login for login in logins if login.split("@")[0] == user), None)
        return None

    # admission

    @contextlib.contextmanager
    def admitted(self, budget: str) -> Iterator[Refusal | None]:
        """Throttling first (ErrorServerBusy with BackOffMilliseconds, ref:
        ews-throttling-in-exchange, "Errors generated when throttling limits are exceeded"),
        then the budget's concurrency (ErrorExceededConnectionCount: "more concurrent requests
        against the server than are allowed by a user's policy"). Yields the fault to answer,
        or None."""
        with self._lock:
            if self._busy:
                back_off, per_item = self._busy.pop(0)
                self.stats["busy"] += 1
                yield Refusal("ErrorServerBusy",
                              "The server cannot service this request right now. Try again "
                              "later.", f'<t:Value Name="BackOffMilliseconds">{back_off}'
                              "</t:Value>", per_item)
                return
            self._in_flight[budget] += 1
            in_flight = self._in_flight[budget]
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], in_flight)
        try:
            if self._limit is not None and in_flight > self._limit:
                self.count("refused_concurrency")
                # The MessageXml's values are those Exchange gives with it, as quoted from the
                # field (OfficeDev/ews-managed-api issue 293): the policy part and its limit.
                policy = (f"This operation exceeds the throttling budget for policy part "
                          f"'MaxConcurrency', policy value '{self._limit}', Budget type: 'Ews'. "
                          "Suggested backoff time 0 ms.")
                yield Refusal("ErrorExceededConnectionCount",
                              "You have exceeded the available concurrent connections for your "
                              "account. Try again once your other requests have completed.",
                              '<t:Value Name="Policy">MaxConcurrency</t:Value>'
                              f'<t:Value Name="MaxConcurrencyLimit">{self._limit}</t:Value>'
                              f'<t:Value Name="ErrorMessage">{escape(policy)}</t:Value>')
            else:
                yield None
        finally:
            with self._lock:
                self._in_flight[budget] -= 1

    # SOAP

    def version_header(self) -> str:
        """ref: serverversioninfo, in the SOAP header of every answer."""
        (major, minor, build, revision), schema = SERVER_VERSIONS[self.version]
        return (f'<h:ServerVersionInfo xmlns:h="{T}" MajorVersion="{major}" '
                f'MinorVersion="{minor}" MajorBuildNumber="{build}" '
                f'MinorBuildNumber="{revision}" Version="{schema}"/>')

    def prepare(self, login: str, body: bytes) -> Request:
        """One request from ``login``, checked as far as it can be before it is admitted:
        the envelope, the version, the impersonation and the operation."""
        try:
            envelope = etree.fromstring(body, etree.XMLParser(resolve_entities=False,
                                                              no_network=True))
        except etree.XMLSyntaxError as error:
            raise SoapFault("ErrorSchemaValidation",
                            f"The request failed schema validation: {error}") from None
        header = envelope.find(f"{{{SOAP}}}Header")
        soap_body = envelope.find(f"{{{SOAP}}}Body")
        if soap_body is None or not len(soap_body):
            raise SoapFault("ErrorInvalidRequest", "The request is invalid.")
        request = soap_body[0]
        self._check_version(header)
        caller = self._caller(login, header)
        # With impersonation, Exchange 2013 and later charge a copy of the target mailbox's
        # budget, shared by every service account impersonating it; Exchange 2010 charges the
        # service account ("More throttling changes for Exchange Online", ews-throttling-in-
        # exchange, "Throttling considerations for applications that use EWS impersonation").
        budget = (f"impersonating:{caller.impersonated}"
                  if caller.impersonated and not self.version.startswith("Exchange2010")
                  else login)
        return Request(etree.QName(request).localname, caller, budget,
                       Operations(self.tenant, caller).run(request), request)

    def record(self, request: Request) -> None:
        with self._lock:
            mailbox = request.caller.mailbox
            self.requests.append((request.operation, mailbox.address if mailbox else "",
                                  request.caller.impersonated))
            self.stats[request.operation] += 1

    def _check_version(self, header: etree._Element | None) -> None:
        """RequestServerVersion (ref: requestserverversion; without it the request is read as
        Exchange2007). A version above what this server runs is ErrorInvalidServerVersion
        (ref: responsecode)."""
        asked = "Exchange2007"
        if header is not None:
            element = header.find(f"{{{T}}}RequestServerVersion")
            if element is not None:
                asked = element.get("Version", "")
        if asked not in REQUEST_VERSIONS:
            raise SoapFault("ErrorInvalidServerVersion",
                            "The specified server version is invalid.")
        highest = HIGHEST_REQUEST[self.version]
        if REQUEST_VERSIONS.index(asked) > REQUEST_VERSIONS.index(highest):
            raise SoapFault("ErrorInvalidServerVersion",
                            "The specified server version is invalid.")

    def _caller(self, login: str, header: etree._Element | None) -> Caller:
        """ExchangeImpersonation (ref: exchangeimpersonation, connectingsid): the signed-in
        account must hold ApplicationImpersonation, else ErrorImpersonateUserDenied; an
        address without a mailbox is ErrorNonExistentMailbox. Both are SOAP faults: the
        request as a whole is refused."""
        own = self.tenant.mailboxes.get(login)
        impersonation = header.find(f"{{{T}}}ExchangeImpersonation") if header is not None else None
        if impersonation is None:
            return Caller(login, own, None)
        sid = impersonation.find(f"{{{T}}}ConnectingSID")
        address = ""
        if sid is not None:
            for name in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
                address = sid.findtext(f"{{{T}}}{name}") or address
        address = address.strip().lower()
        account = self.tenant.accounts.get(login)
        if account is None or not account.impersonation:
            raise SoapFault("ErrorImpersonateUserDenied",
                            "The account does not have permission to impersonate the "
                            "requested user.")
        mailbox = self.tenant.mailboxes.get(address)
        if mailbox is None:
            raise SoapFault("ErrorNonExistentMailbox",
                            "The SMTP address has no mailbox associated with it.")
        return Caller(login, mailbox, mailbox.address)


from tests.ews_seed import seed_french_tenant

__all__ = ["EwsServer", "EwsTenant", "Mailbox", "seed_french_tenant"]
