"""The shared corpus holds the awkward cases the other tests rely on, the same every time."""

from __future__ import annotations

from email.parser import BytesParser
from itertools import islice

from tests.corpus import build_corpus, build_mailbox


def _all_messages(folders):
    return [message for folder in folders for message in folder.messages]


def test_corpus_is_deterministic_and_small():
    first, again = build_corpus(seed=3), build_corpus(seed=3)

    assert [m.raw for m in _all_messages(first)] == [m.raw for m in _all_messages(again)]
    assert [m.raw for m in _all_messages(build_corpus(seed=4))] != [
        m.raw for m in _all_messages(first)
    ]
    assert sum(len(m.raw) for m in _all_messages(first)) < 5 << 20


def test_corpus_holds_the_awkward_cases():
    folders = build_corpus()
    messages = _all_messages(folders)
    inbox = folders[0].messages
    ids = [BytesParser().parsebytes(m.raw, headersonly=True)["Message-ID"] for m in inbox]
    raws = [m.raw for m in inbox]

    assert folders[0].path == ("INBOX",) and folders[0].role == "inbox"
    assert {f.role for f in folders} >= {"inbox", "sent", "drafts", "trash"}
    assert {("R&D",), ("Projets", "Été 2024"), ("Archives", "2019"), ("Calendrier",),
            ("Contacts",), ("Sync Issues",), ("Conversation History",)} <= {
        f.path for f in folders
    }
    assert None in ids
    assert any(
        len({raw for raw, other in zip(raws, ids, strict=True) if other == message_id}) == 2
        for message_id in set(ids) - {None}
    )
    assert any(raws.count(raw) == 2 for raw in raws)
    assert any(b"\r\n" not in raw and b"\n" in raw for raw in raws)
    assert any(max(len(line) for line in raw.split(b"\n")) > 10_000 for raw in raws)
    assert any(b"charset=iso-8859-1" in raw and "é".encode("latin-1") in raw for raw in raws)
    assert any(b"multipart/alternative" in raw for raw in raws)
    flags = set().union(*(m.flags for m in messages))
    assert {"\\Seen", "\\Flagged", "\\Answered", "\\Draft", "$label1", "Projet"} <= flags
    assert len({m.internal_date.utcoffset() for m in messages}) >= 3


def test_large_message_follows_the_size_asked():
    folders = build_corpus(large_size=8 << 20)
    biggest = max(len(m.raw) for m in _all_messages(folders))

    assert 7 << 20 < biggest < 9 << 20


def test_mailbox_is_lazy_deterministic_and_mostly_small():
    sizes = [len(m.raw) for m in build_mailbox(300, seed=5)]

    assert [m.raw for m in islice(build_mailbox(10**9, seed=5), 20)] == [
        m.raw for m in islice(build_mailbox(300, seed=5), 20)
    ]
    assert sum(size < 50_000 for size in sizes) > 0.9 * len(sizes)
    assert any(size > 2 << 20 for size in sizes)
