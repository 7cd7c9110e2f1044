"""Contacts into the four real CardDAV servers (Cyrus, Radicale, Xandikos, SabreDAV): which
vCard versions each lists and what it does with the others, the facts
``connectors.dav.profiles`` keeps; then cards of every version, with photos and groups,
through the sink, read back with plain HTTP and vobject.

Measured here (each asserted below, in ``FACTS``):

========  =====================  ==========================  ============  ===========
server    lists (RFC 6352)       a 4.0 card with a data:     a 2.1 card    a 3.0 card
                                 URI photo is stored as                    with photo
========  =====================  ==========================  ============  ===========
Cyrus     3.0 and 4.0            3.0, the photo lost         403 refused   kept
Radicale  3.0                    4.0, the photo lost         400 refused   kept
Xandikos  3.0 (wrong element)    as given                    stored        kept
SabreDAV  3.0                    as given                    stored, UID   kept
                                                             added
========  =====================  ==========================  ============  ===========

No server refuses 4.0; Cyrus rewrites its version, and two of four lose its photo: a card
goes as 3.0 to each (Cyrus by its profile, the others by what they list), and every photo
then lands with its bytes.
"""

from __future__ import annotations

import base64
import io
import re
import urllib.parse
from dataclasses import dataclass
from xml.etree import ElementTree

import pytest
import requests
import vobject

from connectors.base import Document, fingerprint_bytes
from connectors.dav.client import DavClient
from connectors.dav.profiles import PROFILES
from connectors.dav.sink import DavSink

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 6 + b"\xff\xd9"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1)) * 4
B64, B64_PNG = base64.b64encode(JPEG).decode(), base64.b64encode(PNG).decode()
HELENE = "urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f01"
JEAN = "urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f02"

CARDS = {
    "helene.vcf": ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:" + HELENE + "\r\nFN:Hélène Noël\r\n"
                   "N:Noël;Hélène;;;\r\nTEL;VALUE=uri;TYPE=cell:tel:+33-6-12-34-56-78\r\n"
                   "PHOTO:data:image/jpeg;base64," + B64 + "\r\nEND:VCARD\r\n"),
    "jean.vcf": ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:" + JEAN + "\r\nFN:Jean Martin\r\n"
                 "N:Martin;Jean;;;\r\nPHOTO;ENCODING=b;TYPE=PNG:" + B64_PNG + "\r\n"
                 "END:VCARD\r\n"),
    "sebastien.vcf": ("BEGIN:VCARD\r\nVERSION:2.1\r\n"
                      "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:C=C3=B4t=C3=A9;S=C3=A9bastien\r\n"
                      "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:S=C3=A9bastien C=C3=B4t=C3=A9\r\n"
                      "TEL;WORK;VOICE:+33 1 23 45 67 89\r\nUID:sebastien-cote\r\n"
                      "PHOTO;JPEG;ENCODING=BASE64:\r\n    " + B64[:70] + "\r\n    " + B64[70:]
                      + "\r\n\r\nEND:VCARD\r\n"),
    "elus.vcf": ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:9f0e5d1c-0000-4000-8000-0000000000e1"
                 "\r\nKIND:group\r\nFN:Élus\r\nMEMBER:" + HELENE + "\r\nMEMBER:" + JEAN + "\r\n"
                 "END:VCARD\r\n"),
    "bureau.vcf": ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:bureau-apple\r\nN:Bureau;;;;\r\n"
                   "FN:Bureau\r\nX-ADDRESSBOOKSERVER-KIND:group\r\n"
                   "X-ADDRESSBOOKSERVER-MEMBER:" + JEAN + "\r\nEND:VCARD\r\n"),
    "abimee.vcf": ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:abimee\r\nFN:Photo Abîmée\r\n"
                   "N:Abîmée;Photo;;;\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQ*abîmé*==\r\n"
                   "END:VCARD\r\n"),
}
"""A 4.0 card with a photo, a 3.0 one with a PNG, a 2.1 one from an old export with a photo,
a 4.0 group, an Apple (3.0) group, and a card whose photo is no base64."""
PHOTOS = {"helene.vcf": JPEG, "jean.vcf": PNG, "sebastien.vcf": JPEG}
GROUPS = {"elus.vcf": [HELENE, JEAN], "bureau.vcf": [JEAN]}


@dataclass(frozen=True)
class Fact:
    listed: frozenset[str]
    version_of_a_40_card: str
    keeps_a_40_photo: bool
    answer_to_21: int


FACTS = {
    "cyrus": Fact(frozenset({"3.0", "4.0"}), "3.0", False, 403),
    "radicale": Fact(frozenset({"3.0"}), "4.0", False, 400),
    "xandikos": Fact(frozenset({"3.0"}), "4.0", True, 201),
    "sabredav": Fact(frozenset({"3.0"}), "4.0", True, 201),
}


@dataclass
class Account:
    name: str
    base_url: str
    login: str
    password: str

    def sink(self) -> DavSink:
        return DavSink(DavClient(self.base_url + "/", self.login, self.password, ca_file=None,
                                 timeout=30), "contacts",
                       vcard_versions=PROFILES.get(self.name, PROFILES["generic"])
                       .vcard_versions)

    def request(self, method: str, path: str, **options: object) -> requests.Response:
        return requests.request(method, self.base_url + urllib.parse.quote(path, safe="/@"),
                                auth=(self.login, self.password), timeout=30, **options)


