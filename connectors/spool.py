"""Spool a message body to memory or disk while hashing it, so bodies are streamed."""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable
from typing import IO, Self

MEMORY_LIMIT = 4 << 20
"""Bodies up to this size stay in memory; larger ones go to a temporary file."""


class Spool:
    """A body written once, then opened any number of times for reading.

    ``fingerprint`` and ``size`` are known once ``write`` calls are done and ``seal`` ran.
    """

    def __init__(self, memory_limit: int = MEMORY_LIMIT) -> None:
        # Open for the spool's whole life, closed by close(): no context manager fits.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=memory_limit)  # noqa: SIM115
        self._digest = hashlib.sha256()
        self.size = 0
        self.fingerprint = ""

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def seal(self) -> Spool:
        self.fingerprint = "sha256:" + self._digest.hexdigest()
        return self

    def open(self) -> IO[bytes]:
        """A fresh reader positioned at the start. Readers must not be used concurrently."""
        self._file.seek(0)
        return _Reader(self._file)

    def close(self) -> None:
        self._file.close()

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
