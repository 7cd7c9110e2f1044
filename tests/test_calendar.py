"""Graph events to iCalendar: the occurrences a user sees are the ones Outlook showed.

Each series is expanded twice over a two-year window: from the iCalendar we write (by
``recurring_ical_events``, which knows nothing of Graph) and from the Graph pattern (by
``graph_days`` below, written from the definitions of the Graph ``recurrencePattern`` and
``recurrenceRange`` pages and the EWS ``DayOfMonth`` page). The two sets must be equal.
"""

from __future__ import annotations

import base64
import calendar as month_calendar
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import recurring_ical_events
from icalendar import Calendar

from mappings.calendar import (
    INLINE_ATTACHMENT_MAX,
    Note,
    cancelled_occurrences,
    series_to_ical,
    single_to_ical,
    windows_to_iana,
)
from reports.i18n import Text

PARIS = ZoneInfo("Europe/Paris")
WINDOW = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
USERS = {"alice.martin@contoso.fr": "alice.martin@ville-exemple.fr",
         "bruno.lefevre@contoso.fr": "bruno.lefevre@ville-exemple.fr"}
DAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
INDEX = {"first": 0, "second": 1, "third": 2, "fourth": 3, "last": -1}


def user_map(address: str) -> str | None:
    return USERS.get(address.lower())


def graph_time(moment: datetime, zone: str = "UTC") -> dict[str, str]:
    """A ``dateTimeTimeZone`` as Graph writes it: seven fractional digits, no offset."""
    return {"dateTime": moment.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone}


def utc_stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def series(
    uid: str, first: datetime, minutes: int, pattern: dict[str, Any], bounds: dict[str, Any],
    *, zone: str = "Romance Standard Time", in_utc: bool = True, **extra: Any,
) -> dict[str, Any]:
    """A seriesMaster as Graph v1.0 returns it. ``first`` is local to ``zone``; with
    ``in_utc`` the times come back in UTC (no ``Prefer: outlook.timezone``) and the zone only
    in ``originalStartTimeZone``."""
    local = first.replace(tzinfo=ZoneInfo(windows_to_iana(zone) or "UTC"))
    end = local + timedelta(minutes=minutes)
    if in_utc:
        start_value = graph_time(local.astimezone(UTC).replace(tzinfo=None))
        end_value = graph_time(end.astimezone(UTC).replace(tzinfo=None))
    else:
        start_value = graph_time(first, zone)
        end_value = graph_time(end.replace(tzinfo=None), zone)
    event = {
        "id": f"AAMk-{uid}", "iCalUId": uid, "type": "seriesMaster", "subject": f"Série {uid}",
        "start": start_value, "end": end_value, "isAllDay": False,
        "originalStartTimeZone": zone, "originalEndTimeZone": zone,
        "lastModifiedDateTime": "2024-01-02T10:11:12.1234567Z",
        "recurrence": {"pattern": pattern,
                       "range": {"startDate": first.date().isoformat(), **bounds}},
    }
    event.update(extra)
    return event


def graph_days(pattern: dict[str, Any], bounds: dict[str, Any], horizon: date) -> list[date]:
    """Every day a Graph pattern yields up to ``horizon``, from the Graph definitions."""
    first = date.fromisoformat(bounds["startDate"])
    days = (day for day in _candidates(pattern, first, horizon) if first <= day <= horizon)
    if bounds["type"] == "endDate":
        last = date.fromisoformat(bounds["endDate"])
        days = (day for day in days if day <= last)
    found = list(days)
    if bounds["type"] == "numbered":
        found = found[: bounds["numberOfOccurrences"]]
    return found


