"""Microsoft Graph calendar events turned into iCalendar objects, with notes on what changed.

Graph facts this module relies on (Microsoft Graph v1.0 reference, ``event``,
``dateTimeTimeZone``, ``patternedRecurrence``, ``recurrencePattern``, ``recurrenceRange``):

- ``start`` and ``end`` are ``{dateTime, timeZone}``: a wall-clock time with seven fractional
  digits and no offset, to be read in ``timeZone`` (``UTC`` unless the request asked for
  another zone with ``Prefer: outlook.timezone``). ``originalStartTimeZone`` names the zone
  the organiser chose; Windows names (``Romance Standard Time``) map to IANA through the CLDR
  table icalendar ships. An all-day event's start and end are midnights: their date is taken
  as is, never shifted by a zone.
- ``iCalUId`` differs for each occurrence of a series, so every occurrence is written with
  the master's UID: one VCALENDAR holds the master and its modified occurrences.
- ``originalStart`` (an occurrence's slot in the series) is a UTC instant.
- ``range.startDate``/``endDate`` are dates in ``recurrenceTimeZone`` (the event's zone when
  absent); ``endDate`` is the last day the pattern applies, inclusive.
- ``relativeMonthly``/``relativeYearly`` with several ``daysOfWeek`` mean the n-th day of the
  month among those days (first weekday of the month...), hence BYSETPOS.
- v1.0 does not return cancelled occurrences: ``cancelled_occurrences`` finds them by
  expanding the series and comparing with the ``/instances`` the server lists.
- ``attachments`` (``event-list-attachments``, or ``$expand=attachments``): a
  ``fileAttachment`` carries its bytes in ``contentBytes`` (base64); a
  ``referenceAttachment`` has no link in v1.0 (``sourceUrl`` is beta only); an
  ``itemAttachment`` is a message or an event, not a file.

Every approximation becomes a ``Note`` with a stable code (``NOTE_CODES``) and a detail.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import cache
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import rrulestr
from icalendar import Alarm, Calendar, Component, Event, vBinary, vCalAddress, vRecur, vText
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from mappings.zones import add_timezones

PRODID = "-//bascule//Microsoft Graph calendar//EN"

NOTE_CODES = ("zone_unknown", "online_meeting_link", "series_start_moved", "recurrence_unknown",
              "orphan_occurrence", "sensitivity_personal", "attachment_not_carried")
"""Every code a ``Note`` may carry; its sentence (in the catalogue, ``reports.i18n``) names
the note's detail."""


@dataclass(frozen=True)
class Note:
    """Something approximated or dropped while converting one event."""

    code: str
    detail: str = ""
    uid: str = ""


UserMap = Callable[[str], str | None]
"""Source address -> target address, ``None`` when the address is not a migrated user."""

Window = tuple[datetime, datetime]

WEEKDAYS = {
    "monday": "MO", "tuesday": "TU", "wednesday": "WE", "thursday": "TH",
    "friday": "FR", "saturday": "SA", "sunday": "SU",
}
WEEK_INDEX = {"first": 1, "second": 2, "third": 3, "fourth": 4, "last": -1}
ROLES = {"required": "REQ-PARTICIPANT", "optional": "OPT-PARTICIPANT",
         "resource": "NON-PARTICIPANT"}
PARTSTATS = {"accepted": "ACCEPTED", "declined": "DECLINED", "tentativelyAccepted": "TENTATIVE",
             "organizer": "ACCEPTED", "none": "NEEDS-ACTION", "notResponded": "NEEDS-ACTION"}
CLASSES = {"normal": "PUBLIC", "personal": "PRIVATE", "private": "PRIVATE",
           "confidential": "CONFIDENTIAL"}
BUSY_STATUS = {"free": "FREE", "tentative": "TENTATIVE", "busy": "BUSY", "oof": "OOF",
               "workingElsewhere": "WORKINGELSEWHERE"}
