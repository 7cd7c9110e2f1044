"""The status report: what the ledger holds, unit by unit, and the items it could not copy.

A run or unit marked ``running`` while no command holds the work folder died with its
process: it is shown ``interrupted``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from reports.files import message_columns
from reports.i18n import Text


class LedgerUnit(Protocol):
    """A unit as the ledger keeps it (``migrate.ledger.Unit``)."""

    @property
    def principal(self) -> str: ...

    @property
    def container(self) -> str: ...

    @property
    def target_container(self) -> str | None: ...

    @property
    def status(self) -> str: ...

    @property
    def copied(self) -> int: ...

    @property
    def bytes(self) -> int: ...

    @property
    def failed(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...


class FailedItem(Protocol):
    """An item the target refused or never confirmed (``migrate.ledger.ItemRecord``)."""

    @property
    def source_id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def error_code(self) -> str | None: ...

    @property
    def error_detail(self) -> str | None: ...


def status_report(
    batch: str, units: Iterable[LedgerUnit], failed: Iterable[tuple[LedgerUnit, FailedItem]],
    last_run: Mapping[str, Any] | None, alive: bool, folder_of: Callable[[str], str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The report's document and rows. ``alive`` says whether a command holds the work
    folder now; ``folder_of`` shows a unit's container (the ledger's key) as a folder."""
    rows: list[dict[str, Any]] = []
    totals = {"units": 0, "done": 0, "failed_units": 0, "copied": 0, "bytes": 0,
              "failed_items": 0}
    for unit in units:
        state = unit.status if alive or unit.status != "running" else "interrupted"
        totals["units"] += 1
        totals["done"] += state == "done"
        totals["failed_units"] += state == "failed"
        totals["copied"] += unit.copied
        totals["bytes"] += unit.bytes
        totals["failed_items"] += unit.failed
        rows.append({"principal": unit.principal, "folder": folder_of(unit.container),
                     "target_folder": unit.target_container, "action": state,
                     "copied": unit.copied, "bytes": unit.bytes, "failed": unit.failed,
                     "message_en": unit.last_error or ""})
    for unit, item in failed:
        text = Text.of(item.error_code or "error", detail=item.error_detail or "")
        rows.append({"principal": unit.principal, "folder": folder_of(unit.container),
                     "action": item.status, "source_id": item.source_id,
                     **message_columns(text)})
    if last_run is not None and last_run["status"] == "running" and not alive:
        last_run = {**last_run, "status": "interrupted"}
    document = {"batch": batch, "summary": totals,
                "last_run": {k: last_run[k] for k in ("id", "started_at", "ended_at", "status")}
                if last_run else None}
    return document, rows
