"""Facts of the WebDAV servers the sink relies on, or guards against, found on the real
servers; the sink's contract itself is the conformance suite's (tests/conformance)."""

from __future__ import annotations

import base64
import re
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.apache import start_apache
from tests.wsgidav import start_wsgidav


def test_wsgidav_ignores_an_etag_in_the_if_header_of_a_move(tmp_path: Path) -> None:
    """Why the sink reads the destination's ETag itself before a MOVE over it: WsgiDAV
    overwrites a file whose ETag the ``If`` header gets wrong (RFC 4918 10.4 says 412); it
    keeps ``Overwrite: F``, and lists its ETags unquoted."""
    server = start_wsgidav(tmp_path / "wsgidav", {"u": "p"})
    space, auth = f"{server.base_url}/u/", ("u", "p")
    try:
        for name, body in (("x.txt", b"one"), (".t", b"two")):
            answer = requests.put(space + name, data=body, auth=auth, timeout=30)
            assert answer.status_code == 201
        answer = requests.request("PROPFIND", space + "x.txt", auth=auth, timeout=30,
                                  headers={"Depth": "0"})
        etag = re.search(r"getetag>([^<]*)<", answer.text).group(1)  # type: ignore[union-attr]
        assert not etag.startswith('"')

        refused = requests.request("MOVE", space + ".t", auth=auth, timeout=30, headers={
            "Destination": space + "x.txt", "Overwrite": "F"})
        assert refused.status_code == 412
        assert (server.space("u") / "x.txt").read_bytes() == b"one"

        ignored = requests.request("MOVE", space + ".t", auth=auth, timeout=30, headers={
            "Destination": space + "x.txt", "Overwrite": "T",
            "If": f'<{space}x.txt> (["not-{etag}"])'})
        assert ignored.status_code in (200, 201, 204)
        assert (server.space("u") / "x.txt").read_bytes() == b"two"
    finally:
        server.stop()


SET_MTIME = (b'<?xml version="1.0" encoding="utf-8"?><D:propertyupdate xmlns:D="DAV:"><D:set>'
             b"<D:prop><D:getlastmodified>Mon, 06 May 2019 07:08:09 GMT</D:getlastmodified>"
             b"</D:prop></D:set></D:propertyupdate>")


def test_apache_keeps_getlastmodified_read_only_and_honours_an_etag_in_if(tmp_path: Path
                                                                          ) -> None:
    """The ``apache`` profile's facts: a PROPPATCH of ``getlastmodified`` answers 409 for
    the property (so the sink does not ask); a MOVE whose ``If`` names another ETag is
    refused (412); a file just written has a weak ETag."""
    server = start_apache(tmp_path / "apache", {"u": "p"})
    space, auth = f"{server.base_url}/dav/u/", ("u", "p")
    try:
        for name, body in (("x.txt", b"one"), (".t", b"two")):
            answer = requests.put(space + name, data=body, auth=auth, timeout=30)
            assert answer.status_code == 201
        answer = requests.request("PROPPATCH", space + "x.txt", data=SET_MTIME, auth=auth,
                                  timeout=30, headers={"Content-Type": "application/xml"})
        assert answer.status_code == 207 and "HTTP/1.1 409" in answer.text, answer.text
        answer = requests.request("PROPFIND", space + "x.txt", auth=auth, timeout=30,
                                  headers={"Depth": "0"})
        etag = re.search(r"getetag>([^<]*)<", answer.text).group(1)  # type: ignore[union-attr]
        assert etag.startswith('W/"')
        refused = requests.request("MOVE", space + ".t", auth=auth, timeout=30, headers={
            "Destination": space + "x.txt", "Overwrite": "T",
            "If": f'<{space}x.txt> (["not-{etag[3:]}])'})
        assert refused.status_code == 412
        assert (server.space("u") / "x.txt").read_bytes() == b"one"
    finally:
        server.stop()


def cut_put(host: str, port: int, path: str) -> None:
    """A PUT announcing 1,000,000 bytes whose connection closes after 500,000."""
    with socket.create_connection((host, port)) as connection:
        login = base64.b64encode(b"u:p").decode()
        connection.sendall(f"PUT {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Basic "
                           f"{login}\r\nContent-Length: 1000000\r\n\r\n".encode()
                           + b"A" * 500_000)
        time.sleep(0.5)


def test_a_put_cut_short_leaves_half_a_file_on_wsgidav_and_nothing_on_apache(tmp_path: Path
                                                                             ) -> None:
    """Why the sink writes to a temporary name and MOVEs it: WsgiDAV writes a PUT straight
    into its file, and a cut one leaves half of it under the name; Apache writes to a file of
    its own and renames it only once whole."""
    for start, path in ((start_wsgidav, "/u/cut.bin"), (start_apache, "/dav/u/cut.bin")):
        server = start(tmp_path / start.__name__, {"u": "p"})
        try:
            cut_put(server.host, server.port, path)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and start is start_wsgidav and not list(
                    server.space("u").iterdir()):
                time.sleep(0.05)
            time.sleep(0.5)
            left = {p.name: p.stat().st_size for p in server.space("u").iterdir()}
        finally:
            server.stop()
        assert left == ({"cut.bin": 500_000} if start is start_wsgidav else {}), (start, left)


