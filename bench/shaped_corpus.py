"""Mailboxes shaped like real ones, for ``bench.shaped``: many small folders, a deep branch,
accented names, three large folders, lognormal message sizes; and many small accounts.

Everything is decided by a seed. ``shaped_folders`` gives the folder tree with the number of
messages each folder holds (cheap: no message is built); ``folder_messages`` then builds one
folder's messages lazily. ``user_folders`` is the same for one of the many small accounts.
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CRLF = b"\r\n"
# Share of the whole mailbox held by each of the three large folders.
LARGE = {("INBOX",): 0.30, ("Éléments envoyés",): 0.15, ("Archives", "2024"): 0.12}
# Folders with fewer than 10 messages each (some empty), as most of a real tree is.
SMALL = [
    ("Brouillons",), ("Courrier indésirable",), ("Archives",), ("Archives", "2019"),
    ("Réunions",), ("Réunions", "Hiver 2024"), ("Projets",), ("Projets", "Voirie"),
    ("Projets", "Voirie", "Chantiers"), ("Projets", "Voirie", "Chantiers", "Rue de la Gare"),
    ("Projets", "Voirie", "Chantiers", "Rue de la Gare", "Devis"),
    ("Dossiers",), ("Dossiers", "État civil"), ("Dossiers", "Élections"),
    ("Associations",), ("Associations", "Club de football"), ("Partenaires",),
    ("Partenaires", "Région"), ("Personnel",), ("Personnel", "Formation"), ("Élus",),
    ("Élus", "Adjoints"), ("À classer",), ("Presse",), ("Suivi & relances",),
]
# Folders of a few dozen to a few hundred messages: what the large ones leave.
MEDIUM = [
    ("Éléments supprimés",), ("Archives", "2023"), ("Réunions", "Été 2025"),
    ("Réunions", "Conseil municipal"),
    ("Projets", "Voirie", "Chantiers", "Rue de la Gare", "Devis", "Révisions"),
    ("Dossiers", "Urbanisme"), ("Dossiers", "Budget"), ("Dossiers", "Marchés publics"),
    ("Dossiers", "École Jules-Ferry"), ("Dossiers", "Ressources humaines"),
    ("Associations", "Comité des fêtes"), ("Partenaires", "Préfecture"),
    ("Partenaires", "Département"), ("Personnel", "Congés"), ("Factures",),
    ("Factures", "2025"), ("Notes de service",), ("Newsletters",), ("À traiter",),
    ("Communication", "Bulletin municipal"),
]
# One small account of the many-users case: where its messages sit.
USER_SHARES = ((("INBOX",), 0.6), (("Éléments envoyés",), 0.25), (("Archives",), 0.15))
# Lognormal sizes: median 8 KB, most between 2 and 40 KB, about 0.4% of a MB or more.
SIZE_MEDIAN, SIZE_SIGMA = 8_000, 1.8
SIZE_MIN, SIZE_MAX = 1_200, 24_000_000
BULK_LARGEST = 12_000
PEOPLE = ["amelie.durand", "bruno.lefevre", "chloe.martin", "urbanisme", "jf.oeuvray",
          "dgs", "secretariat.maire", "services.techniques"]
WORDS = ["le", "la", "les", "des", "une", "commune", "conseil", "délibération", "budget",
         "voirie", "école", "marché", "public", "réunion", "dossier", "projet", "agent",
         "service", "mairie", "élu", "arrêté", "travaux", "été", "préfecture"]


@dataclass(frozen=True)
class ShapedFolder:
    """A folder of the generated tree and how many messages it holds."""

    path: tuple[str, ...]
    count: int
    seed: int
    """Seeds its messages, so that any folder can be built alone."""
    largest: int = SIZE_MAX
    """No message of it is larger than this (bytes)."""


@dataclass(frozen=True)
class ShapedMessage:
    raw: bytes
    flags: tuple[str, ...]
    internal_date: datetime


def shaped_folders(messages: int = 1200, seed: int = 1) -> list[ShapedFolder]:
    """The real-shaped mailbox of ``messages`` messages in all, parents before children.

    Small folders keep fewer than 10 messages whatever the total, so that scaling it up
    grows the large and medium folders, as a mailbox grows with the years.
    """
    rng = random.Random(seed)
    counts: dict[tuple[str, ...], int] = {path: rng.randrange(10) for path in SMALL}
    for path, share in LARGE.items():
        counts[path] = round(messages * share)
    rest = max(0, messages - sum(counts.values()))
    weights = [rng.lognormvariate(0, 0.8) for _ in MEDIUM]
    given = [int(rest * w / sum(weights)) for w in weights]
    given[0] += rest - sum(given)
    counts.update(zip(MEDIUM, given, strict=True))
    paths = sorted(counts, key=lambda p: (p != ("INBOX",), p))
    return [ShapedFolder(path, counts[path], rng.getrandbits(32)) for path in paths]


def user_folders(messages: int, seed: int) -> list[ShapedFolder]:
    """One small account of the many-users case: ``messages`` over three folders."""
    rng = random.Random(seed)
    counts = [round(messages * share) for _, share in USER_SHARES]
    counts[0] += messages - sum(counts)
    return [ShapedFolder(path, count, rng.getrandbits(32))
            for (path, _), count in zip(USER_SHARES, counts, strict=True)]


def bulk_folder(messages: int, seed: int) -> ShapedFolder:
    """One folder of ``messages`` messages, none over 12 KB (plain text, lognormal below
    that: about 5 KB on average), as years of a busy mailbox filed in one place: the case
    where the target's cost per APPEND is what counts."""
    return ShapedFolder(("Archives", "Courrier arrivé"), messages, seed, largest=BULK_LARGEST)


