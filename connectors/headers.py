"""The few headers a source reports about a message (Message-ID, Subject, Date), read from
its first bytes only."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import parsedate_to_datetime
from typing import IO, Any

HEADER_LIMIT = 256 << 10
"""At most this many bytes are read to find a message's headers."""


class MessageHeaders:
    """The few headers a source reports about a message, read from its first bytes."""

    def __init__(self, head: bytes) -> None:
        end = _end_of_headers(head)
        parsed = BytesHeaderParser().parsebytes(head[:end])
        self.message_id = _header_text(parsed.get("Message-ID"))
        self.subject = _header_text(parsed.get("Subject"))
        self.date = _header_date(parsed.get("Date"))
        self.raw = parsed

    @classmethod
    def read(cls, stream: IO[bytes]) -> MessageHeaders:
        return cls(stream.read(HEADER_LIMIT))

    @classmethod
    def reader(cls, open_body: Callable[[], IO[bytes]]) -> Callable[[], MessageHeaders]:
        """What reads a message's headers when asked (``Message.read_headers``)."""
        def read() -> MessageHeaders:
            with open_body() as stream:
                return cls.read(stream)
        return read

    def known(self) -> Callable[[], MessageHeaders]:
        """These headers, for a message whose source read them anyway."""
        return lambda: self


def _end_of_headers(head: bytes) -> int:
    ends = [
        index + len(separator) // 2
        for separator in (b"\r\n\r\n", b"\n\n")
        if (index := head.find(separator)) >= 0
    ]
    return min(ends) if ends else len(head)


def _header_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        text = str(make_header(decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        text = str(value)
    # Folded headers keep their line breaks: one space each, as a mail client shows them.
    return " ".join(text.split())


def _header_date(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
