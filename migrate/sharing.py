"""Sharing exported per space: after a run's units, who may see each item of each
principal's files at the source (``mappings.sharing``), one CSV per space in the work
folder's ``sharing/``, with each item's path on the target as the ledger recorded it (after
the target's renames).

The report of the run gets a line per space naming its CSV (``sharing_exported``), and a
line per permission that cannot be carried (``sharing_not_on_target``: the item is not on
the target, e.g. an empty folder, a OneNote notebook, a file that failed). A source that
cannot say who sees what (``SharingSource``) has no CSV.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from connectors.base import BasculeError
from mappings.sharing import (
    COLUMNS,
    CREATED,
    PRESENT,
    SKIPPED,
    Grant,
    SharingSource,
    sharing_row,
    table_domains,
)
from mappings.users import UserMapping
from migrate.ledger import DONE, ItemRecord, Unit
from migrate.mail import container_key
from migrate.units import Bench, text_of
from reports.files import message_columns, write_csv
from reports.i18n import Text

FILES = "files"
SHARING_FOLDER = "sharing"


def export_sharing(bench: Bench, users: Iterable[UserMapping], work_dir: Path
                   ) -> list[dict[str, Any]]:
    """Write each principal's CSV; the report's rows."""
    rows: list[dict[str, Any]] = []
    domains = table_domains(bench.user_map)
    for user in users:
        if bench.stop.is_set():
            break
        if not bench.connectors.serves(user, FILES):
            continue
        try:
            rows += _export_one(bench, user, work_dir, domains)
        except BasculeError as error:
            rows.append(_row(user, Text.of("sharing_unread", reason=text_of(error).en)))
    return rows


def _export_one(bench: Bench, user: UserMapping, work_dir: Path, domains: set[str]
                ) -> list[dict[str, Any]]:
    units = bench.ledger.units_of(user.source, FILES)
    grants: list[dict[str, Any]] = []
    report: list[dict[str, Any]] = []
    with bench.document_source(user, FILES) as source:
        if not isinstance(source, SharingSource):
            return []
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
    path = write_csv(work_dir / SHARING_FOLDER / f"{_file_name(user.target)}.csv", COLUMNS,
                     grants)
    return [_row(user, Text.of("sharing_exported", grants=len(grants), file=str(path)),
                 target_ref=str(path))] + report + _apply(bench, user, grants)


def _apply(bench: Bench, user: UserMapping, grants: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """The space's rows applied by the target, if it does; the report's rows."""
    try:
        target = bench.connectors.open_sharing_target(user, FILES)
    except BasculeError as error:
        return [_row(user, Text.of("sharing_not_applied", reason=text_of(error).en))]
    if target is None:
        return []
    rows: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    own = [grant for grant in grants if grant["inherited"] != "yes"]
    try:
        with closing(target):
            for outcome in target.apply(own):
                if bench.stop.is_set():
                    break
                counts[outcome.kind] += 1
                rows.append(_row(user, Text.of(outcome.code, **outcome.params),
                                 source_id=outcome.row.get("source_id", "")))
    except BasculeError as error:
        rows.append(_row(user, Text.of("sharing_not_applied", reason=text_of(error).en)))
    return [_row(user, Text.of("sharing_applied", created=counts[CREATED],
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


def _file_name(target: str) -> str:
    """A space's login as a file name that stays in the sharing folder."""
    return "".join(c if c.isalnum() or c in "-_.@" else "_" for c in target).lstrip(".") or "_"


def _row(user: UserMapping, text: Text, **columns: str) -> dict[str, Any]:
    return {"principal": user.source, "target": user.target, "action": "sharing",
            **columns, **message_columns(text)}
