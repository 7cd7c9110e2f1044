"""Benchmark of the CalDAV and CardDAV sink: events and contacts into Cyrus, Radicale,
Xandikos and SabreDAV, against plain PUTs of the same objects on 4 connections and against
vdirsyncer, in the same invocation.

The corpus is an export as bascule's folder target writes one (``<login>/calendar/Agenda``
and ``<login>/contacts/Contacts``): ``--events`` events, one in ten a weekly series with
one moved occurrence, three attendees on one in five; ``--contacts`` vCards. For each
server and each round, a fresh server receives:

- ``baseline``: the same objects bascule sends, PUT with ``If-None-Match: *`` by 4 threads,
  each its own connection, into a calendar and an address book made beforehand: the ceiling
  a client that only writes reaches. Calendar objects are changed as the server's profile
  and the batch's scheduling make bascule change them (``SCHEDULE-AGENT=CLIENT`` for Cyrus
  and SabreDAV, no ATTENDEE for Xandikos, as they are for Radicale): as they are, Cyrus
  would mail the attendees of every fifth event, work bascule spares it;
- ``bascule``: ``bascule run`` from the export (the ``folder`` source) to the server (the
  ``dav`` target): discovery, collections, the scheduling rewrite, conditional writes, the
  ledger, the process's start;
- ``vdirsyncer``: the reference sync tool, ``vdirsyncer discover`` and ``sync`` from a
  filesystem storage holding the objects the baseline sends to a CalDAV and a CardDAV
  storage naming collections made beforehand, its password read from a file; its first
  sync of a pair, the process's start included.

The figure is items a second, each tool's share of the baseline's, the peak RSS of
bascule's and vdirsyncer's processes, and the mails the server handed to its sendmail (0
expected everywhere). Everything listens on 127.0.0.1 and stops at the end.

Run: ``python -m bench.dav`` (options: ``--events 5000 --contacts 2000 --rounds 1
--servers cyrus,radicale,xandikos,sabredav --tools baseline,bascule,vdirsyncer
--connections 4``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import requests

from connectors.dav import profiles
from connectors.dav.client import DavClient
from connectors.dav.discovery import KINDS, DavHome
from mappings.scheduling import WithoutAttendees, client_scheduled
from tests.cyrus import start_cyrus
from tests.radicale import start_radicale
from tests.sabredav import start_sabredav
from tests.xandikos import start_xandikos

LOGIN = "agent@ville-exemple.fr"
PASSWORD = "banc-dav"
CONNECTIONS = 4
TOOLS = ("baseline", "bascule", "vdirsyncer")
ADDRESS_BOOK = (b'<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" '
                b'xmlns:A="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype>'
                b"<D:collection/><A:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>")
Objects = dict[str, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class Server:
    """How to start one kind of server, and what bascule's batch says of it."""

    start: Callable[[Path], Any]
    profile: str
    scheduling: str = profiles.PROTECT
    connections: int = CONNECTIONS
    """The batch's ``connections``: requests at once per collection, collections at once."""

    def rewrite(self) -> Callable[[Iterable[bytes]], Iterator[bytes]] | None:
        """What bascule does to a calendar object before it writes it there."""
        chosen = profiles.rewrite(profiles.PROFILES[self.profile], self.scheduling)
        if chosen == profiles.PROTECT:
            return client_scheduled
        return WithoutAttendees() if chosen == profiles.DROP_ATTENDEES else None


def _radicale(base: Path) -> Any:
    server = start_radicale(base, {})
    server.add_user(LOGIN, PASSWORD)
    return server


