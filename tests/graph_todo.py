"""Microsoft To Do for the Graph test server: fixture task lists and tasks, and the routes that
serve them.

Importing this module registers its routes in ``tests.graph_server.MAILBOX_ROUTES``. The data
of a mailbox lives in ``FixtureMailbox.extras["todo"]`` (a ``TodoData``); ``seed_todo`` fills
it. Pages of Microsoft's Graph v1.0 documentation each behaviour follows
(learn.microsoft.com/graph):

- ``api/todo-list-lists`` and ``resources/todotasklist``: ``/todo/lists`` gives every list
  with ``id``, ``displayName``, ``isOwner``, ``isShared`` and ``wellknownListName``
  (``defaultList`` for the built-in Tasks list, ``flaggedEmails``, ``none`` for the user's).
- ``api/todotasklist-list-tasks``: ``/todo/lists/{id}/tasks``, pages linked by
  ``@odata.nextLink`` (``paging``); each task carries an ``@odata.etag`` that changes with it.
- ``resources/todotask``: ``id``, ``title``, ``body``, ``importance``, ``status``,
  ``createdDateTime``, ``lastModifiedDateTime``, ``categories``, ``isReminderOn``,
  ``hasAttachments``, ``dueDateTime``/``startDateTime``/``completedDateTime``/
  ``reminderDateTime`` as ``dateTimeTimeZone``, ``recurrence`` as ``patternedRecurrence``;
  ``checklistItems`` is a navigation property: absent unless ``$expand`` names it
  (``query-parameters``: an expanded property comes whatever ``$select`` says).
- ``resources/checklistitem``: ``id``, ``displayName``, ``isChecked``, ``createdDateTime``,
  ``checkedDateTime``.
- ``api/todotask-get``: ``/todo/lists/{listId}/tasks/{taskId}``; ``api/todotask-list-
  checklistitems``: ``.../tasks/{taskId}/checklistItems``.
- An unknown list or task answers 404 ``ErrorItemNotFound`` (``errors``).

Delta (``api/todotask-delta``) is not served: the source lists a list whole on each pass, as
it does calendars.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

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
GONE = ("ErrorItemNotFound", "The specified object was not found in the store.")
TASKS_PAGE = 10
"""Tasks per page when ``$top`` does not say (paging: the server chooses)."""


@dataclass
class FixtureTask:
    id: str
    list_id: str
    data: dict[str, Any]
    version: int
    checklist: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TodoData:
    """The task lists and tasks of one mailbox."""

    lists: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, FixtureTask] = field(default_factory=dict)
    sequence: int = 0

    def tick(self) -> int:
        self.sequence += 1
        return self.sequence

    def add_list(self, name: str, well_known: str = "none") -> str:
        list_id = _new_id("AAMkTdl")
        self.lists.append({"@odata.etag": f'W/"{secrets.token_hex(6)}"', "id": list_id,
                           "displayName": name, "isOwner": True, "isShared": False,
                           "wellknownListName": well_known})
        return list_id

    def add_task(self, list_id: str, checklist: tuple[tuple[str, bool], ...] = (),
                 **data: Any) -> FixtureTask:
        task = FixtureTask(_new_id("AAMkTsk"), list_id, data, self.tick())
        created = _stamp(datetime(2025, 1, 2, 8, tzinfo=UTC))
        for name, checked in checklist:
            task.checklist.append({
                "id": str(secrets.token_hex(8)), "displayName": name, "isChecked": checked,
                "createdDateTime": created,
                **({"checkedDateTime": _stamp(datetime(2025, 1, 3, 9, tzinfo=UTC))}
                   if checked else {})})
        self.tasks[task.id] = task
        return task

    def update_task(self, task_id: str, **data: Any) -> None:
        task = self.tasks[task_id]
        task.data.update(data)
        task.version = self.tick()


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(10)}="


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def todo_of(mailbox: FixtureMailbox) -> TodoData:
    data: TodoData = mailbox.extras.setdefault("todo", TodoData())
    return data


def when(text: str, zone: str = PARIS) -> dict[str, str]:
    """A ``dateTimeTimeZone`` from ``YYYY-MM-DDTHH:MM``."""
    return {"dateTime": f"{text}:00.0000000", "timeZone": zone}


def seed_todo(mailbox: FixtureMailbox) -> TodoData:
    """The tasks of a mailbox: in the built-in Tasks list, a weekly recurring task, a
    completed one, one with a reminder and a checklist, one with an accented title waiting
    on others; in a list of the user's, a task due in UTC; and an empty Flagged emails
    list."""
    todo = todo_of(mailbox)
    tasks = todo.add_list("Tâches", "defaultList")
    todo.add_list("E-mails marqués d'un indicateur", "flaggedEmails")
    projects = todo.add_list("Projets du service")
    todo.add_task(
        tasks, title="Relevé hebdomadaire des compteurs", status="notStarted",
        importance="normal", dueDateTime=when("2025-03-06T00:00"),
        recurrence={"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["thursday"],
                                "firstDayOfWeek": "monday"},
                    "range": {"type": "noEnd", "startDate": "2025-03-06",
                              "recurrenceTimeZone": PARIS}})
    todo.add_task(
        tasks, title="Envoyer le compte rendu", status="completed", importance="low",
        dueDateTime=when("2025-02-10T00:00"),
        completedDateTime=when("2025-02-11T00:00", "UTC"),
        categories=["Conseil municipal"])
    todo.add_task(
        tasks, title="Préparer la salle du conseil", status="inProgress", importance="high",
        dueDateTime=when("2025-04-15T00:00"), startDateTime=when("2025-04-01T00:00"),
        isReminderOn=True, reminderDateTime=when("2025-04-14T09:00", "UTC"),
        body={"content": "<p>Voir avec l'accueil&nbsp;: <b>clés</b></p>",
              "contentType": "html"},
        checklist=(("Réserver la salle", True), ("Prévenir les élus", False)))
    todo.add_task(
        tasks, title="Réponse à Hélène Noël : état-civil", status="waitingOnOthers",
        importance="normal", body={"content": "Dossier n° 42", "contentType": "text"},
        categories=["État civil", "Urgent"])
    todo.add_task(
        projects, title="Bilan énergétique de l'école", status="deferred",
        importance="normal", dueDateTime=when("2025-09-30T00:00", "UTC"))
    return todo


# --- serving ---------------------------------------------------------------------------------


def _task_view(task: FixtureTask, expand: str | None) -> dict[str, Any]:
    modified = datetime(2025, 1, 5, tzinfo=UTC) + timedelta(minutes=task.version)
    view = {"@odata.etag": f'W/"TK{task.version}"', "id": task.id, "importance": "normal",
            "isReminderOn": False, "status": "notStarted", "title": "",
            "body": {"content": "", "contentType": "text"}, "categories": [],
            "hasAttachments": False,
            "createdDateTime": _stamp(datetime(2025, 1, 2, 8, tzinfo=UTC)),
            "lastModifiedDateTime": _stamp(modified), **task.data}
    if expand and "checklistitems" in expand.lower():
        view["checklistItems"] = [dict(item) for item in task.checklist]
    return view


def _shown(task: FixtureTask, query: dict[str, str]) -> dict[str, Any]:
    """A task as a request asks for it: ``$select``, plus what ``$expand`` names."""
    view = _task_view(task, query.get("$expand"))
    shown = _selected(view, query.get("$select"))
    if "checklistItems" in view:
        shown["checklistItems"] = view["checklistItems"]
    return shown


def _list(todo: TodoData, list_id: str) -> dict[str, Any]:
    found = next((item for item in todo.lists if item["id"] == list_id), None)
    if found is None:
        raise GraphError(404, *GONE)
    return found


def _task(todo: TodoData, list_id: str, task_id: str) -> FixtureTask:
    task = todo.tasks.get(task_id)
    if task is None or task.list_id != list_id:
        raise GraphError(404, *GONE)
    return task


def todo_route(handler: GraphHandler, mailbox: FixtureMailbox, rest: list[str],
               query: dict[str, str]) -> Reply | None:
    todo = mailbox.extras.get("todo")
    if not isinstance(todo, TodoData) or rest[:2] != ["todo", "lists"]:
        return None
    path = rest[2:]
    if not path:
        return handler._page_list(list(todo.lists), query, 100, 1000, "todoTaskLists")
    list_id = _list(todo, path[0])["id"]
    if len(path) == 1:
        return json_reply(_selected(_list(todo, list_id), query.get("$select")))
    if path[1:] == ["tasks"]:
        paged = dict(query)
        paged.pop("$select", None)  # applied here, with what $expand adds
        items = [_shown(task, query) for task in todo.tasks.values() if task.list_id == list_id]
        return handler._page_list(items, paged, TASKS_PAGE, 1000, "tasks")
    if len(path) == 3 and path[1] == "tasks":
        return json_reply(_shown(_task(todo, list_id, path[2]), query))
    if len(path) == 4 and path[1] == "tasks" and path[3] == "checklistItems":
        items = [dict(item) for item in _task(todo, list_id, path[2]).checklist]
        return handler._page_list(items, query, 100, 1000, "checklistItems")
    return None


MAILBOX_ROUTES.append(todo_route)
