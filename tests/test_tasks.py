"""To Do tasks as VTODOs: status, priority, due date in its zone, recurrence, reminder,
completion and checklist, read back with icalendar; and the Graph source reading the test
server's lists, the default one first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from connectors.graph.auth import GraphCredentials, token_provider
from connectors.graph.pim import GraphPimSource
from connectors.graph.session import GraphSession
from mappings.tasks import task_to_ical
from tests.graph_server import french_tenant, running_graph_server
from tests.graph_todo import seed_todo, todo_of, when

PARIS = "Romance Standard Time"


def vtodo(task: dict[str, Any]) -> tuple[icalendar.Calendar, Any, list[str]]:
    calendar, notes = task_to_ical({"id": "AAMkT1=", "title": "Tâche", **task},
                                   mailbox_zone=lambda: "Europe/Paris")
    parsed = icalendar.Calendar.from_ical(calendar.to_ical())
    [todo] = parsed.walk("VTODO")
    return parsed, todo, [note.code for note in notes]


def test_statuses_and_priorities_follow_rfc_5545() -> None:
    found = {}
    for status in ("notStarted", "inProgress", "completed", "waitingOnOthers", "deferred"):
        _, todo, notes = vtodo({"status": status})
        found[status] = (str(todo["STATUS"]), "task_status_nuance" in notes)
    assert found == {"notStarted": ("NEEDS-ACTION", False), "inProgress": ("IN-PROCESS", False),
                     "completed": ("COMPLETED", False),
                     "waitingOnOthers": ("NEEDS-ACTION", True),
                     "deferred": ("NEEDS-ACTION", True)}
    assert [int(vtodo({"importance": level})[1]["PRIORITY"])
            for level in ("high", "normal", "low")] == [1, 5, 9]


def test_due_date_keeps_its_zone_with_a_vtimezone_and_completion_is_utc() -> None:
    parsed, todo, _ = vtodo({
        "status": "completed", "dueDateTime": when("2025-03-20T00:00"),
        "completedDateTime": {"dateTime": "2025-03-21T10:30:00.0000000",
                              "timeZone": "Pacific Standard Time"}})
    assert todo["DUE"].dt == datetime(2025, 3, 20, tzinfo=ZoneInfo("Europe/Paris"))
    assert todo["DUE"].params["TZID"] == "Europe/Paris"
    assert [str(zone["TZID"]) for zone in parsed.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert todo["COMPLETED"].dt == datetime(2025, 3, 21, 17, 30, tzinfo=UTC)
    assert int(todo["PERCENT-COMPLETE"]) == 100


def test_a_weekly_task_recurs_from_its_due_date() -> None:
    parsed, todo, _ = vtodo({
        "dueDateTime": when("2025-03-06T00:00"),
        "recurrence": {"pattern": {"type": "weekly", "interval": 2, "daysOfWeek": ["thursday"],
                                   "firstDayOfWeek": "monday"},
                       "range": {"type": "numbered", "numberOfOccurrences": 3,
                                 "startDate": "2025-03-06"}}})
    assert todo["DTSTART"].dt == todo["DUE"].dt
    starts = [occurrence["DTSTART"].dt.date().isoformat() for occurrence in
              recurring_ical_events.of(parsed, components=["VTODO"]).between(
                  datetime(2025, 1, 1), datetime(2026, 1, 1))]
    assert starts == ["2025-03-06", "2025-03-20", "2025-04-03"]


def test_reminder_checklist_categories_and_html_body() -> None:
    _, todo, notes = vtodo({
        "isReminderOn": True, "reminderDateTime": when("2025-04-14T09:00", "UTC"),
        "categories": ["État civil", "Urgent"], "hasAttachments": True,
        "body": {"contentType": "html", "content": "<p>Voir l'accueil&nbsp;: <b>clés</b></p>"},
        "checklistItems": [{"id": "1", "displayName": "Réserver la salle", "isChecked": True},
                           {"id": "2", "displayName": "Prévenir les élus",
                            "isChecked": False}]})
    [alarm] = todo.walk("VALARM")
    assert alarm["TRIGGER"].dt == datetime(2025, 4, 14, 9, tzinfo=UTC)
    assert str(alarm["ACTION"]) == "DISPLAY"
    assert str(todo["DESCRIPTION"]) == ("Voir l'accueil\u00a0: clés\n\n[x] Réserver la salle\n"
                                        "[ ] Prévenir les élus")
    assert [str(c) for c in todo["CATEGORIES"].cats] == ["État civil", "Urgent"]
    assert sorted(notes) == ["checklist_as_text", "task_attachments"]


def test_a_zone_graph_does_not_know_is_read_in_the_mailbox_zone_and_noted() -> None:
    _, todo, notes = vtodo({"dueDateTime": {"dateTime": "2025-03-20T00:00:00.0000000",
                                            "timeZone": "Customized Time Zone"}})
    assert todo["DUE"].params["TZID"] == "Europe/Paris"
    assert notes == ["task_zone_unknown"]


def test_the_graph_source_reads_every_list_the_default_first_pages_included(
        certificates) -> None:
    tenant = french_tenant(users=1, inbox_messages=1)
    mailbox = tenant.mailboxes[0]
    todo = seed_todo(mailbox)
    default = todo.lists[0]["id"]
    for number in range(12):  # more than a page of the test server's lists
        todo.add_task(default, title=f"Courrier {number}", dueDateTime=when("2025-05-02T00:00"))
    with running_graph_server(tenant, certificates) as graph:
        tokens = token_provider(GraphCredentials(tenant.tenant_id, tenant.client_id,
                                                 tenant.client_secret),
                                graph.authority, ca_file=str(certificates.ca_file))
        session = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))
        source = GraphPimSource(session, mailbox.user_principal_name)
        lists = source.document_containers("tasks")
        assert [(c.path, c.role) for c in lists] == [
            (("Tâches",), "default"), (("E-mails marqués d'un indicateur",), None),
            (("Projets du service",), None)]
        listing = source.list_documents(lists[0], None)
        assert len(listing.refs) == 16
        documents = list(source.fetch_documents(lists[0], listing.refs))
        summaries = {str(icalendar.Calendar.from_ical(d.open().read()).walk("VTODO")[0][
            "SUMMARY"]) for d in documents}
        assert "Réponse à Hélène Noël : état-civil" in summaries
        again = source.list_documents(lists[0], listing.cursor)
        assert again.refs == [] and again.removed == []
        task = next(t for t in todo_of(mailbox).tasks.values() if t.checklist)
        task.checklist[1]["isChecked"] = True  # a step checked: the task's etag stays
        changed = source.list_documents(lists[0], listing.cursor)
        assert [ref.source_id for ref in changed.refs] == [task.id]
        totals = {(n.code, n.subject): n.params["count"] for n in source.drain_notes()
                  if n.code.endswith("_total")}
        assert totals == {("task_status_nuance_total", "Tâches"): 1,
                          ("checklist_as_text_total", "Tâches"): 1}
