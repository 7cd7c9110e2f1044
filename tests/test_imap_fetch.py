"""The fast FETCH reader gives what imapclient's parser gives, on a real Dovecot's answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import imapclient
from imapclient.response_parser import parse_fetch_response

from connectors.imap.fetch import _read, fetch, parse_fetch
from tests.dovecot import Dovecot
from tests.test_imap_source import mailbox, message

MUMBAI = timezone(timedelta(hours=5, minutes=30))
NEW_YORK_WINTER = timezone(timedelta(hours=-5))


def _seeded(dovecot: Dovecot) -> imapclient.IMAPClient:
    client = mailbox(dovecot)
    client.create_folder("Archives")
    client.append("Archives", message("Un"), flags=(b"\\Seen", b"$Important", b"Projet_X"),
                  msg_time=datetime(2019, 3, 4, 5, 6, 7, tzinfo=MUMBAI))
    client.append("Archives", message("Deux", "é" * 5000), flags=(),
                  msg_time=datetime(2024, 12, 31, 23, 59, 59, tzinfo=NEW_YORK_WINTER))
    client.append("Archives", message("Trois", ""), flags=(b"\\Flagged", b"\\Answered"),
                  msg_time=datetime(2001, 1, 2, 3, 4, 5, tzinfo=UTC))
    client.enable("CONDSTORE")
    client.select_folder("Archives")
    return client


def _answer(client: imapclient.IMAPClient, items: str) -> list:
    status, lines = client._imap.uid("FETCH", "1:*", items)
    assert status == "OK"
    return lines


def test_listings_and_bodies_read_as_imapclient_reads_them(dovecot: Dovecot) -> None:
    client = _seeded(dovecot)
    for items in ("(RFC822.SIZE FLAGS INTERNALDATE)",
                  "(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE)",
                  "(BODY.PEEK[])",
                  "(BODY.PEEK[]<0.100>)",
                  "(BODY.PEEK[]<200.100> FLAGS)",
                  "(FLAGS BODY.PEEK[] RFC822.SIZE BODY.PEEK[]<10.5>)"):
        lines = _answer(client, items)
        # The pattern itself read them: a fallback to imapclient would pass unseen.
        assert _read([line for line in lines if line is not None]) is not None, items
        assert parse_fetch(lines) == dict(parse_fetch_response(lines, False, True)), items
    listing = parse_fetch(_answer(client, "(FLAGS INTERNALDATE RFC822.SIZE)"))
    assert [listing[uid][b"INTERNALDATE"] for uid in sorted(listing)] == [
        datetime(2019, 3, 4, 5, 6, 7, tzinfo=MUMBAI),
        datetime(2024, 12, 31, 23, 59, 59, tzinfo=NEW_YORK_WINTER),
        datetime(2001, 1, 2, 3, 4, 5, tzinfo=UTC)]
    assert set(listing[1][b"FLAGS"]) - {b"\\Recent"} == {b"\\Seen", b"$Important", b"Projet_X"}
    assert set(listing[2][b"FLAGS"]) - {b"\\Recent"} == set()


def test_fetch_keeps_only_the_uids_asked_for(dovecot: Dovecot) -> None:
    client = _seeded(dovecot)
    other = mailbox(dovecot)
    other.select_folder("Archives")
    other.add_flags([3], [b"$Vu_Ailleurs"])  # an unsolicited FETCH for the first client
    bodies = fetch(client, [1, 2, 99], ["BODY.PEEK[]"])
    assert sorted(bodies) == [1, 2]
    assert bodies[1][b"BODY[]"] == message("Un")
    assert bodies == client.fetch([1, 2, 99], ["BODY.PEEK[]"])


def test_an_answer_outside_the_pattern_goes_to_imapclient() -> None:
    answers = [
        [b'1 (UID 7 FLAGS (\\Seen) ENVELOPE (NIL "Objet" NIL NIL NIL NIL NIL NIL NIL NIL))'],
        [b'2 (UID 8 RFC822.SIZE 12  FLAGS ())'],
        [(b'3 (UID 9 BODY[HEADER] {4}', b'a\r\n\r'), b' FLAGS (\\Draft))'],
        [b'4 (FLAGS ("quoted"))'],
        [b'5 (UID 11 INTERNALDATE "31-Feb-2024 10:00:00 +0000" BODY[] NIL)'],
    ]
    for answer in answers:
        assert parse_fetch(answer) == dict(parse_fetch_response(answer, False, True)), answer
    # The last one is within the grammar: an impossible date reads as None, as imapclient's.
    assert _read(answers[4]) == {11: {b"SEQ": 5, b"INTERNALDATE": None, b"BODY[]": None}}
    assert [_read(answer) for answer in answers[:4]] == [None] * 4
