"""The local folder read back as a source: what its sink wrote comes out with the same bytes,
a file changed in place gets a new version, and links, hidden and half-written files are
never read (a link is a note)."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path

from connectors.base import Document, fingerprint_bytes
from connectors.local.documents import FolderSink, FolderSource


def document(name: str, body: bytes, folder: tuple[str, ...] = ()) -> Document:
    return Document(f"src-{name}", "v1", name, folder, fingerprint_bytes(body), len(body),
                    datetime(2024, 7, 14, 9, 30, tzinfo=UTC), lambda: io.BytesIO(body))


def test_what_the_folder_sink_wrote_reads_back_the_same(tmp_path: Path):
    sink = FolderSink(tmp_path / "calendar")
    sent = {("Calendrier",): [document("a.ics", b"BEGIN:VCALENDAR\r\nA\r\n")],
            ("Contacts", "Élus"): [document("b.ics", b"BEGIN:VCALENDAR\r\nB\r\n")]}
    for path, documents in sent.items():
        native = sink.ensure_container(path)
        for item in documents:
            sink.put(native, item)

    source = FolderSource(tmp_path / "calendar", "calendar")
    containers = source.document_containers("calendar")
    assert [c.path for c in containers] == [("Calendrier",), ("Contacts", "Élus")]
    for container in containers:
        listing = source.list_documents(container, None)
        [read] = source.fetch_documents(container, listing.refs)
        [given] = sent[container.path]
        assert (read.name, read.fingerprint, read.size) == (given.name, given.fingerprint,
                                                            given.size)
        assert read.modified == given.modified
        with read.open() as body:
            assert fingerprint_bytes(body.read()) == given.fingerprint


def test_a_file_changed_in_place_gets_a_new_version(tmp_path: Path):
    place = tmp_path / "files" / "OneDrive" / "Délibérations"
    place.mkdir(parents=True)
    (place / "PV.txt").write_bytes(b"version 1")
    source = FolderSource(tmp_path / "files", "files")
    [drive] = source.document_containers("files")
    [before] = source.list_documents(drive, None).refs
    assert (before.source_id, before.folder) == ("Délibérations/PV.txt", ("Délibérations",))
    (place / "PV.txt").write_bytes(b"version 2, longer")
    [after] = source.list_documents(drive, None).refs
    assert after.source_id == before.source_id and after.version != before.version


def test_links_hidden_and_half_written_files_are_never_read(tmp_path: Path):
    outside = tmp_path / "secret.ics"
    outside.write_bytes(b"someone else's")
    place = tmp_path / "calendar" / "Calendrier"
    place.mkdir(parents=True)
    (place / "kept.ics").write_bytes(b"BEGIN:VCALENDAR\r\n")
    (place / ".hidden.ics").write_bytes(b"hidden")
    (place / ".abc.bascule-part").write_bytes(b"half")
    os.symlink(outside, place / "link.ics")
    os.symlink(tmp_path, tmp_path / "calendar" / "Boucle")
    source = FolderSource(tmp_path / "calendar", "calendar")
    [container] = source.document_containers("calendar")
    refs = source.list_documents(container, None).refs
    assert [ref.source_id for ref in refs] == ["kept.ics"]
    notes = sorted((note.code, note.subject) for note in source.drain_notes())
    assert notes == [("symlink_skipped", "Boucle"), ("symlink_skipped", "Calendrier/link.ics")]


def test_a_file_deleted_between_listing_and_reading_is_said_and_the_others_read(
        tmp_path: Path):
    drive = tmp_path / "files" / "Partage"
    drive.mkdir(parents=True)
    for name in ("a.txt", "b.txt", "c.txt"):
        (drive / name).write_bytes(name.encode())
    source = FolderSource(tmp_path / "files", "files")
    [container] = source.document_containers("files")
    listing = source.list_documents(container, None)
    (drive / "b.txt").unlink()
    read = [document.name for document in source.fetch_documents(container, listing.refs)]
    assert read == ["a.txt", "c.txt"]
    assert [(note.code, note.subject) for note in source.drain_notes()] == [
        ("gone_before_read", "b.txt")]
