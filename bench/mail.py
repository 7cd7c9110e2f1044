"""Benchmark of mail migration: bascule against a pipelined baseline copier, Dovecot to Dovecot.

One invocation seeds a deterministic mailbox on a source Dovecot once, then for each
setting (``direct`` on loopback, ``wan`` through proxies adding a delay each way in front
of both servers) copies it to a fresh target twice: with the baseline copier
(``bench.baseline``, the target's practical ceiling) and with ``bascule run``. Each tool
runs as a child process; its wall time and peak RSS (``os.wait4``) are measured, and the
target must then hold as many messages and bytes as the source. A separate run moves a
mailbox holding one very large message to check bascule's peak memory.

    python -m bench.mail                      # 5,000 messages, direct and wan
    python -m bench.mail --repeat 3           # the median of three runs of each
    python -m bench.mail --quick              # 500 messages, a smoke run
"""

from __future__ import annotations

import argparse
import base64
import compileall
import json
import os
import platform
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from imapclient import IMAPClient

from bench.proxy import LatencyProxy
from tests.corpus import CorpusMessage, build_mailbox
from tests.dovecot import DOVECOT, Dovecot, start_dovecot

SOURCE_USER, SOURCE_SECRET = "agent@ville-exemple.fr", "source-secret"
TARGET_USER, TARGET_SECRET = "agent", "target-secret"
BIG_USER = "archives@ville-exemple.fr"
# Where the messages live on the source: most in the inbox, the rest in two folders.
FOLDERS = (("INBOX", 0.6), ("Dossiers/Urbanisme", 0.25), ("Dossiers/Budget", 0.15))
SEED_CONNECTIONS = 4
BASELINE_LANES = 4
MB = 1_000_000


@dataclass(frozen=True)
class Mailbox:
    """What an account holds, summed over its folders."""

    messages: int
    bytes: int


@dataclass(frozen=True)
class Measure:
    """One tool's copy of the mailbox in one setting."""

    tool: str
    setting: str
    messages: int
    bytes: int
    seconds: float
    peak_rss_mb: float
    exit_code: int
    problem: str | None = None
    delta_seconds: float | None = None
    """For bascule: a second run right after, with nothing changed at the source."""

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds


# Seeding (not measured)

def client(host: str, port: int, user: str, password: str) -> IMAPClient:
    imap = IMAPClient(host, port, ssl=False, timeout=300)
    imap.login(user, password)
    return imap


def placed_messages(count: int, seed: int) -> Iterator[tuple[str, CorpusMessage]]:
    bounds, total = [], 0.0
    for folder, share in FOLDERS:
        total += share
        bounds.append((round(total * count), folder))
    for index, message in enumerate(build_mailbox(count, seed)):
        yield next(folder for bound, folder in bounds if index < bound), message


def seed_mailbox(server: Dovecot, user: str, messages: Iterator[tuple[str, CorpusMessage]]
                 ) -> Mailbox:
    """APPEND the messages on a few connections, generating them as they are sent."""
    with client(server.host, server.port, user, server.users[user]) as imap:
        for folder, _ in FOLDERS:
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
    pending: queue.Queue[tuple[str, CorpusMessage] | None] = queue.Queue(64)
    errors: list[BaseException] = []

    def append_all() -> None:
        try:
            with client(server.host, server.port, user, server.users[user]) as imap:
                while (item := pending.get()) is not None:
                    folder, message = item
                    imap.append(folder, message.raw, flags=sorted(message.flags),
                                msg_time=message.internal_date)
        except Exception as error:  # noqa: BLE001 (re-raised by the main thread)
            errors.append(error)
            while pending.get() is not None:
                pass

    threads = [threading.Thread(target=append_all) for _ in range(SEED_CONNECTIONS)]
    for thread in threads:
        thread.start()
    count = size = 0
    for item in messages:
        pending.put(item)
        count, size = count + 1, size + len(item[1].raw)
    for _ in threads:
        pending.put(None)
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return Mailbox(count, size)


