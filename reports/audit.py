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

    def container(self, user: Principal, folder: str, items: int, size: int
                  ) -> dict[str, Any]:
        """A container of the source: its row, its counts added to the totals."""
        self.totals["containers"] += 1
        self.totals["items"] += items
        self.totals["bytes"] += size
        return {"principal": user.source, "folder": folder, "action": "inventory",
                "messages": items, "bytes": size}

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
