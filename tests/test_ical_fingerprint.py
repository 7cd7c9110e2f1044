"""A calendar object's semantic fingerprint: the same whatever a server's rewriting, different
for any change of what it says; and, against Cyrus, what it gives back has the fingerprint of
what it was given."""

from __future__ import annotations

import random

import requests

from mappings.ical_fingerprint import semantic_fingerprint
from mappings.scheduling import client_scheduled
from tests.conformance.items import MEMORY_BOUND, big_document, peak_memory
from tests.cyrus import Cyrus
from tests.test_scheduling import OWNER, organised, orphan, received, series, vcalendar, vevent

EVENT = (
    b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//bascule//tests//FR\r\n"
    b"BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nBEGIN:STANDARD\r\nDTSTART:19701025T030000\r\n"
    b"TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n"
    b"END:STANDARD\r\nBEGIN:DAYLIGHT\r\nDTSTART:19700329T020000\r\nTZOFFSETFROM:+0100\r\n"
    b"TZOFFSETTO:+0200\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
    b"END:VTIMEZONE\r\n"
    b"BEGIN:VEVENT\r\nUID:conseil-1\r\nDTSTAMP:20300101T090000Z\r\n"
    b"DTSTART;TZID=Europe/Paris:20300105T100000\r\nDURATION:PT1H\r\n"
    b"SUMMARY:Conseil municipal \xe2\x80\x93 budget\r\n"
    b"DESCRIPTION:Ordre du jour\\n1. Budget primitif\\, vote\\n2. " + "é".encode() * 60 + b"\r\n"
    b"CATEGORIES:Conseil,Budget\r\nCATEGORIES:Public\r\n"
    b'ORGANIZER;CN="Dupont; J.":mailto:alice@example.org\r\n'
    b"ATTENDEE;PARTSTAT=ACCEPTED;ROLE=CHAIR:mailto:alice@example.org\r\n"
    b"ATTENDEE;PARTSTAT=NEEDS-ACTION;CN=Carole:mailto:carol@example.net\r\n"
    b"BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Rappel\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
    b"END:VEVENT\r\nEND:VCALENDAR\r\n"
)


CAROLE = b"ATTENDEE;PARTSTAT=NEEDS-ACTION;CN=Carole:mailto:carol@example.net\r\n"


def fingerprint(body: bytes, size: int | None = None) -> str:
    pieces = [body] if size is None else [body[i:i + size] for i in range(0, len(body), size)]
    return semantic_fingerprint(pieces)


def folded(body: bytes, width: int, ending: bytes = b"\r\n") -> bytes:
    """Every line cut every ``width`` bytes, as a careless server folds (even inside a
    UTF-8 sequence: folding is of octets)."""
    out = []
    for line in body.split(b"\r\n")[:-1]:
        parts = [line[i:i + width] for i in range(0, len(line), width)] or [b""]
        out.append((ending + b" ").join(parts))
    return ending.join(out) + ending


def reordered(body: bytes, seed: int) -> bytes:
    """The VEVENT's properties in another order (its VALARM kept whole)."""
    head, rest = body.split(b"BEGIN:VEVENT\r\n")
    inside, tail = rest.split(b"END:VEVENT\r\n")
    alarm_start = inside.index(b"BEGIN:VALARM")
    alarm = inside[alarm_start:]
    lines = inside[:alarm_start].split(b"\r\n")[:-1]
    random.Random(seed).shuffle(lines)
    return head + b"BEGIN:VEVENT\r\n" + alarm + b"\r\n".join(lines) + b"\r\nEND:VEVENT\r\n" + tail


def test_what_a_server_rewrites_leaves_the_fingerprint_alone():
    same = fingerprint(EVENT)
    assert same.startswith("ical:")
    rewrites = {
        "refolded at 75": folded(EVENT, 75),
        "refolded at 7, LF alone": folded(EVENT, 7, b"\n"),
        "byte-order mark": b"\xef\xbb\xbf" + EVENT,
        "properties reordered": reordered(EVENT, 1),
        "categories one per line": EVENT.replace(b"CATEGORIES:Conseil,Budget\r\n",
                                                 b"CATEGORIES:Budget\r\nCATEGORIES:Conseil\r\n"),
        "categories on one line": EVENT.replace(b"CATEGORIES:Conseil,Budget\r\nCATEGORIES:Public",
                                                b"CATEGORIES:Public,Conseil,Budget"),
        "timezone after the event": EVENT.replace(EVENT[EVENT.index(b"BEGIN:VTIMEZONE"):
                                                        EVENT.index(b"BEGIN:VEVENT")], b"")
        .replace(b"END:VCALENDAR", EVENT[EVENT.index(b"BEGIN:VTIMEZONE"):
                                         EVENT.index(b"BEGIN:VEVENT")] + b"END:VCALENDAR"),
        "scheduling parameters": b"".join(client_scheduled([EVENT])).replace(
            b"ROLE=CHAIR", b"ROLE=CHAIR;SCHEDULE-STATUS=1.2"),
        "the server's PRODID": EVENT.replace(b"-//bascule//tests//FR", b"-//CyrusIMAP.org//EN"),
        "a rule's parts in another order": EVENT.replace(b"BYMONTH=10;BYDAY=-1SU",
                                                          b"BYDAY=-1SU;BYMONTH=10"),
        "names in lower case, parameters reordered, quotes not needed": EVENT.replace(
            b"ATTENDEE;PARTSTAT=NEEDS-ACTION;CN=Carole",
            b'attendee;cn="Carole";partstat=NEEDS-ACTION'),
    }
    for what, body in rewrites.items():
        assert body != EVENT, what
        assert fingerprint(body) == same, what


