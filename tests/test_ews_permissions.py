"""Who may open an Exchange mailbox, read through the EWS source against the EWS test server
(folder permissions, calendar permissions, delegates) and from the DSI's FullAccess file;
RFC 4314 rights of each level Outlook names. Expectations come from the server's
organisation, not from what the reader returns elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from connectors import registry
from connectors.imap.acl import imap_rights
from connectors.registry import Account
from mappings.mailbox_access import (
    EXPORT_COMMAND,
    SEND_AS_COMMAND,
    AccessFileInvalid,
    read_access_file,
)
from tests.conformance.harness import StoreContext
from tests.ews_seed import SERVICE_LOGIN
from tests.ews_server import PERMISSION_LEVELS

ALICE = "alice@ville.fr"
BENOIT = "benoit@ville.fr"
CHLOE = "chloe@ville.fr"
ACCESS_HEADER = '"Mailbox","User","AccessRights","Deny"\n'


def open_permissions(server: Any, tmp_path: Path, login: str = ALICE, **changes: Any) -> Any:
    ews = registry.connector("ews")
    context = StoreContext(tmp_path, {"env:EWS_SECRET": server.service_password})
    config = ews.config.model_validate({
        "type": "ews", "service_endpoint": server.url, "ca_file": str(server.ca_file),
        "service_account": {"login": SERVICE_LOGIN, "secret": "env:EWS_SECRET"}, **changes})
    assert ews.open_sharing_source is not None
    return ews.open_sharing_source(context, Account(config, login), "mail")


def below_top(mailbox: Any, folder: Any) -> tuple[str, ...]:
    """A folder's path below the message-folder root, or below the archive's under
    ``Archives``; ``()`` for one elsewhere (the roots themselves, system folders)."""
    tops = {id(mailbox.distinguished["msgfolderroot"]): (),
            id(mailbox.distinguished["archivemsgfolderroot"]): ("Archives",)}
    names: list[str] = []
    while folder is not None and id(folder) not in tops:
        names.insert(0, folder.display_name)
        folder = folder.parent
    return (*tops[id(folder)], *names) if folder is not None and names else ()


def test_folder_permissions_calendar_permissions_and_delegates_are_read(ews_server, tmp_path):
    mailbox = ews_server.tenant.mailbox(ALICE)
    projects = ("inbox", "Projets")
    mailbox.set_permission(projects, CHLOE, "Author")
    mailbox.set_permission(projects, "Default", "Reviewer")
    # A calendar's level on a mail folder is no level of a mail folder: Custom, its rights.
    mailbox.set_permission(projects, "partenaire@exemple.fr", "FreeBusyTimeAndSubjectAndLocation")
    mailbox.set_permission(mailbox.folder_at(("Archives 2019",), archive=True).id, BENOIT,
                           "Reviewer")
    inbox = mailbox.folder_at("inbox").display_name
    calendar = mailbox.folder_at("calendar").display_name

    source = open_permissions(ews_server, tmp_path)
    grants = list(source.mailbox_grants())
    source.close()
    assert source.notes == []

    folders = {(g.path, g.who): g for g in grants if g.kind == "folder"}
    author = folders[((inbox, "Projets"), CHLOE)]
    assert (author.level, author.workload, author.who_type) == ("Author", "mail", "user")
    assert set(author.rights) == {"CanCreateItems", "IsFolderVisible", "EditItems:Owned",
                                  "DeleteItems:Owned", "ReadItems:FullDetails"}
    assert author.source_id == mailbox.folder_at(projects).id
    assert folders[((inbox, "Projets"), "Default")].who_type == "default"
    custom = folders[((inbox, "Projets"), "partenaire@exemple.fr")]
    assert custom.level == "Custom" and custom.rights == ("ReadItems:TimeAndSubjectAndLocation",)
    # The seed's delegate: Editor of her calendar, Reviewer of her inbox, as folder
    # permissions (Outlook sets both), the calendar's Default at free/busy times.
    assert folders[((calendar,), BENOIT)].level == "Editor"
    assert folders[((calendar,), BENOIT)].workload == "calendar"
    assert folders[((calendar,), "Default")].level == "FreeBusyTimeOnly"
    assert folders[((inbox,), BENOIT)].level == "Reviewer"
    # The archive's folders, where the mail source puts them: under archive_root.
    assert folders[(("Archives", "Archives 2019"), BENOIT)].level == "Reviewer"
    # Default and Anonymous at None, which every folder lists, grant nothing.
    assert not [g for g in grants if g.level == "None"]
    assert not [g for g in grants if g.who == "Anonymous"]
    expected = {(path, who) for folder in mailbox.folders.values()
                if (path := below_top(mailbox, folder))
                for who, level in folder.permissions.items() if level != "None"}
    assert set(folders) == expected

    delegates = {g.path: g for g in grants if g.kind == "delegate"}
    assert set(delegates) == {(calendar,), (inbox,)}
    assert (delegates[(calendar,)].who, delegates[(calendar,)].level) == (BENOIT, "Editor")
    # Copies of meeting messages go to him, and requests where the mailbox says.
    assert delegates[(calendar,)].meeting_requests == mailbox.deliver_meeting_requests
    assert delegates[(inbox,)].level == "Reviewer"
    assert not delegates[(inbox,)].view_private
    operations = [op for op, who, _ in ews_server.requests if who == ALICE]
    assert "GetDelegate" in operations


def test_a_mailbox_without_delegates_or_permissions_gives_only_the_defaults(ews_server,
                                                                             tmp_path):
    source = open_permissions(ews_server, tmp_path, login=CHLOE)
    grants = list(source.mailbox_grants())
    assert {(g.kind, g.who, g.level) for g in grants} == {
        ("folder", "Default", "FreeBusyTimeOnly")}


def test_full_access_and_send_as_come_from_the_dsi_file(ews_server, tmp_path):
    (tmp_path / "full-access.csv").write_text(
        "\ufeff" + ACCESS_HEADER
        + f'"{ALICE}","{BENOIT}","FullAccess, ReadPermission","False"\n'
        + f'"{ALICE}","VILLE\\secretariat","FullAccess","False"\n'
        + f'"{CHLOE}","{BENOIT}","FullAccess","False"\n'
        + f'"{ALICE}","{CHLOE}","SendAs","True"\n', encoding="utf-8")
    source = open_permissions(ews_server, tmp_path, access_file="full-access.csv")
    mailbox_wide = [(g.kind, g.who, g.who_type, g.level, g.path, g.source_id)
                    for g in source.mailbox_grants() if g.kind in ("full_access", "send_as")]
    assert mailbox_wide == [
        ("full_access", BENOIT, "user", "FullAccess", (), "full-access.csv:2"),
        ("full_access", "VILLE\\secretariat", "account", "FullAccess", (), "full-access.csv:3"),
        ("send_as", CHLOE, "user", "Deny SendAs", (), "full-access.csv:5"),
    ]


@pytest.mark.parametrize(("content", "code", "line"), [
    (None, "ews_access_file_missing", 0),
    (b"\xff\xfeM\x00a\x00", "ews_access_file_unreadable", 0),
    ('"Identity","User"\n"alice@ville.fr","benoit@ville.fr"\n', "ews_access_file_columns", 1),
    (ACCESS_HEADER + '"ville.local/Utilisateurs/Alice Martin","VILLE\\benoit","FullAccess",'
     '"False"\n', "ews_access_file_address", 2),
    (ACCESS_HEADER + f'"{ALICE}","{BENOIT}","FullAccess","False","en trop"\n',
     "ews_access_file_shape", 2),
])
def test_a_bad_full_access_file_is_refused_naming_its_line(tmp_path, content, code, line):
    path = tmp_path / "full-access.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(AccessFileInvalid) as refused:
        read_access_file(path)
    assert refused.value.code == code
    assert refused.value.params["line"] == line


def rights_of_level(level: str) -> str:
    """A level's rights as the reader writes them, from the test server's table of levels
    (the reference's ``permissionlevel``)."""
    flags = ("CanCreateItems", "CanCreateSubFolders", "IsFolderOwner", "IsFolderVisible",
             "IsFolderContact")
    values = PERMISSION_LEVELS[level]
    rights = [name for name, value in zip(flags, values[:5], strict=True) if value]
    rights += [f"{name}:{value}" for name, value in zip(
        ("EditItems", "DeleteItems", "ReadItems"), values[5:], strict=True) if value != "None"]
    return " ".join(rights)


@pytest.mark.parametrize(("level", "letters", "dropped"), [
    ("Owner", "lrswikxtea", {"IsFolderContact"}),
    ("PublishingEditor", "lrswikte", set()),
    ("Editor", "lrswite", set()),
    ("PublishingAuthor", "lrsik", {"EditItems:Owned", "DeleteItems:Owned"}),
    ("Author", "lrsi", {"EditItems:Owned", "DeleteItems:Owned"}),
    ("NoneditingAuthor", "lrsi", {"DeleteItems:Owned"}),
    ("Reviewer", "lrs", set()),
    ("Contributor", "li", set()),
])
def test_each_level_outlook_names_has_its_rfc_4314_rights(level, letters, dropped):
    given, left = imap_rights(rights_of_level(level))
    assert given == letters
    assert set(left) == dropped


def test_the_readme_and_the_option_give_the_commands_the_reader_expects():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    field = registry.connector("ews").config.model_fields["access_file"]
    for command in (EXPORT_COMMAND, SEND_AS_COMMAND):
        assert command in readme
        assert command in (field.description or "")
