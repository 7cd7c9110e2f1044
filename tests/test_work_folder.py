"""The place bascule works in: one command at a time, private files, and a clear word when
the work folder, the ledger or the batch cannot be used."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

from migrate.batch import batch_warnings, load_batch
from migrate.ledger import Ledger
from migrate.lock import WorkFolderLock
from tests import mailboxes
from tests.cli import bascule, report
from tests.corpus import CorpusFolder, build_mailbox, write_maildir

ROOT = Path(__file__).resolve().parent.parent


def local_batch(folder: Path, extra: str = "", run: str = 'work_dir = "work"') -> Path:
    """Two users' Maildir exports moved into Maildir targets: fast, and every file local."""
    for user in ("alice", "bruno"):
        write_maildir(folder / "source" / user, [
            CorpusFolder(("INBOX",), "inbox", list(build_mailbox(8, seed=len(user))))])
    mailboxes.write_users(folder, [("alice", "alice", "", ""), ("bruno", "bruno", "", "")])
    path = folder / "batch.toml"
    path.write_text(f"""
name = "local"
{extra}
[source]
type = "maildir"
path = "source"
[target]
type = "maildir"
path = "target"
[run]
{run}
""", encoding="utf-8")
    return path


def test_work_folder_ledger_and_reports_are_private(tmp_path):
    batch = local_batch(tmp_path)
    old = os.umask(0o022)
    try:
        assert bascule("run", str(batch))[0] == 0
    finally:
        os.umask(old)
    work = tmp_path / "work"
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    for name in ("ledger.sqlite", "ledger-backup.sqlite", "bascule.lock", "run-latest.json"):
        if (work / name).exists():
            assert stat.S_IMODE((work / name).stat().st_mode) == 0o600, name
    assert (work / "ledger.sqlite").exists() and (work / "bascule.lock").exists()


def test_a_command_holding_the_work_folder_makes_the_next_one_wait_its_turn(tmp_path):
    batch = local_batch(tmp_path)
    (tmp_path / "work").mkdir()
    held = WorkFolderLock(tmp_path / "work", "run")
    held.acquire()
    try:
        for command in ("run", "plan", "verify"):
            code, output = bascule(command, str(batch))
            assert code == 2, output
            assert f"is in use by run (PID {os.getpid()} on" in output
        code, output = bascule("--lang", "fr", "run", str(batch))
        assert code == 2 and "une commande à la fois par lot" in output
        # Reading the ledger while a command runs is allowed.
        assert bascule("status", str(batch))[0] == 0
    finally:
        held.release()
    assert bascule("run", str(batch))[0] == 0


def test_a_lock_left_by_a_dead_process_is_taken_over_and_said(tmp_path):
    batch = local_batch(tmp_path)
    (tmp_path / "work").mkdir(mode=0o700)
    (tmp_path / "work" / "bascule.lock").write_text(
        '{"host": "poste-dsi", "pid": 999999, "started_at": "2026-12-01T22:00:00+00:00", '
        '"command": "run"}')
    code, output = bascule("run", str(batch))
    assert code == 0, output
    assert "left by run (PID 999999 on poste-dsi" in output and "taken over" in output


def test_a_work_folder_that_is_a_file_is_refused_with_the_reason(tmp_path):
    batch = local_batch(tmp_path)
    (tmp_path / "work").write_text("not a folder")
    for command in ("run", "plan", "verify", "status"):
        code, output = bascule(command, str(batch))
        assert code == 2, output
        assert "is a file" in output and "Traceback" not in output


def test_an_unwritable_work_folder_is_refused_with_the_reason(tmp_path, small_tmpfs):
    # A read-only file system: unwritable even to root, who runs the tests here.
    disk = small_tmpfs(1 << 20)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    batch = local_batch(tmp_path, run=f'work_dir = "{disk / "work"}"')
    code, output = bascule("run", str(batch))
    assert code == 2, output
    assert f"the work folder {disk / 'work'} cannot be used: Read-only file system" in output


def test_a_damaged_ledger_is_said_with_its_copy_and_never_replaced_silently(tmp_path):
    batch = local_batch(tmp_path)
    assert bascule("run", str(batch))[0] == 0
    ledger = tmp_path / "work" / "ledger.sqlite"
    backup = tmp_path / "work" / "ledger-backup.sqlite"
    assert backup.exists()
    with sqlite3.connect(backup) as db:
        assert db.execute("select count(*) from units").fetchone()[0] == 0
    assert bascule("run", str(batch))[0] == 0
    with sqlite3.connect(backup) as db:
        assert db.execute("select count(*) from items").fetchone()[0] == 16

    damaged = b"SQLite format 3\x00" + os.urandom(8192)
    ledger.write_bytes(damaged)
    for name in ("ledger.sqlite-wal", "ledger.sqlite-shm"):
        (tmp_path / "work" / name).unlink(missing_ok=True)
    code, output = bascule("run", str(batch))
    assert code == 2, output
    assert "is damaged" in output and str(backup) in output and "Traceback" not in output
    assert ledger.read_bytes() == damaged

    ledger.write_bytes(b"not a database at all, just text" * 64)
    backup.unlink()
    code, output = bascule("--lang", "fr", "plan", str(batch))
    assert code == 2 and "est endommagé" in output and "n'a pas de copie" in output, output


