"""``bascule demo``: a sample Maildir export with French folder names, migrated into a local
Maildir target with the embedded SQLite ledger, then verified. Nothing to install."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

import click

from connectors import registry
from connectors.base import Message, fingerprint_bytes
from connectors.registry import Account
from migrate.batch import load_batch
from migrate.endpoints import Connectors
from migrate.engine import Engine
from reports.i18n import Text, language
from reports.summary import summary_text

PEOPLE = [
    ("alice.martin", "Alice Martin"),
    ("bruno.lefevre", "Bruno Lefèvre"),
    ("chloe.nguyen", "Chloé Nguyen"),
]

FOLDERS: list[tuple[tuple[str, ...], int]] = [
    (("INBOX",), 40),
    (("Éléments envoyés",), 15),
    (("Brouillons",), 3),
    (("Éléments supprimés",), 5),
    (("Courrier indésirable",), 2),
    (("Projets",), 4),
    (("Projets", "Été 2024"), 6),
    (("Urbanisme & Voirie",), 5),
    (("Calendrier",), 4),
    (("Problèmes de synchronisation",), 2),
]

SUBJECTS = [
    "Conseil municipal du {d}", "Réunion de chantier, rue de l'Église", "Facture n° {n}",
    "Délibération à signer", "Plan local d'urbanisme : remarques", "Congés d'été",
    "Compte rendu de la commission", "Marché public : pièces complémentaires",
]

BATCH = """\
# bascule demo: a Maildir export (source/) migrated into a Maildir target (target/)
name = "demo"

[source]
type = "maildir"
path = "source"

[target]
type = "maildir"
path = "target"

[mapping]
users = "users.csv"

[mail]
exclude = ["Problèmes de synchronisation*"]

[run]
work_dir = "work"
workers = 8
"""


def _messages(login: str, name: str, folder: tuple[str, ...], count: int,
              rng: random.Random) -> Iterator[Message]:
    paris = timezone(timedelta(hours=2))
    for n in range(count):
        sent = datetime(2024, 3, 1, 8, 30, tzinfo=paris) + timedelta(hours=rng.randint(0, 5000))
        mail = EmailMessage()
        mail["From"] = f"{name} <{login}@ville.example>"
        mail["To"] = "mairie@ville.example"
        mail["Subject"] = rng.choice(SUBJECTS).format(d=sent.strftime("%d/%m"), n=rng.randint(1, 999))
        mail["Date"] = format_datetime(sent)
        if n % 7:
            mail["Message-ID"] = f"<{login}.{len(folder)}.{n}.{rng.getrandbits(32):x}@ville.example>"
        mail.set_content(f"Bonjour,\n\nVoici le document n° {n} ({'/'.join(folder)}).\n"
                         f"Cordialement,\n{name}\n")
        if n % 5 == 0:
            mail.add_attachment(rng.randbytes(rng.randint(2_000, 60_000)), maintype="application",
                                subtype="pdf", filename=f"pièce-{n}.pdf")
        raw = mail.as_bytes().replace(b"\n", b"\r\n")
        flags = frozenset({"\\Seen"} if rng.random() < 0.7 else set()) | (
            {"\\Flagged"} if rng.random() < 0.1 else set())
        yield Message(
            source_id=f"{n}", fingerprint=fingerprint_bytes(raw), size=len(raw), flags=flags,
            internal_date=sent, open=lambda raw=raw: io.BytesIO(raw),
        )


def build_sample(folder: Path) -> None:
    """The export a DSI would receive: one Maildir per user, French folder names, written
    through the source's own connector as a sink."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    (folder / "batch.toml").write_text(BATCH, encoding="utf-8")
    batch = load_batch(folder / "batch.toml")
    store = registry.connector(batch.source.type)
    assert store.open_sink is not None
    connectors = Connectors(batch)
    rng = random.Random(2026)
    users = ["source,target,source_secret,target_secret"]
    for login, name in PEOPLE:
        sink = store.open_sink(connectors, Account(batch.source, login), "mail")
        for path, count in FOLDERS:
            native = sink.ensure_container(path)
            for result in sink.put_many(native, _messages(login, name, path, count, rng)):
                if result.error:
                    raise result.error
        sink.close()
        users.append(f"{login},{login.split('.')[0]},,")
    connectors.close()
    (folder / "users.csv").write_text("\n".join(users) + "\n", encoding="utf-8")


def run_demo(folder: Path) -> int:
    lang = language()
    logging.getLogger("bascule").setLevel(logging.WARNING)
    folder = folder.resolve()
    if not (folder / "batch.toml").exists():
        build_sample(folder)
    batch = load_batch(folder / "batch.toml")
    code = 0
    for command in ("plan", "run", "verify"):
        engine = Engine(batch, command=command)
        try:
            outcome = getattr(engine, command)()
        finally:
            engine.close()
        click.echo(f"bascule {command}: {summary_text(command, outcome.summary).render(lang)}")
        click.echo("  " + Text.of("cli_reports", json=str(outcome.json_path),
                                  csv=str(outcome.csv_path)).render(lang))
        code = max(code, outcome.exit_code)
    click.echo(Text.of("cli_demo_done", target=str(folder / "target")).render(lang))
    return code
