"""Every registered document sink (calendars, contacts, files) against its real target: the
``DocumentSink`` contract, each outcome read back by an independent reader
(``DocumentTarget``)."""

from __future__ import annotations

import io
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from connectors.base import (
    ANY_VERSION,
    BasculeError,
    ContainerRefused,
    Document,
    ItemRejected,
    VersionConflict,
)
from migrate.mail import source_notes
from tests.conformance.harness import Case
from tests.conformance.items import (
    BIG,
    HOSTILE_NAMES,
    MEMORY_BOUND,
    awkward_bodies,
    big_document,
    document,
    peak_memory,
    sample_name,
    whole_lines_size,
)


class Interrupted(Exception):
    """The source's stream broke off in the middle of a write."""


def sub_folder(case: Case, *names: str) -> tuple[str, ...]:
    """Sub-folders inside a container exist for files only."""
    return names if case.workload == "files" else ()


def content(document: Document) -> bytes:
    with document.open() as body:
        return body.read()


def reader_finds(case: Case, document: Document) -> str:
    """The fingerprint the independent reader must find for this document on the target."""
    return case.harness.expected_fingerprint(case.workload, content(document))


def test_ensure_container_twice_gives_one_container(document_sink: Case) -> None:
    target = document_sink.harness
    sink = document_sink.open_sink()
    path = ("Conseil municipal – été",)
    first = sink.ensure_container(path)
    assert sink.ensure_container(path) == first
    assert document_sink.open_sink().ensure_container(path) == first
    assert target.containers(document_sink.workload) == [first]


def test_a_document_put_is_found_with_its_fingerprint_size_and_version(
        document_sink: Case) -> None:
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    sent = document(document_sink.workload, "reunion-1",
                    folder=sub_folder(document_sink, "Délibérations", "2024"))
    stored = sink.put(native, sent)

    there = sink.fingerprint(sent)
    if document_sink.harness.capabilities.keeps_bytes:
        assert there == sent.fingerprint and stored.fingerprint in (None, sent.fingerprint)
    else:  # what it will answer for the item, from its write and from the document alike
        assert stored.fingerprint == there != sent.fingerprint
    landed = document_sink.harness.landed(document_sink.workload)
    assert {ref: item.fingerprint for ref, item in landed.items()} == {
        stored.target_ref: reader_finds(document_sink, sent)}
    size = landed[stored.target_ref].size
    if document_sink.harness.capabilities.keeps_bytes:
        assert size == sent.size

    found = sink.find(native, sent)
    assert found is not None
    assert (found.target_ref, found.fingerprint, found.size) == (stored.target_ref, there, size)
    assert [(s.target_ref, s.fingerprint, s.size)
            for s in sink.inventory(native, fingerprints=True)] == [
        (stored.target_ref, there, size)]
    if document_sink.harness.capabilities.versions:
        assert found.version == stored.version


def test_a_create_only_write_over_an_existing_item_is_refused_and_changes_nothing(
        document_sink: Case) -> None:
    workload = document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    sent = document(workload, "reunion-1")
    first = sink.put(native, sent)
    before = document_sink.harness.landed(workload)

    for again in (sent, document(workload, "reunion-1", variant=" (autre version)")):
        with pytest.raises(VersionConflict) as conflict:
            sink.put(native, again)
        assert conflict.value.current is not None
        assert conflict.value.current.target_ref == first.target_ref
        if document_sink.harness.capabilities.versions:
            assert conflict.value.current.version == first.version
        assert document_sink.harness.landed(workload) == before

    rewritten = sink.put(native, sent, ANY_VERSION)
    assert rewritten.target_ref == first.target_ref
    assert [s.target_ref for s in sink.inventory(native)] == [first.target_ref]


def test_after_a_crash_between_put_and_record_a_new_sink_finds_the_document(
        document_sink: Case) -> None:
    crashed = document_sink.open_sink()
    native = crashed.ensure_container(("Agenda",))
    sent = document(document_sink.workload, "reunion-1",
                    folder=sub_folder(document_sink, "Délibérations"))
    stored = crashed.put(native, sent)  # acknowledged, never recorded

    rerun = document_sink.open_sink()
    assert rerun.ensure_container(("Agenda",)) == native
    found = rerun.find(native, sent)
    assert found is not None
    assert (found.target_ref, found.fingerprint) == (stored.target_ref, rerun.fingerprint(sent))
    with pytest.raises(VersionConflict):
        rerun.put(native, sent)
    assert [s.target_ref for s in rerun.inventory(native)] == [stored.target_ref]


