"""OneDrive and SharePoint drives for the Graph test server: fixture data and routes.

Importing this module registers its routes into ``tests.graph_server``'s ``MAILBOX_ROUTES``
and ``TENANT_ROUTES``; the data lives in ``tenant.extras["files"]`` (a ``FixtureFiles``).
Each behaviour follows a page of Microsoft's Graph documentation (learn.microsoft.com/graph):

- ``api/resources/driveitem``: ``eTag`` (metadata and content), ``cTag`` (content only, not on
  folders in OneDrive for Business), the ``file``/``folder``/``package``/``root``/``deleted``
  facets, ``@microsoft.graph.downloadUrl``: "a short-lived URL... available for a short period
  of time (1 hour)", "authentication is not required with this URL".
- ``api/resources/hashes``: ``quickXorHash`` (base64), ``sha1Hash`` and ``sha256Hash`` (hex);
  quickXorHash is the one OneDrive for work or school always gives.
- ``api/resources/filesysteminfo``: ``lastModifiedDateTime`` as the client saw it, distinct
  from the service's own ``lastModifiedDateTime`` on the item.
- ``api/resources/package``: a OneNote notebook is an item with ``package: {type: oneNote}``,
  no ``file`` nor ``folder`` facet, whose children are the notebook's own files and folders.
- ``api/driveitem-delta``: pages linked by ``@odata.nextLink``, the last with
  ``@odata.deltaLink``; a later round lists changed items with their parents (unless
  ``deltaExcludeParent``), deleted items with the ``deleted`` facet and without ``name``;
  ``parentReference`` carries no ``path``; OneDrive for Business omits ``cTag``; a token the
  service cannot use answers ``410 Gone`` with ``resyncChangesApplyDifferences`` and a
  ``Location`` header that starts a new enumeration.
- ``api/driveitem-get``: one item, ``$select`` honoured; ``parentReference.path`` given here.
- ``api/drive-get`` (``/users/{id}/drive``), ``api/drive-list`` (``/sites/{id}/drives``).
- ``api/site-search`` (``/sites?search=*``) and ``api/site-getallsites`` (``/sites/getAllSites``,
  personal sites included, told apart by ``isPersonalSite``: ``api/resources/site``).
- ``api/teams-list`` (``/teams``: ``id``, ``displayName``, paged; a team's id is its group's),
  ``api/drive-get`` (``/groups/{id}/drive``: the group's default library, named ``Documents``;
  404 when it was never provisioned), ``api/group-list-owners`` and ``api/group-list-members``
  (``/groups/{id}/owners``, ``/members``: directory objects with ``@odata.type``
  ``#microsoft.graph.user``, ``userPrincipalName``, ``mail``).
- ``api/driveitem-list-permissions`` (``/drives/{id}/items/{id}/permissions``): the item's
  *effective* permissions, its own and those it inherits from its ancestors;
  ``api/resources/permission``: ``roles`` (``read``, ``write``, ``owner``), ``grantedToV2``
  (a ``sharePointIdentitySet``: ``user``, ``group``, ``siteUser``, ``siteGroup``),
  ``grantedToIdentitiesV2`` for links to specific people, ``link`` (``type`` view/edit,
  ``scope``: ``api/resources/sharinglink``, anonymous/organization/users),
  ``expirationDateTime``, ``invitation``; and its remark: "OneDrive for Business and
  SharePoint document libraries do not return the inheritedFrom property", so an inherited
  permission comes back with the id it has on the ancestor and nothing more. A user's
  ``email`` in ``grantedToV2.user`` is as the ``api/driveitem-invite`` page's example shows
  it. A site's owners, members and visitors are the SharePoint groups granted on its
  libraries' roots (``siteGroup``): ``api/site-list-permissions`` lists only applications.

Download URLs point at another host (in SharePoint, ``{tenant}.sharepoint.com/_layouts/15/
download.aspx?...&tempauth=...``): here a second TLS server on another loopback port, started
by ``running_download_server``. The Graph server checks a bearer token on every ``/v1.0``
path, so the documented "no token" download cannot be one of its routes. Which status an
expired URL answers the documentation does not say; SharePoint answers 401 (field reports),
which ``expire_next_downloads()`` makes this server do.

Switches: ``expire_next_downloads()``, ``wrong_hash`` (item ids served with a wrong
quickXorHash), ``sha1_only`` (item ids whose hashes hold only ``sha1Hash``),
``forget_delta_tokens()``. ``stats`` counts downloads and requests that carried a token.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import secrets
import ssl
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from connectors.graph.quickxor import QuickXorHash
from tests.graph_server import (
    MAILBOX_ROUTES,
    TENANT_ROUTES,
    FixtureMailbox,
    FixtureTenant,
    GraphError,
    GraphHandler,
    Reply,
    json_reply,
)
from tests.tls import TestCertificates

FILES = "files"
"""Key of the ``FixtureFiles`` in ``FixtureTenant.extras``."""
DELTA_PAGE_SIZE = 50
"""Items per delta page without ``$top``: the delta page names no default."""
MAX_PAGE_SIZE = 1000
LIST_PAGE_SIZE = 50
SHAREPOINT_HOST = "ville-exemple.sharepoint.com"
BIG_FILE_SIZE = 30 << 20
CHUNK = 64 * 1024


@dataclass
class FixtureDriveItem:
    """One driveItem: the root, a folder, a file or a package (OneNote notebook)."""

    id: str
    name: str
    parent_id: str
    kind: str
    content: bytes = b""
    mime_type: str = "application/octet-stream"
    created: datetime = field(default_factory=lambda: datetime(2023, 9, 4, 8, 0, tzinfo=UTC))
    client_modified: datetime = field(
        default_factory=lambda: datetime(2024, 1, 15, 9, 30, tzinfo=UTC))
    """``fileSystemInfo.lastModifiedDateTime``: when the user last saved it on a device."""
    uploaded: datetime = field(default_factory=lambda: datetime(2024, 2, 1, 18, 0, tzinfo=UTC))
    """The service's ``lastModifiedDateTime``: when it reached OneDrive."""
    version: int = 0
    """Sequence of the last change of anything (drives ``eTag`` and delta)."""
    content_version: int = 0
    """Sequence of the last change of the content (drives ``cTag``)."""
    quick_xor: str = ""
    sha1: str = ""
    permissions: list[dict[str, Any]] = field(default_factory=list)
    """Permission resources granted on this item itself (its descendants inherit them)."""

    def set_content(self, content: bytes) -> None:
        self.content = content
        self.quick_xor = QuickXorHash(content).b64digest()
        self.sha1 = hashlib.sha1(content).hexdigest().upper()


