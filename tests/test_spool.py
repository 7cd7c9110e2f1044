"""The spool a body passes through: kept whole in memory when it comes in one piece, on a
spooled file otherwise, hashed either way and readable again from the start."""

from __future__ import annotations

import hashlib

from connectors.spool import Spool


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_body_in_one_chunk_stays_that_chunk_and_reads_again_from_the_start():
    body = b"Subject: r\xc3\xa9union\r\n\r\nbonjour\r\n"
    spool = Spool.from_chunks([body], memory_limit=len(body))
    assert spool._file is None
    assert (spool.size, spool.fingerprint) == (len(body), sha256(body))
    first = spool.open()
    assert first.read(9) == body[:9]
    assert spool.open().read() == body
    spool.close()


def test_a_body_in_several_chunks_or_over_the_limit_goes_to_the_file_whole():
    chunks = [b"a" * 10, b"", b"b" * 7, b"c"]
    spool = Spool.from_chunks(chunks, memory_limit=64)
    assert spool._file is not None
    assert spool.open().read() == b"".join(chunks)
    assert spool.fingerprint == sha256(b"".join(chunks))

    big = b"x" * 100
    over = Spool.from_chunks([big], memory_limit=64)
    assert over._file is not None
    with over.open() as reader:
        assert reader.read(40) + reader.read() == big
    reader.close()
    assert over.open().read() == big, "closing a reader left the spool readable"
    over.close()


def test_an_empty_body_is_an_empty_spool_with_the_hash_of_nothing():
    spool = Spool.from_chunks([])
    assert (spool.size, spool.open().read(), spool.fingerprint) == (0, b"", sha256(b""))
    spool = Spool.from_chunks([b"", b"tail"], memory_limit=64)
    assert (spool.size, spool.open().read()) == (4, b"tail")
