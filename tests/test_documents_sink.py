"""The local folder sink for calendars, contacts and files."""

from __future__ import annotations

import hashlib
import io
import os
from datetime import UTC, datetime

import pytest

from connectors.base import (
    ANY_VERSION,
    ContainerRefused,
    Document,
    VersionConflict,
    fingerprint_bytes,
)
from connectors.local.documents import FolderSink
from mappings.names import POSIX, RENAMED_RESERVED
from tests.modes import modes, not_private, umask


def document(name: str, body: bytes, folder: tuple[str, ...] = (), sid: str = "1") -> Document:
    return Document(sid, "v1", name, folder, fingerprint_bytes(body), len(body),
                    datetime(2024, 7, 14, 10, 0, tzinfo=UTC), lambda: io.BytesIO(body))


def test_bytes_and_mtime_land_and_a_rewrite_of_that_version_replaces_the_same_file(tmp_path):
    sink = FolderSink(tmp_path)
    native = sink.ensure_container(("OneDrive",))
    first = sink.put(native, document("PV n°3.pdf", b"%PDF-1", ("Délibérations", "2024")))
    assert (first.target_ref, first.renamed) == ("OneDrive/Délibérations/2024/PV n°3.pdf", None)
    path = tmp_path / first.target_ref
    assert path.read_bytes() == b"%PDF-1"
    assert path.stat().st_mtime == datetime(2024, 7, 14, 10, 0, tzinfo=UTC).timestamp()
    second = sink.put(native, document("PV n°3.pdf", b"%PDF-2", ("Délibérations", "2024")),
                      first.version)
    assert [s.target_ref for s in sink.inventory(native)] == [first.target_ref]
    assert path.read_bytes() == b"%PDF-2"
    assert second.version != first.version


def test_writes_are_conditional_on_what_the_target_holds(tmp_path):
    sink = FolderSink(tmp_path)
    native = sink.ensure_container(("Agenda",))
    first = sink.put(native, document("a.ics", b"BEGIN:1"))
    with pytest.raises(VersionConflict) as taken:
        sink.put(native, document("a.ics", b"BEGIN:2"))  # create only: the name is taken
    assert taken.value.current is not None and taken.value.current.version == first.version
    (tmp_path / first.target_ref).write_bytes(b"edited by its owner")
    with pytest.raises(VersionConflict):
        sink.put(native, document("a.ics", b"BEGIN:2"), first.version)
    assert (tmp_path / first.target_ref).read_bytes() == b"edited by its owner"
    found = sink.find(native, document("a.ics", b"BEGIN:2"))
    assert found is not None and found.fingerprint == fingerprint_bytes(b"edited by its owner")
    with pytest.raises(VersionConflict):
        sink.remove(native, first.target_ref, first.version)
    sink.put(native, document("a.ics", b"BEGIN:3"), ANY_VERSION)
    assert (tmp_path / first.target_ref).read_bytes() == b"BEGIN:3"
    assert [p.name for p in (tmp_path / "Agenda").iterdir()] == ["a.ics"]  # no temporary left


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "x\0y", "é" * 200 + ".docx"])
def test_names_a_folder_cannot_hold_are_renamed_and_stay_inside(tmp_path, name):
    sink = FolderSink(tmp_path / "root")
    native = sink.ensure_container(("Fichiers",))
    stored = sink.put(native, document(name, b"x", ("..", "sous")))
    ref = stored.target_ref
    assert stored.renamed == RENAMED_RESERVED  # the first change on the way: ".."
    stored = (tmp_path / "root" / ref).resolve()
    assert (tmp_path / "root").resolve() in stored.parents
    assert stored.read_bytes() == b"x"
    assert len(stored.name.encode()) <= 255


def test_long_names_keep_their_extension_and_stay_distinct():
    first, _ = POSIX.rename("a" * 300 + ".pdf")
    second, _ = POSIX.rename("a" * 299 + "b.pdf")
    assert first.endswith(".pdf") and second.endswith(".pdf") and first != second


def test_a_document_whose_bytes_do_not_match_its_fingerprint_is_refused(tmp_path):
    sink = FolderSink(tmp_path)
    native = sink.ensure_container(("Contacts",))
    bad = document("a.vcf", b"BEGIN:VCARD")
    bad = Document(bad.source_id, bad.version, bad.name, bad.folder, "sha256:00", bad.size,
                   None, bad.open)
    with pytest.raises(Exception) as refused:
        sink.put(native, bad)
    assert getattr(refused.value, "code", "") == "invalid_message"
    assert os.listdir(tmp_path / "Contacts") == []


def test_remove_stays_inside_the_root(tmp_path):
    sink = FolderSink(tmp_path / "root")
    with pytest.raises(ContainerRefused):
        sink.remove("", "../outside.txt")


@pytest.mark.parametrize("mask", [0o000, 0o277], ids=["open", "owner-bits-too"])
def test_folders_and_files_are_private_whatever_the_umask(tmp_path, mask):
    root = tmp_path / "documents" / "alice" / "files"
    with umask(mask):
        sink = FolderSink(root)
        native = sink.ensure_container(("OneDrive",))
        first = sink.put(native, document("PV.pdf", b"%PDF-1", ("Délibérations", "2024")))
        ref = first.target_ref
        # A temporary file a crash left, readable by all: the next write makes its own.
        short = hashlib.sha256(b"PV.pdf").hexdigest()[:16]
        leftover = tmp_path / "documents" / "alice" / "files" / "OneDrive" / "Délibérations" \
            / "2024" / f".{short}.bascule-part"
        leftover.write_bytes(b"old")
        leftover.chmod(0o644)
        sink.put(native, document("PV.pdf", b"%PDF-2", ("Délibérations", "2024")), first.version)

    assert (root / ref).read_bytes() == b"%PDF-2"
    assert not_private(tmp_path / "documents") == {}
    assert set(modes(tmp_path / "documents")) == {
        ".", "alice", "alice/files", "alice/files/OneDrive", "alice/files/OneDrive/Délibérations",
        "alice/files/OneDrive/Délibérations/2024", f"alice/files/{ref}"}


def test_a_container_name_the_folder_cannot_hold_is_renamed_and_said_once(tmp_path):
    sink = FolderSink(tmp_path / "root")
    native = sink.ensure_container(("Projets/2024", "..", "Été"))
    assert native == "Projets_2024/_../Été"
    assert (tmp_path / "root" / "Projets_2024" / "_.." / "Été").is_dir()
    notes = sink.drain_notes()
    assert [(n.code, n.subject, n.detail) for n in notes] == [
        ("renamed_container", "Projets_2024/_../Été", "Projets/2024"),
        ("renamed_container", "Projets_2024/_../Été", ".."),
    ]
    assert sink.drain_notes() == []
    sink.ensure_container(("Agenda",))
    assert sink.drain_notes() == []
