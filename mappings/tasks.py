"""Microsoft To Do tasks (Graph ``todoTask``) turned into iCalendar VTODOs, with notes on what
changed.

Graph facts this module relies on (Microsoft Graph v1.0 reference, ``todoTask``,
``checklistItem``, ``dateTimeTimeZone``, ``patternedRecurrence``):

- ``dueDateTime``, ``startDateTime``, ``reminderDateTime`` and ``completedDateTime`` are
  ``{dateTime, timeZone}``: a wall-clock time to read in ``timeZone``, a Windows or an IANA
  name. DUE and DTSTART keep that zone (a VTIMEZONE is added for it); COMPLETED is written in
  UTC, as RFC 5545 (3.8.2.1) requires.
- ``status`` is one of ``notStarted``, ``inProgress``, ``completed``, ``waitingOnOthers``,
  ``deferred``. RFC 5545 has no word for the last two: they become NEEDS-ACTION, and a note
  (``task_status_nuance``) names the status, so the report says which task lost it. An X-
  property would keep it on the target, but no CalDAV client shows one: the person who must
  know is the DSI reading the report.
- ``importance`` ``high``, ``normal``, ``low`` is PRIORITY 1, 5, 9 (RFC 5545, 3.8.1.9).
- ``recurrence`` is the ``patternedRecurrence`` events have: the same RRULE
  (``mappings.calendar.recurrence_rule``), anchored on the due date. RFC 5545 wants a
  DTSTART beside an RRULE; a recurring task with no start gets its due time as DTSTART.
- ``checklistItems`` (the steps of a task, a navigation property read with ``$expand``)
  become lines at the end of DESCRIPTION, ``[x]`` before a checked one, ``[ ]`` before the
  others: one CalDAV resource holds one UID, so steps as sub-VTODOs would each be a resource
  of their own that no source listing knows, and clients show the lines to everyone. When
  each step was checked is not carried; a note (``checklist_as_text``) says so per task.
- ``hasAttachments``: attachments are not read; a note (``task_attachments``) says so.

Every approximation becomes a ``mappings.calendar.Note`` with a stable code
(``NOTE_CODES``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Todo

from mappings.calendar import (
    PRIORITIES,
    Note,
    body_text,
    parse_graph_instant,
    recurrence_rule,
    wall_clock,
    windows_to_iana,
)
from mappings.zones import add_timezones

PRODID = "-//bascule//Microsoft To Do//EN"
NOTE_CODES = ("task_zone_unknown", "task_recurrence_unknown", "task_status_nuance", "checklist_as_text",
              "task_attachments")
"""Every code a ``Note`` of this module may carry (sentences in ``reports.i18n``)."""
STATUSES = {"notStarted": "NEEDS-ACTION", "inProgress": "IN-PROCESS",
            "completed": "COMPLETED", "waitingOnOthers": "NEEDS-ACTION",
            "deferred": "NEEDS-ACTION"}
NUANCES = frozenset({"waitingOnOthers", "deferred"})
"""Statuses RFC 5545 cannot say: written NEEDS-ACTION, each a note."""
CHECKED, UNCHECKED = "[x] ", "[ ] "


def task_uid(task_id: str) -> str:
    """The UID of a task's VTODO: its Graph id, stable from one run to the next."""
    return task_id


class _Zones:
    """Reads ``dateTimeTimeZone`` values, noting each zone that cannot be known."""

    def __init__(self, mailbox_zone: Callable[[], str], uid: str) -> None:
        self.mailbox_zone = mailbox_zone
        self.uid = uid
        self.notes: list[Note] = []

    def note(self, code: str, detail: str = "") -> None:
        found = Note(code, detail, self.uid)
        if found not in self.notes:
            self.notes.append(found)

    def moment(self, value: dict[str, Any] | None) -> datetime | None:
        if not value or not value.get("dateTime"):
            return None
        name = value.get("timeZone")
        iana = windows_to_iana(name)
        if iana is None:
            self.note("task_zone_unknown", name or "")
            iana = self.mailbox_zone()
        return wall_clock(value).replace(tzinfo=UTC if iana == "UTC" else ZoneInfo(iana))


