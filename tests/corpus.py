"""A deterministic mail corpus: the awkward messages and folders a real tenant holds.

``build_corpus`` answers a small account (a few dozen messages, a few MB) with every case a
connector must carry unchanged: MIME structures, 8-bit bodies, malformed messages, a large
attachment, missing and duplicated Message-IDs, identical copies, keywords and system
flags, accented and ampersand folder names, and the Exchange folders that are not mail.
``build_mailbox`` produces a larger, realistic mailbox lazily for benchmarks.
"""

from __future__ import annotations

import base64
import io
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

from connectors.base import Message, fingerprint_bytes

CRLF = b"\r\n"
OFFSETS = [
    UTC,
    timezone(timedelta(hours=1)),
    timezone(timedelta(hours=2)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=5, minutes=30)),
]
PEOPLE = [
    ("Amélie Durand", "amelie.durand@ville-exemple.fr"),
    ("Bruno Lefèvre", "bruno.lefevre@ville-exemple.fr"),
    ("Chloé Martin", "chloe.martin@agglo-exemple.fr"),
    ("Service urbanisme", "urbanisme@ville-exemple.fr"),
    ("Jean-François Œuvray", "jf.oeuvray@prestataire.example"),
]
SUBJECTS = [
    "Compte rendu du conseil municipal",
    "Budget 2024 : arbitrages",
    "Permis de construire n° 2024-118",
    "Réunion de chantier",
    "Re: planning des congés",
    "Invitation : comité de pilotage",
]


@dataclass(frozen=True)
class CorpusMessage:
    """One message as a source holds it: raw bytes, flags and keywords, internal date."""

    raw: bytes
    flags: frozenset[str] = frozenset()
    internal_date: datetime = datetime(2024, 1, 1, tzinfo=UTC)

    @property
    def fingerprint(self) -> str:
        return fingerprint_bytes(self.raw)


@dataclass(frozen=True)
class CorpusFolder:
    path: tuple[str, ...]
    role: str | None
    messages: list[CorpusMessage] = field(default_factory=list)


