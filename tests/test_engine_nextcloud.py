"""End to end into the Nextcloud test server (tests/nextcloud.py), ``profile = "nextcloud"``:
a OneDrive moved by ``bascule run``, its large file in chunks, every file read back by plain
HTTP with its modification time; then a run killed in the middle of chunked uploads and run
again: each file once, whole, no upload folder left."""

from __future__ import annotations

import hashlib
import os
import random
import signal
from urllib.parse import quote, unquote
from xml.etree import ElementTree

import requests

from tests.cli import bascule, report
from tests.exports import export_drive, export_to_webdav
from tests.faults import kill_in_flight
from tests.graph_files import FixtureFiles, running_download_server, seed_files
from tests.graph_server import french_tenant, running_graph_server
from tests.nextcloud import MIB, Nextcloud, start_nextcloud
from tests.test_engine_webdav import AMELIE, expected_files, write_batch
from tests.test_faults_webdav import ROOT, run

LOGIN, PASSWORD = "alice", "alice-target"


def read_back(server: Nextcloud, base: str = "OneDrive") -> dict[str, str]:
    """Every file under ``base`` in alice's space, by PROPFIND and GET: path, SHA-256."""
    files = {}
    pending = [base]
    while pending:
        folder = pending.pop()
        url = f"{server.base_url}/remote.php/dav/files/{LOGIN}/{quote(folder)}/"
        listing = requests.request("PROPFIND", url, auth=(LOGIN, PASSWORD), timeout=30,
                                   headers={"Depth": "1"})
        assert listing.status_code == 207, listing.text
        for href, is_folder in _members(listing.text):
            inside = href.split(f"/files/{LOGIN}/", 1)[1].rstrip("/")
            if inside == folder:
                continue
            if is_folder:
                pending.append(inside)
                continue
            got = requests.get(f"{server.base_url}/remote.php/dav/files/{LOGIN}/{quote(inside)}",
                               auth=(LOGIN, PASSWORD), timeout=60)
            files[inside.removeprefix(base + "/")] = hashlib.sha256(got.content).hexdigest()
    return files


def _members(multistatus: str) -> list[tuple[str, bool]]:
    found = []
    for response in ElementTree.fromstring(multistatus).iter("{DAV:}response"):
        href = unquote(response.findtext("{DAV:}href") or "")
        found.append((href, response.find(".//{DAV:}collection") is not None))
    return found


def test_a_onedrive_lands_in_nextcloud_chunked_where_large_with_its_mtimes(
        certificates, tmp_path, monkeypatch):
    """The drive's 23 MiB file cannot be PUT (the server takes 16 MiB at most): it goes in
    chunks of 10 MiB. Every file read back by GET hashes as at the source and carries its
    source's modification time; ``verify`` finds no mismatch; a second run copies nothing."""
    tenant = french_tenant(users=3, inbox_messages=1)
    files: FixtureFiles = seed_files(tenant, big_file_size=23 * MIB)
    server = start_nextcloud(tmp_path / "nextcloud", {LOGIN: PASSWORD}, put_cap=16 * MIB)
    monkeypatch.setenv("ALICE_TARGET", PASSWORD)
    try:
        with running_graph_server(tenant, certificates) as graph, \
                running_download_server(files, certificates):
            monkeypatch.setenv("GRAPH_SECRET", graph.tenant.client_secret)
            batch = write_batch(tmp_path, graph, certificates, server,  # type: ignore[arg-type]
                                'profile = "nextcloud"')
            drive = files.drives[files.user_drives[tenant.mailbox(AMELIE).id]]
            expected = {path: hashlib.sha256(content).hexdigest()
                        for path, content in expected_files(drive).items()}
            assert max(len(content) for content in expected_files(drive).values()) > 16 * MIB

            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert read_back(server) == expected
            ran = report(tmp_path, "run")
            assert [row for row in ran["entries"] if row.get("code") == "mtime_not_kept"] == []
            modified = {"/".join(drive.path_of(item)): item.client_modified.timestamp()
                        for item in drive.items.values() if item.kind == "file"}
            space = server.space(LOGIN) / "OneDrive"
            assert {path: (space / path).stat().st_mtime for path in expected} == \
                {path: int(modified[path]) for path in expected}
            assert list(server.uploads(LOGIN).iterdir()) == []

            code, output = bascule("verify", str(batch))
            assert code == 0, output
            assert report(tmp_path, "verify")["summary"]["mismatches"] == 0
            code, output = bascule("run", str(batch))
            assert code == 0, output
            assert report(tmp_path, "run")["summary"]["copied"] == 0
    finally:
        server.stop()


def test_killed_in_the_middle_of_chunked_uploads_then_run_again(fault_proxy, tmp_path):
    """A drive of large files (chunked) and small ones, from a local export; the run is
    killed while chunks are in flight, twice; the next run ends it: every file once, whole,
    no partial file, no upload folder left, ``verify`` clean."""
    server = start_nextcloud(tmp_path / "nextcloud", {LOGIN: PASSWORD}, put_cap=16 * MIB)
    try:
        proxy = fault_proxy((server.host, server.port))
        rng = random.Random(11)
        expected = export_drive(tmp_path, LOGIN, {
            f"Dossier {n % 2}/fichier {n}.bin":
                rng.randbytes(22 * MIB + n if n % 2 == 0 else 200_000 + n) for n in range(8)})
        batch = export_to_webdav(
            tmp_path, LOGIN, f"http://127.0.0.1:{proxy.port}/remote.php/dav/files/{{login}}/",
            'profile = "nextcloud"')
        env = {**os.environ, "ALICE_TARGET": PASSWORD, "PYTHONPATH": str(ROOT)}

        outcomes = [kill_in_flight(batch, env, proxy, start) for start in (
            lambda ledger: proxy.bytes_to_server >= 15 * MIB,
            lambda ledger: proxy.bytes_to_server >= 70 * MIB)]
        assert [outcome.returncode for outcome in outcomes] == [-signal.SIGKILL] * 2
        # What a kill leaves: at most upload folders, never a file of the drive half there.
        space = server.space(LOGIN) / "Partage"
        for path in space.rglob("*"):
            if path.is_file():
                relative = path.relative_to(space).as_posix()
                assert hashlib.sha256(path.read_bytes()).hexdigest() == expected[relative]
        left_behind = list(server.uploads(LOGIN).iterdir())
        assert left_behind, "no chunked upload was cut: kill later"

        final = run(batch, env)
        assert final.returncode == 0, final.stdout + final.stderr
        assert read_back(server, "Partage") == expected
        assert [p for p in server.uploads(LOGIN).iterdir() if p in left_behind] == [], (
            "an upload folder of a killed run was not cleared by the next")
        assert list(server.uploads(LOGIN).iterdir()) == []
        verify = run(batch, env, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.stop()
