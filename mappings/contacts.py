"""Outlook contacts, as Microsoft Graph v1.0 gives them, written as vCard 3.0 or 4.0.

``contact_to_vcard`` turns one Graph ``contact`` resource (a JSON dict) into the text of one
vCard (CRLF line endings, lines folded at 75 octets without splitting a UTF-8 character) and a
list of ``Note`` records, one for each thing that was dropped or only approximated.
``vcard_fingerprint`` hashes a vCard so that a re-run can tell a contact is unchanged.

Where each Graph property goes:

======================================  ==================================================
Graph                                   vCard
======================================  ==================================================
id                                      UID: a UUID derived from the id (``contact_uid``)
lastModifiedDateTime                    REV
displayName                             FN (never empty: see ``FN_FALLBACKS``)
surname, givenName, middleName,         N (family; given; additional; prefix; suffix).
title, generation                       Outlook's ``title`` is the courtesy title (Mme, Dr)
nickName                                NICKNAME
emailAddresses[].address                EMAIL, the first one preferred (PREF)
businessPhones, homePhones,             TEL with TYPE work, home, cell
mobilePhone
businessAddress, homeAddress,           ADR with TYPE work, home; the other address
otherAddress                            has no TYPE
companyName, department                 ORG (organisation; unit)
jobTitle / profession                   TITLE / ROLE
birthday                                BDAY (see ``birthday_date``)
businessHomePage                        URL
imAddresses                             IMPP when it is a URI; ``name@host`` as a sip:
                                        URI (noted); other text as X-MS-IMADDRESS (noted)
categories                              CATEGORIES
personalNotes                           NOTE
photo (``/contacts/{id}/photo/$value``) PHOTO, inline: base64 in 3.0, a data: URI in 4.0;
                                        left out (noted) when over ``PHOTO_MAX``
spouseName, children                    4.0: RELATED;TYPE=spouse / child as text.
                                        3.0: X-MS-SPOUSE / X-MS-CHILD (noted)
manager, assistantName,                 X-MS-MANAGER, X-MS-ASSISTANT, X-MS-OFFICE (noted).
officeLocation                          Exchange's own vCard export writes X-MS-SPOUSE,
                                        X-MS-MANAGER and X-MS-ASSISTANT; the other two
                                        follow the same family of names
yomiGivenName, yomiSurname,             X-PHONETIC-FIRST-NAME, X-PHONETIC-LAST-NAME,
yomiCompanyName                         X-PHONETIC-ORG, as Apple's address books (noted)
fileAs, initials, emailAddresses[].name dropped, noted only when they carry something the
                                        vCard does not (Outlook derives them by default)
changeKey, createdDateTime,             dropped silently: bookkeeping of the mailbox, not
parentFolderId                          part of the contact (the folder is the container)
======================================  ==================================================

X- properties are kept by CardDAV servers and shown by some address books only, hence the
notes. The UID depends on the Graph id alone; Graph ids change when a contact moves to
another folder unless the connector asks for immutable ids (``Prefer: IdType="ImmutableId"``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

VERSIONS = ("3.0", "4.0")

PRODID = "-//bascule//Microsoft Graph contacts//EN"

FOLD_OCTETS = 75
"""RFC 6350 section 3.2 and RFC 2426 section 2.6: a physical line holds at most 75 octets,
not counting the CRLF; a continuation line starts with one space, which counts."""

UID_NAMESPACE = uuid.UUID("6f1c3e0a-2d4b-5c8e-9a7f-0b1d2e3f4a5b")
"""Fixed namespace of the UUIDv5 made from a Graph id: the same contact gets the same UID
on every run, and the UID holds none of the ``/``, ``+``, ``=`` of Graph ids that some
CardDAV servers dislike in a resource name."""

NO_YEAR = 1604
"""The year Apple's address books (and the Exchange contacts they sync) use for a birthday
whose year is unknown; vCard 4.0 writes such a date ``--MMDD``."""

FN_FALLBACKS = ("displayName", "name parts", "fileAs", "nickName", "companyName",
                "emailAddresses", "mobilePhone", "businessPhones", "homePhones")
"""Where FN comes from, in order, when the contact has no display name."""

UNNAMED = "?"
"""FN of a contact that holds no name, company, address or phone at all."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Characters no vCard text value may hold (RFC 6350 section 3.3, RFC 2426 section 4). Text
pasted into a contact's notes can bring them along, invisible; they are removed, since a
parser may refuse the whole card for one of them."""

IMAGE_TYPES = {
    "image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF", "image/bmp": "BMP",
}

PHOTO_MAX = 1 << 20
"""The largest photo kept, decoded. Outlook keeps a contact's photo at most 648 pixels wide
(well under 200 KiB as JPEG); a larger image is no portrait an address book shows, and
servers that parse each card whole (Radicale) hold it in memory on every request."""

NOTE_CODES = ("kept_as_x_property", "dropped", "display_name_missing", "im_address_assumed_sip",
              "birthday_ambiguous", "birthday_unreadable", "photo_type_unknown",
              "photo_unreadable", "photo_too_big", "group_member_without_address")
"""Every code a ``Note`` may carry; its sentence is in the catalogue (``reports.i18n``)."""


@dataclass(frozen=True)
class Note:
    """One thing of a contact that the vCard drops or only approximates."""

    code: str
    detail: str
    params: dict[str, str] = field(default_factory=dict)
    """What the note's sentence names: ``field`` (a Graph property), ``property`` (the
    vCard property written instead), ``address``, ``instant``, ``date``, ``value``; for a
    photo left out, ``kib`` (its size) and ``limit_kib``; ``mappings.vcard`` adds
    ``version`` and ``kept``."""


def _note(code: str, detail: str, **params: str) -> Note:
    return Note(code, detail, params)


def contact_uid(graph_id: str) -> str:
    """The UID of the vCard made from the Graph contact ``graph_id`` (a bare UUID)."""
    return str(uuid.uuid5(UID_NAMESPACE, graph_id))


def contact_to_vcard(
    contact: Mapping[str, Any],
    *,
    photo: bytes | None = None,
    photo_type: str | None = None,
    version: str = "3.0",
) -> tuple[str, list[Note]]:
    """The vCard text of one Graph contact, and what it could not carry exactly.

    ``photo`` is the body of ``GET .../contacts/{id}/photo/$value`` and ``photo_type`` the
    Content-Type that came with it (``image/jpeg``) or a vCard 3.0 type (``JPEG``); without
    it the type is read from the image's first bytes. Unset Graph properties may be missing
    or ``null``. Raises ``ValueError`` for a version other than ``"3.0"`` or ``"4.0"``.
    """
    if version not in VERSIONS:
        raise ValueError(f"vCard version must be one of {VERSIONS}, not {version!r}")
    card = _CardWriter(contact, version)
    card.identity()
    card.names()
    card.addresses()
    card.work()
    card.birthday()
    card.links()
    card.relations()
    if photo:
        card.photo(photo, photo_type)
    return card.text(), card.notes


@dataclass(frozen=True)
class Member:
    """One member of a contact group: a contact of the same address book (the source id its
    UID comes from, ``contact_uid``), or an address alone."""

    name: str
    address: str
    source_id: str | None = None


def group_to_vcard(source_id: str, name: str, members: Iterable[Member], *,
                   version: str = "3.0", modified: datetime | None = None
                   ) -> tuple[str, list[Note]]:
    """The vCard of a contact group (an Outlook personal distribution list): in 4.0,
    ``KIND:group`` with a ``MEMBER`` per member (RFC 6350 6.1.4, 6.6.5); in 3.0, which has no
    group, Apple's ``X-ADDRESSBOOKSERVER-KIND:group`` and ``X-ADDRESSBOOKSERVER-MEMBER``, which
    SabreDAV, Nextcloud and iOS/macOS read. A member that is a contact is named by its UID
    (``urn:uuid:``), any other by its address (``mailto:``); a member with neither is left out
    and noted."""
    if version not in VERSIONS:
        raise ValueError(f"vCard version must be one of {VERSIONS}, not {version!r}")
    stamp = modified.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if modified else ""
    card = _CardWriter({"id": source_id, "displayName": name,
                        "lastModifiedDateTime": stamp}, version)
    card.identity()
    card.add("FN", escape_text(name or UNNAMED))
    card.add("N", escape_text(name) + ";;;;")
    card.add("KIND" if card.v4 else "X-ADDRESSBOOKSERVER-KIND", "group")
    member_property = "MEMBER" if card.v4 else "X-ADDRESSBOOKSERVER-MEMBER"
    for member in members:
        if member.source_id:
            card.add(member_property, f"urn:uuid:{contact_uid(member.source_id)}")
        elif member.address:
            card.add(member_property, f"mailto:{member.address}")
        else:
            card.notes.append(_note("group_member_without_address", member.name,
                                    value=member.name))
    return card.text(), card.notes


def birthday_date(value: str) -> tuple[date, bool]:
    """The calendar date a Graph birthday means, and whether that reading is doubtful.

    Graph gives a birthday as a UTC instant (``"1974-03-02T00:00:00Z"``). The contact's
    date is the one of the *nearest UTC midnight*, never the UTC date of the instant: the
    clients that write birthdays store the local midnight of the day, so a tenant in Paris
    gives ``"1974-03-01T23:00:00Z"`` (22:00 in summer) for 2 March, and Exchange ActiveSync
    says the time part "might be 11:59 and SHOULD be ignored" ([MS-ASCNTC] 2.2.2.6).
    Rounding is right for every time zone from UTC-11 to UTC+12. Local midnights of
    UTC+13/+14 (New Zealand in summer, Tonga, Kiribati) fall between 10:00 and 11:00 UTC of
    the day before, where UTC-10/-11 midnights fall on the day itself: an instant from
    10:00 to 12:00 UTC is read by rounding too, and reported as doubtful. An offset other
    than Z is first converted to UTC; a bare date is taken as it is. ``ValueError`` if the
    text is no ISO 8601 date.
    """
    text = value.strip()
    try:
        return date.fromisoformat(text), False
    except ValueError:
        instant = datetime.fromisoformat(text)
    if instant.tzinfo is not None:
        instant = instant.astimezone(UTC).replace(tzinfo=None)
    nearest_midnight = instant + timedelta(hours=12)
    doubtful = time(10) <= instant.time() <= time(12)
    return nearest_midnight.date(), doubtful


def vcard_fingerprint(text: str) -> str:
    """``"sha256:<hex>"`` of a vCard once line endings and folding are undone, without REV
    and PRODID: what a re-run compares to tell that a contact has not changed.

    Content lines keep their order and their bytes otherwise, so this matches the cards
    bascule writes and the servers that store them as given.
    """
    unified = text.replace("\r\n", "\n").replace("\r", "\n")
    unfolded = re.sub(r"\n[ \t]", "", unified)
    kept = [line for line in unfolded.split("\n")
            if line and _property_name(line) not in {"REV", "PRODID"}]
    digest = hashlib.sha256("\r\n".join(kept).encode("utf-8")).hexdigest()
    return f"sha256:{digest}"


def _property_name(line: str) -> str:
    name = re.split(r"[;:]", line, maxsplit=1)[0]
    return name.rsplit(".", 1)[-1].upper()


def escape_text(value: str) -> str:
    """A TEXT value escaped as RFC 6350 section 3.4 and RFC 2426 section 4 say."""
    value = CONTROL_CHARACTERS.sub("", value)
    value = value.replace("\\", "\\\\").replace(",", "\\,").replace(";", "\\;")
    return re.sub(r"\r\n|\r|\n", r"\\n", value)


def fold(line: str) -> str:
    """One content line folded into physical lines of at most 75 octets, joined by CRLF.

    A cut falls only between two characters, never inside the UTF-8 bytes of one.
    """
    pieces: list[str] = []
    room = FOLD_OCTETS
    start = 0
    used = 0
    for index, char in enumerate(line):
        size = len(char.encode("utf-8"))
        if used + size > room:
            pieces.append(line[start:index])
            start, used, room = index, 0, FOLD_OCTETS - 1
        used += size
    pieces.append(line[start:])
    return "\r\n ".join(pieces)


def _text(contact: Mapping[str, Any], key: str) -> str:
    value = contact.get(key)
    return value.strip() if isinstance(value, str) else ""


def _texts(contact: Mapping[str, Any], key: str) -> list[str]:
    values = contact.get(key) or []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def _compact(value: str) -> str:
    return re.sub(r"[\s.,\-]", "", value).casefold()


def _instant(value: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment


class _CardWriter:
    """Collects the content lines and notes of one vCard, in the order they are written."""

    def __init__(self, contact: Mapping[str, Any], version: str) -> None:
        self.contact = contact
        self.version = version
        self.v4 = version == "4.0"
        self.lines: list[str] = []
        self.notes: list[Note] = []

    def add(self, name: str, value: str, params: Iterable[str] = ()) -> None:
        self.lines.append(";".join([name, *params]) + ":" + value)

    def add_text(self, name: str, value: str, params: Iterable[str] = ()) -> None:
        if value:
            self.add(name, escape_text(value), params)

    def add_x(self, field: str, name: str, values: Iterable[str]) -> None:
        values = [v for v in values if v]
        for value in values:
            self.add_text(name, value)
        if values:
            self.notes.append(_note("kept_as_x_property", field, field=field, property=name))

    def types(self, *names: str) -> list[str]:
        if not names:
            return []
        written = [n.lower() if self.v4 else n.upper() for n in names]
        return ["TYPE=" + ",".join(written)]

    def text(self) -> str:
        lines = ["BEGIN:VCARD", f"VERSION:{self.version}", f"PRODID:{PRODID}",
                 *self.lines, "END:VCARD"]
        return "".join(fold(line) + "\r\n" for line in lines)

    def identity(self) -> None:
        graph_id = _text(self.contact, "id")
        if graph_id:
            uid = contact_uid(graph_id)
            self.add("UID", f"urn:uuid:{uid}" if self.v4 else uid)
        modified = _instant(_text(self.contact, "lastModifiedDateTime"))
        if modified is not None:
            self.add("REV", modified.strftime("%Y%m%dT%H%M%SZ"))

    def names(self) -> None:
        c = self.contact
        parts = [_text(c, k) for k in ("surname", "givenName", "middleName", "title",
                                       "generation")]
        self.add("FN", escape_text(self._formatted_name()))
        self.add("N", ";".join(escape_text(p) for p in parts))
        self.add_text("NICKNAME", _text(c, "nickName"))
        self.add_x("yomiGivenName", "X-PHONETIC-FIRST-NAME", [_text(c, "yomiGivenName")])
        self.add_x("yomiSurname", "X-PHONETIC-LAST-NAME", [_text(c, "yomiSurname")])
        self.add_x("yomiCompanyName", "X-PHONETIC-ORG", [_text(c, "yomiCompanyName")])
        self._derived_or_noted("fileAs", self._name_forms())
        given, middle, surname = (_text(c, k) for k in ("givenName", "middleName", "surname"))
        initials = "".join(p[0] for p in (given, middle, surname) if p)
        self._derived_or_noted("initials", {_compact(initials)})

    def _name_forms(self) -> set[str]:
        c = self.contact
        given, middle, surname = (_text(c, k) for k in ("givenName", "middleName", "surname"))
        company = _text(c, "companyName")
        forms = {_text(c, "displayName"), f"{surname} {given}", f"{given} {surname}",
                 f"{given} {middle} {surname}", f"{surname} {given} {middle}", company,
                 f"{surname} {given} ({company})", f"{company} ({surname} {given})"}
        return {_compact(f) for f in forms}

    def _derived_or_noted(self, field: str, derived: set[str]) -> None:
        value = _text(self.contact, field)
        if value and _compact(value) not in derived:
            self.notes.append(_note("dropped", field, field=field))

    def _formatted_name(self) -> str:
        c = self.contact
        display = _text(c, "displayName")
        if display:
            return display
        parts = " ".join(p for p in (_text(c, k) for k in (
            "title", "givenName", "middleName", "surname", "generation")) if p)
        emails = [_text(e, "address") for e in self._emails()]
        candidates = [parts, _text(c, "fileAs"), _text(c, "nickName"),
                      _text(c, "companyName"), next(iter(emails), ""),
                      _text(c, "mobilePhone"), next(iter(_texts(c, "businessPhones")), ""),
                      next(iter(_texts(c, "homePhones")), "")]
        for source, candidate in zip(FN_FALLBACKS[1:], candidates, strict=True):
            if candidate:
                self.notes.append(_note("display_name_missing", source, field=source))
                return candidate
        self.notes.append(_note("display_name_missing", "", field=UNNAMED))
        return UNNAMED

    def _emails(self) -> list[Mapping[str, Any]]:
        entries = self.contact.get("emailAddresses") or []
        return [e for e in entries if isinstance(e, Mapping) and _text(e, "address")]

    def addresses(self) -> None:
        c = self.contact
        display = _compact(_text(c, "displayName"))
        name_dropped = False
        for rank, entry in enumerate(self._emails()):
            address = _text(entry, "address")
            params = (["PREF=1"] if rank == 0 else []) if self.v4 else (
                ["TYPE=INTERNET,PREF"] if rank == 0 else ["TYPE=INTERNET"])
            self.add_text("EMAIL", address, params)
            name = _compact(_text(entry, "name"))
            forms = {"", _compact(address), display, display + f"({_compact(address)})"}
            name_dropped = name_dropped or name not in forms
        if name_dropped:
            self.notes.append(_note("dropped", "emailAddresses.name",
                                    field="emailAddresses.name"))
        for key, kinds in (("businessPhones", ("work", "voice")),
                           ("homePhones", ("home", "voice"))):
            for number in _texts(c, key):
                self.add_text("TEL", number, self.types(*kinds))
        self.add_text("TEL", _text(c, "mobilePhone"), self.types("cell"))
        for key, kinds in (("businessAddress", ("work",)), ("homeAddress", ("home",)),
                           ("otherAddress", ())):
            self._postal(c.get(key), self.types(*kinds))

    def _postal(self, address: Any, params: list[str]) -> None:
        if not isinstance(address, Mapping):
            return
        parts = [_text(address, k) for k in ("street", "city", "state", "postalCode",
                                             "countryOrRegion")]
        if any(parts):
            # Graph has no post-office box nor extended address: both components stay empty.
            self.add("ADR", ";".join(escape_text(p) for p in ["", "", *parts]), params)

    def work(self) -> None:
        c = self.contact
        company, department = _text(c, "companyName"), _text(c, "department")
        if company or department:
            units = [company, department] if department else [company]
            self.add("ORG", ";".join(escape_text(u) for u in units))
        self.add_text("TITLE", _text(c, "jobTitle"))
        self.add_text("ROLE", _text(c, "profession"))

    def birthday(self) -> None:
        value = _text(self.contact, "birthday")
        if not value:
            return
        try:
            day, doubtful = birthday_date(value)
        except ValueError:
            self.notes.append(_note("birthday_unreadable", value, value=value))
            return
        if doubtful:
            self.notes.append(_note("birthday_ambiguous", value, instant=value,
                                    date=day.isoformat()))
        if day.year == NO_YEAR and self.v4:
            self.add("BDAY", day.strftime("--%m%d"))
        elif day.year == NO_YEAR:
            self.add("BDAY", day.isoformat(), [f"X-APPLE-OMIT-YEAR={NO_YEAR}"])
        else:
            self.add("BDAY", day.strftime("%Y%m%d") if self.v4 else day.isoformat())

    def links(self) -> None:
        c = self.contact
        home_page = _text(c, "businessHomePage")
        if home_page:
            self.add("URL", home_page, self.types("work") if self.v4 else [])
        for address in _texts(c, "imAddresses"):
            self._im_property(address)
        categories = _texts(c, "categories")
        if categories:
            self.add("CATEGORIES", ",".join(escape_text(x) for x in categories))
        notes = c.get("personalNotes")
        self.add_text("NOTE", notes if isinstance(notes, str) else "")

    def _im_property(self, address: str) -> None:
        """IMPP wants a URI. Exchange keeps the Skype for Business / Teams address there,
        a SIP address often written without its scheme; anything else stays as text."""
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:\S", address):
            self.add("IMPP", address)
        elif re.fullmatch(r"[^@\s]+@[^@\s]+", address):
            self.add("IMPP", f"sip:{address}")
            self.notes.append(_note("im_address_assumed_sip", "imAddresses",
                                    address=address))
        else:
            self.add_x("imAddresses", "X-MS-IMADDRESS", [address])

    def relations(self) -> None:
        c = self.contact
        spouse, children = _text(c, "spouseName"), _texts(c, "children")
        if self.v4:
            if spouse:
                self.add_text("RELATED", spouse, ["TYPE=spouse", "VALUE=text"])
            for child in children:
                self.add_text("RELATED", child, ["TYPE=child", "VALUE=text"])
        else:
            self.add_x("spouseName", "X-MS-SPOUSE", [spouse])
            self.add_x("children", "X-MS-CHILD", children)
        self.add_x("manager", "X-MS-MANAGER", [_text(c, "manager")])
        self.add_x("assistantName", "X-MS-ASSISTANT", [_text(c, "assistantName")])
        self.add_x("officeLocation", "X-MS-OFFICE", [_text(c, "officeLocation")])

    def photo(self, photo: bytes, photo_type: str | None) -> None:
        if len(photo) > PHOTO_MAX:
            self.notes.append(photo_too_big(len(photo)))
            return
        mime = _photo_mime(photo, photo_type)
        if mime is None:
            self.notes.append(_note("photo_type_unknown", photo_type or ""))
        encoded = base64.b64encode(photo).decode("ascii")
        if self.v4:
            self.add("PHOTO", f"data:{mime or 'application/octet-stream'};base64,{encoded}")
        else:
            params = ["ENCODING=b"] + ([f"TYPE={IMAGE_TYPES[mime]}"] if mime else [])
            self.add("PHOTO", encoded, params)


def photo_too_big(size: int) -> Note:
    """The note of a photo of ``size`` bytes left out."""
    return _note("photo_too_big", str(size), kib=str(size // 1024),
                 limit_kib=str(PHOTO_MAX // 1024))


def _photo_mime(photo: bytes, declared: str | None) -> str | None:
    if declared:
        media = declared.split(";", 1)[0].strip().lower()
        by_short = {short.lower(): mime for mime, short in IMAGE_TYPES.items()}
        media = by_short.get(media, media)
        if media == "image/jpg":
            media = "image/jpeg"
        if media in IMAGE_TYPES:
            return media
    signatures = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                  (b"GIF8", "image/gif"), (b"BM", "image/bmp"))
    return next((mime for magic, mime in signatures if photo.startswith(magic)), None)
