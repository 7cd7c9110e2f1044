"""The audit's report: what the source holds, container by container, read from listings."""

from __future__ import annotations

from typing import Any

from reports.files import message_columns
from reports.i18n import Text
from reports.rows import Principal, error_row, problem_rows


class AuditReport:
    """The rows, errors and totals of an audit. It opens with the ``errors`` that stand in
    the way of the whole batch."""

    def __init__(self, errors: list[Text], users: int) -> None:
        self.errors = errors
        self.rows = problem_rows(errors)
        self.totals = {"users": users, "containers": 0, "items": 0, "bytes": 0}

    def container(self, user: Principal, folder: str, items: int, size: int,
                  part: str | None = None) -> dict[str, Any]:
        """A container of the source: its row, its counts added to the totals; those of a
        part of the account the source tells apart (``part``: an online archive) also apart,
        under ``<part>_containers``, ``<part>_items`` and ``<part>_bytes``."""
        for key, value in (("containers", 1), ("items", items), ("bytes", size)):
            self.totals[key] += value
            if part:
                self.totals[f"{part}_{key}"] = self.totals.get(f"{part}_{key}", 0) + value
        return {"principal": user.source, "folder": folder, "action": "inventory",
                "messages": items, "bytes": size, **({"part": part} if part else {})}

    def advice(self, user: Principal, folder: str, text: Text) -> dict[str, Any]:
        """A container that works but deserves a word (more items than the target's clients
        handle well)."""
        return {"principal": user.source, "folder": folder, "action": "warning",
                **message_columns(text)}

    def refused(self, user: Principal, text: Text) -> None:
        """A principal the source would not list."""
        self.errors.append(text)
        self.rows.append(error_row(user, text))

    def summary(self) -> dict[str, int]:
        return {**self.totals, "errors": len(self.errors)}

    def document(self, batch: str) -> dict[str, Any]:
        return {"batch": batch, "summary": self.summary()}
