"""Names a space refuses, names that come out the same, files someone else changed or put
on the target, and files deleted at the source: a local export moved by ``bascule run``
into a real Apache ``mod_dav_fs`` and a real WsgiDAV, the space read back as the files it
holds on the server's disk, and every rename, conflict and removal found in the report."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from mappings.names import distinct
from tests.apache import Apache, start_apache
from tests.cli import bascule, report
from tests.exports import DRIVE, export_drive, export_to_webdav
from tests.nextcloud import start_nextcloud
from tests.wsgidav import WsgiDav, start_wsgidav

LOGIN = "alice"
PASSWORD = "alice-target"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export(folder: Path, files: dict[str, bytes]) -> None:
    export_drive(folder, LOGIN, files)


def write_batch(folder: Path, url: str, target: str = "", run: str = "") -> Path:
    return export_to_webdav(folder, LOGIN, url, target, run)


def landed(server: WsgiDav | Apache) -> dict[str, str]:
    """The drive's files as the server keeps them on its disk, by path: SHA-256."""
    drive = server.space(LOGIN) / DRIVE
    return {path.relative_to(drive).as_posix(): sha(path.read_bytes())
            for path in drive.rglob("*") if path.is_file()}


def notes(folder: Path, code: str) -> list[tuple[str, str]]:
    """The run report's lines with ``code``: (target path, English sentence)."""
    return [(entry.get("source_id", ""), entry["message_en"])
            for entry in report(folder, "run")["entries"] if entry.get("code") == code]


@pytest.fixture
def apache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALICE_TARGET", PASSWORD)
    server = start_apache(tmp_path / "apache", {LOGIN: PASSWORD})
    yield server
    server.stop()


@pytest.fixture
def wsgidav(tmp_path, monkeypatch):
    monkeypatch.setenv("ALICE_TARGET", PASSWORD)
    server = start_wsgidav(tmp_path / "wsgidav", {LOGIN: PASSWORD})
    yield server
    server.stop()


def test_names_windows_refuses_are_renamed_by_the_rule_and_two_alike_are_both_kept(
        apache, tmp_path):
    """``names = "windows"`` (a space Windows clients sync): each refused name renamed by
    the stated rule, each rename a line in the report; ``Budget: 2024.xlsx`` becomes the
    name ``Budget_ 2024.xlsx`` already has, and both are kept. A second run writes nothing
    and finds every file where the first put it."""
    files = {"Budget: 2024.xlsx": b"deux-points", "Budget_ 2024.xlsx": b"souligne",
             "CON.txt": b"reserve", "Compta/notes.": b"point final",
             "Compta/Proc\u00e8s-verbal ": b"espace final", "a*b?.txt": b"etoile",
             "Compta/ok.pdf": b"rien a changer"}
    export(tmp_path, files)
    batch = write_batch(tmp_path, apache.space_url(), 'profile = "apache"\nnames = "windows"')

    code, output = bascule("run", str(batch))
    assert code == 0, output
    there = landed(apache)
    kept_apart = {"Budget_ 2024.xlsx": sha(b"souligne"),
                  "Budget: 2024.xlsx": sha(b"deux-points")}
    # Which of the two writes first is the run's choice; the other is kept apart by its id.
    taken = [path for path in there if path.startswith("Budget_ 2024~")]
    assert len(taken) == 1 and taken[0].endswith(".xlsx")
    assert {there["Budget_ 2024.xlsx"], there[taken[0]]} == set(kept_apart.values())
    assert {path: digest for path, digest in there.items() if not path.startswith("Budget")} \
        == {"CON_.txt": sha(b"reserve"), "Compta/notes._": sha(b"point final"),
            "Compta/Proc\u00e8s-verbal _": sha(b"espace final"), "a_b_.txt": sha(b"etoile"),
            "Compta/ok.pdf": sha(b"rien a changer")}
    assert sorted(detail.rsplit("was: ", 1)[1].rstrip(")") for _, detail in
                  notes(tmp_path, "renamed_refused_character")) \
        == sorted(["a*b?.txt", *(["Budget: 2024.xlsx"] if "Budget_ 2024.xlsx" != taken[0]
                                  else [])])
    assert [path for path, _ in notes(tmp_path, "renamed_reserved_file_name")] \
        == [f"{DRIVE}/CON_.txt"]
    assert sorted(path for path, _ in notes(tmp_path, "renamed_refused_ending")) \
        == [f"{DRIVE}/Compta/Proc\u00e8s-verbal _", f"{DRIVE}/Compta/notes._"]
    assert [path for path, _ in notes(tmp_path, "renamed_name_taken")] \
        == [f"{DRIVE}/{taken[0]}"]

    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert landed(apache) == there
    assert sum(entry.get("copied", 0) for entry in report(tmp_path, "run")["entries"]) == 0
    code, output = bascule("verify", str(batch))
    assert code == 0, output


