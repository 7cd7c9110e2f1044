"""Who may open an Exchange mailbox and its folders, read through EWS: each folder's
permissions, the mailbox's delegates, and FullAccess and SendAs from the file the DSI
exports (``mappings.mailbox_access``), as ``mappings.sharing.MailboxGrant``.

Pages of Microsoft's EWS reference (learn.microsoft.com/exchange/client-developer) each
behaviour comes from:

- ``web-service-reference/permissionset-permissionsettype``: a folder's permissions are
  ``PermissionSet/Permissions/Permission``; its version differences: from Exchange 2013 they
  are not answered for ``AllProperties``, only when ``folder:PermissionSet`` is asked for by
  name, which is what GetFolder does here (exchangelib 5.6 reads a mail folder's under the
  calendar's element names and finds none: the XML is read here).
- ``web-service-reference/permissionset-calendarpermissionsettype``,
  ``calendarpermission``, ``calendarpermissionlevel``: a calendar's are
  ``CalendarPermissions/CalendarPermission`` with ``CalendarPermissionLevel``, whose levels
  add ``FreeBusyTimeOnly`` and ``FreeBusyTimeAndSubjectAndLocation``.
- ``web-service-reference/permission``, ``permissionlevel``: each entry's ``UserId``, its
  rights (``CanCreateItems``, ``CanCreateSubFolders``, ``IsFolderOwner``,
  ``IsFolderVisible``, ``IsFolderContact``, ``EditItems`` and ``DeleteItems`` of ``None``,
  ``Owned`` or ``All``, ``ReadItems`` of ``None`` or ``FullDetails``, a calendar's also
  ``TimeOnly`` and ``TimeAndSubjectAndLocation``) and its level (``Custom`` when the rights
  are no named level's).
- ``web-service-reference/userid``, ``distinguisheduser``: a grantee is a user (``SID``,
  ``PrimarySmtpAddress``, ``DisplayName``), ``Default`` (every signed-in user of the
  organisation) or ``Anonymous``; ``UnknownEntries`` are SIDs the directory no longer
  resolves (a deleted account).
- ``web-service-reference/getdelegate-operation``, ``delegateuser``,
  ``delegatepermissions``, ``delivermeetingrequests``: the delegates with
  ``IncludePermissions="true"``: a level per folder (``CalendarFolderPermissionLevel``...
  of ``None``, ``Reviewer``, ``Author``, ``Editor``, ``Custom``), whether each receives
  copies of meeting messages and sees private items, and where meeting requests go. The
  operation fails for a mailbox with a security group as delegate (EWS does not manage
  group delegates): that is a line of the report, the folders' permissions stay.
- ``web-service-reference/findfolder-operation``: every folder below ``msgfolderroot`` and
  ``archivemsgfolderroot`` (``Traversal="Deep"``), then GetFolder for their permissions, a
  page of ids at a time.

Only entries that grant something are given: ``Default`` and ``Anonymous`` at ``None``, which
every folder lists, are not permissions. The online archive's folders are read as the mail
source names them, under ``archive_root``; a mailbox without an archive answers
``ErrorFolderNotFound`` (or ``ErrorArchiveMailboxNotEnabled``) for its root
(``distinguishedfolderid``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from connectors.base import Path
from connectors.ews.client import (
    EwsClient,
    EwsFault,
    attribute,
    checked,
    response_messages,
)
from connectors.ews.folders import find_folders
from connectors.ews.folders import messages as _m
from connectors.ews.folders import types as _t
from connectors.ews.mail import ARCHIVE_ROOT, MISSING, ROOT, distinguished
from connectors.ews.public import AS_ITSELF, PublicFolder
from mappings.mailbox_access import AccessEntry
from mappings.sharing import MailboxGrant

PAGE = 100
"""Folder ids per GetFolder: a permission set is small, a hundred folders one answer."""
WORKLOAD_OF_CLASS = {"IPF.Appointment": "calendar", "IPF.Contact": "contacts",
                     "IPF.Task": "tasks", "IPF.Note": "mail"}
"""A folder's class (or its class's prefix) -> the workload that moves its items."""
DELEGATE_FOLDERS = {"Calendar": "calendar", "Tasks": "tasks", "Inbox": "inbox",
                    "Contacts": "contacts", "Notes": "notes", "Journal": "journal"}
"""DelegatePermissions' ``<name>FolderPermissionLevel`` -> its distinguished folder id."""
RIGHTS = ("CanCreateItems", "CanCreateSubFolders", "IsFolderOwner", "IsFolderVisible",
          "IsFolderContact")
SCALES = ("EditItems", "DeleteItems", "ReadItems")


@dataclass(frozen=True)
class _Folder:
    folder_id: str
    path: Path
    workload: str


