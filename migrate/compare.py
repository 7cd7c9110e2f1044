"""Compare a target mail folder, whole, with the source folders that land in it.

``verify`` proves a migration: it reads both sides, not the ledger's word for them. Every
message of the source folders is hashed as the target would hold it; every message of the
target folder is hashed as it is; the ledger only says which target message was meant for
which source message. Both sides go into a scratch SQLite file, so memory stays flat
whatever the folder size, and the comparison is a few SQL statements:

1. a source message and the target message the ledger gave it, with the same bytes: matched;
2. the others are matched by content, twin for twin (a ledger lost or restored);
3. a source message left: ``missing_on_target``, or ``fingerprint_mismatch`` when the target
   message the ledger names holds other bytes;
4. a target message left: ``duplicate_on_target`` when the source has those bytes (they are
   there more often than at the source), ``deleted_at_source`` when the ledger copied it and
   the source has since deleted it (a delta pass leaves it: information, not a fault), else
   ``not_in_source``;
5. matched pairs whose flags or internal dates differ: ``flags_mismatch``, ``date_mismatch``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import SYSTEM_FLAGS, Container
from connectors.protocols import MailSink, MailSource
from migrate.ledger import Ledger, Unit
from migrate.mail import fetch_as_stored

INSERT_BATCH = 500
SCHEMA = """
create table led (unit integer, sid text, ref text);
create table src (unit integer, sid text, fp text, flags text, idate integer, ref text);
create table tgt (ref text primary key, fp text, flags text, idate integer,
                  matched integer default 0);
create index led_key on led (unit, sid);
create index led_ref on led (ref);
create index src_fp on src (fp);
create index tgt_fp on tgt (fp);
"""


@dataclass(frozen=True)
class Finding:
    code: str
    source_id: str = ""
    target_ref: str = ""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class FolderCheck:
    """What one target folder (or document container) holds against its source."""

    source_messages: int = 0
    target_messages: int = 0
    findings: list[Finding] = field(default_factory=list)


def compare_folder(
    ledger: Ledger, source: MailSource, sink: MailSink, native_name: str | None,
    feeders: list[tuple[Unit | None, Container]],
) -> FolderCheck:
    """Compare the target folder ``native_name`` (``None``: it was never created) with the
    source folders in ``feeders``, each with its ledger unit (``None``: never run)."""
    with tempfile.TemporaryDirectory(prefix="bascule-verify-") as scratch:
        db = sqlite3.connect(Path(scratch) / "compare.sqlite")
        try:
            db.executescript("pragma journal_mode=off; pragma synchronous=off;" + SCHEMA)
            return _compare(db, ledger, source, sink, native_name, feeders)
        finally:
            db.close()


def _compare(db: sqlite3.Connection, ledger: Ledger, source: MailSource, sink: MailSink,
             native_name: str | None, feeders: list[tuple[Unit | None, Container]]
             ) -> FolderCheck:
    keep = None if sink.capabilities.keywords else SYSTEM_FLAGS
    check = FolderCheck()
    for number, (unit, container) in enumerate(feeders):
        if unit is not None:
            _insert(db, "insert into led values (?, ?, ?)",
                    ((number, record.source_id, record.target_ref)
                     for record in ledger.iter_items(unit.id) if record.target_ref))
        for ids in _id_pages(source, container):
            messages = fetch_as_stored(source, container, ids, sink.capabilities)
            check.source_messages += _insert(
                db, "insert into src values (?, ?, ?, ?, ?, null)",
                ((number, m.source_id, m.fingerprint, _flags(m.flags, keep),
                  _seconds(m.internal_date)) for m in messages))
    if native_name is not None and sink.count(native_name):
        check.target_messages = _insert(
            db, "insert or replace into tgt (ref, fp, flags, idate) values (?, ?, ?, ?)",
            ((item.target_ref, item.fingerprint, _flags(item.flags, keep),
              _seconds(item.internal_date))
             for item in sink.inventory(native_name, fingerprints=True)))
    _match(db)
    check.findings = list(_findings(db))
    return check


def _id_pages(source: MailSource, container: Container) -> Iterable[list[str]]:
    """The container's source ids in pages when the source can say them so (``PagedSource``),
    else in one page from its listing."""
    pages = getattr(source, "id_pages", None)
    if pages is not None:
        return pages(container)
    return [[ref.source_id for ref in source.list_changes(container, None).refs]]


def _match(db: sqlite3.Connection) -> None:
    # 1. The pair the ledger made, when the bytes agree.
    db.execute("""
        update src set ref = (
            select t.ref from led l join tgt t on t.ref = l.ref
            where l.unit = src.unit and l.sid = src.sid and t.fp = src.fp)""")
    db.execute("update tgt set matched = 1 where ref in (select ref from src where ref is not null)")
    # 2. The rest by content, the n-th source twin with the n-th target twin.
    db.execute("""
        create temp table pairs as
        with s as (select rowid as id, fp, row_number() over (partition by fp order by rowid)
                   as n from src where ref is null),
             t as (select ref, fp, row_number() over (partition by fp order by ref) as n
                   from tgt where matched = 0)
        select s.id, t.ref from s join t on s.fp = t.fp and s.n = t.n""")
    db.execute("update src set ref = (select ref from pairs where pairs.id = src.rowid) "
               "where rowid in (select id from pairs)")
    db.execute("update tgt set matched = 1 where ref in (select ref from pairs)")


def _findings(db: sqlite3.Connection) -> Iterator[Finding]:
    for sid, ledger_ref, held in db.execute("""
            select s.sid, l.ref, t.ref from src s
            left join led l on l.unit = s.unit and l.sid = s.sid
            left join tgt t on t.ref = l.ref
            where s.ref is null order by s.unit, s.sid"""):
        if held is not None:
            yield Finding("fingerprint_mismatch", sid, held)
        else:
            yield Finding("missing_on_target", sid, ledger_ref or "")
    for ref, at_source, known in db.execute("""
            select t.ref, exists(select 1 from src where src.fp = t.fp),
                   exists(select 1 from led where led.ref = t.ref)
            from tgt t where matched = 0 order by t.ref"""):
        code = ("duplicate_on_target" if at_source
                else "deleted_at_source" if known else "not_in_source")
        yield Finding(code, "", ref)
    for sid, ref, source_flags, target_flags, source_date, target_date in db.execute("""
            select s.sid, t.ref, s.flags, t.flags, s.idate, t.idate
            from src s join tgt t on t.ref = s.ref
            where s.flags != t.flags or s.idate != t.idate order by s.unit, s.sid"""):
        if source_flags != target_flags:
            yield Finding("flags_mismatch", sid, ref,
                          {"source": source_flags, "target": target_flags})
        if source_date is not None and target_date is not None and source_date != target_date:
            yield Finding("date_mismatch", sid, ref, {
                "source": _shown(source_date), "target": _shown(target_date)})


def _insert(db: sqlite3.Connection, statement: str, rows: Iterator[tuple]) -> int:
    count = 0
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= INSERT_BATCH:
            db.executemany(statement, batch)
            count += len(batch)
            batch.clear()
    db.executemany(statement, batch)
    return count + len(batch)


def _flags(flags: frozenset[str], keep: frozenset[str] | None) -> str:
    kept = {flag for flag in flags if flag.lower() != "\\recent"}
    return " ".join(sorted(kept if keep is None else kept & keep))


def _seconds(moment: datetime | None) -> int | None:
    """An internal date as an instant to the second: targets keep no finer, and a Maildir
    target keeps no offset."""
    return int(moment.timestamp()) if moment is not None else None


def _shown(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()
