"""EWS calendar items, contacts, distribution lists and tasks read as the Graph resources
``mappings`` converts: one iCalendar and vCard mapping for both sources.

EWS reference pages each translation follows (learn.microsoft.com, "EWS XML elements"):

- ``CalendarItem``: ``ItemId`` (``Id``, ``ChangeKey``), ``UID``, ``CalendarItemType``
  (``Single``, ``Occurrence``, ``Exception``, ``RecurringMaster``), ``Start``/``End`` as UTC
  instants, ``OriginalStart`` (an exception's slot), ``IsAllDayEvent``,
  ``StartTimeZone``/``EndTimeZone`` (``TimeZoneDefinition``, 2010 and later), ``Recurrence``,
  ``ModifiedOccurrences``/``Occurrence`` (``ItemId``, ``Start``, ``End``, ``OriginalStart``),
  ``DeletedOccurrences``/``DeletedOccurrence`` (``Start``: the original start of the
  cancelled occurrence), ``Organizer``, ``RequiredAttendees``, ``OptionalAttendees``,
  ``Resources`` (``Attendee``: ``Mailbox``, ``ResponseType``), ``LegacyFreeBusyStatus``,
  ``Sensitivity``, ``Importance``, ``IsCancelled``, ``ReminderIsSet``,
  ``ReminderMinutesBeforeStart``, ``Location``, ``JoinOnlineMeetingUrl``, ``Body``
  (``BodyType``), ``Categories``, ``Attachments``, ``DateTimeCreated``, ``LastModifiedTime``.
- An all-day event's ``Start`` and ``End`` are midnights of its time zone given in UTC
  (``IsAllDayEvent``): the date is read in that zone, never in UTC.
- ``Recurrence`` (``RecurrenceType``): one pattern (``DailyRecurrence``, ``WeeklyRecurrence``
  with ``DaysOfWeek`` as a space-separated list and ``FirstDayOfWeek``,
  ``AbsoluteMonthlyRecurrence``, ``RelativeMonthlyRecurrence`` with ``DayOfWeekIndex``,
  ``AbsoluteYearlyRecurrence``, ``RelativeYearlyRecurrence``) and one range
  (``NoEndRecurrence``, ``EndDateRecurrence``, ``NumberedRecurrence``) whose ``StartDate`` and
  ``EndDate`` are ``xs:date`` values, which Exchange writes with the zone's offset
  (``2025-01-06+01:00``): the date is kept, the offset dropped. ``DaysOfWeek`` may also be
  ``Day``, ``Weekday`` or ``WeekendDay`` (the first weekday of a month...). A task's
  recurrence (``TaskRecurrenceType``) adds the regeneration patterns (``DailyRegeneration``...:
  "two weeks after the last one is done"), which iCalendar cannot say.
- ``Attendee``/``ResponseType``: ``Unknown``, ``Organizer``, ``Tentative``, ``Accept``,
  ``Decline``, ``NoResponseReceived``. ``Mailbox``/``RoutingType``: ``SMTP`` addresses are
  kept; an ``EX`` one is an Exchange legacy DN, no address anywhere else: the attendee keeps
  its name only, and a note says so.
- ``Contact``: ``GivenName``, ``MiddleName``, ``Surname``, ``CompleteName``
  (``Title``, ``Suffix``), ``Nickname``, ``EmailAddresses``/``Entry`` (``Key``
  ``EmailAddress1`` to ``3``), ``PhoneNumbers``/``Entry`` (``BusinessPhone``, ``HomePhone``,
  ``MobilePhone``...), ``PhysicalAddresses``/``Entry`` (``Business``, ``Home``, ``Other``),
  ``CompanyName``, ``Department``, ``JobTitle``, ``Profession``, ``Birthday``,
  ``BusinessHomePage``, ``ImAddresses``, ``SpouseName``, ``Children``, ``Manager``,
  ``AssistantName``, ``OfficeLocation``, ``FileAs``, ``Initials``, ``Generation``, ``Body``
  (the notes); a photo is a ``FileAttachment`` with ``IsContactPhoto`` true.
- ``DistributionList`` (a personal group): ``DisplayName``, ``Members``/``Member``/``Mailbox``
  with ``MailboxType`` ``Contact`` (an ``ItemId`` of a contact of the mailbox), ``OneOff``,
  ``Mailbox``, ``PublicDL``, ``PrivateDL`` (another personal group).
- ``Task``: ``Subject``, ``Status`` (``NotStarted``, ``InProgress``, ``Completed``,
  ``WaitingOnOthers``, ``Deferred``), ``StartDate``, ``DueDate``, ``CompleteDate``,
  ``PercentComplete``, ``Importance``, ``ReminderIsSet``, ``ReminderDueBy``, ``Recurrence``,
  ``Body``, ``Categories``, ``HasAttachments``.

Each ``*_as_graph`` function returns the Graph resource and the notes of what the EWS item
held that the Graph form cannot (``EwsNote``); ``mappings`` adds its own notes when
converting.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connectors.ews.zones import TYPES, zone_of
from mappings.calendar import FILE_ATTACHMENT, body_text, parse_graph_instant, windows_to_iana

NOTE_CODES = ("ews_zone_matched", "ews_zone_unknown", "ews_legacy_address",
              "ews_task_regeneration")
"""Every code an ``EwsNote`` may carry; sentences in the catalogue (``reports.i18n``)."""
ITEM_TYPES = {"Single": "singleInstance", "Occurrence": "occurrence",
              "Exception": "exception", "RecurringMaster": "seriesMaster"}
RESPONSES = {"Unknown": "none", "Organizer": "organizer", "Tentative": "tentativelyAccepted",
             "Accept": "accepted", "Decline": "declined", "NoResponseReceived": "notResponded"}
BUSY = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
        "WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}
PATTERNS = {"DailyRecurrence": "daily", "WeeklyRecurrence": "weekly",
            "AbsoluteMonthlyRecurrence": "absoluteMonthly",
            "RelativeMonthlyRecurrence": "relativeMonthly",
            "AbsoluteYearlyRecurrence": "absoluteYearly",
            "RelativeYearlyRecurrence": "relativeYearly",
            "DailyRegeneration": "dailyRegeneration", "WeeklyRegeneration": "weeklyRegeneration",
            "MonthlyRegeneration": "monthlyRegeneration",
            "YearlyRegeneration": "yearlyRegeneration"}
RANGES = {"NoEndRecurrence": "noEnd", "EndDateRecurrence": "endDate",
          "NumberedRecurrence": "numbered"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DAY_GROUPS = {"Day": list(WEEKDAYS), "Weekday": list(WEEKDAYS[:5]),
              "WeekendDay": ["saturday", "sunday"]}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
TASK_STATUSES = {"NotStarted": "notStarted", "InProgress": "inProgress",
                 "Completed": "completed", "WaitingOnOthers": "waitingOnOthers",
                 "Deferred": "deferred"}
ADDRESS_KINDS = {"Business": "businessAddress", "Home": "homeAddress", "Other": "otherAddress"}
PHONE_KINDS = {"BusinessPhone": "businessPhones", "BusinessPhone2": "businessPhones",
               "HomePhone": "homePhones", "HomePhone2": "homePhones"}


@dataclass(frozen=True)
class EwsNote:
    """Something of an EWS item the Graph form of it does not hold, or holds approximated."""

    code: str
    detail: str = ""


def _find(element: Any, *path: str) -> Any:
    for name in path:
        if element is None:
            return None
        element = element.find(TYPES + name)
    return element


def text(element: Any, *path: str) -> str:
    """The text of a child (a path of children) in the types namespace; empty if absent."""
    found = _find(element, *path)
    return (found.text or "") if found is not None else ""


def _children(element: Any, *path: str) -> list[Any]:
    found = _find(element, *path)
    return list(found) if found is not None else []


def _strings(element: Any, name: str) -> list[str]:
    return [child.text or "" for child in _children(element, name) if child.text]


def _flag(element: Any, name: str) -> bool:
    return text(element, name).strip().lower() == "true"


def instant(value: str) -> datetime:
    """An ``xs:dateTime`` as EWS writes it (``2025-03-10T08:00:00Z``, or with an offset) as
    an aware UTC datetime."""
    return parse_graph_instant(value)


def _graph_instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _xs_date(value: str) -> str:
    """An ``xs:date`` with or without its offset (``2025-01-06+01:00``) as ``2025-01-06``."""
    return value.strip()[:10]


def _body(element: Any) -> dict[str, str] | None:
    body = _find(element, "Body")
    if body is None or not (body.text or "").strip():
        return None
    return {"contentType": "html" if str(body.get("BodyType")) == "HTML" else "text",
            "content": body.text or ""}


def _address(mailbox: Any, notes: list[EwsNote]) -> dict[str, Any] | None:
    if mailbox is None:
        return None
    name, address = text(mailbox, "Name"), text(mailbox, "EmailAddress")
    if text(mailbox, "RoutingType").upper() == "EX" or (address and "@" not in address):
        notes.append(EwsNote("ews_legacy_address", name or address))
        address = ""
    return {"emailAddress": {"name": name, "address": address}}


class _Zones:
    """The item's zone as a Graph name, read once per definition; custom ones matched."""

    def __init__(self, item: Any, notes: list[EwsNote], prefer: Sequence[str]) -> None:
        self.item = item
        self.notes = notes
        self.prefer = prefer

    def name(self, which: str, year: int) -> str | None:
        definition = _find(self.item, which)
        if definition is None:
            legacy = text(self.item, "StartTimeZoneId" if which == "StartTimeZone"
                          else "EndTimeZoneId")
            return legacy or None
        iana, matched = zone_of(definition, year, self.prefer)
        label = str(definition.get("Name") or definition.get("Id") or "")
        if iana is None:
            self.notes.append(EwsNote("ews_zone_unknown", label))
            return None
        if matched:
            self.notes.append(EwsNote("ews_zone_matched", f"{label} = {iana}"))
            return iana
        return str(definition.get("Id"))


