"""FETCH answers read fast: the items bascule asks for by pattern, anything else by imapclient.

imapclient's parser tokenises every byte of an answer in Python: about 50 µs a message for a
listing (UID, size, flags, date) and as much again for its body, more than the rest of a
copy's own work. The answers bascule asks for are a handful of items in a fixed grammar
(RFC 9051, section 7.5.2), so a line made only of them is read with one pattern per item;
an answer holding anything else (an item not listed here, a quoted flag, a syntax the
pattern does not know) is given whole to imapclient's parser, whose output this one
mirrors: a dict per message keyed by UID (by sequence number for a line without one),
each item under its upper-case name, numbers as ``int``, FLAGS a tuple of ``bytes``,
INTERNALDATE an aware ``datetime``, MODSEQ a 1-tuple, a body ``bytes`` (``None`` for NIL).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import imapclient
from imapclient.datetime_util import parse_to_datetime
from imapclient.fixed_offset import FixedOffset
from imapclient.response_parser import parse_fetch_response

FetchAnswer = dict[int, dict[bytes, Any]]

_START = re.compile(rb"(\d+) \(")
_ITEM = re.compile(
    rb" ?(?:(UID|RFC822\.SIZE) (\d+)"
    rb"|(FLAGS) \(([^()\"{}]*)\)"
    rb"|(INTERNALDATE) \"([^\"]*)\""
    rb"|(MODSEQ) \((\d+)\)"
    rb"|(BODY\[\](?:<\d+>)?) (?:\{(\d+)\}\Z|(NIL)|\"([^\"\\]*)\"))",
    re.IGNORECASE,
)
_DATE = re.compile(
    rb"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")
_MONTHS = {name: number for number, name in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV",
     b"DEC"), start=1)}
_OFFSETS: dict[int, FixedOffset] = {}


def fetch(client: imapclient.IMAPClient, uids: Sequence[int], items: Sequence[str]
          ) -> FetchAnswer:
    """``client.fetch(uids, items)`` (UIDs), read by ``parse_fetch``: only the UIDs asked
    for are kept, as imapclient does (a server may add unsolicited FETCH lines)."""
    if not uids:
        return {}
    status, lines = client._imap.uid(
        "FETCH", ",".join(map(str, uids)), f"({' '.join(items)})")
    client._checkok("fetch", status, lines)
    answer = parse_fetch(lines)
    return {uid: answer[uid] for uid in uids if uid in answer}


def parse_fetch(lines: Iterable[Any]) -> FetchAnswer:
    """imaplib's FETCH lines (``bytes``, or ``(head, literal)`` where a literal ended the
    head) as imapclient's ``parse_fetch_response(lines, normalise_times=False)`` gives
    them, the lines of one message merged."""
    lines = [line for line in lines if line is not None]
    answer = _read(lines)
    if answer is None:
        return dict(parse_fetch_response(lines, False, True))
    return answer


def _read(lines: list[Any]) -> FetchAnswer | None:
    """``None`` for an answer outside the pattern's grammar."""
    answer: FetchAnswer = {}
    index = 0
    while index < len(lines):
        head, literal = _split(lines[index])
        start = _START.match(head)
        if start is None:
            return None
        seq = int(start.group(1))
        data: dict[bytes, Any] = {b"SEQ": seq}
        key = seq
        position = start.end()
        while True:
            if head.startswith(b")", position):
                if position + 1 != len(head) or literal is not None:
                    return None
                break
            item = _ITEM.match(head, position)
            if item is None:
                return None
            number_name, number, flags_name, flags, date_name, date, modseq_name, modseq, \
                body_name, body_length, body_nil, body_quoted = item.groups()
            position = item.end()
            if number_name is not None:
                if number_name.upper() == b"UID":
                    key = int(number)
                else:
                    data[b"RFC822.SIZE"] = int(number)
            elif flags_name is not None:
                data[b"FLAGS"] = tuple(flags.split())
            elif date_name is not None:
                data[b"INTERNALDATE"] = _date(date)
            elif modseq_name is not None:
                data[b"MODSEQ"] = (int(modseq),)
            elif body_length is not None:
                if literal is None or len(literal) != int(body_length):
                    return None
                data[body_name.upper()] = literal
                index += 1
                if index == len(lines):
                    return None
                head, literal = _split(lines[index])
                position = 0
            else:
                data[body_name.upper()] = None if body_nil is not None else body_quoted
        answer.setdefault(key, {}).update(data)
        index += 1
    return answer


def _split(line: Any) -> tuple[bytes, bytes | None]:
    if isinstance(line, tuple):
        return line[0], line[1]
    return line, None


def _date(text: bytes) -> datetime | None:
    """An IMAP date-time as imapclient reads it (``normalise_times`` off), faster."""
    match = _DATE.match(text)
    month = _MONTHS.get(match.group(2).upper()) if match else None
    if match is None or month is None:
        try:
            return parse_to_datetime(text, normalise=False)
        except ValueError:
            return None
    day, _, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
    offset = (int(zone_hours) * 60 + int(zone_minutes)) * (-1 if sign == b"-" else 1)
    zone = _OFFSETS.get(offset)
    if zone is None:
        zone = _OFFSETS.setdefault(offset, FixedOffset(offset))
    try:
        return datetime(int(year), month, int(day), int(hour), int(minute), int(second),
                        tzinfo=zone)
    except ValueError:
        return None
