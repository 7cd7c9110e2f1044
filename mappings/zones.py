"""VTIMEZONE components written as rules (RRULE), as Outlook and most clients write them.

icalendar's ``add_missing_timezones`` lists every transition of a zone between two dates as
RDATE lists (``RDATE:20250330T030000,20260329T030000,...``). RFC 5545 allows it, but
Radicale (through vobject) keeps only the first date of each list: every later transition
of the zone is lost on that server. A zone whose rule has not changed over the calendar's
span is written instead as one STANDARD and one DAYLIGHT part, each with its yearly RRULE,
read from the POSIX rule that ends the zone's TZif file (RFC 8536, section 3.3:
``CET-1CEST,M3.5.0,M10.5.0/3``), and checked against zoneinfo for every year of the span.
A zone whose rule changed within the span, or is written in a form this module does not
read, keeps icalendar's transitions list.
"""

from __future__ import annotations

import importlib.resources
import re
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from icalendar import Calendar, Timezone, TimezoneDaylight, TimezoneStandard

LAST_DATE = date(2038, 1, 1)
"""Later than anything a calendar holds, as icalendar's own default."""
DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")
"""POSIX counts weekdays from Sunday (0)."""
_NAME = r"(<[^>]+>|[A-Za-z]{3,})"
_OFFSET = r"([+-]?\d{1,2}(?::\d{2}){0,2})"
_RULE = r"M(\d{1,2})\.([1-5])\.([0-6])(?:/" + _OFFSET + r")?"
_POSIX = re.compile(rf"^{_NAME}{_OFFSET}(?:{_NAME}{_OFFSET}?,{_RULE},{_RULE})?$")


def add_timezones(calendar: Calendar, first_date: date, last_date: date = LAST_DATE) -> None:
    """Add a VTIMEZONE for every TZID the calendar uses and does not define, as rules where
    the zone's rule holds over the span, as icalendar's transitions list otherwise; zones
    zoneinfo does not know are left out, as icalendar leaves them."""
    position = len(calendar.timezones)
    for tzid in sorted(calendar.get_missing_tzids()):
        zone = rule_timezone(tzid, first_date, last_date)
        if zone is None:
            try:
                zone = Timezone.from_tzid(tzid, first_date=first_date, last_date=last_date)
            except ValueError:
                continue
        calendar.subcomponents.insert(position, zone)
        position += 1


def rule_timezone(tzid: str, first_date: date, last_date: date = LAST_DATE) -> Timezone | None:
    """The zone as one STANDARD and, if it has summer time, one DAYLIGHT part with their
    yearly rules; ``None`` when its POSIX rule cannot be read or does not give zoneinfo's
    offsets over every year from ``first_date`` to ``last_date``."""
    rule = _parsed(tzid)
    if rule is None:
        return None
    zone = ZoneInfo(tzid)
    standard_name, standard, daylight_name, daylight, starts, ends = rule
    years = range(first_date.year, last_date.year + 1)
    if daylight_name is None:
        if any(datetime(year, month, 1, 12, tzinfo=zone).utcoffset() != standard
               for year in years for month in (1, 7)):
            return None
        return _timezone(tzid, [(TimezoneStandard, standard_name, standard, standard,
                                 datetime(first_date.year, 1, 1), None)])
    assert daylight is not None and starts is not None and ends is not None
    for year in years:
        for rule_of, before, after in ((starts, standard, daylight), (ends, daylight, standard)):
            wall = _transition(year, rule_of)
            instant = wall - before  # in UTC
            if _offset(zone, instant - timedelta(minutes=1)) != before or \
                    _offset(zone, instant) != after:
                return None
    year = first_date.year
    return _timezone(tzid, [
        (TimezoneDaylight, daylight_name, standard, daylight, _transition(year, starts),
         _yearly(starts)),
        (TimezoneStandard, standard_name, daylight, standard, _transition(year, ends),
         _yearly(ends)),
    ])


Rule = tuple[int, int, int, timedelta]
"""Month, week (5: the last), weekday (0: Sunday), wall-clock time of a transition."""


@cache
def _parsed(tzid: str) -> tuple[str, timedelta, str | None, timedelta | None,
                                 Rule | None, Rule | None] | None:
    footer = _footer(tzid)
    found = _POSIX.match(footer) if footer else None
    if found is None:
        return None
    (standard_name, standard, daylight_name, daylight,
     start_month, start_week, start_day, start_time,
     end_month, end_week, end_day, end_time) = found.groups()
    standard_offset = -_duration(standard)  # POSIX counts west of Greenwich
    if daylight_name is None:
        return standard_name.strip("<>"), standard_offset, None, None, None, None
    daylight_offset = -_duration(daylight) if daylight else standard_offset + timedelta(hours=1)
    starts = (int(start_month), int(start_week), int(start_day),
              _duration(start_time or "2"))
    ends = (int(end_month), int(end_week), int(end_day), _duration(end_time or "2"))
    if not all(timedelta(0) <= rule[3] < timedelta(hours=24) for rule in (starts, ends)):
        return None
    return (standard_name.strip("<>"), standard_offset, daylight_name.strip("<>"),
            daylight_offset, starts, ends)


def _footer(tzid: str) -> str | None:
    """The POSIX rule at the end of the zone's TZif file, read where zoneinfo reads it."""
    try:
        ZoneInfo(tzid)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None
    data = None
    for folder in zoneinfo.TZPATH:
        candidate = Path(folder, tzid)
        if candidate.is_file():
            data = candidate.read_bytes()
            break
    if data is None:
        try:
            data = importlib.resources.files("tzdata.zoneinfo").joinpath(tzid).read_bytes()
        except (ModuleNotFoundError, FileNotFoundError):
            return None
    if not data.startswith(b"TZif") or data[4:5] < b"2":
        return None
    return data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode("ascii", "replace")


def _duration(text: str) -> timedelta:
    sign = -1 if text.startswith("-") else 1
    parts = [int(part) for part in text.lstrip("+-").split(":")] + [0, 0]
    return sign * timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])


def _transition(year: int, rule: Rule) -> datetime:
    """The wall-clock moment of a transition in ``year``, before it happens."""
    month, week, weekday, at = rule
    first = date(year, month, 1)
    offset = (weekday - (first.isoweekday() % 7)) % 7
    day = first + timedelta(days=offset + 7 * (week - 1))
    while day.month != month:  # week 5: the last such day of the month
        day -= timedelta(days=7)
    return datetime.combine(day, datetime.min.time()) + at


def _yearly(rule: Rule) -> dict[str, object]:
    month, week, weekday, _ = rule
    return {"FREQ": "YEARLY", "BYMONTH": month,
            "BYDAY": f"{-1 if week == 5 else week}{DAYS[weekday]}"}


def _offset(zone: ZoneInfo, utc: datetime) -> timedelta | None:
    return utc.replace(tzinfo=UTC).astimezone(zone).utcoffset()


def _timezone(tzid: str, parts: list[tuple[type, str, timedelta, timedelta, datetime,
                                           dict[str, object] | None]]) -> Timezone:
    timezone = Timezone()
    timezone.add("tzid", tzid)
    for kind, name, before, after, start, rule in parts:
        part = kind()
        part.add("dtstart", start)
        part.add("tzoffsetfrom", before)
        part.add("tzoffsetto", after)
        part.add("tzname", name)
        if rule is not None:
            part.add("rrule", rule)
        timezone.add_component(part)
    return timezone