@pytest.mark.parametrize("kind", ["wsgidav", "apache"])
def test_a_path_of_300_characters_lands_found_and_listed(kind: str, tmp_path: Path) -> None:
    """Five accented folders of 55 characters and a long name: a 330-character path under
    the drive, written, found and listed as it is (no rule changes it: each segment fits)."""
    from connectors.base import Document
    from connectors.dav.client import DavClient
    from connectors.spool import Spool
    from connectors.webdav.sink import WebDavSink

    start = start_wsgidav if kind == "wsgidav" else start_apache
    server = start(tmp_path / kind, {"u": "p"})
    try:
        client = DavClient(server.space_url().replace("{login}", "u"), "u", "p", ca_file=None,
                           timeout=30)
        sink = WebDavSink(client, whole_puts=kind == "apache")
        folder = tuple(f"Dossier {n} – délibérations du conseil municipal d'été {n:03d}"
                       for n in range(5))
        name = "Procès-verbal de la séance extraordinaire du conseil.pdf"
        body = Spool.from_chunks([b"%PDF-1.4\n" + bytes(range(256)) * 40])
        document = Document("1", "v1", name, folder, body.fingerprint, body.size, None,
                            body.open)
        native = sink.ensure_container(("Partage",))
        stored = sink.put(native, document)
        assert len(stored.target_ref) > 330 and stored.renamed is None
        assert stored.target_ref == "/".join(("Partage", *folder, name))
        on_disk = server.space("u").joinpath(*stored.target_ref.split("/"))
        assert on_disk.read_bytes() == b"%PDF-1.4\n" + bytes(range(256)) * 40
        found = sink.find(native, document)
        assert found is not None and found.fingerprint == body.fingerprint
        assert [item.target_ref for item in sink.inventory(native)] == [stored.target_ref]
        sink.close()
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["wsgidav", "apache"])
def test_versions_asked_for_later_are_the_servers_and_a_file_changed_meanwhile_is_said(
        kind: str, tmp_path: Path) -> None:
    """With ``defer_versions``, a write whose answer holds no ETag (a MOVE into WsgiDAV, a
    PUT into Apache) answers ``PENDING_VERSION``; ``versions`` then gives each file the
    ETag the server lists, from one listing of the folder, or from a HEAD each where the
    folder holds many more files than it settles; a file written over by someone in
    between (another size) gets ``CHANGED_VERSION``."""
    from connectors.base import CHANGED_VERSION, PENDING_VERSION, Document
    from connectors.dav.client import DavClient
    from connectors.spool import Spool
    from connectors.webdav.sink import LISTED_SHARE, WebDavSink

    start = start_wsgidav if kind == "wsgidav" else start_apache
    server = start(tmp_path / kind, {"u": "p"})
    space = server.space_url().replace("{login}", "u")
    try:
        client = DavClient(space, "u", "p", ca_file=None, timeout=30)
        sink = WebDavSink(client, whole_puts=kind == "apache", sets_mtime=False)
        sink.defer_versions()
        native = sink.ensure_container(("Partage",))

        def put(name: str, content: bytes):
            body = Spool.from_chunks([content])
            return sink.put(native, Document(name, "v1", name, (), body.fingerprint,
                                             body.size, None, body.open)), body.size

        def listed(name: str) -> str:
            answer = requests.request("PROPFIND", f"{space}Partage/{name}", auth=("u", "p"),
                                      headers={"Depth": "0"}, timeout=30)
            return re.search(r"getetag>([^<]*)<", answer.text).group(1)  # type: ignore[union-attr]

        written = [put(f"f{n}.txt", b"x" * (n + 1)) for n in range(LISTED_SHARE * 3)]
        assert {stored.version for stored, _ in written} == {PENDING_VERSION}
        answered = sink.versions(native, written)
        assert [stored.version.strip('"').removeprefix("W/").strip('"')
                for stored in answered] == [listed(f"f{n}.txt").removeprefix("W/").strip('"')
                                            for n in range(len(written))]

        # One more file in a folder of a dozen: a HEAD, not a listing, and the same ETag.
        late, size = put("g.txt", b"one")
        [headed] = sink.versions(native, [(late, size)])
        assert headed.version.removeprefix("W/").strip('"') \
            == listed("g.txt").removeprefix("W/").strip('"')

        # Written over by someone between the write and the asking: found by a listing,
        # and by a HEAD.
        late, size = put("h.txt", b"mine")
        (server.space("u") / "Partage" / "h.txt").write_bytes(b"someone else's, longer")
        [changed] = sink.versions(native, [(late, size)] + written[:LISTED_SHARE])[:1]
        assert changed.version == CHANGED_VERSION
        late, size = put("k.txt", b"mine")
        (server.space("u") / "Partage" / "k.txt").write_bytes(b"someone else's, longer")
        [changed] = sink.versions(native, [(late, size)])
        assert changed.version == CHANGED_VERSION
        sink.close()
    finally:
        server.stop()
