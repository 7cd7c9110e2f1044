"""The items the conformance cases send and seed: ordinary ones, ones with awkward bytes,
hostile names, and bodies far bigger than a sink may hold in memory."""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import IO, TypeVar

from connectors.base import Document, Message, fingerprint_bytes
from tests.conformance.harness import Folder, SeedFile, SeedMessage

T = TypeVar("T")
BIG = 64 << 20
"""The size of the item a sink or a source must stream."""
MEMORY_BOUND = BIG // 3
"""The most Python may allocate while such an item goes through: one copy of the item
alone is three times as much. (Measured here: 2 to 4 MiB for most connectors; 17 MiB for
the IMAP source, which reads a large message 4 MiB at a time through imaplib.)"""
PARIS_SUMMER = timezone(timedelta(hours=2))
SUMMER = datetime(2024, 7, 14, 9, 30, 5, tzinfo=PARIS_SUMMER)

HOSTILE_NAMES = (
    "a/b",  # the separator of most targets, and of every path
    "a.b",  # Maildir++'s separator
    "a\\b",
    "..",
    ".",
    ".cache",
    "..suite",
    "x\0y",
    "tab\there",
    "ligne\nsuivante",
    "\x7f\x1b[31mrouge",
    "\u202eexe.pdf",  # right-to-left override
    "Été à l'œil – ½",
    "e\u0301te\u0301",  # decomposed accents
    "é" * 150,  # 300 bytes in UTF-8
    "x" * 300,
    "%*&-~",
    "[Archives",  # a bracket no bracket closes: users put one first to sort a folder first
    "Réunions]",
    "~racine",
    " espace ",
    "../../échappé",
    "..\\..\\échappé",
    "CON",
    "brouillon.bascule-part",  # what a sink may take for its own temporary file
    "~$Rapport.docx",  # what Office leaves beside a document being edited
)
"""Names a source may hand over (Exchange and OneDrive allow most of them, or a local
export does), each of which some target or some file system will not take as it is."""
NAME_CHARACTERS = tuple(name for name in HOSTILE_NAMES
                        if len(name.encode()) < 64 and not name.startswith("~"))
"""The hostile names whose trouble is only their characters (not their length, not where
a character stands): a sink's declared separator and forbidden characters cover these."""


def message(raw: bytes, source_id: str = "m-1", flags: frozenset[str] = frozenset(),
            internal_date: datetime | None = SUMMER) -> Message:
    return Message(source_id, fingerprint_bytes(raw), len(raw), flags, internal_date,
                   lambda: io.BytesIO(raw))


def plain(subject: str, body: str = "Bonjour,\r\n\r\nVoici le compte rendu.\r\n") -> bytes:
    digest = hashlib.sha1(subject.encode()).hexdigest()[:16]
    return (f"From: Amélie Lefèvre <amelie@ville-exemple.fr>\r\n"
            f"To: Service urbanisme <urbanisme@ville-exemple.fr>\r\n"
            f"Subject: {subject}\r\n"
            f"Date: Sun, 14 Jul 2024 09:30:05 +0200\r\n"
            f"Message-ID: <{digest}@ville-exemple.fr>\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Transfer-Encoding: 8bit\r\n\r\n{body}").encode()


def awkward_messages() -> list[bytes]:
    """Messages whose bytes a careless target rewrites: 8-bit Latin-1 in headers and body,
    a line far past 998 octets, trailing blanks, a lone dot, no final line end, a header
    line without a colon, a body line starting with ``From ``."""
    latin1 = plain("Réunion", "Déjà reçu, à l'œil.\r\n").replace(
        "é".encode(), b"\xe9").replace("à".encode(), b"\xe0")
    return [
        latin1,
        plain("Ligne longue", "x" * 10_000 + "\r\n"),
        plain("Blancs", "fin de ligne  \t\r\n.\r\n..\r\nFrom here on\r\n"),
        plain("Sans fin de ligne", "dernière ligne sans retour"),
        plain("Entête cassé", "corps\r\n").replace(b"MIME-Version", b"X-Broken header\r\nMIME"),
    ]


