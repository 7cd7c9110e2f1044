"""The calendars, contacts and tasks of an Exchange mailbox read through the EWS test server
(``tests/ews_server.py``): what the source gives is read back with icalendar,
recurring_ical_events and vobject, and compared with what the mailbox was seeded with."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import recurring_ical_events
import vobject
from icalendar import Calendar

from connectors.base import DEFAULT_CONTAINER, Container, Document
from connectors.ews.client import EwsClient, SignIn, Throttle
from connectors.ews.pim import EwsPimSource
from mappings.contacts import contact_uid
from tests.ews_items_xml import CONTACT, EXCEPTION, GROUP, ROMANCE, TASK, declared, series_xml
from tests.ews_server import EwsServer, EwsTenant

PARIS = ZoneInfo("Europe/Paris")
MAILBOX = "helene.lefevre@ville.fr"
SERVICE = ("svc-bascule@ville.fr", "Sv0-test-pass!")
PHOTO = bytes.fromhex("ffd8ffe000104a46494600010100000100010000ffd9")


@pytest.fixture
def organisation() -> Iterator[tuple[EwsServer, dict[str, str]]]:
    tenant = EwsTenant()
    mailbox = tenant.add_mailbox(MAILBOX, "Hélène Lefèvre")
    tenant.service_account(*SERVICE)
    series_id, [exception_id] = mailbox.add_series(
        "calendar", declared(series_xml(ROMANCE, occurrences=False)),
        exceptions=[declared(EXCEPTION)], deleted=["2025-02-03T09:00:00Z"])
    ids = {"series": series_id, "exception": exception_id}
    ids["contact"] = mailbox.add_item("contacts", declared(CONTACT.replace(
        "</t:Surname>", "</t:Surname><t:HasAttachments>true</t:HasAttachments>"
        "<t:Attachments><t:FileAttachment><t:Name>ContactPicture.jpg</t:Name>"
        "<t:ContentType>image/jpeg</t:ContentType><t:Size>22</t:Size>"
        "<t:IsContactPhoto>true</t:IsContactPhoto>"
        f"<t:Content>{base64.b64encode(PHOTO).decode()}</t:Content>"
        "</t:FileAttachment></t:Attachments>")))
    ids["group"] = mailbox.add_item("contacts", declared(GROUP.replace("AAMkContact=",
                                                                        ids["contact"])))
    mailbox.add_folder(("tasks", "Conseil"), "IPF.Task")
    ids["task"] = mailbox.add_item(("tasks", "Conseil"), declared(TASK))
    with EwsServer(tenant) as server:
        yield server, ids


@pytest.fixture
def source(organisation: tuple[EwsServer, dict[str, str]]) -> Iterator[EwsPimSource]:
    server, _ids = organisation
    client = EwsClient(SignIn(endpoint=server.url, auth="basic", login=SERVICE[0],
                              password=SERVICE[1], impersonation=True,
                              ca_file=str(server.ca_file)),
                       Throttle(per_server=4, per_mailbox=2), per_server=4)
    yield EwsPimSource(client, MAILBOX, time_zone="Europe/Paris")
    client.close()


def fetched(source: EwsPimSource, container: Container) -> list[Document]:
    listing = source.list_documents(container, None)
    assert listing.complete
    return list(source.fetch_documents(container, listing.refs))


def read(document: Document) -> bytes:
    with document.open() as body:
        return body.read()


def test_each_workload_finds_its_default_folder_by_role_and_its_own_folders(
        source: EwsPimSource) -> None:
    calendars = source.document_containers("calendar")
    assert [(c.path, c.role) for c in calendars] == [(("Calendrier",), DEFAULT_CONTAINER)]
    tasks = source.document_containers("tasks")
    assert [(c.path, c.role) for c in tasks] == [(("Tâches",), DEFAULT_CONTAINER),
                                                 (("Tâches", "Conseil"), None)]
    assert [c.path for c in source.document_containers("contacts")] == [("Contacts",)]


def test_a_series_comes_whole_with_its_moved_and_cancelled_occurrences(
        source: EwsPimSource, organisation: tuple[EwsServer, dict[str, str]]) -> None:
    [calendar] = source.document_containers("calendar")
    [document] = fetched(source, calendar)
    assert document.source_id == organisation[1]["series"]
    parsed = Calendar.from_ical(read(document))
    starts = sorted(e["DTSTART"].dt.astimezone(PARIS) for e in
                    recurring_ical_events.of(parsed).between(datetime(2025, 1, 1),
                                                             datetime(2026, 1, 1)))
    mondays = [datetime(2025, 1, 6, 10, tzinfo=PARIS) + timedelta(weeks=n) for n in range(10)]
    expected = sorted([m for m in mondays if (m.month, m.day) not in ((1, 20), (2, 3))]
                      + [datetime(2025, 1, 21, 14, tzinfo=PARIS)])
    assert starts == expected
    override = parsed.walk("VEVENT")[1]
    assert str(override["SUMMARY"]) == "Commission urbanisme (déplacée)"
    assert "ews_legacy_address" in {note.code for note in document.notes}


def test_contacts_come_with_their_photo_and_the_group_names_its_member(
        source: EwsPimSource, organisation: tuple[EwsServer, dict[str, str]]) -> None:
    [folder] = source.document_containers("contacts")
    documents = {d.source_id: d for d in fetched(source, folder)}
    ids = organisation[1]
    card = vobject.readOne(read(documents[ids["contact"]]).decode())
    assert card.fn.value == "Hélène Lefèvre"
    assert card.photo.value == PHOTO
    group = vobject.readOne(read(documents[ids["group"]]).decode())
    assert [m.value for m in group.contents["x-addressbookserver-member"]] == [
        f"urn:uuid:{contact_uid(ids['contact'])}", "mailto:accueil@ville.fr"]
    assert documents[ids["group"]].name == f"{contact_uid(ids['group'])}.vcf"


def test_a_task_keeps_its_percent_and_a_second_listing_says_only_what_changed(
        source: EwsPimSource, organisation: tuple[EwsServer, dict[str, str]]) -> None:
    server, ids = organisation
    folder = next(c for c in source.document_containers("tasks") if c.role is None)
    listing = source.list_documents(folder, None)
    [document] = list(source.fetch_documents(folder, listing.refs))
    todo = Calendar.from_ical(read(document)).walk("VTODO")[0]
    assert todo["PERCENT-COMPLETE"] == 40 and str(todo["STATUS"]) == "IN-PROCESS"
    unchanged = source.list_documents(folder, listing.cursor)
    assert unchanged.refs == [] and unchanged.removed == [] and not unchanged.complete
    mailbox: Any = server.tenant.mailbox(MAILBOX)
    mailbox.delete_item(ids["task"])
    after = source.list_documents(folder, unchanged.cursor)
    assert after.refs == [] and after.removed == [ids["task"]]
