"""The engine: turns a batch into work units, runs them with bounded concurrency, plans,
verifies and reports. It knows no protocol (see ``migrate.endpoints``)."""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import (
    BasculeError,
    ConnectError,
    Container,
    ContainerRefused,
    SourceNote,
)
from connectors.protocols import (
    DocumentSource,
    MailSink,
    MailSource,
)
from mappings.folders import FolderDecision, FolderRules
from mappings.users import UserMap, UserMapping, UsersFileInvalid, load_users
from migrate.batch import Batch, batch_warnings
from migrate.compare import FAULTS, FolderCheck, compare_folder
from migrate.documents import DocumentUnit, plan_documents, verify_documents
from migrate.endpoints import Connectors
from migrate.ledger import Ledger, LedgerError, Unit
from migrate.lock import WorkFolderBusy, WorkFolderLock, current_holder
from migrate.mail import (
    WORKLOAD,
    Brakes,
    FolderPlan,
    MailUnit,
    UnitProgress,
    UnitResult,
    container_key,
    decide_folders,
    path_of,
    plan_folder,
    shown,
    size_limit,
    source_notes,
)
from reports.files import message_columns, write_report
from reports.i18n import Size, Text

log = logging.getLogger("bascule")

ENTRY_COLUMNS = [
    "principal", "target", "folder", "target_folder", "action", "messages", "bytes",
    "to_copy", "copied", "failed", "source_id", "target_ref", "code", "message_en",
    "message_fr",
]

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