SERVERS = {
    "cyrus": Server(lambda base: start_cyrus(base, {LOGIN: PASSWORD}), "cyrus"),
    "radicale": Server(_radicale, "radicale"),
    # Xandikos mails attendees whatever SCHEDULE-AGENT says: bascule refuses to protect
    # there, so the batch drops them.
    "xandikos": Server(lambda base: start_xandikos(base, {LOGIN: PASSWORD}), "xandikos",
                       profiles.DROP_ATTENDEES),
    # SabreDAV 1.8 has no profile of its own: generic, as a batch for it would say.
    "sabredav": Server(lambda base: start_sabredav(base, {LOGIN: PASSWORD}), "generic"),
}


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


def corpus(folder: Path, events: int, contacts: int) -> Objects:
    """The export on disk, and the same objects as (name, bytes) per workload."""
    objects = {"calendar": [(f"evenement-{n:05d}.ics", event(n)) for n in range(events)],
               "contacts": [(f"contact-{n:05d}.vcf", contact(n)) for n in range(contacts)]}
    for workload, container in (("calendar", "Agenda"), ("contacts", "Contacts")):
        place = folder / LOGIN / workload / container
        place.mkdir(parents=True, exist_ok=True)
        for name, body in objects[workload]:
            (place / name).write_bytes(body)
    return objects


def sent(server: Server, objects: Objects) -> Objects:
    """The objects as bascule sends them to this server."""
    rewrite = server.rewrite()
    if rewrite is None:
        return objects
    return {**objects, "calendar": [(name, b"".join(rewrite([body])))
                                    for name, body in objects["calendar"]]}


def make_collections(server: Any, prefix: str) -> tuple[str, str]:
    """The paths of a calendar and an address book made in the account's homes, found as
    bascule finds them."""
    client = DavClient(server.base_url + "/", LOGIN, PASSWORD, ca_file=None, timeout=60)
    places = []
    try:
        for workload, (method, body) in (("calendar", ("MKCALENDAR", b"")),
                                         ("contacts", ("MKCOL", ADDRESS_BOOK))):
            place = f"{DavHome(client, KINDS[workload]).path}{prefix}-{workload}/"
            with client.request(method, place, body=body or None, headers={
                    "Content-Type": "application/xml"} if body else {}) as made:
                assert made.status_code in (200, 201), (method, made.status_code, made.content)
            places.append(place)
    finally:
        client.close()
    return places[0], places[1]


def baseline(server: Any, objects: Objects) -> float:
    """Seconds for 4 threads to PUT every object into collections made beforehand."""
    calendar, address_book = make_collections(server, "ceiling")
    work = [(calendar + name, body, "text/calendar") for name, body in objects["calendar"]]
    work += [(address_book + name, body, "text/vcard") for name, body in objects["contacts"]]

    def put(session: requests.Session, item: tuple[str, bytes, str]) -> requests.Response:
        path, body, kind_of = item
        return session.put(_url(server, path), data=body, timeout=60, headers={
            "Content-Type": f"{kind_of}; charset=utf-8", "If-None-Match": "*"})

    return put_all(work, put, (LOGIN, PASSWORD))


T = TypeVar("T")