SERIES = vcalendar(
    "BEGIN:VTIMEZONE\r\nTZID:Europe/Paris\r\nCOMMENT:Valid from 2024 to 2038.\r\n"
    "BEGIN:STANDARD\r\nDTSTART:20241027T030000\r\nTZOFFSETFROM:+0200\r\n"
    "TZOFFSETTO:+0100\r\nRDATE:20251026T030000,20261025T030000\r\nEND:STANDARD\r\n"
    "END:VTIMEZONE\r\n",
    vevent("serie", OWNER, {}, extra=(
        "RRULE:FREQ=WEEKLY;BYDAY=MO;WKST=MO\r\nEXDATE:20300114T100000Z,20300121T100000Z\r\n"
        "CONFERENCE;FEATURE=AUDIO,VIDEO;VALUE=URI:https://visio.example/l/19%3ameeting\r\n"
        "URL:https://teams.microsoft.com/l/meetup-join/19%3ameeting_Y29uc2VpbA%40thread.v2/0\r\n"
    )))
CARD = (b"BEGIN:VCARD\r\nVERSION:3.0\r\nUID:c-1\r\nFN:H\xc3\xa9l\xc3\xa8ne No\xc3\xabl\r\n"
        b"NICKNAME:Lene,Noelle\r\nTEL;TYPE=WORK,VOICE:+33 1 23 45 67 89\r\nEND:VCARD\r\n")


def test_what_cyrus_rewrites_in_series_zones_and_cards_leaves_the_fingerprint_alone():
    """Each as Cyrus 3.6 gave back what bascule sent from Graph's calendars and contacts."""
    url = b"URL:https://teams.microsoft.com/l/meetup-join/19%3ameeting_Y29uc2VpbA%40thread.v2/0"
    html = SERIES.replace(b"SUMMARY:Conseil", b"SUMMARY:Conseil&nbsp;: budget")
    rewrites = {
        "a list of dates one per line": (SERIES, SERIES.replace(
            b"RDATE:20251026T030000,20261025T030000",
            b"RDATE:20261025T030000\r\nRDATE:20251026T030000").replace(
            b"EXDATE:20300114T100000Z,20300121T100000Z",
            b"EXDATE:20300114T100000Z\r\nEXDATE:20300121T100000Z")),
        "the rule's default week start left out": (SERIES, SERIES.replace(b";WKST=MO", b"")),
        "the zone's comment dropped": (SERIES, SERIES.replace(
            b"COMMENT:Valid from 2024 to 2038.\r\n", b"")),
        "a list parameter quoted": (SERIES, SERIES.replace(b"FEATURE=AUDIO,VIDEO",
                                                            b'FEATURE="VIDEO,AUDIO"')),
        "a long URL folded the way Cyrus does": (SERIES, SERIES.replace(
            url + b"\r\n", b"URL:https:\r\n " + url[len(b"URL:https:"):] + b"\r\r\n \n")),
        "a parameter's values once each": (CARD, CARD.replace(b"TYPE=WORK,VOICE",
                                                              b"TYPE=VOICE;TYPE=WORK")),
        "a nickname list one per line": (CARD, CARD.replace(
            b"NICKNAME:Lene,Noelle", b"NICKNAME:Noelle\r\nNICKNAME:Lene")),
        "a text value's semicolon escaped (vobject, in Radicale)": (
            html, html.replace(b"&nbsp;", b"&nbsp\\;")),
    }
    for what, (given, back) in rewrites.items():
        assert back != given, what
        assert fingerprint(back) == fingerprint(given), what
    assert fingerprint(SERIES.replace(b"20261025T030000", b"20261025T020000")) != \
        fingerprint(SERIES)
    assert fingerprint(SERIES.replace(b"WKST=MO", b"WKST=SU")) != fingerprint(SERIES)
    assert fingerprint(CARD.replace(b"TYPE=WORK,VOICE", b"TYPE=WORK")) != fingerprint(CARD)
    name = CARD.replace(b"END:VCARD", b"N:No\\;l;H\xc3\xa9l\xc3\xa8ne;;;\r\nEND:VCARD")
    assert fingerprint(name) != fingerprint(name.replace(b"No\\;l", b"No;l"))


