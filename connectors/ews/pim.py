"""Read the calendars, contacts (with personal distribution lists) and tasks of an Exchange
mailbox through EWS, converted by the same mappings as Graph's.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer) each
behaviour comes from:

- ``web-service-reference/distinguishedfolderid``: ``calendar``, ``contacts`` and ``tasks``
  are the mailbox's default folders of each kind, whatever its language: the default
  container of each workload.
- ``web-service-reference/findfolder-operation``, ``folderclass``: every folder below the
  message-folder root (``msgfolderroot``, ``Traversal="Deep"``) whose class is
  ``IPF.Appointment``, ``IPF.Contact`` or ``IPF.Task`` (or a sub-class) is a container of that
  workload: a calendar made beside the Inbox is found as well as one under Calendar. A folder
  whose ``PidTagAttributeHidden`` (``0x10F4``) is true (the hidden contact folders Exchange
  keeps for suggested recipients and the address book) is left out.
- ``web-service-reference/syncfolderitems-operation``: a folder's items as ``Create``,
  ``Update`` and ``Delete`` changes since a ``SyncState``, the listing's cursor. A calendar
  lists single events and series masters, never their occurrences; changing an occurrence
  changes its master (``ChangeKey``), which is how the whole series is read again.
- ``web-service-reference/getitem-operation``, ``calendaritem``, ``contact``,
  ``distributionlist``, ``task``: an item's properties named one by one
  (``AdditionalProperties``); a series master's ``ModifiedOccurrences`` give the ids of its
  exceptions, read with one more GetItem, and its ``DeletedOccurrences`` the slots cancelled.
- ``web-service-reference/getattachment-operation``: the content of an event's small file
  attachments and of a contact's photo (``IsContactPhoto``).

Times come as UTC instants and each event names its zone (``StartTimeZone``); the zone of
tasks' days and of custom zones' preference is the batch's ``time_zone`` (the mailbox's
zone, which EWS gives only through OWA's private configuration).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from connectors.base import (
    DEFAULT_CONTAINER,
    Container,
    Document,
    DocumentListing,
    DocumentRef,
    Path,
    SourceNote,
    tallied_notes,
)
from connectors.ews.client import (
    EwsFault,
    attribute,
    checked,
    response_messages,
)
from connectors.ews.folders import FolderRow, find_folders, from_cursor, sync_items
from connectors.ews.folders import messages as _m
from connectors.ews.folders import types as _t
from connectors.ews.items import (
    EwsNote,
    contact_as_graph,
    distribution_list,
    event_as_graph,
    occurrence_slots,
    percent_complete,
    photo_attachment_id,
    task_as_graph,
)
from connectors.graph.pim import file_name
from connectors.spool import Spool
from mappings.calendar import (
    INLINE_ATTACHMENT_MAX,
    parse_graph_instant,
    series_to_ical,
    single_to_ical,
)
from mappings.contacts import Member, contact_to_vcard, contact_uid, group_to_vcard
from mappings.tasks import task_to_ical, task_uid

WORKLOADS = ("calendar", "contacts", "tasks")
FOLDER_CLASSES = {"calendar": "IPF.Appointment", "contacts": "IPF.Contact", "tasks": "IPF.Task"}
DISTINGUISHED = {"calendar": "calendar", "contacts": "contacts", "tasks": "tasks"}
GONE = frozenset({"ErrorItemNotFound", "ErrorMessageNotFound"})
COMMON = ("item:Subject", "item:Body", "item:Categories", "item:Importance",
          "item:Sensitivity", "item:DateTimeCreated", "item:LastModifiedTime",
          "item:HasAttachments", "item:Attachments", "item:ReminderIsSet",
          "item:ReminderMinutesBeforeStart")
CALENDAR_FIELDS = COMMON + tuple(f"calendar:{name}" for name in (
    "UID", "Start", "End", "OriginalStart", "IsAllDayEvent", "LegacyFreeBusyStatus",
    "Location", "IsCancelled", "CalendarItemType", "Organizer", "RequiredAttendees",
    "OptionalAttendees", "Resources", "Recurrence", "ModifiedOccurrences",
    "DeletedOccurrences", "StartTimeZone", "EndTimeZone", "JoinOnlineMeetingUrl"))
CONTACT_FIELDS = ("item:Categories", "item:Body", "item:LastModifiedTime", "item:Attachments",
                  "item:HasAttachments") + tuple(f"contacts:{name}" for name in (
                      "DisplayName", "GivenName", "MiddleName", "Surname", "CompleteName",
                      "Nickname", "Initials", "Generation", "FileAs", "CompanyName",
                      "Department", "JobTitle", "Profession", "BusinessHomePage",
                      "SpouseName", "Children", "Manager", "AssistantName", "OfficeLocation",
                      "Birthday", "EmailAddresses", "PhoneNumbers", "PhysicalAddresses",
                      "ImAddresses"))
GROUP_FIELDS = ("item:LastModifiedTime", "distributionlist:Members", "contacts:DisplayName")
TASK_FIELDS = COMMON + tuple(f"task:{name}" for name in (
    "Status", "StartDate", "DueDate", "CompleteDate", "PercentComplete", "Recurrence")) + (
    "item:ReminderDueBy",)


def _fields(names: Sequence[str]) -> str:
    return "".join(f'<t:FieldURI FieldURI="{name}"/>' for name in names)


def _distinguished(name: str, mailbox: str) -> str:
    return (f'<t:DistinguishedFolderId Id="{name}"><t:Mailbox><t:EmailAddress>'
            f'{attribute(mailbox)[1:-1]}</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>')


class EwsPimSource:
    """The calendars, contacts and task lists of one Exchange mailbox, as a
    ``DocumentSource``. ``client`` is the command's ``EwsClient``; ``user_map`` rewrites
    organiser and attendee addresses; ``time_zone`` is the mailbox's zone (IANA)."""

    def __init__(self, client: Any, mailbox: str, *,
                 user_map: Callable[[str], str | None] = lambda address: None,
                 time_zone: str = "UTC") -> None:
        self._client = client
        self._mailbox = mailbox
        self._user_map = user_map
        self._zone = time_zone
        self._workload_of: dict[str, str] = {}
        self._kinds: dict[str, str] = {}
        self._notes: list[SourceNote] = []
        self._tally: Counter[tuple[str, str]] = Counter()

    # --- DocumentSource

    def document_containers(self, workload: str) -> list[Container]:
        if workload == "files":
            return []
        if workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, not {workload!r}")
        found = self._containers(workload)
        self._workload_of.update((c.native_name, workload) for c in found)
        return found

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        return from_cursor(lambda state: self._sync(container, state), container, cursor,
                           self._notes)

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        workload = self._workload(container)
        for ref in refs:
            try:
                item = self._get(ref.source_id, workload)
                if item is None:
                    continue
                document = self._document(container, workload, item)
            except EwsFault as fault:
                if fault.ews_code not in GONE:
                    self._notes.append(SourceNote("unreadable_item", ref.source_id,
                                                  f"{fault.ews_code}: {fault}"))
                continue
            yield document

    def drain_notes(self) -> list[SourceNote]:
        """Item failures one by one, then per container how many items carried each kind of
        approximation (``<code>_total``, with its ``count``), as the Graph source does."""
        notes, self._notes = self._client.take_server_notes() + self._notes, []
        return notes + tallied_notes(self._tally)

    def close(self) -> None:
        """Nothing to release: the client belongs to the command."""

    # --- containers

    def _workload(self, container: Container) -> str:
        for workload in WORKLOADS:
            if container.native_name in self._workload_of:
                break
            self.document_containers(workload)
        return self._workload_of.get(container.native_name, "calendar")

    def _containers(self, workload: str) -> list[Container]:
        default = self._default_folder(workload)
        if default is None:
            return []
        folders = find_folders(self._client, self._mailbox,
                               _distinguished("msgfolderroot", self._mailbox))
        by_id = {folder.folder_id: folder for folder in folders}
        wanted = FOLDER_CLASSES[workload]
        found = []
        for folder in folders:
            if folder.hidden or not (folder.folder_class == wanted
                                     or folder.folder_class.startswith(wanted + ".")):
                continue
            path = self._path(folder, by_id)
            if path is None:
                continue
            found.append(Container(path=path, native_name=folder.folder_id,
                                   role=DEFAULT_CONTAINER if folder.folder_id == default[0]
                                   else None))
        if not any(c.native_name == default[0] for c in found):
            found.append(Container(path=(default[1],), native_name=default[0],
                                   role=DEFAULT_CONTAINER))
        found.sort(key=lambda c: (c.role != DEFAULT_CONTAINER, c.path))
        return found

    @staticmethod
    def _path(folder: FolderRow, by_id: dict[str, FolderRow]) -> Path | None:
        parts = [folder.name]
        parent = by_id.get(folder.parent_id)
        seen = {folder.folder_id}
        while parent is not None:
            if parent.folder_id in seen:
                return None
            seen.add(parent.folder_id)
            parts.append(parent.name)
            parent = by_id.get(parent.parent_id)
        return tuple(reversed(parts))

    def _default_folder(self, workload: str) -> tuple[str, str] | None:
        body = self._client.call(self._mailbox, (
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
            f"<t:AdditionalProperties>{_fields(('folder:DisplayName',))}"
            "</t:AdditionalProperties></m:FolderShape><m:FolderIds>"
            f"{_distinguished(DISTINGUISHED[workload], self._mailbox)}</m:FolderIds>"
            "</m:GetFolder>"))
        for message in response_messages(body):
            if message.get("ResponseClass") == "Error":
                if message.findtext(_m("ResponseCode")) == "ErrorFolderNotFound":
                    return None
                checked(message)
            folder_id = message.find(f".//{_t('FolderId')}")
            if folder_id is not None:
                name = message.findtext(f".//{_t('DisplayName')}") or DISTINGUISHED[workload]
                return folder_id.get("Id", ""), name
        return None

    # --- listings

    def _sync(self, container: Container, state: str | None) -> DocumentListing:
        """Every change since ``state`` (``None``: the whole folder), page by page."""
        found = sync_items(self._client, self._mailbox, container.native_name, state)
        extension = "vcf" if self._workload(container) == "contacts" else "ics"
        changed = []
        for source_id, item in found.changed.items():
            self._kinds[source_id] = item.tag.rsplit("}", 1)[-1]
            item_id = item.find(_t("ItemId"))
            changed.append(DocumentRef(source_id, item_id.get("ChangeKey", ""),
                                       name=self._name(source_id, extension)))
        return DocumentListing(refs=changed, cursor={"sync_state": found.state},
                               complete=state is None, removed=sorted(found.removed))

    def _name(self, source_id: str, extension: str) -> str:
        if extension == "vcf":
            return f"{contact_uid(source_id)}.vcf"
        return file_name(source_id if self._kinds.get(source_id) != "Task"
                         else task_uid(source_id), "ics")

    # --- items

    def _get(self, source_id: str, workload: str) -> Any | None:
        kind = self._kinds.get(source_id)
        if workload == "contacts" and kind is None:
            kind = self._kind_of(source_id)
        fields = {"calendar": CALENDAR_FIELDS, "tasks": TASK_FIELDS}.get(
            workload, GROUP_FIELDS if kind == "DistributionList" else CONTACT_FIELDS)
        items = self._get_items([source_id], fields)
        return items[0] if items else None

    def _kind_of(self, source_id: str) -> str | None:
        items = self._get_items([source_id], ())
        if not items:
            return None
        kind = str(items[0].tag).rsplit("}", 1)[-1]
        self._kinds[source_id] = kind
        return kind

    def _get_items(self, source_ids: Sequence[str], fields: Sequence[str]) -> list[Any]:
        ids = "".join(f"<t:ItemId Id={attribute(i)}/>" for i in source_ids)
        extra = f"<t:AdditionalProperties>{_fields(fields)}</t:AdditionalProperties>" \
            if fields else ""
        body = self._client.call(self._mailbox, (
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
            f"<t:BodyType>Best</t:BodyType>{extra}</m:ItemShape>"
            f"<m:ItemIds>{ids}</m:ItemIds></m:GetItem>"))
        found = []
        for message in response_messages(body):
            if message.get("ResponseClass") == "Error" and \
                    message.findtext(_m("ResponseCode")) in GONE:
                continue
            items = checked(message).find(_m("Items"))
            found += [e for e in items if isinstance(e.tag, str)] if items is not None else []
        return found

    def _attachment(self, attachment_id: str) -> bytes | None:
        body = self._client.call(self._mailbox, (
            "<m:GetAttachment><m:AttachmentIds>"
            f"<t:AttachmentId Id={attribute(attachment_id)}/></m:AttachmentIds>"
            "</m:GetAttachment>"))
        for message in response_messages(body):
            if message.get("ResponseClass") == "Error":
                return None
            content = message.find(f".//{_t('Content')}")
            if content is not None and content.text:
                return base64.b64decode(content.text)
        return None

    def _document(self, container: Container, workload: str, item: Any) -> Document:
        kind = str(item.tag).rsplit("}", 1)[-1]
        if workload == "calendar":
            data, notes, ews_notes, version, uid, stamp = self._event(item)
        elif workload == "tasks":
            data, notes, ews_notes, version, uid, stamp = self._task(item)
        elif kind == "DistributionList":
            data, notes, ews_notes, version, uid, stamp = self._group(item)
        else:
            data, notes, ews_notes, version, uid, stamp = self._contact(item)
        path = "/".join(container.path)
        for code in notes:
            self._tally[(path, code[0])] += 1
        item_id = item.find(_t("ItemId"))
        source_id = item_id.get("Id", "") if item_id is not None else ""
        spool = Spool.from_chunks([data])
        extension = "vcf" if workload == "contacts" else "ics"
        return Document(
            source_id=source_id, version=version,
            name=f"{uid}.vcf" if extension == "vcf" else file_name(uid, "ics"),
            folder=(), fingerprint=spool.fingerprint, size=spool.size,
            modified=parse_graph_instant(stamp) if stamp else None, open=spool.open,
            notes=tuple(SourceNote(code, source_id, detail) for code, detail in notes)
            + tuple(SourceNote(n.code, source_id, n.detail) for n in ews_notes))

    def _event(self, master: Any) -> tuple[bytes, list[tuple[str, str]], list[EwsNote],
                                             str, str, str | None]:
        attachments = self._small_attachments(master)
        event, ews_notes = event_as_graph(master, attachments, prefer=(self._zone,))
        if event["type"] == "seriesMaster":
            modified, deleted = occurrence_slots(master)
            exceptions = []
            for occurrence in self._get_items(modified, CALENDAR_FIELDS) if modified else []:
                graph, more = event_as_graph(occurrence, self._small_attachments(occurrence),
                                             prefer=(self._zone,))
                exceptions.append(graph)
                ews_notes += more
            calendar, notes = series_to_ical(event, exceptions, deleted,
                                             user_map=self._user_map, mailbox_zone=self._zone)
        else:
            calendar, notes = single_to_ical(event, user_map=self._user_map,
                                             mailbox_zone=self._zone)
        return (calendar.to_ical(), [(n.code, n.detail) for n in notes], _unique(ews_notes),
                event["changeKey"], str(event["iCalUId"]), event.get("lastModifiedDateTime"))

    def _small_attachments(self, item: Any) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        attachments = item.find(_t("Attachments"))
        for attachment in attachments if attachments is not None else ():
            if not isinstance(attachment.tag, str) or not attachment.tag.endswith(
                    "FileAttachment"):
                continue
            size = int(attachment.findtext(_t("Size")) or 0)
            attachment_id = attachment.find(_t("AttachmentId"))
            if attachment_id is None or size > INLINE_ATTACHMENT_MAX:
                continue
            content = self._attachment(attachment_id.get("Id", ""))
            if content is not None:
                found[attachment_id.get("Id", "")] = content
        return found

    def _task(self, item: Any) -> tuple[bytes, list[tuple[str, str]], list[EwsNote], str, str,
                                         str | None]:
        task, ews_notes = task_as_graph(item, self._zone)
        calendar, notes = task_to_ical(task, mailbox_zone=lambda: self._zone)
        percent = percent_complete(item)
        if percent is not None:
            for todo in calendar.walk("VTODO"):
                todo.add("percent-complete", percent)
        return (calendar.to_ical(), [(n.code, n.detail) for n in notes], ews_notes,
                task["@odata.etag"], task_uid(task["id"]), task.get("lastModifiedDateTime"))

    def _contact(self, item: Any) -> tuple[bytes, list[tuple[str, str]], list[EwsNote], str,
                                            str, str | None]:
        contact, ews_notes = contact_as_graph(item)
        photo_id = photo_attachment_id(item)
        photo = self._attachment(photo_id) if photo_id else None
        text, notes = contact_to_vcard(contact, photo=photo, version="3.0")
        return (text.encode("utf-8"), [(n.code, n.detail) for n in notes], ews_notes,
                contact["changeKey"], contact_uid(contact["id"]),
                contact.get("lastModifiedDateTime"))

    def _group(self, item: Any) -> tuple[bytes, list[tuple[str, str]], list[EwsNote], str,
                                          str, str | None]:
        group_id, name, members = distribution_list(item)
        stamp = item.findtext(_t("LastModifiedTime"))
        text, notes = group_to_vcard(
            group_id, name, [Member(m.name, m.address, m.contact_id) for m in members],
            version="3.0", modified=parse_graph_instant(stamp) if stamp else None)
        item_id = item.find(_t("ItemId"))
        return (text.encode("utf-8"), [(n.code, n.detail) for n in notes], [],
                item_id.get("ChangeKey", "") if item_id is not None else "",
                contact_uid(group_id), stamp)


def _unique(notes: list[EwsNote]) -> list[EwsNote]:
    return list(dict.fromkeys(notes))
