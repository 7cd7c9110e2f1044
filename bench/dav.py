"""Benchmark of the CalDAV and CardDAV sink: events and contacts into Cyrus and Radicale,
against plain PUTs of the same objects on 4 connections, in the same invocation.

The corpus is an export as bascule's folder target writes one (``<login>/calendar/Agenda``
and ``<login>/contacts/Contacts``): ``--events`` events, one in ten a weekly series with
one moved occurrence, three attendees on one in five; ``--contacts`` vCards. For each
server and each round, a fresh server receives:

- ``baseline``: the same objects, PUT with ``If-None-Match: *`` by 4 threads, each its own
  connection, into a calendar and an address book made beforehand: the ceiling a client
  that only writes reaches. Calendar objects carry ``SCHEDULE-AGENT=CLIENT`` as bascule
  sends them: as they are, Cyrus would mail the attendees of every fifth event, work
  bascule spares it;
- ``bascule``: ``bascule run`` from the export (the ``folder`` source) to the server (the
  ``dav`` target): discovery, collections, the scheduling rewrite, conditional writes, the
  ledger, the process's start.

The figure is items a second, and bascule's share of the baseline's, with bascule's peak
RSS. Everything listens on 127.0.0.1 and stops at the end.

Run: ``python -m bench.dav`` (options: ``--events 5000 --contacts 2000 --rounds 1
--servers cyrus,radicale``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests

from mappings.scheduling import client_scheduled
from tests.cyrus import start_cyrus
from tests.radicale import start_radicale

LOGIN = "agent@ville-exemple.fr"
PASSWORD = "banc-dav"
CONNECTIONS = 4
ADDRESS_BOOK = (b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" '
                b'xmlns:A="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
                b"<D:collection/><A:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>")
HOMES = {"cyrus": ("/dav/calendars/user/{login}/", "/dav/addressbooks/user/{login}/"),
         "radicale": ("/{login}/", "/{login}/")}


def event(number: int) -> bytes:
    """An event in Paris time; one in ten a weekly series with a moved occurrence, one in
    five with three attendees."""
    uid = f"evenement-{number:05d}"
    day = 1 + number % 28
    start = f"202503{day:02d}T{8 + number % 9:02d}0000"
    people = ""
    if number % 5 == 0:
        people = ("ORGANIZER;CN=Agent:mailto:agent@ville-exemple.fr\r\n" + "".join(
            f"ATTENDEE;PARTSTAT=NEEDS-ACTION;CN=Élu {n}:mailto:elu{n}@ville-exemple.fr\r\n"
            for n in range(3)))
    body = (f"UID:{uid}\r\nDTSTAMP:20250101T080000Z\r\n"
            f"DTSTART;TZID=Europe/Paris:{start}\r\nDURATION:PT1H\r\n"
            f"SUMMARY:Réunion n°{number} – commission des finances\r\n"
            f"DESCRIPTION:Ordre du jour : budget primitif\\, subventions.\r\n"
            f"CATEGORIES:Conseil,Finances\r\n{people}")
    components = f"BEGIN:VEVENT\r\n{body}END:VEVENT\r\n"
    if number % 10 == 0:
        components = (f"BEGIN:VEVENT\r\n{body}RRULE:FREQ=WEEKLY;COUNT=10\r\nEND:VEVENT\r\n"
                      f"BEGIN:VEVENT\r\n{body.replace(start, start[:6] + '28T170000')}"
                      f"RECURRENCE-ID;TZID=Europe/Paris:{start}\r\nEND:VEVENT\r\n")
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//bench//FR\r\n"
            "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:DAYLIGHT\r\n"
            "DTSTART:20240331T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n"
            "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nBEGIN:STANDARD\r\n"
            "DTSTART:20241027T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n"
            "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
            f"{components}END:VCALENDAR\r\n").encode()


def contact(number: int) -> bytes:
    return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:contact-{number:05d}\r\n"
            f"FN:Hélène Noël {number}\r\nN:Noël {number};Hélène;;;\r\n"
            f"EMAIL;TYPE=INTERNET:helene.noel{number}@exemple.fr\r\n"
            f"TEL;TYPE=WORK,VOICE:+33 1 23 45 {number % 100:02d} {number % 97:02d}\r\n"
            f"ORG:Mairie;Service {number % 12}\r\nEND:VCARD\r\n").encode()


def corpus(folder: Path, events: int, contacts: int) -> dict[str, list[tuple[str, bytes]]]:
    """The export on disk, and the same objects as (name, bytes) per workload."""
    objects = {"calendar": [(f"evenement-{n:05d}.ics", event(n)) for n in range(events)],
               "contacts": [(f"contact-{n:05d}.vcf", contact(n)) for n in range(contacts)]}
    for workload, container in (("calendar", "Agenda"), ("contacts", "Contacts")):
        place = folder / LOGIN / workload / container
        place.mkdir(parents=True, exist_ok=True)
        for name, body in objects[workload]:
            (place / name).write_bytes(body)
    return objects


def start(kind: str, base: Path) -> Any:
    if kind == "cyrus":
        return start_cyrus(base, {LOGIN: PASSWORD})
    server = start_radicale(base, {})
    server.add_user(LOGIN, PASSWORD)
    return server


def baseline(server: Any, kind: str, objects: dict[str, list[tuple[str, bytes]]]) -> float:
    """Seconds for 4 threads to PUT every object into collections made beforehand."""
    places = []
    homes = [home.format(login=LOGIN) for home in HOMES[kind]]
    for home, (method, body) in zip(homes, (("MKCALENDAR", b""), ("MKCOL", ADDRESS_BOOK)),
                                    strict=True):
        place = f"{home}ceiling-{method.lower()}/"
        made = requests.request(method, _url(server, place), data=body or None,
                                auth=(LOGIN, PASSWORD), timeout=60,
                                headers={"Content-Type": "application/xml"} if body else {})
        assert made.status_code in (200, 201), (made.status_code, made.text)
        places.append(place)
    # The bytes bascule sends: a server that schedules would otherwise mail the attendees
    # of every fifth event, work bascule spares it.
    work = [(places[0] + name, b"".join(client_scheduled([body])), "text/calendar")
            for name, body in objects["calendar"]]
    work += [(places[1] + name, body, "text/vcard") for name, body in objects["contacts"]]
    position = iter(range(len(work)))
    lock = threading.Lock()
    failures: list[str] = []

    def writer() -> None:
        session = requests.Session()
        session.auth = (LOGIN, PASSWORD)
        while True:
            with lock:
                index = next(position, None)
            if index is None:
                return
            path, body, kind_of = work[index]
            answer = session.put(_url(server, path), data=body, timeout=60, headers={
                "Content-Type": f"{kind_of}; charset=utf-8", "If-None-Match": "*"})
            if answer.status_code not in (200, 201, 204):
                failures.append(f"{path}: {answer.status_code}")

    threads = [threading.Thread(target=writer) for _ in range(CONNECTIONS)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    assert not failures, failures[:5]
    return elapsed


def write_batch(folder: Path, export: Path, url: str) -> Path:
    """``folder/batch.toml`` (and its users table): the export's calendars and contacts to
    the DAV server at ``url``, the password in ``BENCH_DAV_SECRET``, the work folder
    ``folder/work``."""
    (folder / "users.csv").write_text(f"source,target,source_secret,target_secret\n"
                                      f"{LOGIN},{LOGIN},,env:BENCH_DAV_SECRET\n",
                                      encoding="utf-8")
    batch = folder / "batch.toml"
    batch.write_text(f"""name = "banc-dav"
