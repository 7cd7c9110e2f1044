"""The ledger: runs, work units, items and cursors, in SQLite (default) or PostgreSQL.

An item is recorded ``done`` only after the sink acknowledged it. Before anything is sent,
the item is recorded ``inflight`` with its fingerprint, in a committed transaction. An item
whose send may have reached the target without an answer is ``unconfirmed``. After a crash
or a lost connection, the runner looks for every in-flight or unconfirmed item on the
target, by content, before sending it again; only a ``failed`` item (the target said no)
is sent again without looking.

Every database failure comes out as ``LedgerError``, saying what kind it is (disk full,
damaged, unwritable, driver missing), so that a command can say so instead of a traceback.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import text as text_sql
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("batch", String(200), nullable=False),
    Column("command", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("status", String(20), nullable=False, default="running"),
    Column("summary", JSON),
)

units = Table(
    "units",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("principal", String(320), nullable=False),
    Column("workload", String(20), nullable=False),
    Column("container", Text, nullable=False),
    Column("target_container", Text),
    Column("status", String(20), nullable=False, default="pending"),
    Column("cursor", JSON),
    Column("copied", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("last_run", Integer),
    Column("updated_at", DateTime(timezone=True)),
    # What the planner decided, so that any process can run the unit from the batch file
    # and the ledger alone: the target login, the source and sink types, the unit's own
    # description (its workload's runner reads it), the chain it runs in (units of one
    # chain one after another, in ``id`` order), the run that planned it.
    Column("target", String(320)),
    Column("source_type", String(40)),
    Column("sink_type", String(40)),
    Column("spec", JSON),
    Column("chain", Text),
    Column("planned_run", Integer),
    UniqueConstraint("principal", "workload", "container"),
)

items = Table(
    "items",
    metadata,
    Column("unit_id", Integer, primary_key=True),
    Column("source_id", String(200), primary_key=True),
    Column("fingerprint", String(80)),
    Column("size", BigInteger),
    Column("flags", Text),
    Column("internal_date", String(40)),
    Column("version", String(200)),
    Column("target_ref", Text),
    Column("target_version", String(200)),
    Column("target_fingerprint", String(80)),
    # The hashes the source gave for a document and checked against the bytes it read
    # (``encode_hashes``): what ``verify`` says of how the source was checked.
    Column("source_hashes", Text),
    Column("status", String(20), nullable=False),
    Column("error_code", String(40)),
    Column("error_detail", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True)),
)

timings = Table(
    "timings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, nullable=False, index=True),
    Column("principal", String(320), nullable=False),
    Column("workload", String(20), nullable=False),
    # A unit's container, or "" for the principal's own step (signing in on both sides and
    # deciding its units), which a run pays once per principal before its first unit.
    Column("container", Text, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("items", Integer, nullable=False, default=0),
    Column("bytes", BigInteger, nullable=False, default=0),
)
"""How long each step of a run took and what it moved: what ``plan`` estimates the next
run's duration from (``migrate.estimate``). A table of its own, not columns of ``units``:
a unit runs once per run, and the estimate reads several runs."""

# The statements a run writes for every unit, built once: building one is most of what a
# small write costs in Python (SQLAlchemy held 40% of a hundred users' run's CPU), and a
# statement built once keeps its cache key for SQLAlchemy's compiled cache.
_UNIT_ROWS = select(units).where((units.c.principal == bindparam("b_principal"))
                                 & (units.c.workload == bindparam("b_workload")))
_UNIT_CONTAINERS = select(units.c.container).where(
    (units.c.principal == bindparam("b_principal")) & (units.c.workload == bindparam("b_workload")))
_UPDATE_UNIT_BY_KEY = update(units).where(
    (units.c.principal == bindparam("b_principal")) & (units.c.workload == bindparam("b_workload"))
    & (units.c.container == bindparam("b_container")))
_UPDATE_UNIT = update(units).where(units.c.id == bindparam("b_id"))
_ITEM_TOTALS = select(items.c.status, func.count(), func.coalesce(func.sum(items.c.size), 0)).where(
    items.c.unit_id == bindparam("b_unit")).group_by(items.c.status)

INFLIGHT, DONE, FAILED, UNCONFIRMED = "inflight", "done", "failed", "unconfirmed"
GONE = "gone"
"""A document copied, then deleted at the source, its copy left on the target (``deletions
= "report"``): a later pass with ``deletions = "remove"`` still knows to remove it."""
UNSETTLED = (INFLIGHT, UNCONFIRMED)
"""Items that may be on the target without the ledger knowing where."""
LEDGER_FILE = "ledger.sqlite"
BACKUP_FILE = "ledger-backup.sqlite"


class LedgerError(Exception):
    """The ledger cannot be used. ``kind`` is one of ``disk_full``, ``damaged``,
    ``unwritable``, ``driver_missing``, ``unavailable``; ``location`` names the file or the
    server (never a password); ``backup`` is the copy made at the start of the last run."""

    def __init__(self, kind: str, location: str, detail: str, backup: Path | None = None
                 ) -> None:
        super().__init__(f"{kind}: {location}: {detail}")
        self.kind = kind
        self.location = location
        self.detail = detail
        self.backup = backup


@dataclass(frozen=True)
class Unit:
    id: int
    principal: str
    workload: str
    container: str
    target_container: str | None
    status: str
    cursor: dict[str, Any] | None
    copied: int
    bytes: int
    failed: int
    last_error: str | None
    target: str | None = None
    source_type: str | None = None
    sink_type: str | None = None
    spec: dict[str, Any] | None = None
    chain: str | None = None
    planned_run: int | None = None

    def timed(self, started: float, items: int, size: int) -> tuple[int, Timing] | None:
        """This unit's step in the run it was planned for, from ``started``
        (``time.monotonic``) until now (``refresh_counts(timed=...)``); none outside a
        planned run."""
        if self.planned_run is None:
            return None
        return self.planned_run, Timing(self.principal, self.workload, self.container,
                                        time.monotonic() - started, items, size)


@dataclass(frozen=True)
class Timing:
    """One step of a run: a unit (``container``) or a principal's own step (``""``)."""

    principal: str
    workload: str
    container: str
    seconds: float
    items: int
    bytes: int


