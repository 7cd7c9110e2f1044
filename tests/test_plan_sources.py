"""A plan lists one principal's folders over several sources: every answer in order, what
each source noticed kept, the sources it opened closed, a source refused left out."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from connectors.base import BasculeError, SourceNote
from migrate.units import Bench


class Source:
    def __init__(self, name: str) -> None:
        self.name = name
        self.noted: list[SourceNote] = []
        self.closed = False
        self.listed: list[int] = []

    def drain_notes(self) -> list[SourceNote]:
        noted, self.noted = self.noted, []
        return noted

    def close(self) -> None:
        self.closed = True


def bench_with(lanes: int, refuse: int = 0) -> tuple[Any, list[Source]]:
    opened: list[Source] = []
    lock = threading.Lock()

    def open_source(user: object) -> Source:
        with lock:
            if len(opened) < refuse:
                opened.append(Source("refused"))
                raise BasculeError(code="login_refused")
            source = Source(f"extra-{len(opened)}")
            opened.append(source)
            return source

    return SimpleNamespace(plan_lanes=lanes,
                           connectors=SimpleNamespace(open_source=open_source)), opened


def listing(source: Source, item: int) -> int:
    """A folder's listing: slow enough that every lane takes a share, noting a file it
    left out."""
    source.listed.append(item)
    source.noted.append(SourceNote("not_a_message_skipped", f"folder-{item}/bruit.eml"))
    threading.Event().wait(0.01)
    return item * 10


def test_answers_in_order_notes_of_every_source_and_the_opened_ones_closed():
    bench, opened = bench_with(lanes=3)
    first = Source("first")
    notes: list[SourceNote] = []

    answers = Bench.over_sources(bench, "alice", first, list(range(12)), listing, notes)

    assert answers == [item * 10 for item in range(12)]
    assert len(opened) == 2 and all(source.listed for source in [first, *opened])
    assert all(source.closed for source in opened) and not first.closed
    # The extra sources' notes are handed over; the first source keeps its own for the
    # caller, who drains it as before.
    everything = notes + first.drain_notes()
    assert sorted(note.subject for note in everything) == sorted(
        f"folder-{item}/bruit.eml" for item in range(12))


def test_a_source_that_cannot_be_opened_leaves_its_share_to_the_others():
    bench, opened = bench_with(lanes=3, refuse=1)
    first = Source("first")

    answers = Bench.over_sources(bench, "alice", first, list(range(6)), listing, [])

    assert answers == [item * 10 for item in range(6)]
    assert [source.name for source in opened if source.listed] != []
    assert sum(len(source.listed) for source in [first, *opened]) == 6


def test_one_lane_lists_on_the_source_alone_and_an_error_reaches_the_caller():
    bench, opened = bench_with(lanes=1)
    first = Source("first")
    assert Bench.over_sources(bench, "alice", first, [1, 2], listing, []) == [10, 20]
    assert opened == []

    def broken(source: Source, item: int) -> int:
        if item == 4:
            raise BasculeError(code="unreachable")
        return listing(source, item)

    bench, opened = bench_with(lanes=3)
    with pytest.raises(BasculeError):
        Bench.over_sources(bench, "alice", Source("first"), list(range(8)), broken, [])
    assert all(source.closed for source in opened)
