"""What a calendar object or a vCard says of itself that decides whether a server can keep
it as meant, read while its chunks go by: its UID, the time zones it names and those it
describes.

A CalDAV or CardDAV server refuses an object without a UID (RFC 4791 section 4.1, RFC 6352
section 5.1); one naming a time zone (``TZID=``) it does not describe in a VTIMEZONE is
kept by Cyrus and Radicale all the same, and its times are then read as the client guesses.
Only the start of each line is looked at, so a large attachment is never held.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator
from functools import cache

HEAD = 512
"""Bytes kept of a line (with its continuations): enough for a name and its parameters."""
_TZID_PARAMETER = re.compile(rb';TZID=(?:"([^"]*)"|([^;:]*))', re.IGNORECASE)


class ObjectFacts:
    """Reads the chunks it passes on (``__call__``); its attributes are known once they are
    all read."""

    def __init__(self) -> None:
        self.has_uid = False
        self.zones_named: set[str] = set()
        self.zones_described: set[str] = set()
        self._in_zone = False

    def __call__(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        line = bytearray()  # the start of the logical line being read
        partial = b""  # the end of the last chunk, up to its first line break not yet seen
        for chunk in chunks:
            yield chunk
            data = partial + chunk
            start = 0
            while (end := data.find(b"\n", start)) >= 0:
                physical = data[start:end].rstrip(b"\r")
                start = end + 1
                if physical[:1] in (b" ", b"\t"):
                    if len(line) < HEAD:
                        line += physical[1:HEAD]
                    continue
                self._line(bytes(line))
                line = bytearray(physical[:HEAD])
            partial = data[start:][:HEAD]
        if partial:
            if partial[:1] in (b" ", b"\t"):
                line += partial[1:]
            else:
                self._line(bytes(line))
                line = bytearray(partial)
        self._line(bytes(line))

    def unknown_zones(self) -> list[str]:
        """The zones named and not described that no zone database knows either."""
        return sorted(zone for zone in self.zones_named - self.zones_described
                      if not _known(zone))

    def undescribed_zones(self) -> list[str]:
        """The zones named, not described, that the zone database knows."""
        return sorted(zone for zone in self.zones_named - self.zones_described if _known(zone))

    def _line(self, line: bytes) -> None:
        upper = line[:16].upper()
        if upper.startswith(b"BEGIN:VTIMEZONE"):
            self._in_zone = True
        elif upper.startswith(b"END:VTIMEZONE"):
            self._in_zone = False
        elif upper.startswith((b"UID:", b"UID;")):
            self.has_uid = True
        elif self._in_zone and upper.startswith((b"TZID:", b"TZID;")):
            self.zones_described.add(_text(line.split(b":", 1)[1]))
        if not self._in_zone and b";" in line:
            head = line.split(b":", 1)[0] if b'"' not in line else line
            for quoted, plain in _TZID_PARAMETER.findall(head):
                self.zones_named.add(_text(quoted or plain))


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace").strip()


@cache
def _known(zone: str) -> bool:
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True
