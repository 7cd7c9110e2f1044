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
- a CATEGORIES (or RESOURCES, RDATE, EXDATE, NICKNAME) of several values written as one line
  or as several, the parts of a recurrence rule in another order, and its ``WKST=MO``, the
  default, written or not;
- the case of property and parameter names, the order of parameters, a parameter of several
  values written once (``TYPE=WORK,VOICE``), once per value (``TYPE=WORK;TYPE=VOICE``) or
  quoted (``FEATURE="AUDIO,VIDEO"``), and quotes around a parameter value that needs none;
- a ``;`` escaped or not in a text value (``STRUCTURED`` values excepted);
- the notes a time zone's definition carries for people (``ZONE_NOTES``: Cyrus drops its
  COMMENT);
- the parameters of scheduling (``SCHEDULED_PARAMETERS``), which the migration and the
  server add, and ``IGNORED_PROPERTIES``, which the server stamps as its own.

Values are compared as written (escapes included): a server that rewrites a value (a date
into another zone, say) gives another fingerprint, which is what ``verify`` must see. It reads
chunks and holds one digest per property, never a whole value: a 64 MiB attachment passes
through in bounded memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mappings.scheduling import split_parameters

SCHEDULED_PARAMETERS = frozenset({b"SCHEDULE-AGENT", b"SCHEDULE-STATUS", b"SCHEDULE-FORCE-SEND"})
"""Parameters the migration adds (``mappings.scheduling``) or a scheduling server writes
back (RFC 6638, section 10.3 and 10.4)."""

IGNORED_PROPERTIES = frozenset({b"PRODID"})
"""Properties a server replaces with its own."""

LISTS = frozenset({b"CATEGORIES", b"RESOURCES", b"RDATE", b"EXDATE", b"NICKNAME"})
"""Properties whose value is a list a server may split into one line per value (RFC 5545,
sections 3.8.1.2, 3.8.1.10, 3.8.5.1 and 3.8.5.2; RFC 6350, section 6.2.3)."""

ZONE_NOTES = frozenset({b"COMMENT", b"TZURL", b"LAST-MODIFIED"})
"""Properties of a time zone's definition (VTIMEZONE and its parts) that say nothing of its
rules, which a server may drop or stamp."""

LIST_PARAMETERS = frozenset({b"FEATURE", b"TYPE"})
"""Parameters whose value is a list, which a server may write quoted as one value
(``FEATURE="AUDIO,VIDEO"``: Cyrus) where it was given bare (``FEATURE=AUDIO,VIDEO``)."""

STRUCTURED = frozenset({b"N", b"ADR", b"ORG", b"GEO", b"REQUEST-STATUS", b"GENDER",
                        b"CLIENTPIDMAP"})
"""Properties whose value is made of parts a ``;`` separates (RFC 5545, section 3.8.1.6 and
3.8.8.3; RFC 6350): there an escaped ``\\;`` and a bare one differ. Elsewhere a value is
text, whose ``;`` is escaped by one writer (vobject, in Radicale) and not by another (icalendar
writes an X-ALT-DESC's HTML as it is): both mean the same."""

DEFAULT_RULE_PARTS = frozenset({b"WKST=MO"})
"""Rule parts that say what their absence says (RFC 5545, section 3.3.10)."""

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
        self.backslash = False
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
            parameter for text in split_parameters(head[len(name):])
            for parameter in _parameters(text)
            if parameter.split(b"=", 1)[0] not in SCHEDULED_PARAMETERS)
        if self.name in LISTS or self.name in RULES or self.name in (b"BEGIN", b"END"):
            self.held = bytearray()

    def _value(self, data: bytes) -> None:
        if self.held is not None:
            self.held += data
            if len(self.held) > LIST_LIMIT:
                self.value.update(self.held)
                self.held = None
        elif self.name in STRUCTURED:
            self.value.update(data)
        else:
            if self.backslash:
                data = b"\\" + data
            self.backslash = data.endswith(b"\\")  # what it escapes comes with the next piece
            self.value.update(_semicolons(data[:-1] if self.backslash else data))

    def digests(self) -> list[bytes]:
        """One digest for the line, or one per item of a list."""
        if not self.in_value:
            self._value_begins()
        head = b";".join([self.name, *self.parameters]) + b":"
        if self.held is not None and self.name in RULES:
            parts = sorted(part.upper() for part in bytes(self.held).split(b";")
                           if part.upper() not in DEFAULT_RULE_PARTS)
            return [hashlib.sha256(head + b";".join(parts)).digest()]
        if self.held is not None:
            items = _commas(bytes(self.held), quotes=False)
            return [hashlib.sha256(head + _semicolons(item)).digest() for item in items]
        if self.backslash:
            self.value.update(b"\\")
        return [hashlib.sha256(head).digest() + self.value.digest()]


