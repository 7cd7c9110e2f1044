"""Export files holding several calendar objects or contacts, cut into one item each.

A CalDAV resource holds one object, every component of one UID (RFC 4791, 4.1), and a
CardDAV resource one vCard (RFC 6352, 5.1); bascule's items are the same. An export often
holds a whole calendar or address book in one file: a calendar application's ``.ics``, an
address book's ``.vcf``. ``objects`` reads such a file once, line by line, and says where
each object lies in it, as byte ranges; ``Reader`` then reads one object from its ranges.
Neither holds more than a line in memory (the first ``SCANNED`` bytes of a long one).

- vCard: each ``BEGIN:VCARD`` ... ``END:VCARD`` at the top level is an object, keyed by its
  UID (a card without one, or with a UID an earlier card of the file took, by its place
  in the file: ``#3``).
- iCalendar: in each VCALENDAR of the file, every component but VTIMEZONE is grouped by UID
  (a series' master and its overrides make one object, wherever they are in the file); an
  object is written as its VCALENDAR's own BEGIN and END lines, its calendar properties
  but METHOD (a stored object has none, RFC 4791 4.1), the VTIMEZONEs whose TZID its
  components name, then its components, in the file's order. A component without UID is
  an object of its own, keyed by its place.

The bytes of each part are the file's own, line endings and folding included.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Self

SCANNED = 4096
"""Bytes of a logical line kept for reading its name and parameters: a photo's thousands
of folded lines are passed over, not gathered."""
_TZID = re.compile(rb";TZID=(\"[^\"]*\"|[^;:]*)", re.IGNORECASE)
_NAME = re.compile(rb"^([A-Za-z0-9-]+)")

Range = tuple[int, int]


@dataclass
class FileObject:
    """One object of a file: its key (its UID, or ``#n``, its place in the file), its UID
    if it has one, the byte ranges that make it, and a digest of those bytes."""

    key: str
    uid: str | None
    ranges: list[Range]
    version: str = ""

    @property
    def size(self) -> int:
        return sum(end - start for start, end in self.ranges)


@dataclass
class _Block:
    """A component or card being read: where it starts, its UID, the zones it names."""

    kind: bytes
    start: int
    uid: str | None = None
    zones: set[bytes] = field(default_factory=set)


def objects(stream: IO[bytes]) -> list[FileObject]:
    """The objects of an iCalendar or vCard stream, in the order they first appear (their
    versions not set: ``versioned``). An empty list for what is neither, or for a stream
    that ends inside a card or calendar: such a file goes whole, and the sink says what is
    wrong with it."""
    lines = _logical_lines(stream)
    first = next(lines, None)
    if first is None:
        return []
    kind = _begin(first[2])
    if kind == b"VCARD":
        return _cards(first, lines)
    if kind == b"VCALENDAR":
        return _calendars(first, lines)
    return []


def _cards(first: tuple[int, int, bytes], lines: Iterator[tuple[int, int, bytes]]
           ) -> list[FileObject]:
    found: list[FileObject] = []
    taken: set[str] = set()
    card: _Block | None = None
    for start, end, text in _chain(first, lines):
        if card is None:
            if _begin(text) == b"VCARD":
                card = _Block(b"VCARD", start)
            continue
        if _end(text) == b"VCARD":
            key = card.uid if card.uid and card.uid not in taken else f"#{len(found) + 1}"
            taken.add(key)
            found.append(FileObject(key, card.uid, [(card.start, end)]))
            card = None
        elif card.uid is None and _name(text) == b"UID":
            card.uid = _value(text)
    return [] if card is not None else found


def _calendars(first: tuple[int, int, bytes], lines: Iterator[tuple[int, int, bytes]]
               ) -> list[FileObject]:
    """Each VCALENDAR's objects, in the order their first component comes; none if the
    file ends inside a VCALENDAR."""
    found: list[FileObject] = []
    taken: set[str] = set()
    opened: Range | None = None
    header: list[Range] = []
    zones: dict[bytes, Range] = {}
    mine: dict[str, tuple[FileObject, set[bytes]]] = {}
    """This VCALENDAR's objects by UID (or key), each with the zones it names."""
    depth = 0
    block: _Block | None = None
    for start, end, text in _chain(first, lines):
        begun, ended = _begin(text), _end(text)
        if depth == 0:
            if begun == b"VCALENDAR":
                opened, header, zones, mine, depth = (start, end), [], {}, {}, 1
            continue
        if depth == 1:
            if ended == b"VCALENDAR":
                assert opened is not None
                for thing, named in mine.values():
                    used = [place for zone, place in zones.items() if zone in named]
                    thing.ranges = [opened, *header, *used, *thing.ranges, (start, end)]
                    found.append(thing)
                depth = 0
            elif begun is not None:
                block, depth = _Block(begun, start), 2
            elif _name(text) != b"METHOD":
                header.append((start, end))
            continue
        assert block is not None
        if begun is not None:
            depth += 1
        elif ended is not None:
            depth -= 1
        elif depth == 2 and _name(text) == b"UID" and block.uid is None:
            block.uid = _value(text)
        elif block.kind == b"VTIMEZONE" and depth == 2 and _name(text) == b"TZID":
            block.zones.add(_value(text).encode("utf-8"))
        if block.kind != b"VTIMEZONE":
            block.zones.update(zone.strip(b'"') for zone in _TZID.findall(text))
        if depth > 1:
            continue
        if block.kind == b"VTIMEZONE":
            for zone in block.zones:
                zones.setdefault(zone, (block.start, end))
        else:
            entry = mine.get(block.uid) if block.uid else None
            if entry is None:
                key = block.uid if block.uid and block.uid not in taken else \
                    f"#{len(found) + len(mine) + 1}"
                taken.add(key)
                entry = mine.setdefault(block.uid or key, (FileObject(key, block.uid, []), set()))
            entry[0].ranges.append((block.start, end))
            entry[1].update(block.zones)
        block = None
    return [] if depth else found


def versioned(stream: IO[bytes], found: list[FileObject]) -> list[FileObject]:
    """``found`` with each object's version: the SHA-256 of its bytes, read from
    ``stream``."""
    for thing in found:
        digest = hashlib.sha256()
        for chunk in _read_ranges(stream, thing.ranges):
            digest.update(chunk)
        thing.version = "sha256:" + digest.hexdigest()
    return found


class Reader:
    """One object's bytes, read from its ranges of an open file, which it closes."""

    def __init__(self, file: IO[bytes], ranges: list[Range]) -> None:
        self._file = file
        self._chunks = _read_ranges(file, ranges)
        self._left = b""

    def read(self, size: int = -1) -> bytes:
        wanted = size if size >= 0 else None
        parts: list[bytes] = []
        have = 0
        while wanted is None or have < wanted:
            if not self._left:
                self._left = next(self._chunks, b"")
                if not self._left:
                    break
            take = self._left if wanted is None else self._left[:wanted - have]
            self._left = self._left[len(take):]
            parts.append(take)
            have += len(take)
        return b"".join(parts)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_ranges(stream: IO[bytes], ranges: list[Range], chunk: int = 1 << 16
                 ) -> Iterator[bytes]:
    for start, end in ranges:
        stream.seek(start)
        left = end - start
        while left > 0:
            data = stream.read(min(chunk, left))
            if not data:
                raise OSError("the file became shorter while it was read")
            left -= len(data)
            yield data


def _logical_lines(stream: IO[bytes]) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, text)`` of each logical line (a physical line and the folded ones
    after it, RFC 5545 3.1): its bytes ``start:end`` in the stream, line ending included,
    and its first ``SCANNED`` bytes unfolded, without the ending. Blank lines are passed
    over."""
    position = 0
    start = 0
    text = b""
    for physical in stream:
        length = len(physical)
        if physical[:1] in (b" ", b"\t") and text:
            if len(text) < SCANNED:
                text += physical[1:].rstrip(b"\r\n")[:SCANNED - len(text)]
        else:
            if text:
                yield start, position, text
            start = position
            text = physical.rstrip(b"\r\n")[:SCANNED]
        position += length
    if text:
        yield start, position, text


def _chain(first: tuple[int, int, bytes], rest: Iterator[tuple[int, int, bytes]]
           ) -> Iterator[tuple[int, int, bytes]]:
    yield first
    yield from rest


def _name(text: bytes) -> bytes:
    """The property's name, upper case, without its group (``item1.TEL``: ``TEL``)."""
    head = text.split(b":", 1)[0].split(b";", 1)[0]
    name = _NAME.match(head.rsplit(b".", 1)[-1])
    return name.group(1).upper() if name else b""


def _value(text: bytes) -> str:
    """The value of a short property line (UID, TZID): after the first colon outside
    quotes, as text."""
    quoted = False
    for index, byte in enumerate(text):
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x3A and not quoted:
            return text[index + 1:].decode("utf-8", "replace").strip()
    return ""


def _begin(text: bytes) -> bytes | None:
    return _marker(text, b"BEGIN")


def _end(text: bytes) -> bytes | None:
    return _marker(text, b"END")


def _marker(text: bytes, which: bytes) -> bytes | None:
    name, colon, value = text.partition(b":")
    if colon and name.strip().upper() == which:
        return value.strip().upper()
    return None
