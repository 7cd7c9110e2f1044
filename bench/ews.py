"""Benchmark of the EWS mail source: messages per second from an Exchange server answering
after a fixed latency, against what that latency and the concurrency limits allow.

The EWS test server (``tests/ews_server.py``) delays every answer by ``L`` seconds. bascule
may have ``C`` requests in flight per mailbox (``per_mailbox``) and ``S`` to the server
(``per_server``, under Exchange's EWSMaxConcurrency). A mailbox's requests are a chain of a
few (the access check, the folder lists, the pages of SyncFolderItems) and then GetItems that
may overlap ``C`` at a time; with ``M`` mailboxes at once, at most ``min(M * C, S)`` requests
are in flight. The least time is what those limits allow for the requests bascule sent.

In the same invocation, a raw copier (``requests`` on the same sign-in, the same GetItem
batches of ``BATCH_ITEMS`` messages, ``C`` per mailbox, every mailbox at once) reads the same
messages and throws them away: the ceiling this server, this machine and these limits give a
client that does nothing else; then the same copier writes each message into a Maildir as a
delivery does (written, fsynced, renamed): the ceiling with the target's own cost. bascule runs ``bascule run`` into a local Maildir (the target
is then not what limits it). Reported: messages/s of both, bascule's share of the copier's
rate and of the least time, peak RSS, CPU.

Run: ``python -m bench.ews`` (options: ``--mailboxes 8 --messages 400 --latency-ms 20
--per-mailbox 2 --per-server 12 --rounds 3``). Everything listens on 127.0.0.1 and stops at
the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

from connectors.ews.mail import BATCH_ITEMS, PAGE
from tests.ews_seed import mime_message
from tests.ews_server import EwsServer, EwsTenant
from tests.tls import make_test_certificates

DOMAIN = "ville-exemple.fr"
SERVICE = (f"svc-bascule@{DOMAIN}", "bench-service-secret")
SOAP = ('<?xml version="1.0" encoding="utf-8"?><s:Envelope '
        'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" '
        'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><s:Header>'
        '<t:RequestServerVersion Version="Exchange2013_SP1"/><t:ExchangeImpersonation>'
        "<t:ConnectingSID><t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress>"
        "</t:ConnectingSID></t:ExchangeImpersonation></s:Header><s:Body>{body}</s:Body>"
        "</s:Envelope>")
ITEM_ID = re.compile(rb'<t:ItemId Id="([^"]+)"')
MIME = re.compile(rb"<t:MimeContent[^>]*>([^<]*)</t:MimeContent>")


def organisation(mailboxes: int, messages: int) -> EwsTenant:
    """``mailboxes`` mailboxes with ``messages`` small messages each in their inbox."""
    tenant = EwsTenant()
    tenant.service_account(*SERVICE)
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    for n in range(mailboxes):
        address = f"agent{n:02d}@{DOMAIN}"
        mailbox = tenant.add_mailbox(address, f"Agent n°{n}")
        for k in range(messages):
            when = start + timedelta(minutes=k)
            body = f"Message {k} de l'agent {n}.\r\n" + "Lorem ipsum dolor sit amet. " * 40
            mailbox.deliver("inbox", mime_message(f"mairie@{DOMAIN}", address, f"Note n°{k}",
                                                  body, when),
                            is_read=k % 2 == 0, received=when)
    return tenant


def raw_copy(server: EwsServer, mailboxes: list[str], per_mailbox: int, per_server: int,
             maildir: Path | None = None) -> tuple[float, int]:
    """Seconds the raw copier takes to read every inbox whole, and messages read; with
    ``maildir``, each message also written there as a Maildir delivery does (a file in
    ``tmp/`` written and fsynced, then renamed into ``cur/``), the target's own cost."""
    session = requests.Session()
    session.auth = SERVICE
    adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=per_server)
    session.mount("https://", adapter)

    def post(mailbox: str, body: str) -> bytes:
        answer = session.post(server.url, data=SOAP.format(mailbox=mailbox, body=body).encode(),
                              headers={"Content-Type": "text/xml; charset=utf-8"},
                              verify=str(server.ca_file), timeout=120)
        answer.raise_for_status()
        return answer.content

    def listed(mailbox: str) -> list[str]:
        ids: list[str] = []
        state = ""
        while True:
            answer = post(mailbox, (
                "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
                "</m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId Id=\"inbox\"/>"
                f"</m:SyncFolderId>{state}<m:MaxChangesReturned>{PAGE}"
                "</m:MaxChangesReturned></m:SyncFolderItems>"))
            ids += [found.decode() for found in ITEM_ID.findall(answer)]
            token = re.search(rb"<m:SyncState>([^<]+)</m:SyncState>", answer)
            if b"<m:IncludesLastItemInRange>true" in answer or token is None:
                return ids
            state = f"<m:SyncState>{token.group(1).decode()}</m:SyncState>"

    def batch(mailbox: str, ids: list[str]) -> int:
        body = post(mailbox, (
            "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
            "<t:IncludeMimeContent>true</t:IncludeMimeContent></m:ItemShape><m:ItemIds>"
            + "".join(f'<t:ItemId Id="{i}"/>' for i in ids) + "</m:ItemIds></m:GetItem>"))
        bodies = MIME.findall(body)
        if maildir is not None:
            folder = maildir / mailbox
            for raw in bodies:
                name = f"{time.time_ns()}.{threading.get_ident()}"
                with open(folder / "tmp" / name, "wb") as file:
                    file.write(base64.b64decode(raw))
                    file.flush()
                    os.fsync(file.fileno())
                os.rename(folder / "tmp" / name, folder / "cur" / f"{name}:2,")
        return len(bodies)

    def mailbox_copy(mailbox: str) -> int:
        if maildir is not None:
            for part in ("tmp", "cur", "new"):
                (maildir / mailbox / part).mkdir(parents=True, exist_ok=True)
        ids = listed(mailbox)
        batches = [ids[i:i + BATCH_ITEMS] for i in range(0, len(ids), BATCH_ITEMS)]
        with ThreadPoolExecutor(per_mailbox) as own:
            return sum(own.map(lambda chunk: batch(mailbox, chunk), batches))

    started = time.monotonic()
    with ThreadPoolExecutor(len(mailboxes)) as pool:
        read = sum(pool.map(mailbox_copy, mailboxes))
    seconds = time.monotonic() - started
    session.close()
    return seconds, read