def folder_messages(folder: ShapedFolder) -> Iterator[ShapedMessage]:
    """The folder's messages, built one at a time."""
    rng = random.Random(folder.seed)
    for _ in range(folder.count):
        yield message_of_size(rng, message_size(rng, folder.largest))


def message_size(rng: random.Random, largest: int = SIZE_MAX) -> int:
    size = rng.lognormvariate(math.log(SIZE_MEDIAN), SIZE_SIGMA)
    return int(min(SIZE_MAX, largest, max(SIZE_MIN, size)))


def message_of_size(rng: random.Random, size: int) -> ShapedMessage:
    """A message of about ``size`` bytes: plain text when small, else text and an attachment."""
    sender, recipient = rng.sample(PEOPLE, 2)
    date = datetime(2023, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
    head = (f"From: {sender}@ville-exemple.fr\r\nTo: {recipient}@ville-exemple.fr\r\n"
            f"Subject: {' '.join(rng.choice(WORDS) for _ in range(5))}\r\n"
            f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
            f"Message-ID: <{rng.getrandbits(64):016x}@ville-exemple.fr>\r\nMIME-Version: 1.0\r\n"
            ).encode()
    text = _text(rng, min(size, 6_000) - len(head) - 100)
    if size <= 12_000:
        raw = head + b"Content-Type: text/plain; charset=utf-8\r\n" \
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + _text(rng, size - len(head) - 100)
    else:
        boundary = b"=_b%012x" % rng.getrandbits(48)
        attachment = base64.encodebytes(rng.randbytes((size - len(head) - len(text)) * 3 // 4))
        raw = b"".join([
            head, b'Content-Type: multipart/mixed; boundary="', boundary, b'"\r\n\r\n',
            b"--", boundary, (b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"), text, CRLF,
            b"--", boundary, (b"\r\nContent-Type: application/pdf\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="piece-jointe.pdf"\r\n\r\n'),
            attachment.replace(b"\n", CRLF), b"--", boundary, b"--\r\n"])
    flags = ("\\Seen",) if rng.random() < 0.85 else ()
    if rng.random() < 0.08:
        flags += ("\\Flagged",)
    return ShapedMessage(raw, flags, date)


def _text(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of French words in CRLF lines."""
    lines, total = [], 0
    while total < max(size, 40):
        line = " ".join(rng.choice(WORDS) for _ in range(11)).encode()
        lines.append(line)
        total += len(line) + 2
    return CRLF.join(lines) + CRLF
