"""The IANA zone of an EWS ``TimeZoneDefinition``, custom definitions included.

EWS reference pages this module follows (learn.microsoft.com, "EWS XML elements"):

- ``TimeZoneDefinition``: attributes ``Id`` (a Windows zone id, e.g. ``Romance Standard
  Time``) and ``Name``; children ``Periods``, ``TransitionsGroups``, ``Transitions``. An item's
  ``StartTimeZone`` and ``EndTimeZone`` are of this type (Exchange 2010 and later).
- ``Period``: ``Bias`` (an ``xs:duration``, UTC = local time + bias, so Paris in winter is
  ``-PT1H``), ``Name``, ``Id``.
- ``TransitionsGroup``: ``Transition`` (the period in force), ``RecurringDayTransition``
  (``To``, ``TimeOffset``, ``Month``, ``DayOfWeek``, ``Occurrence``: 1 to 4, or -1 for the
  last), ``RecurringDateTransition`` (``To``, ``TimeOffset``, ``Month``, ``Day``),
  ``AbsoluteDateTransition`` (``To``, ``DateTime``).
- ``Transitions``: the groups in force over time, a ``Transition`` to the first group then
  ``AbsoluteDateTransition``s from a given date.

A definition whose ``Id`` is a Windows zone id goes through the CLDR table as Graph's names
do. A custom definition (Outlook's "Customized Time Zone", a zone made by a third-party
client, a Windows zone renamed) has no name a calendar server knows: its UTC offsets are
computed from its periods and transitions over the years around the event, and the first
IANA zone that gives the same offset at every sampled instant stands for it. Times are then
exact over those years; the zone's name is the one thing that changes, and the caller notes
it. When no IANA zone matches, ``None``: the caller writes the instants in UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from mappings.calendar import windows_to_iana

TYPES = "{http://schemas.microsoft.com/exchange/services/2006/types}"
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PREFERRED = ("Europe/", "America/", "Africa/", "Asia/", "Australia/", "Pacific/", "Indian/",
             "Atlantic/")
"""Where a matching zone is looked for first: a city zone reads better on a target than
``Etc/GMT-1`` or a legacy alias (``CET``, ``MET``) with the same offsets."""
_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def duration(text: str) -> timedelta:
    """An ``xs:duration`` as EWS writes biases and offsets (``-P0DT1H0M0.0S``, ``PT2H``)."""
    found = _DURATION.match(text.strip())
    if found is None:
        raise ValueError(f"not a duration EWS writes: {text!r}")
    sign, days, hours, minutes, seconds = found.groups()
    value = timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                      seconds=float(seconds or 0))
    return -value if sign else value


@dataclass(frozen=True)
class _Rule:
    """A yearly change to the period ``to``: the n-th weekday of a month, at a local time."""

    to: str
    month: int
    weekday: int
    occurrence: int
    offset: timedelta

    def local_moment(self, year: int) -> datetime:
        if self.occurrence > 0:
            first = date(year, self.month, 1)
            day = first + timedelta(days=(self.weekday - first.weekday()) % 7
                                    + 7 * (self.occurrence - 1))
            if day.month != self.month:  # a fifth occurrence that does not exist: the last
                day -= timedelta(days=7)
        else:
            following = date(year + self.month // 12, self.month % 12 + 1, 1)
            last = following - timedelta(days=1)
            day = last - timedelta(days=(last.weekday() - self.weekday) % 7)
        return datetime.combine(day, datetime.min.time()) + self.offset


@dataclass(frozen=True)
class _Group:
    """The period in force all year, or two yearly rules switching between periods."""

    steady: str | None
    rules: tuple[_Rule, ...]


@dataclass(frozen=True)
class CustomZone:
    """A ``TimeZoneDefinition`` read: its periods' biases, its groups, and which group is in
    force from when (``None`` for from the beginning)."""

    name: str
    biases: dict[str, timedelta]
    groups: dict[str, _Group]
    eras: tuple[tuple[datetime | None, str], ...]

    def utc_offset(self, moment: datetime) -> timedelta:
        """The zone's offset from UTC (local = UTC + offset) at an aware instant."""
        group = self._group_at(moment)
        if group.steady is not None or not group.rules:
            return -self.biases[group.steady or next(iter(self.biases))]
        year = moment.astimezone(UTC).year
        changes: list[tuple[datetime, str]] = []
        for candidate_year in (year - 1, year, year + 1):
            for rule in group.rules:
                changes.append((rule.local_moment(candidate_year), rule.to))
        changes.sort()
        # A change happens at a local time read in the period it ends: walk them in order.
        current = changes[0][1]
        for local, period in changes:
            instant = (local - (-self.biases[current])).replace(tzinfo=UTC)
            if instant > moment:
                break
            current = period
        return -self.biases[current]

    def _group_at(self, moment: datetime) -> _Group:
        chosen = self.eras[0][1]
        for start, group in self.eras:
            if start is None or start <= moment:
                chosen = group
        return self.groups[chosen]


