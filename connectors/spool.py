"""Spool a message body to memory or disk while hashing it, so bodies are streamed."""

from __future__ import annotations

import hashlib
import io
import tempfile
from collections.abc import Iterable
from typing import IO, Self

MEMORY_LIMIT = 4 << 20
"""Bodies up to this size stay in memory; larger ones go to a temporary file."""


class Spool:
    """A body written once, then opened any number of times for reading.

    ``fingerprint`` and ``size`` are known once ``write`` calls are done and ``seal`` ran.
    A body written in one chunk no bigger than the memory limit is kept as that chunk, not
    copied into a spooled file: most messages come whole from a FETCH answer, and the file's
    setup, copy and teardown cost more than their hash.
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT) -> None:
        self._memory_limit = memory_limit
        self._body = b""
        self._file: IO[bytes] | None = None
        self._digest = hashlib.sha256()
        self.size = 0
        self.fingerprint = ""

    def write(self, chunk: bytes) -> None:
        if self._file is None and not self.size and len(chunk) <= self._memory_limit:
            self._body = chunk
        else:
            if self._file is None:
                # Open for the spool's whole life, closed by close(): no context manager fits.
                self._file = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                    max_size=self._memory_limit)
                self._file.write(self._body)
                self._body = b""
            self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def seal(self) -> Spool:
        self.fingerprint = "sha256:" + self._digest.hexdigest()
        return self

    def open(self) -> IO[bytes]:
        """A fresh reader positioned at the start. Readers must not be used concurrently."""
        if self._file is None:
            return io.BytesIO(self._body)
        self._file.seek(0)
        return _Reader(self._file)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._body = b""

    @classmethod
    def from_chunks(cls, chunks: Iterable[bytes], memory_limit: int = MEMORY_LIMIT) -> Spool:
        spool = cls(memory_limit)
        for chunk in chunks:
            spool.write(chunk)
        return spool.seal()


class _Reader:
    """A read-only view on a spool that leaves the spool open when closed."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