PRIORITIES = {"high": 1, "normal": 5, "low": 9}
INLINE_ATTACHMENT_MAX = 256 * 1024
"""The largest file attachment written into its event (base64, a third larger): a calendar
object is read and written whole by servers and clients on every change (Radicale takes time
growing with the square of its size), and the file of a mailbox that closes has no link to
give instead. A larger one is a note, as is a link or an attached item."""
FILE_ATTACHMENT = "#microsoft.graph.fileAttachment"

_UTC_NAMES = frozenset({"utc", "tzone://microsoft/utc", "etc/utc", "gmt"})
_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def windows_to_iana(name: str | None) -> str | None:
    """The IANA zone for a zone name as Graph gives it: a Windows name, an IANA name (events
    created through the API may carry one), or ``None`` for anything else ("Customized Time
    Zone", display strings such as "(UTC+01:00) Brussels, ..."), so the caller falls back."""
    if not name:
        return None
    cleaned = name.strip()
    if cleaned.lower() in _UTC_NAMES:
        return "UTC"
    if cleaned in WINDOWS_TO_OLSON:
        return WINDOWS_TO_OLSON[cleaned]
    if cleaned in _iana_names():
        return cleaned
    return None


@cache
def _iana_names() -> frozenset[str]:
    return frozenset(available_timezones())


def parse_graph_instant(value: str) -> datetime:
    """A Graph timestamp (``2024-03-21T08:00:00Z``, maybe with seven fractional digits) as an
    aware UTC datetime. Python reads at most six fractional digits."""
    text = _FRACTION.sub(r"\1", value.strip()).removesuffix("Z")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def wall_clock(value: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(_FRACTION.sub(r"\1", value["dateTime"]))


@dataclass
class _Context:
    """What every property of one VCALENDAR needs: the mapping and the notes collected."""

    user_map: UserMap
    mailbox_zone: str
    uid: str
    notes: list[Note] = field(default_factory=list)

    def note(self, code: str, detail: str = "") -> None:
        found = Note(code, detail, self.uid)
        if found not in self.notes:
            self.notes.append(found)

    def zone(self, name: str | None) -> tzinfo:
        """The zone a value names, or the mailbox's zone (noted) when it cannot be known."""
        iana = windows_to_iana(name)
        if iana is None:
            self.note("zone_unknown", name or "")
            iana = self.mailbox_zone
        return ZoneInfo(iana)

    def display_zone(self, event: dict[str, Any]) -> tzinfo:
        """The zone occurrences are expanded in and shown in: the organiser's, not the UTC
        Graph answers in by default, or DST would move a series' wall-clock time."""
        recurrence = event.get("recurrence") or {}
        names = [name for name in ((recurrence.get("range") or {}).get("recurrenceTimeZone"),
                                   event.get("originalStartTimeZone")) if name]
        for name in names:
            if iana := windows_to_iana(name):
                return ZoneInfo(iana)
        if names:
            return self.zone(names[0])
        return self.zone((event.get("start") or {}).get("timeZone"))


@dataclass(frozen=True)
class _Times:
    start: datetime | date
    end: datetime | date
    all_day: bool


def _times(event: dict[str, Any], zone: tzinfo, ctx: _Context) -> _Times:
    start, end = event["start"], event["end"]
    if event.get("isAllDay"):
        first, last = wall_clock(start).date(), wall_clock(end).date()
        return _Times(first, max(last, first + timedelta(days=1)), True)
    return _Times(
        wall_clock(start).replace(tzinfo=ctx.zone(start.get("timeZone"))).astimezone(zone),
        wall_clock(end).replace(tzinfo=ctx.zone(end.get("timeZone"))).astimezone(zone),
        False,
    )


def _address(entry: dict[str, Any] | None, ctx: _Context) -> vCalAddress | None:
    email = ((entry or {}).get("emailAddress") or {})
    source = (email.get("address") or "").strip()
    if not source:
        return None
    target = ctx.user_map(source) or source
    address = vCalAddress(f"mailto:{target}")
    if email.get("name"):
        address.params["CN"] = vText(email["name"])
    return address


class _TextOfHtml(HTMLParser):
    """Readable text of an HTML body: block ends become line breaks, styles are skipped."""

    BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4"})

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script", "head"):
            self.hidden += 1
        elif tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head"):
            self.hidden = max(0, self.hidden - 1)
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    def text(self) -> str:
        # Collapse HTML's insignificant white space, not the no-break spaces French
        # typography puts before ":" or "?".
        lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip()
                 for line in "".join(self.parts).splitlines())
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def body_text(body: dict[str, Any] | None) -> tuple[str, str | None]:
    """The readable text of a Graph ``itemBody``, and its HTML when it is HTML."""
    content = (body or {}).get("content") or ""
    if not content.strip():
        return "", None
    if (body or {}).get("contentType", "").lower() != "html":
        return content, None
    parser = _TextOfHtml()
    parser.feed(content)
    parser.close()
    return parser.text(), content


