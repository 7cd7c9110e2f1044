"""A DSI's bad night at full size: each fault of issue 8's table, on a 6,018-message mailbox.

For every case a fresh target Dovecot receives the same seeded mailbox through ``bascule
run`` (a real process) while the fault happens; then the runs a DSI would make follow
(``run`` again once the fault is gone), and the target is checked twice: dumped by
imapclient alone (bytes, flags, dates: duplicates and gaps counted) and by ``bascule
verify``. What each case prints: the exit code and the time from the fault to the exit,
the runs needed, the duplicates and gaps left, verify's verdict.

    python -m bench.faults                    # every case, 6,018 messages
    python -m bench.faults --messages 1000 --cases stall,sigterm

Figures go to ``bench/out/faults.json``; the latest are in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.mail import FOLDERS, placed_messages, seed_mailbox
from tests import mailboxes
from tests.dovecot import Dovecot, start_dovecot
from tests.faults import (
    BasculeRun,
    FaultProxy,
    LedgerCounts,
    MountRefused,
    fill,
    mount_tmpfs,
    unmount,
)

ROOT = Path(__file__).resolve().parent.parent
USER, SOURCE_SECRET, TARGET_SECRET = "agent", "source-secret", "target-secret"
PATHS = {tuple(folder.split("/")): tuple(folder.split("/")) for folder, _ in FOLDERS}
CASES = ("killed", "resets3", "resets5", "stall", "together", "lost", "sigterm", "sigint",
         "diskfull")


@dataclass
class Case:
    """How one fault went."""

    name: str
    fault_exit: int | None = None
    seconds_to_exit: float | None = None
    message: str = ""
    runs_after: list[int] = field(default_factory=list)
    found_during: int = 0
    """Messages the run under fault found already on the target, by content (sends whose
    answer was lost), and did not send again."""
    found_after: int = 0
    """The same, for the last run after the fault."""
    duplicates: int = 0
    gaps: int = 0
    verify_exit: int | None = None
    verify_mismatches: int | None = None
    total_seconds: float = 0.0


class Night:
    """The source, seeded once, and what each case needs around it."""

    def __init__(self, folder: Path, messages: int, seed: int) -> None:
        self.folder = folder
        self.source = start_dovecot(folder / "source", {USER: SOURCE_SECRET})
        started = time.monotonic()
        held = seed_mailbox(self.source, USER, placed_messages(messages, seed))
        self.messages, self.bytes = held.messages, held.bytes
        print(f"seeded {held.messages} messages, {held.bytes // 1_000_000} MB in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        self.wanted = mailboxes.landed(mailboxes.contents(self.source, USER), PATHS)
        self.env = {**os.environ, "BASCULE_SRC": SOURCE_SECRET, "BASCULE_DST": TARGET_SECRET}

    def close(self) -> None:
        self.source.stop()

    def case(self, name: str) -> tuple[Path, Dovecot]:
        where = self.folder / name
        where.mkdir()
        target = start_dovecot(where / "target", {USER: TARGET_SECRET})
        mailboxes.write_users(where, [(USER, USER, "env:BASCULE_SRC", "env:BASCULE_DST")])
        return where, target

    def batch(self, where: Path, port: int, work: Path | None = None,
              timeout: float = 60) -> Path:
        path = where / "batch.toml"
        path.write_text(f"""
