"""The one-line summary each command prints when it ends, counted in the reader's language.

Each count is its own plural sentence ("1 folder", "2 folders", "0 dossier"); the summary
joins them, so that no count borrows the plural of another.
"""

from __future__ import annotations

from typing import Any

from reports.i18n import Size, Text


def summary_text(command: str, s: dict[str, Any]) -> Text:
    """The summary of ``plan``, ``audit``, ``verify``, ``status`` or ``run``, from its
    outcome's summary."""
    if command == "plan":
        return Text.of("cli_plan_summary", folders=Text.of("count_folders", count=s["units"]),
                       messages=Text.of("count_messages", count=s["to_copy"]),
                       size=Size(s["to_copy_bytes"]), estimate=_estimate(s),
                       errors=Text.of("count_blocking_errors", count=s["errors"]),
                       warnings=Text.of("count_warnings", count=s["warnings"]))
    if command == "audit":
        return Text.of("cli_audit_summary", users=Text.of("count_users", count=s["users"]),
                       containers=Text.of("count_containers", count=s["containers"]),
                       items=Text.of("count_items", count=s["items"]), size=Size(s["bytes"]),
                       errors=Text.of("count_errors", count=s["errors"]))
    if command == "verify":
        folders = _verify_summary(s)
        items = sum(s.get(way, 0) for way in ("read_back_sha256", "read_back_meaning",
                                              "not_verified"))
        if not items:  # mail alone
            return folders
        return Text.of("cli_verify_summary_items", folders=folders, items=Text.of(
            "cli_verify_items",
            sha256=Text.of("count_read_back_sha256", count=s["read_back_sha256"]),
            meaning=Text.of("count_read_back_meaning", count=s["read_back_meaning"]),
            not_verified=Text.of("count_not_verified", count=s["not_verified"]),
            matched=Text.of("count_source_hash_matched", count=s["source_hash_matched"]),
            no_hash=Text.of("count_no_source_hash", count=s["no_source_hash"]),
            not_recorded=Text.of("count_source_check_not_recorded",
                                 count=s["source_check_not_recorded"])))
    if command == "status":
        return _run_summary(s["copied"], 0, s["failed_items"], 0)
    return _run_summary(s["copied"], s["flag_updates"], s["failed"] + s["units_failed"],
                        s["skipped"])


def _verify_summary(s: dict[str, Any]) -> Text:
    """What ``verify`` found, folder by folder: counts of every kind of finding."""
    return Text.of("cli_verify_summary", checked=Text.of("count_checked", count=s["checked"]),
                   mismatches=Text.of("count_mismatches", count=s["mismatches"]),
                   missing=Text.of("count_missing", count=s["missing"]),
                   content=Text.of("count_content_differences",
                                   count=s.get("content_differs", 0)),
                   duplicated=Text.of("count_duplicated", count=s["duplicates"]),
                   not_at_source=Text.of("count_not_at_source", count=s["not_in_source"]),
                   flags=Text.of("count_flag_differences", count=s["flags_differ"]),
                   dates=Text.of("count_date_differences", count=s["dates_differ"]))


def _estimate(s: dict[str, Any]) -> Text:
    """The plan's estimate as its report wrote it (``PlanReport.estimated``)."""
    written = s["estimate"]
    return Text.both(written["code"], written["message_en"], written["message_fr"])


def _run_summary(copied: int, flag_updates: int, failed: int, skipped: int) -> Text:
    return Text.of("cli_run_summary", copied=Text.of("count_copied", count=copied),
                   flag_updates=Text.of("count_flag_updates", count=flag_updates),
                   failed=Text.of("count_failed", count=failed),
                   skipped=Text.of("count_skipped", count=skipped))