def build_corpus(seed: int = 0, large_size: int = 3 << 20) -> list[CorpusFolder]:
    """The test account, parents before children. ``large_size`` is the approximate size in
    bytes of the one large message (in ``("Projets", "Été 2024")``), a base64 attachment."""
    rng = random.Random(seed)
    shared_id = f"<partage-{seed}@ville-exemple.fr>"
    duplicate = _message(rng, _plain(rng, "Copie en double"), flags={"\\Seen"})
    inbox = [
        _message(rng, _plain(rng, "Message simple"), flags={"\\Seen"}),
        _message(rng, _alternative(rng), flags={"\\Seen", "\\Flagged"}),
        _message(rng, _mixed(rng, attachment_size=40_000), flags={"$label1"}),
        _message(rng, _latin1_8bit(rng), flags={"\\Seen", "\\Answered"}),
        _message(rng, _utf8_8bit(rng), flags={"Projet", "$label1"}),
        _message(rng, _broken_boundary(rng)),
        _message(rng, _header_without_colon(rng), flags={"\\Seen"}),
        _message(rng, _bare_lf(rng)),
        _message(rng, _long_lines(rng), flags={"\\Seen"}),
        _message(rng, _plain(rng, "Sans Message-ID", message_id=None)),
        _message(rng, _plain(rng, "Premier au même identifiant", message_id=shared_id)),
        _message(rng, _plain(rng, "Second au même identifiant", message_id=shared_id),
                 flags={"\\Seen"}),
        duplicate,
        duplicate,
        _message(rng, _plain(rng, "Transféré"), flags={"\\Seen", "$Forwarded"}),
    ]
    inbox.extend(_message(rng, _plain(rng), flags=_some_flags(rng)) for _ in range(6))
    sent = [
        _message(rng, _plain(rng, "Re: Budget 2024"), flags={"\\Seen"}),
        _message(rng, _mixed(rng, attachment_size=12_000), flags={"\\Seen"}),
        _message(rng, _alternative(rng), flags={"\\Seen", "\\Answered"}),
    ]
    drafts = [
        _message(rng, _plain(rng, "Brouillon de note", message_id=None),
                 flags={"\\Draft", "\\Seen"}),
    ]
    trash = [_message(rng, _plain(rng, "Publicité"), flags={"\\Seen", "\\Deleted"})]
    return [
        CorpusFolder(("INBOX",), "inbox", inbox),
        CorpusFolder(("Éléments envoyés",), "sent", sent),
        CorpusFolder(("Brouillons",), "drafts", drafts),
        CorpusFolder(("Éléments supprimés",), "trash", trash),
        CorpusFolder(("Projets",), None, [_message(rng, _plain(rng), flags={"Projet"})]),
        CorpusFolder(("Projets", "Été 2024"), None, [
            _message(rng, _mixed(rng, attachment_size=large_size * 3 // 4),
                     flags={"\\Seen", "Projet"}),
            _message(rng, _plain(rng, "Été : calendrier"), flags={"\\Seen"}),
        ]),
        CorpusFolder(("R&D",), None, [
            _message(rng, _utf8_8bit(rng), flags={"\\Seen", "\\Flagged", "$label1"}),
            _message(rng, _plain(rng, "Banc d'essai R&D")),
        ]),
        CorpusFolder(("Archives",), None, []),
        CorpusFolder(("Archives", "2019"), None, [
            _message(rng, _plain(rng), flags={"\\Seen"}, year=2019) for _ in range(3)
        ]),
        CorpusFolder(("Calendrier",), None, []),
        CorpusFolder(("Contacts",), None, []),
        CorpusFolder(("Sync Issues",), None, [
            _message(rng, _plain(rng, "Problèmes de synchronisation"), flags={"\\Seen"}),
        ]),
        CorpusFolder(("Conversation History",), None, []),
    ]


def build_mailbox(n: int, seed: int) -> Iterator[CorpusMessage]:
    """``n`` realistic messages, produced one at a time: most under 50 KB, about 2% of
    several MB. The same ``(n, seed)`` always yields the same messages."""
    rng = random.Random(seed)
    for _ in range(n):
        draw = rng.random()
        if draw < 0.02:
            raw = _mixed(rng, attachment_size=rng.randint(2 << 20, 6 << 20))
        elif draw < 0.25:
            raw = _mixed(rng, attachment_size=rng.randint(5_000, 35_000))
        elif draw < 0.55:
            raw = _alternative(rng)
        else:
            raw = _plain(rng)
        yield _message(rng, raw, flags=_some_flags(rng))


def as_messages(messages: Iterable[CorpusMessage], prefix: str = "m") -> list[Message]:
    """The corpus messages as a source would hand them to a sink; source ids ``prefix-N``."""
    return [
        Message(
            source_id=f"{prefix}-{index}",
            fingerprint=message.fingerprint,
            size=len(message.raw),
            flags=message.flags,
            internal_date=message.internal_date,
            open=lambda raw=message.raw: io.BytesIO(raw),
        )
        for index, message in enumerate(messages)
    ]


def write_maildir(root: Path, folders: Iterable[CorpusFolder]) -> None:
    """Lay the folders out as a Dovecot-compatible Maildir++ under ``root``."""
    from connectors.local.maildir import MaildirSink

    sink = MaildirSink(root)
    try:
        for folder in folders:
            native = sink.ensure_container(folder.path)
            for result in sink.put_many(native, as_messages(folder.messages)):
                if result.error is not None:
                    raise result.error
    finally:
        sink.close()


def _message(
    rng: random.Random, raw: bytes, flags: Iterable[str] = (), year: int = 2024
) -> CorpusMessage:
    return CorpusMessage(raw, frozenset(flags), _date(rng, year))


def _date(rng: random.Random, year: int = 2024) -> datetime:
    start = datetime(year, 1, 1, tzinfo=UTC)
    moment = start + timedelta(seconds=rng.randrange(365 * 24 * 3600))
    return moment.astimezone(rng.choice(OFFSETS))


def _some_flags(rng: random.Random) -> set[str]:
    flags = {"\\Seen"} if rng.random() < 0.8 else set()
    for flag, share in (("\\Flagged", 0.1), ("\\Answered", 0.2), ("$label1", 0.05)):
        if rng.random() < share:
            flags.add(flag)
    return flags


def _headers(
    rng: random.Random,
    subject: str | None = None,
    message_id: str | None = "",
    extra: Iterable[str] = (),
) -> list[bytes]:
    (from_name, from_addr), (to_name, to_addr) = rng.sample(PEOPLE, 2)
    subject = subject or rng.choice(SUBJECTS)
    lines = [
        f"From: =?utf-8?q?{_q(from_name)}?= <{from_addr}>",
        f"To: =?utf-8?q?{_q(to_name)}?= <{to_addr}>",
        f"Subject: =?utf-8?q?{_q(subject)}?=",
        f"Date: {format_datetime(_date(rng))}",
    ]
    if message_id == "":
        message_id = f"<{rng.getrandbits(64):016x}.{rng.getrandbits(32):08x}@ville-exemple.fr>"
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    lines.append("MIME-Version: 1.0")
    lines.extend(extra)
    return [line.encode("ascii") for line in lines]


def _q(text: str) -> str:
    """RFC 2047 Q-encoding of a header word."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append(char if char.isalnum() and byte < 128 else f"={byte:02X}")
    return "".join(out)


def _words(rng: random.Random, count: int) -> str:
    vocabulary = [
        "le", "la", "les", "des", "une", "commune", "conseil", "délibération", "budget",
        "voirie", "école", "marché", "public", "réunion", "dossier", "projet", "agent",
        "service", "mairie", "élu", "arrêté", "travaux",
    ]
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    lines = []
    for _ in range(count):
        text = _words(rng, rng.randint(8, 60))
        while text:
            cut = text.rfind(" ", 0, 72) if len(text) > 72 else len(text)
            lines.append(text[: cut if cut > 0 else 72])
            text = text[cut:].lstrip()
        lines.append("")
    return lines


def _qp(text: str) -> bytes:
    import quopri

    return quopri.encodestring(text.encode("utf-8")).replace(b"\n", CRLF)


def _crlf(lines: Iterable[bytes]) -> bytes:
    return CRLF.join(lines) + CRLF


def _plain(rng: random.Random, subject: str | None = None, message_id: str | None = "") -> bytes:
    head = _headers(rng, subject, message_id, [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
    ])
    body = _qp("\n".join(_paragraphs(rng, rng.randint(1, 5))))
    return _crlf(head) + CRLF + body


def _alternative(rng: random.Random) -> bytes:
    boundary = f"=_alt_{rng.getrandbits(48):012x}"
    text = "\n".join(_paragraphs(rng, 3))
    html = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.split("\n\n")) + \
        "</body></html>"
    head = _headers(rng, extra=[f'Content-Type: multipart/alternative; boundary="{boundary}"'])
    parts = [
        _crlf(head), CRLF, b"This is a multi-part message in MIME format.", CRLF,
        f"--{boundary}".encode(), CRLF,
        b"Content-Type: text/plain; charset=utf-8", CRLF,
        b"Content-Transfer-Encoding: quoted-printable", CRLF, CRLF, _qp(text), CRLF,
        f"--{boundary}".encode(), CRLF,
        b"Content-Type: text/html; charset=utf-8", CRLF,
        b"Content-Transfer-Encoding: quoted-printable", CRLF, CRLF, _qp(html), CRLF,
        f"--{boundary}--".encode(), CRLF,
    ]
    return b"".join(parts)


def _mixed(rng: random.Random, attachment_size: int) -> bytes:
    boundary = f"=_mix_{rng.getrandbits(48):012x}"
    payload = rng.randbytes(attachment_size)
    encoded = base64.encodebytes(payload).replace(b"\n", CRLF)
    head = _headers(rng, extra=[f'Content-Type: multipart/mixed; boundary="{boundary}"'])
    name = f"pièce-jointe-{rng.randrange(1000)}.pdf"
    parts = [
        _crlf(head), CRLF,
        f"--{boundary}".encode(), CRLF,
        b"Content-Type: text/plain; charset=utf-8", CRLF,
        b"Content-Transfer-Encoding: quoted-printable", CRLF, CRLF,
        _qp("\n".join(_paragraphs(rng, 2))), CRLF,
        f"--{boundary}".encode(), CRLF,
        b"Content-Type: application/pdf", CRLF,
        b"Content-Transfer-Encoding: base64", CRLF,
        f"Content-Disposition: attachment; filename*=utf-8''{_percent(name)}".encode(), CRLF,
        CRLF, encoded,
        f"--{boundary}--".encode(), CRLF,
    ]
    return b"".join(parts)


def _percent(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _latin1_8bit(rng: random.Random) -> bytes:
    head = _headers(rng, "Délibération n° 12 (latin-1)", extra=[
        "Content-Type: text/plain; charset=iso-8859-1",
        "Content-Transfer-Encoding: 8bit",
    ])
    body = "Après délibération, le conseil approuve à l'unanimité.\nÇa coûte 12 €uros.\n"
    return _crlf(head) + CRLF + body.replace("€", "E").encode("latin-1").replace(b"\n", CRLF)


def _utf8_8bit(rng: random.Random) -> bytes:
    head = _headers(rng, "Note en UTF-8 brut", extra=["Content-Type: text/plain; charset=utf-8"])
    body = "Réunion à l'hôtel de ville — ordre du jour : « Été 2024 », 15 €.\n"
    return _crlf(head) + CRLF + body.encode("utf-8").replace(b"\n", CRLF)


def _broken_boundary(rng: random.Random) -> bytes:
    head = _headers(rng, "Limite MIME cassée", extra=[
        'Content-Type: multipart/mixed; boundary="annonce-limite"',
    ])
    body = [
        b"--autre-limite", b"Content-Type: text/plain", b"",
        b"La limite annoncee ne figure jamais dans le corps.",
        b"--autre-limite", b"Content-Type: application/octet-stream", b"",
        b"pas de fin",
    ]
    return _crlf(head) + CRLF + _crlf(body)


def _header_without_colon(rng: random.Random) -> bytes:
    head = _headers(rng, "En-tête sans deux-points")
    head.insert(2, "X-Cassé sans deux points".encode())
    return _crlf(head) + CRLF + b"Le corps suit un en-tete invalide." + CRLF


def _bare_lf(rng: random.Random) -> bytes:
    head = _headers(rng, "Fins de ligne LF seules", extra=["Content-Type: text/plain"])
    lines = [line.encode() for line in _paragraphs(rng, 2)]
    return b"\n".join(head) + b"\n\n" + b"\n".join(lines) + b"\n"


def _long_lines(rng: random.Random) -> bytes:
    head = _headers(rng, "Ligne très longue", extra=["Content-Type: text/plain; charset=utf-8"])
    line = _words(rng, 4000).encode("utf-8")
    return _crlf(head) + CRLF + line + CRLF + b"fin" + CRLF
