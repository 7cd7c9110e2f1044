"""EWS items, written as Microsoft's EWS reference shows them in GetItem answers, through the
Graph form into ``mappings``: the iCalendar and vCard a target receives, read back with
icalendar, recurring_ical_events and vobject rather than with bascule's own code."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import recurring_ical_events
import vobject
from icalendar import Calendar

from connectors.ews.items import (
    contact_as_graph,
    distribution_list,
    event_as_graph,
    occurrence_slots,
    percent_complete,
    task_as_graph,
)
from connectors.ews.zones import read_definition, zone_of
from mappings.calendar import series_to_ical, single_to_ical
from mappings.contacts import Member, contact_to_vcard, contact_uid, group_to_vcard
from mappings.tasks import task_to_ical
from tests.ews_items_xml import (
    CONTACT,
    CUSTOM_PARIS,
    EXCEPTION,
    GROUP,
    ROMANCE,
    TASK,
    element,
    series_xml,
)

PARIS = ZoneInfo("Europe/Paris")


def occurrences(calendar: Calendar) -> list[datetime]:
    found = recurring_ical_events.of(Calendar.from_ical(calendar.to_ical())).between(
        datetime(2025, 1, 1), datetime(2026, 1, 1))
    return sorted(event["DTSTART"].dt.astimezone(PARIS) for event in found)


def expected_slots() -> list[datetime]:
    mondays = [datetime(2025, 1, 6, 10, tzinfo=PARIS) + timedelta(weeks=n) for n in range(10)]
    moved = datetime(2025, 1, 21, 14, tzinfo=PARIS)
    return sorted([m for m in mondays if m.day not in (20, 3) or m.month not in (1, 2)]
                  + [moved])


def convert(master: Any) -> tuple[Calendar, list[str]]:
    event, notes = event_as_graph(master, prefer=("Europe/Paris",))
    exception, more = event_as_graph(element(EXCEPTION))
    modified, deleted = occurrence_slots(master)
    assert modified == ["AAMkException="]
    calendar, mapped = series_to_ical(event, [exception], deleted, user_map=lambda a: None,
                                      mailbox_zone="Europe/Paris")
    return calendar, [n.code for n in notes + more] + [n.code for n in mapped]


def test_a_series_with_a_moved_and_a_cancelled_occurrence_keeps_its_occurrence_set() -> None:
    calendar, codes = convert(element(series_xml(ROMANCE)))
    assert occurrences(calendar) == expected_slots()
    assert len(occurrences(calendar)) == 9
    master = calendar.walk("VEVENT")[0]
    assert master["DTSTART"].dt == datetime(2025, 1, 6, 10, tzinfo=PARIS)
    assert str(master["DTSTART"].params["TZID"]) == "Europe/Paris"
    assert {tz["TZID"] for tz in calendar.walk("VTIMEZONE")} == {"Europe/Paris"}
    assert str(master["UID"]) == "040000008200E00074C5B7101A82E0080000000012345"
    assert str(master["CLASS"]) == "PRIVATE" and master["PRIORITY"] == 1
    assert [str(c) for c in master["CATEGORIES"].cats] == ["Élus", "Urbanisme"]
    assert master.walk("VALARM")[0]["TRIGGER"].dt == -timedelta(minutes=15)
    assert "PLU" in str(master["DESCRIPTION"])
    override = calendar.walk("VEVENT")[1]
    assert override["RECURRENCE-ID"].dt == datetime(2025, 1, 20, 10, tzinfo=PARIS)
    assert str(override["LOCATION"]) == "Salle B"
    assert codes.count("ews_legacy_address") >= 1


def test_attendees_keep_their_role_and_answer_and_a_legacy_dn_is_left_out_with_a_note(
) -> None:
    calendar, codes = convert(element(series_xml(ROMANCE)))
    master = calendar.walk("VEVENT")[0]
    attendees = {str(a): (a.params["ROLE"], a.params["PARTSTAT"], a.params["CUTYPE"])
                 for a in master["ATTENDEE"]}
    assert attendees == {
        "mailto:bruno@agglo.fr": ("REQ-PARTICIPANT", "ACCEPTED", "INDIVIDUAL"),
        "mailto:denis@ville.fr": ("OPT-PARTICIPANT", "NEEDS-ACTION", "INDIVIDUAL"),
        "mailto:salle.conseil@ville.fr": ("NON-PARTICIPANT", "ACCEPTED", "RESOURCE"),
    }
    assert str(master["ORGANIZER"]) == "mailto:alice@ville.fr"
    assert "ews_legacy_address" in codes


def test_a_custom_zone_with_paris_rules_is_written_as_paris_and_noted() -> None:
    calendar, codes = convert(element(series_xml(CUSTOM_PARIS)))
    assert occurrences(calendar) == expected_slots()
    assert {tz["TZID"] for tz in calendar.walk("VTIMEZONE")} == {"Europe/Paris"}
    assert "ews_zone_matched" in codes


def test_a_custom_zone_gives_the_offsets_of_its_rules_on_each_side_of_a_change() -> None:
    definition = element(CUSTOM_PARIS.replace("StartTimeZone", "TimeZoneDefinition"))
    zone = read_definition(definition)
    assert zone is not None
    # 30 March 2025 at 01:00 UTC is 02:00 Paris winter time: summer time begins then.
    assert zone.utc_offset(datetime(2025, 3, 30, 0, 59, tzinfo=UTC)) == timedelta(hours=1)
    assert zone.utc_offset(datetime(2025, 3, 30, 1, 0, tzinfo=UTC)) == timedelta(hours=2)
    assert zone.utc_offset(datetime(2025, 10, 26, 0, 59, tzinfo=UTC)) == timedelta(hours=2)
    assert zone.utc_offset(datetime(2025, 10, 26, 1, 0, tzinfo=UTC)) == timedelta(hours=1)
    assert zone_of(definition, 2025, ("Europe/Paris",)) == ("Europe/Paris", True)


def test_a_custom_zone_no_iana_zone_has_is_written_in_utc_with_a_note() -> None:
    # Summer time from the first Sunday of April: no zone of the IANA database does that
    # with a one-hour offset in these years.
    odd = CUSTOM_PARIS.replace("<t:Month>3</t:Month>", "<t:Month>4</t:Month>").replace(
        "<t:Occurrence>-1</t:Occurrence>\n      </t:RecurringDayTransition>\n      "
        "<t:RecurringDayTransition>", "<t:Occurrence>1</t:Occurrence>\n      "
        "</t:RecurringDayTransition>\n      <t:RecurringDayTransition>", 1)
    assert zone_of(element(odd.replace("StartTimeZone", "TimeZoneDefinition")), 2025) == \
        (None, True)
    single = element(series_xml(odd))
    event, notes = event_as_graph(single)
    assert "ews_zone_unknown" in [n.code for n in notes]
    assert event["start"] == {"dateTime": "2025-01-06T09:00:00", "timeZone": "UTC"}


def test_an_all_day_event_keeps_its_day_though_ews_gives_the_midnight_in_utc() -> None:
    holiday = element(f"""