@dataclass
class FixtureDrive:
    """A OneDrive (``business``) or a document library (``documentLibrary``)."""

    id: str
    name: str
    drive_type: str
    owner: str
    root_id: str = ""
    items: dict[str, FixtureDriveItem] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)
    """(sequence, item id, kind) of deleted items."""

    def path_of(self, item: FixtureDriveItem) -> list[str]:
        names: list[str] = []
        while item.kind != "root":
            names.append(item.name)
            item = self.items[item.parent_id]
        return names[::-1]

    def child(self, parent: FixtureDriveItem, name: str) -> FixtureDriveItem:
        return next(i for i in self.items.values()
                    if i.parent_id == parent.id and i.name == name)

    def at(self, *names: str) -> FixtureDriveItem:
        item = self.items[self.root_id]
        for name in names:
            item = self.child(item, name)
        return item


@dataclass
class FixtureSite:
    """A SharePoint site and its document libraries."""

    id: str
    name: str
    display_name: str
    drives: list[FixtureDrive] = field(default_factory=list)
    personal: bool = False

    def resource(self) -> dict[str, Any]:
        path = "personal" if self.personal else "sites"
        return {"id": self.id, "name": self.name, "displayName": self.display_name,
                "webUrl": f"https://{SHAREPOINT_HOST}/{path}/{self.name}",
                "isPersonalSite": self.personal,
                "createdDateTime": "2021-05-03T09:00:00Z"}


@dataclass
class FixtureTeam:
    """A team: its group's id, name, default library, owners and members (mailbox ids)."""

    id: str
    display_name: str
    drive: FixtureDrive | None
    owners: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)