def test_a_write_cut_short_leaves_no_item_and_can_be_made_again(document_sink: Case) -> None:
    workload = document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    sent = document(workload, "reunion-1")

    def broken() -> io.RawIOBase:
        body = io.BytesIO(sent.open().read(sent.size // 2))

        class Broken(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
                chunk = body.read(len(buffer))
                if not chunk:
                    raise Interrupted
                buffer[:len(chunk)] = chunk
                return len(chunk)

        return Broken()

    with pytest.raises((Interrupted, BasculeError)):
        sink.put(native, replace(sent, open=broken))

    rerun = document_sink.open_sink()
    assert rerun.find(native, sent) is None
    assert list(rerun.inventory(native)) == []
    stored = rerun.put(native, sent)
    assert [s.target_ref for s in rerun.inventory(native)] == [stored.target_ref]
    assert {ref: item.fingerprint for ref, item in
            document_sink.harness.landed(workload).items()} == {
        stored.target_ref: reader_finds(document_sink, sent)}


def test_hostile_names_stay_inside_the_root_and_every_rename_is_reported(
        document_sink: Case) -> None:
    target, workload = document_sink.harness, document_sink.workload
    before = target.snapshot()
    sink = document_sink.open_sink()
    kept = renamed = 0
    for number, name in enumerate(HOSTILE_NAMES):
        asked = name
        try:
            native = sink.ensure_container((asked,))
        except ContainerRefused:
            asked = f"refusé-{number}"
            native = sink.ensure_container((asked,))
        said = {note.detail for note in source_notes(sink) if note.code == "renamed_container"}
        # Each in its own container: two names one rule changes alike would meet otherwise.
        sent = document(workload, f"hostile-{number}",
                        name=name if workload == "files" else sample_name(workload, name),
                        folder=sub_folder(document_sink, name))
        try:
            stored = sink.put(native, sent)
        except ItemRejected:
            continue
        given = (*sent.folder, sent.name)
        landed_as = target.segments(workload, stored.target_ref)[-len(given):]
        container_as = target.segments(workload, stored.target_ref)[-len(given) - 1]
        # A container the sink had to rename is said, with the name it was asked for.
        assert (container_as != unicodedata.normalize("NFC", asked)) == (asked in said), (
            asked, container_as, said)
        assert (stored.renamed is None) == (landed_as == given), (name, stored)
        renamed += stored.renamed is not None
        kept += stored.renamed is None
        found = sink.find(native, sent)
        assert found is not None and found.target_ref == stored.target_ref, name
        assert stored.target_ref in {s.target_ref for s in sink.inventory(native)}, name
        assert target.landed(workload)[stored.target_ref].fingerprint == reader_finds(
            document_sink, sent)

    assert kept and renamed, "no name kept, or none changed: the case proves nothing"
    assert target.escaped(before) == []


def test_a_document_far_bigger_than_memory_allows_is_streamed(document_sink: Case) -> None:
    """Or, where the batch says the server takes less, refused without a byte sent, and one
    of the largest size it takes lands."""
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Archives",))
    big = big_document(document_sink.workload)
    largest = sink.capabilities.max_item_size
    if largest is not None and largest < BIG:
        with pytest.raises(ItemRejected) as refused:
            sink.put(native, big)
        assert refused.value.code == "too_big"
        assert document_sink.harness.landed(document_sink.workload) == {}
        fitting = big_document(document_sink.workload,
                               whole_lines_size(document_sink.workload, largest))
        stored = sink.put(native, fitting)
        found = sink.find(native, fitting)
        assert found is not None and found.fingerprint == sink.fingerprint(fitting)
        landed = document_sink.harness.landed(document_sink.workload)
        assert landed[stored.target_ref].fingerprint == reader_finds(document_sink, fitting)
        return
    stored, peak = peak_memory(lambda: sink.put(native, big))
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to store a {BIG >> 20} MiB document"

    there, peak = peak_memory(lambda: sink.fingerprint(big))
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to fingerprint a {BIG >> 20} MiB document"
    found, peak = peak_memory(lambda: sink.find(native, big))
    assert found is not None and found.fingerprint == there
    assert peak < MEMORY_BOUND, f"{peak >> 20} MiB held to hash a {BIG >> 20} MiB document"
    landed = document_sink.harness.landed(document_sink.workload)[stored.target_ref]
    assert (landed.fingerprint, landed.size) == (reader_finds(document_sink, big), found.size)
    if document_sink.harness.capabilities.keeps_bytes:
        assert (there, found.size) == (big.fingerprint, BIG)


def test_inventory_after_deletions(document_sink: Case) -> None:
    target, workload = document_sink.harness, document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    sent = [document(workload, "removed-by-bascule", folder=sub_folder(document_sink, "Vieux")),
            document(workload, "deleted-by-a-user"),
            document(workload, "kept")]
    stored = [sink.put(native, item) for item in sent]
    if target.capabilities.deletes:
        sink.remove(native, stored[0].target_ref, stored[0].version)
        sink.remove(native, stored[0].target_ref)  # gone already is fine
    else:
        target.delete(workload, stored[0].target_ref)
    target.delete(workload, stored[1].target_ref)

    for looking in (sink, document_sink.open_sink()):
        assert [s.target_ref for s in looking.inventory(native)] == [stored[2].target_ref]
        assert looking.find(native, sent[0]) is None
        assert looking.find(native, sent[1]) is None
    assert list(target.landed(workload)) == [stored[2].target_ref]
    if target.capabilities.deletes:  # the sub-folder it emptied went with it
        assert target.containers(workload) == [native]


def test_a_sink_that_keeps_bytes_gives_back_the_bytes_it_was_given(document_sink: Case) -> None:
    target, workload = document_sink.harness, document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Octets",))
    for number, body in enumerate(awkward_bodies(workload)):
        sent = document(workload, f"octets-{number}", body=body)
        stored = sink.put(native, sent)
        landed = target.landed(workload)[stored.target_ref]
        found = sink.find(native, sent)
        # The sink finds what it sent, and so does an independent reader, whatever it keeps.
        assert found is not None and found.fingerprint == sink.fingerprint(sent), number
        assert landed.fingerprint == reader_finds(document_sink, sent), number
        if target.capabilities.keeps_bytes:
            assert (landed.fingerprint, landed.size) == (sent.fingerprint, sent.size), number


def test_a_sink_that_keeps_mtimes_keeps_them(document_sink: Case) -> None:
    target, workload = document_sink.harness, document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    modified = datetime(2019, 5, 6, 7, 8, 9, tzinfo=UTC)
    first = sink.put(native, document(workload, "ancien", modified=modified))
    second = document(workload, "ancien", variant=" v2", modified=modified)
    again = sink.put(native, second,
                     first.version if target.capabilities.versions else ANY_VERSION)
    landed = target.landed(workload)[again.target_ref]
    if target.capabilities.keeps_mtime:
        assert landed.modified == modified
        found = sink.find(native, document(workload, "ancien"))
        assert found is not None and found.modified == modified
    else:
        assert landed.fingerprint == reader_finds(document_sink, second)


def test_a_sink_that_answers_versions_writes_only_over_the_version_expected(
        document_sink: Case) -> None:
    target, workload = document_sink.harness, document_sink.workload
    sink = document_sink.open_sink()
    native = sink.ensure_container(("Agenda",))
    first = sink.put(native, document(workload, "reunion-1"))
    if not target.capabilities.versions:
        assert first.target_ref in target.landed(workload)
        return

    def version(key: str) -> Document:
        return document(workload, "reunion-1", variant=f" {key}")

    assert first.version
    assert [s.version for s in sink.inventory(native)] == [first.version]
    second = sink.put(native, version("deuxième"), first.version)
    assert (second.target_ref, second.version != first.version) == (first.target_ref, True)
    assert target.landed(workload)[first.target_ref].fingerprint == reader_finds(
        document_sink, version("deuxième"))

    with pytest.raises(VersionConflict) as stale:
        sink.put(native, version("troisième"), first.version)
    assert stale.value.current is not None and stale.value.current.version == second.version
    with pytest.raises(VersionConflict):
        sink.put(native, document(workload, "absent"), second.version)
    assert set(target.landed(workload)) == {first.target_ref}

    users = document(workload, "reunion-1", variant=" changed by its owner")
    target.replace(workload, first.target_ref, content(users))
    with pytest.raises(VersionConflict) as changed:
        sink.put(native, version("quatrième"), second.version)
    assert changed.value.current is not None and changed.value.current.version != second.version
    assert target.landed(workload)[first.target_ref].fingerprint == reader_finds(
        document_sink, users)
    found = sink.find(native, users)
    assert found is not None and found.fingerprint == sink.fingerprint(users)
    if target.capabilities.deletes:
        with pytest.raises(VersionConflict):
            sink.remove(native, first.target_ref, second.version)
        sink.remove(native, first.target_ref, found.version)
        assert list(sink.inventory(native)) == []