def _recurrence(element: Any, zone: str | None) -> dict[str, Any] | None:
    recurrence = _find(element, "Recurrence")
    if recurrence is None or not len(recurrence):
        return None
    pattern: dict[str, Any] = {}
    bounds: dict[str, Any] = {}
    for child in recurrence:
        kind = child.tag.removeprefix(TYPES)
        if kind in PATTERNS:
            pattern = {"type": PATTERNS[kind], "interval": int(text(child, "Interval") or 1)}
            days = text(child, "DaysOfWeek").split()
            if days:
                pattern["daysOfWeek"] = [d for day in days
                                         for d in DAY_GROUPS.get(day, [day.lower()])]
            if text(child, "FirstDayOfWeek"):
                pattern["firstDayOfWeek"] = text(child, "FirstDayOfWeek").lower()
            if text(child, "DayOfMonth"):
                pattern["dayOfMonth"] = int(text(child, "DayOfMonth"))
            if text(child, "Month"):
                pattern["month"] = MONTHS.index(text(child, "Month")) + 1
            if text(child, "DayOfWeekIndex"):
                pattern["index"] = text(child, "DayOfWeekIndex").lower()
        elif kind in RANGES:
            bounds = {"type": RANGES[kind], "startDate": _xs_date(text(child, "StartDate"))}
            if text(child, "EndDate"):
                bounds["endDate"] = _xs_date(text(child, "EndDate"))
            if text(child, "NumberOfOccurrences"):
                bounds["numberOfOccurrences"] = int(text(child, "NumberOfOccurrences"))
    if zone:
        bounds["recurrenceTimeZone"] = zone
    return {"pattern": pattern, "range": bounds}