def _candidates(pattern: dict[str, Any], first: date, horizon: date) -> Iterator[date]:
    kind, interval = pattern["type"], pattern.get("interval", 1)
    weekdays = {DAY_NAMES.index(name) for name in pattern.get("daysOfWeek", [])}
    if kind == "daily":
        day = first
        while day <= horizon:
            yield day
            day += timedelta(days=interval)
    elif kind == "weekly":
        week_start = DAY_NAMES.index(pattern.get("firstDayOfWeek", "sunday"))
        week = first - timedelta(days=(first.weekday() - week_start) % 7)
        while week <= horizon:
            yield from sorted(week + timedelta(days=offset) for offset in range(7)
                              if (week + timedelta(days=offset)).weekday() in weekdays)
            week += timedelta(weeks=interval)
    else:
        yearly = kind.endswith("Yearly")
        step = 12 * interval if yearly else interval
        year, month = first.year, (pattern["month"] if yearly else first.month)
        while date(year, month, 1) <= horizon:
            length = month_calendar.monthrange(year, month)[1]
            if kind.startswith("absolute"):
                yield date(year, month, min(pattern["dayOfMonth"], length))
            else:
                matching = [date(year, month, day) for day in range(1, length + 1)
                            if date(year, month, day).weekday() in weekdays]
                yield matching[INDEX[pattern["index"]]]
            month += step
            year, month = year + (month - 1) // 12, (month - 1) % 12 + 1


def expected_starts(master: dict[str, Any], local_time: time, zone: ZoneInfo,
                    cancelled: set[datetime] = frozenset(),
                    moved: dict[datetime, datetime] | None = None) -> set[datetime]:
    recurrence = master["recurrence"]
    days = graph_days(recurrence["pattern"], recurrence["range"], WINDOW[1].date())
    slots = {datetime.combine(day, local_time, zone).astimezone(UTC) for day in days}
    moved = moved or {}
    kept = {slot for slot in slots if slot not in cancelled and slot not in moved}
    return {slot for slot in kept | set(moved.values()) if WINDOW[0] <= slot < WINDOW[1]}


def ical_starts(calendar: Calendar) -> set[Any]:
    """Occurrence starts as a CalDAV client would compute them from what we wrote."""
    parsed = Calendar.from_ical(calendar.to_ical())
    starts = set()
    for occurrence in recurring_ical_events.of(parsed).between(*WINDOW):
        start = occurrence["DTSTART"].dt
        starts.add(start.astimezone(UTC) if isinstance(start, datetime) else start)
    return {start for start in starts
            if not isinstance(start, datetime) or WINDOW[0] <= start < WINDOW[1]}


def events(calendar: Calendar) -> list[Any]:
    return list(Calendar.from_ical(calendar.to_ical()).walk("VEVENT"))


def instances_of(master: dict[str, Any], starts: set[datetime],
                 moved: dict[datetime, datetime]) -> list[dict[str, Any]]:
    """What ``/instances`` lists: every occurrence still there, with its ``originalStart``."""
    back = {new: old for old, new in moved.items()}
    return [{"type": "exception" if start in back else "occurrence",
             "seriesMasterId": master["id"], "originalStart": utc_stamp(back.get(start, start))}
            for start in sorted(starts)]


def paris(*args: int) -> datetime:
    return datetime(*args, tzinfo=PARIS).astimezone(UTC)


def test_windows_zone_names() -> None:
    assert windows_to_iana("Romance Standard Time") == "Europe/Paris"
    assert windows_to_iana("W. Europe Standard Time") == "Europe/Berlin"
    assert windows_to_iana("Europe/Paris") == "Europe/Paris"
    assert windows_to_iana("UTC") == "UTC"
    assert windows_to_iana("tzone://Microsoft/Utc") == "UTC"
    assert windows_to_iana("Customized Time Zone") is None
    assert windows_to_iana("(UTC+01:00) Brussels, Copenhagen, Madrid, Paris") is None
    assert windows_to_iana("") is None


def weekly_master() -> dict[str, Any]:
    return series(
        "hebdo-conseil", datetime(2024, 3, 4, 9, 0), 60,
        {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "wednesday"],
         "firstDayOfWeek": "monday"},
        {"type": "noEnd", "recurrenceTimeZone": "Romance Standard Time"},
        attendees=[
            {"type": "required", "status": {"response": "accepted"},
             "emailAddress": {"name": "Bruno Lefèvre", "address": "Bruno.Lefevre@contoso.fr"}},
            {"type": "optional", "status": {"response": "none"},
             "emailAddress": {"name": "Prestataire", "address": "contact@prestataire.com"}},
            {"type": "resource", "status": {"response": "accepted"},
             "emailAddress": {"name": "Salle du conseil", "address": "salle.conseil@contoso.fr"}},
        ],
        organizer={"emailAddress": {"name": "Alice Martin",
                                    "address": "alice.martin@contoso.fr"}},
        isReminderOn=True, reminderMinutesBeforeStart=15, sensitivity="private",
        categories=["Conseil municipal", "Élus"], showAs="busy",
        isOnlineMeeting=True,
        onlineMeeting={"joinUrl": "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x"},
        body={"contentType": "html",
              "content": "<html><head><style>p{}</style></head><body><p>Ordre du jour&nbsp;:"
                         "</p><p>Budget 2024</p></body></html>"},
        location={"displayName": "Hôtel de ville"},
    )