@dataclass
class FixtureFiles:
    """Every drive of the tenant. Change it with the methods below, which keep the change
    sequence delta reads. Its own lock guards it, for both servers."""

    drives: dict[str, FixtureDrive] = field(default_factory=dict)
    user_drives: dict[str, str] = field(default_factory=dict)
    """Mailbox (user) id -> id of their OneDrive."""
    sites: list[FixtureSite] = field(default_factory=list)
    teams: list[FixtureTeam] = field(default_factory=list)
    sequence: int = 0
    download_base: str = ""
    wrong_hash: set[str] = field(default_factory=set)
    sha1_only: set[str] = field(default_factory=set)
    download_tokens: dict[str, tuple[str, str]] = field(default_factory=dict)
    """tempauth -> (drive id, item id)."""
    expiring: int = 0
    delta_tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def _tick(self) -> int:
        self.sequence += 1
        return self.sequence

    def add_drive(self, name: str, drive_type: str, owner: str) -> FixtureDrive:
        drive = FixtureDrive("b!" + secrets.token_urlsafe(30), name, drive_type, owner)
        root = FixtureDriveItem(_item_id(), "root", "", "root", version=self._tick())
        drive.root_id = root.id
        drive.items[root.id] = root
        self.drives[drive.id] = drive
        return drive

    def add_folder(self, drive: FixtureDrive, parent: FixtureDriveItem, name: str,
                   kind: str = "folder") -> FixtureDriveItem:
        with self.lock:
            folder = FixtureDriveItem(_item_id(), name, parent.id, kind, version=self._tick())
            drive.items[folder.id] = folder
            return folder

    def folders(self, drive: FixtureDrive, *names: str) -> FixtureDriveItem:
        """The folder at ``names`` under the root, made with its parents if missing."""
        item = drive.items[drive.root_id]
        for name in names:
            found = next((i for i in drive.items.values()
                          if i.parent_id == item.id and i.name == name), None)
            item = found or self.add_folder(drive, item, name)
        return item

    def add_file(self, drive: FixtureDrive, parent: FixtureDriveItem, name: str,
                 content: bytes, **properties: Any) -> FixtureDriveItem:
        with self.lock:
            sequence = self._tick()
            item = FixtureDriveItem(_item_id(), name, parent.id, "file", version=sequence,
                                    content_version=sequence, **properties)
            item.set_content(content)
            drive.items[item.id] = item
            return item

    def update_file(self, drive: FixtureDrive, item_id: str, content: bytes,
                    client_modified: datetime) -> None:
        with self.lock:
            item = drive.items[item_id]
            item.set_content(content)
            item.client_modified = client_modified
            item.uploaded = datetime.now(UTC)
            item.version = item.content_version = self._tick()

    def rename(self, drive: FixtureDrive, item_id: str, name: str) -> None:
        with self.lock:
            item = drive.items[item_id]
            item.name = name
            item.version = self._tick()

    def move(self, drive: FixtureDrive, item_id: str, parent: FixtureDriveItem) -> None:
        with self.lock:
            item = drive.items[item_id]
            item.parent_id = parent.id
            item.version = self._tick()

    def delete(self, drive: FixtureDrive, item_id: str) -> None:
        with self.lock:
            gone = [item_id]
            for child_id in gone:
                gone += [i.id for i in drive.items.values() if i.parent_id == child_id]
            for gone_id in gone:
                drive.removed.append((self._tick(), gone_id, drive.items.pop(gone_id).kind))

    def expire_next_downloads(self, count: int = 1) -> None:
        """The next ``count`` download URLs used are found expired, as if the hour they
        last had passed between Graph giving them and the client using them."""
        with self.lock:
            self.expiring += count

    def forget_delta_tokens(self) -> None:
        with self.lock:
            self.delta_tokens.clear()

    def site(self, display_name: str) -> FixtureSite:
        return next(s for s in self.sites if s.display_name == display_name)

    def team(self, display_name: str) -> FixtureTeam:
        return next(t for t in self.teams if t.display_name == display_name)

    def grant(self, item: FixtureDriveItem, roles: list[str], **facets: Any) -> dict[str, Any]:
        """Add a permission resource to an item: ``facets`` are its other properties
        (``grantedToV2``, ``link``, ``grantedToIdentitiesV2``, ``expirationDateTime``...)."""
        with self.lock:
            permission = {"id": str(uuid.uuid4()), "roles": roles, **facets}
            item.permissions.append(permission)
            return permission


def user_identity(mailbox: FixtureMailbox) -> dict[str, Any]:
    """``grantedToV2`` of a permission given to a user of the tenant."""
    return {"user": {"id": mailbox.id, "displayName": mailbox.display_name,
                     "email": mailbox.user_principal_name},
            "siteUser": {"id": str(abs(hash(mailbox.id)) % 1000), "displayName":
                         mailbox.display_name,
                         "loginName": f"i:0#.f|membership|{mailbox.user_principal_name}"}}


def site_group(name: str) -> dict[str, Any]:
    """``grantedToV2`` of a permission given to a SharePoint group of a site."""
    return {"siteGroup": {"id": str(abs(hash(name)) % 100), "displayName": name,
                          "loginName": name}}


def _item_id() -> str:
    # OneDrive for Business item ids: 34 characters, base32-like, starting with 01.
    return "01" + base64.b32encode(secrets.token_bytes(20)).decode()[:32]


