"""Run the ``bascule`` command in-process and read the reports it writes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from migrate.cli import main


def bascule(*args: str) -> tuple[int, str]:
    """Exit code and output of ``bascule ARGS``."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def report(folder: Path, kind: str) -> dict:
    """The latest ``kind`` report in the batch's work folder (``folder/work``)."""
    return json.loads((folder / "work" / f"{kind}-latest.json").read_text(encoding="utf-8"))


def verify_items(folder: Path) -> list[dict[str, str]]:
    """The latest per-item report of ``verify`` (``verify-files-latest.csv``), read as a
    spreadsheet would."""
    with open(folder / "work" / "verify-files-latest.csv", encoding="utf-8-sig",
              newline="") as file:
        return list(csv.DictReader(file))
