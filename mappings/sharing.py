"""Who may see a space's files, or open a mailbox's folders, at the source, as rows a
target's administrator can apply: one CSV per space or mailbox (``migrate.sharing`` writes
it).

A source that knows its sharing (``SharingSource``) gives, per container, every ``Grant``:
an item (the library itself, a folder, a file), who (a user, a group, a site's group, a
sharing link, an invitation to an address), the role (``read``, ``write``, ``owner``), a
link's scope and expiry, and whether the item has it from a parent. ``sharing_row`` maps
who through the users table: a tenant user with a line gets their target login; one
without is ``unmapped``; an address outside the table's domains, and a link anyone may use,
is ``external``.

A mail source that knows who may open a mailbox (``MailboxSharingSource``: Exchange through
EWS) gives every ``MailboxGrant``: a folder's permission (its level and rights), a
delegate's level on one of the folders Outlook delegates, FullAccess or SendAs over the
whole mailbox. ``mailbox_row`` maps who as ``sharing_row`` does, plus ``default`` (every
signed-in user of the organisation) and ``anonymous``.

A target that can apply the rows itself (``SharingTarget``: Nextcloud's share API, an IMAP
server's ACL) answers each with a ``ShareOutcome``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from connectors.base import Container
from mappings.users import UserMap

COLUMNS = ["space", "path", "item", "who", "who_type", "target_login", "mapping", "role",
           "link_scope", "link_type", "expires", "inherited", "external", "source_id"]
"""The CSV's columns: ``path`` is the item's path in the space on the target, after the
target's renames (empty: the space's root); ``item`` is ``library``, ``folder`` or
``file``; ``who_type`` is ``user``, ``group``, ``site_group``, ``link`` or ``invitation``;
``mapping`` is ``mapped``, ``unmapped``, ``external`` or ``group``."""


@dataclass(frozen=True)
class Grant:
    """One permission on one item of a container, as the source keeps it."""

    source_id: str
    path: tuple[str, ...]
    """The item's path under its container at the source; ``()`` for the container."""
    item: str
    who: str
    """An address, a group's name, or for a link ``anyone``/``organization``."""
    who_type: str
    role: str
    inherited: bool
    link_scope: str = ""
    link_type: str = ""
    expires: datetime | None = None
    below: str | None = None
    """For a folder: a file somewhere below it, whose place on the target gives the
    folder's."""


MAILBOX_COLUMNS = ["mailbox", "kind", "workload", "path", "source_path", "who", "who_type",
                   "target_login", "mapping", "level", "rights", "meeting_requests",
                   "view_private", "source_id"]
"""The columns of a mailbox's CSV: ``kind`` is ``folder``, ``delegate``, ``full_access``
or ``send_as``; ``path`` is the folder's path on the target as the ledger recorded it
(empty: the whole mailbox, or a folder not on the target), ``source_path`` its path at the
source; ``who_type`` is ``user``, ``account`` (a directory account without an address),
``default``, ``anonymous`` or ``unknown`` (a SID the directory no longer resolves);
``mapping`` is ``mapped``, ``unmapped``, ``external``, ``default`` or ``anonymous``;
``rights`` the source's individual rights, space-separated (``CanCreateItems
IsFolderVisible ReadItems:FullDetails EditItems:Owned``...); ``meeting_requests``, for a
delegate receiving copies of meeting messages, where the mailbox sends its requests
(``DelegatesAndMe``...)."""


@dataclass(frozen=True)
class MailboxGrant:
    """One permission over a mailbox or one of its folders, as the source keeps it."""

    kind: str
    path: tuple[str, ...]
    """The folder's path at the source; ``()`` for the whole mailbox."""
    workload: str
    """The workload that moves the folder's items (``mail``, ``calendar``...), ``""`` for
    the whole mailbox."""
    who: str
    who_type: str
    level: str
    rights: tuple[str, ...] = ()
    source_id: str = ""
    meeting_requests: str = ""
    view_private: bool = False


