"""Read ahead from a source in a thread, so fetching and sending overlap on a WAN."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class _Ahead(Generic[T]):
    """What the reading thread and the consumer share, under one lock. The consumer takes
    every item read so far at once, and each side wakes the other only when it waits: a
    burst of items read from one answer costs one hand-over, not one per item."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.read: deque[tuple[T, int]] = deque()
        self.held_items = 0
        self.held_bytes = 0
        """Read and not yet yielded: in ``read`` or taken by the consumer."""
        self.max_items, self.max_bytes = max_items, max_bytes
        self.end: object | None = None
        """``_DONE`` or the producer's exception, once it has no more."""
        self.stopped = False
        self.producer_waits = self.consumer_waits = False

    def has_room(self, weight: int) -> bool:
        return self.held_items == 0 or (self.held_items < self.max_items
                                        and self.held_bytes + weight <= self.max_bytes)

    def roomy(self) -> bool:
        """Room enough to wake the producer for: empty, or half empty by count and bytes
        (it then reads a burst, rather than one item per item consumed)."""
        return self.held_items == 0 or (self.held_items <= self.max_items // 2
                                        and self.held_bytes <= self.max_bytes // 2)


_DONE = object()


def read_ahead(items: Iterable[T], *, size: Callable[[T], int], max_items: int = 256,
               max_bytes: int = 16 << 20) -> Iterator[T]:
    """Yield ``items`` in order while a thread already reads the next ones, holding at most
    ``max_items`` of them and about ``max_bytes`` (by ``size``) read and not yet yielded.

    An exception in the producer is raised in the consumer after the items read before it;
    when the consumer stops early, the producer stops at its next item.
    """
    ahead: _Ahead[T] = _Ahead(max_items, max_bytes)

    def produce() -> None:
        end: object = _DONE
        try:
            for item in items:
                weight = size(item)
                with ahead.lock:
                    while not ahead.stopped and not ahead.has_room(weight):
                        ahead.producer_waits = True
                        ahead.changed.wait()
                        ahead.producer_waits = False
                    if ahead.stopped:
                        return
                    ahead.read.append((item, weight))
                    ahead.held_items += 1
                    ahead.held_bytes += weight
                    if ahead.consumer_waits:
                        ahead.changed.notify()
        except BaseException as error:  # noqa: BLE001 - handed over to the consumer
            end = error
        with ahead.lock:
            ahead.end = end
            if ahead.consumer_waits:
                ahead.changed.notify()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    taken: deque[tuple[T, int]] = deque()
    try:
        while True:
            if not taken:
                with ahead.lock:
                    while not ahead.read and ahead.end is None:
                        ahead.consumer_waits = True
                        ahead.changed.wait()
                        ahead.consumer_waits = False
                    taken, ahead.read = ahead.read, taken
                    if not taken:
                        if isinstance(ahead.end, BaseException):
                            raise ahead.end
                        return
            item, weight = taken.popleft()
            with ahead.lock:
                ahead.held_items -= 1
                ahead.held_bytes -= weight
                if ahead.producer_waits and ahead.roomy():
                    ahead.changed.notify()
            yield item
    finally:
        with ahead.lock:
            ahead.stopped = True
            ahead.changed.notify_all()
        thread.join(timeout=30)
