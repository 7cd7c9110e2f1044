"""What each CalDAV and CardDAV server is known to do, by name: the batch's ``profile``.

A profile holds facts, each found against the real server by a test named beside it, and
nothing else: the sink reads them to choose how it keeps the server from mailing anyone
(``scheduling``), and the planner to refuse a batch that would.

``generic`` is a server bascule knows nothing of: it may schedule (RFC 6638), and it is
taken to honour ``SCHEDULE-AGENT=CLIENT``, which that RFC requires of a server that
schedules (section 7.1).

python-caldav's catalogue of server quirks (``caldav/compatibility_hints.py``, read at
3.2.1) was cross-read against these: it agrees on Cyrus scheduling and keeping one object
per UID across a user's calendars, on Radicale not scheduling; it says Xandikos does not
schedule, where the Xandikos tested here (0.4.10) mails every attendee. Its facts on
servers that do not run here (SOGo refusing VJOURNAL, fragile one-second sync tokens;
Nextcloud keeping deleted UIDs and calendar names in a trash bin, rate-limiting calendar
creation) make no profile until a test can show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    schedules: bool
    """It mails (or delivers to) an event's attendees or organiser when the event is written
    or deleted (implicit scheduling, RFC 6638)."""
    honours_client_agent: bool
    """``SCHEDULE-AGENT=CLIENT`` on the ORGANIZER and every ATTENDEE stops it."""
    requires_master: bool
    """It refuses an occurrence (RECURRENCE-ID) whose series master is not in the same
    object, so orphan occurrences are written standalone (``mappings.orphans``)."""
    vcard_versions: frozenset[str] | None = None
    """The vCard versions it keeps as given, where that is fewer than its address books
    list (``supported-address-data``); ``None``: what they list."""
    write_lanes: int | None = None
    """The most writes at once worth sending into one account, where fewer than the
    batch's ``connections``; ``None``: as many as the batch says."""
    advised_items: tuple[tuple[str, int], ...] = ()
    """Per workload, the most items one calendar or address book should hold for the
    server's clients to handle it well; ``audit`` warns above."""


PROFILES = {profile.name: profile for profile in (
    # Every server tested keeps an orphan occurrence as it is (tests/test_orphans.py), which
    # RFC 6638 allows (an attendee invited to some occurrences only): kept as it is.
    # vCards: 3.0, which RFC 6352 requires every server to take; of the four here, two
    # listing 4.0 or taking it damage its photos (tests/test_dav_contacts.py).
    Profile("generic", schedules=True, honours_client_agent=True, requires_master=False,
            vcard_versions=frozenset({"3.0"})),
    # tests/test_scheduling.py: 2 invitations as it is, none with the agent; taking the agent
    # off afterwards invites everyone. tests/test_orphans.py: it keeps an orphan occurrence.
    # tests/test_dav_contacts.py: it lists vCard 4.0 but stores a 4.0 card as 3.0, its
    # data: URI photo cut to "data:image/jpeg" (the image lost), KIND:group as a lower-case
    # x-addressbookserver-kind; it refuses 2.1 (403 supported-address-data).
    # tests/test_dav_sink.py: one object per UID across a user's calendars, attendees or
    # not (403 unique-scheduling-object-resource): a second is a dav_uid_taken line.
    Profile("cyrus", schedules=True, honours_client_agent=True, requires_master=False,
            vcard_versions=frozenset({"3.0"})),
    # Radicale has no scheduling: it stores what it is given and mails nobody.
    # tests/test_orphans.py: 3.9 keeps an orphan occurrence.
    # tests/test_dav_contacts.py: it lists vCard 3.0 alone, stores a 4.0 card as 4.0 but
    # with its data: URI photo cut to "data:image/jpeg\\;base64" (vobject), refuses 2.1
    # (400). tests/test_dav_sink.py: one object per UID within a calendar (409
    # no-uid-conflict), the same UID in two calendars kept.
    # It writes through one lock on its storage: docs/benchmarks.md (2026-12-07) measured 4
    # writes at once at 0.87 of the plain-PUT ceiling, 2 or 1 at it.
    Profile("radicale", schedules=False, honours_client_agent=False, requires_master=False,
            write_lanes=2),
    # tests/test_scheduling.py: it mails every attendee with the agent as without.
    # tests/test_orphans.py: it keeps an orphan occurrence.
    # tests/test_dav_contacts.py: it lists vCard 3.0 alone, under an element RFC 6352 does
    # not name, and stores 2.1, 3.0 and 4.0 cards byte for byte.
    Profile("xandikos", schedules=True, honours_client_agent=False, requires_master=False),
    # No BlueMind here to test: its scheduling, orphans and vCards are taken as generic. Its
    # clients warn above about 9,000 events in a calendar and 1,000 contacts in an address
    # book.
    Profile("bluemind", schedules=True, honours_client_agent=True, requires_master=False,
            vcard_versions=frozenset({"3.0"}),
            advised_items=(("calendar", 9000), ("contacts", 1000))),
)}

PROTECT, DROP_ATTENDEES, SERVER_SENDS = "protect", "drop_attendees", "server_sends"
SCHEDULING = (PROTECT, DROP_ATTENDEES, SERVER_SENDS)
"""What a batch may ask of a calendar target that schedules: keep it from sending
(``SCHEDULE-AGENT=CLIENT``), write events without their attendees, or let the server send
its invitations, updates and cancellations."""


def rewrite(profile: Profile, scheduling: str) -> str | None:
    """How events are changed before they are written: ``PROTECT``, ``DROP_ATTENDEES`` or
    ``None`` (as they are)."""
    if scheduling == DROP_ATTENDEES:
        return DROP_ATTENDEES
    if scheduling == PROTECT and profile.schedules:
        return PROTECT
    return None


def refusals(profile: Profile, scheduling: str, workload: str
             ) -> list[tuple[str, dict[str, Any]]]:
    """Why a batch writing ``workload`` into this server with this ``scheduling`` must not
    run: the protection it asks for does not hold there."""
    if workload in ("calendar", "tasks") and scheduling == PROTECT and profile.schedules \
            and not profile.honours_client_agent:
        return [("dav_schedules_anyway", {"profile": profile.name})]
    return []


def warnings(profile: Profile, scheduling: str) -> list[tuple[str, dict[str, Any]]]:
    """What the batch chose that a person should read once more."""
    if scheduling == SERVER_SENDS and profile.schedules:
        return [("dav_server_sends", {"profile": profile.name})]
    return []


def advised_items(profile: Profile, workload: str) -> int | None:
    """The most items of ``workload`` one collection should hold on this server, if known."""
    return dict(profile.advised_items).get(workload)