def put_all(work: list[T], put: Callable[[requests.Session, T], requests.Response],
            auth: tuple[str, str], connections: int = CONNECTIONS) -> float:
    """Seconds for ``connections`` threads, each with a session of its own, to send every
    item of ``work`` with ``put``; raises when a request fails or is answered otherwise
    than 200, 201 or 204."""
    position = iter(work)
    lock = threading.Lock()
    failures: list[str] = []

    def writer() -> None:
        session = requests.Session()
        session.auth = auth
        session.trust_env = False
        while True:
            with lock:
                item = next(position, None)
            if item is None:
                return
            try:
                answer = put(session, item)
            except requests.RequestException as error:  # a thread's end would pass unseen
                failures.append(f"{item!r:.80}: {error}")
                continue
            if answer.status_code not in (200, 201, 204):
                failures.append(f"{item!r:.80}: {answer.status_code}")

    threads = [threading.Thread(target=writer) for _ in range(connections)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    assert not failures, failures[:5]
    return elapsed


def write_batch(folder: Path, export: Path, url: str, server: Server) -> Path:
    """``folder/batch.toml`` (and its users table): the export's calendars and contacts to
    the DAV server at ``url`` with the server's profile and scheduling, the password in
    ``BENCH_DAV_SECRET``, the work folder ``folder/work``."""
    (folder / "users.csv").write_text(f"source,target,source_secret,target_secret\n"
                                      f"{LOGIN},{LOGIN},,env:BENCH_DAV_SECRET\n",
                                      encoding="utf-8")
    target = (f'type = "dav"\nurl = "{url}/"\nprofile = "{server.profile}"\n'
              f'scheduling = "{server.scheduling}"\nconnections = {server.connections}\n')
    batch = folder / "batch.toml"
    batch.write_text(f"""name = "banc-dav"
workloads = ["calendar", "contacts"]
[source]
type = "folder"
path = "{export}"
[targets.calendar]
{target}[targets.contacts]
{target}[run]
work_dir = "work"
""", encoding="utf-8")
    return batch


@dataclass
class Run:
    """What one run of a tool cost: wall-clock seconds, peak RSS in MB and CPU seconds of
    its process (0 for the baseline, which runs inside the bench), and what it said."""

    seconds: float
    peak_mb: float = 0.0
    cpu_seconds: float = 0.0
    summary: str = ""


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[Run, str]:
    """What the command cost, and its output; raises when it fails."""
    began = time.monotonic()
    with open(log, "ab") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(child.pid, 0)  # the child's own peak, not a server's
    elapsed = time.monotonic() - began
    text = log.read_text(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[2:4])} failed ({status}):\n{text[-3000:]}")
    return Run(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime), text


def bascule(server: Any, kind: Server, export: Path, work: Path) -> Run:
    """``bascule run`` from the export to the server, with its summary line."""
    work.mkdir(parents=True, exist_ok=True)
    write_batch(work, export, server.base_url, kind)
    env = dict(os.environ, BENCH_DAV_SECRET=PASSWORD, BASCULE_LANG="en",
               PYTHONPATH=str(Path.cwd()))
    run, text = timed([sys.executable, "-m", "migrate", "run", str(work / "batch.toml")],
                      env, work / "run.log")
    run.summary = next((line for line in reversed(text.splitlines()) if "copied" in line),
                       "").strip()
    return run


def vdirsyncer(server: Any, objects: Objects, work: Path) -> Run:
    """``vdirsyncer discover`` and ``sync`` from a folder of the objects to collections made
    beforehand (the larger peak RSS of the two), with the count of items it uploaded."""
    calendar, address_book = make_collections(server, "vdirsyncer")
    work.mkdir(parents=True, exist_ok=True)
    secret = work / "password"
    secret.write_text(PASSWORD)
    secret.chmod(0o600)
    sections = [f'[general]\nstatus_path = "{work / "status"}"\n']
    for workload, place, storage, extension in (
            ("calendar", calendar, "caldav", ".ics"),
            ("contacts", address_book, "carddav", ".vcf")):
        folder = work / workload
        folder.mkdir(exist_ok=True)
        for name, body in objects[workload]:
            (folder / name).write_bytes(body)
        sections.append(
            f'[pair {workload}]\na = "{workload}_export"\nb = "{workload}_server"\n'
            f"collections = null\n\n"
            f'[storage {workload}_export]\ntype = "filesystem"\npath = "{folder}"\n'
            f'fileext = "{extension}"\n\n'
            f'[storage {workload}_server]\ntype = "{storage}"\n'
            f'url = "{_url(server, place)}"\nusername = "{LOGIN}"\n'
            f'password.fetch = ["command", "cat", "{secret}"]\n')
    config = work / "config"
    config.write_text("\n".join(sections), encoding="utf-8")
    env = {**os.environ, "VDIRSYNCER_CONFIG": str(config)}
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(proxy, None)
    command = [sys.executable, "-m", "vdirsyncer"]
    log = work / "vdirsyncer.log"
    found, _ = timed([*command, "discover"], env, log)
    synced, text = timed([*command, "sync"], env, log)
    uploaded = sum(line.startswith("Copying (uploading) item") for line in text.splitlines())
    return Run(found.seconds + synced.seconds, max(found.peak_mb, synced.peak_mb),
               found.cpu_seconds + synced.cpu_seconds, f"{uploaded} uploaded")


