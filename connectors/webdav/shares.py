"""A space's sharing (``mappings.sharing`` rows) applied as Nextcloud shares through the OCS
Share API, signed in as the space's account (``SharingTarget``).

Facts, from Nextcloud's developer manual ("OCS Share API", client_apis/OCS/ocs-share-api;
"OCS APIs overview") unless said otherwise:

- The API is at ``<nextcloud>/ocs/v2.php/apps/files_sharing/api/v1/shares``, beside
  ``remote.php/dav/files/<user>/`` (the batch's URL gives both); every call carries
  ``OCS-APIRequest: true``; ``format=json`` asks for JSON; on v2 success is status 200.
- ``GET shares?path=<p>&reshares=false`` lists the account's own shares of one item, ``p``
  relative to its files; ``POST shares`` makes one from ``path``, ``shareType`` (0 user,
  1 group, 3 public link, 4 email), ``shareWith``, ``permissions`` (1 read, 2 update,
  4 create, 8 delete, 16 share), ``publicUpload``, ``expireDate`` (``YYYY-MM-DD``).
- A file takes neither create nor delete permission (Nextcloud's share manager refuses
  them: "Files cannot be shared with create permissions"): edit is 1|2 on a file, 1|2|4|8 on
  a folder, as the web interface's "Allow editing" gives.

What each row becomes:

- A user (a permission, an invitation, a specific-people link) mapped to a target login:
  a user share, read 1, write edit's permissions, owner edit's and share (16); the space's
  own account is skipped (it owns the files).
- A tenant user without a line: no login to share with. A guest from outside: an email
  share would mail them a link anyone holding it may open, where the source made them
  sign in as that address; not made, said.
- A group or a site's group: bascule has no table of groups on the target; not made, said.
- An anonymous link: a public link, read or edit as the link's type, expiring on the day
  the source's link expires (Nextcloud's expiry is a day: the day of the source's instant,
  in UTC, so it never lasts longer); a link expired already is not made. A link for the
  organisation's accounts has no Nextcloud equivalent and is never widened into a public
  link.
- Inherited rows are not given here: Nextcloud shares a folder's content with it.

Effectively once: before making a share, the item's shares are read; a user or group
already shared with, or a public link with the same permissions and expiry, is ``present``.
A run killed between the POST and its answer finds the share there the next time.
Nothing secret goes into the outcomes: no link's token or URL, no password.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from connectors.dav.client import DavClient
from mappings.sharing import CREATED, PRESENT, SKIPPED, ShareOutcome

FILES = "/remote.php/dav/files/"
API = "ocs/v2.php/apps/files_sharing/api/v1/shares"
HEADERS = {"OCS-APIRequest": "true", "Accept": "application/json"}
USER, GROUP, LINK = 0, 1, 3
READ, UPDATE, CREATE, DELETE, SHARE = 1, 2, 4, 8, 16
OK = 200


def permissions(role: str, item: str) -> int:
    """Nextcloud's permissions for a source role on a file or a folder (a library is one)."""
    granted = READ
    if role in ("write", "owner"):
        granted |= UPDATE | (0 if item == "file" else CREATE | DELETE)
    if role == "owner":
        granted |= SHARE
    return granted


@dataclass(frozen=True)
class Share:
    """One share to make: on ``path`` (from the account's files, with a leading ``/``)."""

    path: str
    share_type: int
    share_with: str
    permissions: int
    expire_date: str = ""


def share_of(row: dict[str, str], path: str, own_login: str, now: datetime
             ) -> Share | tuple[str, dict[str, Any]]:
    """The share a row becomes, or why none (a catalogue code and its parameters)."""
    said = {"path": row["path"], "who": row["who"], "role": row["role"]}
    if row["who_type"] in ("group", "site_group"):
        return "sharing_share_group", said
    if row["who_type"] == "link" and "@" not in row["who"]:
        if row["link_scope"] != "anonymous":
            return ("sharing_share_organization" if row["link_scope"] == "organization"
                    else "sharing_share_link_scope"), {**said, "scope": row["link_scope"]}
        day = ""
        if row["expires"]:
            expires = datetime.fromisoformat(row["expires"]).astimezone(UTC)
            if expires <= now:
                return "sharing_share_expired", {**said, "expires": expires.date().isoformat()}
            day = expires.date().isoformat()
        role = "write" if row["link_type"] == "edit" else "read"
        return Share(path, LINK, "", permissions(role, row["item"]), day)
    if row["mapping"] == "unmapped":
        return "sharing_share_unmapped", said
    if row["mapping"] != "mapped":
        return "sharing_share_external", said
    if row["target_login"] == own_login:
        return "sharing_share_own_space", said
    return Share(path, USER, row["target_login"], permissions(row["role"], row["item"]))


