"""Report files: what they hold, and who may read them."""

from __future__ import annotations

import csv
import json

import pytest

from reports.files import message_columns, write_report
from reports.i18n import Text
from tests.modes import modes, umask


@pytest.mark.parametrize("mask", [0o000, 0o277], ids=["open", "owner-bits-too"])
def test_reports_are_readable_by_their_owner_only_whatever_the_umask(tmp_path, mask):
    work = tmp_path / "work"
    work.mkdir()
    # A copy a crash left half-written, readable by all: the next report makes its own.
    (work / "plan-latest.json.part").write_text("{}")
    (work / "plan-latest.json.part").chmod(0o644)
    row = {"principal": "alice", "source_id": "cur/1.evil:2,S",
           **message_columns(Text.of("symlink_skipped", detail="/etc/shadow"))}
    columns = ["principal", "source_id", "code", "message_en", "message_fr"]

    with umask(mask):
        json_path, csv_path = write_report(work, "plan", {"summary": {}}, [row], columns)
        write_report(work, "plan", {"summary": {}}, [row], columns)

    written = modes(work)
    files = {name: oct(bits) for name, (kind, bits) in written.items() if kind == "file"}
    assert {json_path.name, csv_path.name, "plan-latest.json", "plan-latest.csv"} <= set(files)
    assert len(files) == 6 and not [name for name in files if name.endswith(".part")]
    assert files == dict.fromkeys(files, "0o600")
    latest = json.loads((work / "plan-latest.json").read_text(encoding="utf-8"))
    assert latest["entries"] == [row]
    with open(work / "plan-latest.csv", encoding="utf-8-sig", newline="") as stream:
        [read] = csv.DictReader(stream)
    assert read["message_fr"] == row["message_fr"]
