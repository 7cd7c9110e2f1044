"""Calendars and contacts for the Graph test server: fixture data and the routes that serve it.

Importing this module registers its routes in ``tests.graph_server.MAILBOX_ROUTES``. The data
of a mailbox lives in ``FixtureMailbox.extras["pim"]`` (a ``PimData``); ``seed_pim`` fills it
for Amélie Lefèvre. Pages of Microsoft's Graph v1.0 documentation each behaviour follows
(learn.microsoft.com/graph):

- ``api/user-list-calendars``: every calendar of the user, ``isDefaultCalendar`` on one.
- ``api/user-list-events`` (calendars/{id}/events): single instances and series masters only;
  start and end in UTC unless ``Prefer: outlook.timezone`` names another zone.
- ``api/resources/event``: an all-day event starts and ends at midnight in one zone; the
  fixture gives it in that zone whatever ``Prefer`` asks (field reports agree).
- ``api/event-list-instances``: ``startDateTime`` and ``endDateTime`` are required; the
  occurrences and exceptions of a series master in that range, cancelled occurrences left
  out (the ``cancelledOccurrences`` property is beta only). Each instance carries
  ``originalStart``, a UTC instant, and ``seriesMasterId``.
- ``api/user-get-mailboxsettings``: ``timeZone``, Windows format by default.
- ``api/event-list-attachments``, ``api/attachment-get``: an event's attachments, each with
  its ``@odata.type``; a ``fileAttachment``'s bytes in ``contentBytes`` (base64); a
  ``referenceAttachment`` has no ``sourceUrl`` in v1.0 (``resources/referenceattachment``);
  ``hasAttachments`` on the event says whether there are any.
- ``api/user-list-contactfolders``: the folders *in* the default Contacts folder;
  ``api/contactfolder-list-childfolders`` below them; ``api/contactfolder-get``.
- ``api/user-list-contacts`` (default folder), ``api/contactfolder-list-contacts``,
  ``api/contact-get``.
- ``api/contact-delta``: per folder, pages linked by ``@odata.nextLink``, the last one with
  ``@odata.deltaLink``; later rounds give changed contacts and ``@removed`` entries;
  ``delta-query-overview``: an unknown token answers 410 Gone.
- ``api/profilephoto-get``: ``/contacts/{id}/photo/$value`` is the image; 404 when the contact
  has none.

One thing comes from the field, not from the documentation (issue 3, "Known from the
field"): an invitation to one occurrence of a series whose master is not in the mailbox shows
in the events list as an ``exception`` with a ``seriesMasterId`` that resolves to nothing.
"""

from __future__ import annotations

import base64
import re
import secrets
from calendar import monthrange
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from dateutil.rrule import DAILY, WEEKLY, rrule, weekday
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from tests.graph_server import (
    MAILBOX_ROUTES,
    FixtureMailbox,
    GraphError,
    GraphHandler,
    Reply,
    _selected,
    json_reply,
)

PARIS = "Romance Standard Time"
CONTACT_DELTA_PAGE_SIZE = 10
MAX_WINDOW_DAYS = 1825
MAX_YEAR = 2100
"""Where a series with no end stops being expanded."""
"""The longest window /instances and calendarView serve in one request."""
AGENDA_PDF = b"%PDF-1.4\n% Ordre du jour\n" + bytes(range(256)) * 40 + b"\n%%EOF\n"
"""An attachment small enough to be written into its event (10 KiB)."""
FAKE_JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(
    range(200)) + b"\xff\xd9"
TEAMS_LINK = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_Y29uc2VpbA%40thread.v2/0"
_DAYS = {"monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4,
         "saturday": 5, "sunday": 6}
GONE = ("ErrorItemNotFound", "The specified object was not found in the store.")


@dataclass
class FixtureEvent:
    """An event as the organiser wrote it: ``start``/``end`` wall-clock in their zone."""

    id: str
    calendar_id: str
    data: dict[str, Any]
    version: int
    cancelled: set[date] = field(default_factory=set)
    """Local dates of the occurrences deleted from a series."""
    exceptions: dict[date, dict[str, Any]] = field(default_factory=dict)
    """Local date of the slot -> the properties the modified occurrence overrides."""
    exception_versions: dict[date, int] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FixtureContact:
    id: str
    folder_id: str
    data: dict[str, Any]
    version: int
    photo: bytes | None = None
    photo_error: tuple[int, str, str] | None = None
    """What the photo endpoint answers instead of the photo: (status, code, message)."""


