"""What each WebDAV file server is known to do, by name: the batch's ``profile``.

A profile holds facts, each found against the real server by a test named beside it:

Each keeps its files on a Linux file system unless said otherwise: ``/`` and NUL are the
only characters refused, and a name takes 255 bytes (``mappings.names.POSIX``; the batch's
``names`` names other rules, e.g. ``windows`` for a space Windows clients sync).

- ``generic``: a server bascule knows nothing of. A file's modification time is asked for
  once per drive (a PROPPATCH of ``getlastmodified``, which RFC 4918 makes a protected
  property: most servers refuse it); refused, the drive's report says so once.
- ``apache`` (``mod_dav_fs``): ``getlastmodified`` is read-only (PROPPATCH answers 409,
  tests/test_webdav_sink.py), so it is not asked; it honours an ETag in the ``If`` header of
  a PUT, MOVE or DELETE, and gives a file written less than a second ago a weak ETag; a PUT
  cut short leaves nothing (it writes to a file of its own and renames it once whole), so
  files are PUT straight to their names. WsgiDAV leaves half the file there.
- ``xwiki``: XWiki's WebDAV turns files into attachments of wiki pages; it is no file store,
  and a batch sending files there is refused before anything moves.

Nextcloud's chunked uploads and its ``X-OC-Mtime`` header make no profile yet: no server
here shows them (issue 12).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mappings.names import POSIX, NameRules


@dataclass(frozen=True)
class Profile:
    name: str
    sets_mtime: bool | None
    """Whether a PROPPATCH of ``getlastmodified`` sets a file's modification time: known
    (``True``, ``False``: not asked), or to be asked once per drive (``None``)."""
    file_store: bool = True
    """It keeps files as files; ``False``: the batch is refused."""
    whole_puts: bool = False
    """It stores a PUT under its name only once it has it whole (a PUT cut short leaves
    nothing), so files are PUT straight to their names, without a temporary name."""
    names: NameRules = POSIX
    """The names it takes (``mappings.names``), unless the batch says otherwise."""


PROFILES = {profile.name: profile for profile in (
    Profile("generic", sets_mtime=None),
    Profile("apache", sets_mtime=False, whole_puts=True),
    Profile("xwiki", sets_mtime=False, file_store=False),
)}


def refusals(profile: Profile, workload: str) -> list[tuple[str, dict[str, Any]]]:
    """Why a batch writing ``workload`` into this server must not run."""
    if not profile.file_store:
        return [("webdav_not_a_file_store", {"profile": profile.name})]
    return []
