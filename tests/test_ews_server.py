"""The EWS test server, driven by the real exchangelib over TLS on loopback: each test checks a
behaviour Microsoft's EWS reference states (the page is named in the test), and where
exchangelib reads an answer otherwise, the answer itself is read as XML beside it."""

from __future__ import annotations

import base64
import hashlib
import math
import time
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Configuration,
    Credentials,
    ExtendedProperty,
    FaultTolerance,
    Identity,
    Message,
    OAuth2AuthorizationCodeCredentials,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorFolderNotFound,
    ErrorImpersonateUserDenied,
    ErrorInvalidOperation,
    ErrorNonExistentMailbox,
    ErrorServerBusy,
    ErrorUnsupportedQueryFilter,
    UnauthorizedError,
)
from exchangelib.folders import Folder, FolderCollection
from exchangelib.properties import AlternateId
from exchangelib.protocol import BaseProtocol, close_connections
from lxml import etree
from requests_ntlm import HttpNtlmAuth

from tests.ews_seed import COUNCIL, PHOTO, SERVICE_LOGIN, mime_message
from tests.ews_server import FOLDER_NAMES, EwsServer, EwsTenant

M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"


class FlagStatus(ExtendedProperty):
    """PidTagFlagStatus, as a client asks for the follow-up flag (2 = flagged)."""

    property_tag = 0x1090
    property_type = "Integer"


