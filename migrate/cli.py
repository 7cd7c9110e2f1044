"""The ``bascule`` command: parse, call the engine, print.

Exit codes: 0 done; 1 some items failed (each is in the report; the next run tries again);
2 bad input or an unusable place to work (batch, users table, secret, work folder, ledger,
another command on the same batch); 75 stopped before the end for a reason outside the
batch (a server down, the disk full): nothing is lost, run again; 130 and 143 stopped by
SIGINT (Ctrl-C) and SIGTERM: nothing is lost, run again to go on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from connectors import registry
from connectors.base import BasculeError
from migrate import LOADED
from migrate.batch import EXAMPLE_USERS, BatchError, example_batch, json_schema, load_batch
from migrate.engine import (
    EXIT_INPUT,
    EXIT_STOPPED,
    GRACE,
    Engine,
    InputError,
    Outcome,
    ProgressFactory,
    ledger_exit,
    ledger_text,
)
from migrate.ledger import LedgerError
from reports.i18n import LANGUAGES, Text, choose_language, language
from reports.summary import summary_text


def _say(text: Text, err: bool = False) -> None:
    click.echo(text.render(language()), err=err)


def _fail_input(problems: list[Text], header: Text | None = None, code: int = EXIT_INPUT
                ) -> None:
    if header:
        _say(header, err=True)
    for problem in problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    sys.exit(code)


_process_start: list[float | None] = [None]
"""When the process that runs this command started bascule (``entry``); None when the
command is called from Python (tests): it then starts when it is called."""


def _command_started() -> float:
    start, _process_start[0] = _process_start[0], None
    return start if start is not None else time.monotonic()


def _engine(batch_path: Path, users: str | None = None, command: str = "status") -> Engine:
    started = _command_started()
    try:
        batch = load_batch(batch_path)
    except BatchError as error:
        _fail_input(error.problems, Text.of("cli_bad_batch", path=str(batch_path)))
    names = [u.strip() for u in users.split(",") if u.strip()] if users else None
    try:
        return Engine(batch, names, command, started=started)
    except InputError as error:
        _fail_input(error.problems)
    except LedgerError as error:
        _fail_input([ledger_text(error)], code=ledger_exit(error))
    except BasculeError as error:
        _fail_input([_error_text(error)])
    raise AssertionError("unreachable")


def _error_text(error: BasculeError) -> Text:
    english, french = getattr(error, "message_en", None), getattr(error, "message_fr", None)
    if isinstance(english, str) and isinstance(french, str):
        return Text.both(error.code, english, french)
    return Text.of(error.code, **{"detail": error.detail, **error.params})


@contextmanager
def _command(engine: Engine) -> Iterator[None]:
    """Run one engine command: the first SIGINT or SIGTERM asks it to stop (what is in
    flight is answered, nothing new starts), a second one ends the process at once (the
    ledger holds what was in flight, and the next run looks for it). The environment
    failing (disk full, ledger damaged) is a message and an exit code, not a traceback."""
    previous: dict[int, Callable | int | None] = {}

    def stop(signum: int, _frame: object) -> None:
        if engine.stop.is_set() and engine.signal is not None:
            os._exit(128 + signum)
        engine.request_stop(signum)
        _say(Text.of("cli_stopping", signal=signal.Signals(signum).name, grace=f"{GRACE:.0f}"),
             err=True)

    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, stop)
    try:
        yield
    except InputError as error:
        _fail_input(error.problems)
    except LedgerError as error:
        _fail_input([ledger_text(error)], code=ledger_exit(error))
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        _fail_input([Text.of("ledger_disk_full", location=error.filename or "?")],
                    code=EXIT_STOPPED)
    finally:
        engine.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _finish(outcome: Outcome, summary: Text) -> None:
    for notice in outcome.warnings:
        click.echo(f"  ! {notice.render(language())}", err=True)
    if outcome.stopped is not None:
        _say(outcome.stopped, err=True)
    _say(summary)
    _say(Text.of("cli_reports", json=str(outcome.json_path), csv=str(outcome.csv_path)))
    if outcome.stopped is not None and _left_behind():
        # Threads still waiting on a silent server would hold the interpreter's exit: the
        # ledger already has what they had in flight.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome.exit_code)
    sys.exit(outcome.exit_code)


def _left_behind(patience: float = 2.0) -> bool:
    """Whether worker threads are still busy after ``patience`` seconds (idle ones end at
    once once their pool is shut down)."""
    deadline = time.monotonic() + patience
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.daemon:
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            return True
    return False


BATCH = click.argument("batch", type=click.Path(path_type=Path, dir_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lang", type=click.Choice(LANGUAGES), default=None,
              help="Language of messages and reports (default: from the locale).")
@click.option("-v", "--verbose", is_flag=True, help="Log each unit.")
def main(lang: str | None, verbose: bool) -> None:
    """bascule: move mailboxes from Microsoft 365 / Exchange to open-protocol servers.

    bascule : migrer les boîtes aux lettres de Microsoft 365 / Exchange vers des serveurs
    aux protocoles ouverts.
    """

    choose_language(lang)
    logging.basicConfig(
        level=logging.INFO if verbose or not sys.stderr.isatty() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr,
    )
    # imapclient logs a warning, raw bytes included, whenever a server's reply text is not
    # ASCII (Dovecot names a missing folder in UTF-8 in its NO): what bascule makes of that
    # reply is said in its own message, in the user's language.
    logging.getLogger("imapclient.util").setLevel(logging.ERROR)


def entry() -> None:
    """The ``bascule`` program: ``main``, its command's start counted from when bascule
    began loading (its imports are most of a command's start, which a plan estimates).

    Once the command has ended (its ledger closed, its reports written, its connections
    said goodbye to), the process ends without the interpreter taking its hundreds of
    modules apart, a tenth of a second on a small machine: what is printed and logged is
    flushed first. A command that raised ends as Python ends it (the traceback)."""
    _process_start[0] = LOADED
    try:
        main()
    except SystemExit as ended:
        code = ended.code
    else:
        code = 0
    if code is not None and not isinstance(code, int):
        click.echo(code, err=True)
        code = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code or 0)


@main.command()
@click.argument("batch", type=click.Path(path_type=Path, dir_okay=False), default="batch.toml")
def init(batch: Path) -> None:
    """Write a commented example batch file and users table. / Écrire un exemple de lot."""
    users = batch.with_name("users.csv")
    folder = batch.parent
    if not folder.is_dir():
        _say(Text.of("cli_init_no_folder", path=str(batch), folder=str(folder)), err=True)
        sys.exit(EXIT_INPUT)
    for path in (batch, users):
        if path.exists():
            _say(Text.of("cli_init_exists", path=str(path)), err=True)
            sys.exit(EXIT_INPUT)
    for path, text in ((batch, example_batch()), (users, EXAMPLE_USERS)):
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as error:
            _say(Text.of("cli_cannot_write", path=str(path),
                         detail=error.strerror or str(error)), err=True)
            sys.exit(EXIT_INPUT)
    _say(Text.of("cli_init_written", batch=str(batch), users=str(users)))


@main.command()
def schema() -> None:
    """Print the JSON schema of batch files. / Afficher le schéma JSON des lots."""
    click.echo(json_schema())


CAPABILITIES = (
    ("capability_keeps_bytes", "keeps_bytes", "sink"),
    ("capability_keeps_mtime", "keeps_mtime", "sink"),
    ("capability_keeps_date_offset", "keeps_internal_date_offset", "mail sink"),
    ("capability_deletes", "deletes", "sink"),
    ("capability_versions", "versions", "sink"),
    ("capability_delta", "delta", "source"),
    ("capability_flag_changes", "flag_changes", "source"),
)
"""The capabilities ``bascule connectors`` names: catalogue code, field, and the side
(source or sink) it speaks of."""


WORKLOAD_NAMES = {"mail": "workload_mail", "calendar": "workload_calendar",
                  "contacts": "workload_contacts", "tasks": "workload_tasks",
                  "files": "workload_files"}
"""The catalogue code of each workload's name: in French the word, then the keyword a
batch's ``workloads`` takes."""


def _workloads(names: Iterable[str]) -> str:
    return ", ".join(Text.of(WORKLOAD_NAMES[name]).render(language()) if name in WORKLOAD_NAMES
                     else name for name in sorted(names))


@main.command(name="connectors")
def list_connectors() -> None:
    """The connectors a batch may name, and what each reads and writes. / Les connecteurs."""
    french = language() == "fr"
    for connector in registry.connectors():
        summary = connector.summary[1 if french else 0]
        click.echo(f"{connector.type}: {summary}")
        if connector.reads:
            _say(Text.of("cli_connector_reads", workloads=_workloads(connector.reads)))
        if connector.writes:
            _say(Text.of("cli_connector_writes", workloads=_workloads(connector.writes)))
        sides = {"source"} if connector.reads else set()
        sides |= {"sink"} if connector.writes else set()
        sides |= {"mail sink"} if "mail" in connector.writes else set()
        said = [Text.of(code).render(language()) for code, held, side in CAPABILITIES
                if side in sides and getattr(connector.capabilities, held)]
        if said:
            _say(Text.of("cli_connector_can", capabilities=", ".join(said)))
        rules = connector.capabilities.name_rules[1 if french else 0]
        if rules:
            _say(Text.of("cli_connector_names", rules=rules))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def plan(batch: Path, users: str | None) -> None:
    """Dry run: what a run would create, copy, rename and skip. / Simulation."""
    engine = _engine(batch, users, "plan")
    with _command(engine):
        outcome = engine.plan()
    for problem in outcome.problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    _finish(outcome, summary_text("plan", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def run(batch: Path, users: str | None) -> None:
    """Copy what is not on the target yet; resumable. / Copier ce qui manque ; reprenable."""
    engine = _engine(batch, users, "run")
    with _command(engine):
        outcome = engine.run(TerminalProgress() if sys.stderr.isatty() else ProgressFactory())
    _finish(outcome, summary_text("run", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def audit(batch: Path, users: str | None) -> None:
    """Inventory of the source, from listings only. / Inventaire de la source."""
    engine = _engine(batch, users, "audit")
    with _command(engine):
        outcome = engine.audit()
    for problem in outcome.problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    _finish(outcome, summary_text("audit", outcome.summary))


@main.command()
@BATCH
def status(batch: Path) -> None:
    """What the ledger holds: units, counts, failures. / État du registre."""
    engine = _engine(batch)
    with _command(engine):
        outcome = engine.status()
    _finish(outcome, summary_text("status", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def verify(batch: Path, users: str | None) -> None:
    """Compare both sides item by item. / Comparer les deux côtés, message par message."""
    engine = _engine(batch, users, "verify")
    with _command(engine):
        outcome = engine.verify()
    _finish(outcome, summary_text("verify", outcome.summary))


@main.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False),
              default="bascule-demo", show_default=True)
def demo(folder: Path) -> None:
    """Build a sample export, plan, migrate, verify. / Démonstration complète, en local."""
    from migrate.demo import run_demo

    sys.exit(run_demo(folder))


class TerminalProgress(ProgressFactory):
    """One overall bar, and a bar per running unit below it."""

    def __init__(self) -> None:
        # Imported here: a run without a terminal (a scheduled batch) never draws a bar.
        from tqdm import tqdm

        self._bar = tqdm
        # total=None until units say how much they will copy (tqdm draws nothing for 0).
        self.overall = tqdm(total=None, unit="msg", desc="total", position=0, dynamic_ncols=True)
        self._lock = threading.Lock()
        self._free = list(range(1, 9))

    @contextmanager
    def unit(self, label: str) -> Iterator[_UnitBar]:
        with self._lock:
            position = self._free.pop(0) if self._free else None
        bar = self._bar(total=None, unit="msg", desc=label[:40], position=position,
                        leave=False, dynamic_ncols=True)
        try:
            yield _UnitBar(self, bar)
        finally:
            bar.close()
            if position is not None:
                with self._lock:
                    self._free.append(position)
                    self._free.sort()

    def close(self) -> None:
        self.overall.close()


class _UnitBar:
    def __init__(self, owner: TerminalProgress, bar: Any) -> None:
        self.owner = owner
        self.bar = bar

    def planned(self, items: int, size: int) -> None:
        self.bar.total = items
        self.bar.refresh()
        with self.owner._lock:
            self.owner.overall.total = (self.owner.overall.total or 0) + items
            self.owner.overall.refresh()

    def advanced(self, items: int, size: int) -> None:
        self.bar.update(items)
        with self.owner._lock:
            self.owner.overall.update(items)
