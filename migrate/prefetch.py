"""Read ahead from a source in a thread, so fetching and sending overlap on a WAN."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def read_ahead(items: Iterable[T], *, size: Callable[[T], int], max_items: int = 256,
               max_bytes: int = 16 << 20) -> Iterator[T]:
    """Yield ``items`` in order while a thread already reads the next ones, holding at most
    ``max_items`` of them and about ``max_bytes`` (by ``size``) ahead of the consumer.

    An exception in the producer is raised in the consumer; when the consumer stops early,
    the producer stops at its next item.
    """
    slots = queue.Queue[object](maxsize=max_items)
    budget = threading.Condition()
    held = [0]
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                weight = size(item)
                with budget:
                    budget.wait_for(lambda weight=weight: held[0] == 0 or stop.is_set()
                                    or held[0] + weight <= max_bytes)
                    held[0] += weight
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed over to the consumer
            slots.put(error)

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            with budget:
                held[0] -= size(item)  # type: ignore[arg-type]
                budget.notify_all()
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        with budget:
            budget.notify_all()
        thread.join(timeout=30)