def source_mail() -> dict[Folder, list[SeedMessage]]:
    """What a mail source holds before the cases read it: nested and accented folders, and
    one whose name opens a bracket to sort first, as users do."""
    return {
        ("INBOX",): [SeedMessage(plain(f"Message {n}"), frozenset({"\\Seen"}) if n else
                                 frozenset(), datetime(2024, 3, n + 1, 8, 0, tzinfo=UTC))
                     for n in range(3)] + [SeedMessage(awkward_messages()[0])],
        ("Projets", "Été 2024"): [SeedMessage(plain("Chantier de l'école"),
                                              frozenset({"\\Flagged"}))],
        ("Archives",): [SeedMessage(plain("Permis de construire 1998"))],
        ("[Archives",): [SeedMessage(plain("Demande de subvention"))],
    }


def source_files() -> list[SeedFile]:
    when = datetime(2023, 11, 2, 16, 45, 12, tzinfo=UTC)
    return [
        SeedFile(("Délibérations", "2024"), "PV conseil n°3.pdf", b"%PDF-1.7\n%PV\n%%EOF\n",
                 when),
        SeedFile(("Finances & budget",), "Budget 2024 #2 (hausse de 3%).xlsx",
                 b"PK\x03\x04" + b"budget" * 100, when),
        SeedFile((), "Lisez-moi.txt", "Bienvenue à la mairie.\r\n".encode(), when),
        SeedFile((), "vide.txt", b"", when),
    ]


def document(workload: str, key: str, *, body: bytes | None = None, name: str | None = None,
             folder: Folder = (), modified: datetime | None = SUMMER,
             source_id: str | None = None, variant: str = "") -> Document:
    """A calendar object, a contact or a file, as a source would hand it over; a
    ``variant`` is the same item (the same UID) changed."""
    content = body if body is not None else sample_body(workload, key, variant)
    return Document(source_id or f"src-{key}", "v1", name or sample_name(workload, key),
                    folder, fingerprint_bytes(content), len(content), modified,
                    lambda: io.BytesIO(content))


def sample_name(workload: str, key: str) -> str:
    return {"calendar": f"{key}.ics", "tasks": f"{key}.ics",
            "contacts": f"{key}.vcf"}.get(workload, f"{key}.txt")


def sample_body(workload: str, key: str, variant: str = "") -> bytes:
    if workload == "calendar":
        return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//conformance//FR\r\n"
                f"BEGIN:VEVENT\r\nUID:{key}\r\nDTSTAMP:20240301T080000Z\r\n"
                f"DTSTART:20240314T090000Z\r\nDTEND:20240314T100000Z\r\n"
                f"SUMMARY:Conseil municipal {key}{variant}\r\nEND:VEVENT\r\n"
                f"END:VCALENDAR\r\n").encode()
    if workload == "tasks":
        return (f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//conformance//FR\r\n"
                f"BEGIN:VTODO\r\nUID:{key}\r\nDTSTAMP:20240301T080000Z\r\n"
                f"DUE:20240314T090000Z\r\nPRIORITY:1\r\nSTATUS:NEEDS-ACTION\r\n"
                f"SUMMARY:Tâche mairie {key}{variant}\r\nEND:VTODO\r\n"
                f"END:VCALENDAR\r\n").encode()
    if workload == "contacts":
        return (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{key}\r\nFN:Hélène Noël {key}{variant}\r\n"
                f"N:Noël;Hélène;;;\r\nEMAIL:helene.noel@ville-exemple.fr\r\n"
                f"END:VCARD\r\n").encode()
    return f"Compte rendu {key}{variant}\r\n".encode() + bytes(range(256))


def awkward_bodies(workload: str) -> list[bytes]:
    """Contents a careless target rewrites: line ends mixed, a byte-order mark, NUL bytes
    and an empty file (files only: a calendar or a contact is text)."""
    if workload in ("calendar", "tasks", "contacts"):
        # Each its own UID: a calendar or an address book holds one object per UID.
        return [sample_body(workload, "awkward-0"),
                sample_body(workload, "awkward-1").replace(b"\r\n", b"\n"),
                "\ufeff".encode() + sample_body(workload, "awkward-2")]
    return [sample_body(workload, "awkward"), b"\0" * 10 + b"\r\n\n\r" + bytes(range(256)),
            b""]


