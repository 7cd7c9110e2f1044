"""Write a report as JSON (the source of truth) and CSV (one row per entry) in the work folder."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from migrate.i18n import Text


def message_columns(text: Text) -> dict[str, str]:
    """A reason as the code and its two sentences, as every report row carries it."""
    return {"code": text.code, "message_en": text.en, "message_fr": text.fr}


def write_report(
    work_dir: Path, kind: str, document: dict[str, Any], rows: list[dict[str, Any]],
    columns: list[str],
) -> tuple[Path, Path]:
    """Write ``<kind>-<UTC time>.json`` and ``.csv``, and refresh ``<kind>-latest.*``.

    The JSON holds ``document`` plus ``entries`` (the rows); the CSV holds the rows, with
    ``columns`` in that order (UTF-8 with a BOM so spreadsheet programs read the accents).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    json_path = work_dir / f"{kind}-{stamp}.json"
    csv_path = work_dir / f"{kind}-{stamp}.csv"
    payload = {"kind": kind, "generated_at": datetime.now(UTC).isoformat(), **document,
               "entries": rows}
    with _atomic(json_path, "utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False, default=str)
    with _atomic(csv_path, "utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
    for path, latest in ((json_path, f"{kind}-latest.json"), (csv_path, f"{kind}-latest.csv")):
        temporary = work_dir / f"{latest}.part"
        shutil.copyfile(path, temporary)
        os.replace(temporary, work_dir / latest)
    return json_path, csv_path


def _cell(value: Any) -> Any:
    if isinstance(value, list | tuple | set | frozenset):
        return " ".join(str(v) for v in value)
    return "" if value is None else value


class _atomic:
    """A text file written under a temporary name, renamed into place once complete."""

    def __init__(self, path: Path, encoding: str) -> None:
        self.path = path
        self.encoding = encoding
        self.temporary = path.with_name(path.name + ".part")

    def __enter__(self) -> TextIO:
        self.handle = open(self.temporary, "w", encoding=self.encoding, newline="")
        return self.handle

    def __exit__(self, kind: object, *rest: object) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