@dataclass
class PimData:
    """Calendars and contacts of one mailbox, with the change sequence delta reads."""

    time_zone: str = PARIS
    calendars: list[dict[str, Any]] = field(default_factory=list)
    events: dict[str, FixtureEvent] = field(default_factory=dict)
    default_folder: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, FixtureContact] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)
    sequence: int = 0

    def tick(self) -> int:
        self.sequence += 1
        return self.sequence

    def add_calendar(self, name: str, default: bool = False, hex_color: str = "") -> str:
        """A calendar; ``hex_color`` empty as Graph gives it for one whose colour the user
        never chose (``color`` is then ``auto``)."""
        calendar_id = _new_id("AAMkCal")
        self.calendars.append({"id": calendar_id, "name": name, "isDefaultCalendar": default,
                               "changeKey": secrets.token_hex(6), "canEdit": True,
                               "color": "lightPink" if hex_color else "auto",
                               "hexColor": hex_color})
        return calendar_id

    def add_event(self, calendar_id: str, **data: Any) -> FixtureEvent:
        event = FixtureEvent(_new_id("AAMkEvt"), calendar_id, data, self.tick())
        self.events[event.id] = event
        return event

    def modify_occurrence(self, master: FixtureEvent, slot: date, **changes: Any) -> None:
        master.exceptions.setdefault(slot, {}).update(changes)
        master.exception_versions[slot] = self.tick()

    def add_contact(self, folder_id: str, photo: bytes | None = None,
                    **data: Any) -> FixtureContact:
        contact = FixtureContact(_new_id("AAMkCnt"), folder_id, data, self.tick(), photo)
        self.contacts[contact.id] = contact
        return contact

    def update_contact(self, contact_id: str, **data: Any) -> None:
        contact = self.contacts[contact_id]
        contact.data.update(data)
        contact.version = self.tick()

    def delete_contact(self, contact_id: str) -> None:
        contact = self.contacts.pop(contact_id)
        self.removed.append((self.tick(), contact.folder_id, contact_id))


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(10)}="


def pim_of(mailbox: FixtureMailbox) -> PimData:
    data: PimData = mailbox.extras.setdefault("pim", PimData())
    return data


def wall(day: date, hour: int, minute: int = 0) -> dict[str, str]:
    return {"dateTime": f"{datetime.combine(day, time(hour, minute)).isoformat()}.0000000",
            "timeZone": PARIS}


def _person(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name, "address": address}}


