"""One command at a time on a ledger: an exclusive lock on the batch's work folder.

``run``, ``plan`` and ``verify`` take it before reading anything; a second one on the same
work folder is refused at once, naming the holder. The lock is an OS file lock (``flock``):
the kernel releases it when its process dies, however it dies, so a lock is never left
behind by a crash. What the lock file still says after such a death (host, PID, start time)
is how the next command knows the previous one did not end cleanly, and says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = "bascule.lock"


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) the lock."""

    host: str
    pid: int
    started_at: str
    command: str


class WorkFolderBusy(Exception):
    """Another command holds the work folder's lock."""

    def __init__(self, folder: Path, holder: Holder | None) -> None:
        super().__init__(f"{folder} is locked by {holder}")
        self.folder = folder
        self.holder = holder


class WorkFolderLock:
    """The lock of one work folder, held by this process from ``acquire`` to ``release``."""

    def __init__(self, folder: Path, command: str) -> None:
        self.folder = folder
        self.command = command
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self.folder / LOCK_NAME

    def acquire(self) -> Holder | None:
        """Take the lock, or raise ``WorkFolderBusy``. Answers the previous holder when it
        died holding the lock (its record is still there), else ``None``."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkFolderBusy(self.folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read(fd)
        me = Holder(socket.gethostname(), os.getpid(), datetime.now(UTC).isoformat(),
                    self.command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return previous

    def release(self) -> None:
        """Clear the record and let go. Safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


def current_holder(folder: Path) -> Holder | None:
    """Who holds the folder's lock now, without waiting; ``None`` when nobody does (a record
    left by a process that died does not count)."""
    try:
        fd = os.open(folder / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or Holder("?", 0, "", "?")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    raw = os.pread(fd, 4096, 0)
    if not raw:
        return None
    try:
        return Holder(**json.loads(raw))
    except (ValueError, TypeError):
        return None
