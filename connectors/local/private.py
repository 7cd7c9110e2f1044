"""Create the folders and files of a local target so that only their owner can read them.

A Maildir or a documents folder holds whole mails, calendars and files of people: folders
are made ``0700`` and files ``0600`` whatever the process's umask. A file gets its mode from
the ``open`` that creates it, and ``fchmod`` on the same descriptor before a byte is written
(a umask may have taken bits from the owner too): it is never readable by others, not even
for an instant. Folders and files that exist already are left as they are: the person who
made them chose their modes (e.g. a group the mail server reads through).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

FOLDER_MODE = 0o700
FILE_MODE = 0o600
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def make_folders(path: Path) -> None:
    """Create ``path`` and whichever of its parents are missing, each ``0700``."""
    missing = []
    current = Path(path)
    while not current.is_dir() and current != current.parent:
        missing.append(current)
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, FOLDER_MODE)
        except FileExistsError:
            if folder.is_dir():
                continue  # made meanwhile by another writer of the same target
            raise
        # mkdir gave 0700 less the umask, never more than 0700: restoring the owner's bits
        # afterwards opens nothing to anyone else.
        os.chmod(folder, FOLDER_MODE)


def create_file(path: Path) -> BinaryIO:
    """A new file, ``0600`` from the start, open for writing. It must not exist (not even
    as a link): ``FileExistsError`` otherwise."""
    descriptor = os.open(path, _CREATE, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
        return os.fdopen(descriptor, "wb")
    except BaseException:
        os.close(descriptor)
        raise
