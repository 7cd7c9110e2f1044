"""End to end from one WebDAV server to another: a tree of accented folders, an empty file
and a file of a few MB put on a real Apache ``mod_dav_fs``'s disk, audited, planned and moved
by ``bascule run`` into a real WsgiDAV, read back on its disk (bytes and modification
times); a second run copies nothing, a file changed at the source goes over again, one
deleted there is counted; ``verify`` is clean; then the WsgiDAV space, read as a source by a
second batch into a local folder, comes out the same."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from tests.apache import Apache, start_apache
from tests.cli import bascule, report
from tests.wsgidav import WsgiDav, start_wsgidav

WHEN = datetime(2024, 3, 14, 9, 26, 53, tzinfo=UTC)
TREE = {
    "OneDrive/Délibérations/Été 2024/PV n°3 (séance du 14 mars).pdf": b"%PDF-1.7\n%%EOF\n",
    "OneDrive/Finances & budget/Budget 2024 #2.xlsx": b"PK\x03\x04" + b"budget" * 1000,
    "OneDrive/vide.txt": b"",
    "OneDrive/Vidéos/Conseil municipal.mp4": os.urandom(5 << 20),
    "Urbanisme/Plans/Zone à urbaniser/plan cadastral.txt": "Parcelle n°12\r\n".encode(),
}


def write_batch(folder: Path, source: str, target: str, name: str = "batch.toml") -> Path:
    (folder / "users.csv").write_text(
        "source,target,source_secret,target_secret\n"
        "alice,alice,env:ALICE_SOURCE,env:ALICE_TARGET\n", encoding="utf-8")
    path = folder / name
    path.write_text(f"""
name = "webdav-vers-webdav"
workloads = ["files"]
[source]
{source}
[targets.files]
{target}
[run]
work_dir = "work"
""", encoding="utf-8")
    return path


def files_of(space: Path) -> dict[str, tuple[str, float]]:
    """Every file of the drives of a space, as its server's disk holds it: SHA-256 and
    mtime (hidden files and those at the top, in no drive, left out)."""
    return {path.relative_to(space).as_posix():
            (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
            for path in sorted(space.rglob("*")) if path.is_file()
            and path.parent != space and not path.name.startswith(".")}


def seed(space: Path, tree: dict[str, bytes]) -> None:
    for relative, content in tree.items():
        path = space / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (WHEN.timestamp(), WHEN.timestamp()))


def test_drives_move_from_apache_to_wsgidav_and_read_back_the_same(tmp_path, monkeypatch):
    monkeypatch.setenv("ALICE_SOURCE", "alice-source")
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    apache: Apache = start_apache(tmp_path / "apache", {"alice": "alice-source"})
    wsgidav: WsgiDav = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"},
                                     settable_mtime=True)
    try:
        source, target = apache.space("alice"), wsgidav.space("alice")
        seed(source, {**TREE, "Lisez-moi.txt": b"at the top, in no drive",
                      "OneDrive/.DS_Store": b"Finder's"})
        batch = write_batch(tmp_path, f'type = "webdav"\nurl = "{apache.space_url()}"',
                            f'type = "webdav"\nurl = "{wsgidav.space_url()}"')

        code, output = bascule("audit", str(batch))
        assert code == 0, output
        audit = report(tmp_path, "audit")["entries"]
        assert sorted((e["code"], e["source_id"]) for e in audit if e.get("code") in (
            "file_outside_drives", "hidden_file_skipped")) == [
            ("file_outside_drives", "Lisez-moi.txt"),
            ("hidden_file_skipped", "OneDrive/.DS_Store")]
        inventory = {e["folder"]: (e["messages"], e["bytes"])
                     for e in audit if e["action"] == "inventory"}
        sizes = {drive: sum(len(c) for p, c in TREE.items() if p.startswith(drive + "/"))
                 for drive in ("OneDrive", "Urbanisme")}
        assert inventory == {"files:OneDrive": (4, sizes["OneDrive"]),
                             "files:Urbanisme": (1, sizes["Urbanisme"])}
        code, output = bascule("plan", str(batch))
        assert code == 0, output
        plan = report(tmp_path, "plan")
        assert {e["folder"]: e["to_copy"] for e in plan["entries"] if e["action"] == "copy"} \
            == {"files:OneDrive": 4, "files:Urbanisme": 1}
        assert files_of(target) == {}

        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == len(TREE)
        assert files_of(target) == files_of(source)
        # What the source left out is in the run's report as in the audit's.
        assert sorted((e["code"], e["source_id"]) for e in report(tmp_path, "run")["entries"]
                      if e.get("code") in ("file_outside_drives", "hidden_file_skipped")) == [
            ("file_outside_drives", "Lisez-moi.txt"),
            ("hidden_file_skipped", "OneDrive/.DS_Store")]
        assert {mtime for _, mtime in files_of(target).values()} == {WHEN.timestamp()}
        assert not list(target.rglob(".*")), "a temporary or hidden file on the target"
        assert [p.name for p in target.iterdir() if p.is_file()] == []

        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(tmp_path, "verify")["summary"]["mismatches"] == 0

        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert report(tmp_path, "run")["summary"]["copied"] == 0

        changed = "OneDrive/Finances & budget/Budget 2024 #2.xlsx"
        (source / changed).write_bytes(b"PK\x03\x04 budget rectificatif")
        (source / "OneDrive/vide.txt").unlink()
        code, output = bascule("run", str(batch))
        assert code == 0, output
        delta = report(tmp_path, "run")
        assert delta["summary"]["copied"] == 1
        assert [(row["folder"], row["messages"]) for row in delta["entries"]
                if row.get("code") == "deleted_at_source"] == [("files:OneDrive", 1)]
        assert (target / changed).read_bytes() == b"PK\x03\x04 budget rectificatif"
        assert (target / "OneDrive/vide.txt").exists()  # a run deletes nothing by default

        code, output = bascule("verify", str(batch))
        verified = report(tmp_path, "verify")["summary"]
        assert (code, verified["mismatches"], verified["deleted_at_source"]) == (0, 0, 1), \
            output

        # The target read back: the WsgiDAV space as the source of a second batch.
        back = tmp_path / "back"
        back.mkdir()
        monkeypatch.setenv("ALICE_SOURCE", "alice-target")
        batch = write_batch(back, f'type = "webdav"\nurl = "{wsgidav.space_url()}"',
                            'type = "folder"\npath = "documents"')
        code, output = bascule("run", str(batch))
        assert code == 0, output
        code, output = bascule("verify", str(batch))
        assert code == 0, output
        assert report(back, "verify")["summary"]["mismatches"] == 0
        assert files_of(back / "documents" / "alice" / "files") == files_of(target)
    finally:
        apache.stop()
        wsgidav.stop()
