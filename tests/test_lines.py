"""Bare LF made CRLF, streaming, whatever the chunk boundaries."""

import io

import pytest

from connectors import lines
from connectors.base import Message, fingerprint_bytes


def message(raw: bytes) -> Message:
    return Message("1", fingerprint_bytes(raw), len(raw), frozenset(), None,
                   lambda: io.BytesIO(raw))


@pytest.mark.parametrize("raw", [
    b"Subject: a\nb\n\nbody\n", b"Subject: a\r\n\r\nmixed\nends\r\n", b"\n",
    b"a\r\r\nb\n",
])
@pytest.mark.parametrize("chunk", [1, 2, 3, 1 << 20])
def test_bare_lf_becomes_crlf_and_nothing_else_changes(monkeypatch, raw, chunk):
    monkeypatch.setattr(lines, "CHUNK", chunk)
    wanted = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    converted = lines.with_crlf(message(raw))
    assert converted is not None
    assert converted.open().read() == wanted
    assert converted.fingerprint == fingerprint_bytes(wanted)
    assert converted.size == len(wanted)


@pytest.mark.parametrize("raw", [b"Subject: a\r\n\r\nbody\r\n", b"", b"no newline", b"a\r"])
@pytest.mark.parametrize("chunk", [1, 2, 1 << 20])
def test_crlf_only_messages_are_left_as_they_are(monkeypatch, raw, chunk):
    monkeypatch.setattr(lines, "CHUNK", chunk)
    assert lines.with_crlf(message(raw)) is None