class EwsMailboxPermissions:
    """The permissions of one mailbox (``mappings.sharing.MailboxSharingSource``)."""

    def __init__(self, client: EwsClient, mailbox: str, access: list[AccessEntry], *,
                 archive_root: str = "Archives") -> None:
        self._client = client
        self._mailbox = mailbox
        self._access = access
        self._archive_root = archive_root
        self.notes: list[tuple[str, dict[str, str]]] = []
        """What could not be read, as ``(code, params)`` for the report."""

    def mailbox_grants(self) -> Iterator[MailboxGrant]:
        roots = self._roots()
        folders = self._folders(ROOT, roots[ROOT], ())
        if ARCHIVE_ROOT in roots:
            folders += self._folders(ARCHIVE_ROOT, roots[ARCHIVE_ROOT], (self._archive_root,))
        for start in range(0, len(folders), PAGE):
            yield from self._folder_grants(folders[start:start + PAGE])
        yield from self._delegates(folders)
        for entry in self._access:
            if entry.mailbox.casefold() == self._mailbox.casefold():
                yield MailboxGrant(kind=entry.kind, path=(), workload="", who=entry.user,
                                   who_type="user" if "@" in entry.user else "account",
                                   level=entry.rights, source_id=entry.line)

    def close(self) -> None:
        """The client is shared: the command closes it."""

    # --- folders

    def _folders(self, root: str, root_id: str, prefix: Path) -> list[_Folder]:
        """Every folder below a distinguished root, with its path from there under
        ``prefix``, as the mail source names them."""
        found = {row.folder_id: (row.parent_id, row.name, row.folder_class)
                 for row in find_folders(self._client, self._mailbox,
                                         distinguished(root, self._mailbox))}
        folders = []
        for folder_id, (_parent, _name, folder_class) in found.items():
            path: list[str] = []
            current: str | None = folder_id
            while current in found:
                parent, name, _class = found[current]
                path.insert(0, name)
                current = parent
            if current == root_id:
                folders.append(_Folder(folder_id, (*prefix, *path), _workload(folder_class)))
        return folders

    def _roots(self) -> dict[str, str]:
        """The ids of the mailbox's message-folder root and, if it has one, its archive's."""
        names = (ROOT, ARCHIVE_ROOT)
        body = self._client.call(self._mailbox, (
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
            "<m:FolderIds>" + "".join(distinguished(name, self._mailbox) for name in names)
            + "</m:FolderIds></m:GetFolder>"))
        found = {}
        for name, message in zip(names, response_messages(body), strict=False):
            if name == ARCHIVE_ROOT and message.get("ResponseClass") == "Error" \
                    and message.findtext(_m("ResponseCode")) in MISSING:
                continue
            found[name] = _attribute(checked(message).find(f".//{_t('FolderId')}"), "Id")
        return found

    def _folder_grants(self, folders: list[_Folder]) -> Iterator[MailboxGrant]:
        ids = "".join(f"<t:FolderId Id={attribute(f.folder_id)}/>" for f in folders)
        body = self._client.call(self._mailbox, (
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
            '<t:AdditionalProperties><t:FieldURI FieldURI="folder:PermissionSet"/>'
            "</t:AdditionalProperties></m:FolderShape>"
            f"<m:FolderIds>{ids}</m:FolderIds></m:GetFolder>"))
        for folder, message in zip(folders, response_messages(body), strict=False):
            if message.get("ResponseClass") == "Error":
                # A folder deleted since the listing has no permissions left to carry.
                self.notes.append(("permissions_unread", {
                    "path": "/".join(folder.path),
                    "reason": message.findtext(_m("ResponseCode")) or "Error"}))
                continue
            permission_set = message.find(f".//{_t('PermissionSet')}")
            if permission_set is None:
                continue
            for entry in permission_set.iter(_t("Permission"), _t("CalendarPermission")):
                grant = _grant(entry, folder)
                if grant is not None:
                    yield grant
            for sid in permission_set.iter(_t("UnknownEntry")):
                yield MailboxGrant(kind="folder", path=folder.path, workload=folder.workload,
                                   who=(sid.text or "").strip(), who_type="unknown",
                                   level="", source_id=folder.folder_id)

    # --- delegates

    def _delegates(self, folders: list[_Folder]) -> Iterator[MailboxGrant]:
        try:
            body = self._client.call(self._mailbox, (
                '<m:GetDelegate IncludePermissions="true"><m:Mailbox><t:EmailAddress>'
                f"{escape(self._mailbox)}</t:EmailAddress></m:Mailbox></m:GetDelegate>"))
        except EwsFault as fault:
            self.notes.append(("delegates_unread", {"reason": fault.ews_code}))
            return
        answer = body.find(_m("GetDelegateResponse"))
        if answer is None:
            return
        if answer.get("ResponseClass") == "Error":
            self.notes.append(("delegates_unread", {
                "reason": answer.findtext(_m("ResponseCode")) or "Error"}))
            return
        delivery = answer.findtext(_m("DeliverMeetingRequests")) or ""
        paths = self._distinguished_paths(folders)
        for message in answer.iter(_m("DelegateUserResponseMessageType")):
            user = message.find(f"{_m('DelegateUser')}/{_t('UserId')}")
            if message.get("ResponseClass") == "Error" or user is None:
                continue
            who = (user.findtext(_t("PrimarySmtpAddress")) or user.findtext(_t("SID"))
                   or "").strip()
            delegate = message.find(_m("DelegateUser"))
            copies = _true(delegate.findtext(_t("ReceiveCopiesOfMeetingMessages")))
            private = _true(delegate.findtext(_t("ViewPrivateItems")))
            levels = delegate.find(_t("DelegatePermissions"))
            for element in levels if levels is not None else ():
                if not isinstance(element.tag, str):
                    continue
                name = element.tag.rsplit("}", 1)[-1].removesuffix("FolderPermissionLevel")
                level = (element.text or "").strip()
                if level in ("", "None") or name not in DELEGATE_FOLDERS:
                    continue
                folder = paths.get(DELEGATE_FOLDERS[name])
                yield MailboxGrant(
                    kind="delegate", path=folder.path if folder else (name,),
                    workload=folder.workload if folder else "", who=who, who_type="user",
                    level=level, source_id=folder.folder_id if folder else "",
                    meeting_requests=delivery if copies else "", view_private=private)

    def _distinguished_paths(self, folders: list[_Folder]) -> dict[str, _Folder]:
        """The delegate folders' distinguished ids -> the folders as listed."""
        names = list(DELEGATE_FOLDERS.values())
        ids = "".join(distinguished(name, self._mailbox) for name in names)
        body = self._client.call(self._mailbox, (
            "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>"
            f"<m:FolderIds>{ids}</m:FolderIds></m:GetFolder>"))
        by_id = {folder.folder_id: folder for folder in folders}
        found = {}
        for name, message in zip(names, response_messages(body), strict=False):
            if message.get("ResponseClass") == "Error":
                continue
            folder = by_id.get(_attribute(message.find(f".//{_t('FolderId')}"), "Id"))
            if folder is not None:
                found[name] = folder
        return found


