"""bench.dav: the baseline and vdirsyncer send each server what bascule's batch makes the
sink send there, and that batch is one bascule takes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.dav import SERVERS, contact, event, sent, write_batch
from migrate.batch import load_batch, target_refusals


def objects() -> dict[str, list[tuple[str, bytes]]]:
    return {"calendar": [(f"e{n}.ics", event(n)) for n in range(11)],
            "contacts": [("c.vcf", contact(0))]}


def lines(body: bytes, name: bytes) -> list[bytes]:
    return [line for line in body.split(b"\r\n") if line.startswith(name)]


def test_the_corpus_has_series_with_a_moved_occurrence_and_attendees():
    series = event(10)
    assert series.count(b"BEGIN:VEVENT") == 2 and b"RECURRENCE-ID" in series
    assert len(lines(series, b"ATTENDEE")) == 6 and b"ATTENDEE" not in event(1)


@pytest.mark.parametrize("kind", ["cyrus", "sabredav"])
def test_where_the_agent_is_honoured_every_participant_carries_it(kind: str):
    body = dict(sent(SERVERS[kind], objects())["calendar"])["e10.ics"]
    participants = lines(body, b"ORGANIZER") + lines(body, b"ATTENDEE")
    assert len(participants) == 8
    assert all(b"SCHEDULE-AGENT=CLIENT" in line for line in participants)


def test_into_xandikos_events_go_without_attendees_the_organiser_kept():
    body = dict(sent(SERVERS["xandikos"], objects())["calendar"])["e10.ics"]
    assert not lines(body, b"ATTENDEE") and len(lines(body, b"ORGANIZER")) == 2


def test_radicale_and_contacts_get_the_objects_as_they_are():
    assert sent(SERVERS["radicale"], objects()) == objects()
    assert sent(SERVERS["cyrus"], objects())["contacts"] == objects()["contacts"]


@pytest.mark.parametrize("kind", list(SERVERS))
def test_the_batch_names_the_servers_profile_and_bascule_takes_it(kind: str, tmp_path: Path):
    batch = load_batch(write_batch(tmp_path, tmp_path / "export", "http://127.0.0.1:8",
                                   SERVERS[kind]))
    target = batch.targets.calendar
    assert (target.profile, target.scheduling) == (SERVERS[kind].profile,
                                                   SERVERS[kind].scheduling)
    assert not target_refusals(batch)
