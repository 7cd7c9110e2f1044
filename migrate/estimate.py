"""How long a run will take: the model of its duration, its rates measured from the
ledger's last runs or from what the plan itself timed, and the estimate for a plan.

The model. A run pays, for each principal, one step of its own (signing in on both sides,
listing and deciding its folders), then for each unit (one container) a fixed cost (its
listing, its checkpoints in the ledger) and, when it copies anything, a fixed cost more
(its target folder found or made and opened, the last writes answered), a cost per item,
and the time its bytes take at some throughput::

    principal = per_principal
    unit      = per_unit                     nothing to copy (a delta pass, an empty folder)
              + per_copying_unit + per_item * items + bytes / bytes_per_second

Units run ``workers`` at a time in all and ``account_slots`` at a time per principal (the
smaller of both ends' limits). A principal alone takes its own step then its units over its
slots (never less than its longest unit); the batch takes all the work over the lanes it can
fill, and never less than its longest principal. Rates that were not measured with the
run's own units side by side (the probe's, the defaults) also give a floor: the items and
bytes of all the units go over ``shared_lanes`` lanes at most, however many lanes run
(``SHARED_LANES``). That is a lower bound of what a scheduler achieves: the history says
how far above it past runs ended (``efficiency``). The command's
own start comes on top (the interpreter's imports, the batch, the ledger checked, the
source's sign-in checked: over half a second, most of a pass with nothing new); the plan's
own start until it plans stands for it.

The rates come from, in this order:

- **history**: the timings the last runs recorded (``Ledger.timed_runs``), each unit's
  seconds against what it copied, fitted by least squares with no negative rate, and the
  principals' own steps averaged; ``efficiency`` is the runs' wall time over what the model
  gives for their own timings;
- **probe**: what ``plan`` timed of the round trips it makes anyway: a principal's sign-in
  and folder listing, each folder's listing at the source, a count at the target. A unit's
  fixed cost is its source listing plus ``UNIT_LOCAL_SECONDS``; one that copies adds
  ``COPYING_UNIT_ROUND_TRIPS`` round trips (timed at the target) and
  ``COPYING_UNIT_LOCAL_SECONDS``; the plan copies nothing, so the cost per item and the
  throughput are defaults (``DEFAULT_RATES``), stated as such in the basis;
- **defaults** alone when nothing could be timed (every principal refused).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from migrate.ledger import Ledger, TimedRun
from reports.i18n import Text

RUN_END_SECONDS = 0.1
"""What a run spends after the ledger's window closes: its reports written, its
connections' goodbyes (one round trip, said side by side) and the process's exit (0.18 s
measured on a delta pass of one account over a 20 ms round trip, 2026-12-06, before the
goodbyes went side by side and the exit skipped the interpreter's teardown; 0.2 then). The
start is measured by the plan; the end cannot be, a plan having no such end."""

PROBE_ROUND_TRIPS = 8
"""Target counts ``plan`` times for the target's round trip (its quickest is taken)."""

PLAN_STEP_SHARE = 0.6
"""A run's own step per principal against the plan's, which the probe times: the same
sign-ins and folder lists, but a plan does nothing else, ``workers`` principals at once
taking turns for one interpreter and both servers, where a run's steps overlap its units'
waits. Measured on 100 users of ``bench.shaped``: 0.55 to 0.72 with 8, 4 and 1 workers
(2026-12-06), 0.108 to 0.132 s against 0.196 to 0.267 s (2026-12-07, 8 workers); with the
plan's own step, 100 users were estimated at 1.18 to 1.42 of their runs on both days."""

HISTORY_RUNS = 3
"""Past runs the rates are fitted from: the last ones, closest to what the next will meet."""

UNIT_LOCAL_SECONDS = 0.01
"""Seconds any unit spends on this machine whatever the network (its ledger commits, each
written to disk before the next step): what the units of ``bench.shaped`` with nothing to
copy took on loopback, 2026-12-05."""

COPYING_UNIT_ROUND_TRIPS = 2
"""Round trips a unit that copies waits for beyond its source listing (the bodies asked
for, the batches of writes answered, its turn among the others): set between what two
invocations of ``bench.shaped`` on 2026-12-05 showed once folders were made and counted at
planning, with 13 (estimates 1.46 to 1.56 of the runs over a 20 ms round trip) and with 3
(0.64 to 0.73); 6 until 2026-12-06, 3 since a small folder's bodies come with its listing
on whichever connection lists it and the first APPEND connection signs in during that
listing (with 6, 100 users over the WAN were estimated at 1.34 of the run; with 4, the
real-shaped mailbox at 1.35); 2 since the folder list is read on the first APPEND
connection and nothing waits for a control connection (with 3, first runs of one account
were estimated at 1.20 to 1.46 of the run, 2026-12-06 evening)."""

COPYING_UNIT_LOCAL_SECONDS = 0.05
"""Seconds a unit that copies spends on this machine beyond its items (more commits, its
spool, its threads' turns): set the same way on loopback (0.1: 0.95 to 1.09 of the runs;
0.03: 0.54 to 0.73); 0.07 until the evening of 2026-12-06 (first runs then 1.20 to 1.38 of
the runs on loopback)."""


@dataclass(frozen=True)
class Rates:
    """The model's five rates, in seconds (and bytes per second)."""

    per_principal: float
    per_unit: float
    per_copying_unit: float
    per_item: float
    bytes_per_second: float | None
    """``None`` when the bytes did not show in the times measured (they cost nothing
    beyond the per-item cost)."""
    shared_lanes: float | None = None
    """How many lanes' worth of items and bytes the batch moves at once at most, for rates
    measured one unit at a time; ``None`` for rates fitted on units that ran side by side,
    which already hold what sharing cost them."""

    def moving_seconds(self, items: int, size: int) -> float:
        """What a unit's items and bytes cost on its lane, beyond its fixed costs."""
        moved = size / self.bytes_per_second if self.bytes_per_second else 0.0
        return self.per_item * items + moved

    def unit_seconds(self, items: int, size: int) -> float:
        if not items:
            return self.per_unit
        return self.per_unit + self.per_copying_unit + self.moving_seconds(items, size)

    def shared_seconds(self, units: Sequence[tuple[int, int]]) -> float:
        """The least time ``units``' items and bytes take together (0 when unbounded)."""
        if not self.shared_lanes:
            return 0.0
        return sum(self.moving_seconds(i, b) for i, b in units) / self.shared_lanes

    def document(self) -> dict[str, float | None]:
        return {"per_principal_seconds": round(self.per_principal, 4),
                "per_unit_seconds": round(self.per_unit, 4),
                "per_copying_unit_seconds": round(self.per_copying_unit, 4),
                "per_item_seconds": round(self.per_item, 5),
                "bytes_per_second": (round(self.bytes_per_second)
                                     if self.bytes_per_second else None),
                "shared_lanes": self.shared_lanes}


SHARED_LANES = 1.5
"""How many lanes' worth of items and bytes a batch moves at once at most, for rates
measured one unit at a time: however many units run side by side, they share this
machine's CPU and the target's disk. Set on ``bench.shaped``, both servers on a 2-core
machine with bascule, where the model, running one account's three large folders side by
side at full speed each, gave them 0.64 to 0.80 of the time they took on loopback
(2026-12-06)."""

DEFAULT_RATES = Rates(per_principal=0.5, per_unit=0.1, per_copying_unit=0.5,
                      per_item=0.0005, bytes_per_second=55_000_000,
                      shared_lanes=SHARED_LANES)
"""Used for what nothing measured. The cost per item and the throughput are set so that
the first runs of ``bench.shaped`` planned from a probe land nearest their actual times:
0.5 ms and 55 MB/s since 2026-12-07, replayed from the plan reports of six invocations that
day (80 first runs, the machine 1.5 to 1.7 times slower than the day before and drifting
within the day): 72 within ±30% of their runs, against 47 at 0.4 ms and 70 MB/s (the runs of
a faster hour then land at up to 1.47, of the slowest at 0.54). On the faster day before,
these rates would have put 40,000 messages in one folder at about 1.3 of their runs.
Earlier: 0.4 ms once a term growing with the square of a folder's items was dropped
(``FOLDER_GROWTH_SECONDS``: set on a day the raw MULTIAPPEND copier took 6.2 to 11.4 times
as long for 40,000 messages as for 8,000, it over-estimated 40,000 by 1.21 to 1.41 once
bascule grew less than the work), 0.3 ms on 2026-12-06 and 0.5 ms before; 45 MB/s, the
slowest fitted, overshot a single account of three 1,000-message folders on loopback by up
to 1.93, where items and bytes overlap (the bodies are read while earlier ones are written)
and the model adds them. A principal's step and a unit's fixed costs, which the probe
measures when it can, are what that benchmark showed over a 20 ms round trip (0.34 s; 0.1 s
a unit, 0.4 s more for one that copies), rounded up."""


@dataclass(frozen=True)
class Lanes:
    """How many units run at once: ``workers`` in all, ``account_slots`` per principal."""

    workers: int
    account_slots: int

    def per_principal(self, principals: int) -> int:
        """Units of one principal at once: as many as its account allows when the workers
        outnumber the principals, one at a time when there are more principals than
        workers (each unit at once would log in again; one after another share a login)."""
        return max(1, min(self.account_slots, -(-self.workers // max(1, principals))))

    def for_batch(self, principals: int) -> int:
        return max(1, min(self.workers, principals * self.account_slots))


@dataclass
class PrincipalWork:
    """What a run would do for one principal: ``units`` holds (items, bytes) to copy per
    container, over all its workloads."""

    principal: str
    target: str
    units: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Schedule:
    """Seconds per principal (alone) and for the batch, as the model schedules them."""

    principals: list[float]
    total: float


def schedule(steps: Sequence[tuple[float, Sequence[float]]], lanes: Lanes,
             shared: Sequence[float] = ()) -> Schedule:
    """``steps`` holds, per principal, its own step's seconds and its units' seconds;
    ``shared``, when given, the least time its items and bytes take whatever its lanes
    (``Rates.shared_seconds``)."""
    per_principal = lanes.per_principal(len(steps))
    floors = list(shared) or [0.0] * len(steps)
    alone = [own + max(sum(units) / per_principal, max(units, default=0.0), floor)
             for (own, units), floor in zip(steps, floors, strict=True)]
    work = sum(own + sum(units) for own, units in steps)
    total = max(work / lanes.for_batch(len(steps)), sum(floors), max(alone, default=0.0))
    return Schedule(alone, total)


@dataclass
class Probe:
    """What ``plan`` timed of the round trips it makes anyway, in seconds: each principal's
    sign-in on both sides and folder listing, each folder's listing at the source, each
    count at the target. A principal's step and a unit's listing are their medians; the
    target's round trip is its quickest count."""

    principals: dict[str, float] = field(default_factory=dict)
    """Seconds per principal, over its workloads."""
    folders: list[float] = field(default_factory=list)
    target_round_trips: list[float] = field(default_factory=list)

    def wants_round_trips(self) -> bool:
        """Whether the target's round trip still needs timing: a few counts give its
        quickest; past that, a count the folder list already gave is taken from it (no
        connection of its own for each principal, as a run opens none)."""
        return len(self.target_round_trips) < PROBE_ROUND_TRIPS

    def principal(self, name: str, seconds: float) -> None:
        self.principals[name] = self.principals.get(name, 0.0) + seconds

    @contextmanager
    def timing(self, into: list[float]) -> Iterator[None]:
        """Time the block into one of the lists above (not when it raises)."""
        started = time.monotonic()
        yield
        into.append(time.monotonic() - started)

    def rates(self) -> Rates | None:
        if not self.principals:
            return None
        listing = statistics.median(self.folders) if self.folders else 0.0
        # A count takes one round trip or a few (a folder that exists may need more than
        # one that does not): the quickest is the closest to one round trip.
        round_trip = min(self.target_round_trips, default=0.0)
        return Rates(per_principal=statistics.median(self.principals.values()) * PLAN_STEP_SHARE,
                     per_unit=listing + UNIT_LOCAL_SECONDS,
                     per_copying_unit=(COPYING_UNIT_ROUND_TRIPS * round_trip
                                       + COPYING_UNIT_LOCAL_SECONDS),
                     per_item=DEFAULT_RATES.per_item,
                     bytes_per_second=DEFAULT_RATES.bytes_per_second,
                     shared_lanes=DEFAULT_RATES.shared_lanes)

    def basis(self) -> dict[str, Any]:
        def median(values: list[float]) -> float | None:
            return round(statistics.median(values), 4) if values else None

        return {"kind": "probe", "principals": len(self.principals),
                "folders": len(self.folders),
                "target_round_trips": len(self.target_round_trips),
                "principal_seconds": median(list(self.principals.values())),
                "plan_step_share": PLAN_STEP_SHARE,
                "folder_listing_seconds": median(self.folders),
                "target_round_trip_seconds": (round(min(self.target_round_trips), 4)
                                              if self.target_round_trips else None),
                "unit_local_seconds": UNIT_LOCAL_SECONDS,
                "copying_unit_round_trips": COPYING_UNIT_ROUND_TRIPS,
                "copying_unit_local_seconds": COPYING_UNIT_LOCAL_SECONDS,
                "defaults": ["per_item_seconds", "bytes_per_second", "shared_lanes"]}


@dataclass(frozen=True)
class History:
    """Rates fitted from past runs, and how far above the model those runs ended."""

    rates: Rates
    efficiency: float
    runs: list[TimedRun]
    defaults: list[str]
    """The rates the runs could not show (nothing copied), taken from ``DEFAULT_RATES``."""

    def basis(self) -> dict[str, Any]:
        units = [s for run in self.runs for s in run.steps if s.container]
        return {"kind": "history", "runs": [run.run_id for run in self.runs],
                "run_seconds": [round(run.seconds, 2) for run in self.runs],
                "units": len(units), "items": sum(s.items for s in units),
                "bytes": sum(s.bytes for s in units),
                "efficiency": round(self.efficiency, 3), "defaults": self.defaults}


def fit_history(runs: list[TimedRun], lanes: Lanes) -> History | None:
    """The rates that best explain the runs' timings, or ``None`` when they timed no unit."""
    units = [s for run in runs for s in run.steps if s.container]
    if not units:
        return None
    own = [seconds for run in runs for seconds, _ in _measured_steps(run)]
    per_unit, per_copying_unit, per_item, per_byte = _fit_units(
        [(1.0, float(s.items > 0), float(s.items), float(s.bytes)) for s in units],
        [s.seconds for s in units])
    defaults = []
    if not any(s.items for s in units):
        per_copying_unit, per_item = DEFAULT_RATES.per_copying_unit, DEFAULT_RATES.per_item
        per_byte = 1 / DEFAULT_RATES.bytes_per_second
        defaults = ["per_copying_unit_seconds", "per_item_seconds", "bytes_per_second"]
    rates = Rates(per_principal=statistics.fmean(own) if own else 0.0, per_unit=per_unit,
                  per_copying_unit=per_copying_unit, per_item=per_item,
                  bytes_per_second=1 / per_byte if per_byte > 0 else None,
                  shared_lanes=DEFAULT_RATES.shared_lanes if defaults else None)
    modelled = sum(schedule(_measured_steps(run), lanes).total for run in runs)
    wall = sum(run.seconds for run in runs)
    return History(rates, wall / modelled if modelled > 0 else 1.0, runs, defaults)


def _measured_steps(run: TimedRun) -> list[tuple[float, list[float]]]:
    """A run's own timings per principal, as ``schedule`` takes them."""
    steps: dict[str, tuple[list[float], list[float]]] = {}
    for step in run.steps:
        own, units = steps.setdefault(step.principal, ([], []))
        (units if step.container else own).append(step.seconds)
    return [(sum(own), units) for own, units in steps.values()]


def _fit_units(rows: list[tuple[float, ...]], seconds: list[float]) -> list[float]:
    """Least squares of ``seconds`` on the rows' terms (1, copies or not, items, bytes),
    no coefficient negative: the best of the fits on each subset of the terms whose
    coefficients all come out non-negative (four terms: fifteen subsets)."""
    width = len(rows[0])
    scale = [max((abs(r[k]) for r in rows), default=0.0) or 1.0 for k in range(width)]
    scaled = [[r[k] / scale[k] for k in range(width)] for r in rows]
    best: tuple[float, list[float]] | None = None
    for size in range(width, 0, -1):
        for terms in combinations(range(width), size):
            solved = _least_squares([[row[k] for k in terms] for row in scaled], seconds)
            if solved is None or any(c < 0 for c in solved):
                continue
            coefficients = [0.0] * width
            for k, c in zip(terms, solved):
                coefficients[k] = c / scale[k]
            residual = sum((y - sum(c * x for c, x in zip(coefficients, row))) ** 2
                           for row, y in zip(rows, seconds))
            if best is None or residual < best[0] - 1e-12:
                best = (residual, coefficients)
    return best[1] if best is not None else [0.0] * width


def _least_squares(rows: list[list[float]], values: list[float]) -> list[float] | None:
    """Solve the normal equations by Gaussian elimination; ``None`` when singular."""
    n = len(rows[0])
    matrix = [[sum(r[i] * r[j] for r in rows) for j in range(n)]
              + [sum(r[i] * y for r, y in zip(rows, values))] for i in range(n)]
    for column in range(n):
        pivot = max(range(column, n), key=lambda r: abs(matrix[r][column]))
        if abs(matrix[pivot][column]) < 1e-9:
            return None
        matrix[column], matrix[pivot] = matrix[pivot], matrix[column]
        for row in range(n):
            if row != column:
                factor = matrix[row][column] / matrix[column][column]
                matrix[row] = [a - factor * b for a, b in zip(matrix[row], matrix[column])]
    return [matrix[i][n] / matrix[i][i] for i in range(n)]


SPREAD = {"history": (0.66, 1.54), "probe": (0.63, 1.89), "defaults": (0.5, 2.0)}
"""How long a run may take against its estimate, by basis: the estimate times these two
factors is the range a plan states. From ``bench.shaped``'s plans against their runs
(``docs/benchmarks.md``), over two days and two machine speeds: from history the
estimate came to 0.65 to 1.52 of its run (delta passes of a second included), from the
probe to 0.53 to 1.59, the probe's per-item cost and throughput being defaults set on one
of those days. Nothing measured the defaults alone: their range is taken wider than the
probe's, not measured."""


@dataclass(frozen=True)
class Estimate:
    """A plan's estimated duration: per principal and in all, with its basis."""

    works: list[PrincipalWork]
    schedule: Schedule
    rates: Rates
    lanes: Lanes
    basis: dict[str, Any]
    start: float = 0.0
    """The command's own start (the interpreter's imports, the batch read, the ledger
    opened and checked, the source's sign-in checked), as long as the plan's own was."""

    @property
    def seconds(self) -> float:
        return self.start + self.schedule.total + RUN_END_SECONDS

    @property
    def range(self) -> tuple[float, float]:
        """The least and the most the run may take, in seconds (``SPREAD``)."""
        low, high = SPREAD[self.basis["kind"]]
        return self.seconds * low, self.seconds * high

    def basis_text(self) -> Text:
        """Where the estimate comes from, as a person reads it."""
        if self.basis["kind"] == "history":
            return Text.of("estimate_from_history", count=len(self.basis["runs"]))
        if self.basis["kind"] == "probe":
            return Text.of("estimate_from_probe", count=self.basis["principals"])
        return Text.of("estimate_from_defaults")

    def document(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 1),
                "range_seconds": [round(bound, 1) for bound in self.range],
                "start_seconds": round(self.start, 2),
                "end_seconds": RUN_END_SECONDS,
                "basis": self.basis,
                "rates": self.rates.document(),
                "lanes": {"workers": self.lanes.workers,
                          "account_slots": self.lanes.account_slots},
                "principals": [
                    {"principal": w.principal, "target": w.target, "units": len(w.units),
                     "items": sum(i for i, _ in w.units), "bytes": sum(b for _, b in w.units),
                     "seconds": round(s, 1)}
                    for w, s in zip(self.works, self.schedule.principals)]}


def estimate(works: list[PrincipalWork], rates: Rates, lanes: Lanes, basis: dict[str, Any],
             efficiency: float = 1.0, start: float = 0.0) -> Estimate:
    """The estimate of a plan's ``works`` at ``rates``, after a command ``start`` of that
    many seconds; ``efficiency`` scales the batch's total (how far above the model past
    runs ended), not a principal alone."""
    planned = schedule([(rates.per_principal, [rates.unit_seconds(i, b) for i, b in w.units])
                        for w in works], lanes, [rates.shared_seconds(w.units) for w in works])
    return Estimate(works, Schedule(planned.principals, planned.total * efficiency), rates,
                    lanes, basis, start)


def estimate_plan(ledger: Ledger, probe: Probe, works: list[PrincipalWork],
                  lanes: Lanes, start: float = 0.0) -> Estimate:
    """The plan's estimate from the ledger's last runs, else from the probe, else from the
    defaults; ``start``: the plan's own start, which the run's is taken to equal (the
    ledger times a run from its first write, after it)."""
    history = fit_history(ledger.timed_runs(HISTORY_RUNS), lanes)
    if history is not None:
        return estimate(works, history.rates, lanes, history.basis(), history.efficiency,
                        start)
    measured = probe.rates()
    if measured is not None:
        return estimate(works, measured, lanes, probe.basis(), start=start)
    return estimate(works, DEFAULT_RATES, lanes, {"kind": "defaults"}, start=start)
