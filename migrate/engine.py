"""The engine: turns a batch into work units, runs them with bounded concurrency, plans,
verifies and audits, and writes what ``reports`` makes of it. It knows no protocol (see
``migrate.endpoints``)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import BasculeError, ConnectError
from mappings.users import UserMap, UserMapping, UsersFileInvalid, load_users
from migrate.batch import (
    MAIL,
    Batch,
    batch_warnings,
    target_advice,
    target_refusals,
    unknown_target_logins,
)
from migrate.estimate import Lanes, PrincipalWork, estimate_plan
from migrate.ledger import Ledger, LedgerError, Unit
from migrate.lock import WorkFolderBusy, WorkFolderLock, current_holder
from migrate.mail import UnitProgress, UnitResult, path_of, shown
from migrate.sharing import EXPORTS, export_sharing
from migrate.units import RUNNERS, Bench, Planned, execute_unit, plan_units, text_of, unit_limit
from reports.audit import AuditReport
from reports.files import CsvStream, write_report
from reports.i18n import Number, Text
from reports.plan import PlanReport
from reports.rows import ENTRY_COLUMNS, reasons_of, unit_columns
from reports.run import RunReport
from reports.status import status_report
from reports.verify import ITEM_COLUMNS, ITEMS_REPORT, VerifyTally

log = logging.getLogger("bascule")


EXIT_DONE = 0
EXIT_FAILED = 1
"""Some items failed; each is in the report, and the next run tries it again."""
EXIT_INPUT = 2
"""Bad input or a place bascule cannot work in: the batch, the users table, a secret, the
work folder, the ledger, another command holding the work folder."""
EXIT_STOPPED = 75
"""Stopped before the end for a reason outside the batch (a server down, the disk full):
nothing is lost, run again once the reason is gone."""
EXIT_SIGNALLED = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Stopped by the user: nothing is lost, run again to go on."""

SERVER_DOWN_AFTER = 3
"""Units (or principals) failing in a row because a server is down stop the run."""
GRACE = 10.0
"""Seconds given to messages in flight once a stop is asked for; after that they are left
in flight (the next run looks for them on the target) and the run ends."""
LOCKING_COMMANDS = ("run", "plan", "verify")


class InputError(Exception):
    """Bad input: the batch, the users table, a secret, the work folder. Exit code 2."""

    def __init__(self, problems: list[Text]) -> None:
        super().__init__("; ".join(p.en for p in problems))
        self.problems = problems


@dataclass
class Outcome:
    """What a command did: its report files, its summary and its exit code."""

    json_path: Path
    csv_path: Path
    summary: dict[str, Any]
    exit_code: int
    problems: list[Text] = field(default_factory=list)
    warnings: list[Text] = field(default_factory=list)
    stopped: Text | None = None
    """Why the command stopped before its end, if it did."""


def ledger_text(error: LedgerError) -> Text:
    """What a person reads when the ledger cannot be used."""
    if error.kind == "damaged":
        if error.backup is not None:
            return Text.of("ledger_damaged_backup", location=error.location,
                           backup=str(error.backup), detail=error.detail)
        return Text.of("ledger_damaged", location=error.location, detail=error.detail)
    return Text.of(f"ledger_{error.kind}", location=error.location, detail=error.detail)


def ledger_exit(error: LedgerError) -> int:
    """A full disk stops a command that can go on later; the rest needs the user first."""
    return EXIT_STOPPED if error.kind == "disk_full" else EXIT_INPUT


def dealt(chains: list[list[Unit]], jobs: int) -> list[list[Unit]]:
    """A principal's chains dealt round-robin to at most ``jobs`` jobs, each run one unit
    after another: its first chains (Inbox, Archive, Sent) land in different jobs."""
    hands: list[list[Unit]] = [[] for _ in range(min(jobs, len(chains)))]
    for index, chain in enumerate(chains):
        hands[index % len(hands)].extend(chain)
    return hands


