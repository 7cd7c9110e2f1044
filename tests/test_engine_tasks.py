"""End to end: Microsoft To Do tasks from Graph (the documented test server, real msal) into a
real Cyrus beside the calendars, and into a local folder; each target read back with plain
HTTP (or the file system) and icalendar, compared field by field with the source, and
``verify`` finding no difference."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import icalendar
import requests

from tests.cli import bascule, report
from tests.graph_pim import seed_pim
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.graph_todo import seed_todo
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"
PASSWORD = "amelie-target"
CALDAV = "urn:ietf:params:xml:ns:caldav"
STATUS = {"notStarted": "NEEDS-ACTION", "inProgress": "IN-PROCESS", "completed": "COMPLETED",
          "waitingOnOthers": "NEEDS-ACTION", "deferred": "NEEDS-ACTION"}
PRIORITY = {"high": 1, "normal": 5, "low": 9}


def write_batch(folder: Path, graph: RunningGraphServer, certificates: TestCertificates,
                target: str) -> Path:
    (folder / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{AMELIE},{AMELIE},,env:AMELIE_TARGET\n",
        encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "taches"
workloads = ["calendar", "tasks"]
{graph.source_section(certificates.ca_file)}{target}
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def expected(task: dict[str, Any]) -> dict[str, Any]:
    """What a user checks of a task, from its Graph properties."""
    return {"summary": task["title"], "status": STATUS[task.get("status", "notStarted")],
            "priority": PRIORITY[task.get("importance", "normal")],
            "due": (task["dueDateTime"]["dateTime"][:16] if "dueDateTime" in task else None),
            "recurs": "recurrence" in task, "categories": sorted(task.get("categories", [])),
            "alarm": bool(task.get("isReminderOn")),
            "completed": task.get("status") == "completed"}


def seen(raw: bytes) -> tuple[str, dict[str, Any]]:
    """The same, read from an object on the target with icalendar alone."""
    [todo] = icalendar.Calendar.from_ical(raw).walk("VTODO")
    due = todo.get("DUE")
    categories = todo.get("CATEGORIES")
    lists = categories if isinstance(categories, list) else [categories] if categories else []
    return str(todo["UID"]), {
        "summary": str(todo["SUMMARY"]), "status": str(todo["STATUS"]),
        "priority": int(todo["PRIORITY"]),
        "due": due.dt.replace(tzinfo=None).isoformat(timespec="minutes") if due else None,
        "recurs": "RRULE" in todo,
        "categories": sorted(str(c) for cats in lists for c in cats.cats),
        "alarm": bool(todo.walk("VALARM")),
        "completed": "COMPLETED" in todo and int(todo["PERCENT-COMPLETE"]) == 100}


def task_lists(cyrus: Any, home: str) -> dict[str, list[bytes]]:
    """Display name -> the VTODO objects of every collection of the home that takes VTODO."""
    def propfind(path: str, depth: str) -> list[ElementTree.Element]:
        answer = requests.request(
            "PROPFIND", cyrus.base_url + urllib.parse.quote(path, safe="/@"),
            auth=(AMELIE, PASSWORD), timeout=30,
            headers={"Depth": depth, "Content-Type": "application/xml"},
            data=f'<?xml version="1.0"?><propfind xmlns="DAV:" xmlns:C="{CALDAV}"><prop>'
                 f"<displayname/><resourcetype/><C:supported-calendar-component-set/>"
                 f"</prop></propfind>".encode())
        assert answer.status_code == 207, answer.text
        return list(ElementTree.fromstring(answer.content).iter("{DAV:}response"))

    found: dict[str, list[bytes]] = {}
    for response in propfind(home, "1")[1:]:
        comps = {c.get("name") for c in response.iter(f"{{{CALDAV}}}comp")}
        if "VTODO" not in comps:
            continue
        path = urllib.parse.unquote(response.findtext("{DAV:}href") or "")
        objects = [requests.get(cyrus.base_url + (item.findtext("{DAV:}href") or ""),
                                auth=(AMELIE, PASSWORD), timeout=30).content
                   for item in propfind(path, "1")[1:]]
        found[response.findtext(".//{DAV:}displayname") or path] = [
            raw for raw in objects if b"BEGIN:VTODO" in raw]
    return found


def test_tasks_land_in_cyrus_beside_the_calendars_and_verify(
        certificates, cyrus_factory, tmp_path, monkeypatch):
    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    seed_pim(mailbox)
    todo = seed_todo(mailbox)
    cyrus = cyrus_factory({AMELIE: PASSWORD})
    monkeypatch.setenv("AMELIE_TARGET", PASSWORD)
    home = f"/dav/calendars/user/{AMELIE}/"
    dav = f'type = "dav"\nurl = "{cyrus.base_url}/"\n'
    with running_graph_server(tenant, certificates) as graph:
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates,
                            f"[targets.calendar]\n{dav}[targets.tasks]\n{dav}")
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 4 + 5
        landed = task_lists(cyrus, home)
        by_list = {name: {seen(raw)[0]: seen(raw)[1] for raw in objects}
                   for name, objects in landed.items() if objects}
        sources = {item["displayName"]: {task.id: expected(task.data) for task in
                                         todo.tasks.values() if task.list_id == item["id"]}
                   for item in todo.lists}
        # The default list went into the default calendar, which takes tasks on Cyrus.
        default = next(name for name, objects in landed.items() if objects and any(
            b"Relev" in raw for raw in objects))
        assert by_list[default] == sources["Tâches"]
        assert by_list["Projets du service"] == sources["Projets du service"]
        assert set(by_list) == {default, "Projets du service"}
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 4 + 5
        run = report(tmp_path, "run")
        lines = str(run)
        assert "task_status_nuance" in lines and "checklist_as_text" in lines


def test_tasks_land_in_a_local_folder_one_folder_per_list(certificates, tmp_path,
                                                          monkeypatch):
    tenant = french_tenant(users=3, inbox_messages=1)
    mailbox = tenant.mailbox(AMELIE)
    assert mailbox is not None
    seed_pim(mailbox)
    todo = seed_todo(mailbox)
    monkeypatch.setenv("AMELIE_TARGET", "unused")
    with running_graph_server(tenant, certificates) as graph:
        monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
        batch = write_batch(tmp_path, graph, certificates,
                            '[targets.tasks]\ntype = "folder"\npath = "export"\n')
        code, output = bascule("run", str(batch))
        assert code == 0, output
        root = tmp_path / "export" / AMELIE / "tasks"
        landed = {folder.name: {seen(path.read_bytes())[0]: seen(path.read_bytes())[1]
                                for path in folder.glob("*.ics")}
                  for folder in root.iterdir()}
        # Every list is a folder, the empty Flagged emails one too.
        assert landed == {item["displayName"]: {
            task.id: expected(task.data) for task in todo.tasks.values()
            if task.list_id == item["id"]} for item in todo.lists}
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["checked"] == 4 + 5