def test_weekly_series_with_a_moved_and_a_cancelled_occurrence() -> None:
    master = weekly_master()
    moved_from, moved_to = paris(2024, 3, 13, 9, 0), paris(2024, 3, 13, 14, 0)
    cancelled = paris(2024, 3, 18, 9, 0)
    exception = {
        **{key: value for key, value in master.items() if key != "recurrence"},
        "id": "AAMk-exc", "iCalUId": "other-uid-per-occurrence", "type": "exception",
        "seriesMasterId": master["id"], "originalStart": utc_stamp(moved_from),
        "start": graph_time(moved_to.replace(tzinfo=None)),
        "end": graph_time((moved_to + timedelta(hours=1)).replace(tzinfo=None)),
        "subject": "Conseil (déplacé)",
    }
    result, _notes = series_to_ical(master, [exception], [utc_stamp(cancelled)],
                                   user_map=user_map, mailbox_zone="Europe/Paris")
    expected = expected_starts(master, time(9, 0), PARIS, {cancelled}, {moved_from: moved_to})
    assert ical_starts(result) == expected
    # DST on 31 March 2024: 09:00 in Paris is 08:00 UTC before, 07:00 UTC after.
    assert paris(2024, 3, 27, 9, 0) in expected
    assert datetime(2024, 4, 1, 7, 0, tzinfo=UTC) in expected

    master_event, override = events(result)
    assert master_event["UID"] == override["UID"] == "hebdo-conseil"
    assert master_event["DTSTART"].params["TZID"] == "Europe/Paris"
    assert master_event["DTSTART"].dt.replace(tzinfo=None) == datetime(2024, 3, 4, 9, 0)
    assert master_event["RRULE"].to_ical() == b"FREQ=WEEKLY;BYDAY=MO,WE;WKST=MO"
    assert [entry.dt for exdate in _list(master_event["EXDATE"]) for entry in exdate.dts] == [
        datetime(2024, 3, 18, 9, 0, tzinfo=PARIS)]
    assert override["RECURRENCE-ID"].dt == datetime(2024, 3, 13, 9, 0, tzinfo=PARIS)
    assert str(override["SUMMARY"]) == "Conseil (déplacé)"
    assert "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris" in result.to_ical().decode()

    instances = instances_of(master, expected, {moved_from: moved_to})
    assert cancelled_occurrences(master, instances, WINDOW) == [cancelled]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_attendees_alarm_class_and_meeting_link() -> None:
    result, notes = series_to_ical(weekly_master(), [], [], user_map=user_map,
                                   mailbox_zone="Europe/Paris")
    (event,) = events(result)
    assert event["ORGANIZER"] == "mailto:alice.martin@ville-exemple.fr"
    assert event["ORGANIZER"].params["CN"] == "Alice Martin"
    attendees = {str(item): item.params for item in event["ATTENDEE"]}
    assert set(attendees) == {"mailto:bruno.lefevre@ville-exemple.fr",
                              "mailto:contact@prestataire.com", "mailto:salle.conseil@contoso.fr"}
    bruno = attendees["mailto:bruno.lefevre@ville-exemple.fr"]
    assert (bruno["ROLE"], bruno["PARTSTAT"], bruno["CN"]) == (
        "REQ-PARTICIPANT", "ACCEPTED", "Bruno Lefèvre")
    assert attendees["mailto:contact@prestataire.com"]["ROLE"] == "OPT-PARTICIPANT"
    assert attendees["mailto:contact@prestataire.com"]["PARTSTAT"] == "NEEDS-ACTION"
    assert attendees["mailto:salle.conseil@contoso.fr"]["CUTYPE"] == "RESOURCE"
    (alarm,) = event.walk("VALARM")
    assert alarm["TRIGGER"].to_ical() == b"-PT15M"
    assert event["CLASS"] == "PRIVATE"
    assert event["TRANSP"] == "OPAQUE"
    assert event["CATEGORIES"].cats == ["Conseil municipal", "Élus"]
    assert event["URL"] == "https://teams.microsoft.com/l/meetup-join/19%3ameeting_x"
    assert b"CONFERENCE;FEATURE=AUDIO,VIDEO;VALUE=URI:https://teams.microsoft.com/l/m" in (
        result.to_ical())
    assert event["LOCATION"] == "Hôtel de ville"
    assert str(event["DESCRIPTION"]) == "Ordre du jour\xa0:\nBudget 2024"
    assert [note.code for note in notes] == ["online_meeting_link"]
    assert "réunion" in Text.of(notes[0].code, detail=notes[0].detail).fr