def _text_of(error: Exception) -> Text:
    english, french = getattr(error, "message_en", None), getattr(error, "message_fr", None)
    if isinstance(english, str) and isinstance(french, str):
        detail = getattr(error, "error_code", "")
        prefix = f"{detail}: " if detail else ""
        return Text.both(getattr(error, "code", "error"), prefix + english, prefix + french)
    if isinstance(error, BasculeError):
        return Text.of(error.code, **{"detail": error.detail, **error.params})
    return Text.of("error", detail=f"{type(error).__name__}: {error}")


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
                 command: str = "status") -> None:
        self.batch = batch
        self.command = command
        self.user_map = self._load_users()
        self.users = self._select(users)
        self.rules = FolderRules(
            renames=batch.mail.renames, exclude=batch.mail.exclude,
            include_non_mail=batch.mail.include_non_mail,
        )
        self.notices: list[Text] = batch_warnings(batch) + [
            Text.of(w.code, **w.params) for w in self.user_map.secret_warnings()]
        self.stop = threading.Event()
        self.stopped: Text | None = None
        self.signal: int | None = None
        self._health = ServerHealth()
        self._full: dict[str, threading.Event] = defaultdict(threading.Event)
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
        self._account_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._idle: list[tuple[str, tuple[MailSource, MailSink]]] = []
        self._idle_lock = threading.Lock()
        self.connectors = Connectors(batch, self.user_map)

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        try:
            for _, pair in idle:
                _close_pair(pair)
            self.connectors.close()
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

    def _target_size_limit(self) -> int | None:
        sink = self.connectors.sink(WORKLOAD)
        return sink.largest_item(self.batch.target) if sink is not None else None

    def _needs_target(self) -> list[Text]:
        return [] if self.batch.target is not None else [Text.of("no_target")]

    def _principals(self, workload: str) -> list[UserMapping]:
        """The users a workload applies to, as the source says (a SharePoint site has only
        files)."""
        return [u for u in self.users if self.connectors.serves(u, workload)]

    def _source_refusal(self) -> list[Text]:
        """Why the source refuses the batch as a whole (sign-in, consent), before any item."""
        mailboxes = self._principals(WORKLOAD)
        try:
            self.connectors.check_source(mailboxes[0].source if mailboxes else None)
        except BasculeError as error:
            return [_text_of(error)]
        return []

    def _document_source(self, user: UserMapping, workload: str) -> closing[DocumentSource]:
        """The principal's calendars and contacts, or drives; closed when the block ends."""
        return closing(self.connectors.open_document_source(user, workload))

    @contextmanager
    def _endpoints(self, user: UserMapping) -> Iterator[tuple[MailSource, MailSink]]:
        """A logged-in source and sink for the principal, reused from one unit to the next:
        a login costs several round trips, which a delta pass over a WAN would pay per
        folder. A pair whose unit raised is closed, never reused."""
        pair = None
        with self._idle_lock:
            for index, (key, idle) in enumerate(self._idle):
                if key == user.source:
                    pair = idle
                    del self._idle[index]
                    break
        if pair is None:
            self.connectors.target_account(user, WORKLOAD)  # no target: said before a login
            source = self.connectors.open_source(user)
            try:
                pair = (source, self.connectors.open_sink(user))
            except BaseException:
                source.close()
                raise
        try:
            yield pair
        except BaseException:
            _close_pair(pair)
            raise
        with self._idle_lock:
            self._idle.append((user.source, pair))
            evicted = self._idle[:-IDLE_PAIRS] if len(self._idle) > IDLE_PAIRS else []
            del self._idle[:len(evicted)]
        for _, old in evicted:
            _close_pair(old)

    def _slots(self, user: UserMapping) -> threading.BoundedSemaphore:
        """Units of one principal running at once, within each server's connection limit."""
        with self._slots_lock:
            if user.source not in self._account_slots:
                size = min(self.connectors.account_slots(w) for w in self.batch.workloads)
                self._account_slots[user.source] = threading.BoundedSemaphore(size)
            return self._account_slots[user.source]

    def _brakes(self, user: UserMapping) -> Brakes:
        return Brakes(stop=self.stop, mailbox_full=self._full[user.source])

    # plan
    def plan(self) -> Outcome:
        units = self.ledger.all_units()
        self._known_units = {(u.principal, u.container): u for u in units
                             if u.workload == WORKLOAD}
        self._known_documents = {(u.principal, u.workload, u.container): u for u in units
                                 if u.workload != WORKLOAD}
        errors = self._needs_target() + self._unmapped() + self._source_refusal()
        warnings: list[Text] = list(self.notices)
        rows: list[dict[str, Any]] = [
            {"principal": "", "action": "error", **message_columns(e)} for e in errors
        ]
        totals = {"units": 0, "messages": 0, "bytes": 0, "to_copy": 0, "to_copy_bytes": 0}
        for user in self._principals(WORKLOAD) if WORKLOAD in self.batch.workloads else []:
            if self.stop.is_set():
                break
            try:
                with self._endpoints(user) as (source, sink):
                    folders = decide_folders(source, self.rules, sink.capabilities)
                    limit = size_limit(sink.capabilities.max_item_size,
                                       self._target_size_limit())
                    if not self.connectors.sink_capabilities(WORKLOAD).keeps_internal_date_offset:
                        warnings.append(Text.of("internal_date_offset_lost"))
                    for container, decision in folders:
                        rows.extend(self._plan_rows(user, source, container, decision, limit, totals))
                    rows.extend(self._unknown_on_target(user, sink, folders))
                    rows.extend(_note_rows(user, source_notes(source)))
            except BasculeError as error:
                errors.append(_text_of(error))
                rows.append(_error_row(user, errors[-1]))
        for workload in (w for w in self.batch.workloads if w != WORKLOAD):
            for user in self._principals(workload):
                if self.stop.is_set():
                    break
                try:
                    rows.extend(self._plan_documents(user, workload, totals))
                except BasculeError as error:
                    errors.append(_text_of(error))
                    rows.append(_error_row(user, errors[-1]))
        distinct = list({(w.code, w.en): w for w in warnings}.values())
        summary = {**totals, "errors": len(errors), "warnings": len(distinct),
                   "users": len(self.users)}
        document = {
            "batch": self.batch.name, "summary": summary, **self._ending(),
            "errors": [message_columns(e) for e in errors],
            "warnings": [message_columns(w) for w in distinct],
        }
        json_path, csv_path = write_report(self.batch.work_dir, "plan", document, rows, ENTRY_COLUMNS)
        code = self._stopped_exit() or (EXIT_INPUT if errors else EXIT_DONE)
        return Outcome(json_path, csv_path, summary, code, errors, distinct, self.stopped)

    def _unknown_on_target(self, user: UserMapping, sink: MailSink,
                           folders: list[tuple[Container, FolderDecision]]
                           ) -> list[dict[str, Any]]:
        """Target folders already holding messages the ledger does not account for (a lost
        ledger, users filing mail there): the run will match them by content."""
        rows = []
        targets = {d.target for _, d in folders if d.action != "skip" and d.target}
        for target in sorted(targets):
            try:
                native = sink.native_name(target)
            except ContainerRefused:
                continue
            unknown = sink.count(native) - self.ledger.claimed_count(user.source, native)
            if unknown > 0:
                rows.append({"principal": user.source, "target": user.target,
                             "target_folder": shown(target), "action": "note",
                             "messages": unknown,
                             **message_columns(Text.of("target_not_empty", count=unknown))})
        return rows

    def _plan_documents(self, user: UserMapping, workload: str, totals: dict[str, int]
                        ) -> list[dict[str, Any]]:
        rows = []
        with self._document_source(user, workload) as source:
            for container in source.document_containers(workload):
                unit = self._known_documents.get((user.source, workload,
                                                  container_key(container.path)))
                known = self.ledger.items_of(unit.id) if unit else {}
                items, size, to_copy, to_copy_size = plan_documents(source, container, known)
                for key, value in (("units", 1), ("messages", items), ("bytes", size),
                                   ("to_copy", to_copy), ("to_copy_bytes", to_copy_size)):
                    totals[key] += value
                rows.append({"principal": user.source, "target": user.target,
                             "folder": f"{workload}:{shown(container.path)}",
                             "target_folder": "/".join((user.target, workload, *container.path)),
                             "action": "copy", "messages": items, "bytes": size,
                             "to_copy": to_copy})
            rows.extend(_note_rows(user, source_notes(source)))
        return rows

    def _plan_rows(
        self, user: UserMapping, source: MailSource, container: Container,
        decision: FolderDecision, limit: int | None, totals: dict[str, int],
    ) -> list[dict[str, Any]]:
        base = {"principal": user.source, "target": user.target, "folder": shown(decision.source),
                "target_folder": shown(decision.target)}
        action, reasons = _decided(decision)
        if decision.action == "skip":
            return [{**base, "action": "skip", **_joined(reasons)}]
        unit = self._known_units.get((user.source, container_key(decision.source)))
        known = self.ledger.items_of(unit.id) if unit else {}
        plan = FolderPlan(container, decision)
        plan_folder(source, plan, known, limit)
        totals["units"] += 1
        totals["messages"] += plan.messages
        totals["bytes"] += plan.bytes
        totals["to_copy"] += plan.to_copy
        totals["to_copy_bytes"] += plan.to_copy_bytes
        rows = [{**base, "action": action, "messages": plan.messages, "bytes": plan.bytes,
                 "to_copy": plan.to_copy, **_joined(reasons)}]
        for ref in plan.too_big:
            text = Text.of("too_big_for_target", limit=Size(limit))
            rows.append({**base, "action": "too_big", "source_id": ref.source_id,
                         "bytes": ref.size, **message_columns(text)})
        return rows

    # run
    def run(self, progress: ProgressFactory | None = None) -> Outcome:
        problems = self._needs_target() + self._unmapped() + self._source_refusal()
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
        totals = report.totals
        if self.signal is not None or self.stopped is not None:
            status = "interrupted" if self.signal is not None else "stopped"
        elif totals["failed"] or totals["units_failed"] or totals["over_quota"]:
            status = "failed"
        else:
            status = "done"
        self.ledger.end_run(run_id, status, totals)
        document = {"batch": self.batch.name, "run_id": run_id, "status": status,
                    "summary": totals, **self._ending(),
                    "notices": [message_columns(n) for n in self.notices]}
        json_path, csv_path = write_report(self.batch.work_dir, "run", document,
                                           report.rows + report.quota_rows(), ENTRY_COLUMNS)
        code = self._stopped_exit() or (EXIT_FAILED if status == "failed" else EXIT_DONE)
        return Outcome(json_path, csv_path, totals, code, warnings=list(self.notices),
                       stopped=self.stopped)

    def _ending(self) -> dict[str, Any]:
        """How the command ended early, for its report."""
        if self.stopped is None:
            return {}
        return {"stopped": message_columns(self.stopped)}

    def _stopped_exit(self) -> int | None:
        if self.signal is not None:
            return EXIT_SIGNALLED.get(self.signal, 128 + self.signal)
        if self.stopped is not None:
            return EXIT_STOPPED
        return None

    def _submit_units(self, pool: ThreadPoolExecutor, run_id: int, tracker: ProgressFactory,
                      report: RunReport) -> list[Future[None]]:
        """Every unit of the batch, as jobs: a principal's folders landing in one target
        folder form one job and run one after another, so that what one of them finds on
        the target is known to the next."""
        futures = []
        mail_users = self._principals(WORKLOAD) if WORKLOAD in self.batch.workloads else []
        for user, decided in zip(mail_users, pool.map(self._folders_or_error, mail_users)):
            if decided is None:
                continue
            if isinstance(decided, BasculeError):
                self._principal_error(user, decided, report)
                continue
            folders, notes = decided
            report.rows.extend(_note_rows(user, notes))
            chains: dict[tuple[str, ...], list[tuple[Container, FolderDecision]]] = {}
            for container, decision in sorted(folders, key=_largest_first):
                if decision.action == "skip":
                    report.totals["skipped"] += 1
                    _, reasons = _decided(decision)
                    report.rows.append({"principal": user.source, "target": user.target,
                                        "folder": shown(decision.source), "action": "skip",
                                        **_joined(reasons)})
                    continue
                assert decision.target is not None
                chains.setdefault(decision.target, []).append((container, decision))
            futures += [pool.submit(self._run_chain, run_id, user, chain, tracker, report)
                        for chain in chains.values()]
        for workload in self.batch.workloads:
            if workload == WORKLOAD:
                continue
            for user in self._principals(workload):
                if self.stop.is_set():
                    break
                try:
                    containers = self._document_containers(user, workload)
                except BasculeError as error:
                    self._principal_error(user, error, report)
                    continue
                futures += [pool.submit(self._run_document_unit, run_id, user, workload,
                                        container, tracker, report)
                            for container in containers]
        return futures

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
        text = _text_of(error)
        with report.lock:
            report.rows.append(_error_row(user, text))
            report.totals["units_failed"] += 1
        log.error("principal=%s error=%s", user.source, text.en)
        self._count_failure(error)

    def _count_failure(self, error: BaseException) -> None:
        if isinstance(error, ConnectError) and error.server_down:
            # Connections kept for reuse may hang on the same server: the next units open
            # new ones, which a silent server refuses within the greeting's 10 s rather
            # than a whole timeout each.
            with self._idle_lock:
                idle, self._idle = self._idle, []
            for _, pair in idle:
                _close_pair(pair)
        if self._health.failed(error):
            assert isinstance(error, ConnectError)
            self._halt(Text.of("server_down", where=error.where or "?",
                               count=self._health.limit, detail=error.detail))

    def _document_containers(self, user: UserMapping, workload: str) -> list[Container]:
        with self._document_source(user, workload) as source:
            return source.document_containers(workload)

    def _folders_or_error(
        self, user: UserMapping
    ) -> tuple[list[tuple[Container, FolderDecision]], list[SourceNote]] | BasculeError | None:
        if self.stop.is_set():
            return None
        try:
            with self._endpoints(user) as (source, sink):
                return decide_folders(source, self.rules, sink.capabilities), source_notes(source)
        except BasculeError as error:
            return error

    def _run_chain(self, run_id: int, user: UserMapping,
                   chain: list[tuple[Container, FolderDecision]], tracker: ProgressFactory,
                   report: RunReport) -> None:
        for container, decision in chain:
            self._run_unit(run_id, user, container, decision, tracker, report)

    def _run_unit(
        self, run_id: int, user: UserMapping, container: Container, decision: FolderDecision,
        tracker: ProgressFactory, report: RunReport,
    ) -> None:
        assert decision.target is not None
        base = {"principal": user.source, "target": user.target, "folder": shown(decision.source),
                "target_folder": shown(decision.target)}

        def work(progress: UnitProgress | None, result: UnitResult) -> None:
            unit = self.ledger.unit(user.source, WORKLOAD, container_key(decision.source))
            self.ledger.update_unit(unit.id, last_run=run_id)
            with self._failing(unit), self._endpoints(user) as (source, sink):
                MailUnit(self.ledger, unit, source, sink, container, decision.target,
                         progress, self._target_size_limit(), self._brakes(user), result).run()

        self._execute(user, work, tracker, report, base, *_decided(decision))

    def _run_document_unit(
        self, run_id: int, user: UserMapping, workload: str, container: Container,
        tracker: ProgressFactory, report: RunReport,
    ) -> None:
        base = {"principal": user.source, "target": user.target,
                "folder": f"{workload}:{shown(container.path)}",
                "target_folder": "/".join((user.target, workload, *container.path))}

        def work(progress: UnitProgress | None, result: UnitResult) -> None:
            unit = self.ledger.unit(user.source, workload, container_key(container.path))
            self.ledger.update_unit(unit.id, last_run=run_id)
            sink = self.connectors.open_document_sink(user, workload)
            with self._failing(unit), self._document_source(user, workload) as source:
                DocumentUnit(self.ledger, unit, source, sink, container, container.path,
                             progress, self._brakes(user), result).run()

        self._execute(user, work, tracker, report, base, "copy", [])

    @contextmanager
    def _failing(self, unit: Unit) -> Iterator[None]:
        """A unit that raises is recorded ``failed`` with its reason, unless the ledger is
        what fails."""
        try:
            yield
        except LedgerError:
            raise
        except Exception as error:
            self.ledger.update_unit(unit.id, status="failed", last_error=_text_of(error).en)
            raise

    def _execute(
        self, user: UserMapping, work: Callable[[UnitProgress | None, UnitResult], None],
        tracker: ProgressFactory, report: RunReport, base: dict[str, Any], action: str,
        reasons: list[Text],
    ) -> None:
        """Run one unit within its principal's slots; whatever it raises stays in it, but
        a server down or a ledger failing stops the run."""
        label = f"{user.source} {base['folder']}"
        result = UnitResult()
        with self._slots(user):
            if self.stop.is_set():
                report.not_started(base)
                return
            with tracker.unit(label) as unit_progress:
                try:
                    work(unit_progress, result)
                except LedgerError as error:
                    self._halt(ledger_text(error))
                    report.add(base, "error", [ledger_text(error)], result, failed_unit=True)
                    return
                except Exception as error:  # noqa: BLE001 - any failure stays in this unit
                    text = _text_of(error)
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
        if self.batch.target is None:
            raise InputError(self._needs_target())
        selected = {u.source for u in self.users}
        all_units = self.ledger.all_units()
        tally = VerifyTally()
        mail_users = self._principals(WORKLOAD) if WORKLOAD in self.batch.workloads else []
        with ThreadPoolExecutor(max_workers=self.batch.run.workers) as pool:
            jobs = [pool.submit(self._verify_mailbox, user, all_units, tally)
                    for user in mail_users]
            for unit in all_units:
                if unit.workload != WORKLOAD and unit.principal in selected:
                    nested = tuple(
                        other.target_container for other in all_units
                        if other.principal == unit.principal and other.workload == unit.workload
                        and other.target_container and unit.target_container
                        and other.target_container.startswith(unit.target_container + "/"))
                    jobs.append(pool.submit(self._verify_document_unit, unit, nested, tally))
            self._wait(jobs)
        summary = {**tally.counts, "users": len(selected)}
        document = {"batch": self.batch.name, "summary": summary, **self._ending()}
        json_path, csv_path = write_report(self.batch.work_dir, "verify", document, tally.rows,
                                           ENTRY_COLUMNS)
        code = self._stopped_exit() or (EXIT_FAILED if tally.counts["mismatches"] else EXIT_DONE)
        return Outcome(json_path, csv_path, summary, code, stopped=self.stopped)

    def _verify_mailbox(self, user: UserMapping, all_units: list[Unit],
                        tally: VerifyTally) -> None:
        """Each target folder of the principal against the source folders landing in it."""
        units = {u.container: u for u in all_units
                 if u.principal == user.source and u.workload == WORKLOAD}
        try:
            with self._endpoints(user) as (source, sink):
                groups: dict[tuple[str, ...], list[tuple[Unit | None, Container]]] = {}
                for container, decision in decide_folders(source, self.rules, sink.capabilities):
                    if decision.action != "skip" and decision.target:
                        unit = units.get(container_key(container.path))
                        groups.setdefault(decision.target, []).append((unit, container))
                for target, feeders in sorted(groups.items()):
                    if self.stop.is_set():
                        return
                    native = next((u.target_container for u, _ in feeders
                                   if u is not None and u.target_container), None)
                    if native is None:
                        try:
                            native = sink.native_name(target)
                        except ContainerRefused:
                            native = None
                    check = compare_folder(self.ledger, source, sink, native, feeders)
                    tally.add({"principal": user.source, "target": user.target,
                               "target_folder": native or shown(target)}, check)
        except BasculeError as error:
            tally.add_error(user, _text_of(error))

    def _verify_document_unit(self, unit: Unit, nested: tuple[str, ...],
                              tally: VerifyTally) -> None:
        if self.stop.is_set():
            return
        user = self.user_map.lookup(unit.principal)
        assert user is not None
        try:
            check = self._verify_documents(user, unit, nested)
        except BasculeError as error:
            tally.add_error(user, _text_of(error))
            return
        tally.add({"principal": user.source, "target": user.target,
                   "folder": f"{unit.workload}:{shown(path_of(unit.container))}",
                   "target_folder": unit.target_container}, check)

    def _verify_documents(self, user: UserMapping, unit: Unit, nested: tuple[str, ...]
                          ) -> FolderCheck:
        with self._document_source(user, unit.workload) as source:
            container = next((c for c in source.document_containers(unit.workload)
                              if container_key(c.path) == unit.container), None)
            if container is None:
                return FolderCheck()
            sink = self.connectors.open_document_sink(user, unit.workload)
            return verify_documents(self.ledger, unit, source, sink, container, nested)

    # audit
    def audit(self) -> Outcome:
        """What the source holds, per principal and container, read from listings only (no
        bodies, nothing written anywhere but the report): what a consultant needs before a
        bid, and what the plan will later compare with the target."""
        errors = self._unmapped() + self._source_refusal()
        rows: list[dict[str, Any]] = [
            {"principal": "", "action": "error", **message_columns(e)} for e in errors]
        totals = {"users": len(self.users), "containers": 0, "items": 0, "bytes": 0}
        for user in self.users:
            try:
                rows.extend(self._audit_user(user, totals))
            except BasculeError as error:
                errors.append(_text_of(error))
                rows.append(_error_row(user, errors[-1]))
        summary = {**totals, "errors": len(errors)}
        json_path, csv_path = write_report(
            self.batch.work_dir, "audit", {"batch": self.batch.name, "summary": summary}, rows,
            ENTRY_COLUMNS)
        return Outcome(json_path, csv_path, summary, 1 if errors else 0, errors)

    def _audit_user(self, user: UserMapping, totals: dict[str, int]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []

        def count(workload: str, path: tuple[str, ...], items: int, size: int) -> None:
            totals["containers"] += 1
            totals["items"] += items
            totals["bytes"] += size
            rows.append({"principal": user.source, "folder": f"{workload}:{shown(path)}",
                         "action": "inventory", "messages": items, "bytes": size})

        workloads = [w for w in self.batch.workloads if user in self._principals(w)]
        if WORKLOAD in workloads:
            with closing(self.connectors.open_source(user)) as source:
                for container in source.containers():
                    refs = source.list_changes(container, None).refs
                    count(WORKLOAD, container.path, len(refs), sum(r.size for r in refs))
                rows.extend(_note_rows(user, source_notes(source)))
        for workload in (w for w in workloads if w != WORKLOAD):
            with self._document_source(user, workload) as documents:
                for container in documents.document_containers(workload):
                    refs = documents.list_documents(container, None).refs
                    count(workload, container.path, len(refs), sum(r.size for r in refs))
                rows.extend(_note_rows(user, source_notes(documents)))
        return rows

    # status
    def status(self) -> Outcome:
        """What the ledger holds. A run or unit marked running while no command holds the
        work folder died with its process: it is shown ``interrupted``."""
        alive = current_holder(self.batch.work_dir) is not None
        rows: list[dict[str, Any]] = []
        totals = {"units": 0, "done": 0, "failed_units": 0, "copied": 0, "bytes": 0,
                  "failed_items": 0}
        for unit in self.ledger.all_units():
            state = unit.status if alive or unit.status != "running" else "interrupted"
            totals["units"] += 1
            totals["done"] += state == "done"
            totals["failed_units"] += state == "failed"
            totals["copied"] += unit.copied
            totals["bytes"] += unit.bytes
            totals["failed_items"] += unit.failed
            rows.append({"principal": unit.principal, "folder": shown(path_of(unit.container)),
                         "target_folder": unit.target_container, "action": state,
                         "copied": unit.copied, "bytes": unit.bytes, "failed": unit.failed,
                         "message_en": unit.last_error or ""})
        for unit, item in self.ledger.failed_items():
            text = Text.of(item.error_code or "error", detail=item.error_detail or "")
            rows.append({"principal": unit.principal, "folder": shown(path_of(unit.container)),
                         "action": item.status, "source_id": item.source_id,
                         **message_columns(text)})
        last = self.ledger.last_run("run")
        if last is not None and last["status"] == "running" and not alive:
            last = {**last, "status": "interrupted"}
        document = {"batch": self.batch.name, "summary": totals,
                    "last_run": {k: last[k] for k in ("id", "started_at", "ended_at", "status")}
                    if last else None}
        json_path, csv_path = write_report(self.batch.work_dir, "status", document, rows,
                                           ENTRY_COLUMNS)
        return Outcome(json_path, csv_path, totals, 1 if totals["failed_items"] else 0)


IDLE_PAIRS = 16
"""Logged-in source/sink pairs kept for reuse; the oldest are closed beyond that."""


def _close_pair(pair: tuple[MailSource, MailSink]) -> None:
    source, sink = pair
    try:
        sink.close()
    finally:
        source.close()


FIRST_ROLES = {"inbox": 0, "archive": 1, "sent": 2}


def _largest_first(folder: tuple[Container, FolderDecision]) -> int:
    """Folders that usually hold most of a mailbox start first, so that the run does not
    end with one big folder copying alone."""
    return FIRST_ROLES.get(folder[1].role or "", len(FIRST_ROLES))


def _note_rows(user: UserMapping, notes: list[SourceNote]) -> list[dict[str, Any]]:
    """Report rows for what a source noticed about a principal's folders."""
    return [{"principal": user.source, "target": user.target,
             "folder": note.subject if note.code.endswith("folder_skipped") else "",
             "source_id": "" if note.code.endswith("folder_skipped") else note.subject,
             "action": "skip" if note.code.endswith("folder_skipped") else "note",
             **message_columns(_note_text(note))} for note in notes]


def _note_text(note: SourceNote) -> Text:
    return Text.of(note.code, detail=note.detail, **note.params)


def _error_row(user: UserMapping, text: Text) -> dict[str, Any]:
    return {"principal": user.source, "target": user.target, "action": "error",
            **message_columns(text)}


def _decided(decision: FolderDecision) -> tuple[str, list[Text]]:
    """The report's action for a folder copied (``rename`` when a rule renamed it), and why."""
    action = "rename" if any(c.startswith("renamed") for c in decision.reasons) else "copy"
    return action, [Text.of(code, detail=decision.detail) for code in decision.reasons]


def _joined(reasons: list[Text]) -> dict[str, str]:
    if not reasons:
        return {}
    return {"code": " ".join(r.code for r in reasons),
            "message_en": "; ".join(r.en for r in reasons),
            "message_fr": "; ".join(r.fr for r in reasons)}


@dataclass
class RunReport:
    """The rows and totals of a run, filled by units from several threads."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: {
        "copied": 0, "bytes": 0, "flag_updates": 0, "failed": 0, "skipped": 0,
        "recovered": 0, "units_failed": 0, "units_interrupted": 0, "units_not_started": 0,
        "over_quota": 0, "over_quota_bytes": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)
    quota: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(principal, target) -> [messages, bytes] a full mailbox kept out."""

    def add(self, base: dict[str, Any], action: str, reasons: list[Text],
            result: UnitResult, failed_unit: bool = False) -> None:
        """A unit's rows: its outcome (also when it failed part way: what it did before
        counts), its notes and its failed items."""
        rows = [{**base, "action": action, "copied": result.copied,
                 "bytes": result.copied_bytes, "failed": result.failed, **_joined(reasons)}]
        rows += [{**base, "action": "note",
                  "source_id": "" if note.code == "removed_at_source" else note.subject,
                  **message_columns(_note_text(note))}
                 for note in result.notes]
        if result.recovered:
            rows.append({**base, "action": "note", "messages": result.recovered,
                         **message_columns(Text.of("found_on_target", count=result.recovered))})
        if result.converted:
            rows.append({**base, "action": "note", "messages": len(result.converted),
                         "source_id": " ".join(result.converted),
                         **message_columns(Text.of("line_endings_converted"))})
        if result.deleted_at_source:
            rows.append({**base, "action": "note", "messages": result.deleted_at_source,
                         **message_columns(Text.of("deleted_at_source"))})
        rows += [{**base, "action": "failed", "source_id": sid, **message_columns(_text_of(e))}
                 for sid, e in result.errors]
        with self.lock:
            for key, value in (("copied", result.copied), ("bytes", result.copied_bytes),
                               ("flag_updates", result.flag_updates), ("failed", result.failed),
                               ("recovered", result.recovered),
                               ("units_failed", int(failed_unit)),
                               ("units_interrupted", int(result.interrupted)),
                               ("over_quota", result.quota_left),
                               ("over_quota_bytes", result.quota_left_bytes)):
                self.totals[key] += value
            if result.quota_left:
                left = self.quota.setdefault((base["principal"], base["target"]), [0, 0])
                left[0] += result.quota_left
                left[1] += result.quota_left_bytes
            self.rows.extend(rows)

    def not_started(self, base: dict[str, Any]) -> None:
        """A unit the run stopped before it began: the next run starts it."""
        with self.lock:
            self.totals["units_not_started"] += 1
            self.rows.append({**base, "action": "not_started",
                              **message_columns(Text.of("unit_not_started"))})

    def quota_rows(self) -> list[dict[str, Any]]:
        """One row per mailbox found full, with what it kept out."""
        return [{"principal": principal, "target": target, "action": "over_quota",
                 "messages": count, "bytes": size,
                 **message_columns(Text.of("mailbox_full", count=count, size=Size(size)))}
                for (principal, target), (count, size) in sorted(self.quota.items())]


FINDING_TOTALS = {
    "missing_on_target": "missing", "fingerprint_mismatch": "missing",
    "duplicate_on_target": "duplicates", "not_in_source": "not_in_source",
    "flags_mismatch": "flags_differ", "date_mismatch": "dates_differ",
    "changed_since_copy": "changed_at_source", "deleted_at_source": "deleted_at_source",
}
"""The verify summary's total that counts each finding."""


@dataclass
class VerifyTally:
    """The rows and counts of a verify, filled by principals checked side by side."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "checked": 0, "target_items": 0, "mismatches": 0, "missing": 0, "duplicates": 0,
        "not_in_source": 0, "flags_differ": 0, "dates_differ": 0, "changed_at_source": 0,
        "deleted_at_source": 0, "errors": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, base: dict[str, Any], check: FolderCheck) -> None:
        """One target folder's rows: what was checked, then each finding."""
        rows = [{**base, "action": "verified", "messages": check.source_messages,
                 "copied": check.target_messages, "failed": check.faults}]
        rows += [{**base, "action": "mismatch" if f.code in FAULTS else "note",
                  "source_id": f.source_id, "target_ref": f.target_ref,
                  **message_columns(Text.of(f.code, **f.params))} for f in check.findings]
        with self.lock:
            self.counts["checked"] += check.source_messages
            self.counts["target_items"] += check.target_messages
            self.counts["mismatches"] += check.faults
            for finding in check.findings:
                self.counts[FINDING_TOTALS[finding.code]] += 1
            self.rows.extend(rows)

    def add_error(self, user: UserMapping, text: Text) -> None:
        with self.lock:
            self.counts["mismatches"] += 1
            self.counts["errors"] += 1
            self.rows.append(_error_row(user, text))


class ProgressFactory:
    """Progress of a run: silent by default; the CLI gives a terminal or log version."""

    @contextmanager
    def unit(self, label: str) -> Iterator[UnitProgress | None]:
        yield None

    def close(self) -> None:
        pass
