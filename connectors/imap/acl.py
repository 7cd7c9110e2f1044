"""A mailbox's folder permissions (``mappings.sharing.MAILBOX_COLUMNS`` rows of kind
``folder``) set on an IMAP server with the ACL extension (RFC 4314): SETACL on each
folder, for the grantee's target login.

Exchange's rights (``permission`` in the EWS reference) -> RFC 4314 rights (section 2.1):

============================  ==========  =============================================
Exchange                      RFC 4314    meaning on the target
============================  ==========  =============================================
IsFolderVisible               ``l``       the folder is listed
ReadItems:FullDetails         ``r s``     select it, read messages, keep their \\Seen
EditItems:All                 ``w``       change the flags of any message
CanCreateItems                ``i``       put messages in (APPEND, COPY)
CanCreateSubFolders           ``k``       make folders below it
DeleteItems:All               ``t e``     mark any message \\Deleted, expunge
IsFolderOwner                 ``x a``     delete or rename the folder, change its ACL
============================  ==========  =============================================

so that the levels Outlook names give: Owner ``lrswikxtea``, PublishingEditor
``lrswikte``, Editor ``lrswite``, PublishingAuthor ``lrsik``, Author and NoneditingAuthor
``lrsi``, Reviewer ``lrs``, Contributor ``li``; a ``Custom`` level is read from its rights
the same way. Rights IMAP cannot say are dropped, never widened, and each drop is a line of
the report: ``EditItems:Owned`` and ``DeleteItems:Owned`` (IMAP messages have no owner; the
grantee then edits or deletes none), ``IsFolderContact``, and a calendar's free/busy
reading (``ReadItems:TimeOnly``...).

Who: a user mapped by the users table gets their target login; ``Default`` (every signed-in
user of the organisation) gets ``authenticated`` (Dovecot's identifier, which it takes only
with ``acl_anyone = allow``; a server that refuses it answers a line of the report). ``Anonymous``, an address without a line, one outside
the organisation, an account without an address and a SID no longer resolved are not
applied, each a line.

Idempotent: each folder's ACL is read (GETACL) before anything is set; a grantee who holds
exactly these rights is ``present``, and a rerun sets nothing. A grantee holding other
rights there gets these instead (the source is the reference until the cutover).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from imapclient import exceptions as imap_errors

from connectors.imap.session import ImapSession
from mappings.sharing import CREATED, PRESENT, SKIPPED, ShareOutcome

RIGHTS_OF = {"IsFolderVisible": "l", "ReadItems:FullDetails": "rs", "EditItems:All": "w",
             "CanCreateItems": "i", "CanCreateSubFolders": "k", "DeleteItems:All": "te",
             "IsFolderOwner": "xa"}
"""Exchange's rights -> RFC 4314's, as the table above."""
ORDER = "lrswipkxtea"
"""RFC 4314's rights in the order the RFC lists them: how a set of them is written."""
VIRTUAL = frozenset("cd")
"""RFC 2086's create and delete rights, which RFC 4314 (section 2.1.1) keeps as virtual
rights a server adds to what it answers (Dovecot answers ``d`` beside ``t`` and ``e``):
left out when comparing what a grantee holds."""
DEFAULT_IDENTIFIER = "authenticated"


def imap_rights(rights: str) -> tuple[str, list[str]]:
    """The RFC 4314 rights of a row's ``rights`` column, and those of its rights IMAP
    cannot say."""
    given: set[str] = set()
    dropped: list[str] = []
    for right in rights.split():
        letters = RIGHTS_OF.get(right)
        if letters is None:
            dropped.append(right)
        else:
            given.update(letters)
    return "".join(letter for letter in ORDER if letter in given), dropped


class ImapAclTarget:
    """Sets one mailbox's folder permissions through a session logged in as its owner (or
    an admin acting as them)."""

    def __init__(self, session: ImapSession) -> None:
        self._session = session
        self._acls: dict[str, dict[str, str]] = {}

    def apply(self, rows: list[dict[str, str]]) -> Iterator[ShareOutcome]:
        if rows and not self._session.has("ACL"):
            for row in rows:
                yield ShareOutcome(row, SKIPPED, "permission_no_acl", _said(row))
            return
        for row in rows:
            yield self._apply_one(row)

    def _apply_one(self, row: dict[str, str]) -> ShareOutcome:
        said = _said(row)
        rights, dropped = imap_rights(row["rights"])
        who = self._identifier(row)
        if who is None:
            code = {"external": "permission_external",
                    "anonymous": "permission_anonymous"}.get(row["mapping"],
                                                             "permission_unmapped")
            return ShareOutcome(row, SKIPPED, code, said)
        if not rights:
            return ShareOutcome(row, SKIPPED, "permission_nothing_carried",
                                {**said, "dropped": " ".join(dropped)})
        folder = row["path"]
        try:
            held = self._acl(folder).get(who)
            if held is not None and set(held) - VIRTUAL == set(rights):
                return ShareOutcome(row, PRESENT, "permission_present",
                                    {**said, "rights": rights})
            self._session.call(lambda client: client.setacl(folder, who, rights))
        except imap_errors.IMAPClientError as error:
            return ShareOutcome(row, SKIPPED, "permission_refused",
                                {**said, "rights": rights, "reason": str(error)})
        self._acls[folder][who] = rights
        code = "permission_set_partly" if dropped else "permission_set"
        return ShareOutcome(row, CREATED, code, {**said, "rights": rights, "login": who,
                                                 "dropped": " ".join(dropped)})

    def _identifier(self, row: dict[str, str]) -> str | None:
        if row["mapping"] == "mapped" and row["target_login"]:
            return row["target_login"]
        if row["mapping"] == "default":
            return DEFAULT_IDENTIFIER
        return None

    def _acl(self, folder: str) -> dict[str, str]:
        """The folder's ACL as the server holds it, read once."""
        if folder not in self._acls:
            answer: list[tuple[Any, Any]] = self._session.call(
                lambda client: client.getacl(folder))
            self._acls[folder] = {_text(who): _text(rights) for who, rights in answer}
        return self._acls[folder]

    def close(self) -> None:
        self._session.close()


def _said(row: dict[str, str]) -> dict[str, str]:
    return {"path": row["path"], "who": row["who"], "level": row["level"] or "Custom"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
