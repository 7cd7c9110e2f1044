"""The ledger: runs, work units, items and cursors, in SQLite (default) or PostgreSQL.

An item is recorded ``done`` only after the sink acknowledged it. Before anything is sent,
the item is recorded ``inflight`` with its fingerprint, in a committed transaction: after a
crash, the runner asks the sink to ``find`` every in-flight item before sending it again.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
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
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

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
    Column("status", String(20), nullable=False),
    Column("error_code", String(40)),
    Column("error_detail", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True)),
)

INFLIGHT, DONE, FAILED = "inflight", "done", "failed"


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


def encode_flags(flags: Iterable[str]) -> str:
    return " ".join(sorted(flags))


def decode_flags(text: str | None) -> frozenset[str]:
    return frozenset(text.split()) if text else frozenset()


def _now() -> datetime:
    return datetime.now(UTC)


class Ledger:
    """Checkpoints of a batch. Thread-safe: writes are serialised by a lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._write = threading.Lock()
        metadata.create_all(self.engine)

    @classmethod
    def in_folder(cls, folder: Path) -> Ledger:
        folder.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{folder / 'ledger.sqlite'}")

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        with self._write, self.engine.begin() as connection:
            yield connection

    def close(self) -> None:
        self.engine.dispose()

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

    def last_run(self, command: str) -> dict[str, Any] | None:
        with self.engine.connect() as db:
            row = db.execute(
                select(runs).where(runs.c.command == command).order_by(runs.c.id.desc()).limit(1)
            ).first()
            return dict(row._mapping) if row else None

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

    def all_units(self) -> list[Unit]:
        with self.engine.connect() as db:
            rows = db.execute(select(units).order_by(units.c.principal, units.c.id)).all()
        return [_unit(row) for row in rows]

    def update_unit(self, unit_id: int, **values: Any) -> None:
        with self._writing() as db:
            db.execute(update(units).where(units.c.id == unit_id).values(updated_at=_now(), **values))

    def refresh_counts(self, unit_id: int) -> None:
        """Recount copied items, bytes and failures from the item rows."""
        with self._writing() as db:
            done = db.execute(
                select(func.count(), func.coalesce(func.sum(items.c.size), 0)).where(
                    (items.c.unit_id == unit_id) & (items.c.status == DONE)
                )
            ).one()
            failed = db.execute(
                select(func.count()).where((items.c.unit_id == unit_id) & (items.c.status == FAILED))
            ).scalar_one()
            db.execute(
                update(units)
                .where(units.c.id == unit_id)
                .values(copied=done[0], bytes=int(done[1]), failed=failed, updated_at=_now())
            )

    # items
    def items_of(self, unit_id: int) -> dict[str, ItemRecord]:
        with self.engine.connect() as db:
            rows = db.execute(select(items).where(items.c.unit_id == unit_id)).all()
        return {row.source_id: _item(row) for row in rows}

    def failed_items(self) -> list[tuple[Unit, ItemRecord]]:
        with self.engine.connect() as db:
            rows = db.execute(
                select(units, items)
                .join(items, items.c.unit_id == units.c.id)
                .where(items.c.status == FAILED)
                .order_by(units.c.principal, units.c.id, items.c.source_id)
            ).all()
        return [(_unit(row), _item(row)) for row in rows]

    def claimed_refs(self, principal: str, target_container: str) -> set[str]:
        """Target refs already given to a source item, in every unit landing in that folder."""
        with self.engine.connect() as db:
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

    def mark_inflight(self, unit_id: int, records: Iterable[dict[str, Any]]) -> None:
        """Record items about to be sent. Each record: source_id, fingerprint, size, and
        flags and internal_date (mail) or version (documents). Committed before the first
        byte goes to the sink."""
        now = _now()
        rows = [
            {"source_id": r["source_id"], "fingerprint": r["fingerprint"], "size": r["size"],
             "flags": encode_flags(r.get("flags", ())), "internal_date": r.get("internal_date"),
             "version": r.get("version"), "status": INFLIGHT, "error_code": None,
             "error_detail": None, "updated_at": now}
            for r in records
        ]
        if rows:
            with self._writing() as db:
                self._upsert(db, unit_id, rows, count_attempt=True)

    def record_outcomes(self, unit_id: int, outcomes: Iterable[dict[str, Any]]) -> None:
        """Record what the sink answered. Each outcome: source_id and either target_ref (done)
        or error_code and error_detail (failed); optionally fingerprint, size, flags,
        internal_date. Items never recorded before (refused before sending) are inserted."""
        now = _now()
        rows = []
        for outcome in outcomes:
            row: dict[str, Any] = {"source_id": outcome["source_id"], "updated_at": now}
            if outcome.get("target_ref"):
                row.update(status=DONE, target_ref=outcome["target_ref"], error_code=None,
                           error_detail=None)
            else:
                row.update(status=FAILED, error_code=outcome["error_code"],
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

    @staticmethod
    def _upsert(db: Connection, unit_id: int, rows: list[dict[str, Any]],
                count_attempt: bool) -> None:
        """Update the rows that exist and insert the others, in a few bulk statements."""
        attempts = {
            row.source_id: row.attempts
            for row in db.execute(
                select(items.c.source_id, items.c.attempts).where(
                    (items.c.unit_id == unit_id)
                    & items.c.source_id.in_([r["source_id"] for r in rows])
                )
            )
        }
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        inserts = []
        for row in rows:
            if row["source_id"] in attempts:
                values = {k: v for k, v in row.items() if k != "source_id"}
                if count_attempt:
                    values["attempts"] = attempts[row["source_id"]] + 1
                values.update(b_unit=unit_id, b_source=row["source_id"])
                updates[tuple(sorted(values))].append(values)
            else:
                inserts.append({"unit_id": unit_id, "attempts": 1, **row})
        for batch in updates.values():
            db.execute(
                update(items).where(
                    (items.c.unit_id == bindparam("b_unit"))
                    & (items.c.source_id == bindparam("b_source"))
                ),
                batch,
            )
        by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for row in inserts:
            by_keys[tuple(sorted(row))].append(row)
        for batch in by_keys.values():
            db.execute(insert(items), batch)

    def set_flags(self, unit_id: int, changes: Iterable[tuple[str, frozenset[str]]]) -> None:
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed "inflight" or "done" survives a power cut, not only a killed process.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _unit(row: Any) -> Unit:
    m = row._mapping
    cursor = m[units.c.cursor]
    if isinstance(cursor, str):
        cursor = json.loads(cursor)
    return Unit(
        id=m[units.c.id], principal=m[units.c.principal], workload=m[units.c.workload],
        container=m[units.c.container], target_container=m[units.c.target_container],
        status=m[units.c.status], cursor=cursor, copied=m[units.c.copied] or 0,
        bytes=m[units.c.bytes] or 0, failed=m[units.c.failed] or 0,
        last_error=m[units.c.last_error],
    )


def _item(row: Any) -> ItemRecord:
    m = row._mapping
    return ItemRecord(
        source_id=m[items.c.source_id], fingerprint=m[items.c.fingerprint], size=m[items.c.size],
        flags=decode_flags(m[items.c.flags]), internal_date=m[items.c.internal_date],
        version=m[items.c.version], target_ref=m[items.c.target_ref], status=m[items.c.status],
        error_code=m[items.c.error_code], error_detail=m[items.c.error_detail],
        attempts=m[items.c.attempts] or 0,
    )
