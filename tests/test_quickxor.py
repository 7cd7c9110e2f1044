"""QuickXorHash: published vectors, and agreement with a bit-by-bit reference."""

from __future__ import annotations

import base64
import random

import pytest

from connectors.graph import quickxor
from connectors.graph.quickxor import SLICE, QuickXorHash

# Published with rclone's implementation (backend/onedrive/quickxorhash), input and digest
# both base64; "hello world" is the example of the PyPI quickxorhash and Rust crates.
VECTORS = [
    ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    ("Sg==", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
    ("tbQ=", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
    ("0pZP", "0rDEEwAAAAAAAAAAAwAAAAAAAAA="),
    ("/aNzzCFPS/A=", "/RjFHJgRgicsAR4ACAAAAAAAAAA="),
    ("XoJ1AsoR4fDYJrDqYs4=", "XhBEHQSgjAiEAx7YPgEs1CEGZwA="),
    ("2fuxhBJXtpWFe8dOfdGeHw==", "O9tHLAghgSvYohKFyMMxnNCHaHg="),
    ("T6LYJIfDh81JrAK309H2JMJTXis=", "zBTHrspn3mEcohlJdIUAbjGNaNg="),
    ("NbYXsp5/K6mR+NmHwExjvWeWDJFnXTKWVlzYHoesp2E=", "wjuAuWDiq04qDt1R8hHWDDcwVoQ="),
    (
        ("Mb7EGva2rEE5fENDL85P+BsapHEEjv2/siVhKjvAQe02feExVOQSkfmuYzU/kTF1MaKjPmKF/w+c"
        "bvwfdWL8aQ=="),
        "n1anP5NfvD4XDYWIeRPW3ZkPv1Y=",
    ),
    (
        ("PfxMcUd0vIW6VbHG/uj/Y0W6qEoKmyBD0nYebEKazKaKG+UaDqBEcmQjbfQeVnVLuodMoPp7P7TR"
        "1htX5n2VnkHh22xDyoJ8C/ZQKiSNqQfXvh83judf4RVr9exJCud8Uvgip6aVZTaPrJHVjQhMCp/d"
        "EnGvqg0oN5OVkM2qqAXvA0teKUDhgNM71sDBVBCGXxNOR2bpbD1iM4dnuT0ey4L+loXEHTL0fqMe"
        "UcEi2asgImnlNakwenDzz0x57aBwyq3AspCFGB1ncX4yYCr/OaCcS5OKi/00WH+wNQU3"),
        "QX/YEpG0gDsmhEpCdWhsxDzsfVE=",
    ),
    (base64.b64encode(b"hello world").decode(), "aCgDG9jwBhDc4Q1yawMZAAAAAAA="),
]


def reference(data: bytes) -> bytes:
    """Straight from Microsoft's description: one byte at a time, rotated 11 bits further
    each time within a 160-bit block, then the length XORed into the last 8 bytes."""
    block = [0] * 160  # bit i of the block, least significant first
    for index, byte in enumerate(data):
        for bit in range(8):
            if byte >> bit & 1:
                block[(index * 11 + bit) % 160] ^= 1
    out = bytearray(20)
    for position, bit in enumerate(block):
        out[position // 8] |= bit << (position % 8)
    for i, length_byte in enumerate(len(data).to_bytes(8, "little")):
        out[12 + i] ^= length_byte
    return bytes(out)


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_published_vectors(data: str, expected: str) -> None:
    raw = base64.b64decode(data)
    assert QuickXorHash(raw).b64digest() == expected
    assert reference(raw) == base64.b64decode(expected)


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 159, 160, 161, 1000])
def test_vectors_fed_in_chunks(chunk: int) -> None:
    for data, expected in VECTORS:
        raw = base64.b64decode(data)
        hasher = QuickXorHash()
        for start in range(0, len(raw), chunk):
            hasher.update(raw[start : start + chunk])
        assert hasher.b64digest() == expected


def test_random_inputs_match_the_reference() -> None:
    rng = random.Random(20240611)
    sizes = [0, 1, 2, 19, 20, 21, 159, 160, 161, 319, 320, 321, 1000, 4096, 10_007]
    for size in sizes:
        data = rng.randbytes(size)
        expected = reference(data)
        assert QuickXorHash(data).digest() == expected, size
        for _ in range(4):
            hasher = QuickXorHash()
            cursor = 0
            while cursor < size:
                step = rng.choice([1, 3, 11, 160, 161, rng.randint(1, size)])
                hasher.update(memoryview(data)[cursor : cursor + step])
                cursor += step
            assert hasher.digest() == expected, size


def test_input_larger_than_one_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    data = rng.randbytes(5 * 1013 + 77)
    monkeypatch.setattr(quickxor, "SLICE", 1013)
    assert QuickXorHash(data).digest() == reference(data)


def test_large_input_whole_or_in_pieces() -> None:
    data = random.Random(11).randbytes(SLICE * 2 + 333)
    pieces = QuickXorHash()
    for start in range(0, len(data), 65_537):
        pieces.update(data[start : start + 65_537])
    assert QuickXorHash(data).digest() == pieces.digest()


def test_copy_is_independent() -> None:
    hasher = QuickXorHash(b"Rapport annuel ")
    twin = hasher.copy()
    twin.update(b"2024.pdf")
    hasher.update(b"2024.pdf")
    assert twin.digest() == hasher.digest() == QuickXorHash(b"Rapport annuel 2024.pdf").digest()
    twin.update(b"!")
    assert twin.digest() != hasher.digest()