class NextcloudShares:
    """The OCS Share API of the Nextcloud whose files ``client`` (the space's) writes."""

    def __init__(self, client: DavClient) -> None:
        self.client = client
        head, _, tail = client.base_path.partition(FILES)
        self.api = f"{head.rstrip('/')}/{API}"
        inside = tail.partition("/")[2].strip("/")
        self.prefix = f"/{inside}" if inside else ""
        """Where the space's root is in the account's files (the batch's URL may go below
        the account's top folder)."""
        self._known: dict[str, list[dict[str, Any]]] = {}

    def apply(self, rows: list[dict[str, str]]) -> Iterator[ShareOutcome]:
        now = datetime.now(UTC)
        for row in rows:
            path = f"{self.prefix}/{row['path']}" if row["path"] else self.prefix or "/"
            share = share_of(row, path, self.client.login, now)
            if not isinstance(share, Share):
                code, params = share
                yield ShareOutcome(row, SKIPPED, code, params)
                continue
            yield self._made(row, share)

    def close(self) -> None:
        self.client.close()

    def _made(self, row: dict[str, str], share: Share) -> ShareOutcome:
        said = {"path": row["path"], "who": row["who"], "role": row["role"]}
        existing = self._shares(share.path)
        if isinstance(existing, tuple):
            status, message = existing
            return ShareOutcome(row, SKIPPED, "sharing_share_refused",
                                {**said, "status": status, "reason": message})
        if any(_same(share, known) for known in existing):
            return ShareOutcome(row, PRESENT, "sharing_share_present", said)
        form = {"path": share.path, "shareType": str(share.share_type),
                "permissions": str(share.permissions)}
        if share.share_with:
            form["shareWith"] = share.share_with
        if share.expire_date:
            form["expireDate"] = share.expire_date
        if share.share_type == LINK and share.permissions & CREATE:
            form["publicUpload"] = "true"
        answer = self.client.request(
            "POST", self.api, query={"format": "json"}, body=urlencode(form).encode(),
            headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"})
        status, message, data = _envelope(answer)
        if status != OK or not isinstance(data, dict):
            return ShareOutcome(row, SKIPPED, "sharing_share_refused",
                                {**said, "status": status, "reason": message})
        existing.append(data)
        if share.share_type != LINK:
            return ShareOutcome(row, CREATED, "sharing_share_created",
                                {**said, "share": data.get("id", "")})
        if share.expire_date:
            return ShareOutcome(row, CREATED, "sharing_link_created",
                                {**said, "share": data.get("id", ""),
                                 "expires": share.expire_date})
        return ShareOutcome(row, CREATED, "sharing_link_created_no_expiry",
                            {**said, "share": data.get("id", "")})

    def _shares(self, path: str) -> list[dict[str, Any]] | tuple[int, str]:
        """The account's shares of ``path``, read once and kept up to date; or the status
        and message of the refusal (404: the item is not there)."""
        if path not in self._known:
            answer = self.client.request("GET", self.api, headers=HEADERS, query={
                "format": "json", "path": path, "reshares": "false"})
            status, message, data = _envelope(answer)
            if status != OK or not isinstance(data, list):
                return status, message
            self._known[path] = data
        return self._known[path]


def _same(share: Share, known: dict[str, Any]) -> bool:
    """Whether an existing share is the one to make: the same person or group, or a public
    link with the same permissions and expiry."""
    if int(known.get("share_type", -1)) != share.share_type:
        return False
    if share.share_type != LINK:
        return str(known.get("share_with") or "") == share.share_with
    return int(known.get("permissions", 0)) == share.permissions and \
        str(known.get("expiration") or "")[:10] == share.expire_date


def _envelope(answer: Any) -> tuple[int, str, Any]:
    """An OCS answer's status, message and data; a body that is no OCS envelope (a proxy's
    page, the CSRF refusal) gives its HTTP status and reason."""
    with answer:
        try:
            ocs = answer.json()["ocs"]
            meta = ocs["meta"]
            return int(meta.get("statuscode", answer.status_code)), \
                str(meta.get("message") or ""), ocs.get("data")
        except (ValueError, KeyError, TypeError):
            return answer.status_code, answer.reason or "", None