def seed_pim(mailbox: FixtureMailbox) -> PimData:
    """Amélie's calendars and contacts: a weekly series in Paris time with one moved and one
    cancelled occurrence and a reminder, a meeting with attendees, a Teams link, categories, a
    reminder and two attachments (a small file, a link), an all-day event, a private
    occurrence whose series is elsewhere; contacts with a birthday, a photo, a second folder."""
    pim = pim_of(mailbox)
    me = _person(mailbox.display_name, mailbox.user_principal_name)
    calendrier = pim.add_calendar("Calendrier", default=True)
    conseil = pim.add_calendar("Conseil municipal", hex_color="#e3008c")
    series = pim.add_event(
        calendrier, subject="Réunion de service", isAllDay=False,
        start=wall(date(2025, 1, 6), 9), end=wall(date(2025, 1, 6), 10, 30),
        originalStartTimeZone=PARIS, originalEndTimeZone=PARIS, organizer=me,
        location={"displayName": "Salle Jean-Jaurès"}, isReminderOn=True,
        reminderMinutesBeforeStart=15, showAs="busy", sensitivity="normal",
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"],
                                "firstDayOfWeek": "monday"},
                    "range": {"type": "noEnd", "startDate": "2025-01-06",
                              "recurrenceTimeZone": PARIS}})
    pim.modify_occurrence(series, date(2025, 3, 17), subject="Réunion de service (déplacée)",
                          start=wall(date(2025, 3, 17), 14), end=wall(date(2025, 3, 17), 15, 30))
    series.cancelled.add(date(2025, 4, 21))
    commission = pim.add_event(
        conseil, subject="Commission urbanisme", isAllDay=False, categories=["Urbanisme", "Élus"],
        isReminderOn=True, reminderMinutesBeforeStart=30,
        start=wall(date(2025, 2, 12), 14), end=wall(date(2025, 2, 12), 16),
        originalStartTimeZone=PARIS, originalEndTimeZone=PARIS, organizer=me,
        attendees=[
            {**_person("François Dupré", "francois.dupre@ville-exemple.fr"), "type": "required",
             "status": {"response": "accepted"}},
            {**_person("Hélène Noël", "helene.noel@ville-exemple.fr"), "type": "optional",
             "status": {"response": "tentativelyAccepted"}},
            {**_person("Jean Martin", "jean.martin@exemple-asso.fr"), "type": "required",
             "status": {"response": "none"}}],
        isOnlineMeeting=True, onlineMeetingProvider="teamsForBusiness",
        onlineMeeting={"joinUrl": TEAMS_LINK},
        body={"contentType": "html", "content": "<p>Ordre du jour&nbsp;: PLU.</p>"})
    commission.attachments = [
        {"@odata.type": "#microsoft.graph.fileAttachment", "id": _new_id("AAMkAtt"),
         "name": "Ordre du jour.pdf", "contentType": "application/pdf", "size": len(AGENDA_PDF),
         "isInline": False, "lastModifiedDateTime": "2025-02-01T08:00:00Z",
         "contentBytes": base64.b64encode(AGENDA_PDF).decode()},
        {"@odata.type": "#microsoft.graph.referenceAttachment", "id": _new_id("AAMkAtt"),
         "name": "Plan local d'urbanisme", "contentType": None, "size": 512, "isInline": False,
         "lastModifiedDateTime": "2025-02-01T08:00:00Z"}]
    commission.data["hasAttachments"] = True
    pim.add_event(
        calendrier, subject="Fête de la musique", isAllDay=True,
        start={"dateTime": "2025-06-21T00:00:00.0000000", "timeZone": PARIS},
        end={"dateTime": "2025-06-22T00:00:00.0000000", "timeZone": PARIS},
        originalStartTimeZone=PARIS, originalEndTimeZone=PARIS, showAs="free")
    orphan_start = datetime(2025, 5, 15, 18, tzinfo=ZoneInfo("Europe/Paris"))
    pim.add_event(
        conseil, subject="Conseil communautaire (une séance)", isAllDay=False, type="exception",
        sensitivity="private",
        seriesMasterId=_new_id("AAMkEvt"),
        originalStart=orphan_start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        start=wall(date(2025, 5, 15), 18), end=wall(date(2025, 5, 15), 20),
        originalStartTimeZone=PARIS, originalEndTimeZone=PARIS,
        organizer=_person("Président de l'agglo", "president@agglo-exemple.fr"))

    pim.default_folder = {"id": _new_id("AAMkCFol"), "displayName": "Contacts",
                          "parentFolderId": _new_id("AAMkRoot")}
    elus = _new_id("AAMkCFol")
    pim.folders[elus] = {"id": elus, "displayName": "Élus",
                         "parentFolderId": pim.default_folder["id"]}
    pim.add_contact(pim.default_folder["id"], photo=FAKE_JPEG, displayName="Élodie Marchand",
                    givenName="Élodie", surname="Marchand", birthday="1980-03-14T23:00:00Z",
                    emailAddresses=[{"name": "Élodie Marchand",
                                     "address": "elodie.marchand@exemple.fr"}],
                    mobilePhone="+33 6 12 34 56 78", companyName="Médiathèque")
    pim.add_contact(pim.default_folder["id"], displayName="Benoît Lacroix", givenName="Benoît",
                    surname="Lacroix", businessPhones=["+33 1 23 45 67 89"])
    pim.add_contact(elus, displayName="Sébastien Côté", givenName="Sébastien", surname="Côté",
                    jobTitle="Maire adjoint", emailAddresses=[
                        {"name": "Sébastien Côté", "address": "sebastien.cote@ville-exemple.fr"}])
    return pim


# --- serving ---------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo:
    return ZoneInfo("UTC" if name.upper() == "UTC" else WINDOWS_TO_OLSON.get(name, name))


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(value: dict[str, str]) -> datetime:
    return datetime.fromisoformat(value["dateTime"][:26]).replace(tzinfo=_zone(value["timeZone"]))


def _in_zone(value: dict[str, str], zone_name: str) -> dict[str, str]:
    moment = _local(value).astimezone(_zone(zone_name)).replace(tzinfo=None)
    return {"dateTime": moment.isoformat(timespec="microseconds") + "0", "timeZone": zone_name}


def _preferred_zone(handler: GraphHandler) -> str:
    match = re.search(r'outlook\.timezone="([^"]+)"', handler.headers.get("Prefer", ""))
    return match.group(1) if match else "UTC"