@runtime_checkable
class MailboxSharingSource(Protocol):
    """What a mail source knows of who may open one mailbox; ``notes`` are what it could
    not read, as ``(code, params)``."""

    notes: list[tuple[str, dict[str, str]]]

    def mailbox_grants(self) -> Iterator[MailboxGrant]: ...

    def close(self) -> None: ...


@runtime_checkable
class SharingSource(Protocol):
    """A document source that can say who may see each item of a container."""

    def sharing(self, container: Container) -> Iterator[Grant]: ...


CREATED, PRESENT, SKIPPED = "created", "present", "skipped"


@dataclass(frozen=True)
class ShareOutcome:
    """What a target did with one row: ``kind`` is ``created``, ``present`` (made before,
    by an earlier run or by hand) or ``skipped`` (the target cannot say it, or refused it);
    ``code`` and ``params`` are the report's sentence in the catalogue."""

    row: dict[str, str]
    kind: str
    code: str
    params: dict[str, Any]


class SharingTarget(Protocol):
    """A target that applies a space's sharing rows (``COLUMNS``) itself, each at most
    once whatever the runs: a row whose share is there already is ``present``."""

    def apply(self, rows: list[dict[str, str]]) -> Iterator[ShareOutcome]: ...

    def close(self) -> None: ...


def sharing_row(space: str, path: str, grant: Grant, users: UserMap, domains: set[str]
                ) -> dict[str, Any]:
    """The CSV row of a grant whose item is at ``path`` in ``space`` on the target."""
    mapping, login = "", ""
    if grant.who_type in ("user", "invitation") or (grant.who_type == "link"
                                                    and "@" in grant.who):
        mapping, login = _address_mapping(grant.who, users, domains)
    elif grant.who_type in ("group", "site_group"):
        mapping = "group"
    elif grant.link_scope == "anonymous":
        mapping = "external"
    return {"space": space, "path": path, "item": grant.item, "who": grant.who,
            "who_type": grant.who_type, "target_login": login, "mapping": mapping,
            "role": grant.role, "link_scope": grant.link_scope, "link_type": grant.link_type,
            "expires": grant.expires.isoformat() if grant.expires else "",
            "inherited": "yes" if grant.inherited else "no",
            "external": "yes" if mapping == "external" else "no",
            "source_id": grant.source_id}


def mailbox_row(mailbox: str, path: str, grant: MailboxGrant, users: UserMap,
                domains: set[str]) -> dict[str, Any]:
    """The CSV row of a mailbox's grant whose folder is at ``path`` on the target."""
    if grant.who_type in ("default", "anonymous"):
        mapping, login = grant.who_type, ""
    elif grant.who_type == "user":
        mapping, login = _address_mapping(grant.who, users, domains)
    else:
        mapping, login = "unmapped", ""
    return {"mailbox": mailbox, "kind": grant.kind, "workload": grant.workload, "path": path,
            "source_path": "/".join(grant.path), "who": grant.who,
            "who_type": grant.who_type, "target_login": login, "mapping": mapping,
            "level": grant.level, "rights": " ".join(grant.rights),
            "meeting_requests": grant.meeting_requests,
            "view_private": "yes" if grant.view_private else "no",
            "source_id": grant.source_id}


def _address_mapping(address: str, users: UserMap, domains: set[str]) -> tuple[str, str]:
    """``(mapping, target login)`` of an address: its users table line's login, else
    ``unmapped`` in one of the table's domains, ``external`` outside them."""
    user = users.lookup(address)
    if user is not None:
        return "mapped", user.target
    if address.rpartition("@")[2].casefold() in domains:
        return "unmapped", ""
    return "external", ""


def table_domains(users: UserMap) -> set[str]:
    """The domains of the table's sources: an address in one of them is the tenant's."""
    return {user.source.rpartition("@")[2].casefold() for user in users if "@" in user.source}
