"""Calendars and contacts into a real Cyrus, the run killed with writes in flight, again and
again, then run to its end: every object once, nothing missing, nobody mailed, read back
with plain HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.parse
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import requests

from bench.dav import LOGIN, PASSWORD, SERVERS, corpus, write_batch
from tests.faults import kill_in_flight

ROOT = Path(__file__).resolve().parent.parent


def uids(base_url: str, home: str) -> Counter:
    """How many resources hold each UID, in every collection of a home."""
    def members(path: str) -> list[str]:
        answer = requests.request(
            "PROPFIND", base_url + urllib.parse.quote(path, safe="/@"), auth=(LOGIN, PASSWORD),
            headers={"Depth": "1", "Content-Type": "application/xml"}, timeout=60,
            data=b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/></prop>'
                 b"</propfind>")
        assert answer.status_code == 207, answer.text
        return [urllib.parse.unquote(r.findtext("{DAV:}href") or "")
                for r in ElementTree.fromstring(answer.content).iter("{DAV:}response")][1:]

    found: Counter = Counter()
    for collection in members(home):
        if not collection.endswith("/") or collection.rstrip("/").endswith(("Inbox", "Outbox")):
            continue
        for item in members(collection):
            body = requests.get(base_url + urllib.parse.quote(item, safe="/@"),
                                auth=(LOGIN, PASSWORD), timeout=60).content
            found.update(line.split(b":", 1)[1] for line in body.splitlines()
                         if line.startswith(b"UID:"))
    return found


def test_killed_with_writes_in_flight_then_run_again_each_object_once(cyrus_factory,
                                                                       fault_proxy, tmp_path):
    cyrus = cyrus_factory({LOGIN: PASSWORD})
    proxy = fault_proxy(("127.0.0.1", cyrus.http_port))
    objects = corpus(tmp_path / "export", 400, 100)
    batch = write_batch(tmp_path, tmp_path / "export", f"http://127.0.0.1:{proxy.port}",
                        SERVERS["cyrus"])
    env = {**os.environ, "BENCH_DAV_SECRET": PASSWORD, "PYTHONPATH": str(ROOT)}

    # Killed while writes are held in flight by the proxy: during the first ones, then with
    # 150 and 300 objects recorded, each run resuming the one before.
    outcomes = [kill_in_flight(batch, env, proxy, start) for start in (
        lambda ledger: proxy.bytes_to_server >= 16384,
        lambda ledger: ledger.done >= 150, lambda ledger: ledger.done >= 300)]
    assert [outcome.returncode for outcome in outcomes] == [-signal.SIGKILL] * 3
    assert all(outcome.at_signal.inflight > 0 for outcome in outcomes)
    assert max(outcome.at_signal.done for outcome in outcomes) < 500, "make the export larger"

    final = subprocess.run([sys.executable, "-m", "migrate", "run", str(batch)], cwd=ROOT,
                           env=env, capture_output=True, text=True, check=False)
    assert final.returncode == 0, final.stdout + final.stderr
    events = uids(cyrus.base_url, f"/dav/calendars/user/{LOGIN}/")
    contacts = uids(cyrus.base_url, f"/dav/addressbooks/user/{LOGIN}/")
    # A series and its moved occurrence share their UID: one resource holds both.
    expected_events = Counter({name.removesuffix(".ics").encode(): 2 if number % 10 == 0 else 1
                               for number, (name, _) in enumerate(objects["calendar"])})
    assert events == expected_events
    assert contacts == Counter({name.removesuffix(".vcf").encode(): 1
                                for name, _ in objects["contacts"]})
    assert cyrus.captured() == [], "a killed run made Cyrus mail someone"
    verify = subprocess.run([sys.executable, "-m", "migrate", "verify", str(batch)], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
