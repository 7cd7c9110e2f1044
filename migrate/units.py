"""Work units as data, and the runners of each workload.

The planner writes every unit of a run into the ledger as a row: its principal, workload,
container, target login, source and sink types, its ``spec`` (what its workload's runner
needs: the source folder, where it lands, why it was renamed) and its ``chain`` (units of
one chain run one after another). ``run_unit(batch_file, unit_id)`` runs one unit in any
process with only the batch file and the ledger; the engine's thread executor calls the same
``execute_unit`` for each unit it planned.

A workload joins by giving a ``WorkloadRunner`` in ``RUNNERS``: the engine's ``plan``,
``run``, ``verify`` and ``audit`` ask each workload's runner and never branch on its name.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from connectors.base import BasculeError, Container, ContainerRefused, SourceNote, all_at_once
from connectors.protocols import (
    DocumentSource,
    FolderBatchSink,
    ListedCountSink,
    MailSink,
    MailSource,
)
from mappings.folders import FolderDecision, FolderRules
from mappings.users import UserMap, UserMapping, load_users
from migrate.batch import MAIL, Batch, load_batch
from migrate.compare import FolderCheck, compare_folder
from migrate.documents import (
    REMOVE,
    Changes,
    DocumentUnit,
    ItemCheck,
    plan_documents,
    verify_documents,
)
from migrate.endpoints import Connectors
from migrate.estimate import Probe
from migrate.ledger import Ledger, LedgerError, Unit
from migrate.mail import (
    Brakes,
    FolderPlan,
    MailUnit,
    UnitProgress,
    UnitResult,
    container_key,
    decide_folders,
    path_of,
    plan_folder,
    settled,
    shown,
    size_limit,
    source_notes,
)
from reports.i18n import Text
from reports.plan import container_row, target_not_empty_row, too_big_row
from reports.rows import decided, note_rows, refusal_text, skip_row
from reports.verify import VerifyTally

log = logging.getLogger("bascule")
T = TypeVar("T")
R = TypeVar("R")

IDLE_PAIRS = 16
"""Logged-in mail source/sink pairs kept for reuse; the oldest are closed beyond that."""

FIRST_ROLES = {"inbox": 0, "archive": 1, "sent": 2}
"""Folders that usually hold most of a mailbox start first, so that a run does not end with
one big folder copying alone."""


@dataclass(frozen=True)
class PlannedUnit:
    """One unit as the planner decides it, before it is written to the ledger."""

    container: str
    spec: dict[str, Any]
    chain: str
    """Units with the same chain run one after another, in planned order."""
    settled: dict[str, Any] | None = None
    """Nothing to do: the columns to record the unit done with (its cursor, its target
    folder), instead of running it."""


@dataclass
class Planned:
    """What a workload's runner planned for one principal: its units, and rows for the
    report about what it will not run (skipped folders, notes of the source)."""

    units: list[PlannedUnit] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    settled: list[Unit] = field(default_factory=list)
    """Units with nothing to do (``migrate.mail.settled``), recorded done by the planner
    with the source's state as their cursor, never run: they are reported all the same."""
    creating_seconds: float = 0.0
    """Time spent creating target folders: paid once per folder, so left out of the
    principal's step that the next plans estimate from."""