def _grant(entry: Any, folder: _Folder) -> MailboxGrant | None:
    """One ``Permission`` or ``CalendarPermission`` as a grant; ``None`` for one granting
    nothing."""
    user = entry.find(_t("UserId"))
    special = (user.findtext(_t("DistinguishedUser")) or "").strip() if user is not None else ""
    level = next((child.text or "" for child in entry if isinstance(child.tag, str)
                  and child.tag.endswith("PermissionLevel")), "").strip()
    rights = [name for name in RIGHTS if _true(entry.findtext(_t(name)))]
    rights += [f"{name}:{value}" for name in SCALES
               if (value := (entry.findtext(_t(name)) or "None").strip()) != "None"]
    if level == "None" or (not rights and level in ("", "Custom")):
        return None
    if special:
        who, who_type = special, special.lower()
    else:
        who = (user.findtext(_t("PrimarySmtpAddress")) or user.findtext(_t("SID"))
               or user.findtext(_t("DisplayName")) or "").strip() if user is not None else ""
        who_type = "user" if "@" in who else "account"
    return MailboxGrant(kind="folder", path=folder.path, workload=folder.workload, who=who,
                        who_type=who_type, level=level, rights=tuple(rights),
                        source_id=folder.folder_id)


def _workload(folder_class: str) -> str:
    """The workload a folder of this class goes with; a folder with no class holds mail (as
    the mail source takes it), one of a class no workload moves is ``other``."""
    if not folder_class:
        return "mail"
    for prefix, workload in WORKLOAD_OF_CLASS.items():
        if folder_class == prefix or folder_class.startswith(prefix + "."):
            return workload
    return "other"


def _attribute(element: Any, name: str) -> str:
    return element.get(name, "") if element is not None else ""


def _true(text: str | None) -> bool:
    return (text or "").strip().lower() == "true"


class EwsPublicPermissions(EwsMailboxPermissions):
    """The permissions of the public folders a ``public:`` line copies, read by the service
    account as itself (``connectors.ews.public``): each folder's ``PermissionSet``, as for a
    mailbox's folders (public folders have no delegates, and FullAccess is a mailbox's)."""

    def __init__(self, client: EwsClient, folders: Callable[[], list[PublicFolder]]) -> None:
        super().__init__(client, AS_ITSELF, [])
        self._public = folders

    def mailbox_grants(self) -> Iterator[MailboxGrant]:
        folders = [_Folder(folder.folder_id, folder.path, _workload(folder.folder_class))
                   for folder in self._public()]
        for start in range(0, len(folders), PAGE):
            yield from self._folder_grants(folders[start:start + PAGE])

