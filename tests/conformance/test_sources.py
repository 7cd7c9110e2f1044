"""Every registered source against its real store, filled beforehand without the connector
(``MailStore``, ``DocumentStore``): listings that hold still, and fetched bytes that are
the ones announced."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from connectors.base import Container, Document, Message
from connectors.protocols import NotingSource
from tests.conformance.harness import Case, Folder, SeedFile, SeedMessage
from tests.conformance.items import (
    BIG,
    MEMORY_BOUND,
    SUMMER,
    big_document,
    big_message,
    peak_memory,
    source_files,
    source_mail,
)

INBOX = ("INBOX",)
UNREAD = frozenset({"unreadable_item", "hash_mismatch"})


def read(item: Message | Document) -> tuple[str, int]:
    """The fingerprint and size of what ``open()`` gives, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with item.open() as body:
        while chunk := body.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return "sha256:" + digest.hexdigest(), size


def seen_as(container: Container) -> Folder:
    """Where a test put what a container holds: the inbox by its role, others by path."""
    return INBOX if container.role == "inbox" else container.path


def listed(source: Any, container: Container) -> list[tuple[str, int, frozenset[str]]]:
    listing = source.list_changes(container, None)
    assert listing.complete and not listing.reset
    return sorted((ref.source_id, ref.size, ref.flags) for ref in listing.refs)


def test_mail_listings_hold_still_and_fetch_gives_the_bytes_announced(
        mail_source: Case) -> None:
    seeded = source_mail()
    mail_source.harness.seed_mail(seeded)
    source = mail_source.open_source()
    containers = source.containers()
    assert source.containers() == containers
    assert {seen_as(c) for c in containers} >= set(seeded)
    exact_sizes = "mail" not in mail_source.harness.estimated_sizes

    found: dict[Folder, Counter[str]] = {}
    rerun = mail_source.open_source()
    for container in containers:
        refs = listed(source, container)
        assert listed(source, container) == refs
        assert listed(rerun, container) == refs  # source ids hold across runs
        assert len({source_id for source_id, _, _ in refs}) == len(refs)
        messages = list(source.fetch(container, [source_id for source_id, _, _ in refs]))
        assert sorted(m.source_id for m in messages) == [source_id for source_id, _, _ in refs]
        sizes = {source_id: size for source_id, size, _ in refs}
        for fetched in messages:
            assert read(fetched) == (fetched.fingerprint, fetched.size), fetched.source_id
            if exact_sizes:
                assert fetched.size == sizes[fetched.source_id]
        again = list(rerun.fetch(container, [m.source_id for m in messages]))
        assert sorted((m.source_id, m.fingerprint) for m in again) == sorted(
            (m.source_id, m.fingerprint) for m in messages)
        found[seen_as(container)] = Counter(m.fingerprint for m in messages)

    expected = {folder: Counter("sha256:" + hashlib.sha256(m.raw).hexdigest() for m in messages)
                for folder, messages in seeded.items()}
    assert {folder: held for folder, held in found.items() if held} == expected


def test_a_mail_listing_from_its_own_cursor_tells_nothing_changed(mail_source: Case) -> None:
    mail_source.harness.seed_mail(source_mail())
    source = mail_source.open_source()
    claims_delta = mail_source.harness.capabilities.delta or source.capabilities.delta
    for container in source.containers():
        first = source.list_changes(container, None)
        again = source.list_changes(container, first.cursor)
        assert not again.reset
        if again.complete:
            assert not claims_delta, f"{container.path}: listed whole again"
            assert sorted(r.source_id for r in again.refs) == sorted(
                r.source_id for r in first.refs)
        else:
            assert again.refs == [], container.path


def test_a_message_far_bigger_than_memory_allows_is_fetched_in_bounded_memory(
        mail_source: Case) -> None:
    big = big_message()
    with big.open() as body:
        mail_source.harness.seed_mail({("Archives",): [SeedMessage(body.read())]})
    source = mail_source.open_source()
    [container] = [c for c in source.containers() if c.path == ("Archives",)]
    [ref] = source.list_changes(container, None).refs

    def fetch() -> tuple[Message, tuple[str, int]]:
        [fetched] = source.fetch(container, [ref.source_id])
        return fetched, read(fetched)

    (fetched, content), peak = peak_memory(fetch)
    assert content == (fetched.fingerprint, fetched.size) == (big.fingerprint, BIG)
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to fetch a {BIG >> 20} MiB message"


def test_document_listings_hold_still_and_fetch_gives_the_bytes_announced(
        document_source: Case) -> None:
    workload = document_source.workload
    expected = document_source.harness.seed_documents(workload, source_files())
    source = document_source.open_source()
    containers = source.document_containers(workload)
    assert source.document_containers(workload) == containers
    exact_sizes = workload not in document_source.harness.estimated_sizes

    rerun = document_source.open_source()
    fetched: list[str] = []
    for container in containers:
        listing = source.list_documents(container, None)
        assert listing.complete
        refs = sorted(listing.refs, key=lambda ref: ref.source_id)
        for looking in (source, rerun):
            assert sorted(looking.list_documents(container, None).refs,
                          key=lambda ref: ref.source_id) == refs
        assert len({ref.source_id for ref in refs}) == len(refs)
        documents = list(source.fetch_documents(container, refs))
        unread = {note.subject for note in (source.drain_notes() if isinstance(
            source, NotingSource) else []) if note.code in UNREAD}
        assert sorted([d.source_id for d in documents] + list(unread)) == [
            ref.source_id for ref in refs]
        by_id = {ref.source_id: ref for ref in refs}
        for item in documents:
            assert read(item) == (item.fingerprint, item.size), item.source_id
            assert item.version == by_id[item.source_id].version
            if exact_sizes and by_id[item.source_id].size:
                assert item.size == by_id[item.source_id].size
        again = list(rerun.fetch_documents(container, refs))
        assert sorted((d.source_id, d.fingerprint) for d in again) == sorted(
            (d.source_id, d.fingerprint) for d in documents)
        fetched += [item.fingerprint for item in documents]

    assert len(fetched) == len(expected)
    assert Counter(fp for fp in expected if fp) <= Counter(fetched)


def test_a_document_listing_from_its_own_cursor_tells_nothing_changed(
        document_source: Case) -> None:
    workload = document_source.workload
    document_source.harness.seed_documents(workload, source_files())
    source = document_source.open_source()
    claims_delta = document_source.harness.capabilities.delta
    for container in source.document_containers(workload):
        first = source.list_documents(container, None)
        again = source.list_documents(container, first.cursor)
        assert again.removed == []
        if again.complete:
            assert not claims_delta, f"{container.path}: listed whole again"
            assert sorted(r.source_id for r in again.refs) == sorted(
                r.source_id for r in first.refs)
        else:
            assert again.refs == [], container.path


def test_a_file_far_bigger_than_memory_allows_is_fetched_in_bounded_memory(
        file_source: Case) -> None:
    big = big_document("files")
    with big.open() as body:
        file_source.harness.seed_documents("files", [
            SeedFile(("Vidéos",), "Conseil municipal.mp4", body.read(), SUMMER)])
    source = file_source.open_source()
    [ref] = [ref for container in source.document_containers("files")
             for ref in source.list_documents(container, None).refs]
    [container] = source.document_containers("files")

    def fetch() -> tuple[Document, tuple[str, int]]:
        [fetched] = source.fetch_documents(container, [ref])
        return fetched, read(fetched)

    (fetched, content), peak = peak_memory(fetch)
    assert content == (fetched.fingerprint, fetched.size) == (big.fingerprint, BIG)
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to fetch a {BIG >> 20} MiB file"
