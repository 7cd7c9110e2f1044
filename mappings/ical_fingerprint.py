"""What a calendar object or a contact says, as a fingerprint a server's rewriting leaves alone.

A CalDAV or CardDAV server does not give back the bytes it was given: Cyrus folds lines
again and writes a CATEGORIES of several values as one line per value; and bascule itself
puts ``SCHEDULE-AGENT=CLIENT`` on every ORGANIZER and ATTENDEE (``mappings.scheduling``).
A hash of the bytes cannot tell, after a crash, whether such a server holds what was sent,
nor ``verify`` whether it holds what the source does. ``semantic_fingerprint`` gives two
objects the same fingerprint when they hold the same components with the same properties,
parameters and values, whatever:

- the folding of lines, their ends (CRLF or LF alone) and a leading byte-order mark;
- the order of the properties within a component and of the components within another;
- a CATEGORIES (or RESOURCES) of several values written as one line or as several, and the
  parts of a recurrence rule in another order;
- the case of property and parameter names, the order of parameters, and quotes around a
  parameter value that needs none;
- the parameters of scheduling (``SCHEDULED_PARAMETERS``), which the migration and the
  server add, and ``IGNORED_PROPERTIES``, which the server stamps as its own.

Values are compared as written (escapes included): a server that rewrites a value (a date
into another zone, say) gives another fingerprint, which is what ``verify`` must see. It reads
chunks and holds one digest per property, never a whole value: a 64 MiB attachment passes
through in bounded memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from mappings.scheduling import split_parameters

SCHEDULED_PARAMETERS = frozenset({b"SCHEDULE-AGENT", b"SCHEDULE-STATUS", b"SCHEDULE-FORCE-SEND"})
"""Parameters the migration adds (``mappings.scheduling``) or a scheduling server writes
back (RFC 6638, section 10.3 and 10.4)."""

IGNORED_PROPERTIES = frozenset({b"PRODID"})
"""Properties a server replaces with its own."""

LISTS = frozenset({b"CATEGORIES", b"RESOURCES"})
"""Properties whose value is a list a server may split into one line per value (RFC 5545,
sections 3.8.1.2 and 3.8.1.10)."""

RULES = frozenset({b"RRULE", b"EXRULE"})
"""Properties whose value is rule parts in no particular order (RFC 5545, section 3.3.10),
which a server may write in another (Cyrus puts BYDAY before BYMONTH)."""

HEAD_LIMIT = 64 << 10
"""The longest name and parameters of a line read before its colon; past it, the line is
taken as a value without parameters (no real property has such a head)."""

LIST_LIMIT = 64 << 10
"""The longest list value split into its items; a longer one counts as a single item."""

PREFIX = "ical:"
"""What a semantic fingerprint starts with, so it is never taken for a hash of bytes."""

BOM = b"\xef\xbb\xbf"


@dataclass
class _Component:
    name: bytes
    children: list[bytes] = field(default_factory=list)
    """The digest of each property and sub-component, in the order read."""

    def digest(self) -> bytes:
        return hashlib.sha256(b"BEGIN:" + self.name + b"\n"
                              + b"".join(sorted(self.children))).digest()


class _Line:
    """One logical line being read: its head (name and parameters) until the colon, then its
    value into a digest, or held when it is a list to split."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.in_value = False
        self.quoted = False
        self.value = hashlib.sha256()
        self.held: bytearray | None = None
        self.name = b""
        self.parameters: list[bytes] = []

    def feed(self, data: bytes) -> None:
        if not self.in_value:
            for index, byte in enumerate(data):
                if byte == 0x22:
                    self.quoted = not self.quoted
                elif byte == 0x3A and not self.quoted:
                    self.head += data[:index]
                    self._value_begins()
                    data = data[index + 1:]
                    break
            else:
                self.head += data
                if len(self.head) > HEAD_LIMIT:
                    held, self.head = bytes(self.head), bytearray()
                    self._value_begins()
                    self._value(held)
                return
        self._value(data)

    def _value_begins(self) -> None:
        self.in_value = True
        head = bytes(self.head)
        name = head.split(b";", 1)[0]
        # A byte-order mark can only come before the first line's name.
        self.name = name.removeprefix(BOM).strip().upper()
        self.parameters = sorted(
            parameter for parameter in map(_parameter, split_parameters(head[len(name):]))
            if parameter.split(b"=", 1)[0] not in SCHEDULED_PARAMETERS)
        if self.name in LISTS or self.name in RULES or self.name in (b"BEGIN", b"END"):
            self.held = bytearray()

    def _value(self, data: bytes) -> None:
        if self.held is not None:
            self.held += data
            if len(self.held) > LIST_LIMIT:
                self.value.update(self.held)
                self.held = None
        else:
            self.value.update(data)

    def digests(self) -> list[bytes]:
        """One digest for the line, or one per item of a list."""
        if not self.in_value:
            self._value_begins()
        head = b";".join([self.name, *self.parameters]) + b":"
        if self.held is not None and self.name in RULES:
            parts = sorted(part.upper() for part in bytes(self.held).split(b";"))
            return [hashlib.sha256(head + b";".join(parts)).digest()]
        if self.held is not None:
            items = _items(bytes(self.held))
            return [hashlib.sha256(head + item).digest() for item in items]
        return [hashlib.sha256(head).digest() + self.value.digest()]