def test_a_ledger_database_without_its_driver_is_said(tmp_path):
    batch = local_batch(tmp_path, run='work_dir = "work"\n'
                        'ledger = "postgresql+psycopg2://bascule@127.0.0.1:1/lot"')
    code, output = bascule("status", str(batch))
    assert code == 2, output
    assert "database driver that is not installed" in output and "psycopg2" in output


def test_a_password_in_the_ledger_url_is_refused_and_not_repeated(tmp_path):
    batch = local_batch(tmp_path, run='work_dir = "work"\n'
                        'ledger = "postgresql://bascule:Tr3sS3cret@127.0.0.1/lot"')
    code, output = bascule("plan", str(batch))
    assert code == 2
    assert "run.ledger" in output and "ledger_secret" in output
    assert "Tr3sS3cret" not in output


def test_init_into_a_missing_folder_is_refused(tmp_path):
    code, output = bascule("init", str(tmp_path / "absent" / "lot.toml"))
    assert code == 2 and "does not exist" in output
    assert not (tmp_path / "absent").exists()


def test_loose_secret_files_and_cleartext_to_a_network_host_are_warned_about(tmp_path):
    secret = tmp_path / "admin-secret"
    secret.write_text("mot-de-passe\n")
    secret.chmod(0o644)
    batch = tmp_path / "batch.toml"
    batch.write_text(f"""
name = "avertissements"
[source]
type = "imap"
host = "imap.source.example"
security = "none"
[target]
type = "imap"
host = "127.0.0.1"
security = "none"
[target.admin]
login = "migration"
secret = "file:{secret}"
""", encoding="utf-8")
    warnings = {w.code: w for w in batch_warnings(load_batch(batch))}
    assert set(warnings) == {"cleartext_to_network", "secret_file_loose_permissions"}
    assert "imap.source.example" in warnings["cleartext_to_network"].en
    assert "chmod 600" in warnings["secret_file_loose_permissions"].fr
    secret.chmod(0o600)
    assert [w.code for w in batch_warnings(load_batch(batch))] == ["cleartext_to_network"]


def test_a_loose_secret_file_of_the_users_table_is_warned_about_by_plan(tmp_path):
    batch = local_batch(tmp_path)
    secret = tmp_path / "alice.secret"
    secret.write_text("x\n")
    secret.chmod(0o640)
    mailboxes.write_users(tmp_path, [("alice", "alice", f"file:{secret.name}", ""),
                                     ("bruno", "bruno", "", "")])
    code, output = bascule("plan", str(batch))
    assert code == 0, output
    assert f"chmod 600 {secret}" in output
    codes = {w["code"] for w in report(tmp_path, "plan")["warnings"]}
    assert "secret_file_loose_permissions" in codes


CREATE = """
import sys
from pathlib import Path
from migrate.ledger import Ledger
Ledger.in_folder(Path(sys.argv[1])).close()
"""


def test_processes_creating_one_ledger_together_all_succeed(tmp_path):
    for attempt in range(5):
        work = tmp_path / f"work-{attempt}"
        starters = [subprocess.Popen([sys.executable, "-c", CREATE, str(work)],
                                     cwd=ROOT, stderr=subprocess.PIPE) for _ in range(6)]
        for starter in starters:
            assert starter.wait(timeout=60) == 0, starter.stderr.read().decode()
        with sqlite3.connect(work / "ledger.sqlite") as db:
            tables = {row[0] for row in db.execute("select name from sqlite_master")}
        assert {"runs", "units", "items"} <= tables


def test_a_ledger_made_before_a_column_existed_is_given_it_and_keeps_its_rows(tmp_path):
    work = tmp_path / "work"
    Ledger.in_folder(work).close()
    with sqlite3.connect(work / "ledger.sqlite") as db:
        db.execute("insert into items (unit_id, source_id, status, attempts)"
                   " values (1, 'm1', 'done', 1)")
        db.execute("alter table items drop column target_version")
    ledger = Ledger.in_folder(work)
    ledger.close()
    with sqlite3.connect(work / "ledger.sqlite") as db:
        columns = {row[1] for row in db.execute("pragma table_info(items)")}
        rows = db.execute("select source_id, status, target_version from items").fetchall()
    assert "target_version" in columns
    assert rows == [("m1", "done", None)]
