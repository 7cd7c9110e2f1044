"""vCards of every version written as a CardDAV server takes them (``mappings.vcard``), read
back with vobject, a parser bascule does not use: what a person sees is kept, what cannot be
is in a note, and a broken photo leaves the card without it."""

from __future__ import annotations

import base64

import vobject

from mappings.contacts import PHOTO_MAX
from mappings.ical_fingerprint import semantic_fingerprint
from mappings.vcard import for_server

JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 3 + b"\xff\xd9"
B64 = base64.b64encode(JPEG).decode()

CARD_40 = ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f01\r\n"
           "FN:Hélène Noël\r\nN:Noël;Hélène;;;\r\nTEL;VALUE=uri;TYPE=\"cell,voice\";PREF=1:"
           "tel:+33-6-12-34-56-78\r\nEMAIL;PID=1.1:helene@exemple.fr\r\n"
           f"PHOTO:data:image/jpeg;base64,{B64}\r\nBDAY:--0314\r\nGENDER:F\r\n"
           "RELATED;TYPE=spouse;VALUE=text:Jean\r\nCLIENTPIDMAP:1;urn:uuid:x\r\n"
           "END:VCARD\r\n").encode()
GROUP_40 = ("BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:uuid:9f0e5d1c-0000-4000-8000-000000000001\r\n"
            "KIND:group\r\nFN:Élus\r\n"
            "MEMBER:urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f01\r\n"
            "MEMBER:urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f02\r\nEND:VCARD\r\n").encode()
# As Outlook 2003 exported it: quoted-printable UTF-8 with a soft line break, bare types,
# a base64 photo whose lines are indented and end with a blank line.
CARD_21 = ("BEGIN:VCARD\r\nVERSION:2.1\r\n"
           "N;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:C=C3=B4t=C3=A9;S=C3=A9bastien\r\n"
           "FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:S=C3=A9bastien C=C3=B4t=C3=A9, ma=\r\n"
           "ire adjoint\r\n"
           "NOTE;ENCODING=QUOTED-PRINTABLE:ligne 1=0D=0Aligne 2; fin\r\n"
           "TEL;WORK;VOICE:+33 1 23 45 67 89\r\nEMAIL;PREF;INTERNET:sebastien@ville.fr\r\n"
           "PHOTO;JPEG;ENCODING=BASE64:\r\n    " + B64[:60] + "\r\n    " + B64[60:]
           + "\r\n\r\nEND:VCARD\r\n").encode()


def read(card: bytes) -> vobject.base.Component:
    return vobject.readOne(card.decode("utf-8"))


def test_a_40_card_becomes_30_with_its_photo_phone_and_birthday() -> None:
    written, notes = for_server(CARD_40, {"3.0"})
    assert written is not None
    card = read(written)
    assert card.version.value == "3.0"
    assert card.fn.value == "Hélène Noël"
    assert card.uid.value == "urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f01"
    assert card.photo.value == JPEG
    assert card.photo.params["TYPE"] == ["JPEG"]
    assert card.tel.value == "+33-6-12-34-56-78"
    assert sorted(t.lower() for t in card.tel.params["TYPE"]) == ["cell", "pref", "voice"]
    assert card.bday.value == "1604-03-14"
    assert card.bday.params["X-APPLE-OMIT-YEAR"] == ["1604"]
    assert card.x_gender.value == "F"
    assert "PID" not in card.email.params and "clientpidmap" not in card.contents
    assert [(n.code, n.params.get("property")) for n in notes] == [
        ("vcard_kept_as_x_property", "GENDER"), ("vcard_property_dropped", "RELATED")]


def test_a_card_of_a_version_the_server_takes_goes_as_it_is() -> None:
    assert for_server(CARD_40, {"3.0", "4.0"}) == (None, [])
    assert for_server(CARD_40, set()) != (None, [])  # nothing listed: 3.0 alone (RFC 6352)


def test_a_40_group_becomes_an_apple_group_with_its_members() -> None:
    written, notes = for_server(GROUP_40, {"3.0"})
    assert written is not None and notes == []
    card = read(written)
    assert card.contents["x-addressbookserver-kind"][0].value == "group"
    assert [m.value for m in card.contents["x-addressbookserver-member"]] == [
        "urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f01",
        "urn:uuid:0b7d2f6e-1c1a-4f38-9d0b-5b7e1c0a2f02"]
    assert card.fn.value == "Élus" and "n" in card.contents  # 3.0 requires N


def test_a_21_card_is_decoded_and_escaped_as_30() -> None:
    written, notes = for_server(CARD_21, {"3.0"})
    assert written is not None and notes == []
    card = read(written)
    assert card.version.value == "3.0"
    assert (card.n.value.family, card.n.value.given) == ("Côté", "Sébastien")
    assert card.fn.value == "Sébastien Côté, maire adjoint"
    assert card.note.value == "ligne 1\nligne 2; fin"
    assert sorted(card.tel.params["TYPE"]) == ["VOICE", "WORK"]
    assert sorted(card.email.params["TYPE"]) == ["INTERNET", "PREF"]
    assert card.photo.value == JPEG
    assert b"CHARSET" not in written and b"QUOTED-PRINTABLE" not in written


def test_a_21_card_in_windows_1252_is_written_in_utf_8() -> None:
    legacy = "BEGIN:VCARD\r\nVERSION:2.1\r\nN:Noël;Hélène\r\nFN:Hélène Noël\r\nEND:VCARD\r\n"
    written, _ = for_server(legacy.encode("cp1252"), {"3.0"})
    assert written is not None and read(written).fn.value == "Hélène Noël"


def test_a_photo_that_does_not_decode_is_left_out_and_noted() -> None:
    broken = (b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:b\r\nFN:Sans Photo\r\nN:Photo;Sans;;;\r\n"
              b"PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQ*not base64*\r\nEND:VCARD\r\n")
    written, notes = for_server(broken, {"3.0"})
    assert written is not None
    card = read(written)
    assert card.fn.value == "Sans Photo" and "photo" not in card.contents
    assert [n.code for n in notes] == ["photo_unreadable"]
    broken_40 = CARD_40.replace(B64.encode(), b"%%%")
    written, notes = for_server(broken_40, {"3.0"})
    assert written is not None and "photo" not in read(written).contents
    assert "photo_unreadable" in [n.code for n in notes]


def test_a_photo_over_the_bound_is_left_out_and_noted() -> None:
    huge = base64.b64encode(b"\xff\xd8\xff" + bytes(PHOTO_MAX)).decode()
    card = (f"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:h\r\nFN:Grand\r\nN:Grand;;;;\r\n"
            f"PHOTO;ENCODING=b;TYPE=JPEG:{huge}\r\nEND:VCARD\r\n").encode()
    written, notes = for_server(card, {"3.0"})
    assert written is not None and "photo" not in read(written).contents
    assert [(n.code, n.params["limit_kib"]) for n in notes] == [("photo_too_big", "1024")]


def test_a_converted_card_written_twice_has_one_fingerprint() -> None:
    first, _ = for_server(CARD_40, {"3.0"})
    second, _ = for_server(CARD_40.replace(b"\r\n", b"\n"), {"3.0"})
    assert first is not None and second is not None
    assert semantic_fingerprint([first]) == semantic_fingerprint([second])
    assert semantic_fingerprint([first]) != semantic_fingerprint([CARD_40])


def test_what_is_not_one_card_is_left_to_the_server() -> None:
    two = CARD_40 + GROUP_40
    assert for_server(two, {"3.0"}) == (None, [])
    assert for_server(b"not a card", {"3.0"}) == (None, [])