def _moment(value: datetime, all_day: bool, zone: str | None) -> dict[str, str]:
    """A Graph ``dateTimeTimeZone``: in UTC for a timed event; for an all-day one, the
    midnight of its zone as wall-clock time (``mappings.calendar`` takes its date as is)."""
    if all_day:
        iana = windows_to_iana(zone) if zone else None
        local = value.astimezone(ZoneInfo(iana)) if iana else value
        # Midnight given in UTC: the nearest local date is the day meant.
        day = (local + timedelta(hours=12)).date() if local.hour >= 12 else local.date()
        return {"dateTime": f"{day.isoformat()}T00:00:00", "timeZone": zone or "UTC"}
    return {"dateTime": value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}


def event_as_graph(item: Any, attachments: dict[str, bytes] | None = None, *,
                   prefer: Sequence[str] = ()) -> tuple[dict[str, Any], list[EwsNote]]:
    """A ``CalendarItem`` element as a Graph ``event``. ``attachments`` gives the content of
    the file attachments read (by ``AttachmentId``); one not given is listed without it, and
    ``mappings.calendar`` notes it as not carried. ``prefer`` names the zones a custom
    definition is matched against first (the mailbox's)."""
    notes: list[EwsNote] = []
    item_id = _find(item, "ItemId")
    start, end = instant(text(item, "Start")), instant(text(item, "End"))
    all_day = _flag(item, "IsAllDayEvent")
    zones = _Zones(item, notes, prefer)
    start_zone = zones.name("StartTimeZone", start.year)
    end_zone = zones.name("EndTimeZone", end.year) or start_zone
    event: dict[str, Any] = {
        "id": str(item_id.get("Id")),
        "changeKey": str(item_id.get("ChangeKey") or ""),
        "iCalUId": text(item, "UID") or str(item_id.get("Id")),
        "type": ITEM_TYPES.get(text(item, "CalendarItemType"), "singleInstance"),
        "subject": text(item, "Subject"),
        "body": _body(item),
        "start": _moment(start, all_day, start_zone),
        "end": _moment(end, all_day, end_zone),
        "isAllDay": all_day,
        "originalStartTimeZone": start_zone,
        "originalEndTimeZone": end_zone,
        "location": {"displayName": text(item, "Location")},
        "organizer": _address(_find(item, "Organizer", "Mailbox"), notes),
        "attendees": [],
        "sensitivity": text(item, "Sensitivity").lower() or "normal",
        "categories": _strings(item, "Categories"),
        "showAs": BUSY.get(text(item, "LegacyFreeBusyStatus"), "busy"),
        "importance": text(item, "Importance").lower() or "normal",
        "isCancelled": _flag(item, "IsCancelled"),
        "isReminderOn": _flag(item, "ReminderIsSet"),
        "reminderMinutesBeforeStart": int(text(item, "ReminderMinutesBeforeStart") or 0),
        "onlineMeetingUrl": text(item, "JoinOnlineMeetingUrl") or None,
        "hasAttachments": _flag(item, "HasAttachments"),
    }
    for key, name in (("createdDateTime", "DateTimeCreated"),
                      ("lastModifiedDateTime", "LastModifiedTime")):
        if text(item, name):
            event[key] = _graph_instant(instant(text(item, name)))
    if text(item, "OriginalStart"):
        event["originalStart"] = _graph_instant(instant(text(item, "OriginalStart")))
    for group, kind in (("RequiredAttendees", "required"), ("OptionalAttendees", "optional"),
                        ("Resources", "resource")):
        for attendee in _children(item, group):
            entry = _address(_find(attendee, "Mailbox"), notes)
            if entry is None:
                continue
            entry["type"] = kind
            entry["status"] = {"response": RESPONSES.get(text(attendee, "ResponseType"),
                                                         "none")}
            event["attendees"].append(entry)
    if recurrence := _recurrence(item, start_zone):
        event["recurrence"] = recurrence
    if event["hasAttachments"]:
        event["attachments"] = _attachments(item, attachments or {})
    return event, notes


