"""Calendar objects kept from the target's scheduling while they are migrated (RFC 6638).

A CalDAV server that schedules (Cyrus, SOGo, Nextcloud...) mails every attendee of an
event written into an organiser's calendar, and the organiser of an invitation written into
an attendee's: a migration would send the town's outside contacts thousands of invitations,
updates and cancellations. RFC 6638 (section 7.1) lets the client say it schedules itself:
``SCHEDULE-AGENT=CLIENT`` on a calendar user address, and the server then sends nothing for
it. Cyrus honours it only when it is on the ORGANIZER **and every ATTENDEE**: on the
ORGANIZER alone it still invites (tests/test_scheduling.py).

``client_scheduled`` puts that parameter on every ORGANIZER and ATTENDEE of every
component (masters, overrides, tasks), replacing any SCHEDULE-AGENT the object had, and
drops SCHEDULE-FORCE-SEND, which asks the server to send whatever the agent. Every other
line passes byte for byte, folding included; the lines it changes are unfolded, changed and
folded again at 75 octets (RFC 5545, section 3.1), never inside a UTF-8 sequence. It reads
and writes chunks, so an object with large attachments is never held whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

SCHEDULED = (b"ORGANIZER", b"ATTENDEE")
"""The properties whose calendar user the server would mail."""

CLIENT = b"SCHEDULE-AGENT=CLIENT"
DROPPED = (b"SCHEDULE-AGENT", b"SCHEDULE-FORCE-SEND")
"""Parameters removed before ``CLIENT`` is added: the agent it replaces, and the request to
send whatever the agent."""

FOLD = 75
"""Octets per physical line, its line break excluded (RFC 5545, section 3.1)."""

_NAME = re.compile(rb"[A-Za-z0-9-]+")
_SCHEDULED_START = re.compile(rb"^(?:ORGANIZER|ATTENDEE)(?![A-Za-z0-9-])",
                              re.IGNORECASE | re.MULTILINE)


def client_scheduled(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The calendar object read from ``chunks`` with ``SCHEDULE-AGENT=CLIENT`` on every
    ORGANIZER and ATTENDEE, in chunks; line breaks kept as they came (CRLF, or LF alone).

    Only an ORGANIZER or ATTENDEE line is held until it ends; every other byte goes out with
    the chunk it came in, whatever the length of its line."""
    return _participants_changed(chunks, _rewritten)


