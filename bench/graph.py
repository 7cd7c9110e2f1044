"""Benchmark of the Graph mail source: does bascule keep the per-mailbox limit saturated?

The test server (``tests/graph_server.py``) answers every Graph request after a fixed
latency and refuses (429) a mailbox's requests beyond the documented concurrency limit. With
``L`` seconds per request and ``C`` requests at once per mailbox, one mailbox cannot give
more than ``C / L`` requests a second; ``M`` mailboxes copied at once, ``M * C / L``. Each
message costs one request (its ``$value``); listings cost a few more per folder. bascule
runs ``bascule run`` into a local Maildir (so that the target is not what limits it), and
the figure reported is messages per second against that ceiling.

Two shares are reported. ``share_of_ceiling`` is the whole run (process start and sign-in
included) against ``M * C / L``, as before. ``share_of_least_graph_phase`` is the least time
the latency and the limit allow for the requests served, against the Graph phase (first
Graph request to last answer): some requests of a mailbox cannot overlap, since each needs
the answer of the one before (the access check, the folder list, then the pages of one delta
round), and the rest go ``C`` at a time.

Run: ``python -m bench.graph`` (options: ``--mailboxes 8 --messages 150 --latency-ms 50
--limit 4``). Everything listens on 127.0.0.1 and stops at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connectors.graph.mail import DELTA_PAGE_SIZE
from tests.graph_server import FixtureTenant, mime_message, running_graph_server
from tests.tls import make_test_certificates


def tenant(mailboxes: int, messages: int) -> FixtureTenant:
    """``mailboxes`` users with ``messages`` small messages each in their inbox."""
    built = FixtureTenant(tenant_id="bench-tenant", domain="ville-exemple.fr",
                          client_id="bench-app", client_secret="bench-secret-value")
    start = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
    for n in range(mailboxes):
        mailbox = built.add_user(f"agent{n:02d}", f"Agent n°{n}")
        inbox = built.add_folder(mailbox, "Boîte de réception", well_known_name="inbox")
        for k in range(messages):
            when = start + timedelta(minutes=k)
            body = f"Message {k} de l'agent {n}.\n" + "Lorem ipsum dolor sit amet. " * 40
            built.add_message(mailbox, inbox,
                              mime_message("Mairie <mairie@ville-exemple.fr>",
                                           mailbox.user_principal_name, f"Note n°{k}", body,
                                           when),
                              subject=f"Note n°{k}", received=when, is_read=k % 2 == 0)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=8)
    parser.add_argument("--messages", type=int, default=150)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--limit", type=int, default=4, help="concurrent requests per mailbox")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bascule-graph-bench-"))
    certificates = make_test_certificates(scratch / "pki")
    fixture = tenant(args.mailboxes, args.messages)
    with running_graph_server(fixture, certificates) as graph:
        graph.state.latency = args.latency_ms / 1000
        graph.state.per_mailbox_limit = args.limit
        (scratch / "users.csv").write_text(
            "source,target\n" + "".join(f"{m.user_principal_name},agent{n:02d}\n"
                                        for n, m in enumerate(fixture.mailboxes)),
            encoding="utf-8")
        (scratch / "batch.toml").write_text(f"""name = "banc-graph"
[source]
type = "graph"
tenant = "{fixture.tenant_id}"
client_id = "{fixture.client_id}"
client_secret = "env:BENCH_GRAPH_SECRET"
authority = "{graph.authority}"
graph_url = "{graph.url}"
ca_file = "{certificates.ca_file}"
per_mailbox = {args.limit}
[target]
type = "maildir"
path = "cible"
[run]
work_dir = "travail"
workers = {args.mailboxes}
""", encoding="utf-8")
        env = dict(os.environ, BENCH_GRAPH_SECRET=fixture.client_secret, BASCULE_LANG="en",
                   PYTHONPATH=str(Path.cwd()))
        now = resource.getrusage(resource.RUSAGE_SELF)
        cpu_before = now.ru_utime + now.ru_stime
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "migrate", "run",
                                  str(scratch / "batch.toml")], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        output, _ = child.communicate()
        seconds = time.monotonic() - started
        child_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        own_usage = resource.getrusage(resource.RUSAGE_SELF)
        peak_rss_mb = child_usage.ru_maxrss / 1024
        stats = dict(graph.stats)
        busiest = max(graph.state.max_in_flight.values(), default=0)
        graph_phase = (graph.state.last_answer_at or started) - (graph.state.first_request_at
                                                                 or started)
    if child.returncode != 0:
        sys.exit(f"bascule run failed ({child.returncode}):\n{output.decode(errors='replace')}")
    messages = args.mailboxes * args.messages
    requests = stats.get("served", 0)
    latency = args.latency_ms / 1000
    ceiling = args.mailboxes * args.limit / latency
    # Requests of a mailbox that wait each for the one before: the access check, the folder
    # list, the pages of the inbox's delta round.
    chained = 2 + -(-args.messages // DELTA_PAGE_SIZE)
    per_mailbox = requests / args.mailboxes
    least = latency * (chained + (per_mailbox - chained) / args.limit)
    cpu_bascule = child_usage.ru_utime + child_usage.ru_stime
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mailboxes": args.mailboxes, "messages": messages, "latency_ms": args.latency_ms,
        "limit_per_mailbox": args.limit, "seconds": round(seconds, 2),
        "messages_per_s": round(messages / seconds, 1),
        "graph_requests_served": requests,
        "requests_per_s": round(requests / seconds, 1),
        "ceiling_requests_per_s": round(ceiling, 1),
        "share_of_ceiling": round(requests / seconds / ceiling, 3),
        "graph_phase_seconds": round(graph_phase, 2),
        "least_seconds": round(least, 2),
        "share_of_least_graph_phase": round(least / graph_phase, 3) if graph_phase else None,
        "refused_for_concurrency": stats.get("concurrency_refused", 0),
        "most_in_flight_per_mailbox": busiest,
        "peak_rss_mb": round(peak_rss_mb, 1),
        # Both sides are Python speaking TLS on the same two cores: when their CPU time nears
        # twice the wall time, the machine, not the limit, is what the run hits.
        "cpu_seconds_bascule": round(cpu_bascule, 1),
        "cpu_ms_per_message_bascule": round(cpu_bascule / messages * 1000, 2),
        "cpu_seconds_test_server": round(own_usage.ru_utime + own_usage.ru_stime
                                         - cpu_before, 1),
        "cores": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for key, value in result.items():
        print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