name = "nuit"
[source]
type = "imap"
host = "127.0.0.1"
port = {self.source.port}
security = "none"
[target]
type = "imap"
host = "127.0.0.1"
port = {port}
security = "none"
timeout = {timeout}
[run]
work_dir = "{work or where / 'work'}"
""", encoding="utf-8")
        return path

    def bascule(self, batch: Path, command: str = "run") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "migrate", command, str(batch)],
                              cwd=ROOT, env=self.env, capture_output=True, text=True,
                              check=False)

    def until_clean(self, batch: Path, case: Case, tries: int = 3) -> None:
        """Run again, as a DSI would, until a run ends well; note what the last one found
        already on the target."""
        for _ in range(tries):
            done = self.bascule(batch)
            case.runs_after.append(done.returncode)
            if done.returncode == 0:
                break
        case.found_after = found(batch)

    def check(self, batch: Path, target: Dovecot, case: Case) -> None:
        landed = mailboxes.contents(target, USER)
        for path, wanted in self.wanted.items():
            got = landed.get(path)
            for key, count in wanted.items():
                have = got[key] if got else 0
                case.gaps += max(0, count - have)
                case.duplicates += max(0, have - count)
        verify = self.bascule(batch, "verify")
        case.verify_exit = verify.returncode
        report = json.loads((batch.parent / "work" / "verify-latest.json").read_text()
                            if (batch.parent / "work" / "verify-latest.json").exists()
                            else "{}")
        case.verify_mismatches = report.get("summary", {}).get("mismatches")


def found(batch: Path) -> int:
    """What the latest run found on the target by content, from its report."""
    report = batch.parent / "work" / "run-latest.json"
    return json.loads(report.read_text())["summary"]["recovered"] if report.exists() else 0


def when_done(count: int) -> Callable[[LedgerCounts], bool]:
    return lambda ledger: ledger.done >= count


def last_line(text: str) -> str:
    """What the command said of how it ended: its stop reason, or else its summary."""
    lines = [line.strip(" -") for line in text.splitlines()
             if line.strip() and " INFO " not in line and not line.startswith("reports:")]
    said = [line for line in lines if "stopped" in line or "in use" in line
            or "full" in line] or lines
    return said[-1][:200] if said else ""


def run_case(night: Night, name: str) -> Case:
    """One case: the fault during a first run, then runs until one ends well, then checks."""
    case = Case(name)
    started = time.monotonic()
    where, target = night.case(name)
    proxy: FaultProxy | None = None
    mounted: Path | None = None
    try:
        if name in ("resets3", "resets5", "stall"):
            proxy = FaultProxy(target.host, target.port).start()
        work = None
        if name == "diskfull":
            mounted = mount_tmpfs(where / "disk", 32 << 20)
            work = mounted / "work"
            (where / "work").symlink_to(work)
        batch = night.batch(where, proxy.port if proxy else target.port, work)
        if name.startswith("resets"):
            times = int(name[-1])
            proxy.reset_after(night.bytes // (times + 1), "to_server", times=times)
            outcome = BasculeRun(batch, night.env).finish(timeout=1800)
            case.fault_exit, case.message = outcome.returncode, last_line(outcome.stdout)
            case.found_during = found(batch)
        elif name == "together":
            runs = [BasculeRun(batch, night.env), BasculeRun(batch, night.env)]
            refused, ran = sorted((r.finish(timeout=1800) for r in runs),
                                  key=lambda o: o.returncode == 0)
            case.fault_exit, case.message = refused.returncode, last_line(refused.stderr)
            case.runs_after.append(ran.returncode)
        else:
            run = BasculeRun(batch, night.env, work=work)
            signum = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT}.get(name, 0)
            # A seventh of the mailbox in, the fault comes (signal 0: nothing is sent).
            run.signal_when(signum, when_done(night.messages // 7), timeout=600)
            faulted = time.monotonic()
            if name == "killed":
                target.kill()
            elif name == "stall":
                proxy.stall()
            elif name == "diskfull":
                filler = fill(mounted, leave_free=0)
            outcome = run.finish(timeout=1800)
            if name != "lost":
                case.seconds_to_exit = round(time.monotonic() - faulted, 1)
            case.fault_exit = outcome.returncode
            case.message = last_line(outcome.stderr + outcome.stdout)
            case.found_during = found(batch)
            if name == "killed":
                target.restart()
            elif name == "stall":
                proxy.resume()
            elif name == "diskfull":
                filler.unlink()
            elif name == "lost":
                shutil.rmtree(where / "work")
        night.until_clean(batch, case)
        night.check(batch, target, case)
    finally:
        if proxy is not None:
            proxy.close()
        target.stop()
        if mounted is not None:
            unmount(mounted)
    case.total_seconds = round(time.monotonic() - started, 1)
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=6018)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "faults.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bascule-faults-") as scratch:
        folder = Path(scratch)
        folder.chmod(0o711)  # the mail user must reach the servers' folders
        night = Night(folder, args.messages, args.seed)
        cases = []
        try:
            for name in args.cases.split(","):
                try:
                    case = run_case(night, name)
                except MountRefused as refused:
                    print(f"{name}: skipped, {refused}", flush=True)
                    continue
                cases.append(case)
                print(json.dumps(asdict(case), ensure_ascii=False), flush=True)
        finally:
            night.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps([asdict(c) for c in cases], indent=2, ensure_ascii=False))
    print("| case | exit | seconds from the fault to the exit | found on the target then "
          "| runs after (exit) | found by the last | duplicates | gaps | verify |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for c in cases:
        print(f"| {c.name} | {c.fault_exit} | {c.seconds_to_exit or ''} | {c.found_during} | "
              f"{', '.join(map(str, c.runs_after))} | {c.found_after} | {c.duplicates} | "
              f"{c.gaps} | exit {c.verify_exit}, {c.verify_mismatches} mismatches |")
    for c in cases:
        print(f"- {c.name}: {c.message}")


if __name__ == "__main__":
    main()