def add_description(component: Component, body: dict[str, Any] | None) -> None:
    """DESCRIPTION from a Graph ``itemBody``; an HTML body also as it is, in X-ALT-DESC (the
    property Outlook reads back)."""
    text, html = body_text(body)
    if text:
        component.add("description", text)
    if html is not None:
        component.add("x-alt-desc", html, parameters={"FMTTYPE": "text/html"})


def _location(event: dict[str, Any]) -> str:
    main = ((event.get("location") or {}).get("displayName") or "").strip()
    if main:
        return main
    names = (((place or {}).get("displayName") or "").strip()
             for place in event.get("locations") or [])
    return "; ".join(name for name in names if name)


def _vevent(event: dict[str, Any], times: _Times, ctx: _Context) -> Event:
    """Every property of one event except recurrence, in a fixed order so that the same
    source event always gives the same bytes (the sink fingerprints them)."""
    vevent = Event()
    vevent.add("uid", ctx.uid)
    stamp = event.get("lastModifiedDateTime") or event.get("createdDateTime")
    # DTSTAMP is required; the time of conversion would change the bytes on every run.
    vevent.add("dtstamp", parse_graph_instant(stamp) if stamp else datetime(1970, 1, 1,
                                                                              tzinfo=UTC))
    if event.get("createdDateTime"):
        vevent.add("created", parse_graph_instant(event["createdDateTime"]))
    if event.get("lastModifiedDateTime"):
        vevent.add("last-modified", parse_graph_instant(event["lastModifiedDateTime"]))
    vevent.add("dtstart", times.start)
    vevent.add("dtend", times.end)
    vevent.add("summary", event.get("subject") or "")
    add_description(vevent, event.get("body"))
    if location := _location(event):
        vevent.add("location", location)
    if organizer := _address(event.get("organizer"), ctx):
        vevent.add("organizer", organizer)
    for attendee in event.get("attendees") or []:
        address = _address(attendee, ctx)
        if address is None:
            continue
        kind = attendee.get("type") or "required"
        address.params["CUTYPE"] = "RESOURCE" if kind == "resource" else "INDIVIDUAL"
        address.params["ROLE"] = ROLES.get(kind, "REQ-PARTICIPANT")
        response = ((attendee.get("status") or {}).get("response")) or "none"
        address.params["PARTSTAT"] = PARTSTATS.get(response, "NEEDS-ACTION")
        vevent.add("attendee", address)
    _online_meeting(vevent, event, ctx)
    sensitivity = event.get("sensitivity") or "normal"
    vevent.add("class", CLASSES.get(sensitivity, "PUBLIC"))
    if sensitivity == "personal":
        ctx.note("sensitivity_personal")
    if event.get("categories"):
        vevent.add("categories", list(event["categories"]))
    show_as = event.get("showAs") or "busy"
    vevent.add("transp", "TRANSPARENT" if show_as == "free" else "OPAQUE")
    vevent.add("x-microsoft-cdo-busystatus", BUSY_STATUS.get(show_as, "BUSY"))
    if event.get("importance") in PRIORITIES:
        vevent.add("priority", PRIORITIES[event["importance"]])
    if event.get("isCancelled"):
        vevent.add("status", "CANCELLED")
    elif show_as == "tentative":
        vevent.add("status", "TENTATIVE")
    if event.get("isReminderOn"):
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", event.get("subject") or "Reminder")
        alarm.add("trigger", -timedelta(minutes=int(event.get("reminderMinutesBeforeStart")
                                                    or 0)))
        vevent.add_component(alarm)
    for attachment in event.get("attachments") or []:
        _attach(vevent, attachment, ctx)
    return vevent