class GeneratedBody(io.RawIOBase):
    """``size`` bytes made as they are read: ``head``, lines of base64 text ending in CRLF
    (each starting with ``fold``: a space continues an iCalendar or vCard line), ``tail``.
    Nothing holds the whole."""

    def __init__(self, head: bytes, size: int, tail: bytes = b"", fold: bytes = b"") -> None:
        super().__init__()
        self._parts = (memoryview(head), _block(fold), memoryview(tail))
        self._body_end = size - len(tail)
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        head, block, tail = self._parts
        wanted = min(len(view), self._size - self._position)
        filled = 0
        while filled < wanted:
            at = self._position + filled
            if at < len(head):
                piece = head[at:at + wanted - filled]
            elif at < self._body_end:
                offset = (at - len(head)) % len(block)
                piece = block[offset:offset + min(wanted - filled, self._body_end - at)]
            else:
                piece = tail[at - self._body_end:at - self._body_end + wanted - filled]
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
        self._position += filled
        return filled


@functools.cache
def _block(fold: bytes) -> memoryview:
    """1 MiB of base64 lines, the same every time."""
    lines = base64.encodebytes(random.Random(64).randbytes(3 << 18)).splitlines()
    return memoryview(b"".join(fold + line + b"\r\n" for line in lines))


def generated_fingerprint(make: Callable[[], IO[bytes]]) -> str:
    digest = hashlib.sha256()
    with make() as body:
        while chunk := body.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def big_message(size: int = BIG) -> Message:
    head = plain("Plans du chantier (archive)", "").replace(
        b"text/plain; charset=utf-8", b"application/octet-stream").replace(b"8bit", b"base64")

    def make() -> IO[bytes]:
        return GeneratedBody(head, size, b"\r\n")

    return Message("big-1", generated_fingerprint(make), size, frozenset({"\\Seen"}), SUMMER,
                   make)


def _big_parts(workload: str) -> tuple[bytes, bytes, bytes]:
    """The head, tail and fold of a big document of this workload."""
    if workload not in ("calendar", "tasks", "contacts"):
        return b"", b"", b""
    text = sample_body(workload, "big")
    end = {"calendar": b"END:VEVENT", "tasks": b"END:VTODO"}.get(workload, b"END:VCARD")
    head = text.split(end)[0] + (b"PHOTO;ENCODING=b:" if workload == "contacts" else
                                 b"ATTACH;ENCODING=BASE64;VALUE=BINARY:") + b"\r\n"
    return head, b"\r\n" + end + text.split(end)[1], b" "


def whole_lines_size(workload: str, at_most: int) -> int:
    """The largest size up to ``at_most`` whose big document ends its base64 on a whole
    line: valid base64, which a server that decodes attachments (Radicale) takes."""
    head, tail, fold = _big_parts(workload)
    block = bytes(_block(fold))
    room = at_most - len(head) - len(tail)
    whole, part = divmod(room, len(block))
    return len(head) + len(tail) + whole * len(block) + block.rfind(b"\r\n", 0, part) + 2


def big_document(workload: str, size: int = BIG) -> Document:
    """A file; for calendars and contacts, an object with a huge attachment or photo, its
    line folded as RFC 5545 and RFC 6350 fold lines."""
    head, tail, fold = _big_parts(workload)

    def make() -> IO[bytes]:
        return GeneratedBody(head, size, tail, fold)

    return Document("big-1", "v1", sample_name(workload, "big"), (),
                    generated_fingerprint(make), size, SUMMER, make)


def peak_memory(action: Callable[[], T]) -> tuple[T, int]:
    """What ``action`` answers, and the most memory Python held for it meanwhile, in bytes
    (every thread counted)."""
    tracemalloc.start()
    try:
        result = action()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
