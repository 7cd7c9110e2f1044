"""The plan's report: what a run would copy, rename and skip, principal by principal, what
stands in the way, how long it would take, and the totals its summary counts."""

from __future__ import annotations

from typing import Any

from reports.files import message_columns
from reports.i18n import Duration, Size, Text, format_duration
from reports.rows import Principal, ending, error_row, joined, problem_rows


class PlanReport:
    """The rows, errors, warnings and totals of a plan. It opens with the ``errors`` that
    stand in the way of the whole batch; workload runners count containers into
    ``totals`` and give rows and warnings for each principal."""

    def __init__(self, errors: list[Text], warnings: list[Text]) -> None:
        self.errors = errors
        self.warnings = warnings
        self.rows = problem_rows(errors)
        self.totals = {"units": 0, "messages": 0, "bytes": 0, "to_copy": 0, "to_copy_bytes": 0}
        self.estimate: dict[str, Any] = {}
        self.estimate_text: Text | None = None
        self._told: set[tuple[str, str]] = set()

    def add(self, rows: list[dict[str, Any]], warnings: list[Text]) -> None:
        """What a workload's runner planned for a principal."""
        self.rows.extend(rows)
        self.warnings.extend(warnings)

    def refused(self, user: Principal, text: Text) -> None:
        """A principal that cannot be planned: a blocking error, told once however many of
        the principal's workloads meet it (a line naming no public folder, for its mail,
        calendars and contacts)."""
        row = error_row(user, text)
        told = (row["principal"], row["message_en"])
        if told in self._told:
            return
        self._told.add(told)
        self.errors.append(text)
        self.rows.append(row)

    def estimated(self, document: dict[str, Any], basis: Text) -> None:
        """The run's estimated duration (``migrate.estimate.Estimate.document``) and what
        it is based on: a row per principal, and the summary's line."""
        self.estimate = document
        low, high = document.get("range_seconds") or (document["seconds"],) * 2
        if format_duration(low, "en") == format_duration(high, "en"):
            # A range written as "1 sec to 1 sec" says nothing.
            self.estimate_text = Text.of("estimate", duration=Duration(document["seconds"]),
                                         basis=basis)
        else:
            self.estimate_text = Text.of("estimate_range",
                                         duration=Duration(document["seconds"]),
                                         low=Duration(low), high=Duration(high), basis=basis)
        self.rows.extend(
            {"principal": p["principal"], "target": p["target"], "action": "estimate",
             "messages": p["items"], "bytes": p["bytes"],
             **message_columns(Text.of("estimate_principal", duration=Duration(p["seconds"]),
                                       count=p["units"]))}
            for p in document["principals"])

    def distinct_warnings(self) -> list[Text]:
        """Each warning once, however many principals gave it."""
        return list({(w.code, w.en): w for w in self.warnings}.values())

    def summary(self, users: int) -> dict[str, Any]:
        """The totals, and the estimate's seconds and sentence (as ``summary_text`` says
        it)."""
        return {**self.totals, "errors": len(self.errors),
                "warnings": len(self.distinct_warnings()), "users": users,
                "estimated_seconds": self.estimate.get("seconds"),
                **({"estimate": message_columns(self.estimate_text)}
                   if self.estimate_text else {})}

    def document(self, batch: str, users: int, stopped: Text | None) -> dict[str, Any]:
        """The report's document: the batch, the summary, how it ended if early, its errors
        and warnings."""
        return {"batch": batch, "summary": self.summary(users), **ending(stopped),
                "estimate": self.estimate,
                "errors": [message_columns(e) for e in self.errors],
                "warnings": [message_columns(w) for w in self.distinct_warnings()]}


def container_row(totals: dict[str, int], base: dict[str, Any], action: str,
                  reasons: list[Text], *, messages: int, size: int, to_copy: int,
                  to_copy_bytes: int, part: str | None = None) -> dict[str, Any]:
    """A container a run would copy (a mail folder, a calendar, a drive): its row, and its
    counts added to the plan's ``totals``. A container of a part of the account the source
    tells apart (``part``: an online archive) is counted in the totals and also apart, under
    ``<part>_units``, ``<part>_messages``... and its row names its part."""
    for key, value in (("units", 1), ("messages", messages), ("bytes", size),
                       ("to_copy", to_copy), ("to_copy_bytes", to_copy_bytes)):
        totals[key] = totals.get(key, 0) + value
        if part:
            totals[f"{part}_{key}"] = totals.get(f"{part}_{key}", 0) + value
    return {**base, "action": action, "messages": messages, "bytes": size, "to_copy": to_copy,
            "to_copy_bytes": to_copy_bytes, **({"part": part} if part else {}),
            **joined(reasons)}


def too_big_row(base: dict[str, Any], source_id: str, size: int, limit: int) -> dict[str, Any]:
    """An item larger than the target takes: it will not be copied."""
    return {**base, "action": "too_big", "source_id": source_id, "bytes": size,
            **message_columns(Text.of("too_big_for_target", limit=Size(limit)))}


def target_not_empty_row(user: Principal, target_folder: str, unknown: int) -> dict[str, Any]:
    """A target folder already holding items the ledger does not account for."""
    return {"principal": user.source, "target": user.target, "target_folder": target_folder,
            "action": "note", "messages": unknown,
            **message_columns(Text.of("target_not_empty", count=unknown))}
