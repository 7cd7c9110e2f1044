"""Write a report as JSON (the source of truth) and CSV (one row per entry) in the work folder.

Reports name people, folders and subjects: each file is ``0600`` from the moment it is
created, whatever the umask.
"""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Self, TextIO

from reports.i18n import Text

PRIVATE_FILE = 0o600


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
    stamp = _stamp()
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
    _refresh_latest(json_path, f"{kind}-latest.json")
    _refresh_latest(csv_path, f"{kind}-latest.csv")
    return json_path, csv_path


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> Path:
    """A CSV of ``rows`` with ``columns`` (UTF-8 with a BOM), private and written whole or
    not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic(path, "utf-8-sig") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _cell(row.get(key)) for key in columns})
    return path


class CsvStream:
    """A CSV report written row by row as the rows come, so that none has to wait in memory:
    ``<kind>-<UTC time>.csv`` (``path``), under a temporary name until the ``with`` block
    ends, which puts it in place and refreshes ``<kind>-latest.csv`` (or, ended by an
    exception, removes it); the same form as ``write_report``'s CSV. Not thread-safe:
    writers take turns."""

    def __init__(self, work_dir: Path, kind: str, columns: list[str]) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        self.path = work_dir / f"{kind}-{_stamp()}.csv"
        self.kind = kind
        self.columns = columns
        self._file = _atomic(self.path, "utf-8-sig")
        self._writer = csv.DictWriter(self._file.__enter__(), fieldnames=columns,
                                      extrasaction="ignore")
        self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({key: _cell(row.get(key)) for key in self.columns})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        self._file.__exit__(kind)
        if kind is None:
            _refresh_latest(self.path, f"{self.kind}-latest.csv")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def _refresh_latest(path: Path, latest: str) -> None:
    """A copy of the report at ``path`` under the name ``latest`` beside it, replaced whole."""
    temporary = path.with_name(f"{latest}.part")
    with open(path, "rb") as source, _create_private(temporary) as copy:
        while chunk := source.read(1 << 20):
            copy.write(chunk)
    os.replace(temporary, path.with_name(latest))


def _create_private(path: Path) -> BinaryIO:
    """A new file for writing, ``0600`` from its creation (``fchmod`` too, before any byte:
    a umask may also take bits from the owner). One left by a crash is made again."""
    path.unlink(missing_ok=True)
    descriptor = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE)
        return os.fdopen(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        raise


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
        self.handle = io.TextIOWrapper(_create_private(self.temporary), encoding=self.encoding,
                                       newline="")
        return self.handle

    def __exit__(self, kind: object, *rest: object) -> None:
        self.handle.close()
        if kind is None:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.unlink(missing_ok=True)
