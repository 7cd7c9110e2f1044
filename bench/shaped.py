"""Benchmark on mailboxes shaped like real ones and on many users, against two raw ceilings.

Three cases, each seeded once on a private source Dovecot, then read once (``warm``; none of
it timed):

- ``shaped``: one account of about 1,200 messages in 48 folders (``bench.shaped_corpus``):
  three large folders, two thirds of the folders under 10 messages, a 6-deep branch,
  accented names, lognormal sizes;
- ``users``: 100 accounts of 30 messages each (three folders), and one more account
  holding the same 3,000 messages in the same three folders, to compare moving 100 users
  with moving one, for bascule and for each raw copier (the copier's own ratio is what the
  servers' per-user cost leaves to any client);
- ``bulk``: one account per size given with ``--bulk`` (8,000 and 40,000 messages by
  default), all in one folder, messages under 12 KB: what the target's cost per APPEND
  weighs, and how each tool's time grows with the folder (against the MULTIAPPEND ceiling
  above all).

For each case and setting (``direct`` on loopback; ``wan`` through proxies adding 10 ms
each way in front of both servers) each tool copies to a fresh target Dovecot: the raw
4-connection pipelined APPEND copier (``bench.ceiling --mode append``), the raw
4-connection MULTIAPPEND copier (``--mode multiappend``), and ``bascule run`` with the batch
defaults and a users table of one line per account. Each tool runs as a child process
(wall time and peak RSS from ``wait4``, as in ``bench.mail``); the target must then hold
as many messages and bytes as the source, or the run counts as failed.

    python -m bench.shaped                          # both cases, both settings
    python -m bench.shaped --cases users --settings wan --users 50 --per-user 60
    python -m bench.shaped --cases shaped --messages 5000
    python -m bench.shaped --cases bulk --bulk 8000,40000 --tools multiappend,bascule
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

from imapclient.imap_utf7 import encode as utf7

from bench.baseline import Connection, fetched, folders, quote
from bench.ceiling import BATCH_BYTES, BATCH_MESSAGES, create_all
from bench.mail import Launcher, Setting, bascule_command, machine
from bench.shaped_corpus import (
    ShapedFolder,
    ShapedMessage,
    bulk_folder,
    folder_messages,
    shaped_folders,
    user_folders,
)
from migrate.ledger import Ledger
from tests.dovecot import Dovecot, start_dovecot

SOURCE_SECRET, TARGET_SECRET = "source-secret", "target-secret"
SHAPED_USER = "boite"
ONE_USER = "seul"
DOMAIN = "@ville-exemple.fr"
LANES = 4
SEED_LANES = 4
MB = 1_000_000
CORES = os.cpu_count() or 1
LOCK_TIMEOUT = re.compile(r"failed: Timed out after \d+ seconds")
STATUS = re.compile(rb"^\* STATUS .+ \(MESSAGES (\d+) SIZE (\d+)\)\r\n$")


@dataclass(frozen=True)
class Measure:
    """One tool's copy of one case's accounts in one setting."""

    case: str
    setting: str
    tool: str
    accounts: int
    messages: int
    bytes: int
    seconds: float
    peak_rss_mb: float
    exit_code: int
    cpu_seconds: float
    machine_busy: float
    """The share of the machine's cores busy during the run: the tool, both servers, the
    proxies. Near 1, the CPU is what bounds the run."""
    lock_timeouts: int
    """Lines of the target's log saying a lock was waited for until it timed out."""
    machine_cpu_seconds: float
    """CPU seconds the whole machine spent during the run (every core): the tool's, and
    the servers', the proxies' and the kernel's beside it. Divided by the cores, it is the
    shortest the run could have been on this machine with the same work."""
    problem: str | None = None
    round: int = 1
    """Which of the invocation's rounds (``--rounds``) the run belongs to, from 1."""

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds


# Seeding (not measured)

