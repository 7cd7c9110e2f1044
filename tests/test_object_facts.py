"""What a calendar object says of its UID and time zones, read as its chunks go by."""

from __future__ import annotations

from mappings.object_facts import HEAD, ObjectFacts

OBJECT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\n"
    b"BEGIN:STANDARD\r\nDTSTART:19701025T030000\r\nTZOFFSETFROM:+0200\r\n"
    b"TZOFFSETTO:+0100\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\n"
    b"UID:conseil-1\r\nDTSTART;TZID=Europe/Paris:20300105T100000\r\n"
    b'DTEND;TZID="America/New_York":20300105T110000\r\n'
    b"EXDATE;VALUE=DATE-TIME;TZ\r\n ID=Mars/Olympus_Mons:20300112T100000\r\n"
    b"ATTACH;ENCODING=BASE64;VALUE=BINARY:" + b"QUJD" * 50_000 + b"\r\n"
    b"DESCRIPTION:Ordre du jour\\; TZID=Not/A_Zone\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
)


def facts_of(body: bytes, size: int | None) -> tuple[ObjectFacts, bytes]:
    facts = ObjectFacts()
    pieces = [body] if size is None else [body[i:i + size] for i in range(0, len(body), size)]
    return facts, b"".join(facts(pieces))


def test_uid_and_zones_named_described_or_unknown_whatever_the_chunks():
    for size in (None, 1, 7, 64, HEAD + 3, 4096):
        facts, passed = facts_of(OBJECT, size)
        assert passed == OBJECT, size
        assert facts.has_uid, size
        assert facts.zones_described == {"Europe/Paris"}, size
        assert facts.zones_named == {"Europe/Paris", "America/New_York", "Mars/Olympus_Mons"}
        assert facts.unknown_zones() == ["Mars/Olympus_Mons"]
        assert facts.undescribed_zones() == ["America/New_York"]


def test_an_object_without_uid_says_so():
    facts, _ = facts_of(OBJECT.replace(b"UID:conseil-1\r\n", b""), 5)
    assert not facts.has_uid
    facts, _ = facts_of(b"BEGIN:VCARD\nVERSION:3.0\nFN:Sans retour\nUID:abc", 3)
    assert facts.has_uid