<t:CalendarItem>
  <t:ItemId Id="AAMkHoliday=" ChangeKey="Dw1" />
  <t:Subject>Fête de la ville</t:Subject>
  <t:Start>2025-06-20T22:00:00Z</t:Start><t:End>2025-06-21T22:00:00Z</t:End>
  <t:IsAllDayEvent>true</t:IsAllDayEvent>
  <t:LegacyFreeBusyStatus>Free</t:LegacyFreeBusyStatus>
  <t:CalendarItemType>Single</t:CalendarItemType>
  {ROMANCE}
</t:CalendarItem>""")
    event, _ = event_as_graph(holiday)
    calendar, _ = single_to_ical(event, user_map=lambda a: None, mailbox_zone="Europe/Paris")
    read = Calendar.from_ical(calendar.to_ical()).walk("VEVENT")[0]
    assert read["DTSTART"].dt == date(2025, 6, 21) and read["DTEND"].dt == date(2025, 6, 22)
    assert str(read["TRANSP"]) == "TRANSPARENT"


def test_a_first_weekday_of_the_month_series_reads_as_exchange_means_it() -> None:
    monthly = element(f"""
<t:CalendarItem>
  <t:ItemId Id="AAMkMonthly=" ChangeKey="Dw1" />
  <t:Subject>Point mensuel</t:Subject>
  <t:Start>2025-01-01T08:00:00Z</t:Start><t:End>2025-01-01T08:30:00Z</t:End>
  <t:CalendarItemType>RecurringMaster</t:CalendarItemType>
  <t:Recurrence>
    <t:RelativeMonthlyRecurrence><t:Interval>1</t:Interval>
      <t:DaysOfWeek>Weekday</t:DaysOfWeek><t:DayOfWeekIndex>First</t:DayOfWeekIndex>
    </t:RelativeMonthlyRecurrence>
    <t:EndDateRecurrence><t:StartDate>2025-01-01+01:00</t:StartDate>
      <t:EndDate>2025-06-30+02:00</t:EndDate></t:EndDateRecurrence>
  </t:Recurrence>
  {ROMANCE}