def _attach(vevent: Event, attachment: dict[str, Any], ctx: _Context) -> None:
    """A small file attachment as an inline ATTACH with its type and name (RFC 8607's
    FILENAME); anything else noted as not carried."""
    name = str(attachment.get("name") or "")
    content = attachment.get("contentBytes")
    size = int(attachment.get("size") or 0)
    if attachment.get("@odata.type") != FILE_ATTACHMENT or content is None \
            or size > INLINE_ATTACHMENT_MAX:
        ctx.note("attachment_not_carried", name)
        return
    data = vBinary(base64.b64decode(content))
    data.params["FMTTYPE"] = str(attachment.get("contentType") or "application/octet-stream")
    if name:
        data.params["FILENAME"] = name
    vevent.add("attach", data)


def _online_meeting(vevent: Event, event: dict[str, Any], ctx: _Context) -> None:
    link = ((event.get("onlineMeeting") or {}).get("joinUrl") or event.get("onlineMeetingUrl")
            or "")
    if not link:
        return
    vevent.add("url", link)
    vevent.add("conference", link, parameters={"VALUE": "URI", "FEATURE": ["AUDIO", "VIDEO"]})
    ctx.note("online_meeting_link", link)


def recurrence_rule(recurrence: dict[str, Any], all_day: bool, zone: tzinfo
                    ) -> dict[str, Any] | None:
    """The RRULE of a Graph ``patternedRecurrence`` whose first occurrence is all day or
    not, in ``zone``; ``None`` for an unknown pattern type."""
    pattern, bounds = recurrence.get("pattern") or {}, recurrence.get("range") or {}
    kind = pattern.get("type")
    days = [WEEKDAYS[day.lower()] for day in pattern.get("daysOfWeek") or []]
    rule: dict[str, Any] = {}
    if kind == "daily":
        rule["FREQ"] = "DAILY"
    elif kind == "weekly":
        rule.update(FREQ="WEEKLY", BYDAY=days,
                    WKST=WEEKDAYS[(pattern.get("firstDayOfWeek") or "sunday").lower()])
    elif kind in ("absoluteMonthly", "absoluteYearly"):
        rule["FREQ"] = "MONTHLY" if kind == "absoluteMonthly" else "YEARLY"
        if kind == "absoluteYearly":
            rule["BYMONTH"] = int(pattern["month"])
        rule.update(_day_of_month(int(pattern["dayOfMonth"])))
    elif kind in ("relativeMonthly", "relativeYearly"):
        rule["FREQ"] = "MONTHLY" if kind == "relativeMonthly" else "YEARLY"
        if kind == "relativeYearly":
            rule["BYMONTH"] = int(pattern["month"])
        position = WEEK_INDEX[(pattern.get("index") or "first").lower()]
        if len(days) == 1:
            rule["BYDAY"] = [f"{position}{days[0]}"]
        else:
            rule.update(BYDAY=days, BYSETPOS=position)
    else:
        return None
    interval = int(pattern.get("interval") or 1)
    if interval > 1:
        rule["INTERVAL"] = interval
    if bounds.get("type") == "numbered":
        rule["COUNT"] = int(bounds["numberOfOccurrences"])
    elif bounds.get("type") == "endDate" and bounds.get("endDate"):
        last_day = date.fromisoformat(bounds["endDate"])
        if all_day:
            rule["UNTIL"] = last_day
        else:
            rule["UNTIL"] = datetime.combine(last_day, time(23, 59, 59), zone).astimezone(UTC)
    return rule


def _day_of_month(day: int) -> dict[str, Any]:
    """Exchange takes a day past the end of a month as that month's last day (EWS reference,
    ``DayOfMonth``); RFC 5545 would skip such months, so ask for the last day that exists."""
    if day < 29:
        return {"BYMONTHDAY": [day]}
    return {"BYMONTHDAY": list(range(28, day + 1)), "BYSETPOS": -1}