def test_relative_monthly_second_thursday_or_friday() -> None:
    master = series(
        "comite-technique", datetime(2024, 1, 5, 10, 0), 90,
        {"type": "relativeMonthly", "interval": 1, "index": "second",
         "daysOfWeek": ["thursday", "friday"]},
        {"type": "noEnd"}, in_utc=False,
    )
    result, notes = series_to_ical(master, [], [], user_map=user_map,
                                   mailbox_zone="Europe/Paris")
    (event,) = events(result)
    assert event["RRULE"]["BYSETPOS"] == [2]
    assert event["RRULE"]["BYDAY"] == ["TH", "FR"]
    expected = expected_starts(master, time(10, 0), PARIS)
    assert ical_starts(result) == expected
    # February 2024 begins on a Thursday: its second Thursday-or-Friday is Friday the 2nd.
    assert paris(2024, 2, 2, 10, 0) in expected
    assert notes == []


def test_absolute_yearly() -> None:
    master = series(
        "fete-musique", datetime(2024, 6, 21, 18, 0), 240,
        {"type": "absoluteYearly", "interval": 1, "month": 6, "dayOfMonth": 21},
        {"type": "noEnd"},
    )
    result, _notes = series_to_ical(master, [], [], user_map=user_map,
                                    mailbox_zone="Europe/Paris")
    assert ical_starts(result) == expected_starts(master, time(18, 0), PARIS) == {
        paris(2024, 6, 21, 18, 0), paris(2025, 6, 21, 18, 0)}


def test_end_date_range_across_dst_keeps_the_last_day() -> None:
    # Every other Tuesday at 23:30 in Paris until Tuesday 5 November 2024, across the end of
    # summer time (27 October): the last occurrence is 22:30 UTC on the end date.
    master = series(
        "permanence-soir", datetime(2024, 9, 10, 23, 30), 30,
        {"type": "weekly", "interval": 2, "daysOfWeek": ["tuesday"], "firstDayOfWeek": "sunday"},
        {"type": "endDate", "endDate": "2024-11-05"},
    )
    result, _notes = series_to_ical(master, [], [], user_map=user_map,
                                    mailbox_zone="Europe/Paris")
    (event,) = events(result)
    assert event["RRULE"]["UNTIL"] == [datetime(2024, 11, 5, 22, 59, 59, tzinfo=UTC)]
    expected = expected_starts(master, time(23, 30), PARIS)
    assert ical_starts(result) == expected
    assert max(expected) == datetime(2024, 11, 5, 22, 30, tzinfo=UTC)
    assert min(expected) == datetime(2024, 9, 10, 21, 30, tzinfo=UTC)
    assert len(expected) == 5


def test_numbered_monthly_on_day_31_lands_on_short_months_last_day() -> None:
    master = series(
        "cloture-mois", datetime(2024, 1, 31, 17, 0), 60,
        {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 31},
        {"type": "numbered", "numberOfOccurrences": 10},
    )
    result, _notes = series_to_ical(master, [], [], user_map=user_map,
                                    mailbox_zone="Europe/Paris")
    (event,) = events(result)
    assert event["RRULE"]["COUNT"] == [10]
    expected = expected_starts(master, time(17, 0), PARIS)
    assert ical_starts(result) == expected
    assert len(expected) == 10
    assert paris(2024, 2, 29, 17, 0) in expected and paris(2024, 4, 30, 17, 0) in expected