</t:CalendarItem>""")
    event, _ = event_as_graph(monthly)
    calendar, _ = series_to_ical(event, [], [], user_map=lambda a: None,
                                 mailbox_zone="Europe/Paris")
    days = [moment.date() for moment in occurrences(calendar)]
    assert days == [date(2025, 1, 1), date(2025, 2, 3), date(2025, 3, 3), date(2025, 4, 1),
                    date(2025, 5, 1), date(2025, 6, 2)]


def test_a_contact_becomes_a_vcard_with_its_names_addresses_and_phones() -> None:
    contact, notes = contact_as_graph(element(CONTACT))
    text, mapped = contact_to_vcard(contact, version="3.0")
    card = vobject.readOne(text)
    assert card.fn.value == "Hélène Lefèvre"
    assert card.n.value.family == "Lefèvre" and card.n.value.given == "Hélène"
    assert [e.value for e in card.contents["email"]] == ["helene.lefevre@agglo-sud.fr",
                                                         "h.lefevre@perso.fr"]
    assert {t.value for t in card.contents["tel"]} == {"+33 5 63 00 00 00",
                                                       "+33 6 00 00 00 00"}
    assert card.adr.value.city == "Albi" and card.adr.value.code == "81000"
    assert card.org.value == ["Agglo Sud"]
    assert card.uid.value == contact_uid("AAMkContact=")
    assert notes == [] and [n.code for n in mapped] == []


def test_a_personal_distribution_list_becomes_a_group_in_either_vcard_version() -> None:
    group = element(GROUP)
    group_id, name, members = distribution_list(group)
    listed = [Member(m.name, m.address, m.contact_id) for m in members]
    three, _ = group_to_vcard(group_id, name, listed, version="3.0")
    card = vobject.readOne(three)
    assert card.fn.value == "Bureau municipal"
    assert card.contents["x-addressbookserver-kind"][0].value == "group"
    assert [m.value for m in card.contents["x-addressbookserver-member"]] == [
        f"urn:uuid:{contact_uid('AAMkContact=')}", "mailto:accueil@ville.fr"]
    four, _ = group_to_vcard(group_id, name, listed, version="4.0")
    lines = four.split("\r\n")
    assert "KIND:group" in lines and "MEMBER:mailto:accueil@ville.fr" in lines
    assert f"MEMBER:urn:uuid:{contact_uid('AAMkContact=')}" in lines


def test_a_task_keeps_status_due_day_priority_and_percent() -> None:
    task = element(TASK)
    graph, notes = task_as_graph(task, "Europe/Paris")
    calendar, _ = task_to_ical(graph, mailbox_zone=lambda: "Europe/Paris")
    todo = Calendar.from_ical(calendar.to_ical()).walk("VTODO")[0]
    assert str(todo["STATUS"]) == "IN-PROCESS" and todo["PRIORITY"] == 1
    assert todo["DUE"].dt.date() == date(2025, 3, 14)
    assert todo["DTSTART"].dt.date() == date(2025, 3, 3)
    assert percent_complete(task) == 40
    assert notes == []


def test_a_task_that_regenerates_after_completion_is_written_without_recurrence_and_noted(
) -> None:
    task = element("""
<t:Task>
  <t:ItemId Id="AAMkTask2=" ChangeKey="Ew2" />
  <t:Subject>Relever les compteurs</t:Subject>
  <t:Recurrence><t:WeeklyRegeneration><t:Interval>2</t:Interval></t:WeeklyRegeneration>
    <t:NoEndRecurrence><t:StartDate>2025-01-01</t:StartDate></t:NoEndRecurrence>
  </t:Recurrence>
  <t:Status>NotStarted</t:Status>
</t:Task>""")
    graph, notes = task_as_graph(task, "Europe/Paris")
    assert [n.code for n in notes] == ["ews_task_regeneration"]
    calendar, _ = task_to_ical(graph, mailbox_zone=lambda: "Europe/Paris")
    assert "RRULE" not in Calendar.from_ical(calendar.to_ical()).walk("VTODO")[0]