def big_mailbox(big_mb: int, seed: int) -> Iterator[tuple[str, CorpusMessage]]:
    """One message of ``big_mb`` MB (a base64 attachment) among a few ordinary ones."""
    rng = random.Random(seed)
    head = (b"From: Archives <archives@ville-exemple.fr>\r\nTo: agent@ville-exemple.fr\r\n"
            b"Subject: Plans du cadastre (archive complete)\r\n"
            b"Message-ID: <cadastre.%d@ville-exemple.fr>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/zip; name=cadastre.zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" % seed)
    payload = rng.randbytes(big_mb * MB * 3 // 4)
    body = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    del payload
    yield "INBOX", CorpusMessage(head + body, frozenset({"\\Seen"}),
                                 datetime(2023, 6, 1, 9, 30, tzinfo=UTC))
    del body
    for message in build_mailbox(20, seed + 1):
        yield "INBOX", message


def mailbox_of(host: str, port: int, user: str, password: str) -> Mailbox:
    """Messages and bytes in every selectable folder (STATUS MESSAGES SIZE)."""
    count = size = 0
    with client(host, port, user, password) as imap:
        for flags, _, name in imap.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            status = imap.folder_status(name, [b"MESSAGES", b"SIZE"])
            count += status[b"MESSAGES"]
            size += status[b"SIZE"]
    return Mailbox(count, size)


# Measured runs

PACKAGES = ("migrate", "connectors", "mappings", "reports", "bench")


class Launcher:
    """Starts the measured children from a small process of its own.

    A child's peak RSS as the kernel reports it includes the memory of the process that
    forked it (the high-water mark survives exec), and this process grows while it seeds
    the mailbox: the children are therefore forked by a launcher started before that.

    The project's modules are compiled first, as installing bascule does: where
    ``PYTHONDONTWRITEBYTECODE`` is set (it is on the machines these figures come from), an
    editable install is otherwise compiled again at every start, about 0.1 to 0.2 s of a
    run's start that no installed copy pays.
    """

    def __init__(self) -> None:
        root = Path(__file__).resolve().parent.parent
        for package in PACKAGES:
            compileall.compile_dir(str(root / package), quiet=1)
        self.process = subprocess.Popen([sys.executable, "-m", "bench.mail", "--launcher"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)

    def run(self, command: list[str], env: dict[str, str], cwd: Path, log: Path,
            timeout: float) -> tuple[float, float, int]:
        """Run a child to completion; return its wall seconds, peak RSS in MB, exit code."""
        reply = self.run_child(command, env, cwd, log, timeout)
        return reply["seconds"], reply["peak_rss_mb"], reply["exit_code"]

    def run_child(self, command: list[str], env: dict[str, str], cwd: Path, log: Path,
                  timeout: float) -> dict[str, float]:
        """Run a child to completion; return what ``run`` does, its CPU seconds (user +
        system, ``cpu_seconds``) and the share of the machine's cores busy meanwhile, with
        whatever ran beside it (``machine_busy``)."""
        assert self.process.stdin and self.process.stdout
        request = {"command": command, "env": env, "cwd": str(cwd), "log": str(log),
                   "timeout": timeout}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        self.process.wait()


def serve_launches() -> None:
    """The launcher's side: one JSON request per line in, one JSON reply per line out."""
    for line in sys.stdin:
        request = json.loads(line)
        with open(request["log"], "wb") as output:
            busy_before = machine_busy()
            started = time.monotonic()
            child = subprocess.Popen(request["command"], env=request["env"],
                                     cwd=request["cwd"], stdout=output,
                                     stderr=subprocess.STDOUT)
            killer = threading.Timer(request["timeout"], child.kill)
            killer.start()
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.monotonic() - started
            busy, total = (now - then for now, then in zip(machine_busy(), busy_before))
            killer.cancel()
            child.returncode = os.waitstatus_to_exitcode(status)
        print(json.dumps({"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
                          "exit_code": child.returncode,
                          "cpu_seconds": usage.ru_utime + usage.ru_stime,
                          "machine_busy": busy / total if total else 0.0,
                          "machine_cpu_seconds": busy / os.sysconf("SC_CLK_TCK")}),
              flush=True)


def machine_busy() -> tuple[int, int]:
    """The machine's busy and total CPU time so far, in ticks of every core (``/proc/stat``):
    what the child, the servers and the proxies used together, and the rest of the machine."""
    with open("/proc/stat", encoding="ascii") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks[:8]) - idle, sum(ticks[:8])


def baseline(launcher: Launcher, source: tuple[str, int], target: tuple[str, int],
             work: Path, timeout: float) -> tuple[float, float, int]:
    env = dict(os.environ, BASELINE_SOURCE_SECRET=SOURCE_SECRET,
               BASELINE_TARGET_SECRET=TARGET_SECRET)
    command = [sys.executable, "-m", "bench.baseline", f"{source[0]}:{source[1]}", SOURCE_USER,
               f"{target[0]}:{target[1]}", TARGET_USER, "--lanes", str(BASELINE_LANES)]
    return launcher.run(command, env, Path.cwd(), work / "baseline.log", timeout)


def bascule_command(source: tuple[str, int], target: tuple[str, int],
                    pairs: list[tuple[str, str]], work: Path, *,
                    secrets: tuple[str, str] = (SOURCE_SECRET, TARGET_SECRET),
                    workers: int | None = None, connections: int | None = None
                    ) -> tuple[list[str], dict[str, str]]:
    """``bascule run`` with the batch defaults a DSI would start from (``workers`` and the
    target's ``connections`` set only when given), one users-table line per (source, target)
    pair: the command and its environment (the secrets by reference)."""
    (work / "users.csv").write_text(
        "source,target,source_secret,target_secret\n" + "".join(
            f"{s},{t},env:BENCH_SOURCE_SECRET,env:BENCH_TARGET_SECRET\n" for s, t in pairs),
        encoding="utf-8")
    (work / "batch.toml").write_text(f"""name = "banc"
[source]
type = "imap"
host = "{source[0]}"
port = {source[1]}
security = "none"
[target]
type = "imap"
host = "{target[0]}"
port = {target[1]}
security = "none"
""" + (f"connections = {connections}\n" if connections else "") + """[mapping]
users = "users.csv"
[run]
work_dir = "work"
""" + (f"workers = {workers}\n" if workers else ""), encoding="utf-8")
    env = dict(os.environ, BENCH_SOURCE_SECRET=secrets[0], BENCH_TARGET_SECRET=secrets[1],
               BASCULE_LANG="en", PYTHONPATH=str(Path.cwd()))
    return [sys.executable, "-m", "migrate", "run", str(work / "batch.toml")], env


def bascule(launcher: Launcher, source: tuple[str, int], target: tuple[str, int],
            source_user: str, work: Path, timeout: float) -> tuple[float, float, int]:
    """``bascule run`` of the one mailbox."""
    command, env = bascule_command(source, target, [(source_user, TARGET_USER)], work)
    return launcher.run(command, env, work, work / "bascule.log", timeout)


class Setting:
    """Where the tools reach the servers: directly, or through latency proxies."""

    def __init__(self, name: str, delay: float) -> None:
        self.name = name
        self.delay = delay if name == "wan" else 0.0
        self._proxies: list[LatencyProxy] = []

    def reach(self, server: Dovecot) -> tuple[str, int]:
        if not self.delay:
            return server.host, server.port
        proxy = LatencyProxy(server.host, server.port, self.delay).start()
        self._proxies.append(proxy)
        return proxy.host, proxy.port

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.stop()
        self._proxies.clear()


def measure(launcher: Launcher, tool: str, setting: Setting, source: Dovecot, source_user: str,
            expected: Mailbox, scratch: Path, out: Path, timeout: float) -> Measure:
    """One copy by one tool to a fresh target, then the count check."""
    label = f"{tool}-{setting.name}" + ("" if source_user == SOURCE_USER else "-big")
    work = out / label
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    target = start_dovecot(scratch / f"target-{label}", {TARGET_USER: TARGET_SECRET})
    try:
        reach_source, reach_target = setting.reach(source), setting.reach(target)
        delta = None
        if tool == "baseline":
            seconds, rss, code = baseline(launcher, reach_source, reach_target, work, timeout)
        else:
            seconds, rss, code = bascule(launcher, reach_source, reach_target, source_user, work,
                                         timeout)
            if code == 0:
                delta, _, code = bascule(launcher, reach_source, reach_target, source_user, work,
                                         timeout)
        landed = mailbox_of(target.host, target.port, TARGET_USER, TARGET_SECRET)
    finally:
        setting.close()
        target.stop()
        shutil.rmtree(scratch / f"target-{label}", ignore_errors=True)
    problem = None
    if code != 0:
        problem = f"exit code {code}, see {work}/{tool}.log"
    elif landed != expected:
        problem = (f"target holds {landed.messages} messages / {landed.bytes} bytes, "
                   f"source {expected.messages} / {expected.bytes}")
    if problem:
        print(f"FAILED {label}: {problem}", file=sys.stderr, flush=True)
    return Measure(tool, setting.name, expected.messages, expected.bytes, seconds, rss, code,
                   problem, delta)


# Report

def machine() -> dict[str, str | int]:
    memory = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    dovecot = subprocess.run([DOVECOT, "--version"], check=False, capture_output=True,
                             text=True).stdout
    return {"nproc": os.cpu_count() or 0, "memory_mb": int(memory) // 1024, "cpu": cpu,
            "python": platform.python_version(), "dovecot": dovecot.strip(),
            "kernel": platform.release()}


def medians(measures: list[Measure]) -> list[Measure]:
    """Per setting and tool, the run of median duration, with the highest peak RSS of all.

    A failed run is shown rather than hidden by the others.
    """
    groups: dict[tuple[str, str], list[Measure]] = {}
    for m in measures:
        groups.setdefault((m.setting, m.tool), []).append(m)
    chosen = []
    for runs in groups.values():
        failed = [m for m in runs if m.problem]
        middle = statistics.median_low([m.seconds for m in runs])
        pick = failed[0] if failed else next(m for m in runs if m.seconds == middle)
        chosen.append(replace(pick, peak_rss_mb=max(m.peak_rss_mb for m in runs)))
    return chosen


def table(measures: list[Measure]) -> str:
    lines = ["| setting | tool | msgs/s | MB/s | seconds | peak RSS (MB) | bascule/baseline |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    ceiling = {m.setting: m for m in measures if m.tool == "baseline"}
    for m in measures:
        ratio = ""
        if m.tool == "bascule" and m.setting in ceiling and not m.problem:
            ratio = f"{m.msgs_per_s / ceiling[m.setting].msgs_per_s:.0%}"
        speed = ("failed", "", "") if m.problem else (
            f"{m.msgs_per_s:.0f}", f"{m.mb_per_s:.1f}", f"{m.seconds:.1f}")
        lines.append(f"| {m.setting} | {m.tool} | {speed[0]} | {speed[1]} | {speed[2]} | "
                     f"{m.peak_rss_mb:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency-ms", type=float, default=10.0, help="added each way (wan)")
    parser.add_argument("--big-mb", type=int, default=100, help="0 skips the memory check")
    parser.add_argument("--settings", default="direct,wan")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--timeout", type=float, default=3600.0, help="per child, seconds")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each tool per setting; the median is reported")
    parser.add_argument("--quick", action="store_true", help="500 messages, a 20 MB big one")
    parser.add_argument("--launcher", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.launcher:
        serve_launches()
        return
    launcher = Launcher()
    # What an empty Python child reports: the launcher's own share of every figure.
    floor_rss = launcher.run([sys.executable, "-c", "pass"], dict(os.environ), Path.cwd(),
                             Path(os.devnull), 60)[1]
    if args.quick:
        args.messages, args.big_mb = 500, min(args.big_mb, 20)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bascule-bench-"))
    source = start_dovecot(scratch / "source", {SOURCE_USER: SOURCE_SECRET,
                                                BIG_USER: SOURCE_SECRET})
    measures: list[Measure] = []
    memory: list[Measure] = []
    # Other work on the machine skews every figure: the load averages say how much there was.
    load_before = os.getloadavg()
    try:
        started = time.monotonic()
        seeded = seed_mailbox(source, SOURCE_USER, placed_messages(args.messages, args.seed))
        corpus = mailbox_of(source.host, source.port, SOURCE_USER, SOURCE_SECRET)
        if corpus.messages != seeded.messages:
            raise RuntimeError(f"seeded {seeded.messages} messages, source holds {corpus}")
        big = None
        if args.big_mb:
            seed_mailbox(source, BIG_USER, big_mailbox(args.big_mb, args.seed))
            big = mailbox_of(source.host, source.port, BIG_USER, SOURCE_SECRET)
        print(f"seeded {corpus.messages} messages, {corpus.bytes / MB:.0f} MB "
              f"in {time.monotonic() - started:.0f} s", flush=True)
        for name in args.settings.split(","):
            setting = Setting(name, args.latency_ms / 1000)
            # Alternating the tools spreads the machine's other load over both, and which
            # goes first alternates too: the first copy after seeding was sometimes much
            # faster than the next ones, which would otherwise always favour the baseline.
            for round_number in range(args.repeat):
                order = ("baseline", "bascule") if round_number % 2 == 0 else \
                    ("bascule", "baseline")
                for tool in order:
                    measures.append(measure(launcher, tool, setting, source, SOURCE_USER,
                                            corpus, scratch, out, args.timeout))
                    print(table(measures).splitlines()[-1], flush=True)
            if big is not None:
                memory.append(measure(launcher, "bascule", setting, source, BIG_USER, big,
                                      scratch, out, args.timeout))
    finally:
        launcher.close()
        source.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.mail", *sys.argv[1:]]),
        "machine": machine(),
        "load_average_before_after": [load_before, os.getloadavg()],
        "corpus": {"messages": corpus.messages, "bytes": corpus.bytes, "seed": args.seed,
                   "folders": dict(FOLDERS)},
        "latency_ms_each_way": args.latency_ms,
        "baseline_lanes": BASELINE_LANES,
        "repeat": args.repeat,
        "empty_child_rss_mb": floor_rss,
        "runs": [asdict(m) | {"msgs_per_s": m.msgs_per_s, "mb_per_s": m.mb_per_s}
                 for m in measures],
        "medians": [asdict(m) | {"msgs_per_s": m.msgs_per_s, "mb_per_s": m.mb_per_s}
                    for m in medians(measures)],
        "big_message": {"mb": args.big_mb, "runs": [asdict(m) for m in memory]},
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nmedian of {args.repeat} run(s) per tool and setting; goal: bascule at 60% or more")
    print(table(medians(measures)))
    for m in medians(measures):
        if m.delta_seconds is not None:
            print(f"bascule delta pass, nothing changed ({m.setting}): {m.delta_seconds:.1f} s, "
                  f"{100 * m.delta_seconds / m.seconds:.0f}% of the first pass")
    for m in memory:
        print(f"bascule with a {args.big_mb} MB message ({m.setting}): peak RSS "
              f"{m.peak_rss_mb:.0f} MB (goal: under 200)"
              + (f", FAILED: {m.problem}" if m.problem else ""))
    print(f"results: {out / 'results.json'}")
    if any(m.problem for m in measures + memory):
        sys.exit(1)


if __name__ == "__main__":
    main()
