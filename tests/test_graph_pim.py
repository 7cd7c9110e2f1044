"""The Graph calendar and contact source against the Graph test server over TLS, real msal."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
import vobject
from icalendar import Calendar

from connectors.base import Container, Document
from connectors.graph.auth import GraphCredentials, token_provider
from connectors.graph.pim import GraphPimSource
from connectors.graph.session import GraphSession
from mappings.contacts import PHOTO_MAX
from tests.graph_pim import FAKE_JPEG, TEAMS_LINK, PimData, pim_of, seed_pim, wall
from tests.graph_pim import PARIS as WINDOWS_PARIS
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"
PARIS = ZoneInfo("Europe/Paris")
TODAY = datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
TARGET_USERS = {"francois.dupre@ville-exemple.fr": "francois.dupre@mairie.example"}


@pytest.fixture
def graph(certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    seed_pim(mailbox)
    with running_graph_server(tenant, certificates) as server:
        yield server


@pytest.fixture
def source(graph: RunningGraphServer, certificates: TestCertificates) -> GraphPimSource:
    tenant = graph.tenant
    tokens = token_provider(GraphCredentials(tenant.tenant_id, tenant.client_id,
                                             tenant.client_secret),
                            graph.authority, ca_file=str(certificates.ca_file))
    session = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))
    return GraphPimSource(session, AMELIE, user_map=TARGET_USERS.get, clock=lambda: TODAY)


def pim(graph: RunningGraphServer) -> PimData:
    mailbox = graph.tenant.mailbox(AMELIE)
    assert mailbox is not None
    return pim_of(mailbox)


def container(source: GraphPimSource, workload: str, *path: str) -> Container:
    return next(c for c in source.document_containers(workload) if c.path == path)


def documents(source: GraphPimSource, box: Container) -> dict[str, Document]:
    listing = source.list_documents(box, None)
    return {d.source_id: d for d in source.fetch_documents(box, listing.refs)}


def content(document: Document) -> bytes:
    with document.open() as reader:
        return reader.read()


def by_subject(docs: dict[str, Document], subject: str) -> tuple[Document, Calendar]:
    for document in docs.values():
        calendar = Calendar.from_ical(content(document))
        if any(str(e.get("summary")) == subject for e in calendar.walk("VEVENT")):
            return document, calendar
    raise AssertionError(f"no calendar object holds {subject!r}")


def test_containers(graph: RunningGraphServer, source: GraphPimSource) -> None:
    calendars = source.document_containers("calendar")
    assert [c.path for c in calendars] == [("Calendrier",), ("Conseil municipal",)]
    assert [c.native_name for c in calendars] == [c["id"] for c in pim(graph).calendars]
    folders = source.document_containers("contacts")
    assert [c.path for c in folders] == [("Contacts",), ("Contacts", "Élus")]
    assert folders[0].native_name == pim(graph).default_folder["id"]
    assert source.document_containers("files") == []


def test_series_is_one_object_with_override_and_exdate(source: GraphPimSource) -> None:
    docs = documents(source, container(source, "calendar", "Calendrier"))
    assert len(docs) == 2  # the series and the all-day event
    document, calendar = by_subject(docs, "Réunion de service")
    assert document.name.endswith(".ics") and "/" not in document.name
    raw = content(document)
    assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")
    events = calendar.walk("VEVENT")
    assert len(events) == 2 and len({str(e["uid"]) for e in events}) == 1
    master = next(e for e in events if "rrule" in e)
    override = next(e for e in events if "recurrence-id" in e)
    assert master["rrule"]["FREQ"] == ["WEEKLY"] and master["rrule"]["BYDAY"] == ["MO"]
    assert master["dtstart"].dt == datetime(2025, 1, 6, 9, tzinfo=PARIS)
    assert [d.dt for d in master["exdate"].dts] == [datetime(2025, 4, 21, 9, tzinfo=PARIS)]
    assert override["recurrence-id"].dt == datetime(2025, 3, 17, 9, tzinfo=PARIS)
    assert override["dtstart"].dt == datetime(2025, 3, 17, 14, tzinfo=PARIS)
    assert str(override["summary"]) == "Réunion de service (déplacée)"
    assert document.fingerprint.startswith("sha256:") and document.size == len(raw)


def test_occurrences_over_two_years_match_the_source_pattern(source: GraphPimSource) -> None:
    docs = documents(source, container(source, "calendar", "Calendrier"))
    _, calendar = by_subject(docs, "Réunion de service")
    start, end = datetime(2025, 1, 1, tzinfo=PARIS), datetime(2027, 1, 1, tzinfo=PARIS)
    found = sorted(e["dtstart"].dt for e in recurring_ical_events.of(calendar).between(start, end))
    # Independent expansion: every Monday at 09:00 Paris wall-clock time from 6 January 2025,
    # the 21 April occurrence cancelled, the 17 March one moved to 14:00.
    expected = []
    day = date(2025, 1, 6)
    while day < end.date():
        if day != date(2025, 4, 21):
            hour = 14 if day == date(2025, 3, 17) else 9
            expected.append(datetime.combine(day, time(hour), PARIS))
        day += timedelta(days=7)
    assert found == expected
    assert len(found) == 103
    assert {moment.utcoffset() for moment in found} == {timedelta(hours=1), timedelta(hours=2)}


def test_single_meeting_with_attendees_and_teams_link(source: GraphPimSource) -> None:
    box = container(source, "calendar", "Conseil municipal")
    docs = documents(source, box)
    document, calendar = by_subject(docs, "Commission urbanisme")
    [event] = calendar.walk("VEVENT")
    assert "rrule" not in event and "recurrence-id" not in event
    assert event["dtstart"].dt == datetime(2025, 2, 12, 14, tzinfo=PARIS)
    attendees = {str(a): a.params for a in event["attendee"]}
    assert set(attendees) == {"mailto:francois.dupre@mairie.example",
                              "mailto:helene.noel@ville-exemple.fr",
                              "mailto:jean.martin@exemple-asso.fr"}
    assert attendees["mailto:francois.dupre@mairie.example"]["PARTSTAT"] == "ACCEPTED"
    assert attendees["mailto:helene.noel@ville-exemple.fr"]["ROLE"] == "OPT-PARTICIPANT"
    assert str(event["organizer"]) == f"mailto:{AMELIE}"
    assert str(event["url"]) == TEAMS_LINK
    assert ("online_meeting_link", TEAMS_LINK) in {(n.code, n.detail) for n in document.notes}
    assert all(n.subject == document.source_id for n in document.notes)
    orphan, orphan_calendar = by_subject(docs, "Conseil communautaire (une séance)")
    [standalone] = orphan_calendar.walk("VEVENT")
    assert "recurrence-id" not in standalone
    assert "orphan_occurrence" in {n.code for n in orphan.notes}
    totals = {(n.code, n.subject): n.params["count"] for n in source.drain_notes()}
    assert totals[("online_meeting_link_total", "Conseil municipal")] == 1
    assert totals[("orphan_occurrence_total", "Conseil municipal")] == 1
    assert source.drain_notes() == []


def test_all_day_event_keeps_its_dates(source: GraphPimSource) -> None:
    docs = documents(source, container(source, "calendar", "Calendrier"))
    document, calendar = by_subject(docs, "Fête de la musique")
    [event] = calendar.walk("VEVENT")
    assert event["dtstart"].dt == date(2025, 6, 21) and event["dtend"].dt == date(2025, 6, 22)
    assert b"DTSTART;VALUE=DATE:20250621" in content(document)
    assert str(event["transp"]) == "TRANSPARENT"


def test_contacts_as_vcards_with_photo_and_birthday(source: GraphPimSource) -> None:
    docs = documents(source, container(source, "contacts", "Contacts"))
    cards = {}
    for document in docs.values():
        assert document.name.endswith(".vcf")
        card = vobject.readOne(content(document).decode("utf-8"))
        assert card.version.value == "3.0"
        cards[card.fn.value] = card
    assert set(cards) == {"Élodie Marchand", "Benoît Lacroix"}
    elodie = cards["Élodie Marchand"]
    assert elodie.bday.value == "1980-03-15"  # 1980-03-14T23:00:00Z is Paris midnight
    assert elodie.photo.value == FAKE_JPEG
    assert elodie.email.value == "elodie.marchand@exemple.fr"
    assert not hasattr(cards["Benoît Lacroix"], "photo")
    elus = documents(source, container(source, "contacts", "Contacts", "Élus"))
    [sebastien] = [vobject.readOne(content(d).decode("utf-8")) for d in elus.values()]
    assert sebastien.fn.value == "Sébastien Côté" and sebastien.title.value == "Maire adjoint"


def test_second_pass_lists_only_what_changed(graph: RunningGraphServer,
                                             source: GraphPimSource) -> None:
    calendrier = container(source, "calendar", "Calendrier")
    conseil = container(source, "calendar", "Conseil municipal")
    contacts = container(source, "contacts", "Contacts")
    elus = container(source, "contacts", "Contacts", "Élus")
    first = {box.native_name: source.list_documents(box, None)
             for box in (calendrier, conseil, contacts, elus)}
    assert all(listing.complete for listing in first.values())
    data = pim(graph)
    series = next(e for e in data.events.values() if e.data.get("recurrence"))
    data.modify_occurrence(series, date(2025, 3, 17), subject="Réunion de service (annulée ?)")
    added = data.add_contact(data.default_folder["id"], displayName="Inès Girard",
                             givenName="Inès", surname="Girard")
    gone = next(c.id for c in data.contacts.values() if c.data["displayName"] == "Benoît Lacroix")
    data.delete_contact(gone)

    again = source.list_documents(calendrier, first[calendrier.native_name].cursor)
    assert not again.complete and again.removed == []
    assert [ref.source_id for ref in again.refs] == [series.id]
    old = {r.source_id: r.version for r in first[calendrier.native_name].refs}
    assert again.refs[0].version != old[series.id]
    [document] = source.fetch_documents(calendrier, again.refs)
    assert document.version == again.refs[0].version
    assert "Réunion de service (annulée ?)" in content(document).decode("utf-8")
    [refetched] = source.fetch_documents(calendrier, again.refs)  # read again from Graph
    assert refetched.fingerprint == document.fingerprint
    assert source.list_documents(conseil, first[conseil.native_name].cursor).refs == []

    changed = source.list_documents(contacts, first[contacts.native_name].cursor)
    assert [ref.source_id for ref in changed.refs] == [added.id]
    assert changed.removed == [gone] and not changed.complete
    assert source.list_documents(elus, first[elus.native_name].cursor).refs == []


def test_forgotten_delta_token_starts_a_full_round(graph: RunningGraphServer,
                                                   source: GraphPimSource) -> None:
    contacts = container(source, "contacts", "Contacts")
    cursor = source.list_documents(contacts, None).cursor
    graph.state.forget_cursors()
    listing = source.list_documents(contacts, cursor)
    assert listing.complete and len(listing.refs) == 2


def test_a_series_is_read_from_its_first_occurrence_to_its_last(graph: RunningGraphServer,
                                                                source: GraphPimSource) -> None:
    """Exceptions and cancellations years before today are carried, through windows the
    server accepts (at most 1825 days each)."""
    data = pim(graph)
    calendrier = data.calendars[0]["id"]
    old = data.add_event(
        calendrier, subject="Permanence du samedi", isAllDay=False,
        start=wall(date(2016, 1, 9), 10), end=wall(date(2016, 1, 9), 12),
        originalStartTimeZone=WINDOWS_PARIS, originalEndTimeZone=WINDOWS_PARIS,
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["saturday"],
                                "firstDayOfWeek": "monday"},
                    "range": {"type": "noEnd", "startDate": "2016-01-09",
                              "recurrenceTimeZone": WINDOWS_PARIS}})
    data.modify_occurrence(old, date(2017, 2, 4), subject="Permanence (en mairie annexe)")
    old.cancelled.add(date(2018, 12, 29))
    bounded = data.add_event(
        calendrier, subject="Formation", isAllDay=False,
        start=wall(date(2019, 9, 2), 14), end=wall(date(2019, 9, 2), 17),
        originalStartTimeZone=WINDOWS_PARIS, originalEndTimeZone=WINDOWS_PARIS,
        recurrence={"pattern": {"type": "daily", "interval": 1},
                    "range": {"type": "numbered", "numberOfOccurrences": 5,
                              "startDate": "2019-09-02", "recurrenceTimeZone": WINDOWS_PARIS}})
    bounded.cancelled.add(date(2019, 9, 4))

    docs = documents(source, container(source, "calendar", "Calendrier"))
    _, calendar = by_subject(docs, "Permanence du samedi")
    [override] = [e for e in calendar.walk("VEVENT") if e.get("recurrence-id")]
    assert override["recurrence-id"].dt == datetime(2017, 2, 4, 10, tzinfo=PARIS)
    found = [e["dtstart"].dt for e in recurring_ical_events.of(calendar).between(
        datetime(2016, 1, 1, tzinfo=PARIS), datetime(2027, 6, 1, tzinfo=PARIS))]
    # Every Saturday from 9 January 2016 until two years after today, but 29 December 2018.
    saturdays = (date(2027, 6, 1) - date(2016, 1, 9)).days // 7 + 1
    assert len(found) == saturdays - 1
    assert datetime(2018, 12, 29, 10, tzinfo=PARIS) not in found
    _, formation = by_subject(docs, "Formation")
    days = sorted(e["dtstart"].dt.date() for e in recurring_ical_events.of(formation).between(
        datetime(2019, 1, 1, tzinfo=PARIS), datetime(2020, 1, 1, tzinfo=PARIS)))
    assert days == [date(2019, 9, 2), date(2019, 9, 3), date(2019, 9, 5), date(2019, 9, 6)]


def test_monthly_and_yearly_series_keep_their_occurrences(graph: RunningGraphServer,
                                                          source: GraphPimSource) -> None:
    """The server expands the patterns as the recurrencepattern page says; the .ics must
    give the same occurrences, the cancelled ones found through /instances included."""
    data = pim(graph)
    calendrier = data.calendars[0]["id"]

    def series(subject: str, first: date, pattern: dict, bounds: dict):
        return data.add_event(
            calendrier, subject=subject, isAllDay=False, start=wall(first, 18),
            end=wall(first, 19), originalStartTimeZone=WINDOWS_PARIS,
            originalEndTimeZone=WINDOWS_PARIS,
            recurrence={"pattern": pattern, "range": {**bounds, "startDate": first.isoformat(),
                                                      "recurrenceTimeZone": WINDOWS_PARIS}})

    second_tuesday = series("Commission des finances", date(2025, 1, 14),
                            {"type": "relativeMonthly", "interval": 1, "index": "second",
                             "daysOfWeek": ["tuesday"]}, {"type": "noEnd"})
    second_tuesday.cancelled.add(date(2025, 4, 8))
    series("Paie", date(2025, 1, 31), {"type": "absoluteMonthly", "interval": 1,
                                       "dayOfMonth": 31}, {"type": "numbered",
                                                           "numberOfOccurrences": 6})
    series("Téléthon", date(2025, 11, 28), {"type": "relativeYearly", "interval": 1,
                                            "index": "last", "daysOfWeek": ["friday"],
                                            "month": 11},
           {"type": "endDate", "endDate": "2027-12-31"})

    docs = documents(source, container(source, "calendar", "Calendrier"))

    def days(subject: str) -> list[date]:
        _, calendar = by_subject(docs, subject)
        return sorted(e["dtstart"].dt.date() for e in recurring_ical_events.of(calendar).between(
            datetime(2025, 1, 1, tzinfo=PARIS), datetime(2026, 1, 1, tzinfo=PARIS)))

    tuesdays = [date(2025, month, 1) + timedelta(days=(1 - date(2025, month, 1).weekday()) % 7
                                                 + 7) for month in range(1, 13)]
    assert days("Commission des finances") == [d for d in tuesdays if d != date(2025, 4, 8)]
    assert days("Paie") == [date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31),
                            date(2025, 4, 30), date(2025, 5, 31), date(2025, 6, 30)]
    _, telethon = by_subject(docs, "Téléthon")
    assert sorted(e["dtstart"].dt.date() for e in recurring_ical_events.of(telethon).between(
        datetime(2025, 1, 1, tzinfo=PARIS), datetime(2030, 1, 1, tzinfo=PARIS))) == [
        date(2025, 11, 28), date(2026, 11, 27), date(2027, 11, 26)]


def test_a_photo_graph_will_not_give_or_too_big_leaves_the_contact_without_it(
        graph: RunningGraphServer, source: GraphPimSource) -> None:
    data = pim(graph)
    refused = data.add_contact(data.default_folder["id"], displayName="Photo Refusée")
    refused.photo_error = (500, "ErrorInternalServerError",
                          "An internal server error occurred. The operation failed.")
    data.add_contact(data.default_folder["id"], photo=FAKE_JPEG + bytes(PHOTO_MAX),
                     displayName="Photo Géante")
    docs = documents(source, container(source, "contacts", "Contacts"))
    cards = {}
    for document in docs.values():
        card = vobject.readOne(content(document).decode("utf-8"))
        cards[card.fn.value] = (card, [note.code for note in document.notes])
    assert set(cards) == {"Élodie Marchand", "Benoît Lacroix", "Photo Refusée", "Photo Géante"}
    for name, code in (("Photo Refusée", "photo_unreadable"), ("Photo Géante", "photo_too_big")):
        card, codes = cards[name]
        assert not hasattr(card, "photo") and codes == [code], name
    assert cards["Élodie Marchand"][0].photo.value == FAKE_JPEG
    said = {(note.code, note.params.get("count")) for note in source.drain_notes()}
    assert {("photo_unreadable_total", 1), ("photo_too_big_total", 1)} <= said
    assert not any(code == "unreadable_item" for code, _ in said)