def _attachments(item: Any, contents: dict[str, bytes]) -> list[dict[str, Any]]:
    found = []
    for attachment in _children(item, "Attachments"):
        kind = attachment.tag.removeprefix(TYPES)
        attachment_id = str(_find(attachment, "AttachmentId").get("Id")) \
            if _find(attachment, "AttachmentId") is not None else ""
        entry: dict[str, Any] = {
            "@odata.type": FILE_ATTACHMENT if kind == "FileAttachment"
            else "#microsoft.graph.itemAttachment",
            "id": attachment_id, "name": text(attachment, "Name"),
            "contentType": text(attachment, "ContentType"),
            "size": int(text(attachment, "Size") or 0),
        }
        if attachment_id in contents:
            entry["contentBytes"] = base64.b64encode(contents[attachment_id]).decode()
        found.append(entry)
    return found


def occurrence_slots(master: Any) -> tuple[list[str], list[str]]:
    """A ``RecurringMaster``'s modified occurrences (their ``ItemId``s, to be read with
    GetItem) and the original starts of its deleted ones (for ``series_to_ical``)."""
    modified = [str(_find(o, "ItemId").get("Id"))
                for o in _children(master, "ModifiedOccurrences")
                if _find(o, "ItemId") is not None]
    deleted = [_graph_instant(instant(text(o, "Start")))
               for o in _children(master, "DeletedOccurrences") if text(o, "Start")]
    return modified, deleted


