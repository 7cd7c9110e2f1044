"""Reading ahead keeps order, bounds what it holds, and passes errors on."""

import threading
import time

import pytest

from migrate.prefetch import read_ahead


def test_order_is_kept_and_the_producer_runs_ahead():
    produced = []

    def items():
        for n in range(50):
            produced.append(n)
            yield n

    seen = []
    for n in read_ahead(items(), size=lambda n: 1, max_items=10):
        if n == 0:
            time.sleep(0.1)
            assert len(produced) > 5
        seen.append(n)
    assert seen == list(range(50))


def test_bytes_held_ahead_stay_under_the_bound():
    held = []
    lock = threading.Lock()

    def items():
        for n in range(40):
            with lock:
                held.append(n)
            yield n

    consumed = 0
    for _ in read_ahead(items(), size=lambda n: 10, max_items=100, max_bytes=50):
        time.sleep(0.005)
        consumed += 1
        with lock:
            # five in the queue (50 bytes), one read and waiting for room
            assert len(held) - consumed <= 6
    assert consumed == 40


def test_a_producer_error_reaches_the_consumer_after_what_came_before():
    def items():
        yield 1
        raise ConnectionError("source lost")

    ahead = read_ahead(items(), size=lambda n: 1)
    assert next(ahead) == 1
    with pytest.raises(ConnectionError):
        next(ahead)


def test_stopping_early_stops_the_producer():
    produced = []

    def items():
        for n in range(10_000):
            produced.append(n)
            yield n

    for n in read_ahead(items(), size=lambda n: 1, max_items=4):
        if n == 2:
            break
    count = len(produced)
    time.sleep(0.2)
    assert len(produced) == count < 100
