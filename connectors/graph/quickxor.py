"""QuickXorHash, the content hash OneDrive for Business and SharePoint give for every file.

Graph returns it as ``file.hashes.quickXorHash``: base64 of 20 bytes. The algorithm, as
Microsoft's "QuickXorHash" code snippet describes it: a 160-bit state; byte ``i`` of the
input is XORed into it at bit ``11 * i``, rotated left circularly within the 160 bits; the
digest is the state as 20 little-endian bytes, with the input length (a 64-bit little-endian
integer) XORed into its last 8 bytes.

Because 11 and 160 are coprime, byte ``i`` lands where byte ``i + 160`` does: every byte of a
chunk can first be XOR-folded onto 160 positions with big-integer arithmetic (a handful of
whole-chunk operations in C), and only those 160 bytes are rotated into the state one by one.
That keeps a pure-Python hash at hundreds of MB/s instead of a few.
"""

from __future__ import annotations

import base64

WIDTH_BITS = 160
DIGEST_SIZE = WIDTH_BITS // 8
SHIFT = 11
FOLD = WIDTH_BITS
"""Bytes ``i`` and ``i + FOLD`` land on the same bits of the state."""
SLICE = 1 << 18
"""Largest piece turned into one integer at a time: bounds the extra memory an update of a
very large buffer needs, and is large enough that per-slice overhead does not show."""

_STATE_MASK = (1 << WIDTH_BITS) - 1
_BIT_OF_POSITION = tuple(SHIFT * position % WIDTH_BITS for position in range(FOLD))
"""Where, in the state, the byte at ``position`` (modulo ``FOLD``) of the input lands."""


def _rotate_in(value: int, bit: int) -> int:
    """An 8-bit ``value`` rotated left by ``bit`` within the 160-bit state."""
    shifted = value << bit
    if bit > WIDTH_BITS - 8:
        return (shifted & _STATE_MASK) | (shifted >> WIDTH_BITS)
    return shifted


def _fold(data: bytes | memoryview) -> bytes:
    """The XOR of every ``FOLD``-byte block of ``data`` (the last one zero-padded)."""
    blocks = -(-len(data) // FOLD)
    folded = int.from_bytes(data, "little")
    while blocks > 1:
        kept = -(-blocks // 2)
        kept_bits = kept * FOLD * 8
        folded = (folded & ((1 << kept_bits) - 1)) ^ (folded >> kept_bits)
        blocks = kept
    return folded.to_bytes(FOLD, "little")


class QuickXorHash:
    """An incremental QuickXorHash: ``update()`` any number of times, then ``digest()``."""

    name = "quickxorhash"
    digest_size = DIGEST_SIZE

    def __init__(self, data: bytes = b"") -> None:
        self._state = 0
        self._length = 0
        if data:
            self.update(data)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), SLICE):
            self._update_slice(view[start : start + SLICE])

    def _update_slice(self, piece: memoryview) -> None:
        offset = self._length % FOLD
        state = self._state
        folded = _fold(piece)[: min(len(piece), FOLD)]
        for index, value in enumerate(folded):
            if value:
                state ^= _rotate_in(value, _BIT_OF_POSITION[(offset + index) % FOLD])
        self._state = state
        self._length += len(piece)

    def digest(self) -> bytes:
        """The 20 bytes Graph's ``quickXorHash`` holds once base64-decoded."""
        length = (self._length & 0xFFFF_FFFF_FFFF_FFFF) << (WIDTH_BITS - 64)
        return (self._state ^ length).to_bytes(DIGEST_SIZE, "little")

    def b64digest(self) -> str:
        """The digest as Graph writes it in ``file.hashes.quickXorHash``."""
        return base64.b64encode(self.digest()).decode("ascii")

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> QuickXorHash:
        twin = QuickXorHash()
        twin._state = self._state
        twin._length = self._length
        return twin
