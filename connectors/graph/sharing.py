"""Who may see each item of a drive, read from Microsoft Graph (``mappings.sharing.Grant``).

Pages of Microsoft's Graph documentation (learn.microsoft.com/graph):

- ``api/driveitem-list-permissions``: ``GET /drives/{id}/items/{id}/permissions`` gives an
  item's *effective* permissions, its own and those it has from its ancestors; one request
  per item (the permissions cannot be expanded with a listing).
- ``api/resources/permission``: ``roles`` (``read``, ``write``, ``owner``); ``grantedToV2``
  (``api/resources/sharepointidentityset``: ``user``, ``group``, ``siteUser``,
  ``siteGroup``) for a permission given to someone; ``link`` for a sharing link, with
  ``grantedToIdentitiesV2`` naming the people of a specific-people link; ``invitation``
  (``email``) for an address invited; ``expirationDateTime``, ``0001-01-01T00:00:00Z``
  meaning none. Its remarks: "OneDrive for Business and SharePoint document libraries do
  not return the inheritedFrom property": an item's permission is taken as inherited when
  its parent has a permission with the same id.
- ``api/resources/sharinglink``: ``type`` (``view``, ``edit``, ``embed``), ``scope``
  (``anonymous``, ``organization``, and ``users`` for specific people).
- ``api/driveitem-invite`` (its example): ``grantedToV2.user`` carries the user's
  ``email``.
- A site's owners, members and visitors are SharePoint groups granted on its libraries'
  roots (``siteGroup``): ``api/site-list-permissions`` lists applications only.
- ``api/driveitem-list-children``: the walk over the drive's folders.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from connectors.base import Container
from connectors.graph.session import GraphSession, graph_instant
from mappings.sharing import Grant

CHILD_SELECT = "id,name,file,folder,package"
NO_EXPIRY = "0001-01-01"


def drive_grants(session: GraphSession, container: Container) -> Iterator[Grant]:
    """Every permission of every item of the drive, the root's first (the site's groups),
    then each folder's and file's; a OneNote notebook's parts are not walked."""
    drive = quote(container.native_name, safe="!")
    root = session.get_json(f"drives/{drive}/root", {"$select": "id"})
    pending: list[tuple[str, tuple[str, ...], str, set[str]]] = [
        (str(root["id"]), (), "library", set())]
    while pending:
        item_id, path, kind, parent_ids = pending.pop()
        permissions = list(session.pages(
            f"drives/{drive}/items/{quote(item_id)}/permissions").values())
        own_ids = {str(p.get("id")) for p in permissions}
        below = None
        if kind != "file":
            children = list(session.pages(f"drives/{drive}/items/{quote(item_id)}/children",
                                          {"$select": CHILD_SELECT}).values())
            for child in children:
                child_path = (*path, str(child.get("name", "")))
                if "folder" in child:
                    pending.append((str(child["id"]), child_path, "folder", own_ids))
                elif "file" in child:
                    pending.append((str(child["id"]), child_path, "file", own_ids))
            below = _file_below(session, drive, children)
        for permission in permissions:
            yield from _grants(permission, item_id, path, kind,
                               str(permission.get("id")) in parent_ids, below)


def _file_below(session: GraphSession, drive: str, children: list[dict[str, Any]]
                ) -> str | None:
    """A file anywhere below a folder, breadth first; ``None`` for a folder with none."""
    queue = list(children)
    while queue:
        child = queue.pop(0)
        if "file" in child:
            return str(child["id"])
        if "folder" in child:
            queue += session.pages(f"drives/{drive}/items/{quote(str(child['id']))}/children",
                                   {"$select": CHILD_SELECT}).values()
    return None


def _grants(permission: dict[str, Any], item_id: str, path: tuple[str, ...], kind: str,
            inherited: bool, below: str | None) -> Iterator[Grant]:
    roles = [str(role) for role in permission.get("roles") or []] or ["read"]
    role = "owner" if "owner" in roles else "write" if "write" in roles else roles[0]
    expiry = str(permission.get("expirationDateTime") or "")
    common = {"source_id": item_id, "path": path, "item": kind, "role": role,
              "inherited": inherited, "below": below,
              "expires": None if not expiry or expiry.startswith(NO_EXPIRY)
              else graph_instant(expiry)}
    link = permission.get("link")
    if link:
        scope, link_type = str(link.get("scope", "")), str(link.get("type", ""))
        people = permission.get("grantedToIdentitiesV2") or []
        if scope == "users" and people:
            for identity in people:
                yield Grant(who=_who(identity)[0], who_type="link", link_scope=scope,
                            link_type=link_type, **common)
        else:
            yield Grant(who="anyone" if scope == "anonymous" else scope or "link",
                        who_type="link", link_scope=scope, link_type=link_type, **common)
        return
    granted = permission.get("grantedToV2") or {}
    if granted:
        who, who_type = _who(granted)
        yield Grant(who=who, who_type=who_type, **common)
        return
    invitation = permission.get("invitation") or {}
    if invitation.get("email"):
        yield Grant(who=str(invitation["email"]), who_type="invitation", **common)


def _who(identities: dict[str, Any]) -> tuple[str, str]:
    """Who a ``sharePointIdentitySet`` names: an address for a user, a name for a group."""
    user = identities.get("user") or {}
    if user:
        login = str((identities.get("siteUser") or {}).get("loginName", ""))
        address = user.get("email") or (login.rpartition("|")[2] if "@" in login else "")
        return str(address or user.get("displayName") or user.get("id", "")), "user"
    group = identities.get("group") or {}
    if group:
        return str(group.get("email") or group.get("displayName", "")), "group"
    site_group = identities.get("siteGroup") or {}
    return str(site_group.get("displayName", "")), "site_group"