def mails(server: Any) -> int | None:
    """The messages the server handed to its sendmail, ``None`` for one that sends none."""
    captured = getattr(server, "captured", None)
    return len(captured()) if captured is not None else None


def _url(server: Any, path: str) -> str:
    return server.base_url + urllib.parse.quote(path, safe="/@")


def measure(server_kind: Server, kind: str, tool: str, round_number: int,
            objects: Objects, scratch: Path) -> dict[str, Any]:
    """One tool's run into a fresh server of that kind, as a row of the results."""
    name = f"{kind}-{tool}-{round_number}"
    server = server_kind.start(scratch / name)
    try:
        if tool == "baseline":
            run = Run(baseline(server, sent(server_kind, objects)))
        elif tool == "bascule":
            run = bascule(server, server_kind, scratch / "export", scratch / f"work-{name}")
        else:
            run = vdirsyncer(server, sent(server_kind, objects), scratch / f"work-{name}")
        mailed = mails(server)
    finally:
        server.stop()
    items = sum(len(listed) for listed in objects.values())
    # Other work on the machine skews a figure: the load average says how much there was.
    return {"server": kind, "tool": tool, "round": round_number,
            "seconds": round(run.seconds, 2), "items_per_second": round(items / run.seconds, 1),
            "peak_rss_mb": round(run.peak_mb), "cpu_seconds": round(run.cpu_seconds, 1),
            "mails": mailed, "summary": run.summary,
            "load_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help="bascule's connections (the baseline keeps 4)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    kinds = args.servers.split(",")
    tools = [tool for tool in TOOLS if tool in args.tools.split(",")]
    unknown = set(kinds) - set(SERVERS) | set(args.tools.split(",")) - set(TOOLS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")

    scratch = Path(tempfile.mkdtemp(prefix="bascule-dav-bench-"))
    items = args.events + args.contacts
    results = []
    try:
        objects = corpus(scratch / "export", args.events, args.contacts)
        for kind in kinds:
            for round_number in range(args.rounds):
                # Alternating the order spreads the machine's other load over every tool.
                for tool in tools if round_number % 2 == 0 else tools[::-1]:
                    server = replace(SERVERS[kind], connections=args.connections)
                    results.append(measure(server, kind, tool, round_number, objects,
                                           scratch))
                    print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{args.events} events, {args.contacts} contacts; medians of {args.rounds} "
          f"round(s)\n")
    print("| server | tool | seconds | items/s | share of baseline | peak RSS (MB) | CPU s | "
          "mails |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in kinds:
        medians = {tool: statistics.median(r["seconds"] for r in results
                                           if r["server"] == kind and r["tool"] == tool)
                   for tool in tools}
        for tool, seconds in medians.items():
            rows = [r for r in results if r["server"] == kind and r["tool"] == tool]
            peak = max(r["peak_rss_mb"] for r in rows)
            cpu = statistics.median(r["cpu_seconds"] for r in rows)
            mailed = max((r["mails"] for r in rows if r["mails"] is not None), default=None)
            share = (f"{medians['baseline'] / seconds:.2f}"
                     if tool != "baseline" and "baseline" in medians else "")
            print(f"| {kind} | {tool} | {seconds:.1f} | {items / seconds:.0f} | {share} | "
                  f"{peak or ''} | {f'{cpu:.1f}' if cpu else ''} | {'' if mailed is None else mailed} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dav.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