class WithoutAttendees:
    """The calendar object without its ATTENDEE properties, for a server that schedules
    whatever the agent says: with no attendee, an object is no scheduling object (RFC 6638,
    section 3.2), so there is nobody to invite and nobody to reply to. The ORGANIZER stays.
    ``dropped`` counts the attendees taken out once the chunks are read."""

    def __init__(self) -> None:
        self.dropped = 0

    def __call__(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        return _participants_changed(chunks, self._drop)

    def _drop(self, line: bytes) -> bytes:
        if line[:len(b"ATTENDEE")].upper() != b"ATTENDEE":
            return line
        self.dropped += 1
        return b""


def _participants_changed(chunks: Iterable[bytes], change: Callable[[bytes], bytes]
                          ) -> Iterator[bytes]:
    """The chunks with each ORGANIZER and ATTENDEE property (its physical lines, folding
    included) replaced by what ``change`` makes of it."""
    kept: bytearray | None = None  # the ORGANIZER or ATTENDEE line being read, if one is
    head = bytearray()  # the start of a physical line, until it says what it belongs to
    out = bytearray()

    def begin(line: bytes) -> None:
        """A physical line whose start says what it belongs to: a continuation stays with
        its property; a new property ends the one kept, and is kept if it is scheduled."""
        nonlocal kept
        if line[:1] not in (b" ", b"\t"):
            if kept is not None:
                out.extend(change(bytes(kept)))
                kept = None
            name = _NAME.match(line)
            if name is not None and name.group(0).upper() in SCHEDULED:
                kept = bytearray()

    starting = True  # the next byte starts a physical line
    for chunk in chunks:
        position = 0
        while position < len(chunk):
            if kept is None and starting and not head:
                # Whole lines up to the next scheduled property pass in one piece: a large
                # attachment's thousands of lines are not looked at one by one.
                whole = chunk.rfind(b"\n", position) + 1
                found = _SCHEDULED_START.search(chunk, position, whole) if whole else None
                stop = found.start() if found else whole
                if stop > position:
                    out.extend(chunk[position:stop])
                    position = stop
                    continue
            newline = chunk.find(b"\n", position)
            stop = len(chunk) if newline < 0 else newline + 1
            piece = chunk[position:stop]
            position = stop
            starting_here, starting = starting, piece.endswith(b"\n")
            if starting_here:
                head += piece
                if not _decided(head, complete=starting):
                    starting = True  # still the line's start, not yet said what it is
                    continue
                piece, head = bytes(head), bytearray()
                begin(piece)
            (out if kept is None else kept).extend(piece)
        if out:
            yield bytes(out)
            out.clear()
    if head:
        begin(bytes(head))
        (out if kept is None else kept).extend(head)
    if kept is not None:
        out.extend(change(bytes(kept)))
    if out:
        yield bytes(out)


def _decided(head: bytearray, complete: bool) -> bool:
    """Whether the start of a physical line says enough: a continuation (space or tab), or
    a property whose name has ended, or the whole line."""
    if complete or head[:1] in (b" ", b"\t"):
        return bool(head)
    name = _NAME.match(head)
    return name is None or name.end() < len(head)


def _rewritten(line: bytes) -> bytes:
    """An ORGANIZER or ATTENDEE line, folded or not, with the parameter set."""
    physical = [part + b"\n" for part in line.split(b"\n")]
    physical[-1] = physical[-1][:-1]
    if not physical[-1]:
        physical.pop()
    last = physical[-1]
    ending = last[len(_content(last)):]
    unfolded = _content(physical[0]) + b"".join(_content(part)[1:] for part in physical[1:])
    name = _NAME.match(unfolded)
    if name is None:
        return line
    head, value = _split_value(unfolded)
    parameters = [p for p in split_parameters(head[name.end():])
                  if p.split(b"=", 1)[0].upper() not in DROPPED]
    changed = b";".join([head[:name.end()], *parameters, CLIENT]) + b":" + value
    return folded(changed, ending or b"\r\n")[:None if ending else -2]


def _content(line: bytes) -> bytes:
    """A physical line without its line break."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


def _split_value(line: bytes) -> tuple[bytes, bytes]:
    """The name and parameters, and the value: split at the first colon outside quotes."""
    quoted = False
    for index, byte in enumerate(line):
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x3A and not quoted:
            return line[:index], line[index + 1:]
    return line, b""


def split_parameters(text: bytes) -> list[bytes]:
    """``;A=1;B="x;y"`` as ``[b'A=1', b'B="x;y"']``: the parameters after a property's
    name, cut at semicolons outside double quotes."""
    found: list[bytes] = []
    quoted = False
    start = None
    for index, byte in enumerate(text):
        if byte == 0x22:
            quoted = not quoted
        elif byte == 0x3B and not quoted:
            if start is not None:
                found.append(text[start:index])
            start = index + 1
    if start is not None:
        found.append(text[start:])
    return [parameter for parameter in found if parameter]


def folded(line: bytes, ending: bytes) -> bytes:
    """``line`` in physical lines of at most ``FOLD`` octets, each continuation starting
    with a space, never cut inside a UTF-8 sequence."""
    parts = []
    width = FOLD
    while len(line) > width:
        cut = width
        while cut > 1 and line[cut] & 0xC0 == 0x80:
            cut -= 1
        parts.append(line[:cut])
        line = line[cut:]
        width = FOLD - 1
    parts.append(line)
    return (ending + b" ").join(parts) + ending
