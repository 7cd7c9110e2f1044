"""Graph contacts written as vCard 3.0 and 4.0, read back by an independent parser (vobject)."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import pytest
import vobject

from mappings.contacts import (
    NOTE_CODES,
    Note,
    birthday_date,
    contact_to_vcard,
    contact_uid,
    fold,
    vcard_fingerprint,
)
from reports.i18n import Text


def said_of(note: Note) -> Text:
    """The note as the report writes it."""
    return Text.of(note.code, detail=note.detail, **note.params)


JPEG = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + bytes(range(256)) * 3
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)

EVERYTHING: dict[str, Any] = {
    "id": "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OABGAAAAAAAiQ8W967B7TKBjgx9r"
          "VEURBwAiIsqMbYjsT5e-T7KzowPTAAAAAAEOAAAiIsqMbYjsT5e-T7KzowPTAAAYbuK-AAA=",
    "changeKey": "EQAAABYAAAAiIsqMbYjsT5e/T7KzowPTAAAYbn1E",
    "createdDateTime": "2019-11-04T08:15:00Z",
    "lastModifiedDateTime": "2024-05-06T07:08:09.1234567Z",
    "parentFolderId": "AAMkAGVmMDEzMTM4LTZmYWUtNDdkNC1hMDZiLTU1OGY5OTZhYmY4OAAuAAAAAAA=",
    "displayName": "Mme Hélène Lefèvre-Ducôté",
    "givenName": "Hélène",
    "middleName": "Éloïse",
    "surname": "Lefèvre-Ducôté",
    "title": "Mme",
    "generation": "Jr.",
    "initials": "H.É.L.",
    "nickName": "Lélé",
    "fileAs": "Lefèvre-Ducôté, Hélène",
    "yomiGivenName": "エレーヌ",
    "yomiSurname": "ルフェーブル",
    "yomiCompanyName": "ヴィル",
    "emailAddresses": [
        {"name": "Hélène Lefèvre-Ducôté", "address": "helene.lefevre@ville-exemple.fr"},
        {"name": "Perso", "address": "lele@exemple.org"},
    ],
    "imAddresses": ["sip:helene.lefevre@ville-exemple.fr", "helene@chat.exemple.fr",
                    "lele_skype"],
    "businessPhones": ["+33 4 72 10 30 30", "+33 4 72 10 30 31"],
    "homePhones": ["+33 4 78 00 00 00"],
    "mobilePhone": "+33 6 12 34 56 78",
    "businessAddress": {"street": "1, place de la Comédie\nBâtiment B; 2e étage",
                        "city": "Lyon", "state": "Auvergne-Rhône-Alpes",
                        "postalCode": "69001", "countryOrRegion": "France"},
    "homeAddress": {"street": "12 rue Mercière", "city": "Lyon", "state": "",
                    "postalCode": "69002", "countryOrRegion": "France"},
    "otherAddress": {"street": "Chalet « Les Écrins »", "city": "Briançon",
                     "postalCode": "05100", "countryOrRegion": "France"},
    "companyName": "Ville d'Exemple",
    "department": "Direction des systèmes d'information",
    "jobTitle": "Cheffe de projet",
    "officeLocation": "Hôtel de ville, bureau 214",
    "profession": "Ingénieure",
    "manager": "Gérard Ménard",
    "assistantName": "Zoé Bréchet",
    "spouseName": "François Lefèvre",
    "children": ["Léa", "Noé"],
    "birthday": "1974-03-01T23:00:00Z",
    "personalNotes": "Rencontrée au forum, salle 3 ; voir \\\\serveur\\partage.\r\nÀ rappeler.",
    "categories": ["Élus, partenaires", "Projet; SIG"],
    "businessHomePage": "https://www.ville-exemple.fr/dsi",
}


def card(contact: dict[str, Any], version: str = "3.0", **kwargs: Any) -> Any:
    text, _ = contact_to_vcard(contact, version=version, **kwargs)
    return vobject.readOne(text)


def physical_lines(text: str) -> list[bytes]:
    data = text.encode("utf-8")
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def raw_value(text: str, name: str) -> str:
    """The value of the first ``name`` line as vobject unfolds and splits it, unescaped: vobject
    reads PHOTO as TEXT and cuts a 4.0 data: URI at its comma, which RFC 6350 leaves bare."""
    for line, _ in vobject.base.getLogicalLines(io.StringIO(text)):
        prop, _params, value, _group = vobject.base.parseLine(line)
        if prop.upper() == name:
            return value
    raise AssertionError(f"no {name} line")


def params(prop: Any, name: str = "TYPE") -> set[str]:
    values = prop.params.get(name, [])
    return {part.lower() for value in values for part in value.split(",")}


def by_type(props: list[Any]) -> dict[frozenset[str], list[str]]:
    found: dict[frozenset[str], list[str]] = {}
    for prop in props:
        found.setdefault(frozenset(params(prop)), []).append(prop.value)
    return found


@pytest.mark.parametrize("version", ["3.0", "4.0"])
def test_lines_are_crlf_folded_at_75_octets_and_never_split_a_character(version: str) -> None:
    contact = dict(EVERYTHING, personalNotes="Ça déménage à l'été : " + "é" * 90 + " — 終わり")
    text, _ = contact_to_vcard(contact, photo=JPEG, version=version)

    assert "\n" not in text.replace("\r\n", "")
    lines = physical_lines(text)
    assert all(len(line) <= 75 for line in lines)
    for line in lines:
        line.decode("utf-8")  # a cut inside a character leaves undecodable bytes
    continued = [i for i, line in enumerate(lines) if line.startswith(b" ")]
    assert any(len(lines[i - 1]) < 75 for i in continued), "no fold stepped back a byte"
    unfolded = text.replace("\r\n ", "")
    assert "NOTE:Ça déménage à l'été : " + "é" * 90 + " — 終わり\r\n" in unfolded


def test_a_fold_before_a_two_octet_character_leaves_74_octets() -> None:
    folded = fold("FN:" + "x" * 71 + "é" * 40)

    first, *rest = folded.encode("utf-8").split(b"\r\n")
    assert len(first) == 74
    assert rest[0].startswith(b" \xc3\xa9")
    assert all(len(piece) <= 75 for piece in rest)
    assert folded.replace("\r\n ", "") == "FN:" + "x" * 71 + "é" * 40


def test_a_full_contact_round_trips_through_vobject_in_30() -> None:
    text, notes = contact_to_vcard(EVERYTHING, photo=JPEG, photo_type="image/jpeg")
    vcard = vobject.readOne(text)

    assert vcard.version.value == "3.0"
    assert vcard.uid.value == contact_uid(EVERYTHING["id"])
    assert vcard.rev.value == "20240506T070809Z"
    assert vcard.fn.value == "Mme Hélène Lefèvre-Ducôté"
    name = vcard.n.value
    assert (name.family, name.given, name.additional, name.prefix, name.suffix) == (
        "Lefèvre-Ducôté", "Hélène", "Éloïse", "Mme", "Jr.")
    assert vcard.nickname.value == "Lélé"
    emails = vcard.contents["email"]
    assert [e.value for e in emails] == ["helene.lefevre@ville-exemple.fr", "lele@exemple.org"]
    assert params(emails[0]) == {"internet", "pref"} and params(emails[1]) == {"internet"}
    phones = by_type(vcard.contents["tel"])
    assert phones == {
        frozenset({"work", "voice"}): ["+33 4 72 10 30 30", "+33 4 72 10 30 31"],
        frozenset({"home", "voice"}): ["+33 4 78 00 00 00"],
        frozenset({"cell"}): ["+33 6 12 34 56 78"],
    }
    addresses = by_type(vcard.contents["adr"])
    work = addresses[frozenset({"work"})][0]
    assert (work.street, work.city, work.region, work.code, work.country) == (
        "1, place de la Comédie\nBâtiment B; 2e étage", "Lyon", "Auvergne-Rhône-Alpes",
        "69001", "France")
    assert addresses[frozenset({"home"})][0].street == "12 rue Mercière"
    assert addresses[frozenset()][0].street == "Chalet « Les Écrins »"
    assert vcard.org.value == ["Ville d'Exemple", "Direction des systèmes d'information"]
    assert vcard.title.value == "Cheffe de projet"
    assert vcard.role.value == "Ingénieure"
    assert vcard.bday.value == "1974-03-02"
    assert vcard.url.value == "https://www.ville-exemple.fr/dsi"
    assert [p.value for p in vcard.contents["impp"]] == [
        "sip:helene.lefevre@ville-exemple.fr", "sip:helene@chat.exemple.fr"]
    assert vcard.contents["x-ms-imaddress"][0].value == "lele_skype"
    assert vcard.categories.value == ["Élus, partenaires", "Projet; SIG"]
    assert vcard.note.value == EVERYTHING["personalNotes"].replace("\r\n", "\n")
    assert vcard.x_ms_spouse.value == "François Lefèvre"
    assert [c.value for c in vcard.contents["x-ms-child"]] == ["Léa", "Noé"]
    assert vcard.x_ms_manager.value == "Gérard Ménard"
    assert vcard.x_ms_assistant.value == "Zoé Bréchet"
    assert vcard.x_ms_office.value == "Hôtel de ville, bureau 214"
    assert vcard.x_phonetic_first_name.value == "エレーヌ"
    assert vcard.x_phonetic_last_name.value == "ルフェーブル"
    assert vcard.x_phonetic_org.value == "ヴィル"
    assert vcard.photo.value == JPEG
    assert params(vcard.photo) == {"jpeg"} and params(vcard.photo, "ENCODING") == {"b"}
    assert "PHOTO;ENCODING=b;TYPE=JPEG:/9j/" in text

    assert sorted((n.code, n.detail) for n in notes) == sorted([
        ("kept_as_x_property", "yomiGivenName"), ("kept_as_x_property", "yomiSurname"),
        ("kept_as_x_property", "yomiCompanyName"), ("kept_as_x_property", "imAddresses"),
        ("im_address_assumed_sip", "imAddresses"),
        ("dropped", "emailAddresses.name"),
        ("kept_as_x_property", "spouseName"), ("kept_as_x_property", "children"),
        ("kept_as_x_property", "manager"), ("kept_as_x_property", "assistantName"),
        ("kept_as_x_property", "officeLocation"),
    ])
    for note in notes:
        said = said_of(note)
        assert said.en and said.fr and said.en != said.fr
        assert "{" not in said.en + said.fr


def test_a_full_contact_round_trips_through_vobject_in_40() -> None:
    text, notes = contact_to_vcard(EVERYTHING, photo=JPEG, photo_type="image/jpeg",
                                   version="4.0")
    vcard = vobject.readOne(text)

    assert text.startswith("BEGIN:VCARD\r\nVERSION:4.0\r\n")
    assert vcard.uid.value == "urn:uuid:" + contact_uid(EVERYTHING["id"])
    assert vcard.fn.value == "Mme Hélène Lefèvre-Ducôté"
    assert vcard.n.value.additional == "Éloïse"
    emails = vcard.contents["email"]
    assert params(emails[0], "PREF") == {"1"} and "PREF" not in emails[1].params
    assert by_type(vcard.contents["tel"])[frozenset({"cell"})] == ["+33 6 12 34 56 78"]
    assert by_type(vcard.contents["adr"])[frozenset({"work"})][0].city == "Lyon"
    assert vcard.bday.value == "19740302"
    assert params(vcard.url) == {"work"}
    related = {(frozenset(params(r)), r.value) for r in vcard.contents["related"]}
    assert related == {(frozenset({"spouse"}), "François Lefèvre"),
                       (frozenset({"child"}), "Léa"), (frozenset({"child"}), "Noé")}
    assert "x-ms-spouse" not in vcard.contents and "x-ms-child" not in vcard.contents
    assert vcard.note.value == EVERYTHING["personalNotes"].replace("\r\n", "\n")
    prefix = "data:image/jpeg;base64,"
    photo = raw_value(text, "PHOTO")
    assert photo.startswith(prefix)
    assert base64.b64decode(photo[len(prefix):]) == JPEG
    assert {n.detail for n in notes if n.code == "kept_as_x_property"} == {
        "yomiGivenName", "yomiSurname", "yomiCompanyName", "imAddresses", "manager",
        "assistantName", "officeLocation"}


def test_a_contact_with_only_an_email_address() -> None:
    contact = {"emailAddresses": [{"name": "", "address": "accueil@mairie-exemple.fr"}]}

    text, notes = contact_to_vcard(contact)

    assert text == (
        "BEGIN:VCARD\r\n"
        "VERSION:3.0\r\n"
        "PRODID:-//bascule//Microsoft Graph contacts//EN\r\n"
        "FN:accueil@mairie-exemple.fr\r\n"
        "N:;;;;\r\n"
        "EMAIL;TYPE=INTERNET,PREF:accueil@mairie-exemple.fr\r\n"
        "END:VCARD\r\n")
    assert [(n.code, n.detail) for n in notes] == [("display_name_missing", "emailAddresses")]
    assert "emailAddresses" in said_of(notes[0]).fr
    assert vobject.readOne(contact_to_vcard(contact, version="4.0")[0]).fn.value == (
        "accueil@mairie-exemple.fr")


def test_graph_nulls_and_a_contact_without_any_name() -> None:
    contact = {"id": "AAMk=", "displayName": None, "givenName": None, "emailAddresses": [],
               "businessPhones": [], "homeAddress": {}, "categories": None,
               "companyName": "Syndicat des eaux du Val"}

    text, notes = contact_to_vcard(contact)
    vcard = vobject.readOne(text)

    assert vcard.fn.value == "Syndicat des eaux du Val"
    assert vcard.org.value == ["Syndicat des eaux du Val"]
    assert [(n.code, n.detail) for n in notes] == [("display_name_missing", "companyName")]
    assert "ADR" not in text and "CATEGORIES" not in text and "EMAIL" not in text

    empty_text, empty_notes = contact_to_vcard({"id": "AAMk="})
    assert vobject.readOne(empty_text).fn.value == "?"
    assert [n.code for n in empty_notes] == ["display_name_missing"]


def test_special_characters_are_escaped_and_come_back_unchanged() -> None:
    contact = {
        "id": "AAMk/+=", "displayName": "Dupont; Durand, et \\associés",
        "surname": "Dupont;Durand", "givenName": "Anne, Marie",
        "companyName": "SIVOM; eau, assainissement", "department": "Régie\\Nord",
        "personalNotes": "ligne 1\nligne 2\r\nligne 3\rfin; a,b\\c\x0b\x00\tz",
        "categories": ["a,b", "c;d", "e\\f"],
        "homeAddress": {"street": "3; rue des Lilas, appt 4", "city": "Saint-Étienne"},
    }

    text, _ = contact_to_vcard(contact)
    vcard = vobject.readOne(text)

    unfolded = text.replace("\r\n ", "")
    assert "FN:Dupont\\; Durand\\, et \\\\associés\r\n" in unfolded
    assert "N:Dupont\\;Durand;Anne\\, Marie;;;\r\n" in unfolded
    assert "ORG:SIVOM\\; eau\\, assainissement;Régie\\\\Nord\r\n" in unfolded
    assert "NOTE:ligne 1\\nligne 2\\nligne 3\\nfin\\; a\\,b\\\\c\tz\r\n" in unfolded
    assert "CATEGORIES:a\\,b,c\\;d,e\\\\f\r\n" in unfolded
    assert vcard.fn.value == contact["displayName"]
    assert (vcard.n.value.family, vcard.n.value.given) == ("Dupont;Durand", "Anne, Marie")
    assert vcard.org.value == ["SIVOM; eau, assainissement", "Régie\\Nord"]
    assert vcard.note.value == "ligne 1\nligne 2\nligne 3\nfin; a,b\\c\tz"
    assert vcard.categories.value == ["a,b", "c;d", "e\\f"]
    assert vcard.adr.value.street == "3; rue des Lilas, appt 4"


@pytest.mark.parametrize("instant", [
    "1974-03-02T00:00:00Z",        # midnight UTC, as the documentation shows
    "1974-03-01T23:00:00Z",        # local midnight in Paris in winter (UTC+1)
    "1974-03-01T22:00:00Z",        # ... and in summer (UTC+2)
    "1974-03-02T00:00:00.0000000Z",  # seven fractional digits, as Graph writes them
    "1974-03-02T01:00:00+01:00",   # an explicit offset
    "1974-03-02",
    "1974-03-01 23:00:00+00:00",
])
def test_a_birthday_keeps_the_contacts_date(instant: str) -> None:
    contact = {"id": "AAMk=", "displayName": "Anniv", "birthday": instant}

    text3, notes3 = contact_to_vcard(contact)
    text4, notes4 = contact_to_vcard(contact, version="4.0")

    assert vobject.readOne(text3).bday.value == "1974-03-02"
    assert vobject.readOne(text4).bday.value == "19740302"
    assert notes3 == notes4 == []


def test_a_birthday_near_midday_utc_is_kept_and_reported() -> None:
    assert birthday_date("1974-03-02T11:59:00Z") == (birthday_date("1974-03-02")[0], True)

    text, notes = contact_to_vcard({"displayName": "Midi", "birthday": "1974-03-02T11:59:00Z"})

    assert "BDAY:1974-03-02\r\n" in text
    assert [(n.code, n.detail) for n in notes] == [("birthday_ambiguous", "1974-03-02T11:59:00Z")]
    assert "1974-03-02" in said_of(notes[0]).fr


def test_a_birthday_without_year_and_an_unreadable_one() -> None:
    no_year = {"displayName": "Sans année", "birthday": "1604-03-01T23:00:00Z"}
    assert "BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-02\r\n" in contact_to_vcard(no_year)[0]
    assert "BDAY:--0302\r\n" in contact_to_vcard(no_year, version="4.0")[0]

    text, notes = contact_to_vcard({"displayName": "X", "birthday": "le 2 mars"})
    assert "BDAY" not in text
    assert [n.code for n in notes] == ["birthday_unreadable"]


@pytest.mark.parametrize(("photo", "declared", "short", "mime"), [
    (JPEG, None, "JPEG", "image/jpeg"),
    (JPEG, "image/jpeg", "JPEG", "image/jpeg"),
    (PNG, None, "PNG", "image/png"),
    (PNG, "image/png; charset=binary", "PNG", "image/png"),
])
def test_a_photo_is_inline_in_both_versions(
    photo: bytes, declared: str | None, short: str, mime: str
) -> None:
    contact = {"id": "AAMk=", "displayName": "Photo"}

    text3, notes3 = contact_to_vcard(contact, photo=photo, photo_type=declared)
    text4, notes4 = contact_to_vcard(contact, photo=photo, photo_type=declared, version="4.0")

    vcard3 = vobject.readOne(text3)
    assert vcard3.photo.value == photo
    assert f"PHOTO;ENCODING=b;TYPE={short}:" in text3
    photo4 = raw_value(text4, "PHOTO")
    assert photo4 == f"data:{mime};base64," + base64.b64encode(photo).decode("ascii")
    assert notes3 == notes4 == []


def test_a_photo_of_unknown_type_is_kept_and_reported() -> None:
    blob = b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(50)

    text, notes = contact_to_vcard({"displayName": "P"}, photo=blob, photo_type="image/webp")

    assert vobject.readOne(text).photo.value == blob
    assert "PHOTO;ENCODING=b:" in text
    assert [n.code for n in notes] == ["photo_type_unknown"]
    assert "data:application/octet-stream;base64," in contact_to_vcard(
        {"displayName": "P"}, photo=blob, version="4.0")[0].replace("\r\n ", "")


def test_the_uid_is_stable_and_safe_for_a_resource_name() -> None:
    first = contact_uid(EVERYTHING["id"])

    assert first == contact_uid(EVERYTHING["id"])
    assert first != contact_uid(EVERYTHING["id"][:-2] + "B=")
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", first)
    assert contact_to_vcard(EVERYTHING) == contact_to_vcard(EVERYTHING)


def test_the_fingerprint_ignores_folding_line_endings_rev_and_prodid() -> None:
    text, _ = contact_to_vcard(EVERYTHING, photo=JPEG)
    later, _ = contact_to_vcard(dict(EVERYTHING, lastModifiedDateTime="2025-01-01T00:00:00Z"),
                                photo=JPEG)
    refolded = text.replace("\r\n ", "").replace("\r\n", "\n").replace(
        "PRODID:-//bascule//Microsoft Graph contacts//EN", "PRODID:-//Radicale//NONSGML//EN")
    changed, _ = contact_to_vcard(dict(EVERYTHING, mobilePhone="+33 6 00 00 00 00"),
                                  photo=JPEG)

    assert later != text
    fingerprint = vcard_fingerprint(text)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint)
    assert vcard_fingerprint(later) == vcard_fingerprint(refolded) == fingerprint
    assert vcard_fingerprint(changed) != fingerprint
    assert vcard_fingerprint(contact_to_vcard(EVERYTHING, photo=JPEG, version="4.0")[0]) != (
        fingerprint)


def test_an_unknown_version_is_refused() -> None:
    with pytest.raises(ValueError, match="2.1"):
        contact_to_vcard(EVERYTHING, version="2.1")


def test_every_note_code_has_both_languages() -> None:
    for code in NOTE_CODES:
        said = said_of(Note(code, "x", {"field": "f", "property": "X-P", "address": "a@b",
                                        "instant": "i", "date": "d", "value": "v",
                                        "kib": "1100", "limit_kib": "1024"}))
        assert said.en != said.fr and "?" not in said.en + said.fr
