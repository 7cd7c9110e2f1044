"""Sharing exported per space or mailbox: after a run's units, who may see each item of each
principal's files at the source, or open each of its mailbox's folders (``mappings.sharing``),
one CSV per space in the work folder's ``sharing/`` and one per mailbox in its
``permissions/``, with each item's or folder's path on the target as the ledger recorded it
(after the target's renames).

The report of the run gets a line per space or mailbox naming its CSV (``sharing_exported``,
``permissions_exported``), and a line per permission that cannot be carried
(``sharing_not_on_target``: the item is not on the target, e.g. an empty folder, a OneNote
notebook, a file that failed; ``permissions_not_on_target``: a folder of a workload not moved,
or left out). A source that cannot say who sees what (``SharingSource``, a mail source
without ``open_sharing_source``) has no CSV. A target that applies the rows
(``SharingTarget``) does so after the CSV is written; each of its outcomes is a line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from connectors.base import BasculeError
from mappings.sharing import (
    COLUMNS,
    CREATED,
    MAILBOX_COLUMNS,
    PRESENT,
    SKIPPED,
    Grant,
    SharingSource,
    mailbox_row,
    sharing_row,
    table_domains,
)
from mappings.users import UserMapping
from migrate.batch import MAIL
from migrate.ledger import DONE, ItemRecord, Unit
from migrate.mail import container_key
from migrate.units import Bench, text_of
from reports.files import message_columns, write_csv
from reports.i18n import Text

FILES = "files"
SHARING_FOLDER = "sharing"
PERMISSIONS_FOLDER = "permissions"

Rows = list[dict[str, Any]]
Reader = Callable[[Bench, UserMapping, set[str]], tuple[Rows, Rows] | None]
"""A principal's CSV rows and the report's rows about them; ``None``: the source cannot say."""


@dataclass(frozen=True)
class _Export:
    """What differs between a workload's exports; the rest is ``export_sharing``'s."""

    folder: str
    columns: list[str]
    read: Reader
    exported: str
    """The report's code for the line naming the CSV."""
    unread: str
    applied: str
    not_applied: str
    carried: Callable[[dict[str, Any]], bool]
    """The rows given to a target that applies them; the others stay in the CSV (a space's
    rows its folders pass to their content, a mailbox's delegates and FullAccess)."""


def export_sharing(bench: Bench, workload: str, users: Iterable[UserMapping], work_dir: Path,
                   workers: int = 1) -> list[dict[str, Any]]:
    """Write each principal's CSV of a workload (``files`` or ``mail``), ``workers``
    principals at a time (each costs round trips to the source: a few per mailbox, one per
    file and folder of a space); the report's rows, in the principals' order."""
    kind = EXPORTS[workload]
    domains = table_domains(bench.user_map)
    served = [user for user in users if bench.connectors.serves(user, workload)]

    def export(user: UserMapping) -> list[dict[str, Any]]:
        if bench.stop.is_set():
            return []
        try:
            return _export_one(bench, user, workload, kind, work_dir, domains)
        except BasculeError as error:
            return [_row(user, Text.of(kind.unread, reason=text_of(error).en))]

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(served)))) as pool:
        return [row for rows in pool.map(export, served) for row in rows]


def _export_one(bench: Bench, user: UserMapping, workload: str, kind: _Export, work_dir: Path,
                domains: set[str]) -> list[dict[str, Any]]:
    read = kind.read(bench, user, domains)
    if read is None:
        return []
    grants, report = read
    path = write_csv(work_dir / kind.folder / f"{_file_name(user.target)}.csv", kind.columns,
                     grants)
    return [_row(user, Text.of(kind.exported, grants=len(grants), file=str(path)),
                 target_ref=str(path))] + report + _apply(bench, user, workload, kind, grants)


def _space_rows(bench: Bench, user: UserMapping, domains: set[str]) -> tuple[Rows, Rows] | None:
    """Who may see each item of a space, each item where the ledger put it on the target."""
    units = bench.ledger.units_of(user.source, FILES)
    grants: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    with bench.document_source(user, FILES) as source:
        if not isinstance(source, SharingSource):
            return None
        for container in source.document_containers(FILES):
            unit = units.get(container_key(container.path))
            records = bench.ledger.items_of(unit.id) if unit is not None else {}
            for grant in source.sharing(container):
                place = _target_path(unit, records, grant)
                if place is None:
                    report.append(_row(user, Text.of(
                        "sharing_not_on_target", path="/".join((*container.path, *grant.path)),
                        who=grant.who, role=grant.role), source_id=grant.source_id))
                    continue
                grants.append(sharing_row(user.target, place, grant, bench.user_map, domains))
    return grants, report