def semantic_fingerprint(chunks: Iterable[bytes]) -> str:
    """The fingerprint of the calendar object or vCard read from ``chunks`` (see above)."""
    stack: list[_Component] = [_Component(b"")]
    line: _Line | None = None
    pending = b""  # a line break whose next byte decides: folded, or a new line

    def end_line() -> None:
        nonlocal line
        if line is None:
            return
        done, line = line, None
        if not done.in_value and not done.head.strip():
            return
        digests = done.digests()
        if done.name == b"BEGIN":
            stack.append(_Component(bytes(done.held or b"").strip().upper()))
        elif done.name == b"END" and len(stack) > 1:
            component = stack.pop()
            stack[-1].children.append(component.digest())
        elif done.name not in IGNORED_PROPERTIES:
            stack[-1].children.extend(digests)

    for chunk in chunks:
        data = pending + chunk
        pending = b""
        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            if newline < 0:
                piece, position = data[position:], len(data)
                if piece.endswith(b"\r"):
                    piece, pending = piece[:-1], b"\r"
                if piece:
                    line = line or _Line()
                    line.feed(piece)
                continue
            piece = data[position:newline].removesuffix(b"\r")
            if piece:
                line = line or _Line()
                line.feed(piece)
            if newline + 1 >= len(data):
                pending = b"\n"
                position = len(data)
                break
            position = newline + 1
            if data[position] in (0x20, 0x09):  # a folded line goes on
                position += 1
            else:
                end_line()
    end_line()
    while len(stack) > 1:  # components never ended still count
        component = stack.pop()
        stack[-1].children.append(component.digest())
    return PREFIX + hashlib.sha256(b"".join(sorted(stack[0].children))).hexdigest()


def _parameter(text: bytes) -> bytes:
    """``cn="Jean"`` as ``CN=Jean``: the name in capitals, quotes a value needs kept."""
    name, _, value = text.partition(b"=")
    if value.startswith(b'"') and value.endswith(b'"') and len(value) >= 2:
        inner = value[1:-1]
        if not any(c in inner for c in b",;:"):
            value = inner
    return name.strip().upper() + b"=" + value


def _items(text: bytes) -> list[bytes]:
    """A list value cut at its commas, an escaped one (``\\,``) kept inside its item."""
    items: list[bytes] = []
    escaped = False
    start = 0
    for index, byte in enumerate(text):
        if escaped:
            escaped = False
        elif byte == 0x5C:
            escaped = True
        elif byte == 0x2C:
            items.append(text[start:index])
            start = index + 1
    items.append(text[start:])
    return items