def contact_as_graph(item: Any) -> tuple[dict[str, Any], list[EwsNote]]:
    """A ``Contact`` element as a Graph ``contact``."""
    contact: dict[str, Any] = {
        "id": str(_find(item, "ItemId").get("Id")),
        "changeKey": str(_find(item, "ItemId").get("ChangeKey") or ""),
        "displayName": text(item, "DisplayName"),
        "givenName": text(item, "GivenName"),
        "middleName": text(item, "MiddleName"),
        "surname": text(item, "Surname"),
        "title": text(item, "CompleteName", "Title"),
        "generation": text(item, "Generation") or text(item, "CompleteName", "Suffix"),
        "nickName": text(item, "Nickname"),
        "initials": text(item, "Initials"),
        "fileAs": text(item, "FileAs"),
        "companyName": text(item, "CompanyName"),
        "department": text(item, "Department"),
        "jobTitle": text(item, "JobTitle"),
        "profession": text(item, "Profession"),
        "businessHomePage": text(item, "BusinessHomePage"),
        "spouseName": text(item, "SpouseName"),
        "children": _strings(item, "Children"),
        "manager": text(item, "Manager"),
        "assistantName": text(item, "AssistantName"),
        "officeLocation": text(item, "OfficeLocation"),
        "categories": _strings(item, "Categories"),
        "emailAddresses": [],
        "businessPhones": [], "homePhones": [], "mobilePhone": "",
        "imAddresses": [],
    }
    if text(item, "Birthday"):
        contact["birthday"] = _graph_instant(instant(text(item, "Birthday")))
    if text(item, "LastModifiedTime"):
        contact["lastModifiedDateTime"] = _graph_instant(instant(text(item, "LastModifiedTime")))
    body = _body(item)
    if body is not None:
        contact["personalNotes"] = body_text(body)[0]
    for entry in sorted(_children(item, "EmailAddresses"), key=lambda e: str(e.get("Key"))):
        if entry.text:
            contact["emailAddresses"].append({"name": "", "address": entry.text.strip()})
    for entry in _children(item, "PhoneNumbers"):
        key, number = str(entry.get("Key")), (entry.text or "").strip()
        if not number:
            continue
        if key == "MobilePhone":
            contact["mobilePhone"] = number
        elif key in PHONE_KINDS:
            contact[PHONE_KINDS[key]].append(number)
    for entry in _children(item, "PhysicalAddresses"):
        kind = ADDRESS_KINDS.get(str(entry.get("Key")))
        if kind:
            contact[kind] = {"street": text(entry, "Street"), "city": text(entry, "City"),
                             "state": text(entry, "State"),
                             "countryOrRegion": text(entry, "CountryOrRegion"),
                             "postalCode": text(entry, "PostalCode")}
    for entry in sorted(_children(item, "ImAddresses"), key=lambda e: str(e.get("Key"))):
        if entry.text:
            contact["imAddresses"].append(entry.text.strip())
    return contact, []