def seed_accounts(server: Dovecot, accounts: dict[str, list[ShapedFolder]],
                  contents: dict[str, Iterable[tuple[ShapedFolder, Iterator[ShapedMessage]]]]
                  | None = None) -> None:
    """Create each account's folders, then MULTIAPPEND its messages, several accounts at once.

    ``contents`` replaces an account's messages (the one user holding everybody's)."""
    pending = list(accounts)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def seed_one() -> None:
        while True:
            with lock:
                if not pending or errors:
                    return
                user = pending.pop()
            try:
                conn = Connection(f"{server.host}:{server.port}", user, server.users[user])
                names = {folder.path: quote(utf7("/".join(folder.path)))
                         for folder in accounts[user]}
                create_all(conn, list(names.values()))
                parts = (contents or {}).get(user) or (
                    (folder, folder_messages(folder)) for folder in accounts[user])
                for folder, messages in parts:
                    append_batches(conn, names[folder.path], messages)
                conn.close()
            except Exception as error:  # noqa: BLE001 (re-raised by the main thread)
                errors.append(error)

    threads = [threading.Thread(target=seed_one) for _ in range(SEED_LANES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def warm(server: Dovecot, users: Iterable[str]) -> None:
    """Read every message of the accounts once, with the items bascule's listing asks and
    the body, as their users' mail clients would have: a Dovecot that was only appended to
    computes each message's size and caches it on the first listing that asks, which made
    the first copy after seeding two to three times slower than the next ones (8,000
    messages: 9 to 12 s against 4) whichever tool came first."""
    for user in users:
        conn = Connection(f"{server.host}:{server.port}", user, server.users[user])
        for folder in folders(conn):
            conn.command(b"EXAMINE " + folder)
            tag = conn.send(b"UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[])")
            for _ in fetched(conn, tag):
                pass
            if not conn.last.startswith(tag + b" OK"):
                raise RuntimeError(f"FETCH in {folder!r}: {conn.last!r}")
        conn.close()


def append_batches(conn: Connection, folder: bytes, messages: Iterable[ShapedMessage]) -> None:
    """MULTIAPPEND in bounded batches, waiting for each batch's reply."""
    batch: list[bytes] = []
    size = 0
    for message in chain(messages, [None]):
        if message is not None:
            date = message.internal_date.strftime("%d-%b-%Y %H:%M:%S +0000").encode()
            batch.append(b'(%s) "%s" {%d+}\r\n' % (" ".join(message.flags).encode(), date,
                                                   len(message.raw)) + message.raw)
            size += len(message.raw)
        if batch and (message is None or len(batch) >= BATCH_MESSAGES or size >= BATCH_BYTES):
            conn.command(b"APPEND " + folder + b" " + b" ".join(batch))
            batch, size = [], 0


def totals(host: str, port: int, user: str, password: str) -> tuple[int, int]:
    """Messages and bytes in all the account's selectable folders, in one round trip."""
    conn = Connection(f"{host}:{port}", user, password)
    found = [STATUS.match(line) for line in
             conn.command(b'LIST "" "*" RETURN (STATUS (MESSAGES SIZE))')]
    conn.close()
    return (sum(int(m.group(1)) for m in found if m), sum(int(m.group(2)) for m in found if m))


def server_totals(server: Dovecot, users: Iterable[str]) -> tuple[int, int]:
    counts = [totals(server.host, server.port, user, server.users[user]) for user in users]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def everyone_in(many: dict[str, list[ShapedFolder]], k: int) -> Iterator[ShapedMessage]:
    """Every account's messages of its ``k``-th folder, one account after another."""
    for tree in many.values():
        yield from folder_messages(tree[k])


# Measured runs

@dataclass(frozen=True)
class Accounts:
    """What one run moves: (source user, target user) pairs and what they hold in all."""

    pairs: tuple[tuple[str, str], ...]
    messages: int
    bytes: int


def ceiling(launcher: Launcher, mode: str, source: tuple[str, int], target: tuple[str, int],
            accounts: Accounts, work: Path, timeout: float, lanes: int = LANES
            ) -> dict[str, float]:
    (work / "users.txt").write_text("".join(f"{s} {t}\n" for s, t in accounts.pairs),
                                    encoding="utf-8")
    env = dict(os.environ, BASELINE_SOURCE_SECRET=SOURCE_SECRET,
               BASELINE_TARGET_SECRET=TARGET_SECRET)
    command = [sys.executable, "-m", "bench.ceiling", f"{source[0]}:{source[1]}",
               f"{target[0]}:{target[1]}", str(work / "users.txt"), "--mode", mode,
               "--lanes", str(lanes)]
    return launcher.run_child(command, env, Path.cwd(), work / "tool.log", timeout)


ESTIMATES: list[dict[str, Any]] = []
"""``bascule plan``'s estimates against the runs they estimate: before the first run (from
its probe), and before a second run with nothing new (from the first run's timings)."""


def bascule(launcher: Launcher, source: tuple[str, int], target: tuple[str, int],
            accounts: Accounts, work: Path, timeout: float,
            workers: int | None = None, connections: int | None = None) -> dict[str, float]:
    """``bascule run`` with the batch defaults (but ``workers`` and the target's
    ``connections``, when given) and one
    users-table line per account, with a ``bascule plan`` (not timed) before it; then a plan
    and a run again, with nothing new, for the estimate from history. The first run is what
    is measured."""
    command, env = bascule_command(source, target, list(accounts.pairs), work,
                                   secrets=(SOURCE_SECRET, TARGET_SECRET), workers=workers,
                                   connections=connections)
    plan_command = [*command[:-2], "plan", command[-1]]
    children = []
    for label, suffix in (("first", ""), ("again", "-again")):
        planned = launcher.run_child(plan_command, env, work, work / f"plan{suffix}.log",
                                     timeout)
        child = launcher.run_child(command, env, work, work / f"tool{suffix}.log", timeout)
        children.append(child)
        estimate = json.loads((work / "work" / "plan-latest.json").read_text(
            encoding="utf-8"))["estimate"]
        ledger = Ledger.in_folder(work / "work")
        run = ledger.last_run("run")
        ledger.close()
        # The estimate is of the run as the ledger times it; the command's own start (the
        # interpreter, the ledger's check, the source's sign-in check) comes on top.
        window = (run["ended_at"] - run["started_at"]).total_seconds() if run else 0.0
        if not accounts.messages:
            continue  # an empty account (``--bulk 0``): nothing to estimate
        ESTIMATES.append({"run": f"{work.name}-{label}", "estimate_seconds": estimate["seconds"],
                          "run_seconds": round(child["seconds"], 1),
                          "ledger_run_seconds": round(window, 1),
                          "ratio": round(estimate["seconds"] / child["seconds"], 2),
                          "plan_seconds": round(planned["seconds"], 2),
                          "workers": estimate["lanes"]["workers"],
                          "basis": estimate["basis"], "rates": estimate["rates"]})
        print(f"{work.name} {label}: plan estimated {estimate['seconds']:.1f} s "
              f"({estimate['basis']['kind']}), the run took {child['seconds']:.1f} s "
              f"({window:.1f} s in the ledger): estimate / actual = "
              f"{ESTIMATES[-1]['ratio']:.2f}", flush=True)
    return children[0]


def measure(launcher: Launcher, case: str, tool: str, setting: Setting, source: Dovecot,
            accounts: Accounts, scratch: Path, out: Path, timeout: float,
            round_: int = 1, rounds: int = 1) -> Measure:
    """One copy by one tool to a fresh target, then the check by count and size; with
    several rounds, each run has its own folder (``...-r2``)."""
    label = f"{case}-{setting.name}-{tool}" + (f"-r{round_}" if rounds > 1 else "")
    work = out / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    targets = {t: TARGET_SECRET for _, t in accounts.pairs}
    target = start_dovecot(scratch / f"target-{label}", targets)
    # What the seeding and the run before left to write back to disk is written now, not
    # during this run (where it took the target's fsyncs up to twice as long).
    os.sync()
    try:
        reach_source, reach_target = setting.reach(source), setting.reach(target)
        if tool.startswith("bascule"):
            options = dict(re.findall(r"-([wc])(\d+)", tool))
            child = bascule(launcher, reach_source, reach_target, accounts, work, timeout,
                            int(options["w"]) if "w" in options else None,
                            int(options["c"]) if "c" in options else None)
        else:
            mode, _, lanes = tool.partition("-l")
            child = ceiling(launcher, mode, reach_source, reach_target, accounts, work, timeout,
                            int(lanes) if lanes else LANES)
        landed = server_totals(target, targets)
    finally:
        setting.close()
        target.stop()
        target_log = target.log
        (work / "target-dovecot.log").write_text(target_log, encoding="utf-8")
        shutil.rmtree(scratch / f"target-{label}", ignore_errors=True)
    code = int(child["exit_code"])
    problem = None
    if code != 0:
        problem = f"exit code {code}, see {work / 'tool.log'}"
    elif landed != (accounts.messages, accounts.bytes):
        problem = (f"target holds {landed[0]} messages / {landed[1]} bytes, "
                   f"source {accounts.messages} / {accounts.bytes}")
    if problem:
        print(f"FAILED {label}: {problem}", file=sys.stderr, flush=True)
    if LOCK_TIMEOUT.search(target_log):
        print(f"{label}: the target timed out waiting for a lock (see {work}/target-dovecot.log)",
              flush=True)
    return Measure(case, setting.name, tool, len(accounts.pairs), accounts.messages,
                   accounts.bytes, child["seconds"], child["peak_rss_mb"], code,
                   child["cpu_seconds"], child["machine_busy"],
                   len(LOCK_TIMEOUT.findall(target_log)), child["machine_cpu_seconds"], problem,
                   round_)


# Report

def medians(measures: list[Measure]) -> list[tuple[Measure, list[float]]]:
    """Per case, setting and tool, in the order first run: the run whose time is the median
    of its rounds (the lower of the two middle ones for an even count), with every round's
    seconds. A failed round stands for the whole (it is shown, not hidden by the others)."""
    groups: dict[tuple[str, str, str], list[Measure]] = {}
    for m in measures:
        groups.setdefault((m.case, m.setting, m.tool), []).append(m)
    chosen = []
    for runs in groups.values():
        failed = [m for m in runs if m.problem]
        ranked = sorted(runs, key=lambda m: m.seconds)
        pick = failed[0] if failed else ranked[(len(ranked) - 1) // 2]
        chosen.append((pick, [m.seconds for m in runs]))
    return chosen


def row(m: Measure, ratios: tuple[str, str] = ("", ""), seconds: Sequence[float] = ()) -> str:
    speed = ("failed", "") if m.problem else (f"{m.seconds:.1f}", f"{m.msgs_per_s:.0f}")
    rounds = " ".join(f"{s:.1f}" for s in seconds) if len(seconds) > 1 else ""
    return (f"| {m.case} | {m.setting} | {m.tool} | {m.accounts} | {m.messages} | "
            f"{m.bytes / MB:.0f} | {speed[0]} | {rounds} | {m.cpu_seconds:.1f} | "
            f"{m.machine_busy:.0%} | {m.machine_cpu_seconds:.1f} | {speed[1]} | "
            f"{m.peak_rss_mb:.0f} | {m.lock_timeouts} | {ratios[0]} | {ratios[1]} |")


def table(measures: list[Measure]) -> str:
    """One line per case, setting and tool: its median round (``seconds``), every round's
    time when there were several, and bascule's ratios to the ceilings' medians."""
    lines = [("| case | setting | tool | accounts | messages | MB | seconds | rounds (s) "
              "| CPU s | machine busy | machine CPU s | msgs/s | peak RSS (MB) "
              "| target lock timeouts | bascule / append ceiling "
              "| bascule / MULTIAPPEND ceiling |"),
             "| --- | --- | --- |" + " ---: |" * 13]
    chosen = medians(measures)
    by_key = {(m.case, m.setting, m.tool): m for m, _ in chosen}
    for m, seconds in chosen:
        ratios = []
        for mode in ("append", "multiappend"):
            ceil = by_key.get((m.case, m.setting, mode))
            ok = m.tool.startswith("bascule") and ceil and not ceil.problem and not m.problem
            ratios.append(f"{ceil.seconds / m.seconds:.2f}" if ok else "")
        lines.append(row(m, (ratios[0], ratios[1]), seconds))
    return "\n".join(lines)


def growth(measures: list[Measure]) -> list[str]:
    """How each tool's time grows from the smallest bulk folder to the largest."""
    lines = []
    bulk = [m for m, _ in medians(measures)
            if m.case.startswith("bulk-") and m.messages and not m.problem]
    for setting, tool in sorted({(m.setting, m.tool) for m in bulk}):
        runs = sorted((m for m in bulk if (m.setting, m.tool) == (setting, tool)),
                      key=lambda m: m.messages)
        if len(runs) >= 2:
            small, large = runs[0], runs[-1]
            lines.append(f"{setting}: {tool}, {large.messages} messages in one folder / "
                         f"{small.messages}: time x{large.seconds / small.seconds:.2f} "
                         f"for x{large.messages / small.messages:.2f} the messages")
    return lines


def beyond_fixed_lines(measures: list[Measure]) -> list[str]:
    """With an empty bulk account (``--bulk 0,...``): each tool's fixed cost of a run (its
    start, sign-in, listing and end, with nothing to copy), and bascule's time beyond it
    against the MULTIAPPEND copier's beyond its own: what each message costs, apart."""
    chosen = {(m.case, m.setting, m.tool): m for m, _ in medians(measures) if not m.problem}
    lines = []
    for (case, setting, tool), m in chosen.items():
        empty = chosen.get(("bulk-0", setting, tool))
        ceiling = chosen.get((case, setting, "multiappend"))
        ceiling_empty = chosen.get(("bulk-0", setting, "multiappend"))
        if (not case.startswith("bulk-") or not m.messages or not tool.startswith("bascule")
                or None in (empty, ceiling, ceiling_empty)):
            continue
        assert empty and ceiling and ceiling_empty
        mine, theirs = m.seconds - empty.seconds, ceiling.seconds - ceiling_empty.seconds
        # On a machine whose cores the servers share with the client, what the client's CPU
        # costs: the copier's time, and bascule's CPU beyond the copier's spread on every core.
        extra = (m.cpu_seconds - ceiling.cpu_seconds) / CORES
        lines.append(f"{setting}: {case}, {tool}: its CPU {m.cpu_seconds:.1f} s, the copier's "
                     f"{ceiling.cpu_seconds:.1f} s; the copier's time and the difference spread "
                     f"on {CORES} cores: {ceiling.seconds:.1f} + {extra:.1f} = "
                     f"{ceiling.seconds + extra:.1f} s, against {m.seconds:.1f} s measured")
        lines.append(f"{setting}: {case}, {tool}: {m.seconds:.1f} s of which {empty.seconds:.1f}"
                     f" s a run with nothing to copy; the copier {ceiling.seconds:.1f} s of which"
                     f" {ceiling_empty.seconds:.1f} s; beyond that: {theirs:.1f} / {mine:.1f} s"
                     f" = {theirs / mine:.2f}")
    return lines


ESTIMATE_WITHIN = 0.3
"""How far from its run a plan's estimate may land (issue 10: within ±30%)."""


def estimate_lines(estimates: Sequence[dict[str, Any]]) -> list[str]:
    """Per basis of the plans' estimates (probe, history), how many landed within
    ``ESTIMATE_WITHIN`` of their runs, and the range of estimate / run."""
    by_kind: dict[str, list[float]] = {}
    for found in estimates:
        by_kind.setdefault(found["basis"]["kind"], []).append(float(found["ratio"]))
    return [f"plan estimates from {kind}: {sum(abs(r - 1) <= ESTIMATE_WITHIN + 1e-9 for r in ratios)}"
            f" of {len(ratios)} within ±{ESTIMATE_WITHIN:.0%} of their runs (estimate / run "
            f"{min(ratios):.2f} to {max(ratios):.2f})" for kind, ratios in sorted(by_kind.items())]


def spread_lines(measures: list[Measure]) -> list[str]:
    """Per case, setting and tool run more than once: its quickest and slowest round, how
    much the same work on a fresh target varied within the invocation."""
    lines = []
    for m, seconds in medians(measures):
        if len(seconds) > 1 and not m.problem:
            lines.append(f"{m.setting}: {m.case}, {m.tool}: rounds {min(seconds):.1f} to "
                         f"{max(seconds):.1f} s (slowest / quickest "
                         f"{max(seconds) / min(seconds):.2f})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="shaped,users",
                        help="any of shaped, users, bulk (comma-separated)")
    parser.add_argument("--bulk", default="8000,40000",
                        help="bulk case: messages in the one folder, one account per size "
                        "(0: an empty folder, each tool's fixed cost of a run)")
    parser.add_argument("--settings", default="direct,wan")
    parser.add_argument("--tools", default="append,multiappend,bascule",
                        help="which to run of: append, multiappend, bascule; multiappend-l16 is "
                        "that ceiling with 16 lanes (4 without), bascule-w16 is bascule with "
                        "workers = 16 in its batch, bascule-c8 with the target's connections = 8")
    parser.add_argument("--messages", type=int, default=1200,
                        help="shaped case: messages in all (small folders stay small)")
    parser.add_argument("--users", type=int, default=100, help="users case: accounts")
    parser.add_argument("--per-user", type=int, default=30, help="users case: messages each")
    parser.add_argument("--no-one-user", action="store_true",
                        help="users case: skip bascule on one account holding every message")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added each way (wan)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/shaped"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="per child, seconds")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every case, setting and tool this many times, alternated "
                        "(all of them once, then again); the tables give each one's median")
    args = parser.parse_args()
    cases, tools = args.cases.split(","), args.tools.split(",")
    launcher = Launcher()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bascule-shaped-"))
    shaped = {SHAPED_USER + DOMAIN: shaped_folders(args.messages, args.seed)}
    many = {f"agent-{i:03d}{DOMAIN}": user_folders(args.per_user, args.seed * 100_000 + i)
            for i in range(args.users)}
    # The one account holds every agent's messages, folder by folder, in the same folders.
    one_folders = [ShapedFolder(folder.path, sum(f[k].count for f in many.values()), 0)
                   for k, folder in enumerate(user_folders(args.per_user, 0))]
    one_contents = [(folder, everyone_in(many, k)) for k, folder in enumerate(one_folders)]
    bulk = {f"gros-{size}{DOMAIN}": [bulk_folder(size, args.seed * 7 + size)]
            for size in map(int, args.bulk.split(","))}
    accounts: dict[str, list[ShapedFolder]] = {}
    if "shaped" in cases:
        accounts |= shaped
    if "users" in cases:
        accounts |= many | {ONE_USER + DOMAIN: one_folders}
    if "bulk" in cases:
        accounts |= bulk
    source = start_dovecot(scratch / "source", dict.fromkeys(accounts, SOURCE_SECRET))
    measures: list[Measure] = []
    load_before = os.getloadavg()
    try:
        started = time.monotonic()
        seed_accounts(source, accounts, {ONE_USER + DOMAIN: one_contents})
        warm(source, accounts)
        runs: list[tuple[str, str, Accounts]] = []
        for case, users in (("shaped", list(shaped)), ("users", list(many)),
                            ("users-one", [ONE_USER + DOMAIN]),
                            *((f"bulk-{user.split('@')[0].split('-')[1]}", [user])
                              for user in bulk)):
            if case.split("-")[0] not in cases or (case == "users-one" and args.no_one_user):
                continue
            held = server_totals(source, users)
            pairs = tuple((u, u.split("@")[0]) for u in users)
            # Every tool moves the one account too: a ceiling's own "100 users / one user"
            # is the server's share of the per-user cost, which no client can hide.
            runs += [(case, tool, Accounts(pairs, *held)) for tool in tools]
            print(f"seeded {case}: {len(users)} account(s), {held[0]} messages, "
                  f"{held[1] / MB:.0f} MB", flush=True)
        print(f"seeding took {time.monotonic() - started:.0f} s", flush=True)
        for name in args.settings.split(","):
            setting = Setting(name, args.latency_ms / 1000)
            for round_ in range(1, args.rounds + 1):
                for case, tool, held in runs:
                    measures.append(measure(launcher, case, tool, setting, source, held,
                                            scratch, out, args.timeout, round_, args.rounds))
                    print(row(measures[-1]) + (f" round {round_}" if args.rounds > 1 else ""),
                          flush=True)
    finally:
        launcher.close()
        source.stop()
        (out / "source-dovecot.log").write_text(source.log, encoding="utf-8")
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.shaped", *sys.argv[1:]]),
        "machine": machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "seed": args.seed,
        "shaped_folders": [[list(f.path), f.count] for f in shaped[SHAPED_USER + DOMAIN]],
        "latency_ms_each_way": args.latency_ms,
        "lanes": LANES,
        "rounds": args.rounds,
        "multiappend_batch": {"messages": BATCH_MESSAGES, "bytes": BATCH_BYTES},
        "runs": [asdict(m) | {"msgs_per_s": m.msgs_per_s} for m in measures],
        "plan_estimates": ESTIMATES,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print()
    print(table(measures))
    middle = [m for m, _ in medians(measures)]
    for name in args.settings.split(","):
        for tool in tools:
            many_run = next((m for m in middle if (m.case, m.setting, m.tool)
                             == ("users", name, tool)), None)
            one_run = next((m for m in middle if (m.case, m.setting, m.tool)
                            == ("users-one", name, tool)), None)
            if many_run and one_run and not many_run.problem and not one_run.problem:
                print(f"{name}: {tool}, {many_run.accounts} users / one user with the same "
                      f"messages: {many_run.seconds:.1f} s / {one_run.seconds:.1f} s = "
                      f"{many_run.seconds / one_run.seconds:.2f}"
                      + (" (goal: 1.5 or less)" if tool.startswith("bascule") else ""))
        for m in middle:
            if m.case == "users" and m.setting == name and not m.problem:
                # What the machine's cores allow: the same CPU work spread on every core.
                print(f"{name}: {m.tool} on {m.accounts} users used {m.machine_cpu_seconds:.1f} "
                      f"s of the machine's CPU ({m.cpu_seconds:.1f} s its own): at least "
                      f"{m.machine_cpu_seconds / CORES:.1f} s on {CORES} cores, "
                      f"it took {m.seconds:.1f} s")
    for line in [*growth(measures), *beyond_fixed_lines(measures), *spread_lines(measures),
                 *estimate_lines(ESTIMATES)]:
        print(line)
    print(f"results: {out / 'results.json'}")
    if any(m.problem for m in measures):
        sys.exit(1)


if __name__ == "__main__":
    main()