class ServerHealth:
    """Whole units failing one after another because a server is down (it refuses
    connections, does not greet, stopped answering), counted per server: past a few, the run
    stops instead of paying a timeout per remaining unit. Any unit that ends well starts the
    counts again."""

    def __init__(self, limit: int = SERVER_DOWN_AFTER) -> None:
        self.limit = limit
        self._counts: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def failed(self, error: BaseException) -> bool:
        """Count a failure; whether the run must stop."""
        if not (isinstance(error, ConnectError) and error.server_down):
            return False
        with self._lock:
            self._counts[error.where] += 1
            return self._counts[error.where] >= self.limit

    def succeeded(self) -> None:
        with self._lock:
            self._counts.clear()


class Engine:
    """One batch: its users, its ledger, its reports.

    ``command`` names what the engine is built for: ``run``, ``plan`` and ``verify`` hold
    the work folder's lock from here to ``close``. ``stop`` is set when the command must
    end early (a signal, a server down, the ledger failing): no unit starts after it, and
    units send nothing more."""

    def __init__(self, batch: Batch, users: list[str] | None = None,
                 command: str = "status", started: float | None = None) -> None:
        """``started``: when the command started (``time.monotonic``), if before now."""
        self.batch = batch
        self.command = command
        self.started = started if started is not None else time.monotonic()
        self.user_map = self._load_users()
        self.users = self._select(users)
        self.notices: list[Text] = batch_warnings(batch) + [
            Text.of(w.code, **w.params) for w in self.user_map.secret_warnings()
        ] + unknown_target_logins(batch, {user.target for user in self.user_map})
        self.stop = threading.Event()
        self.stopped: Text | None = None
        self.signal: int | None = None
        self._health = ServerHealth()
        self._lock: WorkFolderLock | None = None
        self._prepare_work_dir()
        if command in LOCKING_COMMANDS:
            self._take_lock()
        try:
            self.ledger = (
                Ledger(batch.run.ledger, batch.ledger_password())
                if batch.run.ledger else Ledger.in_folder(batch.work_dir)
            )
            if self._lock is not None and self.ledger.close_dead_runs():
                self.notices.append(Text.of("dead_run_closed"))
        except BaseException:
            self._release()
            raise
        self.bench = Bench(batch, self.ledger, self.user_map, self.stop)
        self.connectors = self.bench.connectors
        self._account_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def close(self) -> None:
        try:
            self.bench.close()
            self.ledger.close()
        finally:
            self._release()

    def request_stop(self, signum: int) -> None:
        """A signal asked the command to stop: finish what is in flight, start nothing."""
        self.signal = signum
        self._halt(Text.of("stopped_by_signal", signal=signal.Signals(signum).name))

    def _halt(self, reason: Text) -> None:
        if not self.stop.is_set():
            self.stopped = reason
            self.stop.set()
            log.warning("stopping: %s", reason.en)

    def _prepare_work_dir(self) -> None:
        """The work folder, made private (it will hold the ledger and the reports, which
        name every mailbox), or a clear refusal."""
        folder = self.batch.work_dir
        try:
            if folder.exists() and not folder.is_dir():
                raise InputError([Text.of("work_dir_not_folder", path=str(folder))])
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise InputError([Text.of("work_dir_unusable", path=str(folder),
                                      detail=error.strerror or str(error))]) from error
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError([Text.of("work_dir_unusable", path=str(folder),
                                      detail=os.strerror(errno.EACCES))])

    def _take_lock(self) -> None:
        lock = WorkFolderLock(self.batch.work_dir, self.command)
        try:
            previous = lock.acquire()
        except WorkFolderBusy as busy:
            holder = busy.holder
            raise InputError([Text.of(
                "work_dir_busy", path=str(busy.folder), command=holder.command if holder else "?",
                host=holder.host if holder else "?", pid=holder.pid if holder else "?",
                started=holder.started_at if holder else "?")]) from None
        except OSError as error:
            raise InputError([Text.of("work_dir_unusable", path=str(self.batch.work_dir),
                                      detail=error.strerror or str(error))]) from error
        self._lock = lock
        if previous is not None:
            self.notices.append(Text.of(
                "lock_taken_over", command=previous.command, host=previous.host,
                pid=previous.pid, started=previous.started_at))

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _load_users(self) -> UserMap:
        try:
            return load_users(self.batch.resolve(self.batch.mapping.users))
        except UsersFileInvalid as error:
            raise InputError([Text.of(e.code, **e.params) for e in error.errors])

    def _select(self, names: list[str] | None) -> list[UserMapping]:
        if not names:
            return list(self.user_map)
        chosen = []
        for name in names:
            user = self.user_map.lookup(name)
            if user is None:
                raise InputError([Text.of("cli_unknown_user", user=name)])
            chosen.append(user)
        return chosen

    def _unmapped(self) -> list[Text]:
        present = self.connectors.local_principals()
        if present is None:
            return []
        return [Text.of("unmapped_user", user=name) for name in present
                if self.user_map.lookup(name) is None]

    def _needs_target(self) -> list[Text]:
        """Mail needs ``[target]``; the other workloads have a target whatever the batch
        says (their former folder, when ``[targets.<workload>]`` is not there)."""
        if MAIL not in self.batch.workloads or self.batch.target is not None:
            return []
        return [Text.of("no_target")]

    def _principals(self, workload: str) -> list[UserMapping]:
        """The users a workload applies to, as the source says (a SharePoint site has only
        files)."""
        return [u for u in self.users if self.connectors.serves(u, workload)]

    def _source_refusal(self) -> list[Text]:
        """Why the source refuses the batch as a whole (sign-in, consent), before any item."""
        mailboxes = self._principals(MAIL)
        try:
            self.connectors.check_source(mailboxes[0].source if mailboxes else None)
        except BasculeError as error:
            return [text_of(error)]
        return []

    def _slots(self, unit: Unit) -> threading.BoundedSemaphore:
        """Units of one account running at once, as its limits say."""
        key, size = unit_limit(unit)
        with self._slots_lock:
            if key not in self._account_slots:
                self._account_slots[key] = threading.BoundedSemaphore(size)
            return self._account_slots[key]

    # plan
    def plan(self) -> Outcome:
        """What a run would do, and how long it would take (``migrate.estimate``: from the
        ledger's last runs, else from what this plan timed of its own round trips), its
        own start until here standing for the run's."""
        start = time.monotonic() - self.started
        known: dict[tuple[str, str], dict[str, Unit]] = defaultdict(dict)
        for unit in self.ledger.all_units():
            known[(unit.principal, unit.workload)][unit.container] = unit
        report = PlanReport(self._needs_target() + target_refusals(self.batch)
                            + self._unmapped() + self._source_refusal(), list(self.notices))
        works: dict[str, PrincipalWork] = {}

        def plan_one(user: UserMapping, workload: str) -> Any:
            if self.stop.is_set():
                return None
            totals: Counter[str] = Counter()
            try:
                rows, said = RUNNERS[workload].plan(
                    self.bench, user, workload, known[(user.source, workload)], totals)
            except BasculeError as error:
                return error
            return rows, said, totals

        # Principals are planned ``workers`` at a time (their sign-ins and listings are
        # round trips), and reported in the users table's order; a principal's folders are
        # listed over as many sources as its run would give its units.
        self.bench.plan_lanes = Lanes(self.batch.run.workers, self.bench.account_slots()
                                      ).per_principal(len(self._principals(MAIL)))
        with ThreadPoolExecutor(max_workers=self.batch.run.workers) as pool:
            jobs = [(user, pool.submit(plan_one, user, workload))
                    for workload in self.batch.workloads for user in self._principals(workload)]
            for user, job in jobs:
                planned = job.result()
                if planned is None:
                    continue
                if isinstance(planned, BasculeError):
                    report.refused(user, text_of(planned))
                    continue
                rows, said, totals = planned
                for key, value in totals.items():
                    report.totals[key] = report.totals.get(key, 0) + value
                report.add(rows, said)
                work = works.setdefault(user.source, PrincipalWork(user.source, user.target))
                work.units += [(row["to_copy"], row["to_copy_bytes"]) for row in rows
                               if "to_copy_bytes" in row and not row.get("settled")]
        estimate = estimate_plan(self.ledger, self.bench.probe, list(works.values()),
                                 Lanes(self.batch.run.workers, self.bench.account_slots()),
                                 start)
        report.estimated(estimate.document(), estimate.basis_text())
        users = len(self.users)
        json_path, csv_path = self._write(
            "plan", report.document(self.batch.name, users, self.stopped), report.rows)
        code = self._stopped_exit() or (EXIT_INPUT if report.errors else EXIT_DONE)
        return Outcome(json_path, csv_path, report.summary(users), code, report.errors,
                       report.distinct_warnings(), self.stopped)

    # run
    def run(self, progress: ProgressFactory | None = None) -> Outcome:
        problems = (self._needs_target() + target_refusals(self.batch) + self._unmapped()
                    + self._source_refusal())
        if problems:
            raise InputError(problems)
        self.ledger.check_and_back_up()
        run_id = self.ledger.start_run(self.batch.name, "run")
        report = RunReport()
        tracker = progress or ProgressFactory()
        pool = ThreadPoolExecutor(max_workers=self.batch.run.workers)
        try:
            self._wait(self._submit_units(pool, run_id, tracker, report))
        finally:
            # Past the grace period, units still sending are left behind: the ledger holds
            # their messages in flight, and the next run looks for them first.
            pool.shutdown(wait=not self.stop.is_set(), cancel_futures=True)
            tracker.close()
        for workload in EXPORTS:
            if self.batch.mapping.sharing and workload in self.batch.workloads \
                    and not self.stop.is_set():
                report.planned(export_sharing(self.bench, workload, self._principals(workload),
                                              self.batch.work_dir, self.batch.run.workers), 0)
        status = report.status(signalled=self.signal is not None,
                               stopped=self.stopped is not None)
        self.ledger.end_run(run_id, status, report.totals)
        document = report.document(self.batch.name, run_id, status, self.stopped, self.notices)
        json_path, csv_path = self._write("run", document, report.entries())
        code = self._stopped_exit() or (EXIT_FAILED if status == "failed" else EXIT_DONE)
        return Outcome(json_path, csv_path, report.totals, code, warnings=list(self.notices),
                       stopped=self.stopped)

    def _write(self, kind: str, document: dict[str, Any], rows: list[dict[str, Any]]
               ) -> tuple[Path, Path]:
        """The command's report in the work folder: its JSON and its CSV."""
        return write_report(self.batch.work_dir, kind, document, rows, ENTRY_COLUMNS)

    def _stopped_exit(self) -> int | None:
        if self.signal is not None:
            return EXIT_SIGNALLED.get(self.signal, 128 + self.signal)
        if self.stopped is not None:
            return EXIT_STOPPED
        return None

    def _submit_units(self, pool: ThreadPoolExecutor, run_id: int, tracker: ProgressFactory,
                      report: RunReport) -> list[Future[None]]:
        """Every unit of the batch, planned principal by principal into the ledger and
        submitted as soon as its principal's are. A chain's units run one after another, in
        planned order; a principal's chains are dealt to as many jobs as it may run units
        at once (``Lanes.per_principal``): all its slots for a few principals, one job
        (one login) each when principals outnumber the workers."""
        futures = []
        workers = self.batch.run.workers
        for workload in self.batch.workloads:
            users = self._principals(workload)
            lanes = Lanes(workers, self.bench.account_slots()).per_principal(len(users))
            for user, decided_units in self._planned_ahead(pool, users, workload, run_id):
                if decided_units is None:
                    continue
                if isinstance(decided_units, BasculeError):
                    self._principal_error(user, decided_units, report)
                    continue
                units, planned = decided_units
                report.planned(planned.rows, planned.skipped)
                for unit in planned.settled:
                    self._report_settled(unit, report)
                chains: dict[str, list[Unit]] = {}
                for unit in sorted(units, key=lambda u: (u.spec or {}).get("position", 0)):
                    chains.setdefault(unit.chain or str(unit.id), []).append(unit)
                futures += [pool.submit(self._run_chain, job, tracker, report)
                            for job in dealt(list(chains.values()), lanes)]
        return futures

    def _planned_ahead(self, pool: ThreadPoolExecutor, users: list[UserMapping], workload: str,
                       run_id: int) -> Iterator[tuple[UserMapping, Any]]:
        """Each principal's planned units (or its error), in order, planned on the pool a
        few principals ahead, not all first: a principal's units then start while its
        logged-in pair is still idle."""
        waiting = iter(users)
        planning: deque[tuple[UserMapping, Future[Any]]] = deque()

        def plan_next() -> None:
            user = next(waiting, None)
            if user is not None:
                planning.append((user, pool.submit(self._units_or_error, user, workload,
                                                   run_id)))

        for _ in range(self.batch.run.workers):
            plan_next()
        while planning:
            user, future = planning.popleft()
            decided = future.result()
            plan_next()
            yield user, decided

    def _units_or_error(self, user: UserMapping, workload: str, run_id: int
                        ) -> tuple[list[Unit], Planned] | BasculeError | None:
        if self.stop.is_set():
            return None
        try:
            return plan_units(self.bench, user, workload, run_id)
        except BasculeError as error:
            return error

    def _wait(self, futures: list[Future[None]]) -> None:
        """Until every job ends, or, once a stop is asked for, until the grace period ends."""
        pending = set(futures)
        deadline: float | None = None
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                if not future.cancelled():
                    future.result()
            if self.stop.is_set():
                deadline = deadline or time.monotonic() + GRACE
                if time.monotonic() > deadline:
                    log.warning("%d units still sending after %.0f s: left in flight",
                                len(pending), GRACE)
                    return

    def _principal_error(self, user: UserMapping, error: BasculeError, report: RunReport) -> None:
        text = text_of(error)
        report.principal_failed(user, text)
        log.error("principal=%s error=%s", user.source, text.en)
        self._count_failure(error)

    def _count_failure(self, error: BaseException) -> None:
        if isinstance(error, ConnectError) and error.server_down:
            # Connections kept for reuse may hang on the same server: the next units open
            # new ones, which a silent server refuses within the greeting's 10 s rather
            # than a whole timeout each.
            self.bench.drop_idle()
        if self._health.failed(error):
            assert isinstance(error, ConnectError)
            self._halt(Text.of("server_down", where=error.where or "?",
                               count=self._health.limit, detail=error.detail))

    def _report_settled(self, unit: Unit, report: RunReport) -> None:
        """A unit the planner found with nothing to do: in the report as if it had run."""
        base, action, reasons = self._report_columns(unit)
        report.add({**base, "settled": True}, action, reasons, UnitResult())

    def _report_columns(self, unit: Unit) -> tuple[dict[str, Any], str, list[Text]]:
        """A unit's columns in the run's report, its action and the reasons for it."""
        spec = unit.spec or {}
        return (unit_columns(self.bench.user(unit.principal), spec),
                spec.get("action", "copy"),
                reasons_of(spec.get("reasons", []), spec.get("detail", "")))

    def _run_chain(self, chain: list[Unit], tracker: ProgressFactory, report: RunReport
                   ) -> None:
        for unit in chain:
            self._execute(unit, tracker, report)

    def _execute(self, unit: Unit, tracker: ProgressFactory, report: RunReport) -> None:
        """Run one unit within its account's slots; whatever it raises stays in it, but
        a server down or a ledger failing stops the run."""
        base, action, reasons = self._report_columns(unit)
        label = f"{unit.principal} {base['folder']}"
        result = UnitResult()
        with self._slots(unit):
            if self.stop.is_set():
                report.not_started(base)
                return
            with tracker.unit(label) as unit_progress:
                try:
                    execute_unit(self.bench, unit, unit_progress, result)
                except LedgerError as error:
                    self._halt(ledger_text(error))
                    report.add(base, "error", [ledger_text(error)], result, failed_unit=True)
                    return
                except Exception as error:  # noqa: BLE001 - any failure stays in this unit
                    text = text_of(error)
                    log.error("unit=%r error=%s", label, text.en)
                    self._count_failure(error)
                    report.add(base, "error", [text], result, failed_unit=True)
                    return
        self._health.succeeded()
        log.info("unit=%r copied=%d failed=%d flags=%d recovered=%d", label, result.copied,
                 result.failed, result.flag_updates, result.recovered)
        report.add(base, "interrupted" if result.interrupted else action, reasons, result)

    # verify
    def verify(self) -> Outcome:
        if self._needs_target():
            raise InputError(self._needs_target())
        selected = {u.source for u in self.users}
        units: dict[tuple[str, str], list[Unit]] = defaultdict(list)
        for unit in self.ledger.all_units():
            units[(unit.principal, unit.workload)].append(unit)
        with CsvStream(self.batch.work_dir, ITEMS_REPORT, ITEM_COLUMNS) as items:
            tally = VerifyTally(items)
            with ThreadPoolExecutor(max_workers=self.batch.run.workers) as pool:
                self._wait([pool.submit(self._verify, user, workload,
                                        units[(user.source, workload)], tally)
                            for workload in self.batch.workloads
                            for user in self._principals(workload)])
            document = tally.document(self.batch.name, len(selected), self.stopped)
            json_path, csv_path = self._write("verify", document, tally.rows)
        code = self._stopped_exit() or (EXIT_FAILED if tally.counts["mismatches"] else EXIT_DONE)
        return Outcome(json_path, csv_path, tally.summary(len(selected)), code,
                       stopped=self.stopped)

    def _verify(self, user: UserMapping, workload: str, units: list[Unit],
                tally: VerifyTally) -> None:
        if self.stop.is_set():
            return
        try:
            RUNNERS[workload].verify(self.bench, user, workload, units, tally)
        except BasculeError as error:
            tally.add_error(user, text_of(error))

    # audit
    def audit(self) -> Outcome:
        """What the source holds, per principal and container, read from listings only (no
        bodies, nothing written anywhere but the report): what a consultant needs before a
        bid, and what the plan will later compare with the target."""
        report = AuditReport(self._unmapped() + self._source_refusal(), len(self.users))
        for user in self.users:
            try:
                report.rows.extend(self._audit_user(user, report))
            except BasculeError as error:
                report.refused(user, text_of(error))
        json_path, csv_path = self._write("audit", report.document(self.batch.name), report.rows)
        return Outcome(json_path, csv_path, report.summary(), 1 if report.errors else 0,
                       report.errors)

    def _audit_user(self, user: UserMapping, report: AuditReport) -> list[dict[str, Any]]:
        """The principal's rows, kept apart until all its workloads are listed: a principal
        the source refuses part way shows as its error alone."""
        rows: list[dict[str, Any]] = []
        advice = {workload: target_advice(self.batch, workload)
                  for workload in self.batch.workloads}

        def count(workload: str, path: tuple[str, ...], items: int, size: int,
                  part: str | None = None) -> None:
            folder = f"{workload}:{shown(path)}"
            rows.append(report.container(user, folder, items, size, part))
            advised = advice.get(workload)
            if advised is not None and items > advised[0]:
                rows.append(report.advice(user, folder, Text.of(
                    "container_over_advice", count=items, advised=Number(advised[0]),
                    profile=advised[1])))

        for workload in self.batch.workloads:
            if self.connectors.serves(user, workload):
                rows.extend(RUNNERS[workload].audit(self.bench, user, workload, count))
        return rows

    # status
    def status(self) -> Outcome:
        """What the ledger holds. A run or unit marked running while no command holds the
        work folder died with its process: it is shown ``interrupted``."""
        alive = current_holder(self.batch.work_dir) is not None
        document, rows = status_report(
            self.batch.name, self.ledger.all_units(), self.ledger.failed_items(),
            self.ledger.last_run("run"), alive, folder_of=lambda key: shown(path_of(key)))
        json_path, csv_path = self._write("status", document, rows)
        totals = document["summary"]
        return Outcome(json_path, csv_path, totals, 1 if totals["failed_items"] else 0)


class ProgressFactory:
    """Progress of a run: silent by default; the CLI gives a terminal or log version."""

    @contextmanager
    def unit(self, label: str) -> Iterator[UnitProgress | None]:
        yield None

    def close(self) -> None:
        pass
