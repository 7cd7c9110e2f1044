"""Find on the target, by content, the messages the ledger does not account for.

A target folder may hold messages the ledger has no record of: sends that were never
confirmed (a crash, a dropped connection), a ledger lost or restored from an older copy, or
mail the users already filed there. Before such a folder receives anything, its inventory
is taken (sizes only) and each message about to be sent is first looked for in it: same
size, then same SHA-256, each target message claimed once, so that twins in the source
match twins on the target one for one.
"""

from __future__ import annotations

import time
from collections import defaultdict

from connectors.base import (
    LINK_PAUSES,
    ConnectError,
    StoredItem,
)
from connectors.protocols import MailSink


class TargetIndex:
    """The unclaimed messages of one target folder, by size; bodies hashed on demand, each
    at most once. Holds a small record per message, never a body."""

    def __init__(self, sink: MailSink, native_name: str, claimed: set[str]) -> None:
        self._sink = sink
        self._native_name = native_name
        self._by_size: dict[int, list[StoredItem]] = defaultdict(list)
        self._hashes: dict[str, str] = {}
        self.unclaimed = 0
        for pause in (*LINK_PAUSES, None):
            try:
                stored = list(sink.inventory(native_name))
                break
            except ConnectError as error:
                if pause is None or error.code != "connection_lost":
                    raise
                time.sleep(pause)
        for item in stored:
            if item.target_ref not in claimed:
                self._by_size[item.size].append(item)
                self.unclaimed += 1

    def claim(self, fingerprint: str, size: int) -> StoredItem | None:
        """An unclaimed stored message with these bytes, now claimed; ``None`` if none."""
        candidates = self._by_size.get(size)
        if not candidates:
            return None
        unknown = [item.target_ref for item in candidates if item.target_ref not in self._hashes]
        if unknown:
            self._hashes.update(self._sink.fingerprints(self._native_name, unknown))
        for position, item in enumerate(candidates):
            if self._hashes.get(item.target_ref) == fingerprint:
                del candidates[position]
                self.unclaimed -= 1
                return item
        return None
