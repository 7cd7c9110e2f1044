"""What each WebDAV file server is known to do, by name: the batch's ``profile``.

A profile holds facts, each found against the real server by a test named beside it.
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
- ``nextcloud``: files under ``remote.php/dav/files/<user>/`` (the batch's URL ends there:
  ``https://host/remote.php/dav/files/{login}/``). A PUT is written to a part file and
  takes its name once whole (admin manual, ``part_file_in_storage``), so files are PUT
  straight to their names; each write carries ``X-OC-Mtime``, which sets the file's
  modification time (the answer says ``X-OC-MTime: accepted``), and ``OC-Checksum:
  SHA256:<hex>``, which Nextcloud stores without checking it and gives back as
  ``oc:checksums`` (developer manual, "Special Headers"); no PROPPATCH is asked. Files
  larger than ``chunk_size`` go by chunked upload v2 (``connectors.webdav.chunked``): a PUT
  is capped at 512 MB by default (admin manual, "Uploading big files > 512MB"), chunks
  are not. Its names are Nextcloud's (``mappings.names.NEXTCLOUD``). Nextcloud cannot
  run here: the facts are checked against a test server that
  follows its documentation, ``tests/nextcloud.py``, which names the page of each.
- ``xwiki``: XWiki's WebDAV turns files into attachments of wiki pages; it is no file store,
  and a batch sending files there is refused before anything moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mappings.names import NEXTCLOUD, POSIX, NameRules

NEXTCLOUD_CHUNK = 10 << 20
"""The chunk size of Nextcloud's own clients, its ``max_chunk_size`` default (admin manual,
"Uploading big files > 512MB"), within the 5 MB to 5 GB the protocol allows."""


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
    oc_headers: bool = False
    """It takes ``X-OC-Mtime`` and ``OC-Checksum`` on a write (Nextcloud)."""
    chunk_size: int | None = None
    """Files larger than this go by Nextcloud's chunked upload, in chunks of this size;
    ``None``: every file in one PUT."""


PROFILES = {profile.name: profile for profile in (
    Profile("generic", sets_mtime=None),
    Profile("apache", sets_mtime=False, whole_puts=True),
    Profile("nextcloud", sets_mtime=False, whole_puts=True, oc_headers=True,
            chunk_size=NEXTCLOUD_CHUNK, names=NEXTCLOUD),
    Profile("xwiki", sets_mtime=False, file_store=False),
)}


def refusals(profile: Profile, workload: str) -> list[tuple[str, dict[str, Any]]]:
    """Why a batch writing ``workload`` into this server must not run."""
    if not profile.file_store:
        return [("webdav_not_a_file_store", {"profile": profile.name})]
    return []
