"""Where a DAV account keeps its calendars or address books, as the DAV sink and source both
find them: its principal, its home, the collections there and the default one.

From the batch's URL as RFC 6764 says: the principal (``current-user-principal``, asked of
the URL, then of ``/.well-known/caldav`` or ``carddav``), then its ``calendar-home-set``
(RFC 4791) or ``addressbook-home-set`` (RFC 6352); the collections of the right kind one
level below it; the default calendar as the scheduling inbox names it (RFC 6638), or by
the names servers give a default one.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from connectors.base import ConnectError, computed_once
from connectors.dav.client import CALDAV, CARDDAV, DAV, DavClient


@dataclass(frozen=True)
class Kind:
    """What differs between calendars, task lists and address books."""

    workload: str
    well_known: str
    home_set: tuple[str, str]
    collection_type: str
    content_type: str
    component: str | None = None
    """The iCalendar component its objects hold; ``None`` for address books."""
    slug_suffix: str = ""
    """Added to a new collection's URL, so that a task list named like a calendar gets a URL
    of its own."""

    def make_body(self, display_name: str, colour: str | None = None) -> tuple[str, bytes]:
        """The method and body that make a collection of this kind: a calendar takes events
        only and a task list tasks only (``supported-calendar-component-set``); its colour,
        ``#RRGGBB``, goes as the ``calendar-color`` clients read (Apple's namespace: Apple,
        Thunderbird, DAVx5, Nextcloud, Cyrus and Radicale all keep it)."""
        name = escape(display_name)
        if self.component is not None:
            shown = (f'<I:calendar-color xmlns:I="{APPLE_ICAL}">{escape(colour)}'
                     f"</I:calendar-color>") if colour else ""
            return "MKCALENDAR", (
                f'<?xml version="1.0" encoding="utf-8"?><C:mkcalendar xmlns:D="DAV:" '
                f'xmlns:C="{CALDAV}"><D:set><D:prop><D:displayname>{name}</D:displayname>'
                f'{shown}<C:supported-calendar-component-set><C:comp name="{self.component}"/>'
                f"</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"
            ).encode()
        return "MKCOL", (
            f'<?xml version="1.0" encoding="utf-8"?><D:mkcol xmlns:D="DAV:" '
            f'xmlns:A="{CARDDAV}"><D:set><D:prop><D:resourcetype><D:collection/>'
            f"<A:addressbook/></D:resourcetype><D:displayname>{name}</D:displayname>"
            f"</D:prop></D:set></D:mkcol>"
        ).encode()


    def takes(self, collection: Collection) -> bool:
        """Whether a collection of the home takes this kind's objects: a VTODO never goes
        into a calendar made for events alone, which servers refuse and clients would not
        show."""
        return self.component is None or not collection.components or \
            self.component in collection.components


KINDS = {
    "calendar": Kind("calendar", "/.well-known/caldav", (CALDAV, "calendar-home-set"),
                     f"{{{CALDAV}}}calendar", "text/calendar; charset=utf-8", "VEVENT"),
    "tasks": Kind("tasks", "/.well-known/caldav", (CALDAV, "calendar-home-set"),
                  f"{{{CALDAV}}}calendar", "text/calendar; charset=utf-8", "VTODO", "-tasks"),
    "contacts": Kind("contacts", "/.well-known/carddav", (CARDDAV, "addressbook-home-set"),
                     f"{{{CARDDAV}}}addressbook", "text/vcard; charset=utf-8"),
}
DEFAULT_NAMES = ("default", "personal", "calendar", "contacts", "addressbook")
"""The last URL segments servers give a user's default calendar or address book."""
DEFAULT_TASK_NAMES = ("tasks",)
"""The last URL segments servers give a user's own task list, looked for before a default
calendar that takes tasks too."""
COMPONENT_SET = (CALDAV, "supported-calendar-component-set")
SYNC_TOKEN = (DAV, "sync-token")
APPLE_ICAL = "http://apple.com/ns/ical/"
ADDRESS_DATA = (CARDDAV, "supported-address-data")
VCARD_TYPES = frozenset({"text/vcard", "text/directory", "text/x-vcard"})
"""Media types of vCards in ``supported-address-data``: RFC 6350's, and RFC 2425's that
Cyrus lists for 3.0 too."""


@dataclass(frozen=True)
class Collection:
    """One calendar or address book of the home."""

    path: str
    """Percent-decoded, ending in ``/``."""
    display_name: str
    components: frozenset[str]
    """The components a calendar takes (``VEVENT``, ``VTODO``); empty when it does not say,
    which means any (RFC 4791, 5.2.3)."""
    sync_token: str | None
    """Its current ``DAV:sync-token`` (RFC 6578), ``None`` when it keeps none."""
    vcard_versions: frozenset[str] = frozenset()
    """The vCard versions an address book lists as taken (``supported-address-data``, RFC
    6352 6.2.2); empty when it lists none, which means 3.0 alone."""


