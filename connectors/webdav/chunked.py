"""Nextcloud's chunked upload (version 2): a large file sent in chunks to an upload folder,
then assembled at its name by one MOVE.

The protocol, from Nextcloud's developer manual ("Chunked file upload"): ``MKCOL
<uploads>/<folder>`` with ``Destination`` (the file's URL) makes the upload folder; ``PUT
<folder>/<n>``, ``n`` from 1 to 10000, sends a chunk of 5 MB to 5 GB (the last may be
smaller), with ``Destination`` and ``OC-Total-Length`` (the server refuses a chunk that
would not fit the quota, 507); ``MOVE <folder>/.file`` with ``Destination`` and
``OC-Total-Length`` assembles the chunks in the order of their names, and the server then
deletes the folder; ``DELETE <folder>/`` aborts. The uploads live at
``remote.php/dav/uploads/<user>/``, beside the files at ``remote.php/dav/files/<user>/``.

Until that MOVE nothing is at the file's name, and an upload folder is no file of the
space: a write cut short leaves no partial file, and nothing an inventory counts. A folder
left behind by a killed process is named after its target (``bascule-<digest>``), so the
next write of the same name deletes it before it starts again; Nextcloud deletes any other
after 24 hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import IO

from connectors.base import ConnectError, Document, ItemRejected, VersionConflict
from connectors.dav.client import DavClient, DavRefused, Response

MB = 1 << 20
SMALLEST_CHUNK = 5 * MB
"""The documentation's "5MB", read as 5 MiB: S3's smallest multipart part, which the rule
is there for; a chunk of 5 MiB is 5 MB whichever way the manual counts."""
LARGEST_CHUNK = 5 << 30
MOST_CHUNKS = 10_000
BLOCK = 1 << 20
FILES = "/dav/files/"
UPLOADS = "/dav/uploads/"


class Hashing:
    """A body sent as it is iterated over: ``length`` bytes at most, in blocks of
    ``BLOCK``, hashed on the way. An iterable rather than a file: http.client reads a file
    8 KiB at a time (urllib3 16 KiB), and each block costs Python a read, a hash update and
    a send: 150,000 of them for a GB, where blocks of a MiB make a thousand."""

    def __init__(self, body: IO[bytes], digest: hashlib._Hash, length: int) -> None:
        self._body = body
        self._digest = digest
        self._length = length
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.sent < self._length:
            chunk = self._body.read(min(BLOCK, self._length - self.sent))
            if not chunk:
                return
            self._digest.update(chunk)
            self.sent += len(chunk)
            yield chunk

    def __len__(self) -> int:
        return self._length


def uploads_path(root: str) -> str | None:
    """The user's upload collection for a space under ``remote.php/dav/files/<user>/``
    (``/remote.php/dav/uploads/<user>/``), or ``None`` for a path that is not one."""
    prefix, found, rest = root.partition(FILES)
    user = rest.split("/", 1)[0]
    return f"{prefix}{UPLOADS}{user}/" if found and user else None


def chunk_sizes(size: int, chunk: int) -> Iterator[int]:
    """The chunks a file of ``size`` bytes is sent in: ``chunk`` bytes each, the last
    smaller, grown to stay within 10,000 chunks; ``ItemRejected`` (``too_big``) for a file
    that 10,000 chunks of 5 GB cannot hold."""
    chunk = max(chunk, -(-size // MOST_CHUNKS))
    if chunk > LARGEST_CHUNK:
        raise ItemRejected(f"{size} bytes: more than 10,000 chunks of 5 GB", code="too_big")
    while size > 0:
        yield min(chunk, size)
        size -= chunk


def upload(client: DavClient, uploads: str, place: str, document: Document, chunk: int,
           headers: dict[str, str], condition: dict[str, str], target_ref: str
           ) -> Mapping[str, str]:
    """Send the document in chunks through an upload folder under ``uploads`` and assemble
    it at ``place`` with ``headers`` (``X-OC-Mtime``, ``OC-Checksum``) and ``condition``
    (``Overwrite: F`` for a create-only write, ``If`` with the ETag expected for a replace:
    the MOVE's own, RFC 4918, which SabreDAV, Nextcloud's DAV layer, honours). The content
    is hashed as it is read and the assembly is asked only if it hashes to the document's
    fingerprint (``ItemRejected``, ``invalid_message``, otherwise). Returns the MOVE's
    answer's headers. On any failure the upload folder is deleted."""
    folder = f"{uploads}bascule-{hashlib.sha256(target_ref.encode()).hexdigest()[:24]}/"
    destination = {"Destination": client.url(place),
                   "OC-Total-Length": str(document.size)}
    _make(client, folder, destination, document)
    try:
        digest = hashlib.sha256()
        sent = 0
        with document.open() as body:
            for number, length in enumerate(chunk_sizes(document.size, chunk), 1):
                stream = Hashing(body, digest, length)
                response = client.request(
                    "PUT", f"{folder}{number:05d}", body=stream,  # type: ignore[arg-type]
                    headers={"Content-Length": str(length),
                             "Content-Type": "application/octet-stream", **destination})
                with response:
                    refuse_unless("PUT", folder, response, document, (200, 201, 204))
                sent += stream.sent
                if stream.sent != length:
                    break
        check_whole(document, sent, digest)
        with client.request("MOVE", folder + ".file",
                            headers={**destination, **headers, **condition}) as response:
            if response.status_code == 412:
                raise VersionConflict(f"{target_ref}: changed on the target")
            refuse_unless("MOVE", folder, response, document, (201, 204))
            return response.headers
    except BaseException:
        _forget(client, folder)
        raise


def _make(client: DavClient, folder: str, destination: dict[str, str], document: Document
          ) -> None:
    """Make the upload folder; one of the same name, left by a write cut short, is deleted
    first."""
    for _ in range(2):
        with client.request("MKCOL", folder, headers=destination) as response:
            if response.status_code == 201:
                return
            if response.status_code != 405:
                refuse_unless("MKCOL", folder, response, document, ())
        _forget(client, folder)
    raise ItemRejected(f"{document.name}: MKCOL {folder}: the upload folder stays",
                       code="server_error")


def refuse_unless(method: str, path: str, response: Response, document: Document,
                  taken: tuple[int, ...]) -> None:
    """Nothing for an answer in ``taken``; else the item's refusal: ``too_big`` for 413,
    ``over_quota`` for 507 (Insufficient Storage: the space is full), ``server_error``."""
    if response.status_code in taken:
        return
    if response.status_code == 413:
        raise ItemRejected(f"{document.name}: 413 {response.reason}", code="too_big")
    if response.status_code == 507:
        raise ItemRejected(f"{document.name}: 507 {response.reason}", code="over_quota")
    raise ItemRejected(str(DavRefused(method, path, response)), code="server_error")


def check_whole(document: Document, sent: int, digest: hashlib._Hash) -> None:
    """Refuse what was sent unless it is the document whole, as it was fingerprinted: it
    changed while it was read (``invalid_message``)."""
    if sent != document.size or "sha256:" + digest.hexdigest() != document.fingerprint:
        raise ItemRejected(f"{document.name}: content changed while it was read",
                           code="invalid_message")


def _forget(client: DavClient, folder: str) -> None:
    """Abort an upload; one the server could not be told of expires there in 24 hours."""
    try:
        client.request("DELETE", folder).close()
    except ConnectError:
        pass
