"""The Nextcloud test server (tests/nextcloud.py) does what Nextcloud's documentation says,
read with plain HTTP: chunked upload v2 assembled by a MOVE, a total length that does not
add up refused, a PUT over the cap refused with 413, ``X-OC-Mtime`` accepted, ``OC-Checksum``
kept as ``oc:checksums``."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests

from tests.nextcloud import MIB, SHARES, Nextcloud, start_nextcloud
from tests.test_webdav_sink import cut_put

AUTH = ("u", "p")


@pytest.fixture
def nextcloud(tmp_path: Path):
    server = start_nextcloud(tmp_path / "nextcloud", {"u": "p"}, put_cap=2 * MIB,
                             quotas={"u": 40 * MIB})
    yield server
    server.stop()


def files(server: Nextcloud, name: str = "") -> str:
    return f"{server.base_url}/remote.php/dav/files/u/{name}"


def uploads(server: Nextcloud, name: str = "") -> str:
    return f"{server.base_url}/remote.php/dav/uploads/u/{name}"


def chunked(server: Nextcloud, upload: str, target: str, chunks: list[bytes],
            **move_headers: str) -> requests.Response:
    headers = {"Destination": files(server, target)}
    assert requests.request("MKCOL", uploads(server, upload), auth=AUTH, headers=headers,
                            timeout=30).status_code == 201
    total = str(sum(len(chunk) for chunk in chunks))
    for number, chunk in enumerate(chunks, 1):
        answer = requests.put(uploads(server, f"{upload}/{number:05d}"), data=chunk, auth=AUTH,
                              headers={**headers, "OC-Total-Length": total}, timeout=30)
        assert answer.status_code == 201, answer.text
    return requests.request("MOVE", uploads(server, f"{upload}/.file"), auth=AUTH, timeout=30,
                            headers={**headers, "OC-Total-Length": total, **move_headers})


def test_chunks_are_assembled_by_a_move_in_the_order_of_their_names(nextcloud) -> None:
    chunks = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"end"]
    answer = chunked(nextcloud, "up-1", "big.bin", chunks, **{"X-OC-Mtime": "1547545326"})
    assert answer.status_code == 201, answer.text
    assert answer.headers["X-OC-MTime"] == "accepted"
    assert answer.headers["OC-ETag"] and answer.headers["OC-FileId"]
    got = requests.get(files(nextcloud, "big.bin"), auth=AUTH, timeout=30)
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(b"".join(chunks)).digest()
    assert (nextcloud.space("u") / "big.bin").stat().st_mtime == 1547545326
    # The chunks and the upload folder are gone once assembled.
    assert list(nextcloud.uploads("u").iterdir()) == []
    # Over an existing file: 204, and Overwrite: F refuses it.
    assert chunked(nextcloud, "up-2", "big.bin", [b"two"]).status_code == 204
    refused = chunked(nextcloud, "up-3", "big.bin", [b"three"], Overwrite="F")
    assert refused.status_code == 412
    assert (nextcloud.space("u") / "big.bin").read_bytes() == b"two"


def test_the_upload_protocol_refuses_what_the_documentation_refuses(nextcloud) -> None:
    # MKCOL without Destination; a chunk named out of 1..10000; chunks read back.
    assert requests.request("MKCOL", uploads(nextcloud, "x"), auth=AUTH,
                            timeout=30).status_code == 400
    headers = {"Destination": files(nextcloud, "f.bin")}
    assert requests.request("MKCOL", uploads(nextcloud, "x"), auth=AUTH, headers=headers,
                            timeout=30).status_code == 201
    for name in ("0", "10001", "abc"):
        assert requests.put(uploads(nextcloud, f"x/{name}"), data=b"a", auth=AUTH,
                            headers=headers, timeout=30).status_code == 400
    assert requests.put(uploads(nextcloud, "x/1"), data=b"a" * 10, auth=AUTH, timeout=30
                        ).status_code == 400  # no Destination
    assert requests.put(uploads(nextcloud, "x/1"), data=b"a" * 10, auth=AUTH,
                        headers=headers, timeout=30).status_code == 201
    assert requests.get(uploads(nextcloud, "x/00001"), auth=AUTH, timeout=30
                        ).status_code == 405
    # OC-Total-Length that the chunks do not add up to: 400, nothing written.
    answer = requests.request("MOVE", uploads(nextcloud, "x/.file"), auth=AUTH, timeout=30,
                              headers={**headers, "OC-Total-Length": "11"})
    assert answer.status_code == 400 and "do not sum up" in answer.text
    assert not (nextcloud.space("u") / "f.bin").exists()
    # A chunk smaller than 5 MB that is not the last.
    requests.put(uploads(nextcloud, "x/2"), data=b"b", auth=AUTH, headers=headers, timeout=30)
    assert requests.request("MOVE", uploads(nextcloud, "x/.file"), auth=AUTH, timeout=30,
                            headers=headers).status_code == 400
    # A chunk whose upload would not fit the quota: 507.
    assert requests.put(uploads(nextcloud, "x/3"), data=b"c", auth=AUTH, timeout=30, headers={
        **headers, "OC-Total-Length": str(41 * MIB)}).status_code == 507
    # Aborted: the folder goes.
    assert requests.delete(uploads(nextcloud, "x/"), auth=AUTH, timeout=30).status_code == 204
    assert list(nextcloud.uploads("u").iterdir()) == []


def test_a_put_over_the_cap_is_refused_413_before_its_body(nextcloud) -> None:
    login = base64.b64encode(b"u:p").decode()
    with socket.create_connection((nextcloud.host, nextcloud.port), timeout=10) as connection:
        connection.sendall(f"PUT /remote.php/dav/files/u/huge.bin HTTP/1.1\r\nHost: test\r\n"
                           f"Authorization: Basic {login}\r\nContent-Length: {2 * MIB + 1}"
                           "\r\n\r\n".encode())
        status = connection.recv(200).split(b"\r\n")[0]
    assert b" 413 " in status, status
    assert not (nextcloud.space("u") / "huge.bin").exists()


def test_a_put_keeps_its_mtime_and_checksum_and_answers_its_etag(nextcloud) -> None:
    body = b"contenu\n"
    digest = hashlib.sha256(body).hexdigest()
    answer = requests.put(files(nextcloud, "a.txt"), data=body, auth=AUTH, timeout=30, headers={
        "X-OC-Mtime": "1600000000", "OC-Checksum": f"SHA256:{digest}"})
    assert answer.status_code == 201
    assert answer.headers["X-OC-MTime"] == "accepted"
    assert answer.headers["OC-FileId"]
    assert (nextcloud.space("u") / "a.txt").stat().st_mtime == 1600000000
    found = requests.request("PROPFIND", files(nextcloud, "a.txt"), auth=AUTH, timeout=30,
                             headers={"Depth": "0"}, data=(
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><d:getetag/><oc:checksums/></d:prop></d:propfind>"))
    assert found.status_code == 207
    assert f"SHA256:{digest}" in found.text
    etag = re.search(r"getetag>([^<]*)<", found.text).group(1)  # type: ignore[union-attr]
    assert answer.headers["ETag"].strip('"') == etag.strip('"')
    # Create-only over it, or an If naming another ETag: 412, the file as it was.
    assert requests.put(files(nextcloud, "a.txt"), data=b"x", auth=AUTH, timeout=30,
                        headers={"If-None-Match": "*"}).status_code == 412
    assert requests.put(files(nextcloud, "a.txt"), data=b"x", auth=AUTH, timeout=30, headers={
        "If": f'<{files(nextcloud, "a.txt")}> (["nope"])'}).status_code == 412
    assert (nextcloud.space("u") / "a.txt").read_bytes() == body
    # Written again without a checksum: the stored one goes (it named other bytes).
    assert requests.put(files(nextcloud, "a.txt"), data=b"v2", auth=AUTH, timeout=30
                        ).status_code == 204
    found = requests.request("PROPFIND", files(nextcloud, "a.txt"), auth=AUTH, timeout=30,
                             headers={"Depth": "0"}, data=(
        '<?xml version="1.0"?><d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns">'
        "<d:prop><oc:checksums/></d:prop></d:propfind>"))
    assert digest not in found.text
    assert requests.put(files(nextcloud, "b.txt"), data=b"x", auth=("u", "wrong"),
                        timeout=30).status_code == 401


def test_a_put_cut_short_leaves_nothing_at_its_name(nextcloud) -> None:
    """The part file it was written to stays on the server's disk, out of WebDAV's sight."""
    cut_put(nextcloud.host, nextcloud.port, "/remote.php/dav/files/u/cut.bin")
    assert list(nextcloud.space("u").iterdir()) == []
    listing = requests.request("PROPFIND", files(nextcloud), auth=AUTH, timeout=30,
                               headers={"Depth": "1"})
    assert "cut.bin" not in listing.text and ".part" not in listing.text


@pytest.mark.parametrize("name", ["a\\b.txt", "tab\tname", ".htaccess", "film.part",
                                  "x.FILEPART", "n" * 251])
def test_names_nextcloud_refuses_are_refused_400(nextcloud, name) -> None:
    quoted = requests.utils.quote(name, safe="")
    assert requests.put(files(nextcloud, quoted), data=b"x", auth=AUTH,
                        timeout=30).status_code == 400
    assert requests.request("MKCOL", files(nextcloud, quoted), auth=AUTH,
                            timeout=30).status_code == 400
    assert requests.request("MKCOL", uploads(nextcloud, "up-name"), auth=AUTH, timeout=30,
                            headers={"Destination": files(nextcloud, quoted)}
                            ).status_code == 400
    assert list(nextcloud.space("u").iterdir()) == []
    # The same names, as Nextcloud takes them: "n" * 250, "a:b" and "CON.txt" (no Windows
    # rules by default).
    for taken in ("n" * 250, "a:b.txt", "CON.txt"):
        assert requests.put(files(nextcloud, requests.utils.quote(taken, safe="")), data=b"x",
                            auth=AUTH, timeout=30).status_code == 201


def test_with_windows_names_windows_names_are_refused_too(tmp_path) -> None:
    server = start_nextcloud(tmp_path / "nextcloud", {"u": "p"}, windows_names=True)
    try:
        for name in ("a:b.txt", "CON.txt", "lpt1.tar.gz", "fin.", "fin ", "q?"):
            assert requests.put(files(server, requests.utils.quote(name, safe="")), data=b"x",
                                auth=AUTH, timeout=30).status_code == 400, name
        assert requests.put(files(server, "console.txt"), data=b"x", auth=AUTH,
                            timeout=30).status_code == 201
    finally:
        server.stop()



def ocs(server: Nextcloud, method: str = "GET", auth: tuple[str, str] = AUTH,
        headers: dict[str, str] | None = None, **fields: str) -> requests.Response:
    """A request to the OCS Share API, its fields in the query (GET) or the form (POST)."""
    query, form = (fields, None) if method == "GET" else ({}, fields)
    return requests.request(method, f"{server.base_url}{SHARES}", auth=auth, params=query,
                            data=form, timeout=30,
                            headers={"OCS-APIRequest": "true"} if headers is None else headers)


@pytest.fixture
def sharing(tmp_path: Path):
    server = start_nextcloud(tmp_path / "nextcloud", {"u": "p", "v": "q"},
                             groups={"urbanisme": ["v"]})
    assert requests.request("MKCOL", files(server, "Dossier"), auth=AUTH,
                            timeout=30).status_code == 201
    assert requests.put(files(server, "Dossier/a.txt"), data=b"a", auth=AUTH,
                        timeout=30).status_code == 201
    yield server
    server.stop()


def test_shares_are_made_and_read_back_through_the_ocs_share_api(sharing) -> None:
    # Without OCS-APIRequest: refused before anything.
    refused = ocs(sharing, "POST", headers={}, path="/Dossier", shareType="0", shareWith="v")
    assert refused.status_code == 412 and "CSRF" in refused.text
    made = ocs(sharing, "POST", path="/Dossier", shareType="0", shareWith="v",
               permissions="15")
    assert made.status_code == 200, made.text
    # XML by default: the OCS envelope, statuscode 200 on v2, the new share's id.
    envelope = ElementTree.fromstring(made.content)
    assert envelope.findtext("meta/statuscode") == "200"
    share_id = envelope.findtext("data/id")
    assert share_id
    link = ocs(sharing, "POST", path="Dossier/a.txt", shareType="3", expireDate="2099-01-31",
               password="secret-du-lien")
    assert link.status_code == 200, link.text
    listed = sharing.shares("u", "/Dossier")
    assert [(s["id"], s["share_type"], s["share_with"], s["permissions"], s["item_type"])
            for s in listed] == [(share_id, 0, "v", 15, "folder")]
    [public] = sharing.shares("u", "Dossier/a.txt")
    assert (public["share_type"], public["permissions"], public["expiration"]) == (
        3, 1, "2099-01-31 00:00:00")
    assert public["token"] and "secret-du-lien" not in json.dumps(public)
    assert len(sharing.shares("u")) == 2 and sharing.shares("v") == []


@pytest.mark.parametrize(("fields", "status", "says"), [
    ({"path": "/absent", "shareType": "0", "shareWith": "v"}, 404, "does not exist"),
    ({"path": "/Dossier", "shareType": "2", "shareWith": "v"}, 400, "Unknown share type"),
    ({"path": "/Dossier", "shareType": "0", "shareWith": "nobody"}, 404, "valid user"),
    ({"path": "/Dossier", "shareType": "1", "shareWith": "nobody"}, 404, "valid group"),
    ({"path": "/Dossier", "shareType": "0", "shareWith": "u"}, 403, "yourself"),
    ({"path": "/Dossier/a.txt", "shareType": "0", "shareWith": "v", "permissions": "5"},
     403, "create permissions"),
    ({"path": "/Dossier", "shareType": "0", "shareWith": "v", "permissions": "2"}, 403,
     "read permissions"),
    ({"path": "/Dossier", "shareType": "3", "expireDate": "31/01/2099"}, 404,
     "YYYY-MM-DD"),
    ({"path": "/Dossier", "shareType": "3", "expireDate": "2001-01-01"}, 404, "past"),
])
def test_the_share_api_refuses_what_nextcloud_refuses(sharing, fields, status, says) -> None:
    answer = ocs(sharing, "POST", headers={"OCS-APIRequest": "true",
                                           "Accept": "application/json"}, **fields)
    assert answer.status_code == status, answer.text
    meta = answer.json()["ocs"]["meta"]
    assert meta["statuscode"] == status and says in meta["message"]
    assert sharing.shares("u") == []


def test_a_user_or_group_already_shared_with_is_refused(sharing) -> None:
    for kind, who in (("0", "v"), ("1", "urbanisme")):
        assert ocs(sharing, "POST", path="/Dossier", shareType=kind,
                   shareWith=who).status_code == 200
        again = ocs(sharing, "POST", path="/Dossier", shareType=kind, shareWith=who)
        assert again.status_code == 403 and "already shared" in again.text
    assert ocs(sharing, "GET", path="/absent").status_code == 404
    assert len(sharing.shares("u", "/Dossier")) == 2
