"""Read the calendars, contacts and To Do tasks of a Microsoft 365 mailbox through Microsoft
Graph.

Pages of Microsoft's Graph v1.0 documentation each behaviour comes from
(learn.microsoft.com/graph):

- ``api/user-list-calendars``: every calendar of the user, one container each.
- ``api/user-list-events`` (``/calendars/{id}/events``): single instances and series masters,
  never their occurrences; start and end in UTC unless ``Prefer: outlook.timezone`` asks for
  another zone. ``mappings.calendar`` reads each time with its ``timeZone`` and shows it in
  the organiser's zone (``originalStartTimeZone``), so UTC is asked for explicitly: one
  predictable form whatever the mailbox's preferences.
- ``api/event-list-instances``: the occurrences and exceptions of a master between
  ``startDateTime`` and ``endDateTime``, without the cancelled ones (``cancelledOccurrences``
  is beta only): ``mappings.calendar.cancelled_occurrences`` finds those by expanding the
  pattern over the same window.
- ``api/event-delta`` and ``delta-query-events``: v1.0 tracks changes only in a
  ``calendarView``, a fixed date range whose rounds list occurrences and exceptions one by
  one, not series masters, and nothing outside the range. A migration needs every series and
  every past event, so calendars are listed whole on each pass; the version of a series (a
  hash of the changeKeys of the master and its exceptions, and of its cancelled slots) tells
  what changed. The cursor keeps those versions, so a later pass answers only what changed
  and what disappeared, as a delta would.
- ``api/event-list-attachments``, ``api/attachment-get``: an event whose ``hasAttachments``
  is true has its attachments listed without their content, then each file small enough to
  go into the event (``mappings.calendar.INLINE_ATTACHMENT_MAX``) read whole, so a large
  file is never downloaded only to be left out.
- ``api/user-get-mailboxsettings``: ``timeZone``, the zone a value with an unknown zone is
  read in (Windows or IANA format, as the administrator set it up).
- ``api/user-list-contactfolders``: the folders *inside* the default Contacts folder, whose
  id is their ``parentFolderId`` (or that of a contact of ``/contacts``, which lists the
  default folder); ``api/contactfolder-get``, ``api/contactfolder-list-childfolders``.
- ``api/contact-delta``: a per-folder round ending in an ``@odata.deltaLink``, the cursor of
  the folder; ``@removed`` entries for contacts gone; ``delta-query-overview``: a token Graph
  no longer knows answers 410 Gone, and a full round starts again.
- ``api/contact-get``; ``api/profilephoto-get``: ``/contacts/{id}/photo/$value`` is the image,
  404 when the contact has none.
- ``api/todo-list-lists``: every To Do list, one container each; ``wellknownListName``
  ``defaultList`` is the built-in Tasks list, the default container. ``flaggedEmails`` (the
  tasks of flagged messages) is a list like the others: its due dates and reminders are
  nowhere else.
- ``api/todotasklist-list-tasks`` with ``$expand=checklistItems`` (``resources/todotask``:
  the steps are a navigation property): a list's tasks with their steps, paged. Delta
  (``api/todotask-delta``) tells nothing of a step changed, so lists are read whole on each
  pass, as calendars are; a task's version is a hash of its ``@odata.etag`` and its steps.
- ``outlook-immutable-id``: ``Prefer: IdType="ImmutableId"`` on every request, so that an
  event or a contact keeps its id (the source_id in the ledger) when it moves.

A series' occurrences are read from its first to its last, in windows of at most
``INSTANCES_SPAN`` days; a series with no end is read until ``window_years`` after today: an
exception or a cancellation later than that is not carried over.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

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
from connectors.graph.session import GraphError, GraphSession, delta_round
from connectors.spool import Spool
from mappings.calendar import (
    FILE_ATTACHMENT,
    INLINE_ATTACHMENT_MAX,
    Window,
    cancelled_occurrences,
    parse_graph_instant,
    series_span,
    series_to_ical,
    single_to_ical,
    windows_to_iana,
)
from mappings.contacts import Note, contact_to_vcard, contact_uid
from mappings.tasks import task_to_ical, task_uid

WORKLOADS = ("calendar", "contacts", "tasks", "files")
EVENT_SELECT = ("id,iCalUId,type,seriesMasterId,changeKey,createdDateTime,lastModifiedDateTime,"
                "subject,body,start,end,isAllDay,originalStartTimeZone,originalEndTimeZone,"
                "originalStart,recurrence,location,locations,organizer,attendees,"
                "isOnlineMeeting,onlineMeeting,onlineMeetingUrl,sensitivity,categories,showAs,"
                "importance,isCancelled,isReminderOn,reminderMinutesBeforeStart,hasAttachments")
"""Every property ``mappings.calendar`` reads."""
TASK_QUERY = {"$expand": "checklistItems"}
"""Every property of a task, with its steps (``mappings.tasks`` reads them all)."""
IMMUTABLE_ID = 'IdType="ImmutableId"'
EVENT_HEADERS = {"Prefer": f'outlook.timezone="UTC", {IMMUTABLE_ID}'}
LIST_PAGE = 100
INSTANCES_SPAN = timedelta(days=1825)
"""The longest window Outlook serves occurrences for in one request: beyond it Graph answers
ErrorInvalidRequest "Maximum number of days: 1825" (seen in the field, not documented)."""
"""Items per page asked with ``$top`` (Outlook lists answer 10 by default)."""
DELTA_PAGE_SIZE = 100
STALE_DELTA_CODES = frozenset({"SyncStateNotFound", "SyncStateInvalid", "ResyncRequired"})
SERIES = "seriesMaster"
OCCURRENCES = frozenset({"occurrence", "exception"})
_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")
MAX_NAME = 200


@dataclass
class _Series:
    """What one calendar object is made of: a master and its exceptions, or one event."""

    master: dict[str, Any]
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[datetime | date] = field(default_factory=list)

    def version(self) -> str:
        parts = [str(self.master.get("changeKey") or self.master.get("lastModifiedDateTime"))]
        parts += sorted(f"{e['id']}:{e.get('changeKey')}" for e in self.exceptions)
        parts += sorted(slot.isoformat() for slot in self.cancelled)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def file_name(uid: str, extension: str) -> str:
    """A UID as a file name: characters file systems and WebDAV servers refuse become ``_``; a
    name too long is cut and ends with a hash of the UID, so it stays unique."""
    safe = _UNSAFE.sub("_", uid) or "_"
    if len(safe) > MAX_NAME:
        safe = safe[: MAX_NAME - 17] + "-" + hashlib.sha256(uid.encode()).hexdigest()[:16]
    return f"{safe}.{extension}"


class GraphPimSource:
    """The calendars, contacts and task lists of one Graph mailbox, as a ``DocumentSource``.

    ``user`` is the id or user principal name, written the same way in every URL (the
    session's per-mailbox cap counts by it). ``user_map`` rewrites organiser and attendee
    addresses; ``clock`` gives today (tests fix it)."""

    def __init__(self, session: GraphSession, user: str, *,
                 user_map: Callable[[str], str | None] = lambda address: None,
                 window_years: int = 2,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._session = session
        self._user = quote(user, safe="@")
        self._user_map = user_map
        self._window_years = window_years
        self._clock = clock
        self._workload_of: dict[str, str] = {}
        self._series: dict[str, _Series] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self._zone: str | None = None
        self._notes: list[SourceNote] = []
        self._tally: Counter[tuple[str, str]] = Counter()

    # --- DocumentSource

    def document_containers(self, workload: str) -> list[Container]:
        if workload == "calendar":
            found = self._calendars()
        elif workload == "contacts":
            found = self._contact_folders()
        elif workload == "tasks":
            found = self._task_lists()
        elif workload == "files":
            return []
        else:
            raise ValueError(f"workload must be one of {WORKLOADS}, not {workload!r}")
        self._workload_of.update((c.native_name, workload) for c in found)
        return found

    def list_documents(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        workload = self._workload(container)
        if workload == "calendar":
            return self._list_calendar(container, cursor)
        if workload == "tasks":
            return self._list_tasks(container, cursor)
        return self._list_contacts(container, cursor)

    def fetch_documents(self, container: Container, refs: Sequence[DocumentRef]
                        ) -> Iterator[Document]:
        fetch = {"calendar": self._calendar_document,
                 "tasks": self._task_document}.get(self._workload(container),
                                                   self._contact_document)
        for ref in refs:
            try:
                document = fetch(container, ref.source_id)
            except GraphError as error:
                if error.status != 404:
                    self._notes.append(SourceNote(
                        "unreadable_item", ref.source_id,
                        f"HTTP {error.status} {error.graph_code}: {error.message}"))
                continue
            if document is not None:
                yield document

    def drain_notes(self) -> list[SourceNote]:
        """Item failures one by one, then per container how many items carried each kind of
        approximation (``<code>_total``, with its ``count``): online-meeting links that die
        with the tenant, zones read in the mailbox's zone, orphan occurrences..."""
        notes, self._notes = self._notes, []
        return notes + tallied_notes(self._tally)

    def close(self) -> None:
        """Nothing to release: the session belongs to its owner."""

    # --- containers

    def _workload(self, container: Container) -> str:
        # Asked in turn until found: a calendar unit must not need the To Do permission.
        for workload in ("calendar", "contacts", "tasks"):
            if container.native_name in self._workload_of:
                break
            self.document_containers(workload)
        return self._workload_of.get(container.native_name, "calendar")

    def _calendars(self) -> list[Container]:
        pages = self._session.pages(f"users/{self._user}/calendars",
                                    {"$select": "id,name,isDefaultCalendar,hexColor",
                                     "$top": LIST_PAGE},
                                    headers={"Prefer": IMMUTABLE_ID})
        calendars = sorted(pages.values(), key=lambda c: not c.get("isDefaultCalendar"))
        return [Container(path=(str(c["name"]),), native_name=str(c["id"]),
                          role=DEFAULT_CONTAINER if c.get("isDefaultCalendar") else None,
                          colour=_colour(c.get("hexColor")))
                for c in calendars]

    def _contact_folders(self) -> list[Container]:
        headers = {"Prefer": IMMUTABLE_ID}
        children = list(self._session.pages(
            f"users/{self._user}/contactFolders",
            {"$select": "id,displayName,parentFolderId", "$top": LIST_PAGE}, headers).values())
        default_id = next((str(f["parentFolderId"]) for f in children
                           if f.get("parentFolderId")), None)
        if default_id is None:
            first = next(self._session.pages(
                f"users/{self._user}/contacts", {"$select": "id,parentFolderId", "$top": 1},
                headers).values(), None)
            if first is None:
                return []  # an empty default folder with no sub-folder: nothing to copy
            default_id = str(first["parentFolderId"])
        default = self._session.get_json(
            f"users/{self._user}/contactFolders/{quote(default_id, safe='=')}",
            {"$select": "id,displayName"}, headers=headers)
        root: Path = (str(default.get("displayName") or "Contacts"),)
        found = [Container(path=root, native_name=default_id, role=DEFAULT_CONTAINER)]
        for folder in children:
            self._walk_folder(folder, root, found)
        return found

    def _walk_folder(self, folder: dict[str, Any], parent: Path, found: list[Container]) -> None:
        path = (*parent, str(folder["displayName"]))
        folder_id = str(folder["id"])
        found.append(Container(path=path, native_name=folder_id))
        # contactFolder has no child count: every folder is asked for its children.
        below = self._session.pages(
            f"users/{self._user}/contactFolders/{quote(folder_id, safe='=')}/childFolders",
            {"$select": "id,displayName,parentFolderId", "$top": LIST_PAGE},
            headers={"Prefer": IMMUTABLE_ID})
        for child in list(below.values()):
            self._walk_folder(child, path, found)

    def _task_lists(self) -> list[Container]:
        lists = list(self._session.pages(f"users/{self._user}/todo/lists", {"$top": LIST_PAGE},
                                         headers={"Prefer": IMMUTABLE_ID}).values())
        lists.sort(key=lambda item: item.get("wellknownListName") != "defaultList")
        return [Container(path=(str(item["displayName"]),), native_name=str(item["id"]),
                          role=DEFAULT_CONTAINER
                          if item.get("wellknownListName") == "defaultList" else None)
                for item in lists]

    # --- calendars

    def _mailbox_zone(self) -> str:
        if self._zone is None:
            settings = self._session.get_json(f"users/{self._user}/mailboxSettings",
                                              {"$select": "timeZone"})
            name = str(settings.get("timeZone") or "")
            self._zone = windows_to_iana(name) or "UTC"
            if windows_to_iana(name) is None:
                self._notes.append(SourceNote("mailbox_zone_unknown", self._user, name))
        return self._zone

    def _window(self, event: dict[str, Any]) -> Window:
        """From the series' first occurrence to its last, or to ``window_years`` after today
        when it has no end; a day more on each side for zones and long occurrences."""
        day = timedelta(days=1)
        today = self._clock().astimezone(UTC).replace(hour=0, minute=0, second=0,
                                                       microsecond=0)
        reach = timedelta(days=round(365.25 * self._window_years))
        horizon = today + reach
        span = series_span(event, mailbox_zone=self._mailbox_zone())
        if span is None:  # a pattern bascule cannot read: what is around today
            return today - reach, horizon
        first, last = span
        return first - day, (last if last is not None else max(horizon, first)) + day

    def _list_calendar(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        events = list(self._session.pages(
            f"users/{self._user}/calendars/{quote(container.native_name, safe='=')}/events",
            {"$select": EVENT_SELECT, "$top": LIST_PAGE}, EVENT_HEADERS).values())
        masters = {str(e["id"]) for e in events if e.get("type") == SERIES}
        versions: dict[str, str] = {}
        refs: dict[str, DocumentRef] = {}
        for event in events:
            if event.get("type") in OCCURRENCES and event.get("seriesMasterId") in masters:
                continue  # the master's instances carry it
            series = self._load_series(event)
            source_id = str(event["id"])
            self._series[source_id] = series
            versions[source_id] = series.version()
            refs[source_id] = DocumentRef(source_id, versions[source_id],
                                          name=file_name(_uid(event), "ics"))
        return _versions_listing(refs, versions, cursor)

    def _load_series(self, event: dict[str, Any]) -> _Series:
        if event.get("type") != SERIES:
            return _Series(event)
        window = self._window(event)
        url = f"users/{self._user}/events/{quote(str(event['id']), safe='=')}/instances"
        instances = [instance for start, end in _spans(window, INSTANCES_SPAN)
                     for instance in self._session.pages(
                         url, {"startDateTime": _iso(start), "endDateTime": _iso(end),
                               "$select": EVENT_SELECT, "$top": LIST_PAGE},
                         EVENT_HEADERS).values()]
        exceptions = [i for i in instances if i.get("type") == "exception"]
        cancelled = cancelled_occurrences(event, instances, window,
                                          mailbox_zone=self._mailbox_zone())
        return _Series(event, exceptions, cancelled)

    def _calendar_document(self, container: Container, source_id: str) -> Document | None:
        # Taken out of the listing's cache: a fetch asked again reads the source again.
        series = self._series.pop(source_id, None)
        if series is None:
            event = self._session.get_json(f"users/{self._user}/events/"
                                           f"{quote(source_id, safe='=')}",
                                           {"$select": EVENT_SELECT}, EVENT_HEADERS)
            series = self._load_series(event)
        master = self._with_attachments(series.master)
        if master.get("type") == SERIES:
            calendar, notes = series_to_ical(master, series.exceptions, series.cancelled,
                                             user_map=self._user_map,
                                             mailbox_zone=self._mailbox_zone())
        else:
            calendar, notes = single_to_ical(master, user_map=self._user_map,
                                             mailbox_zone=self._mailbox_zone())
        path = "/".join(container.path)
        for note in notes:
            self._tally[(path, note.code)] += 1
        spool = Spool.from_chunks([calendar.to_ical()])
        stamp = master.get("lastModifiedDateTime")
        return Document(source_id=source_id, version=series.version(),
                        name=file_name(_uid(master), "ics"), folder=(),
                        fingerprint=spool.fingerprint, size=spool.size,
                        modified=parse_graph_instant(stamp) if stamp else None,
                        open=spool.open,
                        notes=tuple(SourceNote(n.code, source_id, n.detail) for n in notes))

    def _with_attachments(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event with its ``attachments`` as ``$expand`` would give them, the content of
        only the files ``mappings.calendar`` writes into it."""
        if not event.get("hasAttachments"):
            return event
        url = f"users/{self._user}/events/{quote(str(event['id']), safe='=')}/attachments"
        found = []
        for attachment in self._session.pages(
                url, {"$select": "id,name,contentType,size,isInline", "$top": LIST_PAGE},
                {"Prefer": IMMUTABLE_ID}).values():
            if attachment.get("@odata.type") == FILE_ATTACHMENT and \
                    int(attachment.get("size") or 0) <= INLINE_ATTACHMENT_MAX:
                attachment = self._session.get_json(
                    f"{url}/{quote(str(attachment['id']), safe='=')}",
                    headers={"Prefer": IMMUTABLE_ID})
            found.append(attachment)
        return {**event, "attachments": found}

    # --- tasks

    def _tasks_url(self, container: Container) -> str:
        return f"users/{self._user}/todo/lists/{quote(container.native_name, safe='=')}/tasks"

    def _list_tasks(self, container: Container, cursor: dict[str, Any] | None
                    ) -> DocumentListing:
        tasks = list(self._session.pages(self._tasks_url(container),
                                         {**TASK_QUERY, "$top": LIST_PAGE},
                                         headers={"Prefer": IMMUTABLE_ID}).values())
        versions: dict[str, str] = {}
        refs: dict[str, DocumentRef] = {}
        for task in tasks:
            source_id = str(task["id"])
            self._tasks[source_id] = task
            versions[source_id] = _task_version(task)
            refs[source_id] = DocumentRef(source_id, versions[source_id],
                                          name=file_name(task_uid(source_id), "ics"))
        return _versions_listing(refs, versions, cursor)

    def _task_document(self, container: Container, source_id: str) -> Document | None:
        # Taken out of the listing's cache: a fetch asked again reads the source again.
        task = self._tasks.pop(source_id, None)
        if task is None:
            task = self._session.get_json(
                f"{self._tasks_url(container)}/{quote(source_id, safe='=')}", TASK_QUERY,
                headers={"Prefer": IMMUTABLE_ID})
        calendar, notes = task_to_ical(task, mailbox_zone=self._mailbox_zone)
        path = "/".join(container.path)
        for note in notes:
            self._tally[(path, note.code)] += 1
        spool = Spool.from_chunks([calendar.to_ical()])
        stamp = task.get("lastModifiedDateTime")
        return Document(source_id=source_id, version=_task_version(task),
                        name=file_name(task_uid(source_id), "ics"), folder=(),
                        fingerprint=spool.fingerprint, size=spool.size,
                        modified=parse_graph_instant(stamp) if stamp else None,
                        open=spool.open,
                        notes=tuple(SourceNote(n.code, source_id, n.detail) for n in notes))

    # --- contacts

    def _delta_headers(self) -> dict[str, str]:
        return {"Prefer": f"odata.maxpagesize={DELTA_PAGE_SIZE}, {IMMUTABLE_ID}"}

    def _list_contacts(self, container: Container, cursor: dict[str, Any] | None
                       ) -> DocumentListing:
        link = (cursor or {}).get("delta_link")
        if link:
            try:
                return self._contact_round(container, str(link))
            except GraphError as error:
                if error.status != 410 and error.graph_code not in STALE_DELTA_CODES:
                    raise
        return self._contact_round(container, None)

    def _contact_round(self, container: Container, link: str | None) -> DocumentListing:
        if link is None:
            folder = quote(container.native_name, safe="=")
            pages = self._session.pages(
                f"users/{self._user}/contactFolders/{folder}/contacts/delta",
                {"$select": "id,changeKey"}, self._delta_headers())
        else:
            pages = self._session.pages(link, headers=self._delta_headers())
        changed, removed, next_link = delta_round(
            pages, lambda item: DocumentRef(str(item["id"]), str(item.get("changeKey") or ""),
                                            name=f"{contact_uid(str(item['id']))}.vcf"),
            link or container.native_name)
        return DocumentListing(refs=list(changed.values()), cursor={"delta_link": next_link},
                               complete=link is None, removed=removed)

    def _contact_document(self, container: Container, source_id: str) -> Document | None:
        url = f"users/{self._user}/contacts/{quote(source_id, safe='=')}"
        contact = self._session.get_json(url, headers={"Prefer": IMMUTABLE_ID})
        photo, unreadable = self._photo(f"{url}/photo/$value")
        text, notes = contact_to_vcard(contact, photo=photo, version="3.0")
        notes += unreadable
        path = "/".join(container.path)
        for note in notes:
            self._tally[(path, note.code)] += 1
        spool = Spool.from_chunks([text.encode("utf-8")])
        stamp = contact.get("lastModifiedDateTime")
        return Document(source_id=source_id, version=str(contact.get("changeKey") or ""),
                        name=f"{contact_uid(source_id)}.vcf", folder=(),
                        fingerprint=spool.fingerprint, size=spool.size,
                        modified=parse_graph_instant(stamp) if stamp else None,
                        open=spool.open,
                        notes=tuple(SourceNote(n.code, source_id, n.detail, dict(n.params))
                                    for n in notes))

    def _photo(self, url: str) -> tuple[bytes | None, list[Note]]:
        """The contact's photo, none when it has none (404); one Graph will not give is a
        note, and the contact goes without it."""
        try:
            with self._session.stream(url, headers={"Prefer": IMMUTABLE_ID}) as chunks:
                return b"".join(chunks), []
        except GraphError as error:
            if error.status == 404:
                return None, []
            detail = f"HTTP {error.status} {error.graph_code}: {error.message}"
            return None, [Note("photo_unreadable", detail, {"property": "PHOTO"})]


def _task_version(task: dict[str, Any]) -> str:
    """A task's etag (or last change) and each step's name and state, hashed."""
    parts = [str(task.get("@odata.etag") or task.get("lastModifiedDateTime"))]
    parts += [f"{item.get('id')}:{item.get('isChecked')}:{item.get('displayName')}"
              for item in task.get("checklistItems") or []]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def _uid(event: dict[str, Any]) -> str:
    return str(event.get("iCalUId") or event["id"])


def _spans(window: Window, longest: timedelta) -> Iterator[Window]:
    """``window`` cut into consecutive windows no longer than ``longest``."""
    start, end = window
    while start < end:
        yield start, min(start + longest, end)
        start += longest


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _colour(hex_color: object) -> str | None:
    """A calendar's ``hexColor`` as ``#RRGGBB``; ``None`` when the user never chose one
    (Graph gives it empty then) or it is not a colour."""
    if isinstance(hex_color, str) and re.fullmatch(r"#[0-9A-Fa-f]{6}", hex_color):
        return hex_color.upper()
    return None


def _versions_listing(refs: dict[str, DocumentRef], versions: dict[str, str],
                      cursor: dict[str, Any] | None) -> DocumentListing:
    """A listing from every item's version now against those the cursor kept: what changed
    or came, and what went; complete when there was no cursor to compare with."""
    before: dict[str, str] = (cursor or {}).get("versions") or {}
    changed = [ref for sid, ref in refs.items() if before.get(sid) != ref.version]
    removed = [sid for sid in before if sid not in refs]
    return DocumentListing(refs=changed, cursor={"versions": versions},
                           complete=cursor is None or "versions" not in cursor,
                           removed=removed)