def _text(element: Any, name: str) -> str:
    found = element.find(TYPES + name)
    return (found.text or "").strip() if found is not None else ""


def read_definition(definition: Any) -> CustomZone | None:
    """A ``TimeZoneDefinition`` element read, or ``None`` when it holds no periods."""
    biases = {str(period.get("Id")): duration(str(period.get("Bias")))
              for period in definition.iter(TYPES + "Period")}
    if not biases:
        return None
    groups: dict[str, _Group] = {}
    for group in definition.iter(TYPES + "TransitionsGroup"):
        rules, steady = [], None
        for child in group:
            kind = child.tag.removeprefix(TYPES)
            to = _text(child, "To")
            if kind == "Transition":
                steady = to
            elif kind == "RecurringDayTransition":
                rules.append(_Rule(to, MONTHS.index(_text(child, "Month")) + 1
                                   if not _text(child, "Month").isdigit()
                                   else int(_text(child, "Month")),
                                   DAYS.index(_text(child, "DayOfWeek")),
                                   int(_text(child, "Occurrence")),
                                   duration(_text(child, "TimeOffset"))))
        groups[str(group.get("Id"))] = _Group(None if rules else steady, tuple(rules))
    eras: list[tuple[datetime | None, str]] = []
    transitions = definition.find(TYPES + "Transitions")
    for child in transitions if transitions is not None else ():
        kind = child.tag.removeprefix(TYPES)
        to = _text(child, "To")
        if kind == "Transition":
            eras.append((None, to))
        elif kind == "AbsoluteDateTransition":
            eras.append((datetime.fromisoformat(_text(child, "DateTime").removesuffix("Z"))
                         .replace(tzinfo=UTC), to))
    if not groups:
        groups = {"steady": _Group(next(iter(biases)), ())}
    if not eras:
        eras = [(None, next(iter(groups)))]
    return CustomZone(str(definition.get("Name") or definition.get("Id") or ""), biases,
                      groups, tuple(eras))


def _samples(years: Iterable[int]) -> list[datetime]:
    """Every sixth hour of the years: enough to see each DST change of a year, and a change
    moved by a day or by an hour."""
    found = []
    for year in years:
        moment = datetime(year, 1, 1, tzinfo=UTC)
        while moment.year == year:
            found.append(moment)
            moment += timedelta(hours=6)
    return found


@cache
def _candidates() -> tuple[str, ...]:
    names = sorted(available_timezones())
    first = [n for n in names if n.startswith(PREFERRED)]
    return tuple(first + [n for n in names if n not in first and "/" in n])


def matching_zone(zone: CustomZone, years: Iterable[int], prefer: Sequence[str] = ()
                  ) -> str | None:
    """The first IANA zone whose offset equals the definition's at every sample of
    ``years``, those of ``prefer`` (the mailbox's zone) tried first; ``None`` if none does."""
    years = tuple(years)
    key = (repr(zone), years, tuple(prefer))
    if key not in _MATCHED:
        samples = _samples(years)
        wanted = [zone.utc_offset(moment) for moment in samples]
        known = set(_candidates())
        _MATCHED[key] = next(
            (name for name in (*(p for p in prefer if p in known), *_candidates())
             if all(moment.astimezone(ZoneInfo(name)).utcoffset() == offset
                    for moment, offset in zip(samples, wanted, strict=True))), None)
    return _MATCHED[key]


_MATCHED: dict[tuple[str, tuple[int, ...], tuple[str, ...]], str | None] = {}
"""Definitions already matched: a calendar repeats its custom zone on every event, and a
zone no IANA zone matches costs a pass over all of them."""


def zone_of(definition: Any, around: int, prefer: Sequence[str] = ()
            ) -> tuple[str | None, bool]:
    """The IANA zone for a ``TimeZoneDefinition`` element, and whether it was matched from a
    custom definition (the caller notes that); ``None`` when nothing matches. ``around`` is
    the year of the event: the years before and after it are compared."""
    by_id = windows_to_iana(str(definition.get("Id") or ""))
    if by_id is not None:
        return by_id, False
    custom = read_definition(definition)
    if custom is None:
        return None, False
    return matching_zone(custom, range(around - 1, around + 2), prefer), True