def pdf_bytes(title: str, pages: int = 3) -> bytes:
    """A small document that looks like a PDF, different for every title."""
    body = "".join(f"%Page {n}: {title}\n" for n in range(1, pages + 1))
    return b"%PDF-1.7\n" + body.encode("utf-8") + b"%%EOF\n"


def big_content(size: int = BIG_FILE_SIZE, seed: int = 30) -> bytes:
    return random.Random(seed).randbytes(size)


def seed_files(tenant: FixtureTenant, big_file_size: int = BIG_FILE_SIZE) -> FixtureFiles:
    """Amélie's OneDrive, two SharePoint sites and a team (with its site), and a team whose
    files were never provisioned, into ``tenant.extras["files"]``."""
    files = FixtureFiles()
    tenant.extras[FILES] = files
    amelie = tenant.mailbox(f"amelie.lefevre@{tenant.domain}")
    assert amelie is not None
    onedrive = files.add_drive("OneDrive", "business", amelie.display_name)
    files.user_drives[amelie.id] = onedrive.id

    deliberations = files.folders(onedrive, "Documents", "Délibérations", "2024")
    for n in (1, 2, 3):
        files.add_file(onedrive, deliberations, f"PV conseil n°{n}.pdf",
                       pdf_bytes(f"Procès-verbal du conseil n°{n}"), mime_type="application/pdf",
                       client_modified=datetime(2024, 3, n * 7, 17, 45, 12, tzinfo=UTC))
    budget = files.folders(onedrive, "Documents", "Finances & budget")
    files.add_file(onedrive, budget, "Budget 2024 #2 (hausse de 3%).xlsx",
                   b"PK\x03\x04" + b"Budget primitif, hausse de 3 %" * 40,
                   mime_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    files.add_file(onedrive, budget, "Réunion d'équipe – été.docx",
                   b"PK\x03\x04" + "Compte rendu de la réunion d'été".encode() * 25)
    photos = files.folders(onedrive, "Images", "Fête du 14 juillet")
    files.add_file(onedrive, photos, "défilé.jpg", bytes(range(256)) * 400,
                   mime_type="image/jpeg")
    files.add_file(onedrive, files.folders(onedrive), "Lisez-moi.txt",
                   "Bienvenue dans l'espace d'Amélie.\r\n".encode())
    files.folders(onedrive, "Vide")
    videos = files.folders(onedrive, "Vidéos")
    files.add_file(onedrive, videos, "Conseil municipal (enregistrement).mp4",
                   big_content(big_file_size), mime_type="video/mp4")

    notebook = files.add_folder(onedrive, files.folders(onedrive, "Documents"),
                                "Carnet de notes d'Amélie", kind="package")
    files.add_file(onedrive, notebook, "Réunions.one", b"\xe4\x52\x5c\x7b" * 300)
    files.add_file(onedrive, notebook, "Open Notebook.onetoc2", b"\xe4\x52\x5c\x7b" * 30)
    files.add_folder(onedrive, notebook, "OneNote_RecycleBin")

    for name, display_name in (("urbanisme", "Service urbanisme"),
                               ("conseil-municipal", "Conseil municipal")):
        site = FixtureSite(f"{SHAREPOINT_HOST},{uuid.uuid4()},{uuid.uuid4()}", name,
                           display_name)
        library = files.add_drive("Documents partagés", "documentLibrary", display_name)
        site.drives.append(library)
        files.add_file(library, files.folders(library, "Plans", "PLU 2025"),
                       "Règlement écrit.pdf", pdf_bytes(f"Règlement {display_name}"))
        files.sites.append(site)
    urbanisme = files.sites[0]
    archives = files.add_drive("Archives 1990-2010", "documentLibrary", urbanisme.display_name)
    urbanisme.drives.append(archives)
    files.add_file(archives, files.folders(archives), "Permis 1998.pdf", pdf_bytes("Permis"))
    personal = FixtureSite(f"{SHAREPOINT_HOST}-my,{uuid.uuid4()},{uuid.uuid4()}",
                           "amelie_lefevre_ville-exemple_fr", amelie.display_name,
                           [onedrive], personal=True)
    files.sites.append(personal)

    team_drive = files.add_drive("Documents", "documentLibrary", "Équipe voirie")
    files.add_file(team_drive, files.folders(team_drive, "Général"), "Planning chantiers.xlsx",
                   b"PK\x03\x04" + b"Planning des chantiers de voirie" * 30)
    files.add_file(team_drive, files.folders(team_drive, "Astreintes"), "Tableau.docx",
                   b"PK\x03\x04" + b"Tableau des astreintes" * 20)
    team = FixtureTeam(str(uuid.uuid4()), "Équipe voirie", team_drive, owners=[amelie.id])
    files.teams.append(team)
    # A team's group has a site of its own, whose library its drive is.
    files.sites.append(FixtureSite(f"{SHAREPOINT_HOST},{uuid.uuid4()},{uuid.uuid4()}",
                                   "equipe-voirie", "Équipe voirie", [team_drive]))
    files.teams.append(FixtureTeam(str(uuid.uuid4()), "Équipe sans fichiers", None))
    return files


def seed_sharing(tenant: FixtureTenant, files: FixtureFiles) -> None:
    """Who may see what, as SharePoint and OneDrive keep it: each site's owners, members and
    visitors on its libraries' roots, a folder shared with a user, links of each scope (one
    with an expiry), a guest from outside, and a OneDrive file Amélie shared."""
    amelie = tenant.mailbox(f"amelie.lefevre@{tenant.domain}")
    francois = tenant.mailbox(f"francois.dupre@{tenant.domain}")
    assert amelie is not None and francois is not None
    for site in files.sites:
        if site.personal:
            continue
        for library in site.drives:
            root = library.items[library.root_id]
            for suffix, role in (("Owners", "owner"), ("Members", "write"),
                                 ("Visitors", "read")):
                files.grant(root, [role], grantedToV2=site_group(f"{site.display_name} {suffix}"))
    urbanisme = files.site("Service urbanisme")
    documents, archives = urbanisme.drives
    files.grant(documents.at("Plans"), ["write"], grantedToV2=user_identity(francois))
    files.grant(documents.at("Plans", "PLU 2025", "Règlement écrit.pdf"), ["read"],
                link={"type": "view", "scope": "anonymous",
                      "webUrl": f"https://{SHAREPOINT_HOST}/:b:/s/urbanisme/Eabc"},
                expirationDateTime="2026-06-30T00:00:00Z")
    files.grant(archives.at("Permis 1998.pdf"), ["write"],
                link={"type": "edit", "scope": "organization",
                      "webUrl": f"https://{SHAREPOINT_HOST}/:b:/s/urbanisme/Edef"},
                expirationDateTime="0001-01-01T00:00:00Z")
    files.grant(archives.at("Permis 1998.pdf"), ["read"],
                link={"type": "view", "scope": "users",
                      "webUrl": f"https://{SHAREPOINT_HOST}/:b:/s/urbanisme/Eghi"},
                grantedToIdentitiesV2=[{"user": {"displayName": "Cabinet Géomètre",
                                                 "email": "contact@geometre.example"}}])
    onedrive = files.drives[files.user_drives[amelie.id]]
    files.grant(onedrive.items[onedrive.root_id], ["owner"], grantedToV2=user_identity(amelie))
    files.grant(onedrive.at("Documents", "Finances & budget"), ["write"],
                grantedToV2=user_identity(francois))
    files.grant(onedrive.at("Lisez-moi.txt"), ["read"],
                invitation={"email": "partenaire@asso.example", "signInRequired": True})
    team = files.team("Équipe voirie")
    assert team.drive is not None
    team.members.append(francois.id)


# --- resources ----------------------------------------------------------------------------


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def item_resource(files: FixtureFiles, drive: FixtureDrive, item: FixtureDriveItem, *,
                  in_delta: bool) -> dict[str, Any]:
    """A driveItem as GET or delta gives it (see the module docstring for the pages)."""
    guid = uuid.UUID(bytes=hashlib.md5(item.id.encode()).digest())
    resource: dict[str, Any] = {
        "id": item.id,
        "name": item.name,
        "eTag": f'"{{{str(guid).upper()}}},{item.version}"',
        "createdDateTime": _stamp(item.created),
        "lastModifiedDateTime": _stamp(item.uploaded),
        "size": len(item.content) if item.kind == "file" else _tree_size(drive, item),
        "fileSystemInfo": {"createdDateTime": _stamp(item.created),
                           "lastModifiedDateTime": _stamp(item.client_modified)},
    }
    if item.kind != "root":
        parent = drive.items[item.parent_id]
        reference = {"driveType": drive.drive_type, "driveId": drive.id, "id": parent.id}
        if not in_delta:
            path = "/".join(drive.path_of(parent))
            reference["path"] = f"/drives/{drive.id}/root:" + (f"/{path}" if path else "")
        resource["parentReference"] = reference
    if item.kind == "file":
        if not in_delta:
            resource["cTag"] = f'"c:{{{str(guid).upper()}}},{item.content_version}"'
        if item.id in files.sha1_only:
            hashes = {"sha1Hash": item.sha1}
        else:
            quick_xor = item.quick_xor
            if item.id in files.wrong_hash:
                quick_xor = QuickXorHash(item.content + b"!").b64digest()
            hashes = {"quickXorHash": quick_xor}
        resource["file"] = {"mimeType": item.mime_type, "hashes": hashes}
    elif item.kind == "package":
        resource["package"] = {"type": "oneNote"}
    else:
        resource["folder"] = {"childCount": sum(1 for i in drive.items.values()
                                                if i.parent_id == item.id)}
        if item.kind == "root":
            resource["root"] = {}
    return resource


def _tree_size(drive: FixtureDrive, folder: FixtureDriveItem) -> int:
    return sum(len(i.content) if i.kind == "file" else _tree_size(drive, i)
               for i in drive.items.values() if i.parent_id == folder.id)


def _selected(resource: dict[str, Any], select: str | None) -> dict[str, Any]:
    """``$select``: the named properties and ``id``; the download URL only when named."""
    if not select:
        return resource
    wanted = {name.strip() for name in select.split(",")} | {"id"}
    return {k: v for k, v in resource.items()
            if k in wanted or k.startswith("@odata")}


def _download_url(files: FixtureFiles, drive: FixtureDrive, item: FixtureDriveItem) -> str:
    tempauth = secrets.token_urlsafe(24)
    files.download_tokens[tempauth] = (drive.id, item.id)
    return (f"{files.download_base}/_layouts/15/download.aspx?UniqueId={item.id}"
            f"&tempauth={tempauth}")


# --- routes ---------------------------------------------------------------------------------


def _page(handler: GraphHandler, files: FixtureFiles, values: list[dict[str, Any]],
          query: dict[str, str], context: str) -> Reply:
    """A plain list, paged behind a ``$skiptoken`` (paging page)."""
    if "$skiptoken" in query:
        cursor = files.delta_tokens.get(query["$skiptoken"])
        if cursor is None:
            raise GraphError(400, "BadRequest", "Invalid skip token.")
        values, size = cursor["values"], cursor["size"]
    else:
        size = min(int(query.get("$top", LIST_PAGE_SIZE)), MAX_PAGE_SIZE)
    payload: dict[str, Any] = {
        "@odata.context": f"{handler.state.base_url}/v1.0/$metadata#{context}",
        "value": [_selected(v, query.get("$select")) for v in values[:size]]}
    if values[size:]:
        token = secrets.token_urlsafe(12)
        files.delta_tokens[token] = {"values": values[size:], "size": size}
        payload["@odata.nextLink"] = (f"{handler.state.base_url}{urlsplit(handler.path).path}"
                                      f"?$skiptoken={token}")
    return json_reply(payload)


def _drive_resource(drive: FixtureDrive) -> dict[str, Any]:
    return {"id": drive.id, "name": drive.name, "driveType": drive.drive_type,
            "owner": {"user": {"displayName": drive.owner}},
            "quota": {"used": _tree_size(drive, drive.items[drive.root_id])}}


def _delta(handler: GraphHandler, files: FixtureFiles, drive: FixtureDrive,
           query: dict[str, str]) -> Reply:
    base = f"{handler.state.base_url}/v1.0/drives/{drive.id}/root/delta"
    token = query.get("token")
    cursor = files.delta_tokens.get(token) if token else None
    if token and cursor is None:
        # A token the service can no longer use (driveitem-delta page): 410 Gone, and a
        # Location that starts a fresh enumeration.
        raise GraphError(410, "resyncChangesApplyDifferences",
                         "The delta token is no longer valid; resync required.",
                         {"Location": base})
    if cursor is None or "since" in cursor:
        since = cursor["since"] if cursor else 0
        exclude_parents = "deltaExcludeParent" in handler.headers
        changed = {i.id for i in drive.items.values() if i.version > since}
        if not exclude_parents:
            for item_id in list(changed):
                item = drive.items[item_id]
                while item.kind != "root":
                    item = drive.items[item.parent_id]
                    changed.add(item.id)
        ordered = sorted(changed, key=lambda i: len(drive.path_of(drive.items[i])))
        pending = [("item", i) for i in ordered]
        pending += [("deleted", f"{item_id}:{kind}") for seq, item_id, kind in drive.removed
                    if seq > since]
        cursor = {"pending": pending, "start": files.sequence,
                  "size": min(int(query.get("$top", DELTA_PAGE_SIZE)), MAX_PAGE_SIZE)}
    size = cursor["size"]
    page, rest = cursor["pending"][:size], cursor["pending"][size:]
    values: list[dict[str, Any]] = []
    for kind, key in page:
        if kind == "deleted":
            item_id, item_kind = key.split(":")
            facet = "file" if item_kind == "file" else "folder"
            # Deleted items: the deleted facet, no name nor cTag (driveitem-delta remarks).
            values.append({"id": item_id, "deleted": {"state": "deleted"}, facet: {},
                           "parentReference": {"driveId": drive.id,
                                               "driveType": drive.drive_type}})
        elif key in drive.items:
            values.append(item_resource(files, drive, drive.items[key], in_delta=True))
    payload: dict[str, Any] = {
        "@odata.context": f"{handler.state.base_url}/v1.0/$metadata#Collection(driveItem)",
        "value": [_selected(v, query.get("$select")) for v in values]}
    next_token = secrets.token_urlsafe(16)
    if rest:
        files.delta_tokens[next_token] = {**cursor, "pending": rest}
        payload["@odata.nextLink"] = f"{base}?token={next_token}"
    else:
        files.delta_tokens[next_token] = {"since": cursor["start"]}
        payload["@odata.deltaLink"] = f"{base}?token={next_token}"
    files.stats["delta_pages"] += 1
    return json_reply(payload)


def _item(handler: GraphHandler, files: FixtureFiles, drive: FixtureDrive, item_id: str,
          query: dict[str, str]) -> Reply:
    files.stats["item_gets"] += 1
    item = drive.items.get(item_id)
    if item is None:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    resource = item_resource(files, drive, item, in_delta=False)
    if item.kind == "file":
        resource["@microsoft.graph.downloadUrl"] = _download_url(files, drive, item)
    return json_reply(_selected(resource, query.get("$select")))


def _drive_route(handler: GraphHandler, files: FixtureFiles, drive: FixtureDrive,
                 rest: list[str], query: dict[str, str]) -> Reply | None:
    if not rest:
        return json_reply(_selected(_drive_resource(drive), query.get("$select")))
    if rest == ["root", "delta"]:
        return _delta(handler, files, drive, query)
    if rest == ["root"]:
        return _item(handler, files, drive, drive.root_id, query)
    if len(rest) == 2 and rest[0] == "items":
        return _item(handler, files, drive, rest[1], query)
    if len(rest) == 3 and rest[0] == "items" and rest[2] == "children":
        return _children(handler, files, drive, rest[1], query)
    if len(rest) == 3 and rest[0] == "items" and rest[2] == "permissions":
        return _permissions(handler, files, drive, rest[1], query)
    if rest == ["root", "permissions"]:
        return _permissions(handler, files, drive, drive.root_id, query)
    return None


def _children(handler: GraphHandler, files: FixtureFiles, drive: FixtureDrive, item_id: str,
              query: dict[str, str]) -> Reply:
    """A folder's children, paged (driveitem-list-children page)."""
    if "$skiptoken" not in query and item_id not in drive.items:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    files.stats["children_lists"] += 1
    children = [item_resource(files, drive, item, in_delta=False)
                for item in drive.items.values() if item.parent_id == item_id]
    return _page(handler, files, children, query, "Collection(driveItem)")


def user_drive_route(handler: GraphHandler, mailbox: FixtureMailbox, rest: list[str],
                     query: dict[str, str]) -> Reply | None:
    """``/users/{id}/drive`` and below (drive-get page)."""
    files: FixtureFiles | None = handler.state.tenant.extras.get(FILES)
    if files is None or not rest or rest[0] != "drive":
        return None
    with files.lock:
        drive_id = files.user_drives.get(mailbox.id)
        if drive_id is None:
            # A user whose OneDrive was never provisioned.
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        return _drive_route(handler, files, files.drives[drive_id], rest[1:], query)


def _permissions(handler: GraphHandler, files: FixtureFiles, drive: FixtureDrive,
                 item_id: str, query: dict[str, str]) -> Reply:
    """The item's effective permissions: its own, then its ancestors' with the same ids and
    no ``inheritedFrom`` (permission page, remarks)."""
    item = drive.items.get(item_id)
    if item is None:
        raise GraphError(404, "itemNotFound", "The resource could not be found.")
    found = list(item.permissions)
    while item.kind != "root":
        item = drive.items[item.parent_id]
        found += item.permissions
    return _page(handler, files, found, query, "Collection(permission)")


def _team_route(handler: GraphHandler, files: FixtureFiles, segments: list[str],
                query: dict[str, str], people: list[FixtureMailbox]) -> Reply | None:
    """``/teams`` (teams-list page) and ``/groups/{id}/drive|owners|members``."""
    if segments == ["teams"]:
        return _page(handler, files, [{"id": t.id, "displayName": t.display_name,
                                       "description": None} for t in files.teams],
                     query, "teams")
    if segments[0] != "groups" or len(segments) < 3:
        return None
    team = next((t for t in files.teams if t.id == segments[1]), None)
    if team is None:
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{segments[1]}' does not exist.")
    if segments[2] == "drive":
        if team.drive is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        return _drive_route(handler, files, team.drive, segments[3:], query)
    if len(segments) == 3 and segments[2] in ("owners", "members"):
        ids = team.owners if segments[2] == "owners" else team.owners + team.members
        found = [{"@odata.type": "#microsoft.graph.user", **m.resource()}
                 for m in people if m.id in ids]
        return _page(handler, files, found, query, "directoryObjects")
    return None


def tenant_drive_route(handler: GraphHandler, segments: list[str],
                       query: dict[str, str]) -> Reply | None:
    """``/drives/...``, ``/sites/...``, ``/teams`` and ``/groups/...``."""
    files: FixtureFiles | None = handler.state.tenant.extras.get(FILES)
    if files is None or segments[0] not in ("drives", "sites", "teams", "groups"):
        return None
    people: list[FixtureMailbox] = []
    if segments[0] == "groups":
        # The tenant's lock first, then the files' lock, in the order the mailbox routes take
        # them.
        with handler.state.lock:
            people = list(handler.state.tenant.mailboxes)
    with files.lock:
        if segments[0] in ("teams", "groups"):
            return _team_route(handler, files, segments, query, people)
        if segments[0] == "drives" and len(segments) >= 2:
            drive = files.drives.get(segments[1])
            if drive is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            return _drive_route(handler, files, drive, segments[2:], query)
        if segments == ["sites"]:
            if "search" not in query or "$skiptoken" in query:
                # Without search the list comes back empty (Microsoft Q&A 1164850, "Why does
                # /v1.0/sites need a blank search parameter"); a skiptoken names its rest.
                return _page(handler, files, [], query, "sites")
            # Search never returns personal (OneDrive) sites.
            sites = [s.resource() for s in files.sites if not s.personal
                     and (query["search"] in ("*", "") or
                          query["search"].lower() in s.display_name.lower())]
            return _page(handler, files, sites, query, "sites")
        if segments == ["sites", "getAllSites"]:
            return _page(handler, files, [s.resource() for s in files.sites], query, "sites")
        if len(segments) == 3 and segments[0] == "sites" and segments[2] == "drives":
            site = next((s for s in files.sites if s.id == segments[1]), None)
            if site is None:
                raise GraphError(404, "itemNotFound", "Requested site could not be found")
            return _page(handler, files, [_drive_resource(d) for d in site.drives], query,
                         "drives")
    return None


MAILBOX_ROUTES.append(user_drive_route)
TENANT_ROUTES.append(tenant_drive_route)


# --- the download host -----------------------------------------------------------------------


class DownloadHandler(BaseHTTPRequestHandler):
    """Pre-authenticated download URLs: the ``tempauth`` in the URL is the credential."""

    protocol_version = "HTTP/1.1"
    server: DownloadServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ``stats`` says what happened."""

    def do_GET(self) -> None:
        files = self.server.files
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        with files.lock:
            files.stats["download_requests"] += 1
            if "Authorization" in self.headers:
                files.stats["download_with_token"] += 1
            target = files.download_tokens.get(query.get("tempauth", ""))
            if target is not None and files.expiring:
                files.expiring -= 1
                target = None
            item = None
            if target is not None and parts.path == "/_layouts/15/download.aspx":
                drive = files.drives.get(target[0])
                item = drive.items.get(target[1]) if drive else None
            if item is None:
                files.stats["download_refused"] += 1
                body = json.dumps({"error_description": "Invalid or expired token"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            content = memoryview(item.content)
            files.stats["downloads"] += 1
        self.send_response(200)
        self.send_header("Content-Type", item.mime_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        for offset in range(0, len(content), CHUNK):
            self.wfile.write(content[offset: offset + CHUNK])


class DownloadServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: FixtureFiles, certificates: TestCertificates) -> None:
        super().__init__(("127.0.0.1", 0), DownloadHandler)
        self.files = files
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certificates.cert_file, certificates.key_file)

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            request = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-download is not the server's error."""


@contextlib.contextmanager
def running_download_server(files: FixtureFiles,
                            certificates: TestCertificates) -> Iterator[str]:
    """Serve ``files``' download URLs on 127.0.0.1 and a free port until the block ends."""
    server = DownloadServer(files, certificates)
    files.download_base = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="graph-download-server", daemon=True)
    thread.start()
    try:
        yield files.download_base
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
