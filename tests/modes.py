"""Permission bits of what a target wrote, under a umask chosen by the test."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """Run the block under ``mask`` (``0``: every file would be world-readable by default)."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, tuple[str, int]]:
    """``relative path -> (kind, permission bits)`` of ``root`` and everything below it,
    links not followed; the root itself is ``"."``."""
    found = {}
    for directory, folders, files in os.walk(root):
        for name in [".", *folders, *files]:
            path = Path(directory) / name
            status = path.lstat()
            kind = "folder" if stat.S_ISDIR(status.st_mode) else (
                "link" if stat.S_ISLNK(status.st_mode) else "file")
            relative = path.relative_to(root).as_posix()
            found[relative] = (kind, stat.S_IMODE(status.st_mode))
    return found


def not_private(root: Path) -> dict[str, tuple[str, str]]:
    """The entries of ``modes(root)`` that are not ``0700`` folders or ``0600`` files, with
    their bits in octal: a private tree gives ``{}``."""
    wanted = {"folder": 0o700, "file": 0o600}
    return {path: (kind, oct(bits)) for path, (kind, bits) in modes(root).items()
            if wanted.get(kind) != bits}