class Bench:
    """What every unit of a command shares: the batch, the ledger, the connectors, the
    folder rules, the brakes, and logged-in mail pairs kept for the next unit."""

    def __init__(self, batch: Batch, ledger: Ledger, user_map: UserMap,
                 stop: threading.Event | None = None) -> None:
        self.batch = batch
        self.ledger = ledger
        self.user_map = user_map
        self.connectors = Connectors(batch, user_map)
        self.rules = FolderRules(
            renames=batch.mail.renames, exclude=batch.mail.exclude,
            include_non_mail=batch.mail.include_non_mail,
        )
        self.stop = stop or threading.Event()
        self.full: dict[str, threading.Event] = defaultdict(threading.Event)
        self.probe = Probe()
        """What ``plan`` times of its round trips, for its estimate when no run has."""
        self.plan_lanes = 1
        """Sources a plan lists one principal's folders over at once: as many as a run
        would give that principal's units (``Lanes.per_principal``), set by ``plan``."""
        self._idle: list[tuple[str, tuple[MailSource, MailSink]]] = []
        self._idle_lock = threading.Lock()

    def close(self) -> None:
        self.drop_idle()
        self.connectors.close()

    def drop_idle(self) -> None:
        """Close the pairs kept for reuse (their server may have gone down)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        if len(idle) <= 1:
            for _, pair in idle:
                _close_pair(pair)
            return
        # Each goodbye waits for the server's answer: a round trip per connection, paid
        # once for all of them rather than one after another.
        with ThreadPoolExecutor(max_workers=len(idle)) as closing_pool:
            list(closing_pool.map(lambda kept: _close_pair(kept[1]), idle))

    def over_sources(self, user: UserMapping, source: MailSource, items: Sequence[T],
                     work: Callable[[MailSource, T], R], notes: list[SourceNote]
                     ) -> list[R]:
        """``work(source, item)`` for each item, answered in order, over ``plan_lanes``
        sources at once: ``source`` and others signed in for the purpose, closed at the end
        once what they noticed (``source_notes``: files a folder's listing left out...) is
        in ``notes``. A source that cannot be opened leaves its share to the others; the
        first error of ``work`` is raised once every lane has ended."""
        lanes = min(self.plan_lanes, len(items))
        if lanes <= 1:
            return [work(source, item) for item in items]
        results: list[R | None] = [None] * len(items)
        pending = iter(range(len(items)))
        taking = threading.Lock()

        def take() -> int | None:
            with taking:
                return next(pending, None)

        def lane(own: MailSource | None) -> None:
            opened = None
            if own is None:
                try:
                    own = opened = self.connectors.open_source(user)
                except BasculeError:
                    return  # the other lanes list what this one would have
            try:
                while (index := take()) is not None:
                    results[index] = work(own, items[index])
            finally:
                if opened is not None:
                    noticed = source_notes(opened)
                    with taking:
                        notes.extend(noticed)
                    opened.close()

        all_at_once([partial(lane, source), *(partial(lane, None) for _ in range(lanes - 1))])
        return cast(list[R], results)  # every index filled, or all_at_once raised

    def brakes(self, user: UserMapping) -> Brakes:
        return Brakes(stop=self.stop, mailbox_full=self.full[user.source])

    def user(self, principal: str) -> UserMapping:
        user = self.user_map.lookup(principal)
        if user is None:
            raise BasculeError(code="unit_principal_unknown", params={"principal": principal})
        return user

    def account_slots(self) -> int:
        """Units of one account that may run at once, whatever their workload: the smaller
        of both ends' limits over the batch's workloads."""
        return min(self.connectors.account_slots(w) for w in self.batch.workloads)

    def target_size_limit(self) -> int | None:
        sink = self.connectors.sink(MAIL)
        return sink.largest_item(self.batch.target) if sink is not None else None

    def document_source(self, user: UserMapping, workload: str) -> closing[DocumentSource]:
        """The principal's calendars and contacts, or drives; closed when the block ends."""
        return closing(self.connectors.open_document_source(user, workload))

    @contextmanager
    def endpoints(self, user: UserMapping) -> Iterator[tuple[MailSource, MailSink]]:
        """A logged-in mail source and sink for the principal, reused from one unit to the
        next: a login costs several round trips, which a delta pass over a WAN would pay
        per folder. A pair whose unit raised is closed, never reused."""
        pair = None
        with self._idle_lock:
            for index, (key, idle) in enumerate(self._idle):
                if key == user.source:
                    pair = idle
                    del self._idle[index]
                    break
        if pair is None:
            self.connectors.target_account(user, MAIL)  # no target: said before a login
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

    @contextmanager
    def failing(self, unit: Unit) -> Iterator[None]:
        """A unit that raises is recorded ``failed`` with its reason, unless the ledger is
        what fails."""
        try:
            yield
        except LedgerError:
            raise
        except Exception as error:
            self.ledger.update_unit(unit.id, status="failed", last_error=text_of(error).en,
                                    last_run=unit.planned_run)
            raise


class WorkloadRunner(Protocol):
    """What a workload gives the engine. ``plan`` counts without moving anything; ``units``
    decides the units of a run; ``run`` runs one from its ledger row; ``verify`` checks the
    principal's units against both sides; ``audit`` counts the source from listings, each
    container through ``count(workload, path, items, size, part)``."""

    def plan(self, bench: Bench, user: UserMapping, workload: str, known: dict[str, Unit],
             totals: dict[str, int]) -> tuple[list[dict[str, Any]], list[Text]]: ...

    def units(self, bench: Bench, user: UserMapping, workload: str) -> Planned: ...

    def run(self, bench: Bench, user: UserMapping, unit: Unit, progress: UnitProgress | None,
            result: UnitResult) -> None: ...

    def verify(self, bench: Bench, user: UserMapping, workload: str, units: list[Unit],
               tally: VerifyTally) -> None: ...

    def audit(self, bench: Bench, user: UserMapping, workload: str,
              count: Callable[..., None]) -> list[dict[str, Any]]: ...


def text_of(error: Exception) -> Text:
    """What a person reads of an error a unit or a principal ended with: its code's
    sentence, or its type and message for an error no layer gave a code."""
    if isinstance(error, BasculeError):
        return refusal_text(error)
    return Text.of("error", detail=f"{type(error).__name__}: {error}")


class MailRunner:
    """Mail: one unit per source folder; folders landing in one target folder form one
    chain, so that what one of them finds on the target is known to the next."""

    def plan(self, bench: Bench, user: UserMapping, workload: str, known: dict[str, Unit],
             totals: dict[str, int]) -> tuple[list[dict[str, Any]], list[Text]]:
        rows: list[dict[str, Any]] = []
        warnings: list[Text] = []
        started = time.monotonic()
        with bench.endpoints(user) as (source, sink):
            folders = decide_folders(source, bench.rules, sink)
            # What a run pays for this principal before its first unit: both sign-ins and
            # the folder listings.
            bench.probe.principal(user.source, time.monotonic() - started)
            limit = size_limit(sink.capabilities.max_item_size, bench.target_size_limit())
            if not bench.connectors.sink_capabilities(MAIL).keeps_internal_date_offset:
                warnings.append(Text.of("internal_date_offset_lost"))
            # Each folder's listing is a round trip or two: a principal planned alone has
            # them side by side over as many sources as its run would have units.
            def listed(own: MailSource, folder: tuple[Container, FolderDecision]
                       ) -> tuple[list[dict[str, Any]], Counter[str]]:
                counted: Counter[str] = Counter()
                return _plan_rows(bench, user, own, sink, *folder, limit, known,
                                  counted), counted

            noticed: list[SourceNote] = []
            for folder_rows, counted in bench.over_sources(user, source, folders, listed,
                                                           noticed):
                rows.extend(folder_rows)
                for key, value in counted.items():
                    totals[key] = totals.get(key, 0) + value
            rows.extend(_unknown_on_target(bench, user, sink, folders))
            rows.extend(note_rows(user, [*source_notes(source), *noticed]))
        return rows, warnings

    def units(self, bench: Bench, user: UserMapping, workload: str) -> Planned:
        planned = Planned()
        known = bench.ledger.units_of(user.source, workload)
        with bench.endpoints(user) as (source, sink):
            folders = decide_folders(source, bench.rules, sink)
            notes = source_notes(source)
            creating = time.monotonic()
            present = (sink.ensure_containers([d.target for _, d in folders
                                               if d.action != "skip" and d.target])
                       if isinstance(sink, FolderBatchSink) else {})
            planned.creating_seconds = time.monotonic() - creating
            natives = {target: sink.native_name(target) for target in present}
        planned.rows.extend(note_rows(user, notes))
        ordered = sorted(folders, key=lambda f: FIRST_ROLES.get(f[1].role or "",
                                                                 len(FIRST_ROLES)))
        for position, (container, decision) in enumerate(ordered):
            action, reasons = decided(decision)
            if decision.action == "skip":
                planned.skipped += 1
                planned.rows.append(skip_row({"principal": user.source, "target": user.target,
                                              "folder": shown(decision.source)}, reasons))
                continue
            assert decision.target is not None
            key = container_key(decision.source)
            native, unit = natives.get(decision.target), known.get(key)
            quiet = native is not None and settled(
                container, unit, native, removing=bench.batch.run.deletions == REMOVE)
            planned.units.append(PlannedUnit(
                container=key,
                chain=container_key(decision.target),
                settled=({"target_container": native, "cursor": container.state or
                          (unit.cursor if unit else None)} if quiet else None),
                spec={"path": list(container.path), "role": container.role,
                      "native_name": container.native_name, "count": container.count,
                      "size": container.size,
                      "target_path": list(decision.target),
                      "action": action, "reasons": list(decision.reasons),
                      "detail": decision.detail, "position": position,
                      "folder": shown(decision.source), "target_folder": shown(decision.target),
                      "target_empty": present.get(decision.target, False)}))
        return planned

    def run(self, bench: Bench, user: UserMapping, unit: Unit, progress: UnitProgress | None,
            result: UnitResult) -> None:
        spec = unit.spec or {}
        # What the folder list said when the unit was planned (its count and size): hints
        # that let a first listing examine and list in one round trip, with a small
        # folder's bodies, whichever of the account's connections runs the unit (a folder
        # emptied since is listed empty; what arrived since is fetched as usual).
        container = Container(tuple(spec["path"]), spec.get("role"), spec.get("native_name", ""),
                              count=spec.get("count"), size=spec.get("size"))
        with bench.failing(unit), bench.endpoints(user) as (source, sink):
            MailUnit(bench.ledger, unit, source, sink, container, tuple(spec["target_path"]),
                     progress, bench.target_size_limit(), bench.brakes(user), result,
                     target_empty=spec.get("target_empty", False),
                     remove_deleted=bench.batch.run.deletions == REMOVE).run()

    def verify(self, bench: Bench, user: UserMapping, workload: str, units: list[Unit],
               tally: VerifyTally) -> None:
        """Each target folder of the principal against the source folders landing in it."""
        by_container = {u.container: u for u in units}
        with bench.endpoints(user) as (source, sink):
            groups: dict[tuple[str, ...], list[tuple[Unit | None, Container]]] = {}
            for container, decision in decide_folders(source, bench.rules, sink):
                if decision.action != "skip" and decision.target:
                    unit = by_container.get(container_key(container.path))
                    groups.setdefault(decision.target, []).append((unit, container))
            for target, feeders in sorted(groups.items()):
                if bench.stop.is_set():
                    return
                native = next((u.target_container for u, _ in feeders
                               if u is not None and u.target_container), None)
                if native is None:
                    try:
                        native = sink.native_name(target)
                    except ContainerRefused:
                        native = None
                check = compare_folder(bench.ledger, source, sink, native, feeders)
                tally.add({"principal": user.source, "target": user.target,
                           "target_folder": native or shown(target)}, check)

    def audit(self, bench: Bench, user: UserMapping, workload: str,
              count: Callable[..., None]
              ) -> list[dict[str, Any]]:
        with closing(bench.connectors.open_source(user)) as source:
            for container in source.containers():
                refs = source.list_changes(container, None).refs
                count(workload, container.path, len(refs), sum(r.size for r in refs),
                      container.part)
            return note_rows(user, source_notes(source))


class DocumentRunner:
    """Calendars, contacts, files: one unit per container of the source (a calendar, an
    address book, a drive or library), each its own chain."""

    def plan(self, bench: Bench, user: UserMapping, workload: str, known: dict[str, Unit],
             totals: dict[str, int]) -> tuple[list[dict[str, Any]], list[Text]]:
        rows = []
        started = time.monotonic()
        with bench.document_source(user, workload) as source:
            containers = source.document_containers(workload)
            bench.probe.principal(user.source, time.monotonic() - started)
            for container in containers:
                unit = known.get(container_key(container.path))
                records = bench.ledger.items_of(unit.id) if unit else {}
                with bench.probe.timing(bench.probe.folders):
                    items, size, to_copy, to_copy_size = plan_documents(source, container,
                                                                        records)
                rows.append(container_row(
                    totals, {"principal": user.source, "target": user.target,
                             **_document_names(user, workload, container.path)},
                    "copy", [], messages=items, size=size, to_copy=to_copy,
                    to_copy_bytes=to_copy_size, part=container.part))
            rows.extend(note_rows(user, source_notes(source)))
        return rows, []

    def units(self, bench: Bench, user: UserMapping, workload: str) -> Planned:
        planned = Planned()
        with bench.document_source(user, workload) as source:
            containers = source.document_containers(workload)
            # What it left out while finding its containers (hidden folders, files outside
            # any drive), in the run's report as in the plan's.
            planned.rows.extend(note_rows(user, source_notes(source)))
        for container in containers:
            key = container_key(container.path)
            planned.units.append(PlannedUnit(
                container=key, chain=f"{workload}\x1e{key}",
                spec={"path": list(container.path), "role": container.role,
                      "native_name": container.native_name, "action": "copy",
                      **({"colour": container.colour} if container.colour else {}),
                      **_document_names(user, workload, container.path)}))
        return planned

    def run(self, bench: Bench, user: UserMapping, unit: Unit, progress: UnitProgress | None,
            result: UnitResult) -> None:
        spec = unit.spec or {}
        container = Container(tuple(spec["path"]), spec.get("role"), spec.get("native_name", ""),
                              colour=spec.get("colour"))
        sink = bench.connectors.open_document_sink(user, unit.workload)
        with bench.failing(unit), bench.document_source(user, unit.workload) as source:
            DocumentUnit(bench.ledger, unit, source, sink, container, container.path, progress,
                         bench.brakes(user), result, Changes(
                             on_conflict=bench.batch.run.on_conflict,
                             deletions=bench.batch.run.deletions)).run()

    def verify(self, bench: Bench, user: UserMapping, workload: str, units: list[Unit],
               tally: VerifyTally) -> None:
        for unit in units:
            if bench.stop.is_set():
                return
            nested = tuple(
                other.target_container for other in units
                if other.target_container and unit.target_container
                and other.target_container.startswith(unit.target_container + "/"))
            base = {"principal": user.source, "target": user.target,
                    "workload": unit.workload, "container": shown(path_of(unit.container))}
            try:
                check = self._verify_unit(bench, user, unit, nested,
                                          partial(tally.add_item, base))
            except BasculeError as error:
                tally.add_error(user, text_of(error))
                continue
            tally.add({"principal": user.source, "target": user.target,
                       "folder": f"{unit.workload}:{base['container']}",
                       "target_folder": unit.target_container}, check)

    @staticmethod
    def _verify_unit(bench: Bench, user: UserMapping, unit: Unit, nested: tuple[str, ...],
                     each: Callable[[ItemCheck], None]) -> FolderCheck:
        with bench.document_source(user, unit.workload) as source:
            container = _find_container(source, unit.workload, path_of(unit.container))
            if container is None:
                return FolderCheck()
            sink = bench.connectors.open_document_sink(user, unit.workload)
            return verify_documents(bench.ledger, unit, source, sink, container, nested,
                                    each=each)

    def audit(self, bench: Bench, user: UserMapping, workload: str,
              count: Callable[..., None]
              ) -> list[dict[str, Any]]:
        with bench.document_source(user, workload) as documents:
            for container in documents.document_containers(workload):
                refs = documents.list_documents(container, None).refs
                count(workload, container.path, len(refs), sum(r.size for r in refs),
                      container.part)
            return note_rows(user, source_notes(documents))


RUNNERS: dict[str, WorkloadRunner] = {
    MAIL: MailRunner(),
    "calendar": DocumentRunner(),
    "contacts": DocumentRunner(),
    "tasks": DocumentRunner(),
    "files": DocumentRunner(),
}
"""The runner of each workload a batch may name."""


def plan_units(bench: Bench, user: UserMapping, workload: str, run_id: int
               ) -> tuple[list[Unit], Planned]:
    """Decide the principal's units of a workload and write them to the ledger; how long
    that took is the principal's own step in the run's timings."""
    started = time.monotonic()
    planned = RUNNERS[workload].units(bench, user, workload)
    source_type = bench.batch.source.type
    target = bench.batch.target_of(workload)
    limits = {"account": user.source, "slots": bench.account_slots()}
    decided = [(p.container, {
        "target": user.target, "source_type": source_type,
        "sink_type": target.type if target is not None else None,
        "spec": {**p.spec, "limits": limits}, "chain": p.chain,
        **({"status": "done", "last_run": run_id, "last_error": None, **p.settled}
           if p.settled is not None else {})}) for p in planned.units]
    rows = []
    # The step is timed up to its write, which it shares with the units (one transaction),
    # without the folders it created (the next pass creates none).
    written = bench.ledger.plan_units(
        user.source, workload, run_id, decided,
        step_seconds=time.monotonic() - started - planned.creating_seconds)
    for p, row in zip(planned.units, written, strict=True):
        (rows if p.settled is None else planned.settled).append(row)
    return rows, planned


def execute_unit(bench: Bench, unit: Unit, progress: UnitProgress | None,
                 result: UnitResult) -> None:
    """Run one planned unit with what the bench holds; raises what the unit raised (its
    failure is recorded in the ledger first). A unit that ends by itself records how long
    it took and what it copied, for the next plan's estimate, with its end (each runner's
    last write: one transaction fewer per unit)."""
    RUNNERS[unit.workload].run(bench, bench.user(unit.principal), unit, progress, result)


def run_unit(batch_file: Path, unit_id: int, progress: UnitProgress | None = None
             ) -> UnitResult:
    """Run one unit the planner wrote to the ledger, in this process, with nothing but the
    batch file and the ledger it names: what a worker on another machine does."""
    batch = load_batch(batch_file)
    ledger = (Ledger(batch.run.ledger, batch.ledger_password()) if batch.run.ledger
              else Ledger.in_folder(batch.work_dir))
    try:
        bench = Bench(batch, ledger, load_users(batch.resolve(batch.mapping.users)))
        try:
            unit = ledger.unit_by_id(unit_id)
            result = UnitResult()
            execute_unit(bench, unit, progress, result)
            return result
        finally:
            bench.close()
    finally:
        ledger.close()


def unit_limit(unit: Unit) -> tuple[str, int]:
    """The account a unit is counted under and how many of that account's units may run at
    once, as the planner wrote them: the executor applies them, whatever process it is."""
    limits = (unit.spec or {}).get("limits", {})
    return limits.get("account", unit.principal), int(limits.get("slots", 2))


def _plan_rows(bench: Bench, user: UserMapping, source: MailSource, sink: MailSink,
               container: Container, decision: FolderDecision, limit: int | None,
               known: dict[str, Unit], totals: dict[str, int]) -> list[dict[str, Any]]:
    base = {"principal": user.source, "target": user.target, "folder": shown(decision.source),
            "target_folder": shown(decision.target)}
    action, reasons = decided(decision)
    if decision.action == "skip":
        return [skip_row(base, reasons)]
    unit = known.get(container_key(decision.source))
    assert decision.target is not None
    try:
        native = sink.native_name(decision.target)
    except ContainerRefused:
        native = None
    if native is not None and settled(container, unit, native,
                                      removing=bench.batch.run.deletions == REMOVE):
        # Nothing to do, as the folder list says: what the ledger holds of it is all.
        return [{**container_row(totals, base, action, reasons,
                                 messages=unit.copied if unit else 0,
                                 size=unit.bytes if unit else 0, to_copy=0, to_copy_bytes=0,
                                 part=container.part),
                 "settled": True}]
    records = bench.ledger.items_of(unit.id) if unit else {}
    plan = FolderPlan(container, decision)
    with bench.probe.timing(bench.probe.folders):
        plan_folder(source, plan, records, limit)
    rows = [container_row(totals, base, action, reasons, messages=plan.messages,
                          size=plan.bytes, to_copy=plan.to_copy,
                          to_copy_bytes=plan.to_copy_bytes, part=container.part)]
    rows += [too_big_row(base, ref.source_id, ref.size, limit) for ref in plan.too_big]
    return rows


def _unknown_on_target(bench: Bench, user: UserMapping, sink: MailSink,
                       folders: list[tuple[Container, FolderDecision]]) -> list[dict[str, Any]]:
    """Target folders already holding messages the ledger does not account for (a lost
    ledger, users filing mail there): the run will match them by content."""
    rows = []
    targets = {d.target for _, d in folders if d.action != "skip" and d.target}
    for target in sorted(targets):
        try:
            native = sink.native_name(target)
        except ContainerRefused:
            continue
        listed = (sink.listed_count(native) if isinstance(sink, ListedCountSink)
                  and not bench.probe.wants_round_trips() else None)
        if listed is not None:
            stored = listed
        else:
            with bench.probe.timing(bench.probe.target_round_trips):
                stored = sink.count(native)
        unknown = stored - bench.ledger.claimed_count(user.source, native)
        if unknown > 0:
            rows.append(target_not_empty_row(user, shown(target), unknown))
    return rows


def _document_names(user: UserMapping, workload: str, path: tuple[str, ...]) -> dict[str, str]:
    return {"folder": f"{workload}:{shown(path)}",
            "target_folder": "/".join((user.target, workload, *path))}


def _find_container(source: DocumentSource, workload: str, path: tuple[str, ...]
                    ) -> Container | None:
    return next((c for c in source.document_containers(workload) if c.path == path), None)


def _close_pair(pair: tuple[MailSource, MailSink]) -> None:
    source, sink = pair
    all_at_once([sink.close, source.close])