workloads = ["calendar", "contacts"]
[source]
type = "folder"
path = "{export}"
[targets.calendar]
type = "dav"
url = "{url}/"
[targets.contacts]
type = "dav"
url = "{url}/"
[run]
work_dir = "work"
""", encoding="utf-8")
    return batch


def bascule(server: Any, export: Path, work: Path) -> tuple[float, float, str]:
    """Seconds of ``bascule run`` from the export to the server, its peak RSS in MB, and
    its summary line."""
    work.mkdir(parents=True, exist_ok=True)
    write_batch(work, export, server.base_url)
    env = dict(os.environ, BENCH_DAV_SECRET=PASSWORD, BASCULE_LANG="en",
               PYTHONPATH=str(Path.cwd()))
    log = work / "run.log"
    began = time.monotonic()
    with open(log, "wb") as output:
        child = subprocess.Popen([sys.executable, "-m", "migrate", "run",
                                  str(work / "batch.toml")],
                                 env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak, not a server's
    elapsed = time.monotonic() - began
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"bascule run failed ({status}):\n{text[-3000:]}")
    summary = next((line for line in reversed(text.splitlines()) if "copied" in line), "")
    return elapsed, usage.ru_maxrss / 1024, summary.strip()


def _url(server: Any, path: str) -> str:
    return server.base_url + urllib.parse.quote(path, safe="/@")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default="cyrus,radicale")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bascule-dav-bench-"))
    objects = corpus(scratch / "export", args.events, args.contacts)
    items = args.events + args.contacts
    results = []
    for kind in args.servers.split(","):
        for round_number in range(args.rounds):
            for tool in ("baseline", "bascule"):
                server = start(kind, scratch / f"{kind}-{tool}-{round_number}")
                try:
                    if tool == "baseline":
                        seconds, peak, summary = baseline(server, kind, objects), 0.0, ""
                    else:
                        seconds, peak, summary = bascule(
                            server, scratch / "export", scratch / f"work-{kind}-{round_number}")
                finally:
                    server.stop()
                results.append({"server": kind, "tool": tool, "round": round_number,
                                "seconds": round(seconds, 2),
                                "items_per_second": round(items / seconds, 1),
                                "peak_rss_mb": round(peak), "summary": summary})
                print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    print(f"\n{args.events} events, {args.contacts} contacts; medians of {args.rounds} "
          f"round(s)\n")
    print("| server | tool | seconds | items/s | peak RSS (MB) | bascule / baseline |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for kind in args.servers.split(","):
        medians = {tool: statistics.median(r["seconds"] for r in results
                                           if r["server"] == kind and r["tool"] == tool)
                   for tool in ("baseline", "bascule")}
        for tool, seconds in medians.items():
            peak = max(r["peak_rss_mb"] for r in results
                       if r["server"] == kind and r["tool"] == tool)
            share = f"{medians['baseline'] / seconds:.2f}" if tool == "bascule" else ""
            print(f"| {kind} | {tool} | {seconds:.1f} | {items / seconds:.0f} | "
                  f"{peak or ''} | {share} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dav.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