def test_a_name_longer_than_the_space_takes_is_cut_with_a_hash(apache, tmp_path):
    """Nextcloud's rules take 250 characters a name: names of 252 are cut, their
    extension kept, and two that start alike stay apart."""
    first, second = "x" * 248 + ".odt", "x" * 247 + "y.odt"
    export(tmp_path, {first: b"premier", second: b"second"})
    batch = write_batch(tmp_path, apache.space_url(), 'profile = "apache"\nnames = "nextcloud"')

    code, output = bascule("run", str(batch))
    assert code == 0, output
    there = landed(apache)
    assert len(there) == 2 and sorted(there.values()) == sorted([sha(b"premier"),
                                                                 sha(b"second")])
    assert all(len(path) == 250 and path.endswith(".odt") for path in there)
    assert sorted(detail.rsplit("was: ", 1)[1].rstrip(")")
                  for _, detail in notes(tmp_path, "renamed_too_long")) == sorted([first, second])


@pytest.mark.parametrize("policy", ["keep_both", "skip", "overwrite"])
def test_a_file_someone_changed_on_the_target_is_never_overwritten_silently(
        policy, wsgidav, tmp_path):
    """A file bascule wrote is changed on the target by a person, and at the source too;
    another file of the same name as a source file is put on the target by someone. The
    next pass does what ``on_conflict`` says, and the report says what it did."""
    export(tmp_path, {"rapport.odt": b"v1", "autre.odt": b"autre"})
    batch = write_batch(tmp_path, wsgidav.space_url(), run=f'on_conflict = "{policy}"')
    code, output = bascule("run", str(batch))
    assert code == 0, output

    space = wsgidav.space_url().replace("{login}", LOGIN)
    auth = (LOGIN, PASSWORD)
    for name, content in (("rapport.odt", b"edited on the target"),
                          ("nouveau.odt", b"put there by someone")):
        put = requests.put(f"{space}{DRIVE}/{name}", data=content, auth=auth, timeout=10)
        assert put.status_code in (201, 204)
    export(tmp_path, {"rapport.odt": b"v2 at the source", "nouveau.odt": b"new at the source"})

    code, output = bascule("run", str(batch))
    there = landed(wsgidav)
    if policy == "keep_both":
        assert code == 0, output
        # The folder source's id of a file is its path in the drive.
        apart = {distinct(name, name): name for name in ("rapport.odt", "nouveau.odt")}
        assert there == {"rapport.odt": sha(b"edited on the target"),
                         "nouveau.odt": sha(b"put there by someone"),
                         "autre.odt": sha(b"autre"),
                         **{kept: sha(b"v2 at the source" if name == "rapport.odt"
                                      else b"new at the source")
                            for kept, name in apart.items()}}
        assert sorted(path for path, _ in notes(tmp_path, "renamed_name_taken")) \
            == sorted(f"{DRIVE}/{kept}" for kept in apart)
        # The old copy changed by the person stays where it was.
        assert [path for path, _ in notes(tmp_path, "left_on_target")] \
            == [f"{DRIVE}/rapport.odt"]
    elif policy == "skip":
        assert code == 1, output
        assert there == {"rapport.odt": sha(b"edited on the target"),
                         "nouveau.odt": sha(b"put there by someone"),
                         "autre.odt": sha(b"autre")}
        assert {entry.get("code") for entry in report(tmp_path, "run")["entries"]
                if entry.get("action") == "failed"} == {"version_conflict"}
    else:
        assert code == 0, output
        assert there == {"rapport.odt": sha(b"v2 at the source"),
                         "nouveau.odt": sha(b"new at the source"), "autre.odt": sha(b"autre")}
        assert sorted(path for path, _ in notes(tmp_path, "overwritten_on_target")) \
            == [f"{DRIVE}/nouveau.odt", f"{DRIVE}/rapport.odt"]