def bascule_run(scratch: Path, server: EwsServer, args: argparse.Namespace, round_: int
                ) -> tuple[float, float, float, int, float]:
    """Seconds, peak RSS (MB) and CPU seconds of one ``bascule run``, requests served, and
    the seconds of the same run again (nothing to copy: its fixed cost)."""
    folder = scratch / f"run-{round_}"
    folder.mkdir()
    (folder / "users.csv").write_text(
        "source,target\n" + "".join(f"agent{n:02d}@{DOMAIN},agent{n:02d}\n"
                                    for n in range(args.mailboxes)), encoding="utf-8")
    (folder / "batch.toml").write_text(f"""name = "banc-ews"
[source]
type = "ews"
service_endpoint = "{server.url}"
auth = "basic"
ca_file = "{server.ca_file}"
per_mailbox = {args.per_mailbox}
per_server = {args.per_server}
[source.service_account]
login = "{SERVICE[0]}"
secret = "env:BENCH_EWS_SECRET"
[target]
type = "maildir"
path = "cible"
[run]
work_dir = "travail"
workers = {args.mailboxes}
""", encoding="utf-8")
    env = dict(os.environ, BENCH_EWS_SECRET=SERVICE[1], BASCULE_LANG="en",
               PYTHONPATH=str(Path.cwd()))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    served_before = len(server.requests)
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-m", "migrate", "run",
                            str(folder / "batch.toml")], env=env, capture_output=True,
                           check=False)
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        sys.exit(f"bascule run failed ({child.returncode}):\n"
                 f"{(child.stdout + child.stderr).decode(errors='replace')}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    sent = len(server.requests) - served_before
    # The same batch again: nothing new to copy, what a run costs whatever it moves.
    started = time.monotonic()
    again = subprocess.run([sys.executable, "-m", "migrate", "run",
                            str(folder / "batch.toml")], env=env, capture_output=True,
                           check=False)
    fixed = time.monotonic() - started
    if again.returncode != 0:
        sys.exit(f"bascule run again failed ({again.returncode})")
    return seconds, after.ru_maxrss / 1024, cpu, sent, fixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=8)
    parser.add_argument("--messages", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--per-mailbox", type=int, default=2)
    parser.add_argument("--per-server", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bascule-ews-bench-"))
    certificates = make_test_certificates(scratch / "pki")
    tenant = organisation(args.mailboxes, args.messages)
    mailboxes = [f"agent{n:02d}@{DOMAIN}" for n in range(args.mailboxes)]
    messages = args.mailboxes * args.messages
    latency = args.latency_ms / 1000
    rounds = []
    with EwsServer(tenant, auth=("basic",), certificates=certificates) as server:
        server.latency(latency)
        server.max_concurrency(args.per_mailbox)
        for round_ in range(args.rounds):
            raw_seconds, read = raw_copy(server, mailboxes, args.per_mailbox, args.per_server)
            writing_seconds, written = raw_copy(server, mailboxes, args.per_mailbox,
                                                args.per_server, scratch / f"raw-{round_}")
            if read != messages or written != messages:
                sys.exit(f"the raw copiers read {read} and {written} messages of {messages}")
            seconds, rss, cpu, requests_sent, fixed = bascule_run(scratch, server, args,
                                                                  round_)
            per_mailbox = requests_sent / args.mailboxes
            in_flight = min(args.mailboxes * args.per_mailbox, args.per_server)
            least = latency * requests_sent / in_flight
            rounds.append({"raw_seconds": round(raw_seconds, 2),
                           "raw_to_maildir_seconds": round(writing_seconds, 2),
                           "bascule_seconds": round(seconds, 2),
                           "share_of_raw": round(raw_seconds / seconds, 3),
                           "share_of_raw_to_maildir": round(writing_seconds / seconds, 3),
                           "bascule_rerun_seconds": round(fixed, 2),
                           "share_beyond_fixed_cost": round(
                               writing_seconds / max(seconds - fixed, 0.01), 3),
                "least_seconds": round(least, 2), "share_of_least": round(least / seconds, 3),
                "requests": requests_sent, "requests_per_mailbox": round(per_mailbox, 1),
                "peak_rss_mb": round(rss, 1), "cpu_seconds": round(cpu, 1)})
            print(json.dumps(rounds[-1]))
        refused = server.stats.get("refused_concurrency", 0)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mailboxes": args.mailboxes, "messages": messages, "latency_ms": args.latency_ms,
        "per_mailbox": args.per_mailbox, "per_server": args.per_server,
        "rounds": rounds,
        "median_share_of_raw": statistics.median(r["share_of_raw"] for r in rounds),
        "median_share_of_raw_to_maildir": statistics.median(
            r["share_of_raw_to_maildir"] for r in rounds),
        "median_share_of_least": statistics.median(r["share_of_least"] for r in rounds),
        "median_share_beyond_fixed_cost": statistics.median(
            r["share_beyond_fixed_cost"] for r in rounds),
        "messages_per_s_bascule": round(messages / statistics.median(
            r["bascule_seconds"] for r in rounds), 1),
        "messages_per_s_raw": round(messages / statistics.median(
            r["raw_seconds"] for r in rounds), 1),
        "refused_for_concurrency": refused,
        "cores": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ews.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for key, value in result.items():
        if key != "rounds":
            print(f"{key:>24}: {value}")


if __name__ == "__main__":
    main()