def test_daily_every_three_days() -> None:
    master = series(
        "releve-compteurs", datetime(2024, 2, 1, 7, 45), 15,
        {"type": "daily", "interval": 3}, {"type": "noEnd"},
    )
    result, _notes = series_to_ical(master, [], [], user_map=user_map,
                                    mailbox_zone="Europe/Paris")
    expected = expected_starts(master, time(7, 45), PARIS)
    assert ical_starts(result) == expected
    assert len(expected) == len(range(0, (date(2025, 12, 31) - date(2024, 2, 1)).days + 1, 3))


def test_all_day_multi_day_event_keeps_its_dates() -> None:
    event = {
        "id": "AAMk-seminaire", "iCalUId": "seminaire", "type": "singleInstance",
        "subject": "Séminaire des directeurs", "isAllDay": True,
        # Graph writes all-day bounds as midnights; in UTC they must not slip a day.
        "start": graph_time(datetime(2024, 5, 8)), "end": graph_time(datetime(2024, 5, 11)),
        "originalStartTimeZone": "Romance Standard Time", "showAs": "free",
        "sensitivity": "confidential",
    }
    result, notes = single_to_ical(event, user_map=user_map, mailbox_zone="Europe/Paris")
    (vevent,) = events(result)
    assert vevent["DTSTART"].to_ical() == b"20240508"
    assert vevent["DTEND"].to_ical() == b"20240511"
    assert vevent["CLASS"] == "CONFIDENTIAL"
    assert vevent["TRANSP"] == "TRANSPARENT"
    assert ical_starts(result) == {date(2024, 5, 8)}
    assert notes == []


def test_all_day_relative_yearly_series_with_a_cancelled_day() -> None:
    master = {
        "id": "AAMk-forum", "iCalUId": "forum-asso", "type": "seriesMaster",
        "subject": "Forum des associations", "isAllDay": True,
        "start": graph_time(datetime(2024, 9, 7)), "end": graph_time(datetime(2024, 9, 9)),
        "originalStartTimeZone": "Romance Standard Time",
        "recurrence": {
            "pattern": {"type": "relativeYearly", "interval": 1, "month": 9, "index": "first",
                        "daysOfWeek": ["saturday"]},
            "range": {"type": "noEnd", "startDate": "2024-09-07"},
        },
    }
    days = graph_days(master["recurrence"]["pattern"], master["recurrence"]["range"],
                      WINDOW[1].date())
    assert days == [date(2024, 9, 7), date(2025, 9, 6)]
    instances = [{"type": "occurrence", "originalStart": "2024-09-06T22:00:00Z"}]
    cancelled = cancelled_occurrences(master, instances, WINDOW)
    assert cancelled == [date(2025, 9, 6)]
    result, _notes = series_to_ical(master, [], cancelled, user_map=user_map,
                                    mailbox_zone="Europe/Paris")
    (vevent,) = events(result)
    assert vevent["RRULE"]["BYDAY"] == ["1SA"]
    assert ical_starts(result) == {date(2024, 9, 7)}


def test_series_whose_start_is_off_pattern_starts_on_the_first_occurrence() -> None:
    master = series(
        "point-hebdo", datetime(2024, 3, 4, 9, 0), 30,
        {"type": "weekly", "interval": 1, "daysOfWeek": ["thursday"]}, {"type": "noEnd"},
    )
    result, notes = series_to_ical(master, [], [], user_map=user_map,
                                   mailbox_zone="Europe/Paris")
    assert min(ical_starts(result)) == paris(2024, 3, 7, 9, 0)
    assert Note("series_start_moved", "2024-03-07", "point-hebdo") in notes


