"""Files into a real WsgiDAV through a fault proxy: the run killed with uploads in flight,
again and again, and a connection reset in the middle of a file; then run to its end. Every
file once, whole, under its name, no temporary file left: the space read back as files."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from tests.exports import export_drive, export_to_webdav
from tests.faults import kill_in_flight, wait_for
from tests.wsgidav import start_wsgidav

ROOT = Path(__file__).resolve().parent.parent
LOGIN = "alice"
PASSWORD = "alice-target"


def export(folder: Path, count: int, size: int) -> dict[str, str]:
    """A drive of ``count`` files of about ``size`` bytes in a few folders, as a local
    export; their SHA-256 by path inside the drive."""
    rng = random.Random(7)
    return export_drive(folder, LOGIN, {
        f"Dossier {n % 4}/Sous-dossier {n % 3}/fichier {n}.bin": rng.randbytes(size + n)
        for n in range(count)})


def write_batch(folder: Path, url: str) -> Path:
    return export_to_webdav(folder, LOGIN, url)


def landed(space: Path) -> dict[str, str]:
    drive = space / "Partage"
    return {path.relative_to(drive).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in drive.rglob("*") if path.is_file()}


def run(batch: Path, env: dict[str, str], command: str = "run") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "migrate", command, str(batch)], cwd=ROOT,
                          env=env, capture_output=True, text=True, check=False)


def test_killed_with_uploads_in_flight_then_run_again_each_file_once(fault_proxy, tmp_path):
    server = start_wsgidav(tmp_path / "wsgidav", {LOGIN: PASSWORD})
    try:
        proxy = fault_proxy((server.host, server.port))
        files = export(tmp_path, 60, 300_000)
        batch = write_batch(tmp_path, f"http://127.0.0.1:{proxy.port}/{{login}}/")
        env = {**os.environ, "ALICE_TARGET": PASSWORD, "PYTHONPATH": str(ROOT)}

        # Killed while uploads are held in flight by the proxy: during the first ones, then
        # with 15 and 30 files recorded, each run resuming the one before.
        outcomes = [kill_in_flight(batch, env, proxy, start) for start in (
            lambda ledger: proxy.bytes_to_server >= 200_000,
            lambda ledger: ledger.done >= 15, lambda ledger: ledger.done >= 30)]
        assert [outcome.returncode for outcome in outcomes] == [-signal.SIGKILL] * 3
        assert all(outcome.at_signal.inflight > 0 for outcome in outcomes)
        assert max(outcome.at_signal.done for outcome in outcomes) < 60, "make the export larger"

        final = run(batch, env)
        assert final.returncode == 0, final.stdout + final.stderr
        assert landed(server.space(LOGIN)) == files
        # A killed upload leaves its hidden temporary file; the write that follows of the
        # same name replaces it, and the run that finishes leaves none.
        assert [p.name for p in server.space(LOGIN).rglob(".*")] == []
        verify = run(batch, env, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.stop()


def test_a_connection_reset_in_the_middle_of_a_file_is_tried_again_in_the_run(
        fault_proxy, tmp_path):
    """The proxy resets every connection once 1.5 MB more have gone to the server: the file
    being sent is cut short. Its write is tried again on a new connection, with the same
    condition, and the run ends with every file whole; no file is ever half there."""
    server = start_wsgidav(tmp_path / "wsgidav", {LOGIN: PASSWORD})
    try:
        proxy = fault_proxy((server.host, server.port))
        files = export(tmp_path, 12, 1_000_000)
        batch = write_batch(tmp_path, f"http://127.0.0.1:{proxy.port}/{{login}}/")
        env = {**os.environ, "ALICE_TARGET": PASSWORD, "PYTHONPATH": str(ROOT)}

        proxy.reset_after(1_500_000, "to_server")
        first = run(batch, env)
        assert proxy.resets == 1 and proxy.connections_reset >= 1
        assert first.returncode == 0, first.stdout + first.stderr
        assert landed(server.space(LOGIN)) == files
        assert [p.name for p in server.space(LOGIN).rglob(".*")] == []
        verify = run(batch, env, "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        server.stop()


def test_a_server_gone_in_the_middle_of_a_run_loses_nothing(fault_proxy, tmp_path):
    """Once 1.5 MB have gone to the server, it stops answering new connections and those
    open are reset: what was in flight, tried again, finds no server and is reported; the
    run ends with the files not sent reported, none half there. Run again with the server
    back, every file lands, once."""
    server = start_wsgidav(tmp_path / "wsgidav", {LOGIN: PASSWORD})
    try:
        proxy = fault_proxy((server.host, server.port))
        files = export(tmp_path, 12, 1_000_000)
        batch = write_batch(tmp_path, f"http://127.0.0.1:{proxy.port}/{{login}}/")
        env = {**os.environ, "ALICE_TARGET": PASSWORD, "PYTHONPATH": str(ROOT)}

        with subprocess.Popen([sys.executable, "-m", "migrate", "run", str(batch)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) as process:
            wait_for(lambda: proxy.bytes_to_server >= 1_500_000, 60, "1.5 MB sent")
            proxy.refuse()
            proxy.reset_now()
            output, _ = process.communicate(timeout=120)
        assert process.returncode == 1, output
        # A write cut short leaves at most its hidden temporary file, which no listing
        # shows and which the next write of the name replaces.
        there = {path: digest for path, digest in landed(server.space(LOGIN)).items()
                 if not Path(path).name.startswith(".")}
        assert len(there) < len(files)
        assert all(files[path] == digest for path, digest in there.items())

        proxy.accept()
        final = run(batch, env)
        assert final.returncode == 0, final.stdout + final.stderr
        assert landed(server.space(LOGIN)) == files
        assert [p.name for p in server.space(LOGIN).rglob(".*")] == []
    finally:
        server.stop()