@dataclass(frozen=True)
class TimedRun:
    """A run that ended by itself: its wall time and the timings of its steps."""

    run_id: int
    seconds: float
    steps: list[Timing]


@dataclass(frozen=True)
class ItemRecord:
    source_id: str
    fingerprint: str | None
    size: int | None
    flags: frozenset[str]
    internal_date: str | None
    version: str | None
    target_ref: str | None
    status: str
    error_code: str | None
    error_detail: str | None
    attempts: int
    target_version: str | None = None
    """The target's version of the item when it was written (documents), for the next
    conditional write."""
    target_fingerprint: str | None = None
    """What the target answers as the item's fingerprint, when a sink that rewrites gave
    one (the fingerprint of a calendar object's meaning); ``None``: ``fingerprint``."""
    source_hashes: str | None = None
    """The hashes the source gave for a document's content and checked against the bytes it
    read, as ``encode_hashes`` writes them (``quickXorHash:<base64>``); ``""``: it gave none,
    the SHA-256 of the bytes read (``fingerprint``) is all there is; ``None``: not recorded
    (mail, or a document copied by a bascule that did not record it)."""


_ITEM_COLUMNS = tuple(items.c[field.name] for field in fields(ItemRecord))
"""An item's columns in the order of ``ItemRecord``'s fields: a row read with them is a
record by position (a column looked up by name in a row costs more than the rest of it)."""
_ITEM_ROWS = select(*_ITEM_COLUMNS).where(items.c.unit_id == bindparam("b_unit"))


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def decode_flags(text: str | None) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def encode_hashes(hashes: dict[str, str]) -> str:
    """``name:value`` pairs by name, separated by spaces (Graph's hash names and their
    base64 or hexadecimal values hold neither)."""
    return " ".join(f"{name}:{value}" for name, value in sorted(hashes.items()))


