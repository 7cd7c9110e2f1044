"""End to end: a OneDrive on the Graph test server moved by ``bascule run`` into a user's space
on a real WsgiDAV and a real Apache ``mod_dav_fs``, read back as the files of the space; then
``verify``, a second run with nothing new, and a file changed at the source."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.apache import Apache, start_apache
from tests.cli import bascule, report
from tests.graph_files import FixtureDrive, FixtureFiles, running_download_server, seed_files
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.tls import TestCertificates
from tests.wsgidav import WsgiDav, start_wsgidav

AMELIE = "amelie.lefevre@ville-exemple.fr"


def write_batch(folder: Path, graph: RunningGraphServer, certificates: TestCertificates,
                server: WsgiDav | Apache, extra: str = "", run: str = "",
                rows: tuple[str, ...] = ()) -> Path:
    """Amélie's OneDrive (and the users table's other ``rows``) from the Graph test server
    into ``server``'s spaces; ``extra`` and ``run`` are lines added to the target's section
    and to ``[run]``."""
    (folder / "users.csv").write_text(
        "source,target,source_secret,target_secret\n"
        + "".join(f"{row}\n" for row in (f"{AMELIE},alice,,env:ALICE_TARGET", *rows)),
        encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "fichiers"
workloads = {json.dumps(["files"])}
{graph.source_section(certificates.ca_file)}[targets.files]
type = "webdav"
url = "{server.space_url()}"
{extra}
[run]
work_dir = "work"
{run}
""", encoding="utf-8")
    return path


def expected_files(drive: FixtureDrive) -> dict[str, bytes]:
    """Every file a user sees in the drive (none inside a OneNote notebook), by path."""
    notebooks = ["/".join(drive.path_of(item)) + "/" for item in drive.items.values()
                 if item.kind == "package"]
    return {"/".join(drive.path_of(item)): item.content for item in drive.items.values()
            if item.kind == "file" and not any(
                "/".join(drive.path_of(item)).startswith(notebook) for notebook in notebooks)}


def landed(space: Path) -> dict[str, str]:
    return {path.relative_to(space / "OneDrive").as_posix():
            hashlib.sha256(path.read_bytes()).hexdigest()
            for path in (space / "OneDrive").rglob("*") if path.is_file()}


@pytest.mark.parametrize("kind", ["wsgidav", "apache"])
def test_a_onedrive_lands_in_a_webdav_space_with_its_bytes(kind, certificates, tmp_path,
                                                           monkeypatch):
    """Into a WsgiDAV that lets a client set modification times, with the files' own; into
    Apache (``profile = "apache"``), whose ``getlastmodified`` is read-only, with one line
    saying the drive's files carry their upload date."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files: FixtureFiles = seed_files(tenant, big_file_size=3 << 20)
    if kind == "wsgidav":
        server: WsgiDav | Apache = start_wsgidav(tmp_path / kind, {"alice": "alice-target"},
                                                 settable_mtime=True)
    else:
        server = start_apache(tmp_path / kind, {"alice": "alice-target"})
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server,
                                'profile = "apache"' if kind == "apache" else "")
            drive = files.drives[files.user_drives[tenant.mailbox(AMELIE).id]]

            code, output = bascule("run", str(batch))
            assert code == 0, output
            mtimes = [(row["folder"], row["target_folder"]) for row in
                      report(tmp_path, "run")["entries"] if row.get("code") == "mtime_not_kept"]
            space = server.space("alice") / "OneDrive"
            modified = {"/".join(drive.path_of(item)): item.client_modified.timestamp()
                        for item in drive.items.values() if item.kind == "file"}
            if kind == "wsgidav":
                assert mtimes == []
                assert {path: (space / path).stat().st_mtime for path in expected_files(drive)} \
                    == {path: modified[path] for path in expected_files(drive)}
            else:
                assert len(mtimes) == 1, mtimes
            expected = expected_files(drive)
            assert len(expected) > 3
            assert landed(server.space("alice")) == {
                path: hashlib.sha256(content).hexdigest() for path, content in expected.items()}
            # Nothing but the files: no temporary file left beside them.
            assert not [p for p in server.space("alice").rglob(".*")]

            code, output = bascule("verify", str(batch))
            assert code == 0, output
            assert report(tmp_path, "verify")["summary"]["mismatches"] == 0

            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert report(tmp_path, "run")["summary"]["copied"] == 0

            readme = drive.at("Lisez-moi.txt")
            files.update_file(drive, readme.id, b"Lisez-moi, version 2.\n",
                              datetime(2026, 3, 1, 9, 0, tzinfo=UTC))
            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert report(tmp_path, "run")["summary"]["copied"] == 1
            assert (server.space("alice") / "OneDrive" / "Lisez-moi.txt").read_bytes() == \
                b"Lisez-moi, version 2.\n"
    finally:
        server.stop()


def test_a_full_space_stops_its_drive_with_one_line_and_the_next_run_ends_it(
        certificates, tmp_path, monkeypatch):
    """The server answers 507 once the space holds half the drive: the run stops sending
    into it at the first refusal, says in one line how many files and bytes are left, exits
    1; with the quota raised, the next run sends exactly those."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=3 << 20)
    drive = files.drives[files.user_drives[tenant.mailbox(AMELIE).id]]
    total = sum(len(content) for content in expected_files(drive).values())
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    server = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"},
                           quotas={"alice": total // 2})
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server)

            code, output = bascule("run", str(batch))
            assert code == 1, output
            ran = report(tmp_path, "run")
            [full] = [row for row in ran["entries"] if row.get("action") == "over_quota"]
            assert full["code"] == "space_full"
            stored = landed(server.space("alice"))
            expected = {path: hashlib.sha256(content).hexdigest()
                        for path, content in expected_files(drive).items()}
            assert stored and len(stored) < len(expected)
            assert all(expected[path] == digest for path, digest in stored.items())
            assert full["messages"] == len(expected) - len(stored)
            assert not [row for row in ran["entries"] if row.get("action") == "failed"]
            assert not [p for p in server.space("alice").rglob(".*")]

            server.stop()
            server = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"})
            batch = write_batch(tmp_path, graph, certificates, server)
            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert report(tmp_path, "run")["summary"]["copied"] == full["messages"]
            assert landed(server.space("alice")) == expected
    finally:
        server.stop()


