"""End to end, item by item: Amélie's Graph calendars into Cyrus and Radicale (each named by
its profile), every landed event read back with plain HTTP and icalendar: reminders, privacy,
categories, each attendee's PARTSTAT and ROLE, the all-day date, the attached file's bytes,
the orphan occurrence; the attachment that cannot be carried is a line of the report, and
verify finds no difference."""

from __future__ import annotations

import base64
from datetime import date

import icalendar
import pytest

from tests.cli import bascule, report
from tests.graph_pim import AGENDA_PDF, seed_pim
from tests.graph_server import french_tenant, running_graph_server
from tests.test_engine_dav import AMELIE, PASSWORD, collections, write_batch

HOMES = {"cyrus": f"/dav/calendars/user/{AMELIE}/", "radicale": f"/{AMELIE}/"}


def landed_events(server, home: str) -> dict[str, icalendar.Event]:
    """Summary -> the first VEVENT of each calendar object of the home (a series' master)."""
    found = {}
    for collection in collections(server, home).values():
        for raw in collection.objects:
            calendar = icalendar.Calendar.from_ical(raw)
            events = calendar.walk("VEVENT")
            if events:
                first = next((e for e in events if "RECURRENCE-ID" not in e), events[0])
                found[str(first["SUMMARY"])] = first
    return found


def categories(event: icalendar.Event) -> set[str]:
    """Every category, whether written on one line or several (Cyrus splits them)."""
    values = event.get("CATEGORIES")
    lines = values if isinstance(values, list) else [values]
    return {str(category) for line in lines if line is not None for category in line.cats}


def trigger(event: icalendar.Event) -> tuple[str, bytes]:
    [alarm] = event.walk("VALARM")
    return str(alarm["ACTION"]), alarm["TRIGGER"].to_ical()


@pytest.mark.parametrize("profile", ["cyrus", "radicale"])
def test_each_event_keeps_what_a_user_sees(profile, certificates, tmp_path, monkeypatch,
                                           request):
    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    seed_pim(mailbox)
    if profile == "cyrus":
        server = request.getfixturevalue("cyrus_factory")({AMELIE: PASSWORD})
    else:
        server = request.getfixturevalue("radicale")
        server.add_user(AMELIE, PASSWORD)
    monkeypatch.setenv("AMELIE_TARGET", PASSWORD)
    with running_graph_server(tenant, certificates) as graph:
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates, server, f'profile = "{profile}"')
        code, output = bascule("run", str(batch))
        assert code == 0, output
        run = report(tmp_path, "run")
        assert run["summary"]["copied"] == 7
        events = landed_events(server, HOMES[profile])

        series = events["Réunion de service"]
        assert trigger(series) == ("DISPLAY", b"-PT15M")
        assert str(series["CLASS"]) == "PUBLIC"

        meeting = events["Commission urbanisme"]
        assert trigger(meeting) == ("DISPLAY", b"-PT30M")
        assert categories(meeting) == {"Urbanisme", "Élus"}
        people = {str(a).lower().removeprefix("mailto:"): (a.params["PARTSTAT"], a.params["ROLE"])
                  for a in meeting["ATTENDEE"]}
        assert people == {
            "francois.dupre@ville-exemple.fr": ("ACCEPTED", "REQ-PARTICIPANT"),
            "helene.noel@ville-exemple.fr": ("TENTATIVE", "OPT-PARTICIPANT"),
            "jean.martin@exemple-asso.fr": ("NEEDS-ACTION", "REQ-PARTICIPANT")}
        attach = meeting["ATTACH"]
        assert not isinstance(attach, list), "the link was written as an attachment"
        assert attach.params["FMTTYPE"] == "application/pdf"
        assert base64.b64decode(attach.to_ical()) == AGENDA_PDF
        [not_carried] = [e for e in run["entries"] if e.get("code") == "attachment_not_carried"]
        assert "Plan local d'urbanisme" in not_carried["message_en"], not_carried
        assert "Plan local d'urbanisme" in not_carried["message_fr"], not_carried

        feast = events["Fête de la musique"]
        assert feast["DTSTART"].dt == date(2025, 6, 21) and feast["DTEND"].dt == date(2025, 6, 22)
        assert feast["DTSTART"].params.get("VALUE", "DATE") == "DATE"
        assert "VALARM" not in [c.name for c in feast.subcomponents]

        orphan = events["Conseil communautaire (une séance)"]
        assert str(orphan["CLASS"]) == "PRIVATE"
        assert "RECURRENCE-ID" not in orphan

        code, output = bascule("verify", str(batch))
        assert code == 0, output
        summary = report(tmp_path, "verify")["summary"]
        assert summary["checked"] == 7 and summary["mismatches"] == 0, summary