def _mailbox_rows(bench: Bench, user: UserMapping, domains: set[str]
                  ) -> tuple[Rows, Rows] | None:
    """Who may open the mailbox and each of its folders, each folder where the ledger put it
    on the target. A folder that is not there (a workload not moved, a folder left out)
    keeps its row, with its source path only, and is a line of the report."""
    source = bench.connectors.open_sharing_source(user, MAIL)
    if source is None:
        return None
    units: dict[str, dict[str, Unit]] = {}
    grants: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    with closing(source):
        for grant in source.mailbox_grants():
            place = ""
            if grant.path:
                if grant.workload not in units:
                    units[grant.workload] = bench.ledger.units_of(user.source, grant.workload)
                unit = units[grant.workload].get(container_key(grant.path))
                place = unit.target_container if unit is not None and unit.target_container \
                    else ""
                if not place:
                    report.append(_row(user, Text.of(
                        "permissions_not_on_target", path="/".join(grant.path), who=grant.who,
                        level=grant.level or grant.who_type), source_id=grant.source_id))
            grants.append(mailbox_row(user.source, place, grant, bench.user_map, domains))
        report += [_row(user, Text.of(code, **params)) for code, params in source.notes]
    return grants, report


def _apply(bench: Bench, user: UserMapping, workload: str, kind: _Export,
           grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The principal's rows applied by the target, if it does; the report's rows."""
    try:
        target = bench.connectors.open_sharing_target(user, workload)
    except BasculeError as error:
        return [_row(user, Text.of(kind.not_applied, reason=text_of(error).en))]
    if target is None:
        return []
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    own = [grant for grant in grants if kind.carried(grant)]
    try:
        with closing(target):
            for outcome in target.apply(own):
                if bench.stop.is_set():
                    break
                counts[outcome.kind] += 1
                rows.append(_row(user, Text.of(outcome.code, **outcome.params),
                                 source_id=outcome.row.get("source_id", "")))
    except BasculeError as error:
        rows.append(_row(user, Text.of(kind.not_applied, reason=text_of(error).en)))
    return [_row(user, Text.of(kind.applied, created=counts[CREATED],
                               present=counts[PRESENT], skipped=counts[SKIPPED],
                               inherited=len(grants) - len(own)))] + rows


def _target_path(unit: Unit | None, records: dict[str, ItemRecord], grant: Grant
                 ) -> str | None:
    """Where the grant's item is in the space on the target, or ``None`` if not there."""
    if unit is None or not unit.target_container:
        return None
    if grant.item == "library":
        return unit.target_container
    wanted = grant.source_id if grant.item == "file" else grant.below
    record = records.get(wanted) if wanted else None
    if record is None or record.status != DONE or not record.target_ref:
        return None
    if grant.item == "file":
        return record.target_ref
    depth = len(unit.target_container.split("/")) + len(grant.path)
    return "/".join(record.target_ref.split("/")[:depth])


EXPORTS = {
    FILES: _Export(SHARING_FOLDER, COLUMNS, _space_rows, "sharing_exported", "sharing_unread",
                   "sharing_applied", "sharing_not_applied",
                   lambda row: row["inherited"] != "yes"),
    MAIL: _Export(PERMISSIONS_FOLDER, MAILBOX_COLUMNS, _mailbox_rows, "permissions_exported",
                  "permissions_unread_mailbox", "permissions_applied", "permissions_not_applied",
                  lambda row: row["kind"] == "folder" and row["workload"] == MAIL
                  and bool(row["path"])),
}
"""The workloads whose sharing is exported."""


def _file_name(target: str) -> str:
    """A space's or mailbox's login as a file name that stays in the sharing folder."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in target).lstrip(".") or "_"


def _row(user: UserMapping, text: Text, **columns: str) -> dict[str, Any]:
    return {"principal": user.source, "target": user.target, "action": "sharing",
            **columns, **message_columns(text)}