def test_files_into_an_xwiki_are_refused_before_anything_moves(certificates, tmp_path,
                                                               monkeypatch):
    """XWiki's WebDAV makes files attachments of wiki pages: ``plan`` and ``run`` refuse the
    batch and say where files should go instead; nothing is written."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=3 << 20)
    server = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"})
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server, 'profile = "xwiki"')
            for command in ("plan", "run"):
                code, output = bascule(command, str(batch))
                assert code == 2, output
                assert "attachment of a wiki page" in output, output
            assert list(server.space("alice").iterdir()) == []
    finally:
        server.stop()


def test_a_file_the_delta_said_deleted_during_a_report_pass_is_removed_by_a_later_remove_pass(
        certificates, tmp_path, monkeypatch):
    """Pre-staging with ``deletions = "report"``, cutover with ``"remove"``: Graph's delta
    says a deletion once, in the pass that saw it; the copy left then is still removed by the
    first pass with ``remove``, though its delta is empty by then."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files = seed_files(tenant, big_file_size=1 << 20)
    drive = files.drives[files.user_drives[tenant.mailbox(AMELIE).id]]
    monkeypatch.setenv("ALICE_TARGET", "alice-target")
    server = start_wsgidav(tmp_path / "wsgidav", {"alice": "alice-target"})
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server)
            code, output = bascule("run", str(batch))
            assert code == 0, output
            readme = drive.at("Lisez-moi.txt")
            files.delete(drive, readme.id)

            code, output = bascule("run", str(batch))  # deletions = "report", the default
            assert code == 0, output
            assert [e["messages"] for e in report(tmp_path, "run")["entries"]
                    if e.get("code") == "deleted_at_source"] == [1]
            assert (server.space("alice") / "OneDrive" / "Lisez-moi.txt").exists()

            batch = write_batch(tmp_path, graph, certificates, server,
                                run='deletions = "remove"')
            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert [e["source_id"] for e in report(tmp_path, "run")["entries"]
                    if e.get("code") == "removed_on_target"] == ["OneDrive/Lisez-moi.txt"]
            assert not (server.space("alice") / "OneDrive" / "Lisez-moi.txt").exists()
            assert landed(server.space("alice")) == {
                path: hashlib.sha256(content).hexdigest()
                for path, content in expected_files(drive).items()}
            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert not [e for e in report(tmp_path, "run")["entries"]
                        if e.get("code") in ("removed_on_target", "deleted_at_source")]
    finally:
        server.stop()
