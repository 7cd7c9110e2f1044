"""The Graph files source (OneDrive, SharePoint libraries) against the Graph test server and
its download host over TLS, with the real msal."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from connectors.base import Container, Document, DocumentRef
from connectors.graph.auth import GraphCredentials, token_provider
from connectors.graph.files import GraphFileSource, site_drives
from connectors.graph.quickxor import QuickXorHash
from connectors.graph.session import GraphSession
from tests.graph_files import (
    BIG_FILE_SIZE,
    FixtureDrive,
    FixtureDriveItem,
    FixtureFiles,
    pdf_bytes,
    running_download_server,
    seed_files,
)
from tests.graph_server import RunningGraphServer, french_tenant, running_graph_server
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"
NOTEBOOK = "OneDrive/Documents/Carnet de notes d'Amélie"


@dataclass
class Tenant:
    graph: RunningGraphServer
    files: FixtureFiles
    session: GraphSession

    @property
    def onedrive(self) -> FixtureDrive:
        return self.files.drives[next(iter(self.files.user_drives.values()))]

    def source(self, page_size: int = 500) -> GraphFileSource:
        return GraphFileSource(self.session, AMELIE, page_size=page_size)


@pytest.fixture
def tenant(certificates: TestCertificates) -> Iterator[Tenant]:
    fixture = french_tenant(users=2, inbox_messages=1)
    files = seed_files(fixture)
    with running_graph_server(fixture, certificates) as graph, \
            running_download_server(files, certificates):
        tokens = token_provider(GraphCredentials(fixture.tenant_id, fixture.client_id,
                                                 fixture.client_secret),
                                graph.authority, ca_file=str(certificates.ca_file))
        session = GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))
        yield Tenant(graph, files, session)
        session.close()


def files_in(drive: FixtureDrive) -> dict[str, FixtureDriveItem]:
    """The files a user would see: every file not inside a OneNote notebook."""
    found = {}
    for item in drive.items.values():
        if item.kind != "file":
            continue
        parent = drive.items[item.parent_id]
        while parent.kind == "folder":
            parent = drive.items[parent.parent_id]
        if parent.kind == "root":
            found[item.id] = item
    return found


def content(document: Document) -> bytes:
    with document.open() as reader:
        return reader.read()


def onedrive(source: GraphFileSource) -> Container:
    [container] = source.document_containers("files")
    return container


def small_refs(refs: list[DocumentRef]) -> list[DocumentRef]:
    return [ref for ref in refs if ref.size < BIG_FILE_SIZE]


# --- containers and listings


def test_the_onedrive_is_the_users_one_container(tenant: Tenant) -> None:
    source = tenant.source()
    assert source.document_containers("files") == [
        Container(path=("OneDrive",), native_name=tenant.onedrive.id)]
    assert source.document_containers("calendar") == []


def test_complete_listing_gives_every_file_with_its_path(tenant: Tenant) -> None:
    source = tenant.source(page_size=4)
    listing = source.list_documents(onedrive(source), None)
    assert listing.complete
    assert tenant.files.stats["delta_pages"] > 3
    drive = tenant.onedrive
    expected = {item.id: (tuple(drive.path_of(drive.items[item.parent_id])), item.name,
                          len(item.content)) for item in files_in(drive).values()}
    assert {ref.source_id: (ref.folder, ref.name, ref.size) for ref in listing.refs} == expected
    listed = {(ref.folder, ref.name) for ref in listing.refs}
    assert (("Documents", "Délibérations", "2024"), "PV conseil n°3.pdf") in listed
    assert (("Documents", "Finances & budget"), "Budget 2024 #2 (hausse de 3%).xlsx") in listed
    assert ((), "Lisez-moi.txt") in listed
    assert all(ref.version for ref in listing.refs)
    assert len({ref.version for ref in listing.refs}) == len(listing.refs)
    assert listing.removed == []


def test_a_onenote_notebook_is_noted_not_listed(tenant: Tenant) -> None:
    source = tenant.source()
    listing = source.list_documents(onedrive(source), None)
    assert not any(ref.name.endswith((".one", ".onetoc2")) for ref in listing.refs)
    notes = [(n.code, n.subject, n.detail) for n in source.drain_notes()]
    assert notes == [("not_a_file", NOTEBOOK, "oneNote")]
    assert source.drain_notes() == []


# --- content


def test_fetched_bytes_hashes_and_mtime_are_the_sources(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    refs = small_refs(source.list_documents(container, None).refs)
    source.drain_notes()
    documents = list(source.fetch_documents(container, refs))
    assert sorted(d.source_id for d in documents) == sorted(ref.source_id for ref in refs)
    drive = tenant.onedrive
    for document in documents:
        item = drive.items[document.source_id]
        data = content(document)
        assert data == item.content
        assert document.fingerprint == "sha256:" + hashlib.sha256(item.content).hexdigest()
        assert document.size == len(item.content)
        assert document.source_hashes == {"quickXorHash": QuickXorHash(item.content).b64digest()}
        assert document.modified == item.client_modified != item.uploaded
        assert (document.folder, document.name) == (
            tuple(drive.path_of(drive.items[item.parent_id])), item.name)
    pv = next(d for d in documents if d.name == "PV conseil n°3.pdf")
    assert pv.modified == datetime(2024, 3, 21, 17, 45, 12, tzinfo=UTC)
    assert tenant.files.stats["downloads"] == len(refs)
    assert tenant.files.stats["download_with_token"] == 0
    assert source.drain_notes() == []


def test_a_30_mb_file_streams_through_a_flat_memory(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    [big] = [ref for ref in source.list_documents(container, None).refs
             if ref.size == BIG_FILE_SIZE]
    item = tenant.onedrive.items[big.source_id]
    tracemalloc.start()
    try:
        [document] = source.fetch_documents(container, [big])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a 30 MiB file"
    digest = hashlib.sha256()
    with document.open() as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    assert document.fingerprint == "sha256:" + digest.hexdigest()
    assert digest.hexdigest() == hashlib.sha256(item.content).hexdigest()
    assert document.size == BIG_FILE_SIZE
    assert document.source_hashes["quickXorHash"] == item.quick_xor


def test_an_expired_download_url_is_asked_again_once(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    ref = next(r for r in source.list_documents(container, None).refs
               if r.name == "Lisez-moi.txt")
    tenant.files.expire_next_downloads(1)
    [document] = source.fetch_documents(container, [ref])
    assert content(document) == "Bienvenue dans l'espace d'Amélie.\r\n".encode()
    assert tenant.files.stats["download_refused"] == 1
    assert tenant.files.stats["item_gets"] == 2
    tenant.files.expire_next_downloads(2)
    source.drain_notes()
    assert list(source.fetch_documents(container, [ref])) == []
    [note] = source.drain_notes()
    assert (note.code, note.subject) == ("unreadable_item", ref.source_id)


def test_content_that_does_not_match_its_hash_is_noted_not_yielded(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    refs = small_refs(source.list_documents(container, None).refs)
    source.drain_notes()
    bad = next(r for r in refs if r.name == "PV conseil n°2.pdf")
    tenant.files.wrong_hash.add(bad.source_id)
    documents = list(source.fetch_documents(container, refs))
    assert {d.source_id for d in documents} == {r.source_id for r in refs} - {bad.source_id}
    [note] = source.drain_notes()
    assert (note.code, note.subject) == ("hash_mismatch", bad.source_id)
    assert "quickXorHash" in note.detail


def test_a_file_gone_before_its_fetch_is_skipped_silently(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    refs = small_refs(source.list_documents(container, None).refs)
    source.drain_notes()
    gone = refs[0]
    tenant.files.delete(tenant.onedrive, gone.source_id)
    documents = list(source.fetch_documents(container, refs))
    assert gone.source_id not in {d.source_id for d in documents}
    assert len(documents) == len(refs) - 1
    assert source.drain_notes() == []


def test_a_retried_ref_without_name_finds_its_folder_by_id(tenant: Tenant) -> None:
    # What the engine asks on a later pass for an item that failed before: id, version, size.
    item = tenant.onedrive.at("Documents", "Délibérations", "2024", "PV conseil n°1.pdf")
    source = tenant.source()
    [document] = source.fetch_documents(onedrive(source), [DocumentRef(item.id, "", 0)])
    assert (document.folder, document.name) == (
        ("Documents", "Délibérations", "2024"), "PV conseil n°1.pdf")
    assert document.version.startswith('"{') and content(document) == item.content


# --- delta


def test_a_second_round_lists_only_the_changes(tenant: Tenant) -> None:
    first = tenant.source(page_size=5)
    container = onedrive(first)
    listing = first.list_documents(container, None)
    versions = {ref.source_id: ref.version for ref in listing.refs}
    drive, files = tenant.onedrive, tenant.files
    added = files.add_file(drive, drive.at("Documents", "Délibérations", "2024"),
                           "PV conseil n°4.pdf", pdf_bytes("Procès-verbal n°4"))
    readme = drive.at("Lisez-moi.txt")
    files.update_file(drive, readme.id, b"Nouvelle version\r\n",
                      datetime(2024, 9, 2, 8, 0, tzinfo=UTC))
    photo = drive.at("Images", "Fête du 14 juillet", "défilé.jpg")
    files.delete(drive, photo.id)

    # A new run: nothing of the first round is remembered but its cursor.
    second = tenant.source(page_size=5)
    changes = second.list_documents(container, listing.cursor)
    assert not changes.complete
    assert {(ref.folder, ref.name) for ref in changes.refs} == {
        (("Documents", "Délibérations", "2024"), "PV conseil n°4.pdf"), ((), "Lisez-moi.txt")}
    changed = {ref.source_id: ref for ref in changes.refs}
    assert changed[readme.id].version != versions[readme.id]
    assert added.id not in versions
    assert changes.removed == [photo.id]
    [document] = second.fetch_documents(container, [changed[readme.id]])
    assert content(document) == b"Nouvelle version\r\n"
    assert document.modified == datetime(2024, 9, 2, 8, 0, tzinfo=UTC)

    quiet = second.list_documents(container, changes.cursor)
    assert (quiet.refs, quiet.removed, quiet.complete) == ([], [], False)


def test_a_renamed_file_gets_a_new_version(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    listing = source.list_documents(container, None)
    budget = tenant.onedrive.at("Documents", "Finances & budget",
                                "Budget 2024 #2 (hausse de 3%).xlsx")
    before = next(ref for ref in listing.refs if ref.source_id == budget.id)
    tenant.files.rename(tenant.onedrive, budget.id, "Budget 2024 voté.xlsx")
    [after] = source.list_documents(container, listing.cursor).refs
    assert (after.source_id, after.name) == (budget.id, "Budget 2024 voté.xlsx")
    assert after.version != before.version


def test_a_token_the_service_forgot_gives_a_complete_listing(tenant: Tenant) -> None:
    source = tenant.source()
    container = onedrive(source)
    listing = source.list_documents(container, None)
    tenant.files.forget_delta_tokens()
    again = source.list_documents(container, listing.cursor)
    assert again.complete
    assert {ref.source_id for ref in again.refs} == {ref.source_id for ref in listing.refs}
    assert again.cursor != listing.cursor


# --- SharePoint


def test_site_libraries_are_listed_and_read(tenant: Tenant) -> None:
    libraries = site_drives(tenant.session)
    assert sorted(c.path for c in libraries) == [
        ("Sites", "Conseil municipal", "Documents partagés"),
        ("Sites", "Service urbanisme", "Archives 1990-2010"),
        ("Sites", "Service urbanisme", "Documents partagés"),
        ("Sites", "Équipe voirie", "Documents")]
    assert tenant.onedrive.id not in {c.native_name for c in libraries}
    library = next(c for c in libraries
                   if c.path == ("Sites", "Service urbanisme", "Documents partagés"))
    drive = tenant.files.drives[library.native_name]
    source = tenant.source()
    [ref] = source.list_documents(library, None).refs
    assert (ref.folder, ref.name) == (("Plans", "PLU 2025"), "Règlement écrit.pdf")
    tenant.files.sha1_only.add(ref.source_id)
    [document] = source.fetch_documents(library, [ref])
    item = drive.items[ref.source_id]
    assert content(document) == item.content
    assert document.source_hashes == {"sha1Hash": hashlib.sha1(item.content).hexdigest().upper()}