def photo_attachment_id(item: Any) -> str | None:
    """The ``AttachmentId`` of a contact's photo (``IsContactPhoto``), if it has one."""
    for attachment in _children(item, "Attachments"):
        if text(attachment, "IsContactPhoto").lower() == "true":
            found = _find(attachment, "AttachmentId")
            return str(found.get("Id")) if found is not None else None
    return None


@dataclass(frozen=True)
class GroupMember:
    """A member of a personal distribution list: a contact of the mailbox (its EWS id), or
    an address."""

    name: str
    address: str
    contact_id: str | None = None


def distribution_list(item: Any) -> tuple[str, str, list[GroupMember]]:
    """A ``DistributionList`` element: its id, display name and members."""
    members = []
    for member in _children(item, "Members"):
        mailbox = _find(member, "Mailbox")
        if mailbox is None:
            continue
        contact = _find(mailbox, "ItemId")
        members.append(GroupMember(text(mailbox, "Name"), text(mailbox, "EmailAddress"),
                                   str(contact.get("Id")) if contact is not None
                                   and text(mailbox, "MailboxType") == "Contact" else None))
    return str(_find(item, "ItemId").get("Id")), text(item, "DisplayName"), members


def task_as_graph(item: Any, zone: str) -> tuple[dict[str, Any], list[EwsNote]]:
    """A ``Task`` element as a Graph ``todoTask``. EWS gives a task's dates as instants, the
    midnight of the mailbox's zone (``zone``, an IANA name) for the dates Outlook shows as
    days: they are read back as those days."""
    notes: list[EwsNote] = []
    item_id = _find(item, "ItemId")
    task: dict[str, Any] = {
        "id": str(item_id.get("Id")),
        "@odata.etag": str(item_id.get("ChangeKey") or ""),
        "title": text(item, "Subject"),
        "status": TASK_STATUSES.get(text(item, "Status"), "notStarted"),
        "importance": text(item, "Importance").lower() or "normal",
        "body": _body(item),
        "categories": _strings(item, "Categories"),
        "isReminderOn": _flag(item, "ReminderIsSet"),
        "hasAttachments": _flag(item, "HasAttachments"),
    }
    for key, name in (("createdDateTime", "DateTimeCreated"),
                      ("lastModifiedDateTime", "LastModifiedTime")):
        if text(item, name):
            task[key] = _graph_instant(instant(text(item, name)))
    for key, name in (("startDateTime", "StartDate"), ("dueDateTime", "DueDate")):
        if text(item, name):
            task[key] = _day_or_moment(instant(text(item, name)), zone)
    for key, name in (("completedDateTime", "CompleteDate"), ("reminderDateTime",
                                                               "ReminderDueBy")):
        if text(item, name) and (key != "reminderDateTime" or task["isReminderOn"]):
            task[key] = {"dateTime": instant(text(item, name)).strftime("%Y-%m-%dT%H:%M:%S"),
                         "timeZone": "UTC"}
    recurrence = _recurrence(item, None)
    if recurrence is not None:
        kind = recurrence["pattern"].get("type", "")
        if kind.endswith("Regeneration"):
            notes.append(EwsNote("ews_task_regeneration", kind))
        else:
            task["recurrence"] = recurrence
    return task, notes


def percent_complete(item: Any) -> int | None:
    """A task's ``PercentComplete``, which Graph's ``todoTask`` has no field for and a VTODO
    keeps (``PERCENT-COMPLETE``, RFC 5545 3.8.1.8); ``None`` when absent."""
    value = text(item, "PercentComplete")
    return round(float(value)) if value else None


def _day_or_moment(moment: datetime, zone: str) -> dict[str, str]:
    local = moment.astimezone(ZoneInfo(zone))
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": zone}
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}