@pytest.fixture(autouse=True)
def trusted_ca(ews_server: EwsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """exchangelib's sessions trust the test CA on every request: the environment's
    ``REQUESTS_CA_BUNDLE`` would win over a session's ``verify``."""
    ca = str(ews_server.ca_file)

    class TrustTestCA(requests.adapters.HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            kwargs["verify"] = ca
            return super().send(request, *args, **kwargs)

    monkeypatch.setattr(BaseProtocol, "HTTP_ADAPTER_CLS", TrustTestCA)


@pytest.fixture(autouse=True)
def fresh_protocols(ews_server: EwsServer) -> Iterator[None]:
    """exchangelib keeps a protocol (and its sessions) per endpoint: closed after each test,
    which must have left the server without a failure of its own."""
    yield
    close_connections()
    assert ews_server.errors == []


def account_of(server: EwsServer, address: str = "alice@ville.fr", *, auth: str = BASIC,
               login: str = SERVICE_LOGIN, password: str | None = None,
               access: str = IMPERSONATION, policy: Any = None) -> Account:
    config = Configuration(service_endpoint=server.url, auth_type=auth, retry_policy=policy,
                           credentials=Credentials(login, password or server.service_password))
    return Account(address, config=config, autodiscover=False, access_type=access)


def soap_stream(server: EwsServer, body: str, *, impersonate: str | None = "alice@ville.fr",
                version: str = "Exchange2016") -> requests.Response:
    """POST a SOAP request as the service account with plain requests; the answer unread."""
    header = f'<t:RequestServerVersion Version="{version}"/>'
    if impersonate:
        header += ("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
                   f"{impersonate}</t:PrimarySmtpAddress></t:ConnectingSID>"
                   "</t:ExchangeImpersonation>")
    envelope = ('<?xml version="1.0" encoding="utf-8"?><s:Envelope '
                'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
                f'xmlns:m="{M}" xmlns:t="{T}"><s:Header>{header}</s:Header>'
                f"<s:Body>{body}</s:Body></s:Envelope>")
    return requests.post(server.url, data=envelope.encode(), verify=str(server.ca_file),
                         auth=(SERVICE_LOGIN, server.service_password), timeout=30, stream=True,
                         headers={"Content-Type": "text/xml; charset=utf-8"})


def soap(server: EwsServer, body: str, **options: Any) -> etree._Element:
    """POST a SOAP request as the service account with plain requests; the parsed answer."""
    return etree.fromstring(soap_stream(server, body, **options).content,
                            etree.XMLParser(huge_tree=True))


# --- folders (ref: getfolder-operation, findfolder-operation, distinguishedfolderid) --------


def test_distinguished_folders_have_their_french_names(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    names = FOLDER_NAMES["fr"]
    assert account.inbox.name == "Boîte de réception"
    assert account.sent.name == "Éléments envoyés"
    assert account.trash.name == "Éléments supprimés"
    assert account.junk.name == "Courrier indésirable"
    assert account.calendar.name == "Calendrier"
    assert account.tasks.name == "Tâches"
    assert account.msg_folder_root.name == names["msgfolderroot"]
    below_top = {f.name for f in account.msg_folder_root.children}
    assert {"Boîte d'envoi", "Brouillons", "Contacts", "Notes", "Journal"} <= below_top


def test_deep_traversal_walks_a_branch_four_folders_deep(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    paths = {f.absolute for f in account.inbox.walk()}
    top = f"/root/{FOLDER_NAMES['fr']['msgfolderroot']}/Boîte de réception"
    assert f"{top}/Projets/Voirie/Été 2026/Réunions" in paths
    assert ews_server.stats["FindFolder"] >= 1
    shallow = soap(ews_server, '<m:FindFolder Traversal="Shallow"><m:FolderShape>'
                   "<t:BaseShape>Default</t:BaseShape></m:FolderShape><m:ParentFolderIds>"
                   '<t:DistinguishedFolderId Id="inbox"><t:Mailbox><t:EmailAddress>'
                   "alice@ville.fr</t:EmailAddress></t:Mailbox></t:DistinguishedFolderId>"
                   "</m:ParentFolderIds></m:FindFolder>")
    assert [e.text for e in shallow.iter(f"{{{T}}}DisplayName")] == ["Projets"]


def test_folder_paging_follows_the_indexed_view(ews_server: EwsServer) -> None:
    """ref: indexedpagefolderview: Offset and MaxEntriesReturned, IncludesLastItemInRange."""
    def page(offset: int) -> etree._Element:
        return soap(ews_server, '<m:FindFolder Traversal="Shallow"><m:FolderShape><t:BaseShape>'
                    'IdOnly</t:BaseShape></m:FolderShape><m:IndexedPageFolderView '
                    f'MaxEntriesReturned="4" Offset="{offset}" BasePoint="Beginning"/>'
                    '<m:ParentFolderIds><t:DistinguishedFolderId Id="msgfolderroot"><t:Mailbox>'
                    "<t:EmailAddress>alice@ville.fr</t:EmailAddress></t:Mailbox>"
                    "</t:DistinguishedFolderId></m:ParentFolderIds></m:FindFolder>")

    first, last = page(0), page(8)
    root = first.find(f".//{{{M}}}RootFolder")
    assert root.get("TotalItemsInView") == "11"
    assert root.get("IncludesLastItemInRange") == "false"
    assert root.get("IndexedPagingOffset") == "4"
    assert len(root.findall(f".//{{{T}}}FolderId")) == 4
    assert last.find(f".//{{{M}}}RootFolder").get("IncludesLastItemInRange") == "true"
    assert len(last.findall(f".//{{{T}}}FolderId")) == 3


# --- authentication and impersonation (ref: exchangeimpersonation) --------------------------


@pytest.mark.parametrize("auth", [BASIC, NTLM])
def test_basic_and_ntlm_sign_in_and_refuse_a_wrong_password(ews_server: EwsServer,
                                                             auth: str) -> None:
    assert account_of(ews_server, auth=auth).inbox.total_count == 3
    with pytest.raises(UnauthorizedError):
        account_of(ews_server, "benoit@ville.fr", auth=auth, password="wrong").inbox.refresh()
    assert ews_server.requests[0] == ("ConvertId", "", None)
    assert ("GetFolder", "alice@ville.fr", "alice@ville.fr") in ews_server.requests


def test_ntlm_signs_in_with_the_netbios_domain_form(ews_server: EwsServer) -> None:
    account = account_of(ews_server, auth=NTLM, login="VILLE\\svc-bascule")
    assert account.inbox.name == "Boîte de réception"


def test_a_server_offering_ntlm_only_refuses_basic(certificates: Any,
                                                   ews_server: EwsServer) -> None:
    with EwsServer(ews_server.tenant, auth=("ntlm",), certificates=certificates) as server:
        answer = requests.post(server.url, data=b"<x/>", verify=str(server.ca_file),
                               auth=(SERVICE_LOGIN, ews_server.service_password), timeout=10)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Negotiate, NTLM"


def test_impersonation_needs_the_right(ews_server: EwsServer) -> None:
    ews_server.tenant.service_account("svc-sans-droit@ville.fr", "pw-sans-droit",
                                      impersonation=False)
    with pytest.raises(ErrorImpersonateUserDenied):
        account_of(ews_server, login="svc-sans-droit@ville.fr",
                   password="pw-sans-droit").inbox.refresh()
    with pytest.raises(ErrorNonExistentMailbox):
        account_of(ews_server, "personne@ville.fr").inbox.refresh()
    fault = soap(ews_server, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>'
                 '</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/>'
                 "</m:FolderIds></m:GetFolder>", impersonate="personne@ville.fr")
    assert fault.findtext(".//faultcode").endswith(":ErrorNonExistentMailbox")
    assert fault.findtext(
        ".//{http://schemas.microsoft.com/exchange/services/2006/errors}ResponseCode"
    ) == "ErrorNonExistentMailbox"


def test_a_user_opens_only_their_own_mailbox(ews_server: EwsServer) -> None:
    ews_server.tenant.mailbox("benoit@ville.fr").password = "benoit-pw"
    own = account_of(ews_server, "benoit@ville.fr", login="benoit@ville.fr",
                     password="benoit-pw", access=DELEGATE)
    assert own.inbox.total_count == 3
    other = account_of(ews_server, "alice@ville.fr", login="benoit@ville.fr",
                       password="benoit-pw", access=DELEGATE)
    with pytest.raises(ErrorAccessDenied):
        other.inbox.refresh()
    assert ("GetFolder", "benoit@ville.fr", None) in ews_server.requests


# --- versions (ref: requestserverversion, serverversioninfo) --------------------------------


@pytest.mark.parametrize(("version", "build", "api"), [
    ("Exchange2016", "15.1.2507.6", "Exchange2016"),
    ("Exchange2013_SP1", "15.0.1497.2", "Exchange2013_SP1"),
    ("Exchange2010_SP2", "14.3.123.4", "Exchange2010_SP2"),
])
def test_the_version_is_negotiated_from_server_version_info(
        certificates: Any, ews_server: EwsServer, version: str, build: str, api: str) -> None:
    with EwsServer(ews_server.tenant, version=version, certificates=certificates) as server:
        server.service_password = ews_server.service_password
        account = account_of(server)
        assert str(account.version.build) == build
        assert account.version.api_version == api
        assert account.inbox.name == "Boîte de réception"
        newest = soap(server, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>'
                      '</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/>'
                      "</m:FolderIds></m:GetFolder>", version="Exchange2016")
        code = newest.findtext(".//faultcode") or newest.findtext(f".//{{{M}}}ResponseCode")
        assert code == ("NoError" if api == "Exchange2016" else "a:ErrorInvalidServerVersion")
        info = newest.find(f".//{{{T}}}ServerVersionInfo")
        assert ".".join(info.get(n) for n in ("MajorVersion", "MinorVersion", "MajorBuildNumber",
                                              "MinorBuildNumber")) == build


# --- mail: sync and items (ref: syncfolderitems-operation, getitem-operation) ---------------


def test_sync_pages_then_reports_only_the_changes(ews_server: EwsServer) -> None:
    mailbox = ews_server.tenant.mailbox("benoit@ville.fr")
    ids = [mailbox.deliver("inbox", mime_message("x@ville.fr", "benoit@ville.fr", f"n°{n}",
                                                 "corps\r\n", datetime(2026, 4, 1, 9, n)))
           for n in range(4)]
    inbox = account_of(ews_server, "benoit@ville.fr").inbox
    first = list(inbox.sync_items(max_changes_returned=2, only_fields=["subject"]))
    assert [change for change, _ in first] == ["create"] * 7
    assert ews_server.stats["SyncFolderItems"] == math.ceil(7 / 2)
    state = inbox.item_sync_state
    assert list(inbox.sync_items(sync_state=state)) == []

    mailbox.update_item(ids[0], is_read=True)
    mailbox.update_item(ids[1], flagged=True)
    mailbox.delete_item(ids[2])
    new = mailbox.deliver("inbox", mime_message("x@ville.fr", "benoit@ville.fr", "nouveau",
                                                "corps\r\n", datetime(2026, 4, 2, 9, 0)))
    changes = list(inbox.sync_items(sync_state=state, only_fields=["subject"]))
    # exchangelib gives a deletion as its ItemId, a read flag change as (ItemId, IsRead).
    seen = {kind: item for kind, item in changes}
    assert len(changes) == len(seen) == 4
    assert seen["read_flag_change"][0].id == ids[0]
    assert seen["read_flag_change"][1] is True
    assert seen["update"].id == ids[1]
    assert seen["delete"].id == ids[2]
    assert seen["create"].id == new
    assert seen["create"].subject == "nouveau"


def test_a_sync_state_of_another_folder_is_refused(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    list(account.inbox.sync_items())
    answer = soap(ews_server, "<m:SyncFolderItems><m:ItemShape><t:BaseShape>IdOnly"
                  "</t:BaseShape></m:ItemShape><m:SyncFolderId><t:DistinguishedFolderId "
                  'Id="sentitems"><t:Mailbox><t:EmailAddress>alice@ville.fr</t:EmailAddress>'
                  "</t:Mailbox></t:DistinguishedFolderId></m:SyncFolderId>"
                  f"<m:SyncState>{account.inbox.item_sync_state}</m:SyncState>"
                  "<m:MaxChangesReturned>10</m:MaxChangesReturned></m:SyncFolderItems>")
    assert answer.findtext(f".//{{{M}}}ResponseCode") == "ErrorInvalidSyncStateData"


def test_get_item_gives_the_mime_bytes_and_the_properties(ews_server: EwsServer) -> None:
    mailbox = ews_server.tenant.mailbox("chloe@ville.fr")
    when = datetime(2026, 5, 4, 7, 15, tzinfo=UTC)
    mime = mime_message("élu@ville.fr", "chloe@ville.fr", "Délibération", "Texte\r\n", when)
    item_id = mailbox.deliver(("inbox",), mime, is_read=True, flagged=True,
                              categories=("Urgent", "Élus"), received=when)
    Message.register("flag_status", FlagStatus)
    try:
        account = account_of(ews_server, "chloe@ville.fr")
        item = account.inbox.get(id=item_id)
        assert item.mime_content == mime
        assert item.is_read is True
        assert item.flag_status == 2
        assert item.categories == ["Urgent", "Élus"]
        assert item.datetime_received == when
        assert item.size == len(mime)
        assert item.is_draft is False
        unflagged = next(i for i in account.inbox.all() if i.id != item_id)
        assert unflagged.flag_status is None
    finally:
        Message.deregister("flag_status")
    draft = mailbox.deliver("drafts", mime)
    raw = soap(ews_server, '<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>'
               "<t:IncludeMimeContent>true</t:IncludeMimeContent><t:AdditionalProperties>"
               '<t:FieldURI FieldURI="item:Flag"/><t:FieldURI FieldURI="item:IsDraft"/>'
               "</t:AdditionalProperties></m:ItemShape><m:ItemIds>"
               f'<t:ItemId Id="{item_id}"/><t:ItemId Id="{draft}"/></m:ItemIds></m:GetItem>',
               impersonate="chloe@ville.fr")
    assert [base64.b64decode(m.text) for m in raw.iter(f"{{{T}}}MimeContent")] == [mime, mime]
    assert [f.text for f in raw.iter(f"{{{T}}}FlagStatus")] == ["Flagged", "NotFlagged"]
    assert [d.text for d in raw.iter(f"{{{T}}}IsDraft")] == ["false", "true"]


def test_convert_id_answers_as_the_reference_shapes_it(ews_server: EwsServer) -> None:
    """ref: convertidresponsemessage: ``m:AlternateId`` typed ``t:AlternateIdType``."""
    item_id = next(iter(ews_server.tenant.mailbox("alice@ville.fr").distinguished[
        "inbox"].items))
    answer = soap(ews_server, '<m:ConvertId DestinationFormat="HexEntryId"><m:SourceIds>'
                  f'<t:AlternateId Format="EwsId" Id="{item_id}" Mailbox="alice@ville.fr"/>'
                  "</m:SourceIds></m:ConvertId>", impersonate=None)
    converted = answer.find(f".//{{{M}}}ConvertIdResponseMessage/{{{M}}}AlternateId")
    assert converted.get("{http://www.w3.org/2001/XMLSchema-instance}type") == "t:AlternateIdType"
    assert converted.get("Format") == "HexEntryId"
    assert bytes.fromhex(converted.get("Id")) == base64.b64decode(item_id)
    back = soap(ews_server, '<m:ConvertId DestinationFormat="EwsId"><m:SourceIds>'
                f'<t:AlternateId Format="HexEntryId" Id="{converted.get("Id")}" '
                'Mailbox="alice@ville.fr"/></m:SourceIds></m:ConvertId>', impersonate=None)
    assert back.find(f".//{{{M}}}AlternateId").get("Id") == item_id
    # exchangelib 5.6 reads this shape (its AlternateId is looked for in the messages
    # namespace): the ids it gives are the server's.
    account = account_of(ews_server)
    account.inbox.refresh()  # exchangelib's convert_ids needs the version guessed first
    [read] = account.protocol.convert_ids(
        [AlternateId(id=item_id, format="EwsId", mailbox="alice@ville.fr")],
        destination_format="HexEntryId")
    assert read.id == converted.get("Id")


# --- archive and public folders -------------------------------------------------------------


def test_the_archive_is_reachable(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    archive = account.archive_msg_folder_root
    folders = {f.name: f for f in archive.children}
    assert set(folders) == {"Éléments supprimés", "Archives 2019"}
    [item] = list(folders["Archives 2019"].all())
    assert item.subject == "Arrêté préfectoral 2019-42"
    without = account_of(ews_server, "benoit@ville.fr")
    with pytest.raises(ErrorFolderNotFound, match="archiveroot"):
        without.archive_msg_folder_root.refresh()


def test_public_folders_are_found_shallow_only(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    root = account.public_folders_root
    assert [f.name for f in root.children] == ["Mairie"]
    mairie = next(iter(root.children))
    assert sorted(f.name for f in root.get_children(mairie)) == ["Agenda des salles",
                                                                 "Délibérations"]
    with pytest.raises(ErrorInvalidOperation):
        list(FolderCollection(account=account, folders=[root]).find_folders(depth="Deep"))
    # Public folders are read with FindItem: they cannot be synchronised (ref:
    # syncfolderitems-operation, syncfolderhierarchy).
    deliberations = next(f for f in root.get_children(mairie) if f.name == "Délibérations")
    assert [i.subject for i in deliberations.all()] == ["Délibération 2026-01"]
    with pytest.raises(ErrorInvalidOperation):
        list(deliberations.sync_items())
    with pytest.raises(ErrorInvalidOperation):
        list(root.sync_hierarchy())


def test_an_empty_tenant_serves_a_new_mailbox(certificates: Any, ews_server: EwsServer) -> None:
    tenant = EwsTenant()
    tenant.add_mailbox("dora@ville.fr", "Dora", password="dora-pw", language="en")
    with EwsServer(tenant, certificates=certificates) as server:
        account = account_of(server, "dora@ville.fr", login="dora@ville.fr",
                             password="dora-pw", access=DELEGATE)
        assert account.inbox.name == "Inbox"
        assert account.sent.name == "Sent Items"


# --- throttling (ref: ews-throttling-in-exchange) -------------------------------------------


def test_busy_answers_carry_the_back_off_then_the_request_succeeds(
        ews_server: EwsServer) -> None:
    ews_server.busy(1, back_off_ms=1500)
    fault = soap(ews_server, '<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>'
                 '</m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/>'
                 "</m:FolderIds></m:GetFolder>")
    assert fault.findtext(".//faultcode").endswith(":ErrorServerBusy")
    value = fault.find(f".//{{{T}}}MessageXml/{{{T}}}Value")
    assert (value.get("Name"), value.text) == ("BackOffMilliseconds", "1500")

    account = account_of(ews_server)
    inbox = account.inbox
    ews_server.busy(1, back_off_ms=250)
    with pytest.raises(ErrorServerBusy) as refused:
        inbox.refresh()
    assert refused.value.back_off == 0.25

    close_connections()  # exchangelib keeps the first protocol (and its policy) per endpoint
    patient = account_of(ews_server, policy=FaultTolerance(max_wait=30))
    assert patient.inbox.total_count == 3
    ews_server.busy(3, back_off_ms=100)
    started = time.monotonic()
    assert len(list(patient.inbox.all())) == 3
    assert time.monotonic() - started >= 0.3
    assert ews_server.stats["busy"] == 5


def test_busy_answers_can_come_in_each_response_message(ews_server: EwsServer) -> None:
    ids = list(ews_server.tenant.mailbox("alice@ville.fr").distinguished["inbox"].items)[:2]
    request = ("<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
               "<m:ItemIds>" + "".join(f'<t:ItemId Id="{i}"/>' for i in ids)
               + "</m:ItemIds></m:GetItem>")
    ews_server.busy(1, back_off_ms=700, per_item=True)
    refused = soap(ews_server, request)
    messages = list(refused.iter(f"{{{M}}}GetItemResponseMessage"))
    assert [m.get("ResponseClass") for m in messages] == ["Error", "Error"]
    assert {m.findtext(f"{{{M}}}ResponseCode") for m in messages} == {"ErrorServerBusy"}
    assert {m.findtext(f"{{{M}}}MessageXml/{{{T}}}Value") for m in messages} == {"700"}
    answered = soap(ews_server, request)
    assert [m.findtext(f"{{{M}}}ResponseCode")
            for m in answered.iter(f"{{{M}}}GetItemResponseMessage")] == ["NoError"] * 2


def test_requests_beyond_the_concurrency_limit_are_refused(ews_server: EwsServer) -> None:
    ews_server.max_concurrency(2)
    ews_server.latency(0.5)
    body = ('<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
            '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>')
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: soap(ews_server, body), range(4)))
    codes = sorted(a.findtext(".//faultcode") or a.findtext(f".//{{{M}}}ResponseCode")
                   for a in answers)
    assert codes == ["NoError", "NoError", "a:ErrorExceededConnectionCount",
                     "a:ErrorExceededConnectionCount"]
    refused = next(a for a in answers if a.find(".//faultcode") is not None)
    values = {v.get("Name"): v.text for v in refused.iter(f"{{{T}}}Value")}
    assert (values["Policy"], values["MaxConcurrencyLimit"]) == ("MaxConcurrency", "2")
    assert ews_server.stats["refused_concurrency"] == 2
    ews_server.latency(0)
    assert soap(ews_server, body).findtext(f".//{{{M}}}ResponseCode") == "NoError"


def test_impersonation_charges_the_impersonated_mailbox(ews_server: EwsServer) -> None:
    """Exchange 2013 and later charge a copy of the target mailbox's budget with the calls
    made impersonating it (ref: ews-throttling-in-exchange)."""
    ews_server.max_concurrency(1)
    ews_server.latency(0.5)
    body = ('<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape>'
            '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>')
    targets = ["alice@ville.fr", "benoit@ville.fr", "chloe@ville.fr"]
    started = time.monotonic()
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda who: soap(ews_server, body, impersonate=who), targets))
    assert time.monotonic() - started < 1.4  # at the same time, each on its own budget
    assert [a.findtext(f".//{{{M}}}ResponseCode") for a in answers] == ["NoError"] * 3
    assert ews_server.stats["refused_concurrency"] == 0


# --- hierarchy sync (ref: syncfolderhierarchy-operation) ------------------------------------


def test_hierarchy_sync_gives_only_what_changed(ews_server: EwsServer) -> None:
    account = account_of(ews_server, "chloe@ville.fr")
    top = account.msg_folder_root
    first = list(top.sync_hierarchy())
    assert {kind for kind, _ in first} == {"create"}
    assert {f.name for _, f in first} >= {"Boîte de réception", "Éléments envoyés", "Tâches"}
    state = top.folder_sync_state
    mailbox = ews_server.tenant.mailbox("chloe@ville.fr")
    new_id = mailbox.add_folder(("inbox", "Élections"))
    mailbox.rename_folder(mailbox.distinguished["journal"].id, "Journal 2026")
    changes = list(top.sync_hierarchy(sync_state=state))
    assert sorted((kind, f.name) for kind, f in changes) == [("create", "Élections"),
                                                             ("update", "Journal 2026")]
    assert any(f.id == new_id for _, f in changes)
    state = top.folder_sync_state
    mailbox.delete_folder(new_id)
    [(kind, gone)] = list(top.sync_hierarchy(sync_state=state))
    assert (kind, gone.id) == ("delete", new_id)


# --- calendars, contacts, lists, tasks: stored as given (ref: calendaritem, contact) --------


@pytest.mark.filterwarnings("ignore:Cannot convert value 'Customized Time Zone'")
def test_a_series_comes_with_its_exceptions_deletions_and_zone(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    items = {i.subject: i for _, i in account.calendar.sync_items()}
    series = items["Conseil municipal"]
    assert series.type == "RecurringMaster"
    assert series.recurrence.boundary.number == 10
    assert str(series._start_timezone) == "Europe/Paris"
    assert series.start == datetime(2026, 1, 5, 17, 0, tzinfo=UTC)
    [moved] = series.modified_occurrences
    assert moved.original_start == COUNCIL.starts[2] - timedelta(days=1, minutes=30)
    exception = account.calendar.get(id=moved.id)
    assert exception.type == "Exception"
    assert exception.start == moved.start == datetime(2026, 1, 20, 17, 30, tzinfo=UTC)
    assert (exception.location, series.location) == ("Salle des mariages", "Salle du conseil")
    assert [d.start for d in series.deleted_occurrences] == [
        datetime(2026, 2, 2, 17, 0, tzinfo=UTC)]
    # Not in the folder on their own: a sync gives the master and single items only.
    assert set(items) == {"Conseil municipal", "Visio avec Téhéran"}


@pytest.mark.filterwarnings("ignore:Cannot convert value 'Customized Time Zone'")
def test_a_custom_zone_is_given_as_its_definition(ews_server: EwsServer) -> None:
    """exchangelib keeps no zone for an Id it does not know; the definition is in the answer
    (ref: timezonedefinition)."""
    single = next(i for _, i in account_of(ews_server).calendar.sync_items()
                  if i.subject == "Visio avec Téhéran")
    answer = soap(ews_server, "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>"
                  '<t:AdditionalProperties><t:FieldURI FieldURI="calendar:StartTimeZone"/>'
                  "</t:AdditionalProperties></m:ItemShape><m:ItemIds>"
                  f'<t:ItemId Id="{single.id}"/></m:ItemIds></m:GetItem>')
    zone = answer.find(f".//{{{T}}}StartTimeZone")
    assert zone.get("Id") == "Customized Time Zone"
    assert [p.get("Bias") for p in zone.iter(f"{{{T}}}Period")] == ["-PT3H30M"]
    assert answer.find(f".//{{{T}}}Subject") is None


def test_a_contact_photo_a_list_and_a_task(ews_server: EwsServer) -> None:
    account = account_of(ews_server)
    people = {type(i).__name__: i for _, i in account.contacts.sync_items()}
    # A sync gives no attachments (ref: syncfolderitems-operation); GetItem does.
    assert people["Contact"].attachments == []
    contact = account.contacts.get(id=people["Contact"].id)
    assert contact.display_name == "Jean Dupont"
    assert [e.email for e in contact.email_addresses] == ["jean.dupont@exemple.fr"]
    [photo] = contact.attachments
    assert photo.is_contact_photo is True
    assert photo.content == PHOTO
    members = people["DistributionList"].members
    assert sorted(m.mailbox.email_address for m in members) == ["benoit@ville.fr",
                                                               "chloe@ville.fr"]
    expanded = soap(ews_server, "<m:ExpandDL><m:Mailbox>"
                    f'<t:ItemId Id="{people["DistributionList"].id}"/></m:Mailbox></m:ExpandDL>')
    assert expanded.find(f".//{{{M}}}DLExpansion").get("TotalItemsInView") == "2"
    assert sorted(e.text for e in expanded.iter(f"{{{T}}}EmailAddress")) == [
        "benoit@ville.fr", "chloe@ville.fr"]
    [(_, todo)] = list(account.tasks.sync_items())
    assert (todo.subject, todo.percent_complete, todo.status) == (
        "Préparer le budget 2027", 40, "InProgress")


# --- a big message is streamed (ref: mimecontent) -------------------------------------------


def test_a_big_message_leaves_in_chunks_never_whole(ews_server: EwsServer,
                                                    tmp_path: Path) -> None:
    body = b"".join(b"Ligne %07d du rapport annuel, avec des accents : \xc3\xa9t\xc3\xa9.\r\n" % n
                    for n in range(400_000))
    big = tmp_path / "big.eml"
    big.write_bytes(mime_message("dsi@ville.fr", "alice@ville.fr", "Rapport", "x", datetime(
        2026, 6, 1, tzinfo=UTC)).replace(b"x\r\n", body))
    item_id = ews_server.tenant.mailbox("alice@ville.fr").deliver("inbox", big)
    request = ("<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:IncludeMimeContent>"
               f'true</t:IncludeMimeContent></m:ItemShape><m:ItemIds><t:ItemId Id="{item_id}"/>'
               "</m:ItemIds></m:GetItem>")
    tracemalloc.start()
    try:
        answer = soap_stream(ews_server, request)
        assert answer.headers["Transfer-Encoding"] == "chunked"
        digest = hashlib.sha256()
        for piece in answer.iter_content(64 * 1024):
            digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = big.stat().st_size
    assert size > 20_000_000
    assert peak < size // 8, f"peak {peak} bytes while sending {size} bytes of MIME"
    parsed = soap(ews_server, request)
    assert base64.b64decode(parsed.findtext(f".//{{{T}}}MimeContent")) == big.read_bytes()


# --- permissions (ref: permissionset-permissionsettype, calendarpermission) -----------------


def test_folder_permissions_are_given_as_the_schema_names_them(ews_server: EwsServer) -> None:
    alice = ews_server.tenant.mailbox("alice@ville.fr")
    alice.set_permission("calendar", "benoit@ville.fr", "Editor")
    alice.set_permission(("inbox", "Projets"), "chloe@ville.fr", "Reviewer")
    ews_server.tenant.public.set_permission(("Mairie", "Délibérations"), "chloe@ville.fr",
                                            "PublishingEditor")
    account = account_of(ews_server)
    calendar = account.calendar
    calendar.refresh()
    levels = {(p.user_id.primary_smtp_address or p.user_id.distinguished_user):
              p.calendar_permission_level for p in calendar.permission_set.calendar_permissions}
    assert levels == {"Default": "FreeBusyTimeOnly", "Anonymous": "None",
                      "benoit@ville.fr": "Editor"}
    projets = next(f for f in account.inbox.children if f.name == "Projets")
    # Read as XML: exchangelib 5.6 looks for a mail folder's level as CalendarPermissionLevel
    # and for CanCreateSubfolders, so it gives every such entry the level "None".
    answer = soap(ews_server, "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
                  '<t:AdditionalProperties><t:FieldURI FieldURI="folder:PermissionSet"/>'
                  "</t:AdditionalProperties></m:FolderShape><m:FolderIds>"
                  f'<t:FolderId Id="{projets.id}"/></m:FolderIds></m:GetFolder>')
    [reviewer] = [p for p in answer.iter(f"{{{T}}}Permission")
                  if p.findtext(f".//{{{T}}}PrimarySmtpAddress") == "chloe@ville.fr"]
    assert reviewer.findtext(f"{{{T}}}PermissionLevel") == "Reviewer"
    assert reviewer.findtext(f"{{{T}}}ReadItems") == "FullDetails"
    assert reviewer.findtext(f"{{{T}}}CanCreateSubFolders") == "false"
    public = next(f for f in account.public_folders_root.get_children(
        next(iter(account.public_folders_root.children))) if f.name == "Délibérations")
    answer = soap(ews_server, "<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape>"
                  '<t:AdditionalProperties><t:FieldURI FieldURI="folder:PermissionSet"/>'
                  "</t:AdditionalProperties></m:FolderShape><m:FolderIds>"
                  f'<t:FolderId Id="{public.id}"/></m:FolderIds></m:GetFolder>')
    assert "PublishingEditor" in [e.text for e in answer.iter(f"{{{T}}}PermissionLevel")]


def test_delegates_are_listed_with_their_folder_levels(ews_server: EwsServer) -> None:
    """ref: getdelegate-operation; the delegate's calendar level is also the calendar's
    permission (ref: adddelegate-operation)."""
    account = account_of(ews_server)
    [benoit] = account.delegates
    assert benoit.user_id.primary_smtp_address == "benoit@ville.fr"
    assert benoit.delegate_permissions.calendar_folder_permission_level == "Editor"
    assert benoit.delegate_permissions.inbox_folder_permission_level == "Reviewer"
    assert benoit.receive_copies_of_meeting_messages is True
    account.calendar.refresh()
    assert "Editor" in [p.calendar_permission_level
                        for p in account.calendar.permission_set.calendar_permissions]
    assert account_of(ews_server, "chloe@ville.fr").delegates == []


def test_server_time_zones_give_their_definitions(ews_server: EwsServer) -> None:
    """ref: getservertimezones-operation."""
    answer = soap(ews_server, '<m:GetServerTimeZones ReturnFullTimeZoneData="true"><m:Ids>'
                  "<t:Id>Romance Standard Time</t:Id></m:Ids></m:GetServerTimeZones>",
                  impersonate=None)
    [zone] = answer.iter(f"{{{T}}}TimeZoneDefinition")
    assert zone.get("Id") == "Romance Standard Time"
    assert [p.get("Bias") for p in zone.iter(f"{{{T}}}Period")] == ["-PT1H", "-PT2H"]
    unknown = soap(ews_server, "<m:GetServerTimeZones><m:Ids><t:Id>Customized Time Zone</t:Id>"
                   "</m:Ids></m:GetServerTimeZones>", impersonate=None)
    assert unknown.findtext(f".//{{{M}}}ResponseCode") == "ErrorTimeZone"
    zones = {z.id for z in account_of(ews_server).protocol.get_timezones()}
    assert zones == {"Romance Standard Time", "UTC"}


def test_an_operation_the_server_does_not_serve_is_a_fault(ews_server: EwsServer) -> None:
    answer = soap(ews_server, "<m:GetUserOofSettingsRequest/>")
    assert answer.findtext(".//faultcode").endswith(":ErrorInvalidRequest")


def test_system_folders_sit_beside_the_users_and_hidden_ones_say_so(
        ews_server: EwsServer) -> None:
    """A mailbox as Exchange and Outlook leave it: non-IPM folders below ``root``, hidden
    configuration folders flagged PR_ATTR_HIDDEN (ref: extendedproperty), Outlook's Sync
    Issues below the message-folder root."""
    class Hidden(ExtendedProperty):
        property_tag = 0x10F4
        property_type = "Boolean"

    Folder.register("hidden", Hidden)
    try:
        account = account_of(ews_server, "chloe@ville.fr")
        below_root = {f.name for f in account.root.children}
        assert {"Recoverable Items", "Finder", "Common Views"} <= below_root
        top = {f.name: f for f in account.msg_folder_root.children}
        assert top["Quick Step Settings"].hidden is True
        assert top["Problèmes de synchronisation"].hidden is None
        assert top["Problèmes de synchronisation"].folder_class == "IPF.Note"
        assert {f.name for f in top["Problèmes de synchronisation"].children} == {
            "Conflits", "Échecs locaux", "Échecs du serveur"}
    finally:
        Folder.deregister("hidden")
    plain = {f.name for f in account_of(ews_server, "benoit@ville.fr").msg_folder_root.children}
    assert "Problèmes de synchronisation" not in plain


def test_oauth_bearer_tokens_sign_in(certificates: Any, ews_server: EwsServer) -> None:
    """Hybrid modern authentication: an access token as ``Authorization: Bearer``."""
    tenant = ews_server.tenant
    token = tenant.issue_token(SERVICE_LOGIN)
    with EwsServer(tenant, auth=("oauth",), certificates=certificates) as server:
        credentials = OAuth2AuthorizationCodeCredentials(
            access_token={"access_token": token, "token_type": "Bearer", "expires_in": 3600},
            identity=Identity(primary_smtp_address="alice@ville.fr"))
        config = Configuration(service_endpoint=server.url, auth_type=OAUTH2,
                               credentials=credentials)
        account = Account("alice@ville.fr", config=config, autodiscover=False,
                          access_type=IMPERSONATION)
        assert account.inbox.name == "Boîte de réception"
        assert ("GetFolder", "alice@ville.fr", "alice@ville.fr") in server.requests
        refused = requests.post(server.url, data=b"<x/>", verify=str(server.ca_file),
                                headers={"Authorization": "Bearer not-a-token"}, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == "Bearer"


def test_find_item_pages_and_sorts(ews_server: EwsServer) -> None:
    """ref: finditem-operation, indexedpageitemview, sortorder."""
    inbox = account_of(ews_server, "benoit@ville.fr").inbox
    newest_first = [i.subject for i in inbox.all().only("subject")]
    assert newest_first == [f"Conseil municipal n°{n} — ordre du jour" for n in (3, 2, 1)]
    oldest_first = [i.subject for i in inbox.all().order_by("datetime_received")]
    assert oldest_first == newest_first[::-1]
    page = soap(ews_server, '<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly'
                '</t:BaseShape></m:ItemShape><m:IndexedPageItemView MaxEntriesReturned="2" '
                'Offset="2" BasePoint="Beginning"/><m:ParentFolderIds>'
                '<t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>',
                impersonate="benoit@ville.fr")
    root = page.find(f".//{{{M}}}RootFolder")
    assert (root.get("TotalItemsInView"), root.get("IncludesLastItemInRange")) == ("3", "true")
    assert len(root.findall(f".//{{{T}}}ItemId")) == 1
    with pytest.raises(ErrorUnsupportedQueryFilter):
        list(inbox.filter(subject="Conseil"))


def test_ntlm_handshakes_on_several_connections_at_once(ews_server: EwsServer) -> None:
    """NTLM signs in each connection (three legs on one keep-alive connection); parallel
    sessions each complete theirs."""
    def sign_in(_: int) -> int:
        with requests.Session() as session:
            session.auth = HttpNtlmAuth(SERVICE_LOGIN, ews_server.service_password)
            answer = session.post(ews_server.url, data=b"<x/>", verify=str(ews_server.ca_file),
                                  timeout=30)
            return answer.status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(sign_in, range(24)))
    # Signed in, then refused as a request that is not SOAP (ref: responsecode).
    assert statuses == [500] * 24
    assert ews_server.stats["ntlm_challenges"] == 24
