"""A drive as a local export (the ``folder`` source's layout, ``<login>/files/<drive>/``) and
the batch that moves it into a WebDAV space: what the files tests share."""

from __future__ import annotations

import hashlib
from pathlib import Path

DRIVE = "Partage"


def export_drive(folder: Path, login: str, files: dict[str, bytes], drive: str = DRIVE
                 ) -> dict[str, str]:
    """Write ``files`` (by path inside the drive) under ``folder/export``; answer their
    SHA-256 by the same paths."""
    written = {}
    for path, content in files.items():
        target = folder / "export" / login / "files" / drive / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        written[path] = hashlib.sha256(content).hexdigest()
    return written


def export_to_webdav(folder: Path, login: str, url: str, target: str = "", run: str = "",
                     secret: str = "env:ALICE_TARGET") -> Path:
    """The batch (``folder/batch.toml``, its users table beside it) moving ``login``'s
    export into the WebDAV space at ``url``; ``target`` and ``run`` are lines added to the
    target's section and to ``[run]``."""
    (folder / "users.csv").write_text(
        f"source,target,source_secret,target_secret\n{login},{login},,{secret}\n",
        encoding="utf-8")
    path = folder / "batch.toml"
    path.write_text(f"""
name = "fichiers"
workloads = ["files"]
[source]
type = "folder"
path = "export"
[targets.files]
type = "webdav"
url = "{url}"
{target}
[run]
work_dir = "work"
{run}
""", encoding="utf-8")
    return path
