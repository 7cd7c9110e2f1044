"""``verify`` says, file by file, how each was verified: the target's bytes read back and
hashed, against the SHA-256 of the bytes written, with how the source was checked when it was
read (OneDrive's QuickXorHash, or no hash at all from a local folder); and a file whose bytes
were changed on the target behind bascule's back, at the same size and time, is caught."""

from __future__ import annotations

import hashlib
import os
import sqlite3

from tests.cli import bascule, report, verify_items
from tests.graph_files import FixtureFiles, running_download_server, seed_files
from tests.graph_server import french_tenant, running_graph_server
from tests.test_engine_webdav import AMELIE, expected_files, write_batch
from tests.wsgidav import start_wsgidav


def test_each_onedrive_file_is_verified_by_its_bytes_read_back_and_a_same_size_change_is_caught(
        certificates, tmp_path, monkeypatch):
    tenant = french_tenant(users=3, inbox_messages=1)
    files: FixtureFiles = seed_files(tenant, big_file_size=3 << 20)
    server = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"})
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server)
            drive = files.drives[files.user_drives[tenant.mailbox(AMELIE).id]]
            expected = expected_files(drive)
            quick_xor = {"/".join(drive.path_of(item)): item.quick_xor
                         for item in drive.items.values() if item.kind == "file"}
            assert bascule("run", str(batch))[0] == 0

            code, output = bascule("verify", str(batch))
            assert code == 0, output
            verified = report(tmp_path, "verify")
            assert verified["items_report"].startswith("verify-files-")
            assert (tmp_path / "work" / verified["items_report"]).read_bytes() == (
                tmp_path / "work" / "verify-files-latest.csv").read_bytes()
            space = server.space("alice") / "OneDrive"
            rows = {row["target_path"].removeprefix("OneDrive/"): row
                    for row in verify_items(tmp_path)}
            assert sorted(rows) == sorted(expected)
            for path, content in expected.items():
                row = rows[path]
                on_disk = hashlib.sha256((space / path).read_bytes()).hexdigest()
                assert (row["principal"], row["workload"], row["container"]) == (
                    AMELIE, "files", "OneDrive"), row
                assert (row["verified_by"], row["outcome"], row["code"]) == (
                    "read_back_sha256", "match", "item_verified"), row
                assert row["source_check"] == "source_hash_matched", row
                assert row["source_hash"] == f"quickXorHash:{quick_xor[path]}", row
                assert row["written_sha256"] == row["target_sha256"] == on_disk == \
                    hashlib.sha256(content).hexdigest()
                assert int(row["source_size"]) == int(row["target_size"]) == len(content)
                assert "quickXorHash" in row["message_en"] and row["message_fr"], row
            summary = verified["summary"]
            assert (summary["read_back_sha256"], summary["source_hash_matched"],
                    summary["not_verified"]) == (len(expected), len(expected), 0)
            assert f"{len(expected)} compared by their bytes read back (SHA-256)" in output

            # Someone changes a file on the server's disk: same length, same modification
            # time, so that nothing but its content tells.
            changed = next(path for path, content in sorted(expected.items())
                           if len(content) > 16)
            place = space / changed
            before = place.stat()
            original = place.read_bytes()
            place.write_bytes(bytes(byte ^ 0x20 for byte in original[:8]) + original[8:])
            os.utime(place, ns=(before.st_atime_ns, before.st_mtime_ns))
            assert place.stat().st_size == before.st_size
            assert place.stat().st_mtime_ns == before.st_mtime_ns

            code, output = bascule("--lang", "fr", "verify", str(batch))
            assert code == 1, output
            rows = {row["target_path"].removeprefix("OneDrive/"): row
                    for row in verify_items(tmp_path)}
            wrong = rows[changed]
            assert (wrong["outcome"], wrong["verified_by"], wrong["code"]) == (
                "mismatch", "read_back_sha256", "fingerprint_mismatch"), wrong
            assert wrong["source_size"] == wrong["target_size"] == str(len(original))
            assert wrong["written_sha256"] == hashlib.sha256(original).hexdigest()
            assert wrong["target_sha256"] == hashlib.sha256(place.read_bytes()).hexdigest()
            assert wrong["message_fr"] == "octets différents sur la cible"
            assert [path for path, row in rows.items() if row["outcome"] != "match"] == [changed]
            assert report(tmp_path, "verify")["summary"]["content_differs"] == 1
            assert "1 non vérifié" not in output and "comparés par leurs octets relus" in output
    finally:
        server.stop()


def test_files_from_a_local_folder_say_the_source_gave_no_hash_and_an_older_ledger_says_so(
        tmp_path):
    """A local folder has no hash of its own: each row says the SHA-256 was computed from the
    bytes read, with nothing to check them against. A ledger made before bascule recorded
    that opens all the same, and its rows say it is not recorded."""
    drive = tmp_path / "export" / "alice" / "files" / "Documents"
    (drive / "Délibérations").mkdir(parents=True)
    contents = {"Lisez-moi.txt": b"Bonjour\n",
                "Délibérations/budget 2024.csv": b"ligne;montant\n1;2\n" * 100}
    for path, content in contents.items():
        (drive / path).write_bytes(content)
    (tmp_path / "users.csv").write_text("source,target\nalice,alice\n", encoding="utf-8")
    batch = tmp_path / "batch.toml"
    batch.write_text("""
name = "dossier"
workloads = ["files"]
[source]
type = "folder"
path = "export"
[targets.files]
type = "folder"
path = "espaces"
[run]
work_dir = "work"
""", encoding="utf-8")
    assert bascule("run", str(batch))[0] == 0

    code, output = bascule("verify", str(batch))
    assert code == 0, output
    landed = tmp_path / "espaces" / "alice" / "files"
    rows = {row["target_path"]: row for row in verify_items(tmp_path)}
    assert sorted(rows) == sorted(f"Documents/{path}" for path in contents)
    for path, content in contents.items():
        row = rows[f"Documents/{path}"]
        assert (row["source_check"], row["source_hash"]) == ("no_source_hash", ""), row
        assert row["message_en"].endswith(
            "the source gives no hash of its own: the SHA-256 was computed from the bytes "
            "read, with nothing to check them against"), row
        assert (row["verified_by"], row["outcome"]) == ("read_back_sha256", "match"), row
        assert row["target_sha256"] == hashlib.sha256(
            (landed / "Documents" / path).read_bytes()).hexdigest() == \
            hashlib.sha256(content).hexdigest()
    assert "2 without a hash to check them against" in output

    with sqlite3.connect(tmp_path / "work" / "ledger.sqlite") as db:
        db.execute("alter table items drop column source_hashes")
    code, output = bascule("verify", str(batch))
    assert code == 0, output
    assert {row["source_check"] for row in verify_items(tmp_path)} == {
        "source_check_not_recorded"}
    assert report(tmp_path, "verify")["summary"]["source_check_not_recorded"] == 2