def test_any_change_of_what_the_object_says_changes_the_fingerprint():
    same = fingerprint(EVENT)
    changes = {
        "summary": (b"budget", b"budgets"),
        "a parameter's value": (b"PARTSTAT=ACCEPTED", b"PARTSTAT=DECLINED"),
        "a parameter added": (b"CN=Carole", b"CN=Carole;RSVP=TRUE"),
        "an escaped comma is one category": (b"CATEGORIES:Conseil,Budget",
                                             b"CATEGORIES:Conseil\\,Budget"),
        "a time": (b"20300105T100000", b"20300105T110000"),
        "a zone": (b"TZID=Europe/Paris:2030", b"TZID=Europe/Brussels:2030"),
        "the alarm's trigger": (b"TRIGGER:-PT15M", b"TRIGGER:-PT30M"),
        "a rule's part": (b"BYMONTH=10;", b"BYMONTH=11;"),
        "a property moved into the alarm": (b"DURATION:PT1H\r\n", b""),
        "an attendee gone": (CAROLE, b""),
        "a folded value changed past its fold": (b"2. \xc3\xa9", b"2. e"),
    }
    for what, (old, new) in changes.items():
        body = EVENT.replace(old, new, 1)
        if what == "a property moved into the alarm":
            body = body.replace(b"TRIGGER:-PT15M\r\n", b"TRIGGER:-PT15M\r\nDURATION:PT1H\r\n")
        assert body != EVENT, what
        assert fingerprint(body) != same, what
    # A component's content does not leak into its neighbour's: two events swapping a line.
    two = vcalendar(vevent("a", OWNER, {}, extra="LOCATION:Mairie\r\n"),
                    vevent("b", OWNER, {}))
    swapped = vcalendar(vevent("a", OWNER, {}), vevent("b", OWNER, {},
                                                       extra="LOCATION:Mairie\r\n"))
    assert fingerprint(two) != fingerprint(swapped)


def test_the_same_fingerprint_whatever_the_chunks():
    expected = fingerprint(EVENT)
    for size in (1, 2, 3, 7, 64, 1000):
        assert fingerprint(EVENT, size) == expected, size
    lf = folded(EVENT, 9, b"\n")
    for seed in range(50):
        cuts = sorted(random.Random(seed).sample(range(1, len(lf)), 12))
        pieces = [lf[a:b] for a, b in zip([0, *cuts], [*cuts, len(lf)])]
        assert semantic_fingerprint(pieces) == expected, seed


def test_a_huge_attachment_is_read_in_bounded_memory():
    big = big_document("calendar")

    def read() -> str:
        with big.open() as body:
            return semantic_fingerprint(iter(lambda: body.read(1 << 20), b""))

    found, peak = peak_memory(read)
    assert found.startswith("ical:")
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held"


def test_what_cyrus_gives_back_has_the_fingerprint_of_what_it_was_given(cyrus: Cyrus):
    """Cyrus refolds, splits lists and stamps its PRODID: the objects bascule would write
    (rewritten against scheduling) come back with the fingerprint they went with, which is
    also the source's."""
    auth = (OWNER, cyrus.users[OWNER])
    objects = {"organised": organised("organised"), "received": received("received"),
               "series": series("series"), "orphan": orphan("orphan"),
               "conseil-1": EVENT.replace(b"alice@example.org", OWNER.encode())}
    for uid, source in objects.items():
        sent = b"".join(client_scheduled([source]))
        url = f"{cyrus.calendar_url(OWNER)}{uid}.ics"
        answer = requests.put(url, data=sent, auth=auth, timeout=30,
                              headers={"Content-Type": "text/calendar; charset=utf-8",
                                       "If-None-Match": "*"})
        assert answer.status_code in (201, 204), (uid, answer.status_code, answer.text)
        stored = requests.get(url, auth=auth, timeout=30)
        assert stored.status_code == 200, (uid, stored.status_code)
        assert fingerprint(stored.content) == fingerprint(sent) == fingerprint(source), (
            uid, stored.content.decode())
    assert cyrus.captured() == []


def test_a_vcard_rewritten_keeps_its_fingerprint_and_a_change_does_not():
    card = ("BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//bascule//tests//FR\r\nUID:helene-1\r\n"
            "FN:Hélène Noël\r\nN:Noël;Hélène;;;\r\nEMAIL;TYPE=work:helene.noel@ville-exemple.fr\r\n"
            "CATEGORIES:Élus,Urbanisme\r\nNOTE:Adjointe à l'urbanisme\\, mandat 2026\r\n"
            "END:VCARD\r\n").encode()
    same = fingerprint(card)
    split = card.replace(b"CATEGORIES:\xc3\x89lus,Urbanisme",
                         b"CATEGORIES:Urbanisme\r\nCATEGORIES:\xc3\x89lus").replace(
        b"EMAIL;TYPE=work", b'email;type="work"')
    assert split != card
    assert fingerprint(folded(split, 11, b"\n")) == same
    assert fingerprint(card.replace(b"helene.noel@", b"h.noel@")) != same
    assert fingerprint(card.replace(b"mandat 2026", b"mandat 2020")) != same
