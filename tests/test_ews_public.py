"""The EWS public folder sources against the EWS test server: the tree walked one level at a
time and the items listed page by page (pages made small here), every request sent as the
service account itself; a listing from its own cursor tells what changed and what went."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors import registry
from connectors.ews import folders, public
from connectors.registry import Account
from tests.conformance.harness import StoreContext
from tests.ews_seed import DOMAIN, SERVICE_LOGIN, mime_message, single_event, utc_zone

LINE = "public:\\Archives de la mairie"
TOP = ("Archives de la mairie",)


def open_source(server: Any, tmp_path: Any, workload: str, line: str = LINE) -> Any:
    ews = registry.connector("ews")
    context = StoreContext(tmp_path, {"env:EWS_SECRET": server.service_password})
    section = {"type": "ews", "service_endpoint": server.url, "ca_file": str(server.ca_file),
               "service_account": {"login": SERVICE_LOGIN, "secret": "env:EWS_SECRET"}}
    assert ews.open_source is not None
    return ews.open_source(context, Account(ews.config.model_validate(section), line), workload)


def deliver(server: Any, path: tuple[str, ...], count: int) -> list[str]:
    start = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    server.tenant.add_public_folder(path)
    return [server.tenant.deliver_public(path, mime_message(
        f"greffe@{DOMAIN}", f"mairie@{DOMAIN}", f"Arrêté n°{n}", "Vu le code.\r\n",
        start + timedelta(days=n)), received=start + timedelta(days=n)) for n in range(count)]


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(public, "ITEM_PAGE", 2)
    monkeypatch.setattr(folders, "FOLDER_PAGE", 2)


@pytest.mark.usefixtures("small_pages")
def test_mail_folders_walked_and_listed_page_by_page_as_the_service_account(
        ews_server, tmp_path):
    ids = deliver(ews_server, TOP, 5)
    for name in ("1990-1999", "2000-2009", "2010-2019"):
        ews_server.tenant.add_public_folder((*TOP, name))
    ews_server.tenant.add_public_folder((*TOP, "Registre des salles"), "IPF.Appointment")
    source = open_source(ews_server, tmp_path, "mail")
    asked = len(ews_server.requests)
    containers = source.containers()
    assert [c.path for c in containers] == [TOP, *((*TOP, n) for n in (
        "1990-1999", "2000-2009", "2010-2019"))]
    assert {c.part for c in containers} == {"public"}
    [top] = [c for c in containers if c.path == TOP]
    listing = source.list_changes(top, None)
    assert listing.complete
    assert sorted(ref.source_id for ref in listing.refs) == sorted(ids)
    sent = ews_server.requests[asked:]
    assert [op for op, _, _ in sent if op == "FindItem"] == ["FindItem"] * 3  # 2 + 2 + 1
    # Folders, Shallow one level at a time: the root's two children in one page, the line's
    # folder's four in two, then each of those four (none below them).
    assert sum(op == "FindFolder" for op, _, _ in sent) == 1 + 2 + 4
    assert all((mailbox, who) == ("", None) for _, mailbox, who in sent)
    fetched = list(source.fetch(top, [ref.source_id for ref in listing.refs]))
    bodies = {item.id: item.mime for item in ews_server.tenant.public.folder_at(TOP)
              .items.values()}
    for message in fetched:
        with message.open() as body:
            assert body.read() == bodies[message.source_id]

    ews_server.tenant.public.delete_item(ids[0])
    again = source.list_changes(top, listing.cursor)
    assert sorted(ref.source_id for ref in again.refs) == sorted(ids[1:])
    notes = source.drain_notes()
    assert [(n.code, n.subject, n.params) for n in notes if n.code == "removed_at_source"] == [
        ("removed_at_source", TOP[0], {"count": 1})]


def test_a_calendar_listing_from_its_cursor_tells_what_changed_and_what_went(
        ews_server, tmp_path):
    when = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    path = (*TOP, "Registre des salles")
    ews_server.tenant.add_public_folder(TOP)
    ews_server.tenant.add_public_folder(path, "IPF.Appointment")
    first = ews_server.tenant.add_public_item(path, single_event(
        "Salle A", when, when + timedelta(hours=1), utc_zone()))
    source = open_source(ews_server, tmp_path, "calendar")
    [calendar] = source.document_containers("calendar")
    assert (calendar.path, calendar.part) == (path, "public")
    listing = source.list_documents(calendar, None)
    assert listing.complete and [ref.source_id for ref in listing.refs] == [first]
    [document] = source.fetch_documents(calendar, listing.refs)
    with document.open() as body:
        assert b"SUMMARY:Salle A" in body.read()
    assert source.list_documents(calendar, listing.cursor).refs == []

    second = ews_server.tenant.add_public_item(path, single_event(
        "Salle B", when, when + timedelta(hours=2), utc_zone()))
    ews_server.tenant.public.delete_item(first)
    delta = source.list_documents(calendar, listing.cursor)
    assert not delta.complete
    assert [ref.source_id for ref in delta.refs] == [second]
    assert delta.removed == [first]
