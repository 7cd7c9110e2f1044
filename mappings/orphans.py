"""Occurrences without their series (orphan overrides) written as standalone events, for a
server that takes no RECURRENCE-ID whose master is not in the same object.

An orphan override is a component with a RECURRENCE-ID whose UID has no master (the same UID
without RECURRENCE-ID) in its object: an invitation to one meeting of a series whose other
meetings the user never had. RFC 4791 (section 4.1) allows it; a server may still refuse it
(``connectors.dav.profiles.Profile.requires_master``). Standalone, it loses RECURRENCE-ID and
takes a UID made of the series' UID and the recurrence id (``standalone_uid``): the same on
every run, so a later pass finds what it wrote; apart from the series', so a master arriving
later is not mixed up with it.

Reading is in two passes over chunks, as an object with large attachments is never held
whole: ``orphans`` finds which components are orphans and the UID each takes, then
``Standalone`` rewrites them, every other line passing byte for byte. A physical line is held
whole while it is read: RFC 5545 folds lines at 75 octets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from mappings.scheduling import folded

TOP_LEVEL = (b"VEVENT", b"VTODO", b"VJOURNAL")
"""The components RECURRENCE-ID applies to (RFC 5545, section 3.8.4.4)."""


def standalone_uid(uid: str, recurrence_id: str) -> str:
    """The UID of an orphan occurrence written standalone: its series' UID and its recurrence
    id as written (``20250515T160000Z``, or a date), so the same occurrence always gets it."""
    return f"{uid}-{recurrence_id}"


@dataclass
class _Component:
    uid: str = ""
    recurrence_id: str | None = None


def orphans(chunks: Iterable[bytes]) -> dict[int, str]:
    """Position (0 for the first VEVENT, VTODO or VJOURNAL of the object, and so on) -> the
    UID it takes standalone, for every override whose UID has no master in the object."""
    components: list[_Component] = []
    depth = 0
    current: _Component | None = None
    for name, value in _properties(_lines(chunks)):
        if name == b"BEGIN":
            depth += 1
            if depth == 2 and value.upper().encode() in TOP_LEVEL:
                current = _Component()
                components.append(current)
        elif name == b"END":
            if depth == 2:
                current = None
            depth -= 1
        elif current is not None and depth == 2:
            if name == b"UID":
                current.uid = value
            elif name == b"RECURRENCE-ID":
                current.recurrence_id = value
    masters = {c.uid for c in components if c.recurrence_id is None}
    return {index: standalone_uid(c.uid, c.recurrence_id)
            for index, c in enumerate(components)
            if c.recurrence_id is not None and c.uid not in masters}


class Standalone:
    """The object with each orphan ``orphans`` found written standalone: its RECURRENCE-ID
    left out, its UID replaced. ``converted`` counts them once the chunks are read."""

    def __init__(self, found: Mapping[int, str]) -> None:
        self.found = found
        self.converted = 0

    def __call__(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        depth = 0
        position = -1
        skipping = False  # inside a property left out or replaced, continuation lines too
        for line in _lines(chunks):
            if line[:1] in (b" ", b"\t"):
                if not skipping:
                    yield line
                continue
            skipping = False
            name = _name(line)
            if name == b"BEGIN":
                depth += 1
                if depth == 2 and _value(line).upper().encode() in TOP_LEVEL:
                    position += 1
                    if position in self.found:
                        self.converted += 1
            elif name == b"END":
                depth -= 1
            elif depth == 2 and position in self.found and name in (b"UID", b"RECURRENCE-ID"):
                skipping = True
                if name == b"UID":
                    yield folded(b"UID:" + _escaped(self.found[position]), _ending(line))
                continue
            yield line


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Physical lines, each with its line break (CRLF or LF)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        start = 0
        while (end := rest.find(b"\n", start)) >= 0:
            yield rest[start:end + 1]
            start = end + 1
        rest = rest[start:]
    if rest:
        yield rest


def _properties(lines: Iterable[bytes]) -> Iterator[tuple[bytes, str]]:
    """(upper-case name, unfolded value) of BEGIN, END, UID and RECURRENCE-ID; other
    properties are not unfolded."""
    wanted = (b"BEGIN", b"END", b"UID", b"RECURRENCE-ID")
    kept: bytes | None = None
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if kept is not None:
                kept += _content(line)[1:]
            continue
        if kept is not None:
            yield _name(kept), _value(kept)
            kept = None
        if _name(line) in wanted:
            kept = _content(line)
    if kept is not None:
        yield _name(kept), _value(kept)


def _name(line: bytes) -> bytes:
    end = len(line)
    for separator in (b";", b":"):
        found = line.find(separator)
        if 0 <= found < end:
            end = found
    return line[:end].strip().upper()


def _value(line: bytes) -> str:
    """The value after the first colon outside double quotes, unescaped for a UID."""
    quoted = False
    for index, byte in enumerate(line):
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x3A and not quoted:
            text = _content(line[index + 1:]).decode("utf-8", "replace")
            return text.replace("\\,", ",").replace("\\;", ";").replace("\\\\", "\\")
    return ""


def _escaped(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").encode()


def _content(line: bytes) -> bytes:
    return line.rstrip(b"\r\n")


def _ending(line: bytes) -> bytes:
    return line[len(_content(line)):] or b"\r\n"

