"""Work units as data: the planner writes them to the ledger, and any process runs one with
the batch file and the ledger alone. Dovecot to Dovecot, each unit run in a process of its
own, the target read back with imapclient."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mappings.users import load_users
from migrate.batch import load_batch
from migrate.ledger import Ledger, LedgerError
from migrate.units import Bench, plan_units, run_unit
from tests import mailboxes
from tests.cli import bascule, report
from tests.test_engine_imap import LANDING, alice_pair

ROOT = Path(__file__).resolve().parent.parent

RUN_ONE = """
import sys
from pathlib import Path
from migrate.units import run_unit
result = run_unit(Path(sys.argv[1]), int(sys.argv[2]))
print(result.copied, result.failed)
"""


@pytest.fixture
def planned(dovecot_factory, tmp_path, monkeypatch):
    """alice's corpus on a source Dovecot, and the units of a run planned into the ledger."""
    source, target, _, batch_path = alice_pair(dovecot_factory, tmp_path, monkeypatch)
    batch = load_batch(batch_path)
    ledger = Ledger.in_folder(batch.work_dir)
    bench = Bench(batch, ledger, load_users(batch.resolve(batch.mapping.users)))
    try:
        run_id = ledger.start_run(batch.name, "run")
        [user] = bench.user_map
        to_run, decided = plan_units(bench, user, "mail", run_id)
    finally:
        bench.close()
        ledger.close()
    # The empty folders are settled at planning (recorded done), not to run; a process
    # asked to run one all the same finds nothing to do.
    assert decided.settled and all(u.status == "done" for u in decided.settled)
    assert not {u.id for u in to_run} & {u.id for u in decided.settled}
    return source, target, batch_path, to_run + decided.settled


def run_in_a_process(batch: Path, unit_id: int) -> str:
    done = subprocess.run([sys.executable, "-c", RUN_ONE, str(batch), str(unit_id)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_units_planned_into_the_ledger_run_each_in_its_own_process(planned, tmp_path):
    source, target, batch, units = planned
    assert {u.source_type for u in units} == {"imap"} and {u.sink_type for u in units} == {"imap"}
    assert set(LANDING) <= {tuple(u.spec["path"]) for u in units}
    # Folders landing in one target folder share a chain: "Éléments envoyés" and the
    # source's own empty "Sent" both land in the target's Sent.
    chains = {u.chain for u in units if u.spec["target_path"] == ["Sent"]}
    assert len(chains) == 1 and len([u for u in units if u.spec["target_path"] == ["Sent"]]) == 2

    for unit in units:
        run_in_a_process(batch, unit.id)
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), LANDING)

    # Run again, each unit in a new process: found done, nothing sent twice.
    assert {run_in_a_process(batch, unit.id) for unit in units} == {"0 0"}
    assert mailboxes.filled(target, "alice") == mailboxes.landed(
        mailboxes.contents(source, "alice@ville.fr"), LANDING)
    code, output = bascule("verify", str(batch))
    assert code == 0, output
    assert report(tmp_path, "verify")["summary"]["mismatches"] == 0


def test_a_unit_the_ledger_does_not_hold_is_refused_by_name(planned):
    _, _, batch, units = planned
    missing = max(u.id for u in units) + 1
    with pytest.raises(LedgerError) as caught:
        run_unit(batch, missing)
    assert caught.value.kind == "no_unit" and caught.value.detail == str(missing)
