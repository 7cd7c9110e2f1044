"""The engine: turns a batch into work units, runs them with bounded concurrency, plans,
verifies and reports. It knows no protocol (see ``migrate.endpoints``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.base import (
    BasculeError,
    Container,
    DocumentSource,
    MailSink,
    MailSource,
    SourceNote,
)
from mappings.folders import FolderDecision, FolderRules
from mappings.users import UserMap, UserMapping, UsersFileInvalid, load_users
from migrate.batch import Batch, ImapEndpointConfig
from migrate.documents import DocumentUnit, plan_documents, verify_documents
from migrate.endpoints import Connectors, site_of
from migrate.i18n import Text
from migrate.ledger import Ledger, Unit
from migrate.mail import (
    WORKLOAD,
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
    verify_folder,
)
from reports.files import message_columns, write_report

log = logging.getLogger("bascule")

ENTRY_COLUMNS = [
    "principal", "target", "folder", "target_folder", "action", "messages", "bytes",
    "to_copy", "copied", "failed", "source_id", "code", "message_en", "message_fr",
]


class InputError(Exception):
    """Bad input: the batch, the users table, a secret. Exit code 2."""

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


def _text_of(error: Exception) -> Text:
    english, french = getattr(error, "message_en", None), getattr(error, "message_fr", None)
    if isinstance(english, str) and isinstance(french, str):
        detail = getattr(error, "error_code", "")
        prefix = f"{detail}: " if detail else ""
        return Text.both(getattr(error, "code", "error"), prefix + english, prefix + french)
    if isinstance(error, BasculeError):
        return Text.of(error.code, detail=error.detail)
    return Text.of("error", detail=f"{type(error).__name__}: {error}")


class Engine:
    """One batch: its users, its ledger, its reports."""

    def __init__(self, batch: Batch, users: list[str] | None = None) -> None:
        self.batch = batch
        self.user_map = self._load_users()
        self.users = self._select(users)
        self.rules = FolderRules(
            renames=batch.mail.renames, exclude=batch.mail.exclude,
            include_non_mail=batch.mail.include_non_mail,
        )
        self.ledger = (
            Ledger(batch.run.ledger) if batch.run.ledger else Ledger.in_folder(batch.work_dir)
        )
        self._account_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._idle: list[tuple[str, tuple[MailSource, MailSink]]] = []
        self._idle_lock = threading.Lock()
        self.connectors = Connectors(batch, self.user_map)

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for _, pair in idle:
            _close_pair(pair)
        self.connectors.close()
        self.ledger.close()

    def _load_users(self) -> UserMap:
        try:
            return load_users(self.batch.resolve(self.batch.mapping.users))
        except UsersFileInvalid as error:
            raise InputError([Text.both(e.code, e.message("en"), e.message("fr"))
                              for e in error.errors])

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
        return self.batch.target.max_message_size if self.batch.target else None

    def _needs_target(self) -> list[Text]:
        return [] if self.batch.target is not None else [Text.of("no_target")]

    def _principals(self, workload: str) -> list[UserMapping]:
        """The users a workload applies to: SharePoint sites only have files."""
        return [u for u in self.users if workload == "files" or site_of(u.source) is None]

    def _source_refusal(self) -> list[Text]:
        """Why the source refuses the batch as a whole (sign-in, consent), before any item."""
        mailboxes = [u for u in self.users if site_of(u.source) is None]
        try:
            self.connectors.check_source(mailboxes[0].source if mailboxes else None)
        except BasculeError as error:
            return [_text_of(error)]
        return []

    def _document_source(self, user: UserMapping, workload: str) -> closing[DocumentSource]:
        """The principal's calendars and contacts, or drives; closed when the block ends."""
        account = self.connectors.source_account(user)
        return closing(self.connectors.open_document_source(account, workload))

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
            source_account, target_account = self.connectors.accounts(user)
            source = self.connectors.open_source(source_account)
            try:
                pair = (source, self.connectors.open_sink(target_account))
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
        limits = [c.connections for c in (self.batch.source, self.batch.target)
                  if isinstance(c, ImapEndpointConfig)]
        with self._slots_lock:
            if user.source not in self._account_slots:
                size = max(1, min(limits) // 2) if limits else 2
                self._account_slots[user.source] = threading.BoundedSemaphore(size)
            return self._account_slots[user.source]

    # plan
    def plan(self) -> Outcome:
        units = self.ledger.all_units()
        self._known_units = {(u.principal, u.container): u for u in units
                             if u.workload == WORKLOAD}
        self._known_documents = {(u.principal, u.workload, u.container): u for u in units
                                 if u.workload != WORKLOAD}
        errors = self._needs_target() + self._unmapped() + self._source_refusal()
        warnings: list[Text] = []
        rows: list[dict[str, Any]] = [
            {"principal": "", "action": "error", **message_columns(e)} for e in errors
        ]
        totals = {"units": 0, "messages": 0, "bytes": 0, "to_copy": 0, "to_copy_bytes": 0}
        for user in self._principals(WORKLOAD) if WORKLOAD in self.batch.workloads else []:
            try:
                with self._endpoints(user) as (source, sink):
                    folders = decide_folders(source, self.rules, sink.capabilities)
                    limit = size_limit(sink.capabilities.max_item_size,
                                       self._target_size_limit())
                    if not getattr(sink, "internal_date_offset_kept", True):
                        warnings.append(Text.of("internal_date_offset_lost"))
                    for container, decision in folders:
                        rows.extend(self._plan_rows(user, source, container, decision, limit, totals))
                    rows.extend(_note_rows(user, source_notes(source)))
            except BasculeError as error:
                errors.append(_text_of(error))
                rows.append(_error_row(user, errors[-1]))
        for workload in (w for w in self.batch.workloads if w != WORKLOAD):
            for user in self._principals(workload):
                try:
                    rows.extend(self._plan_documents(user, workload, totals))
                except BasculeError as error:
                    errors.append(_text_of(error))
                    rows.append(_error_row(user, errors[-1]))
        distinct = list({w.code: w for w in warnings}.values())
        summary = {**totals, "errors": len(errors), "warnings": len(distinct),
                   "users": len(self.users)}
        document = {
            "batch": self.batch.name, "summary": summary,
            "errors": [message_columns(e) for e in errors],
            "warnings": [message_columns(w) for w in distinct],
        }
        json_path, csv_path = write_report(self.batch.work_dir, "plan", document, rows, ENTRY_COLUMNS)
        return Outcome(json_path, csv_path, summary, 2 if errors else 0, errors, distinct)

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
            text = Text.of("too_big_for_target", limit=limit)
            rows.append({**base, "action": "too_big", "source_id": ref.source_id,
                         "bytes": ref.size, **message_columns(text)})
        return rows

    # run
    def run(self, progress: ProgressFactory | None = None) -> Outcome:
        problems = self._needs_target() + self._unmapped() + self._source_refusal()
        if problems:
            raise InputError(problems)
        run_id = self.ledger.start_run(self.batch.name, "run")
        report = RunReport()
        tracker = progress or ProgressFactory()
        mail_users = self._principals(WORKLOAD) if WORKLOAD in self.batch.workloads else []
        with ThreadPoolExecutor(max_workers=self.batch.run.workers) as pool:
            futures = []
            for user, decided in zip(mail_users, pool.map(self._folders_or_error, mail_users)):
                if isinstance(decided, BasculeError):
                    self._principal_error(user, decided, report)
                    continue
                folders, notes = decided
                report.rows.extend(_note_rows(user, notes))
                for container, decision in sorted(folders, key=_largest_first):
                    if decision.action == "skip":
                        report.totals["skipped"] += 1
                        _, reasons = _decided(decision)
                        report.rows.append({"principal": user.source, "target": user.target,
                                            "folder": shown(decision.source), "action": "skip",
                                            **_joined(reasons)})
                        continue
                    futures.append(pool.submit(self._run_unit, run_id, user, container,
                                               decision, tracker, report))
            for workload in self.batch.workloads:
                if workload == WORKLOAD:
                    continue
                for user in self._principals(workload):
                    try:
                        containers = self._document_containers(user, workload)
                    except BasculeError as error:
                        self._principal_error(user, error, report)
                        continue
                    futures += [pool.submit(self._run_document_unit, run_id, user, workload,
                                            container, tracker, report)
                                for container in containers]
            for future in as_completed(futures):
                future.result()
        tracker.close()
        totals = report.totals
        status = "failed" if totals["failed"] or totals["units_failed"] else "done"
        self.ledger.end_run(run_id, status, totals)
        document = {"batch": self.batch.name, "run_id": run_id, "summary": totals}
        json_path, csv_path = write_report(self.batch.work_dir, "run", document, report.rows,
                                           ENTRY_COLUMNS)
        return Outcome(json_path, csv_path, totals, 1 if status == "failed" else 0)

    def _principal_error(self, user: UserMapping, error: BasculeError, report: RunReport) -> None:
        text = _text_of(error)
        with report.lock:
            report.rows.append(_error_row(user, text))
            report.totals["units_failed"] += 1
        log.error("principal=%s error=%s", user.source, text.en)

    def _document_containers(self, user: UserMapping, workload: str) -> list[Container]:
        with self._document_source(user, workload) as source:
            return source.document_containers(workload)

    def _folders_or_error(
        self, user: UserMapping
    ) -> tuple[list[tuple[Container, FolderDecision]], list[SourceNote]] | BasculeError:
        try:
            with self._endpoints(user) as (source, sink):
                return decide_folders(source, self.rules, sink.capabilities), source_notes(source)
        except BasculeError as error:
            return error

    def _run_unit(
        self, run_id: int, user: UserMapping, container: Container, decision: FolderDecision,
        tracker: ProgressFactory, report: RunReport,
    ) -> None:
        assert decision.target is not None
        base = {"principal": user.source, "target": user.target, "folder": shown(decision.source),
                "target_folder": shown(decision.target)}
        unit = self.ledger.unit(user.source, WORKLOAD, container_key(decision.source))

        def work(progress: UnitProgress | None) -> UnitResult:
            with self._endpoints(user) as (source, sink):
                return MailUnit(self.ledger, unit, source, sink, container, decision.target,
                                progress, self._target_size_limit()).run()

        self._execute(run_id, user, unit, work, tracker, report, base, *_decided(decision))

    def _run_document_unit(
        self, run_id: int, user: UserMapping, workload: str, container: Container,
        tracker: ProgressFactory, report: RunReport,
    ) -> None:
        base = {"principal": user.source, "target": user.target,
                "folder": f"{workload}:{shown(container.path)}",
                "target_folder": "/".join((user.target, workload, *container.path))}
        unit = self.ledger.unit(user.source, workload, container_key(container.path))

        def work(progress: UnitProgress | None) -> UnitResult:
            _, target_account = self.connectors.accounts(user)
            sink = self.connectors.open_document_sink(target_account, workload)
            with self._document_source(user, workload) as source:
                return DocumentUnit(self.ledger, unit, source, sink, container, container.path,
                                    progress).run()

        self._execute(run_id, user, unit, work, tracker, report, base, "copy", [])

    def _execute(
        self, run_id: int, user: UserMapping, unit: Unit,
        work: Callable[[UnitProgress | None], UnitResult], tracker: ProgressFactory,
        report: RunReport, base: dict[str, Any], action: str, reasons: list[Text],
    ) -> None:
        """Run one unit within its principal's slots; whatever it raises stays in it."""
        self.ledger.update_unit(unit.id, last_run=run_id)
        label = f"{user.source} {base['folder']}"
        with self._slots(user), tracker.unit(label) as unit_progress:
            try:
                result = work(unit_progress)
            except Exception as error:  # noqa: BLE001 - any failure stays in this unit
                text = _text_of(error)
                self.ledger.update_unit(unit.id, status="failed", last_error=text.en)
                log.error("unit=%r error=%s", label, text.en)
                with report.lock:
                    report.totals["units_failed"] += 1
                    report.rows.append({**base, "action": "error", **message_columns(text)})
                return
        log.info("unit=%r copied=%d failed=%d flags=%d recovered=%d", label, result.copied,
                 result.failed, result.flag_updates, result.recovered)
        report.add(base, action, reasons, result)

    # verify
    def verify(self) -> Outcome:
        if self.batch.target is None:
            raise InputError(self._needs_target())
        rows: list[dict[str, Any]] = []
        checked = mismatches = 0
        selected = {u.source for u in self.users}
        all_units = self.ledger.all_units()
        for user in self._principals(WORKLOAD):
            units = {u.container: u for u in all_units
                     if u.principal == user.source and u.workload == WORKLOAD}
            try:
                with self._endpoints(user) as (source, sink):
                    for container in source.containers():
                        unit = units.get(container_key(container.path))
                        if unit is None:
                            continue
                        count, found = verify_folder(self.ledger, unit, source, sink, container)
                        checked += count
                        mismatches += len(found)
                        base = {"principal": user.source, "target": user.target,
                                "folder": shown(container.path),
                                "target_folder": unit.target_container}
                        rows.append({**base, "action": "verified", "messages": count,
                                     "failed": len(found)})
                        for m in found:
                            rows.append({**base, "action": "mismatch", "source_id": m.source_id,
                                         **message_columns(Text.of(m.code, **m.params))})
            except BasculeError as error:
                mismatches += 1
                rows.append(_error_row(user, _text_of(error)))
        for unit in all_units:
            if unit.workload == WORKLOAD or unit.principal not in selected:
                continue
            user = self.user_map.lookup(unit.principal)
            assert user is not None
            count, found = self._verify_documents(user, unit)
            checked += count
            mismatches += len(found)
            base = {"principal": user.source, "target": user.target,
                    "folder": f"{unit.workload}:{shown(path_of(unit.container))}",
                    "target_folder": unit.target_container}
            rows.append({**base, "action": "verified", "messages": count, "failed": len(found)})
            rows.extend({**base, "action": "mismatch", "source_id": sid,
                         **message_columns(Text.of(code))} for sid, code, _ in found)
        summary = {"checked": checked, "mismatches": mismatches, "users": len(selected)}
        json_path, csv_path = write_report(
            self.batch.work_dir, "verify", {"batch": self.batch.name, "summary": summary}, rows,
            ENTRY_COLUMNS)
        return Outcome(json_path, csv_path, summary, 1 if mismatches else 0)

    def _verify_documents(self, user: UserMapping, unit: Unit
                          ) -> tuple[int, list[tuple[str, str, str]]]:
        _, target_account = self.connectors.accounts(user)
        with self._document_source(user, unit.workload) as source:
            container = next((c for c in source.document_containers(unit.workload)
                              if container_key(c.path) == unit.container), None)
            if container is None:
                return 0, []
            sink = self.connectors.open_document_sink(target_account, unit.workload)
            return verify_documents(self.ledger, unit, source, sink, container)

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
        source_account = self.connectors.source_account(user)

        def count(workload: str, path: tuple[str, ...], items: int, size: int) -> None:
            totals["containers"] += 1
            totals["items"] += items
            totals["bytes"] += size
            rows.append({"principal": user.source, "folder": f"{workload}:{shown(path)}",
                         "action": "inventory", "messages": items, "bytes": size})

        workloads = [w for w in self.batch.workloads if user in self._principals(w)]
        if WORKLOAD in workloads:
            with closing(self.connectors.open_source(source_account)) as source:
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
        rows: list[dict[str, Any]] = []
        totals = {"units": 0, "done": 0, "failed_units": 0, "copied": 0, "bytes": 0,
                  "failed_items": 0}
        for unit in self.ledger.all_units():
            totals["units"] += 1
            totals["done"] += unit.status == "done"
            totals["failed_units"] += unit.status == "failed"
            totals["copied"] += unit.copied
            totals["bytes"] += unit.bytes
            totals["failed_items"] += unit.failed
            rows.append({"principal": unit.principal, "folder": shown(path_of(unit.container)),
                         "target_folder": unit.target_container, "action": unit.status,
                         "copied": unit.copied, "bytes": unit.bytes, "failed": unit.failed,
                         "message_en": unit.last_error or ""})
        for unit, item in self.ledger.failed_items():
            text = Text.of(item.error_code or "error", detail=item.error_detail or "")
            rows.append({"principal": unit.principal, "folder": shown(path_of(unit.container)),
                         "action": "failed", "source_id": item.source_id, **message_columns(text)})
        last = self.ledger.last_run("run")
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
             **message_columns(Text.of(note.code, detail=note.detail))} for note in notes]


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
        "recovered": 0, "units_failed": 0})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, base: dict[str, Any], action: str, reasons: list[Text],
            result: UnitResult) -> None:
        rows = [{**base, "action": action, "copied": result.copied,
                 "bytes": result.copied_bytes, "failed": result.failed, **_joined(reasons)}]
        rows += [{**base, "action": "note",
                  "source_id": "" if note.code == "removed_at_source" else note.subject,
                  **message_columns(Text.of(note.code, detail=note.detail))}
                 for note in result.notes]
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
                               ("recovered", result.recovered)):
                self.totals[key] += value
            self.rows.extend(rows)


class ProgressFactory:
    """Progress of a run: silent by default; the CLI gives a terminal or log version."""

    @contextmanager
    def unit(self, label: str) -> Iterator[UnitProgress | None]:
        yield None

    def close(self) -> None:
        pass