def _rule_text(rule: dict[str, Any]) -> str:
    return vRecur(rule).to_ical().decode()


def _series_start(master: dict[str, Any], times: _Times, rule: dict[str, Any],
                  zone: tzinfo) -> tuple[datetime | date, datetime | date]:
    """DTSTART on the first day the pattern yields from ``range.startDate``: RFC 5545 counts
    DTSTART as an occurrence even when the rule would not produce it."""
    start_date = (master["recurrence"].get("range") or {}).get("startDate")
    first_day = date.fromisoformat(start_date) if start_date else _day_of(times.start)
    probe = {key: value for key, value in rule.items() if key not in ("COUNT", "UNTIL")}
    if isinstance(times.start, datetime):
        origin: datetime = datetime.combine(first_day, times.start.timetz())
    else:
        origin = datetime.combine(first_day, time())
    first = next(iter(rrulestr(_rule_text(probe), dtstart=origin)), None)
    if first is None:
        return times.start, times.end
    shift = first.date() - _day_of(times.start)
    if not shift:
        return times.start, times.end
    if isinstance(times.start, datetime) and isinstance(times.end, datetime):
        # Same wall-clock time on the new day, whatever DST does in between.
        return ((times.start.replace(tzinfo=None) + shift).replace(tzinfo=zone),
                (times.end.replace(tzinfo=None) + shift).replace(tzinfo=zone))
    return times.start + shift, times.end + shift


