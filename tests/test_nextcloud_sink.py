"""The WebDAV sink with the ``nextcloud`` profile against the Nextcloud test server
(tests/nextcloud.py): small files PUT with ``X-OC-Mtime`` and ``OC-Checksum``, large ones
in chunks, each read back by plain HTTP; a chunked write cut short, or conditioned on a
version that is not there, leaves nothing; a batch pointing elsewhere than a user's files is
refused."""

from __future__ import annotations

import hashlib
import io
import os
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
import requests

from connectors.base import CREATE_ONLY, ConnectError, Document, ItemRejected, VersionConflict
from connectors.dav.client import DavClient
from connectors.webdav.sink import WebDavSink
from tests.cli import bascule
from tests.exports import export_to_webdav
from tests.nextcloud import MIB, Nextcloud, start_nextcloud

MODIFIED = datetime(2023, 5, 4, 3, 2, 1, tzinfo=UTC)
CHUNK = 5 * MIB


@pytest.fixture
def nextcloud(tmp_path: Path):
    server = start_nextcloud(tmp_path / "nextcloud", {"u": "p"}, put_cap=8 * MIB)
    yield server
    server.stop()


def sink_for(server: Nextcloud) -> WebDavSink:
    client = DavClient(server.space_url().replace("{login}", "u"), "u", "p", ca_file=None,
                       timeout=30)
    return WebDavSink(client, sets_mtime=False, whole_puts=True, oc_headers=True,
                      chunk_size=CHUNK)


def document(name: str, content: bytes, opener=None) -> Document:
    return Document(name, "v1", name, ("Dossier",),
                    "sha256:" + hashlib.sha256(content).hexdigest(), len(content), MODIFIED,
                    opener or (lambda: io.BytesIO(content)))


def read_back(server: Nextcloud, target_ref: str) -> tuple[str, str]:
    """The file's SHA-256 and its ``oc:checksums``, by plain HTTP."""
    url = f"{server.base_url}/remote.php/dav/files/u/{target_ref}"
    got = requests.get(url, auth=("u", "p"), timeout=30)
    assert got.status_code == 200
    found = requests.request("PROPFIND", url, auth=("u", "p"), timeout=30, headers={
        "Depth": "0"}, data='<?xml version="1.0"?><d:propfind xmlns:d="DAV:" '
        'xmlns:oc="http://owncloud.org/ns"><d:prop><oc:checksums/></d:prop></d:propfind>')
    return hashlib.sha256(got.content).hexdigest(), found.text


def test_small_and_chunked_files_land_whole_with_mtime_and_checksum(nextcloud) -> None:
    """A file of 100 bytes by one PUT; one of 17 MiB, which the server's 8 MiB cap would
    refuse in one PUT, in 4 chunks of 5 MiB; both with their modification time, their
    SHA-256 given back as ``oc:checksums``, no upload folder left."""
    sink = sink_for(nextcloud)
    native = sink.ensure_container(("Partage",))
    for name, content in (("petit.txt", b"x" * 100),
                          ("grand.bin", random.Random(3).randbytes(17 * MIB))):
        stored = sink.put(native, document(name, content))
        digest, checksums = read_back(nextcloud, stored.target_ref)
        assert digest == hashlib.sha256(content).hexdigest()
        assert f"SHA256:{digest}" in checksums
        assert (nextcloud.space("u") / stored.target_ref).stat().st_mtime == \
            MODIFIED.timestamp()
        found = sink.find(native, document(name, content))
        assert found is not None and found.version == stored.version
    assert sink.drain_notes() == []
    assert list(nextcloud.uploads("u").iterdir()) == []
    assert sorted(item.target_ref for item in sink.inventory(native)) == [
        "Partage/Dossier/grand.bin", "Partage/Dossier/petit.txt"]
    sink.close()


class Breaking(io.RawIOBase):
    """A source stream that fails after ``limit`` bytes."""

    def __init__(self, content: bytes, limit: int) -> None:
        self._body = io.BytesIO(content)
        self._limit = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self._body.tell() >= self._limit:
            raise OSError("source connection lost")
        data = self._body.read(min(len(buffer), self._limit - self._body.tell()))
        buffer[:len(data)] = data
        return len(data)


def test_a_chunked_write_cut_short_leaves_nothing_then_lands(nextcloud) -> None:
    """The source breaks in the third chunk: no file at the name, the upload folder
    deleted; written again, the file is there once, whole."""
    sink = sink_for(nextcloud)
    native = sink.ensure_container(("Partage",))
    content = os.urandom(16 * MIB)

    def breaking() -> IO[bytes]:
        return io.BufferedReader(Breaking(content, 12 * MIB))

    with pytest.raises(ConnectError):
        sink.put(native, document("coupé.bin", content, breaking))
    assert not (nextcloud.space("u") / "Partage" / "Dossier" / "coupé.bin").exists()
    assert list(nextcloud.uploads("u").iterdir()) == []
    stored = sink.put(native, document("coupé.bin", content), CREATE_ONLY)
    assert read_back(nextcloud, stored.target_ref)[0] == hashlib.sha256(content).hexdigest()
    assert [p.name for p in (nextcloud.space("u") / "Partage" / "Dossier").iterdir()] == [
        "coupé.bin"]
    sink.close()


def test_a_chunked_write_keeps_its_condition(nextcloud) -> None:
    """Create-only over a file there, or a replace of a version that is not there: refused
    before the assembly, the file as it was; the version that is there: replaced."""
    sink = sink_for(nextcloud)
    native = sink.ensure_container(("Partage",))
    first, second = os.urandom(6 * MIB), os.urandom(7 * MIB)
    stored = sink.put(native, document("f.bin", first))
    with pytest.raises(VersionConflict) as conflict:
        sink.put(native, document("f.bin", second), CREATE_ONLY)
    assert conflict.value.current is not None
    assert conflict.value.current.version == stored.version
    with pytest.raises(VersionConflict):
        sink.put(native, document("f.bin", second), '"not-the-etag"')
    path = nextcloud.space("u") / stored.target_ref
    assert path.read_bytes() == first
    replaced = sink.put(native, document("f.bin", second), stored.version)
    assert path.read_bytes() == second and replaced.version != stored.version
    assert list(nextcloud.uploads("u").iterdir()) == []
    sink.close()


def test_content_that_changed_while_read_is_not_assembled(nextcloud) -> None:
    sink = sink_for(nextcloud)
    native = sink.ensure_container(("Partage",))
    announced = document("f.bin", os.urandom(6 * MIB))
    changed = Document(**{**announced.__dict__, "open": lambda: io.BytesIO(os.urandom(6 * MIB))})
    with pytest.raises(ItemRejected) as refused:
        sink.put(native, changed)
    assert refused.value.code == "invalid_message"
    assert not (nextcloud.space("u") / "Partage" / "Dossier" / "f.bin").exists()
    assert list(nextcloud.uploads("u").iterdir()) == []
    sink.close()


def test_a_nextcloud_batch_must_name_a_users_files(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    batch = export_to_webdav(tmp_path, "alice", "https://cloud.ville.example/dav/{login}/",
                             'profile = "nextcloud"', secret="env:X")
    code, output = bascule("plan", str(batch))
    assert code == 2, output
    assert "/remote.php/dav/files/" in output, output