@pytest.mark.parametrize("deletions", ["report", "remove"])
def test_files_deleted_at_the_source_are_removed_only_when_the_batch_says(
        deletions, wsgidav, tmp_path):
    """Two files deleted at the source: left and counted by default; with ``deletions =
    "remove"`` the one nobody touched on the target is deleted there, the one a person
    changed on the target since stays, with a line saying so."""
    export(tmp_path, {"garde.txt": b"garde", "efface.txt": b"efface", "modifie.txt": b"m"})
    batch = write_batch(tmp_path, wsgidav.space_url(), run=f'deletions = "{deletions}"')
    code, output = bascule("run", str(batch))
    assert code == 0, output
    space = wsgidav.space_url().replace("{login}", LOGIN)
    requests.put(f"{space}{DRIVE}/modifie.txt", data=b"changed there", auth=(LOGIN, PASSWORD),
                 timeout=10).raise_for_status()
    drive = tmp_path / "export" / LOGIN / "files" / DRIVE
    os.remove(drive / "efface.txt")
    os.remove(drive / "modifie.txt")

    code, output = bascule("run", str(batch))
    assert code == 0, output
    there = landed(wsgidav)
    if deletions == "report":
        assert there == {"garde.txt": sha(b"garde"), "efface.txt": sha(b"efface"),
                         "modifie.txt": sha(b"changed there")}
        assert [entry["messages"] for entry in report(tmp_path, "run")["entries"]
                if entry.get("code") == "deleted_at_source"] == [2]
    else:
        assert there == {"garde.txt": sha(b"garde"), "modifie.txt": sha(b"changed there")}
        assert [path for path, _ in notes(tmp_path, "removed_on_target")] \
            == [f"{DRIVE}/efface.txt"]
        assert [path for path, _ in notes(tmp_path, "left_on_target")] \
            == [f"{DRIVE}/modifie.txt"]
        assert [entry["messages"] for entry in report(tmp_path, "run")["entries"]
                if entry.get("code") == "deleted_at_source"] == [1]
        code, output = bascule("run", str(batch))
        assert code == 0, output
        assert notes(tmp_path, "removed_on_target") == []


@pytest.mark.parametrize("windows", [False, True])
def test_names_nextcloud_refuses_are_renamed_and_refused_without_the_rules(
        windows, tmp_path, monkeypatch):
    """Into the Nextcloud test server, which refuses what Nextcloud's file name validation
    refuses (400): with the profile's rules every file lands, renamed; with ``names =
    "posix"`` the same files are refused by the server, each a failed line, and nothing
    else is lost. With "Windows compatible filenames" on, ``nextcloud-windows``."""
    monkeypatch.setenv("ALICE_TARGET", PASSWORD)
    server = start_nextcloud(tmp_path / "nextcloud", {LOGIN: PASSWORD}, windows_names=windows)
    try:
        refused = {"a\\b.txt": b"backslash", "film.part": b"part", "x.filepart": b"filepart",
                   "n" * 247 + ".odt": b"long"}
        if windows:
            refused |= {"Budget: 2024.xlsx": b"colon", "CON.txt": b"con", "fin.": b"dot"}
        files = {**refused, "ok.txt": b"ok"}
        export(tmp_path, files)
        rules = 'profile = "nextcloud"\n' + ('names = "nextcloud-windows"' if windows else "")
        posix = write_batch(tmp_path, server.space_url(), 'profile = "nextcloud"\n'
                            'names = "posix"')
        code, output = bascule("run", str(posix))
        assert code == 1, output
        assert sorted(entry["source_id"] for entry in report(tmp_path, "run")["entries"]
                      if entry.get("action") == "failed") == sorted(refused)
        assert landed(server) == {"ok.txt": sha(b"ok")}

        batch = write_batch(tmp_path, server.space_url(), rules)
        code, output = bascule("run", str(batch))
        assert code == 0, output
        there = landed(server)
        assert sorted(there.values()) == sorted(sha(content) for content in files.values())
        expected = {"a_b.txt", "film.part_", "x.filepart_", "ok.txt"} | (
            {"Budget_ 2024.xlsx", "CON_.txt", "fin._"} if windows else set())
        assert expected <= set(there) and len(there) == len(files)
        renamed = [entry for entry in report(tmp_path, "run")["entries"]
                   if entry.get("code", "").startswith("renamed_")]
        assert sorted(entry["message_en"].rsplit("was: ", 1)[1][:-1] for entry in renamed) \
            == sorted(refused)
        assert all(entry["message_fr"] for entry in renamed)
    finally:
        server.stop()
