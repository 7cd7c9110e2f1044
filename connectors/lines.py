"""Line endings: turn bare LF into CRLF for targets that store nothing else, streaming."""

from __future__ import annotations

from dataclasses import replace

from connectors.base import Message
from connectors.spool import Spool

CHUNK = 1 << 20


def has_bare_lf(message: Message) -> bool:
    """Whether some line of the body ends with LF alone. Reads the body once, in chunks."""
    previous = b""
    with message.open() as body:
        while chunk := body.read(CHUNK):
            if chunk.startswith(b"\n") and previous != b"\r":
                return True
            if chunk.count(b"\n") != chunk.count(b"\r\n") + chunk.startswith(b"\n"):
                return True
            previous = chunk[-1:]
    return False


def with_crlf(message: Message) -> Message | None:
    """The message with every bare LF made CRLF, spooled, with its new fingerprint and size;
    ``None`` when it has no bare LF (it goes as it is)."""
    if not has_bare_lf(message):
        return None
    spool = Spool()
    previous = b""
    with message.open() as body:
        while chunk := body.read(CHUNK):
            converted = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            if previous == b"\r" and chunk.startswith(b"\n"):
                converted = converted[1:]
            spool.write(converted)
            previous = chunk[-1:]
    spool.seal()
    return replace(message, fingerprint=spool.fingerprint, size=spool.size, open=spool.open)