def test_orphan_exception_becomes_a_standalone_event() -> None:
    invitation = {
        "id": "AAMk-invit", "iCalUId": "040000008200E00074C5B7101A82E008-occ", "type": "exception",
        "seriesMasterId": "AAMk-not-here", "originalStart": "2024-04-11T12:00:00Z",
        "subject": "Réunion intercommunale", "isAllDay": False,
        "start": graph_time(datetime(2024, 4, 11, 12, 30)),
        "end": graph_time(datetime(2024, 4, 11, 13, 30)),
        "originalStartTimeZone": "Romance Standard Time",
    }
    result, notes = single_to_ical(invitation, user_map=user_map, mailbox_zone="Europe/Paris")
    (vevent,) = events(result)
    assert "RECURRENCE-ID" not in vevent and "RRULE" not in vevent
    assert vevent["UID"] == "040000008200E00074C5B7101A82E008-occ"
    assert vevent["DTSTART"].dt == datetime(2024, 4, 11, 14, 30, tzinfo=PARIS)
    assert [note.code for note in notes] == ["orphan_occurrence"]


def test_unknown_zone_falls_back_to_the_mailbox_zone_and_is_noted() -> None:
    event = {
        "id": "AAMk-custom", "iCalUId": "zone-perso", "type": "singleInstance",
        "subject": "Visio Montréal", "isAllDay": False,
        "start": graph_time(datetime(2024, 6, 3, 14, 0)),
        "end": graph_time(datetime(2024, 6, 3, 15, 0)),
        "originalStartTimeZone": "Customized Time Zone", "sensitivity": "personal",
    }
    result, notes = single_to_ical(event, user_map=user_map, mailbox_zone="Europe/Paris")
    (vevent,) = events(result)
    # The instant is exact (Graph gave it in UTC); only the zone it is shown in is a guess.
    assert vevent["DTSTART"].dt == datetime(2024, 6, 3, 16, 0, tzinfo=PARIS)
    assert vevent["CLASS"] == "PRIVATE"
    assert {note.code for note in notes} == {"zone_unknown", "sensitivity_personal"}
    zone_note = next(note for note in notes if note.code == "zone_unknown")
    assert zone_note.detail == "Customized Time Zone" and zone_note.uid == "zone-perso"
    assert "Customized Time Zone" in Text.of(zone_note.code, detail=zone_note.detail).en


def test_a_small_file_goes_into_its_event_and_what_cannot_is_noted() -> None:
    pdf = b"%PDF-1.4\n" + bytes(range(256))
    attachments = [
        {"@odata.type": "#microsoft.graph.fileAttachment", "name": "Ordre du jour.pdf",
         "contentType": "application/pdf", "size": len(pdf),
         "contentBytes": base64.b64encode(pdf).decode()},
        {"@odata.type": "#microsoft.graph.fileAttachment", "name": "Plans.zip",
         "contentType": "application/zip", "size": INLINE_ATTACHMENT_MAX + 1},
        {"@odata.type": "#microsoft.graph.referenceAttachment", "name": "PLU", "size": 512},
        {"@odata.type": "#microsoft.graph.itemAttachment", "name": "Courriel", "size": 900}]
    event = {"id": "AAMk-att", "iCalUId": "att-1", "type": "singleInstance",
             "subject": "Commission", "isAllDay": False, "sensitivity": "private",
             "start": graph_time(datetime(2024, 6, 3, 14)),
             "end": graph_time(datetime(2024, 6, 3, 15)), "attachments": attachments,
             "isReminderOn": True, "reminderMinutesBeforeStart": 15}
    result, notes = single_to_ical(event, user_map=user_map, mailbox_zone="Europe/Paris")
    (vevent,) = events(Calendar.from_ical(result.to_ical()))
    attach = vevent["ATTACH"]
    assert attach.params["FMTTYPE"] == "application/pdf"
    assert attach.params["FILENAME"] == "Ordre du jour.pdf"
    assert attach.params["ENCODING"] == "BASE64" and attach.params["VALUE"] == "BINARY"
    assert base64.b64decode(attach.to_ical()) == pdf
    assert [(n.code, n.detail) for n in notes] == [
        ("attachment_not_carried", "Plans.zip"), ("attachment_not_carried", "PLU"),
        ("attachment_not_carried", "Courriel")]
    assert vevent["CLASS"] == "PRIVATE"
    [alarm] = vevent.walk("VALARM")
    assert alarm["ACTION"] == "DISPLAY" and alarm["TRIGGER"].to_ical() == b"-PT15M"