class DavHome:
    """One account's home of one kind (calendars or address books) on a DAV server."""

    def __init__(self, client: DavClient, kind: Kind) -> None:
        self.client = client
        self.kind = kind

    @computed_once
    def principal(self) -> str:
        """The path of the account's principal (RFC 5397)."""
        for start in dict.fromkeys((self.client.base_path, self.kind.well_known)):
            principal = next((resource.href(DAV, "current-user-principal") for resource in
                              self.client.propfind(start, "0",
                                                   [(DAV, "current-user-principal")])), None)
            if principal:
                return principal
        raise ConnectError(f"no principal for {self.client.login} from "
                           f"{self.client.base_path}", code="dav_no_principal",
                           where=self.client.where, params={"login": self.client.login})

    @computed_once
    def path(self) -> str:
        """The path of the account's calendar or address book home, ending in ``/``."""
        principal = self.principal
        home = next((resource.href(*self.kind.home_set) for resource in
                     self.client.propfind(principal, "0", [self.kind.home_set])), None)
        if not home:
            raise ConnectError(f"{principal} names no {self.kind.home_set[1]}",
                               code="dav_no_home", where=self.client.where,
                               params={"login": self.client.login,
                                       "workload": self.kind.workload})
        return home if home.endswith("/") else home + "/"

    def collections(self) -> list[Collection]:
        """Every collection of this kind in the home, in the server's order; one the server
        names elsewhere (another server, outside the home) is none of the account's."""
        home = self.path
        found = []
        asked = [(DAV, "resourcetype"), (DAV, "displayname"), COMPONENT_SET, SYNC_TOKEN]
        if self.kind.component is None:
            asked.append(ADDRESS_DATA)
        for resource in self.client.propfind(home, "1", asked):
            if self.kind.collection_type not in resource.kinds() or resource.path == home or \
                    not resource.path.startswith(home) or ".." in resource.path.split("/") or \
                    resource.server not in ("", self.client.origin.lower()):
                continue
            held = resource.properties.get(f"{{{CALDAV}}}{COMPONENT_SET[1]}")
            components = frozenset(
                (comp.get("name") or "").upper() for comp in held
                if comp.tag == f"{{{CALDAV}}}comp") if held is not None else frozenset()
            found.append(Collection(
                resource.path if resource.path.endswith("/") else resource.path + "/",
                resource.text(DAV, "displayname") or "", components,
                (resource.text(*SYNC_TOKEN) or "").strip() or None,
                _vcard_versions(resource.properties.get(f"{{{CARDDAV}}}{ADDRESS_DATA[1]}"))))
        return found

    def default_collection(self) -> str | None:
        """The account's default collection of this kind that takes its objects: the
        default calendar as its scheduling inbox names it (RFC 6638,
        ``schedule-default-calendar-URL``), or else the one whose URL ends in a name servers
        give a default one (Cyrus ``Default``, SOGo and Nextcloud ``personal``, others
        ``calendar`` or ``contacts``); for tasks, first one whose URL ends in ``tasks``;
        ``None`` when there is none (Radicale makes none)."""
        taking = [c.path for c in self.collections() if self.kind.takes(c)]
        by_segment = {path.rstrip("/").rpartition("/")[2].lower(): path for path in taking}
        if self.kind.workload == "tasks":
            named = next((by_segment[name] for name in DEFAULT_TASK_NAMES
                          if name in by_segment), None)
            if named is not None:
                return named
        if self.kind.component is not None:
            inbox = next((resource.href(CALDAV, "schedule-inbox-URL") for resource in
                          self.client.propfind(self.principal, "0",
                                               [(CALDAV, "schedule-inbox-URL")])), None)
            named = inbox and next((resource.href(CALDAV, "schedule-default-calendar-URL")
                                    for resource in self.client.propfind(
                                        inbox, "0", [(CALDAV, "schedule-default-calendar-URL")]
                                    )), None)
            named = named if not named or named.endswith("/") else named + "/"
            if named and named in taking:
                return named
        return next((by_segment[name] for name in DEFAULT_NAMES if name in by_segment), None)


def _vcard_versions(listed: ElementTree.Element | None) -> frozenset[str]:
    """The vCard versions of a ``supported-address-data``. Each child with a ``version``
    counts whatever its name: Xandikos 0.4 names them ``content-type`` where RFC 6352 says
    ``address-data-type`` (tests/test_dav_contacts.py)."""
    if listed is None:
        return frozenset()
    return frozenset(
        (child.get("version") or "").strip() for child in listed
        if (child.get("content-type") or "text/vcard").strip().lower() in VCARD_TYPES
        and (child.get("version") or "").strip())
