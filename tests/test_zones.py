"""Time zones written as rules: the same offsets as zoneinfo over every day of the span,
read back through icalendar's own reading of the VTIMEZONE; icalendar's transitions list
where the zone's rule changed within the span."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import icalendar
import pytest

from mappings.zones import add_timezones, rule_timezone

ZONES = ("Europe/Paris", "America/New_York", "Australia/Sydney", "Europe/Dublin",
         "Asia/Tokyo", "Asia/Kolkata", "Pacific/Chatham", "America/Sao_Paulo")


@pytest.mark.parametrize("tzid", ZONES)
def test_a_zone_written_as_rules_gives_zoneinfo_offsets_every_hour_of_its_span(tzid: str):
    first, last = date(2023, 1, 1), date(2038, 1, 1)
    written = rule_timezone(tzid, first, last)
    assert written is not None, tzid
    assert b"RDATE" not in written.to_ical()
    read = icalendar.Calendar.from_ical(written.to_ical()).to_tz()  # icalendar's reading
    zone = ZoneInfo(tzid)
    moment = datetime(first.year + 1, 1, 1, tzinfo=UTC)
    while moment.year < last.year:
        assert moment.astimezone(read).utcoffset() == moment.astimezone(zone).utcoffset(), (
            tzid, moment)
        moment += timedelta(hours=1)


def test_a_zone_whose_rule_changed_within_the_span_keeps_its_transitions():
    # Brazil dropped summer time in 2019: from 2017 on, no single rule describes it.
    assert rule_timezone("America/Sao_Paulo", date(2017, 1, 1)) is None
    assert rule_timezone("Europe/Paris", date(1990, 1, 1)) is None  # the EU rule of 1996
    assert rule_timezone("Nowhere/Atlantis", date(2024, 1, 1)) is None

    calendar = icalendar.Calendar()
    event = icalendar.Event()
    event.add("dtstart", datetime(2018, 2, 1, 9, tzinfo=ZoneInfo("America/Sao_Paulo")))
    event.add("dtend", datetime(2025, 2, 1, 10, tzinfo=ZoneInfo("Europe/Paris")))
    calendar.add_component(event)
    add_timezones(calendar, date(2017, 1, 1))
    written = {zone["TZID"]: zone.to_ical() for zone in calendar.timezones}
    assert b"RDATE" in written["America/Sao_Paulo"]
    assert b"RRULE" in written["Europe/Paris"] and b"RDATE" not in written["Europe/Paris"]