def _day_of(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value


def _new_calendar() -> Calendar:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    return calendar


def _finish(calendar: Calendar, earliest: datetime | date) -> Calendar:
    first = _day_of(earliest)
    add_timezones(calendar, date(first.year - 1, 1, 1))
    return calendar


def _original_start(value: str | date | datetime, master_times: _Times,
                    zone: tzinfo) -> datetime | date:
    """An occurrence's slot in the series, in the form and zone of the master's DTSTART."""
    if isinstance(value, str):
        value = parse_graph_instant(value)
    if master_times.all_day:
        if isinstance(value, datetime):
            # Midnight in the organiser's zone, given in UTC: the nearest local date is it.
            return (value.astimezone(zone) + timedelta(hours=12)).date()
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(zone)
    assert isinstance(master_times.start, datetime)
    return datetime.combine(value, master_times.start.timetz())


def series_to_ical(
    master: dict[str, Any],
    exceptions: Sequence[dict[str, Any]],
    cancelled: Iterable[str | date | datetime],
    *,
    user_map: UserMap,
    mailbox_zone: str,
) -> tuple[Calendar, list[Note]]:
    """One VCALENDAR for a series: the master with its RRULE, each modified occurrence as a
    VEVENT with the master's UID and a RECURRENCE-ID (its original start), each cancelled
    occurrence (``originalStart`` values, or dates for an all-day series) as an EXDATE."""
    ctx = _Context(user_map, mailbox_zone, master.get("iCalUId") or master["id"])
    zone = ctx.display_zone(master)
    times = _times(master, zone, ctx)
    rule = recurrence_rule(master.get("recurrence") or {}, times.all_day, zone)
    calendar = _new_calendar()
    if rule is None:
        ctx.note("recurrence_unknown", str(((master.get("recurrence") or {}).get("pattern")
                                             or {}).get("type")))
        calendar.add_component(_vevent(master, times, ctx))
        return _finish(calendar, times.start), ctx.notes
    start, end = _series_start(master, times, rule, zone)
    if start != times.start:
        ctx.note("series_start_moved", _day_of(start).isoformat())
        times = _Times(start, end, times.all_day)
    vevent = _vevent(master, times, ctx)
    vevent.add("rrule", rule)
    slots = sorted({_original_start(value, times, zone) for value in cancelled},
                   key=_sort_key)
    for slot in slots:
        vevent.add("exdate", slot)
    calendar.add_component(vevent)
    for exception in sorted(exceptions, key=lambda item: item.get("originalStart") or ""):
        exception_times = _times(exception, zone, ctx)
        override = _vevent(exception, exception_times, ctx)
        override.add("recurrence-id", _original_start(exception["originalStart"], times, zone))
        calendar.add_component(override)
    return _finish(calendar, times.start), ctx.notes


def _sort_key(value: datetime | date) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.combine(value, time(), UTC)


def single_to_ical(
    event: dict[str, Any], *, user_map: UserMap, mailbox_zone: str
) -> tuple[Calendar, list[Note]]:
    """One VCALENDAR for an event outside any series in this mailbox: a single instance, or an
    occurrence whose master is not here (an invitation to one meeting of a series), written
    standalone with its own UID: a RECURRENCE-ID with no master is refused by some servers."""
    ctx = _Context(user_map, mailbox_zone, event.get("iCalUId") or event["id"])
    if event.get("type") in ("occurrence", "exception"):
        ctx.note("orphan_occurrence")
    zone = ctx.display_zone(event)
    times = _times(event, zone, ctx)
    calendar = _new_calendar()
    calendar.add_component(_vevent(event, times, ctx))
    return _finish(calendar, times.start), ctx.notes


def series_span(master: dict[str, Any], *, mailbox_zone: str = "UTC"
                ) -> tuple[datetime, datetime | None] | None:
    """When a series' occurrences start and end, as UTC instants: the start of the first,
    and the end of the last, or None when the series never ends. None for an event that is
    not a series."""
    series = _series_rule(master, mailbox_zone)
    if series is None:
        return None
    rule, zone, _, (start, end) = series
    first, length = _instant(start, zone), _instant(end, zone) - _instant(start, zone)
    if "COUNT" not in rule and "UNTIL" not in rule:
        return first, None
    origin = start if isinstance(start, datetime) else datetime.combine(start, time())
    last = None
    for last in rrulestr(_rule_text(rule), dtstart=origin):
        pass
    if last is None:
        return first, first + length
    if isinstance(start, datetime):
        return first, last.astimezone(UTC) + length
    return first, _instant(last.date(), zone) + length


def _series_rule(master: dict[str, Any], mailbox_zone: str
                 ) -> tuple[dict[str, Any], tzinfo, _Times,
                            tuple[datetime | date, datetime | date]] | None:
    """A master's RRULE parts, display zone, times, and the start and end of its first
    occurrence; None when its pattern cannot be read."""
    ctx = _Context(lambda _address: None, mailbox_zone, "")
    zone = ctx.display_zone(master)
    times = _times(master, zone, ctx)
    rule = recurrence_rule(master.get("recurrence") or {}, times.all_day, zone)
    if rule is None:
        return None
    return rule, zone, times, _series_start(master, times, rule, zone)


def _instant(value: datetime | date, zone: tzinfo) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.combine(value, time(), zone).astimezone(UTC)


def cancelled_occurrences(
    master: dict[str, Any],
    instances: Iterable[dict[str, Any]],
    window: Window,
    *,
    mailbox_zone: str = "UTC",
) -> list[datetime | date]:
    """The occurrences of ``master`` starting in ``window`` (aware datetimes, end excluded)
    that ``/instances`` did not return: the cancelled ones. Timed series give UTC datetimes,
    all-day series dates; both can be passed to ``series_to_ical`` as ``cancelled``."""
    series = _series_rule(master, mailbox_zone)
    if series is None:
        return []
    rule, zone, times, (start, _end) = series
    listed = {_original_start(item["originalStart"], times, zone)
              for item in instances if item.get("originalStart")}
    if isinstance(start, datetime):
        expected = rrulestr(_rule_text(rule), dtstart=start).between(
            window[0], window[1] - timedelta(microseconds=1), inc=True)
        listed_utc = {_sort_key(slot) for slot in listed}
        return [slot.astimezone(UTC) for slot in expected
                if slot.astimezone(UTC) not in listed_utc]
    days = rrulestr(_rule_text(rule), dtstart=datetime.combine(start, time())).between(
        datetime.combine(window[0].astimezone(zone).date(), time()),
        datetime.combine(window[1].astimezone(zone).date(), time()), inc=True)
    return [day.date() for day in days
            if window[0] <= day.replace(tzinfo=zone) < window[1] and day.date() not in listed]
