"""A 100 MB message read from the EWS test server by a separate process, whose peak RSS
(VmHWM) is read: EWS sends the MIME as base64 inside XML, and the source must stream it to a
spool, not hold it (the issue's bound: well under 200 MB)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.ews_seed import SERVICE_LOGIN

ROOT = Path(__file__).resolve().parent.parent
SIZE = 100 << 20
BOUND = 200 << 20
PROBE = """
import hashlib, json, sys
from connectors.ews.client import EwsClient, SignIn, Throttle

def peak():
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

from connectors.ews.mail import EwsMailSource
url, ca_file, login, mailbox = sys.argv[1:5]
client = EwsClient(SignIn(endpoint=url, auth="ntlm", login=login,
                          password=sys.stdin.readline().strip(), impersonation=True,
                          ca_file=ca_file), Throttle(4, 2), per_server=4)
source = EwsMailSource(client, mailbox)
[inbox] = [c for c in source.containers() if c.role == "inbox"]
refs = source.list_changes(inbox, None).refs
before = peak()
[message] = source.fetch(inbox, [r.source_id for r in refs])
digest, size = hashlib.sha256(), 0
with message.open() as body:
    while chunk := body.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
print(json.dumps({"before": before, "peak": peak(), "size": size,
                  "sha256": digest.hexdigest(), "fingerprint": message.fingerprint}))
"""


def write_big_message(path: Path) -> str:
    """A message of ``SIZE`` bytes written to a file a line at a time; its SHA-256."""
    digest = hashlib.sha256()
    line = ("Rapport annuel des services techniques, ligne de données chiffrées. " * 2)[:126]
    block = ((line + "\r\n").encode() * 512)
    with path.open("wb") as file:
        head = (b"From: archives@ville.fr\r\nTo: alice@ville.fr\r\n"
                b"Subject: Rapport annuel (100 Mo)\r\nMIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        file.write(head)
        digest.update(head)
        written = len(head)
        while written < SIZE:
            piece = block[:SIZE - written]
            file.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def test_a_100_mb_message_costs_a_reading_process_well_under_200_mb(ews_server, tmp_path):
    mailbox = ews_server.tenant.add_mailbox("denise@ville.fr", "Denise Roux")
    big = tmp_path / "rapport.eml"
    sha256 = write_big_message(big)
    mailbox.deliver("inbox", big)  # the server reads the file as it answers
    child = subprocess.run(
        [sys.executable, "-c", PROBE, ews_server.url, str(ews_server.ca_file), SERVICE_LOGIN,
         "denise@ville.fr"], check=False, input=ews_server.service_password + "\n", cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)},
        capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    measured = json.loads(child.stdout.splitlines()[-1])
    assert (measured["size"], measured["sha256"]) == (SIZE, sha256)
    assert measured["fingerprint"] == f"sha256:{sha256}"
    print(f"peak RSS {measured['peak'] / 1e6:.0f} MB for a {SIZE / 1e6:.0f} MB message "
          f"({measured['before'] / 1e6:.0f} MB before the fetch)")
    assert measured["peak"] < BOUND, measured