def task_to_ical(task: dict[str, Any], *, mailbox_zone: Callable[[], str]
                 ) -> tuple[Calendar, list[Note]]:
    """One VCALENDAR holding the task's VTODO, and the notes on what did not carry over.
    ``mailbox_zone`` answers the zone a time with an unknown zone is read in; it is asked
    only then. The same task always gives the same bytes."""
    uid = task_uid(str(task["id"]))
    zones = _Zones(mailbox_zone, uid)
    todo = Todo()
    todo.add("uid", uid)
    stamp = task.get("lastModifiedDateTime") or task.get("createdDateTime")
    # DTSTAMP is required; the time of conversion would change the bytes on every run.
    todo.add("dtstamp", parse_graph_instant(stamp) if stamp else datetime(1970, 1, 1,
                                                                          tzinfo=UTC))
    if task.get("createdDateTime"):
        todo.add("created", parse_graph_instant(task["createdDateTime"]))
    if task.get("lastModifiedDateTime"):
        todo.add("last-modified", parse_graph_instant(task["lastModifiedDateTime"]))
    todo.add("summary", task.get("title") or "")
    _describe(todo, task, zones)
    due = zones.moment(task.get("dueDateTime"))
    start = zones.moment(task.get("startDateTime"))
    recurrence = task.get("recurrence")
    rule = None
    anchor = due or start
    if recurrence and anchor is not None:
        rule = recurrence_rule(recurrence, False, anchor.tzinfo or UTC)
        if rule is None:
            zones.note("task_recurrence_unknown",
                       str((recurrence.get("pattern") or {}).get("type")))
        elif start is None:
            start = anchor
    if start is not None:
        todo.add("dtstart", start)
    if due is not None:
        todo.add("due", due)
    if rule is not None:
        todo.add("rrule", rule)
    status = task.get("status") or "notStarted"
    todo.add("status", STATUSES.get(status, "NEEDS-ACTION"))
    if status in NUANCES:
        zones.note("task_status_nuance", status)
    if status == "completed":
        completed = zones.moment(task.get("completedDateTime"))
        if completed is not None:
            todo.add("completed", completed.astimezone(UTC))
        todo.add("percent-complete", 100)
    if task.get("importance") in PRIORITIES:
        todo.add("priority", PRIORITIES[task["importance"]])
    if task.get("categories"):
        todo.add("categories", list(task["categories"]))
    reminder = zones.moment(task.get("reminderDateTime"))
    if task.get("isReminderOn") and reminder is not None:
        alarm = Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", task.get("title") or "Reminder")
        alarm.add("trigger", reminder.astimezone(UTC), parameters={"VALUE": "DATE-TIME"})
        todo.add_component(alarm)
    if task.get("hasAttachments"):
        zones.note("task_attachments")
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add_component(todo)
    earliest = min((m for m in (start, due) if m is not None), default=None)
    first = earliest.date() if earliest is not None else date(2000, 1, 1)
    add_timezones(calendar, date(first.year - 1, 1, 1))
    return calendar, zones.notes


def _describe(todo: Todo, task: dict[str, Any], zones: _Zones) -> None:
    """DESCRIPTION: the body's text, then one line per checklist item."""
    text, html = body_text(task.get("body"))
    lines = [(CHECKED if item.get("isChecked") else UNCHECKED) + (item.get("displayName") or "")
             for item in task.get("checklistItems") or []]
    if lines:
        zones.note("checklist_as_text", str(len(lines)))
    described = "\n\n".join(part for part in (text, "\n".join(lines)) if part)
    if described:
        todo.add("description", described)
    if html is not None:
        todo.add("x-alt-desc", html, parameters={"FMTTYPE": "text/html"})
