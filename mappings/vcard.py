"""vCards rewritten into a version a CardDAV server takes, their photos checked on the way.

A CardDAV server lists the vCard versions it takes (RFC 6352, 6.2.2,
``supported-address-data``; 3.0 alone when it lists none). ``for_server`` leaves a card of a
listed version as it is, and writes any other (2.1 from an old export, 4.0 from a recent
one) as vCard 3.0, the version every server lists:

=================================  ============================================================
2.1 or 4.0                         3.0
=================================  ============================================================
2.1 ``TEL;WORK;VOICE``             ``TEL;TYPE=WORK,VOICE`` (a bare parameter is a type)
2.1 ``ENCODING=QUOTED-PRINTABLE``  the text decoded (soft line breaks joined) in its
with ``CHARSET``                   ``CHARSET`` (UTF-8, else Windows-1252), escaped as 3.0 text
2.1 ``ENCODING=BASE64``            ``ENCODING=b``
2.1 ``VALUE=URL``                  ``VALUE=uri``
2.1 ``GEO:lat,lon``                ``GEO:lat;lon``
4.0 ``PHOTO:data:image/jpeg;...``  ``PHOTO;ENCODING=b;TYPE=JPEG:...`` (also LOGO, SOUND, KEY);
                                   another URI gets ``VALUE=uri``
4.0 ``KIND:group``                 ``X-ADDRESSBOOKSERVER-KIND:group`` (Apple's contact groups,
                                   which every server here keeps and Cyrus serves as
                                   ``KIND:group`` to a client asking for 4.0);
                                   ``KIND:individual`` is 3.0's default and goes
4.0 ``MEMBER:urn:uuid:...``        ``X-ADDRESSBOOKSERVER-MEMBER:urn:uuid:...``
4.0 ``TEL;VALUE=uri:tel:+33...``   ``TEL:+33...``
4.0 ``PREF=1``                     ``TYPE=pref``
4.0 ``BDAY:--0302``                ``BDAY;X-APPLE-OMIT-YEAR=1604:1604-03-02``, as
                                   ``mappings.contacts`` writes a birthday without its year
4.0 ``ANNIVERSARY``, ``GENDER``    ``X-ANNIVERSARY``, ``X-GENDER`` (noted)
4.0 ``RELATED``, ``LANG``, ``XML``  dropped (noted): no place in 3.0
4.0 ``CLIENTPIDMAP``, parameters   dropped silently: synchronisation bookkeeping and sort
``PID``, ``ALTID``, ``SORT-AS``,   hints of the writer, nothing a person reads
``MEDIATYPE``, ``CALSCALE``...
=================================  ============================================================

A card without ``N`` (4.0 makes it optional, 3.0 requires it) gets an empty one; N and ADR
get every component 3.0 gives them. UIDs are
kept as they are (``urn:uuid:...`` included): group members name their contacts by them.

Photos are checked in every card, converted or not: one whose base64 does not decode, or
larger than ``mappings.contacts.PHOTO_MAX`` once decoded, is left out and noted, and the card goes on without
it. Each thing left out or changed in meaning is a ``Note`` (``mappings.contacts.Note``).

The text is parsed here rather than with vobject (a test dependency only): what is needed is
a line-level rewrite that leaves every other property as it was, where vobject reads a
whole card into its own model and writes it back its way.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from mappings.contacts import (
    IMAGE_TYPES,
    NO_YEAR,
    PHOTO_MAX,
    Note,
    escape_text,
    fold,
    photo_too_big,
)

TARGET = "3.0"
"""The version a card no listed version takes is written in: every server lists it."""
DEFAULT_VERSIONS = frozenset({TARGET})
"""What a server takes when it lists nothing (RFC 6352, 6.2.2)."""

NOTE_CODES = ("vcard_property_dropped", "vcard_kept_as_x_property", "photo_unreadable",
              "photo_too_big")
"""Every code a ``Note`` of this module may carry; its sentence is in the catalogue."""

BINARY = frozenset({"PHOTO", "LOGO", "SOUND", "KEY"})
STRUCTURED = frozenset({"N", "ADR", "ORG"})
PARTS = {"N": 5, "ADR": 7}
"""The components 3.0 gives N and ADR (RFC 2426, 3.1.2 and 3.2.1): a 2.1 card may write
fewer, which servers fill in (Radicale), so they are filled in here first."""
LISTS = frozenset({"CATEGORIES", "NICKNAME"})
TEXT = frozenset({"FN", "NOTE", "TITLE", "ROLE", "LABEL", "MAILER", "SORT-STRING"})
"""2.1 properties whose value is text: 2.1 escapes nothing but ``;``, 3.0 commas too."""
ENCODINGS_21 = frozenset({"QUOTED-PRINTABLE", "BASE64", "8BIT", "7BIT", "B"})
DROPPED_40 = frozenset({"RELATED", "LANG", "XML"})
SILENT_40 = frozenset({"CLIENTPIDMAP"})
X_40 = {"ANNIVERSARY": "X-ANNIVERSARY", "GENDER": "X-GENDER"}
PARAMETERS_30 = frozenset({"TYPE", "ENCODING", "VALUE", "LANGUAGE", "CHARSET"})
"""Parameters 3.0 defines (RFC 2426, 2425); X- parameters are kept too."""
_HEAD_END = re.compile(r'^((?:[^":]|"[^"]*")*):')


@dataclass
class Property:
    """One content line: ``group.NAME;PARAM=a,b:value``, the value as written (escaped)."""

    name: str
    params: list[tuple[str, list[str]]]
    value: str
    group: str = ""

    def param(self, name: str) -> list[str]:
        return [v for key, values in self.params if key == name for v in values]

    def without(self, *names: str) -> None:
        self.params = [(k, v) for k, v in self.params if k not in names]

    def line(self) -> str:
        head = f"{self.group}.{self.name}" if self.group else self.name
        for key, values in self.params:
            head += f";{key}=" + ",".join(_quoted(v) for v in values) if values else f";{key}"
        return fold(f"{head}:{self.value}")


@dataclass
class Card:
    """One vCard, parsed."""

    version: str
    properties: list[Property] = field(default_factory=list)

    def text(self) -> str:
        lines = ["BEGIN:VCARD", f"VERSION:{self.version}"]
        return "".join(line + "\r\n" for line in lines) + "".join(
            p.line() + "\r\n" for p in self.properties) + "END:VCARD\r\n"


def for_server(data: bytes, accepted: Collection[str]) -> tuple[bytes | None, list[Note]]:
    """The card as the server should be given it (``None``: as it is), and what could not
    be carried. ``accepted`` are the versions the server lists. A text that is not one
    vCard (several, or none) is left as it is: the server tells."""
    text, recoded = _decoded(data)
    card = parse(text)
    if card is None:
        return None, []
    notes: list[Note] = []
    converting = card.version not in (accepted or DEFAULT_VERSIONS)
    if converting:
        card = to_30(card, notes)
    photos_changed = _checked_photos(card, notes)
    if not (converting or recoded or photos_changed):
        return None, notes
    return card.text().encode("utf-8"), notes


def parse(text: str) -> Card | None:
    """The vCard of ``text``, or ``None`` when it holds not exactly one."""
    lines = _logical_lines(text)
    begins = [i for i, line in enumerate(lines) if line.upper() == "BEGIN:VCARD"]
    ends = [i for i, line in enumerate(lines) if line.upper() == "END:VCARD"]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        return None
    card = Card("")
    for line in lines[begins[0] + 1:ends[0]]:
        prop = _property(line)
        if prop is None:
            continue
        if prop.name == "VERSION" and not prop.group:
            card.version = prop.value.strip()
        else:
            card.properties.append(prop)
    return card


def to_30(card: Card, notes: list[Note]) -> Card:
    """The card as vCard 3.0 (see the module's table), each loss a note."""
    source = card.version
    converted = Card(TARGET)
    for prop in card.properties:
        kept = _from_21(prop) if source == "2.1" else _from_40(prop, notes) \
            if source == "4.0" else prop
        if kept is not None and kept.name in PARTS:
            present = len(re.split(r"(?<!\\);", kept.value))
            kept.value += ";" * max(0, PARTS[kept.name] - present)
        if kept is not None:
            converted.properties.append(kept)
    if not any(p.name == "N" for p in converted.properties):
        converted.properties.insert(0, Property("N", [], ";;;;"))
    return converted


def _from_21(prop: Property) -> Property:
    params: list[tuple[str, list[str]]] = []
    encoding = ""
    charset = ""
    for key, values in prop.params:
        if not values and key in ENCODINGS_21:
            key, values = "ENCODING", [key]
        elif not values:
            key, values = "TYPE", [key]
        if key == "ENCODING":
            encoding = values[0].upper() if values else ""
            continue
        if key == "CHARSET":
            charset = values[0] if values else ""
            continue
        if key == "VALUE":
            values = ["uri" if v.upper() == "URL" else v for v in values]
        params.append((key, values))
    value = prop.value
    if encoding == "QUOTED-PRINTABLE":
        value = _text(quopri.decodestring(value.encode("utf-8")), charset)
    if encoding in ("BASE64", "B"):
        params.append(("ENCODING", ["b"]))
        value = re.sub(r"\s", "", value)
    elif prop.name in STRUCTURED:
        value = ";".join(escape_text(part.replace("\\;", ";"))
                         for part in re.split(r"(?<!\\);", value))
    elif prop.name in TEXT:
        value = escape_text(value.replace("\\;", ";"))
    elif prop.name in LISTS:
        value = ",".join(escape_text(part) for part in re.split(r"[,;]", value))
    elif prop.name == "GEO":
        value = value.replace(",", ";")
    return _merged(Property(prop.name, params, value, prop.group))


def _from_40(prop: Property, notes: list[Note]) -> Property | None:
    name = prop.name
    if name in SILENT_40 or (name == "KIND" and prop.value.lower() == "individual"):
        return None
    if name in DROPPED_40 or (name == "KIND" and prop.value.lower() != "group") or (
            name == "BDAY" and prop.param("VALUE") == ["text"]):
        notes.append(Note("vcard_property_dropped", name, {"property": name,
                                                             "version": TARGET}))
        return None
    pref = prop.param("PREF")
    types = prop.param("TYPE") + (["pref"] if pref == ["1"] else [])
    params = [(k, v) for k, v in prop.params
              if (k in PARAMETERS_30 or k.startswith("X-")) and k != "TYPE"]
    if types:
        params.append(("TYPE", types))
    value = prop.value
    if name in X_40:
        notes.append(Note("vcard_kept_as_x_property", name, {"property": name,
                                                               "kept": X_40[name],
                                                               "version": TARGET}))
        name = X_40[name]
    elif name == "KIND":
        name = "X-ADDRESSBOOKSERVER-KIND"
    elif name == "MEMBER":
        name = "X-ADDRESSBOOKSERVER-MEMBER"
    elif name == "TEL" and value.lower().startswith("tel:"):
        value = value[4:]
        params = [(k, v) for k, v in params if k != "VALUE"]
    elif name == "BDAY" and re.fullmatch(r"--\d{4}", value):
        value = f"{NO_YEAR}-{value[2:4]}-{value[4:6]}"
        params.append(("X-APPLE-OMIT-YEAR", [str(NO_YEAR)]))
    elif name in BINARY:
        return _binary_40(Property(name, params, value, prop.group))
    return Property(name, params, value, prop.group)


def _binary_40(prop: Property) -> Property:
    """A data: URI as inline base64 with its 3.0 type; another URI as ``VALUE=uri``."""
    found = re.fullmatch(r"data:([^;,]*)((?:;[^;,]*)*),(.*)", prop.value, re.DOTALL)
    prop.without("VALUE", "ENCODING")
    if found is None or ";base64" not in found.group(2).lower():
        prop.params.append(("VALUE", ["uri"]))
        return prop
    media = found.group(1).lower()
    short = IMAGE_TYPES.get(media) or media.rpartition("/")[2].upper()
    prop.without("TYPE")
    prop.params += [("ENCODING", ["b"])] + ([("TYPE", [short])] if short else [])
    prop.value = found.group(3)
    return prop


def _checked_photos(card: Card, notes: list[Note]) -> bool:
    """Drop each photo that does not decode or is too big; whether any went."""
    kept = []
    for prop in card.properties:
        problem = _photo_problem(prop)
        if problem is None:
            kept.append(prop)
        else:
            notes.append(problem)
    changed = len(kept) != len(card.properties)
    card.properties = kept
    return changed


def _photo_problem(prop: Property) -> Note | None:
    if prop.name != "PHOTO":
        return None
    encoding = [v.lower() for v in prop.param("ENCODING")]
    inline = re.fullmatch(r"data:[^,]*;base64,(.*)", prop.value, re.DOTALL | re.IGNORECASE)
    if inline is not None:
        encoded = inline.group(1)
    elif encoding and encoding[0] in ("b", "base64"):
        encoded = prop.value
    else:
        return None
    try:
        image = base64.b64decode(re.sub(r"\s", "", encoded), validate=True)
    except (binascii.Error, ValueError) as error:
        return Note("photo_unreadable", str(error), {"property": prop.name})
    if not image:
        return Note("photo_unreadable", "empty", {"property": prop.name})
    return photo_too_big(len(image)) if len(image) > PHOTO_MAX else None


def _merged(prop: Property) -> Property:
    """One TYPE parameter holding every type, as 3.0 writes them."""
    types = prop.param("TYPE")
    prop.without("TYPE")
    if types:
        prop.params.append(("TYPE", types))
    return prop


def _decoded(data: bytes) -> tuple[str, bool]:
    """The text, and whether it had to be read otherwise than as UTF-8 (then it is
    written again in UTF-8)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), True


def _text(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset or "utf-8")
    except (LookupError, UnicodeDecodeError):
        return raw.decode("cp1252", "replace")


def _logical_lines(text: str) -> list[str]:
    """Lines unfolded; a quoted-printable value ending in ``=`` (a soft line break, vCard
    2.1) goes on with the next line, which need not start with a space."""
    lines: list[str] = []
    for raw in re.split(r"\r\n|\r|\n", text):
        if lines and raw[:1] in (" ", "\t"):
            lines[-1] += raw[1:]
        elif lines and lines[-1].endswith("=") and _quoted_printable(lines[-1]):
            lines[-1] = lines[-1][:-1] + raw
        elif raw.strip():
            lines.append(raw)
    return lines


def _quoted_printable(line: str) -> bool:
    head = _HEAD_END.match(line)
    return head is not None and "QUOTED-PRINTABLE" in head.group(1).upper()


def _property(line: str) -> Property | None:
    head = _HEAD_END.match(line)
    if head is None:
        return None
    value = line[head.end():]
    parts = _split(head.group(1), ";")
    group, _, name = parts[0].rpartition(".")
    params = []
    for part in parts[1:]:
        key, equals, values = part.partition("=")
        key = key.strip().upper()
        found = [v[1:-1] if v.startswith('"') and v.endswith('"') and len(v) > 1 else v
                 for v in _split(values, ",")] if equals else []
        if key == "TYPE":  # TYPE="work,voice" is two types
            found = [t for v in found for t in v.split(",")]
        params.append((key, found))
    return Property(name.strip().upper(), params, value, group)


def _split(text: str, separator: str) -> list[str]:
    """``text`` cut at each separator outside double quotes."""
    parts, inside, start = [], False, 0
    for index, char in enumerate(text):
        if char == '"':
            inside = not inside
        elif char == separator and not inside:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _quoted(value: str) -> str:
    return f'"{value}"' if any(c in value for c in ",;:") else value
