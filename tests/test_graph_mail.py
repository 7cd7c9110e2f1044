"""The Graph mail source against the Graph test server over TLS, with the real msal."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import Container, Message
from connectors.graph.auth import GraphAuthError, GraphCredentials, token_provider
from connectors.graph.mail import GraphMailSource, category_keyword, check_access
from connectors.graph.session import GraphError, GraphSession
from tests.graph_server import (
    FixtureFolder,
    FixtureMailbox,
    FixtureMessage,
    RunningGraphServer,
    Throttle,
    french_tenant,
    mime_message,
    running_graph_server,
)
from tests.tls import TestCertificates

AMELIE = "amelie.lefevre@ville-exemple.fr"
ATOM = re.compile(r'^[\x21-\x7e]+$')
ATOM_SPECIALS = set('(){ %*"\\]')


@pytest.fixture
def graph(certificates: TestCertificates) -> Iterator[RunningGraphServer]:
    with running_graph_server(french_tenant(), certificates) as server:
        yield server


def open_session(graph: RunningGraphServer, certificates: TestCertificates,
                 secret: str | None = None) -> GraphSession:
    tenant = graph.tenant
    tokens = token_provider(GraphCredentials(tenant.tenant_id, tenant.client_id,
                                             secret or tenant.client_secret),
                            graph.authority, ca_file=str(certificates.ca_file))
    return GraphSession(graph.graph_url, tokens, ca_file=str(certificates.ca_file))


def open_source(graph: RunningGraphServer, certificates: TestCertificates,
                **options: Any) -> GraphMailSource:
    return GraphMailSource(open_session(graph, certificates), AMELIE, **options)


@pytest.fixture
def source(graph: RunningGraphServer,
           certificates: TestCertificates) -> Iterator[GraphMailSource]:
    mail = open_source(graph, certificates)
    yield mail
    mail.close()


def amelie(graph: RunningGraphServer) -> FixtureMailbox:
    mailbox = graph.tenant.mailbox(AMELIE)
    assert mailbox is not None
    return mailbox


def folder(graph: RunningGraphServer, name: str) -> FixtureFolder:
    return next(f for f in amelie(graph).folders.values() if f.display_name == name)


def messages_in(graph: RunningGraphServer, name: str) -> list[FixtureMessage]:
    folder_id = folder(graph, name).id
    return [m for m in amelie(graph).messages.values() if m.folder_id == folder_id]


def container(source: GraphMailSource, *path: str) -> Container:
    return next(c for c in source.containers() if c.path == path)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def body(message: Message) -> bytes:
    with message.open() as reader:
        return reader.read()


def expected_flags(message: FixtureMessage) -> set[str]:
    flags = {category_keyword(c) for c in message.categories}
    if message.is_read:
        flags.add("\\Seen")
    if message.flag_status == "flagged":
        flags.add("\\Flagged")
    if message.is_draft:
        flags.add("\\Draft")
    return flags


# --- access


def test_access_check_explains_refusals(graph: RunningGraphServer,
                                        certificates: TestCertificates) -> None:
    with pytest.raises(GraphAuthError) as refused:
        check_access(open_session(graph, certificates, "not-the-secret"), AMELIE)
    assert refused.value.error_code == "AADSTS7000215"
    assert graph.stats["graph_requests"] == 0
    graph.state.no_consent = True
    with pytest.raises(GraphAuthError) as refused:
        check_access(open_session(graph, certificates), AMELIE)
    assert "consentement" in refused.value.message_fr
    graph.state.no_consent = False
    with pytest.raises(GraphError) as missing:
        check_access(open_session(graph, certificates), "personne@ville-exemple.fr")
    assert missing.value.graph_code == "ErrorInvalidUser"
    check_access(open_session(graph, certificates), AMELIE)


# --- folders


def test_folders_with_accents_nesting_and_roles(graph: RunningGraphServer,
                                                source: GraphMailSource) -> None:
    graph.tenant.add_folder(amelie(graph), "Non lus de la semaine", search=True)
    found = source.containers()
    paths = [c.path for c in found]
    roles = {c.path: c.role for c in found if c.role}
    assert roles == {("Boîte de réception",): "inbox", ("Éléments envoyés",): "sent",
                     ("Brouillons",): "drafts", ("Éléments supprimés",): "trash",
                     ("Courrier indésirable",): "junk", ("Archive",): "archive"}
    nested = ("Boîte de réception", "Projets", "Été 2024")
    assert nested in paths
    assert paths.index(("Boîte de réception",)) < paths.index(nested[:2]) < paths.index(nested)
    assert next(c for c in found if c.path == nested).native_name == folder(graph, "Été 2024").id
    assert ("Problèmes de synchronisation",) not in paths
    assert source.hidden_folders == [("Problèmes de synchronisation",)]
    assert source.search_folders == [("Non lus de la semaine",)]


def test_hidden_folders_on_request(graph: RunningGraphServer,
                                   certificates: TestCertificates) -> None:
    mail = open_source(graph, certificates, include_hidden=True)
    assert ("Problèmes de synchronisation",) in [c.path for c in mail.containers()]
    assert mail.hidden_folders == []


def test_mailbox_without_archive_folder(graph: RunningGraphServer,
                                        source: GraphMailSource) -> None:
    del amelie(graph).folders[folder(graph, "Archive").id]
    found = source.containers()
    assert "archive" not in {c.role for c in found}
    assert ("Boîte de réception",) in [c.path for c in found]


def test_folder_walk_overlaps_within_the_mailbox_limit(graph: RunningGraphServer,
                                                       source: GraphMailSource) -> None:
    mailbox = amelie(graph)
    for n in range(6):
        service = graph.tenant.add_folder(mailbox, f"Service {n}")
        for k in range(3):
            dossier = graph.tenant.add_folder(mailbox, f"Dossier {n}.{k}", service)
            graph.tenant.add_folder(mailbox, f"Pièces {n}.{k}", dossier)
    graph.state.latency = 0.03

    def walk(parent_id: str, parent: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
        for child in mailbox.folders.values():
            if child.parent_id == parent_id and not child.hidden:
                yield (*parent, child.display_name)
                yield from walk(child.id, (*parent, child.display_name))

    assert [c.path for c in source.containers()] == list(walk(mailbox.root_id, ()))
    # Siblings' children are listed together, never more than the limit at once.
    assert graph.state.max_in_flight[AMELIE] == 4
    assert graph.stats["concurrency_refused"] == 0


# --- listings


def test_complete_listing_maps_flags_dates_and_sizes(graph: RunningGraphServer,
                                                     source: GraphMailSource) -> None:
    inbox = container(source, "Boîte de réception")
    listing = source.list_changes(inbox, None)
    assert listing.complete and not listing.reset
    assert set(listing.cursor) == {"delta_link"}
    fixtures = {m.id: m for m in messages_in(graph, "Boîte de réception")}
    refs = {ref.source_id: ref for ref in listing.refs}
    assert set(refs) == set(fixtures)
    for source_id, ref in refs.items():
        fixture = fixtures[source_id]
        assert ref.flags == expected_flags(fixture)
        assert ref.internal_date == fixture.received
        assert ref.internal_date is not None and ref.internal_date.tzinfo is not None
        # PidTagMessageSize is the store's size: near the MIME size, not equal to it.
        assert abs(ref.size - len(fixture.mime)) < 4096
    assert "Categorie_bleue" in {f for ref in refs.values() for f in ref.flags}
    assert source.keyword_renames["Catégorie bleue"] == "Categorie_bleue"


def test_delta_lists_only_changes(graph: RunningGraphServer, source: GraphMailSource) -> None:
    mailbox, tenant = amelie(graph), graph.tenant
    inbox = container(source, "Boîte de réception")
    first = source.list_changes(inbox, None)
    unread = next(m for m in messages_in(graph, "Boîte de réception") if not m.is_read)
    plain = next(m for m in messages_in(graph, "Boîte de réception")
                 if m.flag_status == "notFlagged" and m.id != unread.id)
    gone = next(m for m in messages_in(graph, "Boîte de réception")
                if m.id not in (unread.id, plain.id))
    tenant.update_message(mailbox, unread.id, is_read=True)
    tenant.update_message(mailbox, plain.id, flag_status="flagged")
    tenant.delete_message(mailbox, gone.id)
    when = datetime(2024, 9, 2, 7, 30, tzinfo=UTC)
    new = tenant.add_message(mailbox, folder(graph, "Boîte de réception"), mime_message(
        "Zoé Benoît <zoe.benoit@ville-exemple.fr>", AMELIE, "Rentrée", "Bonjour\n", when),
        subject="Rentrée", received=when, categories=["Réunion (urgent)"])

    second = source.list_changes(inbox, first.cursor)
    assert not second.complete and not second.reset
    refs = {ref.source_id: ref for ref in second.refs}
    assert set(refs) == {unread.id, plain.id, new.id}
    assert "\\Seen" in refs[unread.id].flags
    assert "\\Flagged" in refs[plain.id].flags
    assert refs[new.id].flags == {"Reunion__urgent_"}
    assert refs[new.id].internal_date == when
    assert source.removed == [gone.id]
    assert second.cursor["delta_link"] != first.cursor["delta_link"]

    third = source.list_changes(inbox, second.cursor)
    assert third.refs == [] and not third.complete and source.removed == []


@pytest.mark.parametrize("spoil", ["forget", "garble"])
def test_stale_delta_link_falls_back_to_complete_listing(
        graph: RunningGraphServer, source: GraphMailSource, spoil: str) -> None:
    inbox = container(source, "Boîte de réception")
    first = source.list_changes(inbox, None)
    cursor = dict(first.cursor)
    if spoil == "forget":
        graph.state.forget_cursors()
    else:
        cursor["delta_link"] = re.sub(r"deltatoken=[^&]+", "deltatoken=perime",
                                      cursor["delta_link"])
    again = source.list_changes(inbox, cursor)
    assert again.complete and not again.reset
    assert sorted(r.source_id for r in again.refs) == sorted(r.source_id for r in first.refs)


# --- bodies


def test_fetch_streams_identical_bytes_in_order(graph: RunningGraphServer,
                                                source: GraphMailSource) -> None:
    mailbox, tenant = amelie(graph), graph.tenant
    when = datetime(2024, 10, 3, 11, 0, tzinfo=UTC)
    payload = bytes(range(256)) * (6 * 4096)  # 6 MiB of attachment, more once encoded
    large = tenant.add_message(mailbox, folder(graph, "Projets"), mime_message(
        "Service urbanisme <urbanisme@ville-exemple.fr>", AMELIE, "Plans du PLU", "Ci-joint.\n",
        when, ("plu-révisé.pdf", payload)), subject="Plans du PLU", received=when,
        is_read=True, flag_status="flagged", categories=["Urbanisme"])
    assert len(large.mime) > 8 << 20
    projets = container(source, "Boîte de réception", "Projets")
    listing = source.list_changes(projets, None)
    wanted = [ref.source_id for ref in listing.refs]
    wanted.reverse()

    fetched = list(source.fetch(projets, wanted))
    assert [m.source_id for m in fetched] == wanted
    for message in fetched:
        fixture = mailbox.messages[message.source_id]
        data = body(message)
        assert message.fingerprint == sha256(fixture.mime) == sha256(data)
        assert message.size == len(fixture.mime)
        assert message.flags == expected_flags(fixture)
        assert message.internal_date == fixture.received
    big = next(m for m in fetched if m.source_id == large.id)
    assert big.flags == {"\\Seen", "\\Flagged", "Urbanisme"}
    assert big.subject == "Plans du PLU"
    assert big.message_id and big.message_id.startswith("<")


def test_fetch_without_listing_reads_metadata(graph: RunningGraphServer,
                                              source: GraphMailSource) -> None:
    drafts = container(source, "Brouillons")
    draft = messages_in(graph, "Brouillons")[0]
    [message] = source.fetch(drafts, [draft.id])
    assert body(message) == draft.mime
    assert message.flags == {"\\Seen", "\\Draft"}
    assert message.internal_date == draft.received


def test_message_deleted_meanwhile_is_skipped(graph: RunningGraphServer,
                                              source: GraphMailSource) -> None:
    inbox = container(source, "Boîte de réception")
    ids = [ref.source_id for ref in source.list_changes(inbox, None).refs]
    graph.tenant.delete_message(amelie(graph), ids[3])
    fetched = [m.source_id for m in source.fetch(inbox, ids)]
    assert fetched == ids[:3] + ids[4:]
    assert source.unreadable == []


def test_item_without_mime_is_reported_not_raised(graph: RunningGraphServer,
                                                  source: GraphMailSource) -> None:
    inbox = container(source, "Boîte de réception")
    ids = [ref.source_id for ref in source.list_changes(inbox, None).refs]
    # EWS names this failure ErrorMimeContentConversionFailed; Graph documents no code.
    amelie(graph).messages[ids[1]].mime_refusal = (400, "ErrorMimeContentConversionFailed")
    fetched = [m.source_id for m in source.fetch(inbox, ids[:3])]
    assert fetched == [ids[0], ids[2]]
    [(source_id, reason)] = source.unreadable
    assert source_id == ids[1] and "ErrorMimeContentConversionFailed" in reason


def test_ids_survive_a_move(graph: RunningGraphServer, source: GraphMailSource) -> None:
    graph.state.rest_ids = True
    inbox = container(source, "Boîte de réception")
    ids = [ref.source_id for ref in source.list_changes(inbox, None).refs]
    moved = ids[0]
    graph.tenant.move_message(amelie(graph), moved, folder(graph, "Archive"))
    archive = container(source, "Archive")
    assert moved in [ref.source_id for ref in source.list_changes(archive, None).refs]
    [message] = source.fetch(archive, [moved])
    assert body(message) == amelie(graph).messages[moved].mime


def test_fetch_keeps_the_mailbox_cap_saturated(graph: RunningGraphServer,
                                               source: GraphMailSource) -> None:
    graph.state.latency = 0.05
    inbox = container(source, "Boîte de réception")
    ids = [ref.source_id for ref in source.list_changes(inbox, None).refs]
    assert [m.source_id for m in source.fetch(inbox, ids)] == ids
    assert graph.state.max_in_flight[AMELIE] == 4
    assert graph.stats["concurrency_refused"] == 0


def test_throttling_storm_during_fetch_loses_nothing(graph: RunningGraphServer,
                                                     source: GraphMailSource) -> None:
    inbox = container(source, "Boîte de réception")
    ids = [ref.source_id for ref in source.list_changes(inbox, None).refs]
    graph.state.throttle = Throttle(ratio=0.5, retry_after=(0, 0, 0, 1))
    fetched = {m.source_id: body(m) for m in source.fetch(inbox, ids)}
    mailbox = amelie(graph)
    assert list(fetched) == ids
    assert all(fetched[i] == mailbox.messages[i].mime for i in ids)
    assert graph.stats["throttled"] >= 5


# --- categories as keywords


@pytest.mark.parametrize(("category", "keyword"), [
    ("Urbanisme", "Urbanisme"),
    ("Catégorie bleue", "Categorie_bleue"),
    ("Été", "Ete"),
    ('Projet "Piscine" (2024)', "Projet__Piscine___2024_"),
    ("50% fait*", "50__fait_"),
    ("a\\b]c{d", "a_b_c_d"),
])
def test_category_becomes_a_valid_keyword(category: str, keyword: str) -> None:
    assert category_keyword(category) == keyword


def test_category_without_ascii_gets_a_stable_distinct_keyword() -> None:
    categories = ["会議", "★", " ", "Ωμέγα", "Ωμέγα 2"]
    keywords = [category_keyword(c) for c in categories]
    for keyword in keywords:
        assert keyword.startswith("category_")
        assert ATOM.match(keyword) and not set(keyword) & ATOM_SPECIALS
    assert len(set(keywords)) == len(keywords)
    assert keywords == [category_keyword(c) for c in categories]


def test_an_in_place_archive_is_reported_since_graph_cannot_read_it(
        graph: RunningGraphServer, source: GraphMailSource) -> None:
    source.containers()
    assert not [n for n in source.drain_notes() if n.code.startswith("in_place_archive")]
    amelie(graph).archive_id = "MBX:7d1f-archive@tenant"
    source.containers()
    [note] = [n for n in source.drain_notes() if n.code.startswith("in_place_archive")]
    assert (note.code, note.detail) == ("in_place_archive", "MBX:7d1f-archive@tenant")