def semantic_fingerprint(chunks: Iterable[bytes]) -> str:
    """The fingerprint of the calendar object or vCard read from ``chunks`` (see above)."""
    stack: list[_Component] = [_Component(b"")]
    line: _Line | None = None
    pending = b""  # a carriage return whose next byte decides: a line end, or a value's

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
        elif done.name not in IGNORED_PROPERTIES and not (
                done.name in ZONE_NOTES and any(c.name == b"VTIMEZONE" for c in stack)):
            stack[-1].children.extend(digests)

    for chunk in _unfolded_stream(chunks):
        data = pending + chunk
        pending = b""
        position = 0
        while True:
            newline = data.find(b"\n", position)
            piece = data[position:] if newline < 0 else data[position:newline]
            if newline < 0 and piece.endswith(b"\r"):
                piece, pending = piece[:-1], b"\r"  # a line end, if a line feed follows
            elif newline >= 0:
                piece = piece.removesuffix(b"\r")
            if piece:
                line = line or _Line()
                line.feed(piece)
            if newline < 0:
                break
            end_line()
            position = newline + 1
    end_line()
    while len(stack) > 1:  # components never ended still count
        component = stack.pop()
        stack[-1].children.append(component.digest())
    return PREFIX + hashlib.sha256(b"".join(sorted(stack[0].children))).hexdigest()


def _semicolons(text: bytes) -> bytes:
    return text.replace(b"\\;", b";")


def _unfolded_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The chunks with every fold (a line break, then a space or a tab) taken out, across
    chunk boundaries: a line break at a chunk's end waits for the next chunk's first byte.
    Unfolding comes before lines are told apart (RFC 5545, section 3.1): Cyrus writes a
    long URL as ``...0\\r\\r\\n \\n``, which unfolds to ``...0`` and a line end."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = len(data)
        while cut > 0 and len(data) - cut < 2 and data[cut - 1] in b"\r\n":
            cut -= 1
        carry = data[cut:]
        if cut:
            yield _unfolded(data[:cut])
    if carry:
        yield carry


def _unfolded(text: bytes) -> bytes:
    """Lines joined where they were folded (a line break, then a space or a tab)."""
    for fold in (b"\r\n ", b"\r\n\t", b"\n ", b"\n\t"):
        text = text.replace(fold, b"")
    return text


def _parameters(text: bytes) -> list[bytes]:
    """``type=work,"voice"`` as ``TYPE=WORK`` and ``TYPE=voice``: one per value, the name in
    capitals, quotes a value needs kept."""
    name, _, values = text.partition(b"=")
    name = name.strip().upper()
    found = []
    for value in _commas(values, quotes=True):
        quoted = value.startswith(b'"') and value.endswith(b'"') and len(value) >= 2
        if quoted and name in LIST_PARAMETERS:
            found += [name + b"=" + item for item in value[1:-1].split(b",")]
            continue
        if quoted and not any(c in value[1:-1] for c in b",;:"):
            value = value[1:-1]
        found.append(name + b"=" + value)
    return found


def _commas(text: bytes, *, quotes: bool) -> list[bytes]:
    """``text`` cut at its commas: those outside double quotes for a parameter's values
    (RFC 5545, section 3.2), those no backslash escapes (``\\,``) for a list value."""
    parts: list[bytes] = []
    inside = escaped = False
    start = 0
    for index, byte in enumerate(text):
        if escaped:
            escaped = False
        elif quotes and byte == 0x22:
            inside = not inside
        elif not quotes and byte == 0x5C:
            escaped = True
        elif byte == 0x2C and not inside:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts
