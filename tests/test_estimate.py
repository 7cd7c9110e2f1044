"""The plan's estimate of a run's duration: the model, its fit on past runs, the probe, and,
end to end against Dovecot, a plan before any run (probe) and after one (history)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from migrate.estimate import (
    COPYING_UNIT_LOCAL_SECONDS,
    COPYING_UNIT_ROUND_TRIPS,
    DEFAULT_RATES,
    PLAN_STEP_SHARE,
    PROBE_ROUND_TRIPS,
    RUN_END_SECONDS,
    SHARED_LANES,
    UNIT_LOCAL_SECONDS,
    Lanes,
    PrincipalWork,
    Probe,
    Rates,
    estimate,
    fit_history,
    schedule,
)
from migrate.ledger import Ledger, TimedRun, Timing
from tests.cli import bascule, report
from tests.test_engine_imap import alice_pair

RATES = Rates(per_principal=0.5, per_unit=0.05, per_copying_unit=0.15, per_item=0.002,
              bytes_per_second=5_000_000)
LANES = Lanes(workers=4, account_slots=2)


def timed_run(run_id: int, wall: float, units: dict[str, list[tuple[int, int]]],
              rates: Rates = RATES) -> TimedRun:
    """A run whose steps took exactly what ``rates`` say."""
    steps = []
    for principal, sizes in units.items():
        steps.append(Timing(principal, "mail", "", rates.per_principal, 0, 0))
        steps += [Timing(principal, "mail", f"F{k}", rates.unit_seconds(items, size), items,
                         size) for k, (items, size) in enumerate(sizes)]
    return TimedRun(run_id, wall, steps)


def test_many_users_run_over_the_lanes_not_one_after_another() -> None:
    # 100 users of 3 units of 1 s and an own step of 1 s: 400 s of work over 4 lanes.
    many = schedule([(1.0, [1.0, 1.0, 1.0])] * 100, LANES)
    assert many.total == pytest.approx(100.0)
    # One of them: its step, then its 3 units one after another (more users than workers:
    # each runs on one lane, with one login).
    assert many.principals[0] == pytest.approx(4.0)
    # Two users over 4 workers: 2 lanes each.
    assert schedule([(1.0, [1.0, 1.0, 1.0])] * 2, LANES).principals[0] == pytest.approx(2.5)
    # One user: its 2 slots bound it, and never less than its longest unit.
    assert schedule([(1.0, [1.0, 1.0, 1.0, 1.0])], LANES).total == pytest.approx(3.0)
    assert schedule([(0.0, [10.0, 1.0])], LANES).total == pytest.approx(10.0)
    assert schedule([(0.0, [4.0] * 8)], Lanes(workers=1, account_slots=4)).total == 32.0


def test_the_fit_finds_the_rates_the_runs_were_made_with() -> None:
    units = {"alice": [(360, 13_500_000), (180, 10_200_000), (7, 360_000), (0, 0)],
             "bob": [(40, 2_500_000), (1, 900_000), (15, 2_000_000)]}
    modelled = schedule([(RATES.per_principal, [RATES.unit_seconds(i, b) for i, b in u])
                         for u in units.values()], LANES).total
    runs = [timed_run(2, modelled * 1.25, units), timed_run(1, modelled * 1.25, units)]

    history = fit_history(runs, LANES)

    assert history is not None
    assert history.rates.per_principal == pytest.approx(RATES.per_principal)
    assert history.rates.per_unit == pytest.approx(RATES.per_unit)
    assert history.rates.per_copying_unit == pytest.approx(RATES.per_copying_unit)
    assert history.rates.per_item == pytest.approx(RATES.per_item)
    assert history.rates.bytes_per_second == pytest.approx(RATES.bytes_per_second)
    assert history.efficiency == pytest.approx(1.25)
    assert history.basis() == {"kind": "history", "runs": [2, 1],
                               "run_seconds": [round(modelled * 1.25, 2)] * 2, "units": 14,
                               "items": 2 * 603, "bytes": 2 * 29_460_000,
                               "efficiency": 1.25, "defaults": []}


def test_items_and_bytes_measured_one_unit_at_a_time_share_the_machine() -> None:
    # Rates measured one unit at a time (the defaults, the probe's) move the items and bytes
    # of units side by side over SHARED_LANES lanes at most: one user's three folders of
    # 1,000 messages (0.3 s of fixed costs and 2 s of items and bytes each) over 4 slots.
    shared = Rates(per_principal=0.5, per_unit=0.1, per_copying_unit=0.2, per_item=0.001,
                   bytes_per_second=10_000_000, shared_lanes=SHARED_LANES)
    units = [(1_000, 10_000_000)] * 3
    lanes = Lanes(workers=8, account_slots=4)
    assert shared.unit_seconds(1_000, 10_000_000) == pytest.approx(2.3)
    assert shared.shared_seconds(units) == pytest.approx(6.0 / SHARED_LANES)
    found = estimate([PrincipalWork("alice", "alice", units)], shared, lanes, {})
    assert found.seconds == pytest.approx(0.5 + 6.0 / SHARED_LANES + RUN_END_SECONDS)
    assert found.schedule.principals == pytest.approx([0.5 + 6.0 / SHARED_LANES])
    # One folder alone is its own lane's time; many small users, their fixed costs over
    # the lanes, where the floor does not bind.
    alone = estimate([PrincipalWork("alice", "alice", units[:1])], shared, lanes, {})
    assert alone.schedule.total == pytest.approx(0.5 + 2.3)
    many = [PrincipalWork(f"u{k}", f"u{k}", [(30, 300_000)]) for k in range(100)]
    assert estimate(many, shared, lanes, {}).schedule.total == pytest.approx(
        100 * (0.5 + 0.3 + 0.03 + 0.03) / 8)
    # Rates fitted on units that ran side by side hold what sharing cost them: no floor.
    fitted = Rates(0.5, 0.1, 0.2, 0.001, 10_000_000)
    assert estimate([PrincipalWork("alice", "alice", units)], fitted, lanes,
                    {}).schedule.total == pytest.approx(0.5 + 2.3)
    history = fit_history([timed_run(1, 10.0, {"alice": units}, fitted)], lanes)
    assert history is not None and history.rates.shared_lanes is None


def test_no_rate_of_the_fit_is_negative() -> None:
    # Units with more bytes went faster: a free fit would give bytes a negative cost. The
    # fit keeps the fixed costs and the per-item cost: the empty unit D sets the fixed cost,
    # a straight line through the others' (items, seconds) the rest.
    steps = [Timing("alice", "mail", name, seconds, items, size)
             for name, seconds, items, size in (("A", 0.9, 10, 1_000_000),
                                                ("B", 1.2, 20, 100_000),
                                                ("C", 1.4, 30, 10_000), ("D", 0.65, 0, 0))]
    history = fit_history([TimedRun(1, 2.0, steps)], LANES)
    assert history is not None
    assert history.rates.bytes_per_second is None
    assert history.rates.per_unit == pytest.approx(0.65)
    # A, B, C are 0.25, 0.55, 0.75 s above D: the line 0.025 s an item from 1/60 s.
    assert history.rates.per_copying_unit == pytest.approx(1 / 60)
    assert history.rates.per_item == pytest.approx(0.025)
    assert history.rates.per_principal == 0.0


def test_runs_that_copied_nothing_take_the_default_copy_rates() -> None:
    steps = [Timing("alice", "mail", "", 0.3, 0, 0), Timing("alice", "mail", "A", 0.2, 0, 0),
             Timing("alice", "mail", "B", 0.4, 0, 0)]
    history = fit_history([TimedRun(1, 0.8, steps)], LANES)
    assert history is not None
    assert history.rates == Rates(0.3, pytest.approx(0.3), DEFAULT_RATES.per_copying_unit,
                                  DEFAULT_RATES.per_item,
                                  pytest.approx(DEFAULT_RATES.bytes_per_second),
                                  SHARED_LANES)
    assert history.defaults == ["per_copying_unit_seconds", "per_item_seconds",
                                "bytes_per_second"]
    assert fit_history([TimedRun(1, 0.8, steps[:1])], LANES) is None


def test_the_probe_prices_a_unit_from_its_listing_and_the_target_round_trip() -> None:
    probe = Probe()
    probe.principal("alice", 0.2)
    probe.principal("alice", 0.1)
    probe.principal("bob", 0.5)
    probe.folders += [0.05, 0.1, 0.3]
    probe.target_round_trips += [0.02, 0.01, 0.03]
    rates = probe.rates()
    # A run's step is a share of the plan's (alice's two workloads, 0.3 s; bob's 0.5 s).
    assert rates == Rates(pytest.approx(0.4 * PLAN_STEP_SHARE),
                          pytest.approx(0.1 + UNIT_LOCAL_SECONDS),
                          pytest.approx(COPYING_UNIT_ROUND_TRIPS * 0.01
                                        + COPYING_UNIT_LOCAL_SECONDS),
                          DEFAULT_RATES.per_item, DEFAULT_RATES.bytes_per_second,
                          SHARED_LANES)
    assert Probe().rates() is None


def test_an_estimate_per_user_and_in_all_with_its_basis() -> None:
    works = [PrincipalWork("alice@ville.fr", "alice", [(100, 5_000_000), (0, 0)]),
             PrincipalWork("bob@ville.fr", "bob", [])]
    found = estimate(works, RATES, LANES, {"kind": "probe", "principals": 2}, efficiency=2.0)
    # alice's units: 0.05 + 0.15 + 0.2 + 1.0 = 1.4 s, and 0.05 s for the empty one.
    alice = 0.5 + max((1.4 + 0.05) / 2, 1.4)
    assert found.schedule.principals == pytest.approx([alice, 0.5])
    # Both users' work (2.45 s) over 4 lanes is less than alice alone.
    # The run's end (goodbyes, reports, exit) comes on top, as its start would.
    assert found.seconds == pytest.approx(alice * 2.0 + RUN_END_SECONDS)
    document = found.document()
    assert document["principals"][0] == {"principal": "alice@ville.fr", "target": "alice",
                                         "units": 2, "items": 100, "bytes": 5_000_000,
                                         "seconds": 1.9}
    assert found.basis_text().fr == ("estimation d'après une mesure des deux serveurs pour "
                                     "2 utilisateurs, aux débits de copie par défaut")


def test_the_ledger_keeps_the_timings_of_runs_that_ended_by_themselves(tmp_path) -> None:
    ledger = Ledger.in_folder(tmp_path)
    for status in ("done", "interrupted", "failed", "done"):
        run_id = ledger.start_run("lot", "run")
        ledger.record_timing(run_id, "alice", "mail", "", 0.25)
        ledger.record_timing(run_id, "alice", "mail", "INBOX", 1.5, 12, 3400)
        ledger.end_run(run_id, status, {})
    ledger.end_run(ledger.start_run("lot", "run"), "done", {})  # no timings: an old ledger

    runs = ledger.timed_runs(2)

    assert [run.run_id for run in runs] == [4, 3]
    assert runs[0].steps == [Timing("alice", "mail", "", 0.25, 0, 0),
                             Timing("alice", "mail", "INBOX", 1.5, 12, 3400)]
    assert 0 <= runs[0].seconds < 5


@pytest.fixture
def pair(dovecot_factory, tmp_path, monkeypatch):
    return alice_pair(dovecot_factory, tmp_path, monkeypatch)[3]


def test_a_plan_estimates_from_a_probe_then_from_the_run_before_it(pair, tmp_path) -> None:
    code, output = bascule("plan", str(pair))
    assert code == 0, output
    plan = report(tmp_path, "plan")
    found = plan["estimate"]
    planned = [e for e in plan["entries"] if e["action"] in ("copy", "rename")]
    # Empty folders are settled from the folder list: not listed, not units of the model.
    copied = [e for e in planned if not e.get("settled")]
    assert {e["messages"] for e in planned if e.get("settled")} == {0}
    assert len(copied) < len(planned)
    basis = found["basis"]
    assert basis["kind"] == "probe"
    assert (basis["principals"], basis["folders"]) == (1, len(copied))
    # The first counts are timed for the target's round trip; the rest come from the folder
    # list, without a round trip.
    assert basis["target_round_trips"] == min(
        PROBE_ROUND_TRIPS, len({e["target_folder"] for e in planned})) < len(
        {e["target_folder"] for e in planned})
    assert 0 < basis["target_round_trip_seconds"] < 1 and 0 < basis["principal_seconds"] < 5
    rates = found["rates"]
    assert rates["per_unit_seconds"] == pytest.approx(
        basis["folder_listing_seconds"] + UNIT_LOCAL_SECONDS, abs=1e-3)
    assert rates["per_copying_unit_seconds"] == pytest.approx(
        COPYING_UNIT_ROUND_TRIPS * basis["target_round_trip_seconds"]
        + COPYING_UNIT_LOCAL_SECONDS, abs=1e-3)
    assert rates["per_principal_seconds"] == pytest.approx(
        basis["principal_seconds"] * PLAN_STEP_SHARE, abs=1e-3)
    assert found["lanes"] == {"workers": 3, "account_slots": 4}
    [alice] = found["principals"]
    assert (alice["units"], alice["items"], alice["bytes"]) == (
        len(copied), plan["summary"]["to_copy"], plan["summary"]["to_copy_bytes"])
    moving = [rates["per_item_seconds"] * e["to_copy"]
              + e["to_copy_bytes"] / rates["bytes_per_second"] for e in copied]
    unit_seconds = [rates["per_unit_seconds"] + (e["to_copy"] > 0) * (
        rates["per_copying_unit_seconds"] + m) for e, m in zip(copied, moving)]
    lanes = min(found["lanes"].values())
    assert rates["shared_lanes"] == SHARED_LANES
    expected = rates["per_principal_seconds"] + max(sum(unit_seconds) / lanes,
                                                    max(unit_seconds),
                                                    sum(moving) / SHARED_LANES)
    # Called from Python, the command starts when called: its start is the batch read and
    # the ledger opened, a few hundredths of a second.
    assert 0 < found["start_seconds"] < 1
    assert found["end_seconds"] == RUN_END_SECONDS
    assert found["seconds"] == pytest.approx(
        expected + found["start_seconds"] + RUN_END_SECONDS, abs=0.1)
    assert plan["summary"]["estimated_seconds"] == found["seconds"]
    assert "(estimate from a probe of both servers for 1 user, at default copy rates);" in output
    with (tmp_path / "work" / "plan-latest.csv").open(encoding="utf-8-sig") as handle:
        [row] = [r for r in csv.DictReader(handle) if r["action"] == "estimate"]
    assert (row["principal"], row["messages"]) == ("alice@ville.fr", str(alice["items"]))
    assert row["message_fr"].startswith("environ ")

    started = time.monotonic()
    assert bascule("run", str(pair))[0] == 0
    wall = time.monotonic() - started
    run = report(tmp_path, "run")

    code, output = bascule("--lang", "fr", "plan", str(pair))
    assert code == 0, output
    found = report(tmp_path, "plan")["estimate"]
    basis = found["basis"]
    assert basis["kind"] == "history" and basis["runs"] == [run["run_id"]]
    assert basis["units"] == len([e for e in run["entries"] if e["action"] in ("copy", "rename")
                                  and not e.get("settled")])
    assert (basis["items"], basis["bytes"]) == (run["summary"]["copied"], run["summary"]["bytes"])
    assert 0 < basis["run_seconds"][0] <= wall
    # Everything is copied: the next run is a delta pass, its units' fixed costs only,
    # and it takes less than the run that copied everything.
    rates = found["rates"]
    [alice] = found["principals"]
    assert alice["items"] == 0
    expected = rates["per_principal_seconds"] + max(
        alice["units"] * rates["per_unit_seconds"] / 2, rates["per_unit_seconds"])
    assert found["seconds"] == pytest.approx(
        expected * basis["efficiency"] + found["start_seconds"] + RUN_END_SECONDS, abs=0.1)
    # Every folder is settled from the folder list: no unit to run, only the principal's
    # own step (its sign-ins and listings), which on loopback may round to 0.0 s.
    assert alice["units"] == 0
    assert 0 <= (found["seconds"] - found["start_seconds"] - RUN_END_SECONDS
                 < basis["run_seconds"][0])
    assert "(estimation d'après 1 exécution passée) ;" in output


def test_a_plan_run_as_a_program_counts_its_start_in_the_estimate(pair, tmp_path) -> None:
    """``bascule plan`` as a process: its imports and the batch read, before the plan, are
    in the estimate as the run's start (a pass with nothing new is mostly that start)."""
    assert bascule("plan", str(pair))[0] == 0
    in_python = report(tmp_path, "plan")["estimate"]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "migrate", "plan", str(pair)], cwd=tmp_path,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    as_program = report(tmp_path, "plan")["estimate"]
    # The interpreter's imports (SQLAlchemy, pydantic, click...) take tenths of a second.
    assert in_python["start_seconds"] + 0.1 < as_program["start_seconds"] < wall
    # Both plans model the same work from their own probes: they differ by their starts.
    assert as_program["seconds"] - in_python["seconds"] == pytest.approx(
        as_program["start_seconds"] - in_python["start_seconds"], abs=0.2)
