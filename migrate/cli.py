"""The ``bascule`` command: parse, call the engine, print. Exit 0 done, 1 items failed, 2 bad input."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from migrate.batch import EXAMPLE, EXAMPLE_USERS, BatchError, json_schema, load_batch
from migrate.engine import Engine, InputError, Outcome, ProgressFactory
from migrate.i18n import Text, language


def _say(text: Text, err: bool = False) -> None:
    click.echo(text.render(language()), err=err)


def _fail_input(problems: list[Text], header: Text | None = None) -> None:
    if header:
        _say(header, err=True)
    for problem in problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    sys.exit(2)


def _engine(batch_path: Path, users: str | None = None) -> Engine:
    try:
        batch = load_batch(batch_path)
    except BatchError as error:
        _fail_input(error.problems, Text.of("cli_bad_batch", path=str(batch_path)))
    names = [u.strip() for u in users.split(",") if u.strip()] if users else None
    try:
        return Engine(batch, names)
    except InputError as error:
        _fail_input(error.problems)
    raise AssertionError("unreachable")


def summary_text(command: str, s: dict) -> Text:
    """The one-line summary of a command's outcome."""
    if command == "plan":
        return Text.of("cli_plan_summary", units=s["units"], messages=s["to_copy"],
                       bytes=_size(s["to_copy_bytes"]), errors=s["errors"],
                       warnings=s["warnings"])
    if command == "audit":
        return Text.of("cli_audit_summary", users=s["users"], containers=s["containers"],
                       items=s["items"], bytes=_size(s["bytes"]), errors=s["errors"])
    if command == "verify":
        return Text.of("cli_verify_summary", checked=s["checked"], mismatches=s["mismatches"])
    if command == "status":
        return Text.of("cli_run_summary", copied=s["copied"], flags=0,
                       failed=s["failed_items"], skipped=0)
    return Text.of("cli_run_summary", copied=s["copied"], flags=s["flag_updates"],
                   failed=s["failed"] + s["units_failed"], skipped=s["skipped"])


def _finish(outcome: Outcome, summary: Text) -> None:
    _say(summary)
    _say(Text.of("cli_reports", json=str(outcome.json_path), csv=str(outcome.csv_path)))
    sys.exit(outcome.exit_code)


BATCH = click.argument("batch", type=click.Path(path_type=Path, dir_okay=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lang", type=click.Choice(["en", "fr"]), default=None,
              help="Language of messages and reports (default: from the locale).")
@click.option("-v", "--verbose", is_flag=True, help="Log each unit.")
def main(lang: str | None, verbose: bool) -> None:
    """bascule: move mailboxes from Microsoft 365 / Exchange to open-protocol servers.

    bascule : migrer les boîtes aux lettres de Microsoft 365 / Exchange vers des serveurs
    aux protocoles ouverts.
    """
    import os

    if lang:
        os.environ["BASCULE_LANG"] = lang
    logging.basicConfig(
        level=logging.INFO if verbose or not sys.stderr.isatty() else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr,
    )


@main.command()
@click.argument("batch", type=click.Path(path_type=Path, dir_okay=False), default="batch.toml")
def init(batch: Path) -> None:
    """Write a commented example batch file and users table. / Écrire un exemple de lot."""
    users = batch.with_name("users.csv")
    for path in (batch, users):
        if path.exists():
            _say(Text.of("cli_init_exists", path=str(path)), err=True)
            sys.exit(2)
    batch.write_text(EXAMPLE, encoding="utf-8")
    users.write_text(EXAMPLE_USERS, encoding="utf-8")
    _say(Text.of("cli_init_written", batch=str(batch), users=str(users)))


@main.command()
def schema() -> None:
    """Print the JSON schema of batch files. / Afficher le schéma JSON des lots."""
    click.echo(json_schema())


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def plan(batch: Path, users: str | None) -> None:
    """Dry run: what a run would create, copy, rename and skip. / Simulation."""
    engine = _engine(batch, users)
    try:
        outcome = engine.plan()
    finally:
        engine.close()
    for problem in outcome.problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    for warning in outcome.warnings:
        click.echo(f"  ! {warning.render(language())}", err=True)
    _finish(outcome, summary_text("plan", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def run(batch: Path, users: str | None) -> None:
    """Copy what is not on the target yet; resumable. / Copier ce qui manque ; reprenable."""
    engine = _engine(batch, users)
    try:
        outcome = engine.run(TerminalProgress() if sys.stderr.isatty() else ProgressFactory())
    except InputError as error:
        _fail_input(error.problems)
    finally:
        engine.close()
    _finish(outcome, summary_text("run", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def audit(batch: Path, users: str | None) -> None:
    """Inventory of the source, from listings only. / Inventaire de la source."""
    engine = _engine(batch, users)
    try:
        outcome = engine.audit()
    finally:
        engine.close()
    for problem in outcome.problems:
        click.echo(f"  - {problem.render(language())}", err=True)
    _finish(outcome, summary_text("audit", outcome.summary))


@main.command()
@BATCH
def status(batch: Path) -> None:
    """What the ledger holds: units, counts, failures. / État du registre."""
    engine = _engine(batch)
    try:
        outcome = engine.status()
    finally:
        engine.close()
    _finish(outcome, summary_text("status", outcome.summary))


@main.command()
@BATCH
@click.option("--users", help="Only these source users, comma-separated.")
def verify(batch: Path, users: str | None) -> None:
    """Compare both sides item by item. / Comparer les deux côtés, message par message."""
    engine = _engine(batch, users)
    try:
        outcome = engine.verify()
    except InputError as error:
        _fail_input(error.problems)
    finally:
        engine.close()
    _finish(outcome, summary_text("verify", outcome.summary))


@main.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path, file_okay=False),
              default="bascule-demo", show_default=True)
def demo(folder: Path) -> None:
    """Build a sample export, plan, migrate, verify. / Démonstration complète, en local."""
    from migrate.demo import run_demo

    sys.exit(run_demo(folder))


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"


class TerminalProgress(ProgressFactory):
    """One overall bar, and a bar per running unit below it."""

    def __init__(self) -> None:
        # total=None until units say how much they will copy (tqdm draws nothing for 0).
        self.overall = tqdm(total=None, unit="msg", desc="total", position=0, dynamic_ncols=True)
        self._lock = threading.Lock()
        self._free = list(range(1, 9))

    @contextmanager
    def unit(self, label: str) -> Iterator[_UnitBar]:
        with self._lock:
            position = self._free.pop(0) if self._free else None
        bar = tqdm(total=None, unit="msg", desc=label[:40], position=position, leave=False,
                   dynamic_ncols=True)
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
    def __init__(self, owner: TerminalProgress, bar: tqdm) -> None:
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