def _served(data: dict[str, Any], zone_name: str) -> dict[str, Any]:
    """Times in the zone asked for, except an all-day event's, kept at its own midnights."""
    view = dict(data)
    if not view.get("isAllDay"):
        view["start"] = _in_zone(view["start"], zone_name)
        view["end"] = _in_zone(view["end"], zone_name)
    return view


def _event_view(event: FixtureEvent, zone_name: str) -> dict[str, Any]:
    modified = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=event.version)
    base = {"id": event.id, "iCalUId": f"040000008200E00074C5B7101A82E008{event.id[7:27]}",
            "type": "seriesMaster" if event.data.get("recurrence") else "singleInstance",
            "changeKey": f"CK{event.version}", "createdDateTime": "2024-12-01T10:00:00Z",
            "lastModifiedDateTime": _stamp(modified), "importance": "normal",
            "sensitivity": "normal", "showAs": "busy", "isCancelled": False,
            "hasAttachments": False,
            "calendarId": event.calendar_id}
    return _served({**base, **event.data}, zone_name)


def _starts(master: FixtureEvent) -> Iterator[datetime]:
    """The occurrence starts the master's pattern defines, in order, in its zone
    (recurrencepattern and recurrencerange pages)."""
    pattern = master.data["recurrence"]["pattern"]
    bounds = master.data["recurrence"]["range"]
    start = _local(master.data["start"])
    first_day = date.fromisoformat(bounds["startDate"])
    last_day = date.fromisoformat(bounds["endDate"]) if bounds["type"] == "endDate" else None
    count = int(bounds["numberOfOccurrences"]) if bounds["type"] == "numbered" else None
    days = (day for day in _pattern_days(pattern, first_day) if day >= first_day)
    for number, day in enumerate(days):
        if (count is not None and number >= count) or (last_day and day > last_day):
            return
        yield datetime.combine(day, start.time(), start.tzinfo)


def _pattern_days(pattern: dict[str, Any], first: date) -> Iterator[date]:
    interval = int(pattern.get("interval", 1))
    kind = pattern["type"]
    if kind in ("daily", "weekly"):
        options: dict[str, Any] = {"dtstart": first, "interval": interval}
        if kind == "weekly":
            options["byweekday"] = [weekday(_DAYS[day]) for day in pattern["daysOfWeek"]]
            options["wkst"] = _DAYS[pattern.get("firstDayOfWeek", "sunday")]
        for moment in rrule(DAILY if kind == "daily" else WEEKLY, **options):
            yield moment.date()
        return
    yearly = kind.endswith("Yearly")
    year, month = first.year, int(pattern["month"]) if yearly else first.month
    while year <= MAX_YEAR:
        yield from _days_in_month(pattern, year, month)
        if yearly:
            year += interval
        else:
            year, month = year + (month - 1 + interval) // 12, (month - 1 + interval) % 12 + 1


def _days_in_month(pattern: dict[str, Any], year: int, month: int) -> list[date]:
    """``absolute*``: ``dayOfMonth``, the month's last day when it is shorter (as Outlook
    places a 31st in April). ``relative*``: the ``index``-th of the month's days that are
    among ``daysOfWeek`` (recurrencepattern page, "index")."""
    length = monthrange(year, month)[1]
    if pattern["type"].startswith("absolute"):
        return [date(year, month, min(int(pattern["dayOfMonth"]), length))]
    wanted = {_DAYS[day] for day in pattern["daysOfWeek"]}
    days = [date(year, month, n) for n in range(1, length + 1)
            if date(year, month, n).weekday() in wanted]
    index = pattern.get("index", "first")
    position = -1 if index == "last" else ["first", "second", "third", "fourth"].index(index)
    return [days[position]] if len(days) > position else []