def _now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Checkpoints of a batch. Thread-safe: writes are serialised by a lock."""

    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self.location = _shown(url)
        self._file: Path | None = None
        self._write = threading.Lock()
        try:
            address = make_url(url)
            self._file = _sqlite_file(address)
            if password is not None:
                address = address.set(password=password)
            self.engine: Engine = create_engine(address, future=True)
        except (NoSuchModuleError, ModuleNotFoundError, ArgumentError) as error:
            raise LedgerError("driver_missing", self.location, str(error)) from error
        dialect = self.engine.dialect
        # SQLite's driver takes named parameters whatever the style SQLAlchemy chose for it.
        named = dialect.name == "sqlite" or dialect.paramstyle == "named"
        if not named and dialect.paramstyle != "pyformat":
            raise LedgerError("driver_missing", self.location,
                              f"parameter style {dialect.paramstyle} of {dialect.driver}")
        self._placeholder = ":{}" if named else "%({})s"
        self._statements: dict[tuple[tuple[str, ...], bool], str] = {}
        self._stamp = (items.c.updated_at.type.dialect_impl(dialect).bind_processor(dialect)
                       or (lambda value: value))
        with self._guard():
            if self._file is not None:
                event.listen(self.engine, "connect", _sqlite_pragmas)
                # Private from its first byte: the ledger names every mailbox and message.
                os.close(os.open(self._file, os.O_CREAT | os.O_WRONLY, 0o600))
            _create_schema(self.engine)

    @classmethod
    def in_folder(cls, folder: Path) -> Ledger:
        """The SQLite ledger of a work folder, made private if it has to be made."""
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise LedgerError("unwritable", str(folder), error.strerror or str(error)) from error
        return cls(f"sqlite:///{folder / LEDGER_FILE}")

    @property
    def backup_path(self) -> Path | None:
        return self._file.with_name(BACKUP_FILE) if self._file is not None else None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except DBAPIError as error:
            raise self._failure(error.orig if error.orig is not None else error) from error
        except sqlite3.Error as error:
            raise self._failure(error) from error
        except OSError as error:
            raise self._failure(error) from error

    def _failure(self, error: BaseException) -> LedgerError:
        text = str(error)
        lowered = text.lower()
        backup = self.backup_path if self.backup_path and self.backup_path.exists() else None
        if "disk is full" in lowered or getattr(error, "errno", None) == 28:
            kind = "disk_full"
        elif "malformed" in lowered or "not a database" in lowered:
            kind = "damaged"
        elif "readonly" in lowered or "unable to open" in lowered or isinstance(
                error, PermissionError):
            kind = "unwritable"
        else:
            kind = "unavailable"
        return LedgerError(kind, self.location, text, backup)

    @contextmanager
    def _writing(self, durable: bool = False) -> Iterator[Connection]:
        """A write transaction. Only ``durable`` ones wait for the disk (SQLite): marking
        items in flight, before they are sent. Every other write survives a killed process
        at once, and a power cut from the next durable one on (the WAL is written in
        order, so its flush takes every earlier commit with it). An outcome lost to a
        power cut leaves its item in flight: the next run looks for it on the target
        before sending it again, as after any cut."""
        with self._write, self._guard(), self.engine.begin() as connection:
            level = "FULL" if durable else "NORMAL"
            # Set per connection, and kept with it in the pool: changed only when it differs.
            if self._file is not None and connection.info.get("synchronous") != level:
                connection.exec_driver_sql(f"PRAGMA synchronous={level}")
                connection.info["synchronous"] = level
            yield connection

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._guard(), self.engine.connect() as connection:
            yield connection

    def close(self) -> None:
        self.engine.dispose()

    def check_and_back_up(self) -> None:
        """Check a SQLite ledger whole and copy it beside itself before a run writes to it:
        a ledger damaged later (a disk failing, a copy gone wrong) has a known-good
        predecessor. Raises ``LedgerError`` (``damaged``) when the check fails."""
        if self._file is None or self.backup_path is None:
            return
        with self._guard():
            source = sqlite3.connect(self._file)
            try:
                verdict = source.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise sqlite3.DatabaseError(f"database disk image is malformed ({verdict})")
                partial = self.backup_path.with_name(self.backup_path.name + ".part")
                partial.unlink(missing_ok=True)
                os.close(os.open(partial, os.O_CREAT | os.O_WRONLY, 0o600))
                try:
                    target = sqlite3.connect(partial)
                    try:
                        source.backup(target)
                    finally:
                        target.close()
                    os.replace(partial, self.backup_path)
                finally:
                    partial.unlink(missing_ok=True)
            finally:
                source.close()

    # runs
    def start_run(self, batch: str, command: str) -> int:
        with self._writing() as db:
            row = db.execute(
                insert(runs).values(batch=batch, command=command, started_at=_now(), status="running")
            )
            return int(row.inserted_primary_key[0])

    def end_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self._writing() as db:
            db.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(ended_at=_now(), status=status, summary=summary)
            )

    def close_dead_runs(self) -> int:
        """Runs and units still marked running when no command holds the work folder: their
        process died. They become ``interrupted``; answers how many runs were."""
        with self._writing() as db:
            db.execute(update(units).where(units.c.status == "running")
                       .values(status="interrupted", updated_at=_now()))
            return db.execute(update(runs).where(runs.c.status == "running")
                              .values(status="interrupted", ended_at=_now())).rowcount

    def last_run(self, command: str) -> dict[str, Any] | None:
        with self._reading() as db:
            row = db.execute(
                select(runs).where(runs.c.command == command).order_by(runs.c.id.desc()).limit(1)
            ).first()
            return dict(row._mapping) if row else None

    def record_timing(self, run_id: int, principal: str, workload: str, container: str,
                      seconds: float, items: int = 0, size: int = 0) -> None:
        """How long a step of run ``run_id`` took and what it moved (``container`` "" for
        the principal's own step)."""
        with self._writing() as db:
            _insert_timing(db, run_id, Timing(principal, workload, container, seconds, items,
                                              size))

    def timed_runs(self, limit: int) -> list[TimedRun]:
        """The last ``limit`` runs that ended by themselves (``done`` or ``failed``, not
        stopped or interrupted part way) and have timings, newest first."""
        with self._reading() as db:
            rows = db.execute(
                select(runs.c.id, runs.c.started_at, runs.c.ended_at)
                .where((runs.c.command == "run") & runs.c.status.in_(("done", "failed"))
                       & runs.c.ended_at.is_not(None)
                       & runs.c.id.in_(select(timings.c.run_id).distinct()))
                .order_by(runs.c.id.desc()).limit(limit)).all()
            found = []
            for run_id, started, ended in rows:
                steps = db.execute(
                    select(timings.c.principal, timings.c.workload, timings.c.container,
                           timings.c.seconds, timings.c["items"], timings.c.bytes)
                    .where(timings.c.run_id == run_id).order_by(timings.c.id)).all()
                found.append(TimedRun(run_id, (ended - started).total_seconds(),
                                      [Timing(*step) for step in steps]))
        return found

    # units
    def unit(self, principal: str, workload: str, container: str) -> Unit:
        """The unit for this key, created on first use."""
        key = (units.c.principal == principal) & (units.c.workload == workload) & (
            units.c.container == container
        )
        with self._writing() as db:
            row = db.execute(select(units).where(key)).first()
            if row is None:
                db.execute(
                    insert(units).values(
                        principal=principal, workload=workload, container=container,
                        status="pending", copied=0, bytes=0, failed=0, updated_at=_now(),
                    )
                )
                row = db.execute(select(units).where(key)).first()
        return _unit(row)

    def plan_units(self, principal: str, workload: str, run_id: int,
                   decided: Sequence[tuple[str, dict[str, Any]]],
                   step_seconds: float | None = None) -> list[Unit]:
        """Write what the planner decided for a principal's units of a workload (``target``,
        ``source_type``, ``sink_type``, ``spec``, ``chain``; status and cursor for a unit
        settled at planning), in one transaction: each ``(container, columns)`` made on
        first use and marked planned by ``run_id``, as a process needs it to run the unit
        besides the batch file; and the principal's own step in the run, when timed. The
        units are answered in the order given."""
        key = {"b_principal": principal, "b_workload": workload}
        now = _now()
        with self._writing() as db:
            if step_seconds is not None:
                _insert_timing(db, run_id, Timing(principal, workload, "", step_seconds, 0, 0))
            existing = set(db.execute(_UNIT_CONTAINERS, key).scalars())
            new = [container for container, _ in decided if container not in existing]
            if new:
                db.execute(insert(units), [
                    {"principal": principal, "workload": workload, "container": container,
                     "status": "pending", "copied": 0, "bytes": 0, "failed": 0,
                     "updated_at": now} for container in new])
            changes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
            for container, columns in decided:
                changes[tuple(sorted(columns))].append(
                    {**key, "b_container": container, "updated_at": now, "planned_run": run_id,
                     **columns})
            for batch in changes.values():
                db.execute(_UPDATE_UNIT_BY_KEY, batch)
            rows = {row.container: _unit(row) for row in db.execute(_UNIT_ROWS, key)}
        return [rows[container] for container, _ in decided]

    def unit_by_id(self, unit_id: int) -> Unit:
        """A unit by its id; ``LedgerError`` ``no_unit`` when the ledger has none."""
        with self._reading() as db:
            row = db.execute(select(units).where(units.c.id == unit_id)).first()
        if row is None:
            raise LedgerError("no_unit", self.location, str(unit_id))
        return _unit(row)

    def planned_units(self, run_id: int) -> list[Unit]:
        """The units a run planned, in the order they were planned within each chain."""
        with self._reading() as db:
            rows = db.execute(select(units).where(units.c.planned_run == run_id)
                              .order_by(units.c.id)).all()
        return [_unit(row) for row in rows]

    def units_of(self, principal: str, workload: str) -> dict[str, Unit]:
        """The principal's units of a workload, by container."""
        with self._reading() as db:
            rows = db.execute(select(units).where((units.c.principal == principal)
                                                  & (units.c.workload == workload))).all()
        return {unit.container: unit for unit in map(_unit, rows)}

    def all_units(self) -> list[Unit]:
        with self._reading() as db:
            rows = db.execute(select(units).order_by(units.c.principal, units.c.id)).all()
        return [_unit(row) for row in rows]

    def update_unit(self, unit_id: int, **values: Any) -> None:
        with self._writing() as db:
            db.execute(_UPDATE_UNIT, {"b_id": unit_id, "updated_at": _now(), **values})

    def refresh_counts(self, unit_id: int, timed: tuple[int, Timing] | None = None,
                       **values: Any) -> None:
        """Recount copied items, bytes and failures from the item rows; the unit's other
        ``values`` (its status, its cursor at the end) and its step in the run (``timed``:
        the run's id and the timing) written in the same transaction."""
        with self._writing() as db:
            if timed is not None:
                _insert_timing(db, *timed)
            totals = {status: (count, int(size)) for status, count, size
                      in db.execute(_ITEM_TOTALS, {"b_unit": unit_id})}
            done = totals.get(DONE, (0, 0))
            db.execute(_UPDATE_UNIT, {"b_id": unit_id, "copied": done[0], "bytes": done[1],
                                      "failed": totals.get(FAILED, (0, 0))[0],
                                      "updated_at": _now(), **values})

    # items
    def items_of(self, unit_id: int) -> dict[str, ItemRecord]:
        with self._reading() as db:
            rows = db.execute(_ITEM_ROWS, {"b_unit": unit_id}).all()
        return {row[0]: _item(row) for row in rows}

    def iter_items(self, unit_id: int, batch: int = 1000) -> Iterator[ItemRecord]:
        """The unit's items by source id, a page at a time: memory holds one page."""
        after = ""
        while True:
            with self._reading() as db:
                rows = db.execute(
                    select(*_ITEM_COLUMNS).where((items.c.unit_id == unit_id)
                                        & (items.c.source_id > after))
                    .order_by(items.c.source_id).limit(batch)
                ).all()
            if not rows:
                return
            yield from (_item(row) for row in rows)
            after = rows[-1][0]

    def outcomes_of(self, unit_id: int, source_ids: Iterable[str]
                    ) -> dict[str, tuple[str, str | None]]:
        """``source_id -> (status, error_code)`` of the items named that have a record."""
        wanted = list(source_ids)
        found: dict[str, tuple[str, str | None]] = {}
        with self._reading() as db:
            for start in range(0, len(wanted), 500):
                rows = db.execute(
                    select(items.c.source_id, items.c.status, items.c.error_code).where(
                        (items.c.unit_id == unit_id)
                        & items.c.source_id.in_(wanted[start:start + 500]))
                ).all()
                found.update({row[0]: (row[1], row[2]) for row in rows})
        return found

    def failed_items(self) -> list[tuple[Unit, ItemRecord]]:
        """Items refused by the target or whose send was never confirmed."""
        with self._reading() as db:
            rows = db.execute(
                select(units, *_ITEM_COLUMNS)
                .join(items, items.c.unit_id == units.c.id)
                .where(items.c.status.in_((FAILED, UNCONFIRMED)))
                .order_by(units.c.principal, units.c.id, items.c.source_id)
            ).all()
        return [(_unit(row), _item(row[len(units.c):])) for row in rows]

    def claimed_refs(self, principal: str, target_container: str) -> set[str]:
        """Target refs already given to a source item, in every unit landing in that folder."""
        with self._reading() as db:
            rows = db.execute(
                select(items.c.target_ref)
                .join(units, units.c.id == items.c.unit_id)
                .where(
                    (units.c.principal == principal)
                    & (units.c.target_container == target_container)
                    & (items.c.target_ref.is_not(None))
                )
            ).all()
        return {row[0] for row in rows}

    def claimed_count(self, principal: str, target_container: str) -> int:
        """How many target items the ledger accounts for in that folder."""
        with self._reading() as db:
            return int(db.execute(
                select(func.count(func.distinct(items.c.target_ref)))
                .join(units, units.c.id == items.c.unit_id)
                .where(
                    (units.c.principal == principal)
                    & (units.c.target_container == target_container)
                    & (items.c.target_ref.is_not(None))
                )
            ).scalar_one())

    def mark_gone(self, unit_id: int, source_ids: Iterable[str]) -> None:
        """Items copied whose source deleted them, their copies left on the target."""
        ids = list(source_ids)
        if ids:
            with self._writing() as db:
                db.execute(update(items).where(
                    (items.c.unit_id == unit_id) & items.c.source_id.in_(ids)
                    & (items.c.status == DONE)).values(status=GONE, updated_at=_now()))

    def mark_inflight(self, unit_id: int, records: Iterable[dict[str, Any]]) -> None:
        """Record items about to be sent. Each record: source_id, fingerprint, size, and
        flags and internal_date (mail) or version and source_hashes (documents: a dict,
        ``Document.source_hashes``). Committed before the first byte goes to the sink."""
        rows = [
            {"source_id": r["source_id"], "fingerprint": r["fingerprint"], "size": r["size"],
             "flags": encode_flags(r.get("flags", ())), "internal_date": r.get("internal_date"),
             "version": r.get("version"), "status": INFLIGHT, "error_code": None,
             "error_detail": None,
             **({"source_hashes": encode_hashes(r["source_hashes"])}
                if "source_hashes" in r else {})}
            for r in records
        ]
        if rows:
            with self._writing(durable=True) as db:
                self._upsert(db, unit_id, rows, count_attempt=True)

    def record_outcomes(self, unit_id: int, outcomes: Iterable[dict[str, Any]]) -> None:
        """Record what the sink answered. Each outcome: source_id and either target_ref (done)
        or error_code and error_detail (failed; ``unconfirmed`` true when the item may be
        stored all the same); optionally fingerprint, size, flags, internal_date. Items never
        recorded before (refused before sending) are inserted."""
        rows = []
        for outcome in outcomes:
            row: dict[str, Any] = {"source_id": outcome["source_id"]}
            if outcome.get("target_ref"):
                row.update(status=DONE, target_ref=outcome["target_ref"], error_code=None,
                           error_detail=None, target_version=outcome.get("target_version"),
                           target_fingerprint=outcome.get("target_fingerprint"))
            else:
                row.update(status=UNCONFIRMED if outcome.get("unconfirmed") else FAILED,
                           error_code=outcome["error_code"],
                           error_detail=outcome.get("error_detail", ""))
            for key in ("fingerprint", "size", "internal_date"):
                if key in outcome:
                    row[key] = outcome[key]
            if "flags" in outcome:
                row["flags"] = encode_flags(outcome["flags"])
            rows.append(row)
        if rows:
            with self._writing() as db:
                self._upsert(db, unit_id, rows, count_attempt=False)

    def _upsert(self, db: Connection, unit_id: int, rows: list[dict[str, Any]],
                count_attempt: bool) -> None:
        """Insert the rows, or update the columns given of those that exist, in one
        statement per set of columns, each row stamped now. Straight to the driver:
        SQLAlchemy's work per row (parameters built, each value processed) cost more than
        SQLite's own, per message."""
        stamp = self._stamp(_now())
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            by_keys[tuple(sorted(row))].append({**row, "unit_id": unit_id, "updated_at": stamp})
        for keys, batch in by_keys.items():
            db.exec_driver_sql(self._upsert_statement(keys, count_attempt), batch)

    def _upsert_statement(self, keys: tuple[str, ...], count_attempt: bool) -> str:
        cached = self._statements.get((keys, count_attempt))
        if cached is not None:
            return cached
        unknown = [key for key in keys
                   if key not in items.c or key in ("unit_id", "attempts", "updated_at")]
        if unknown:
            raise ValueError(f"not an item column: {unknown}")
        columns = ("unit_id", "updated_at", *keys)
        changed = [f"{key} = excluded.{key}" for key in ("updated_at", *keys)
                   if key != "source_id"]
        if count_attempt:
            changed.append("attempts = items.attempts + 1")
        values = ", ".join(self._placeholder.format(column) for column in columns)
        statement = (
            f"INSERT INTO items ({', '.join(columns)}, attempts) VALUES ({values}, 1) "
            f"ON CONFLICT (unit_id, source_id) DO UPDATE SET {', '.join(changed)}")
        self._statements[(keys, count_attempt)] = statement
        return statement

    def set_flags(self, unit_id: int, changes: Iterable[tuple[str, frozenset[str]]]) -> None:
        changes = list(changes)
        if not changes:
            return
        with self._writing() as db:
            for source_id, flags in changes:
                db.execute(
                    update(items)
                    .where((items.c.unit_id == unit_id) & (items.c.source_id == source_id))
                    .values(flags=encode_flags(flags), updated_at=_now())
                )

    def rekey(self, unit_id: int, renames: dict[str, str], forget: Iterable[str]) -> None:
        """After a source epoch change: move rows to their new source ids, drop the others
        that were never done (their copies, if any, are found again by fingerprint)."""
        with self._writing() as db:
            for old, new in renames.items():
                db.execute(
                    update(items)
                    .where((items.c.unit_id == unit_id) & (items.c.source_id == old))
                    .values(source_id="\0" + new)
                )
            for new in renames.values():
                db.execute(
                    update(items)
                    .where((items.c.unit_id == unit_id) & (items.c.source_id == "\0" + new))
                    .values(source_id=new)
                )
            for source_id in forget:
                db.execute(
                    delete(items).where((items.c.unit_id == unit_id) & (items.c.source_id == source_id))
                )


def _insert_timing(db: Connection, run_id: int, timing: Timing) -> None:
    db.execute(insert(timings), {
        "run_id": run_id, "principal": timing.principal, "workload": timing.workload,
        "container": timing.container, "seconds": timing.seconds, "items": timing.items,
        "bytes": timing.bytes})


def _create_schema(engine: Engine) -> None:
    """Create what is missing. Two processes starting together (a ``status`` beside a
    ``run``) may both see a table missing: the second one's CREATE then fails, and looking
    again finds the table made by the first. Each such failure means another process made
    one more table, index or column, so there are at most as many as the schema has of them."""
    objects = sum(1 + len(table.indexes) + len(table.columns) for table in metadata.sorted_tables)
    for attempt in range(objects + 1):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except DBAPIError as error:
            lowered = str(error).lower()
            raced = "already exists" in lowered or "duplicate column" in lowered
            if not raced or attempt == objects:
                raise


def _add_missing_columns(engine: Engine) -> None:
    """Columns added since a ledger was made (a batch pre-staged by an older bascule), added
    empty: every column added is nullable, and empty means "not known yet"."""
    present = inspect(engine)
    for table in metadata.sorted_tables:
        have = {column["name"] for column in present.get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                kind = column.type.compile(dialect=engine.dialect)
                with engine.begin() as db:
                    db.execute(text_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" '
                                        f"{kind}"))


def _sqlite_file(address: URL) -> Path | None:
    if address.get_backend_name() != "sqlite" or address.database in (None, "", ":memory:"):
        return None
    return Path(address.database)


def _shown(url: str) -> str:
    """The ledger's place as a person may read it: a file, or a URL without its password."""
    try:
        address = make_url(url)
    except ArgumentError:
        return "?"
    if address.get_backend_name() == "sqlite":
        return address.database or ":memory:"
    return address.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The wait first: the switch to WAL takes the file's lock, which another process
    # opening the same ledger may hold a moment (CI saw six starting together fail on it).
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    # FULL until a write says otherwise (``Ledger._writing``): a committed "inflight"
    # survives a power cut, not only a killed process.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


BUSY_TIMEOUT_MS = 30000
"""How long a ledger statement waits for another process's lock before it fails."""


def _unit(row: Any) -> Unit:
    m = row._mapping
    cursor = m[units.c.cursor]
    if isinstance(cursor, str):
        cursor = json.loads(cursor)
    spec = m[units.c.spec]
    if isinstance(spec, str):
        spec = json.loads(spec)
    return Unit(
        id=m[units.c.id], principal=m[units.c.principal], workload=m[units.c.workload],
        container=m[units.c.container], target_container=m[units.c.target_container],
        status=m[units.c.status], cursor=cursor, copied=m[units.c.copied] or 0,
        bytes=m[units.c.bytes] or 0, failed=m[units.c.failed] or 0,
        last_error=m[units.c.last_error], target=m[units.c.target],
        source_type=m[units.c.source_type], sink_type=m[units.c.sink_type], spec=spec,
        chain=m[units.c.chain], planned_run=m[units.c.planned_run],
    )


def _item(row: Sequence[Any]) -> ItemRecord:
    (source_id, fingerprint, size, flags, internal_date, version, target_ref, status,
     error_code, error_detail, attempts, target_version, target_fingerprint, source_hashes) = row
    return ItemRecord(source_id, fingerprint, size, decode_flags(flags), internal_date, version,
                      target_ref, status, error_code, error_detail, attempts or 0,
                      target_version, target_fingerprint, source_hashes)