@pytest.fixture(params=sorted(FACTS))
def account(request: pytest.FixtureRequest) -> Account:
    name = request.param
    server = request.getfixturevalue(name)
    if name == "cyrus":
        return Account(name, server.base_url, "alice@example.org", "alice-pw")
    if name == "xandikos":
        return Account(name, server.base_url, "alice", "alice-pw")
    server.add_user("amelie", "amelie-pw")
    return Account(name, server.base_url, "amelie", "amelie-pw")


def document(name: str, body: bytes) -> Document:
    return Document(f"src-{name}", "v1", name, (), fingerprint_bytes(body), len(body), None,
                    lambda: io.BytesIO(body))


def listed_versions(account: Account, book: str) -> frozenset[str]:
    answer = account.request("PROPFIND", book, headers={
        "Depth": "0", "Content-Type": "application/xml"}, data=(
        b'<?xml version="1.0"?><propfind xmlns="DAV:" '
        b'xmlns:C="urn:ietf:params:xml:ns:carddav"><prop><C:supported-address-data/>'
        b"</prop></propfind>"))
    assert answer.status_code == 207, answer.text
    listed = next(ElementTree.fromstring(answer.content).iter(
        "{urn:ietf:params:xml:ns:carddav}supported-address-data"))
    return frozenset(child.get("version") for child in listed
                     if child.get("content-type") == "text/vcard")


def card_at(account: Account, place: str) -> vobject.base.Component:
    answer = account.request("GET", place)
    assert answer.status_code == 200, answer.text
    return vobject.readOne(answer.content.decode("utf-8"))


def photo_of(account: Account, place: str) -> bytes | None:
    """The photo's bytes as a client decodes them, in 3.0 (base64) or 4.0 (data: URI), read
    from the unfolded lines (vobject takes a 4.0 data: URI for base64)."""
    text = account.request("GET", place).content.decode("utf-8")
    lines = re.sub(r"\r?\n[ \t]", "", text).splitlines()
    photo = next((line for line in lines if re.match(r"(?i)photo[;:]", line)), None)
    if photo is None:
        return None
    head, _, value = photo.partition(":")
    if value.lower().startswith("data:"):
        media, _, value = value.partition(",")
        if not media.lower().endswith(";base64"):
            return None
    elif "ENCODING=B" not in head.upper():
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def kind_and_members(card: vobject.base.Component) -> tuple[str, list[str]]:
    kind = (card.contents.get("kind") or card.contents.get("x-addressbookserver-kind") or [])
    members = (card.contents.get("member") or []) + (
        card.contents.get("x-addressbookserver-member") or [])
    return (kind[0].value.lower() if kind else ""), [m.value for m in members]


def test_what_each_server_lists_and_does_with_40_and_21_cards(account: Account) -> None:
    """The facts of ``FACTS``, as sent by a plain client; the sink reads the same list."""
    fact = FACTS[account.name]
    sink = account.sink()
    book = sink.ensure_container(("Carnet",))
    assert listed_versions(account, book) == fact.listed
    [collection] = [c for c in sink.account.collections() if c.path == book]
    assert collection.vcard_versions >= fact.listed  # Xandikos: under another element name

    card = CARDS["helene.vcf"].encode()
    assert account.request("PUT", book + "raw40.vcf", data=card,
                           headers={"Content-Type": "text/vcard"}).status_code == 201
    stored = card_at(account, book + "raw40.vcf")
    assert stored.version.value == fact.version_of_a_40_card
    assert (photo_of(account, book + "raw40.vcf") == JPEG) is fact.keeps_a_40_photo

    answer = account.request("PUT", book + "raw21.vcf", data=CARDS["sebastien.vcf"].encode(),
                             headers={"Content-Type": "text/vcard"})
    assert answer.status_code == fact.answer_to_21, answer.text


def test_cards_of_every_version_land_with_photos_and_groups(account: Account) -> None:
    sink = account.sink()
    book = sink.ensure_container(("Carnet",))
    for name, text in CARDS.items():
        doc = document(name, text.encode())
        stored = sink.put(book, doc)
        found = sink.find(book, doc)
        assert found is not None
        # What the server holds means what was sent, and verify would compute the same.
        assert found.fingerprint == stored.fingerprint == sink.fingerprint(doc), name
    notes = sink.drain_notes()
    assert [(n.code, n.subject) for n in notes] == [("photo_unreadable", "src-abimee.vcf")]

    landed = {name: card_at(account, book + name) for name in CARDS}
    assert {name: card.version.value for name, card in landed.items()} == dict.fromkeys(
        CARDS, "3.0")
    for name, image in PHOTOS.items():
        assert photo_of(account, book + name) == image, name
    for name, members in GROUPS.items():
        assert kind_and_members(landed[name]) == ("group", members), name
    assert landed["sebastien.vcf"].fn.value == "Sébastien Côté"
    assert landed["helene.vcf"].tel.value == "+33-6-12-34-56-78"
    assert landed["abimee.vcf"].fn.value == "Photo Abîmée"
    assert photo_of(account, book + "abimee.vcf") is None