def _instances(master: FixtureEvent, window: tuple[datetime, datetime],
               zone_name: str) -> list[dict[str, Any]]:
    master_view = _event_view(master, "UTC")
    duration = _local(master.data["end"]) - _local(master.data["start"])
    found = []
    for slot in _starts(master):
        if slot > window[1]:
            break
        if slot < window[0] - duration:
            continue
        day = slot.date()
        if day in master.cancelled:
            continue
        change = master.exceptions.get(day, {})
        start = _local(change["start"]) if "start" in change else slot
        end = _local(change["end"]) if "end" in change else slot + duration
        if not (start < window[1] and end > window[0]):
            continue
        version = master.exception_versions.get(day, master.version)
        instance = {**{k: v for k, v in master_view.items() if k != "recurrence"}, **change,
                    "id": f"{master.id[:-1]}_{day:%Y%m%d}=",
                    "type": "exception" if change else "occurrence",
                    "seriesMasterId": master.id, "originalStart": _stamp(slot),
                    "iCalUId": f"{master_view['iCalUId']}{day:%Y%m%d}",
                    "changeKey": f"CK{version}"}
        instance["start"] = {"dateTime": start.replace(tzinfo=None).isoformat() + ".0000000",
                             "timeZone": master.data["start"]["timeZone"]}
        instance["end"] = {"dateTime": end.replace(tzinfo=None).isoformat() + ".0000000",
                           "timeZone": master.data["end"]["timeZone"]}
        found.append(_served(instance, zone_name))
    return found


def _event(pim: PimData, event_id: str) -> FixtureEvent:
    if event_id not in pim.events:
        raise GraphError(404, *GONE)
    return pim.events[event_id]


def _window(query: dict[str, str]) -> tuple[datetime, datetime]:
    if "startDateTime" not in query or "endDateTime" not in query:
        raise GraphError(400, "ErrorInvalidParameter",
                         "This request requires a time window specified by the query string "
                         "parameters StartDateTime and EndDateTime.")
    bounds = []
    for key in ("startDateTime", "endDateTime"):
        moment = datetime.fromisoformat(query[key])
        bounds.append(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    if bounds[1] - bounds[0] > timedelta(days=MAX_WINDOW_DAYS):
        # Not on the reference pages; reported from the field (microsoft-graph-docs issue
        # 6284, "Maximum number of days: 1825").
        raise GraphError(400, "ErrorInvalidRequest",
                         "Your request can't be completed. The range between the start and end "
                         "dates is greater than the allowed range. Maximum number of days: "
                         f"{MAX_WINDOW_DAYS}")
    return bounds[0], bounds[1]


def calendar_route(handler: GraphHandler, mailbox: FixtureMailbox, rest: list[str],
                   query: dict[str, str]) -> Reply | None:
    pim = mailbox.extras.get("pim")
    if not isinstance(pim, PimData):
        return None
    zone_name = _preferred_zone(handler)
    select = query.get("$select")
    if rest == ["mailboxSettings"]:
        return json_reply({"timeZone": pim.time_zone, "dateFormat": "dd/MM/yyyy",
                           "timeFormat": "HH:mm", "language": {"locale": "fr-FR"}})
    if rest == ["calendars"]:
        return handler._page_list(list(pim.calendars), query, 10, 1000, "calendars")
    if len(rest) == 3 and rest[0] == "calendars" and rest[2] == "events":
        if rest[1] not in {c["id"] for c in pim.calendars}:
            raise GraphError(404, *GONE)
        items = [_event_view(e, zone_name) for e in pim.events.values()
                 if e.calendar_id == rest[1]]
        return handler._page_list(items, query, 10, 1000, "events")
    if len(rest) == 2 and rest[0] == "events":
        return json_reply(_selected(_event_view(_event(pim, rest[1]), zone_name), select))
    if len(rest) == 3 and rest[0] == "events" and rest[2] == "instances":
        master = _event(pim, rest[1])
        # A next page's link holds the rest of the round, window included (paging page).
        items = (_instances(master, _window(query), zone_name)
                 if master.data.get("recurrence") and "$skiptoken" not in query else [])
        return handler._page_list(items, query, 10, 1000, "events")
    if len(rest) == 3 and rest[0] == "events" and rest[2] == "attachments":
        return handler._page_list(list(_event(pim, rest[1]).attachments), query, 10, 1000,
                                  "attachments")
    if len(rest) == 4 and rest[0] == "events" and rest[2] == "attachments":
        found = next((a for a in _event(pim, rest[1]).attachments if a["id"] == rest[3]), None)
        if found is None:
            raise GraphError(404, *GONE)
        return json_reply(_selected(found, select))
    return None


def _contact_view(contact: FixtureContact) -> dict[str, Any]:
    modified = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=contact.version)
    return {"@odata.etag": f'W/"CK{contact.version}"', "id": contact.id,
            "changeKey": f"CK{contact.version}", "parentFolderId": contact.folder_id,
            "createdDateTime": "2024-12-01T10:00:00Z", "lastModifiedDateTime": _stamp(modified),
            **contact.data}


def _folder(pim: PimData, folder_id: str) -> dict[str, Any]:
    if folder_id == pim.default_folder.get("id"):
        return pim.default_folder
    if folder_id not in pim.folders:
        raise GraphError(404, *GONE)
    return pim.folders[folder_id]


