"""Read a folder tree of ``.eml`` files, one message per file, as a mail source.

Each directory is a container; the root is the INBOX. There are no flags in an ``.eml``
file; the internal date is the Date header, or the file's mtime when the header is missing
or unreadable. source_id = the path of the file relative to the root, ``/``-separated.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.base import (
    Container,
    ItemRef,
    Listing,
    Message,
    SourceCapabilities,
    fingerprint_of,
)
from connectors.headers import MessageHeaders


def mtime_of(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


class EmlSource:
    """A directory tree of ``.eml`` files (``*.eml``, any case)."""

    capabilities = SourceCapabilities(delta=True, flag_changes=False)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def containers(self) -> list[Container]:
        found = [Container(("INBOX",), "inbox", "")]
        for directory, subdirs, _files in os.walk(self.root):
            subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
            relative = Path(directory).relative_to(self.root)
            if relative.parts:
                found.append(Container(relative.parts, None, relative.as_posix()))
        return found

    def list_changes(self, container: Container, cursor: dict[str, Any] | None) -> Listing:
        files = self._files(container)
        state = hashlib.sha256()
        for path, stat in files:
            state.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        new_cursor = {"state": state.hexdigest()}
        if cursor == new_cursor:
            return Listing([], new_cursor, complete=False)
        refs = [
            ItemRef(self._source_id(path), stat.st_size, frozenset(),
                    datetime.fromtimestamp(stat.st_mtime, UTC))
            for path, stat in files
        ]
        return Listing(refs, new_cursor, complete=True)

    def fetch(self, container: Container, source_ids: Sequence[str]) -> Iterator[Message]:
        for source_id in source_ids:
            path = self._path(source_id)
            if path is None:
                continue
            try:
                with path.open("rb") as stream:
                    headers = MessageHeaders.read(stream)
                    stream.seek(0)
                    fingerprint, size = fingerprint_of(stream)
                internal_date = headers.date or mtime_of(path)
            except FileNotFoundError:
                continue
            yield Message(
                source_id=source_id,
                fingerprint=fingerprint,
                size=size,
                flags=frozenset(),
                internal_date=internal_date,
                open=lambda path=path: path.open("rb"),
                message_id=headers.message_id,
                subject=headers.subject,
            )

    def close(self) -> None:
        pass

    def _files(self, container: Container) -> list[tuple[Path, os.stat_result]]:
        directory = self.root if container.path == ("INBOX",) else self.root.joinpath(
            *container.path)
        if not directory.is_dir():
            return []
        found = []
        for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
            if entry.name.lower().endswith(".eml") and entry.is_file():
                found.append((Path(entry.path), entry.stat()))
        return found

    def _source_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _path(self, source_id: str) -> Path | None:
        """The file a source_id names, or None if it would leave the root."""
        relative = Path(source_id)
        if relative.is_absolute() or ".." in relative.parts or "\0" in source_id:
            return None
        return self.root / relative