def _contact_delta(handler: GraphHandler, pim: PimData, folder_id: str,
                   query: dict[str, str]) -> Reply:
    state = handler.state
    preference = re.search(r"odata\.maxpagesize=(\d+)", handler.headers.get("Prefer", ""))
    if "$skiptoken" in query:
        cursor = state.cursors.get(query["$skiptoken"])
        if cursor is None:
            raise GraphError(400, "BadRequest", "Invalid skip token.")
    else:
        since, select = 0, query.get("$select")
        if "$deltatoken" in query:
            delta = state.cursors.get(query["$deltatoken"])
            if delta is None:
                raise GraphError(410, "SyncStateNotFound",
                                 "The sync state could not be found; resync required.")
            since, select = delta["since"], delta["select"]
        changed = [("changed", c.id) for c in pim.contacts.values()
                   if c.folder_id == folder_id and c.version > since]
        removed = [("removed", cid) for seq, fid, cid in pim.removed
                   if fid == folder_id and seq > since]
        cursor = {"pending": changed + removed, "start": pim.sequence, "select": select}
    size = int(preference.group(1)) if preference else CONTACT_DELTA_PAGE_SIZE
    page, rest = cursor["pending"][:size], cursor["pending"][size:]
    values = []
    for kind, contact_id in page:
        contact = pim.contacts.get(contact_id)
        if kind == "removed" or contact is None:
            values.append({"id": contact_id, "@removed": {"reason": "deleted"}})
        else:
            values.append(_selected(_contact_view(contact), cursor["select"]))
    base = f"{state.base_url}{urlsplit(handler.path).path}"
    payload: dict[str, Any] = {"value": values}
    token = secrets.token_urlsafe(12)
    if rest:
        state.cursors[token] = {**cursor, "pending": rest}
        payload["@odata.nextLink"] = f"{base}?$skiptoken={token}"
    else:
        state.cursors[token] = {"since": cursor["start"], "select": cursor["select"]}
        payload["@odata.deltaLink"] = f"{base}?$deltatoken={token}"
    return json_reply(payload)


def contacts_route(handler: GraphHandler, mailbox: FixtureMailbox, rest: list[str],
                   query: dict[str, str]) -> Reply | None:
    pim = mailbox.extras.get("pim")
    if not isinstance(pim, PimData):
        return None
    default_id = pim.default_folder.get("id")
    if rest == ["contactFolders"]:
        items = [f for f in pim.folders.values() if f["parentFolderId"] == default_id]
        return handler._page_list(items, query, 10, 1000, "contactFolders")
    if len(rest) == 2 and rest[0] == "contactFolders":
        return json_reply(_selected(_folder(pim, rest[1]), query.get("$select")))
    if len(rest) == 3 and rest[0] == "contactFolders" and rest[2] == "childFolders":
        parent = _folder(pim, rest[1])["id"]
        items = [f for f in pim.folders.values() if f["parentFolderId"] == parent]
        return handler._page_list(items, query, 10, 1000, "contactFolders")
    if len(rest) == 3 and rest[0] == "contactFolders" and rest[2] == "contacts":
        folder_id = _folder(pim, rest[1])["id"]
        items = [_contact_view(c) for c in pim.contacts.values() if c.folder_id == folder_id]
        return handler._page_list(items, query, 10, 1000, "contacts")
    if rest[:1] == ["contactFolders"] and rest[2:] == ["contacts", "delta"]:
        return _contact_delta(handler, pim, _folder(pim, rest[1])["id"], query)
    if rest == ["contacts"]:
        items = [_contact_view(c) for c in pim.contacts.values() if c.folder_id == default_id]
        return handler._page_list(items, query, 10, 1000, "contacts")
    if len(rest) >= 2 and rest[0] == "contacts":
        contact = pim.contacts.get(rest[1])
        if contact is None:
            raise GraphError(404, *GONE)
        if len(rest) == 2:
            return json_reply(_selected(_contact_view(contact), query.get("$select")))
        if rest[2:] == ["photo", "$value"]:
            if contact.photo_error is not None:
                raise GraphError(*contact.photo_error)
            if contact.photo is None:
                raise GraphError(404, "ImageNotFound", "The photo wasn't found.")
            return Reply(200, contact.photo, "image/jpeg")
    return None


MAILBOX_ROUTES.extend([calendar_route, contacts_route])
