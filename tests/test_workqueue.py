"""The coalescing queue between the cluster-state thread and the reconciler."""

from __future__ import annotations

import threading
import time

import pytest

from kvip_bgp.runtime.workqueue import CoalescingQueue


@pytest.mark.parametrize(
    ("puts", "drained", "coalesced"),
    [
        pytest.param([], [], 0, id="nothing"),
        pytest.param([("a", 1)], [("a", 1)], 0, id="one"),
        pytest.param([("a", 1), ("b", 2)], [("a", 1), ("b", 2)], 0, id="distinct-keys"),
        pytest.param([("a", 1), ("a", 2)], [("a", 2)], 1, id="latest-wins"),
        pytest.param([("a", 1), ("a", 1)], [("a", 1)], 1, id="same-value-still-counted"),
        pytest.param(
            [("a", 1), ("b", 1), ("a", 2)], [("b", 1), ("a", 2)], 1, id="order-follows-latest"
        ),
        pytest.param(
            [("a", i) for i in range(10_000)], [("a", 9_999)], 9_999, id="burst-on-one-key"
        ),
        pytest.param(
            [("a", None), ("b", 0), ("a", "x")], [("b", 0), ("a", "x")], 1, id="falsy-values"
        ),
    ],
)
def test_coalescing(
    puts: list[tuple[str, object]], drained: list[tuple[str, object]], coalesced: int
) -> None:
    queue: CoalescingQueue[str, object] = CoalescingQueue()
    for key, value in puts:
        queue.put(key, value)
    assert queue.depth() == len(drained)
    assert queue.drain(timeout=0) == drained
    assert queue.coalesced() == coalesced
    assert queue.depth() == 0
    assert queue.drain(timeout=0) == []


def test_coalesced_count_is_cumulative_across_drains() -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    queue.put("a", 1)
    queue.put("a", 2)
    assert queue.drain(0) == [("a", 2)]
    queue.put("a", 3)  # nothing pending: not a replacement
    queue.put("a", 4)
    assert queue.drain(0) == [("a", 4)]
    assert queue.coalesced() == 2


@pytest.mark.parametrize("timeout", [0.0, 0.05, 0.2], ids=["zero", "50ms", "200ms"])
def test_drain_times_out_empty(timeout: float) -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    started = time.monotonic()
    assert queue.drain(timeout) == []
    elapsed = time.monotonic() - started
    assert timeout <= elapsed < timeout + 1.0


def test_drain_returns_at_once_when_something_is_pending() -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    queue.put("a", 1)
    started = time.monotonic()
    assert queue.drain(5.0) == [("a", 1)]
    assert time.monotonic() - started < 1.0


def _drain_in_thread(
    queue: CoalescingQueue[str, int], timeout: float | None
) -> tuple[threading.Thread, list[list[tuple[str, int]]]]:
    results: list[list[tuple[str, int]]] = []
    started = threading.Event()

    def consume() -> None:
        started.set()
        results.append(queue.drain(timeout))

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert started.wait(5)
    time.sleep(0.05)  # let it block inside drain()
    return thread, results


def test_put_wakes_a_waiting_consumer() -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    thread, results = _drain_in_thread(queue, None)
    assert thread.is_alive()
    queue.put("a", 1)
    thread.join(5)
    assert not thread.is_alive()
    assert results == [[("a", 1)]]


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "long-timeout"])
def test_close_wakes_a_waiting_consumer(timeout: float | None) -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    thread, results = _drain_in_thread(queue, timeout)
    assert thread.is_alive()
    started = time.monotonic()
    queue.close()
    thread.join(5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert results == [[]]


def test_drain_after_close_returns_at_once_with_what_is_pending() -> None:
    queue: CoalescingQueue[str, int] = CoalescingQueue()
    queue.close()
    started = time.monotonic()
    assert queue.drain(None) == []
    queue.put("a", 1)
    assert queue.drain(None) == [("a", 1)]
    assert queue.drain(None) == []
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("producers", "keys_per_producer", "puts_per_key"),
    [
        pytest.param(8, 25, 40, id="8-producers"),
        pytest.param(4, 1, 2000, id="hot-keys"),
    ],
)
def test_many_producers_one_consumer(
    producers: int, keys_per_producer: int, puts_per_key: int
) -> None:
    """Every key ends at its latest value, and no put is lost: drained + coalesced = puts."""
    queue: CoalescingQueue[tuple[int, int], int] = CoalescingQueue()
    go = threading.Event()
    latest: dict[tuple[int, int], int] = {}
    received = 0
    regressions: list[tuple[tuple[int, int], int, int]] = []
    stop = threading.Event()

    def produce(producer: int) -> None:
        go.wait()
        for round_ in range(puts_per_key):
            for key in range(keys_per_producer):
                queue.put((producer, key), round_)

    def consume() -> None:
        nonlocal received
        while True:
            items = queue.drain(timeout=0.01)
            received += len(items)
            for key, value in items:
                if value < latest.get(key, -1):
                    regressions.append((key, latest[key], value))  # went back in time
                latest[key] = value
            if stop.is_set() and not items and queue.depth() == 0:
                return

    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    consumer = threading.Thread(target=consume)
    consumer.start()
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(10)
    stop.set()
    consumer.join(10)
    assert not consumer.is_alive()

    assert regressions == []
    total = producers * keys_per_producer * puts_per_key
    assert received + queue.coalesced() == total
    assert latest == {
        (p, k): puts_per_key - 1 for p in range(producers) for k in range(keys_per_producer)
    }


def test_every_put_into_an_empty_queue_wakes_the_consumer() -> None:
    """``put`` notifies only when the queue was empty: a consumer waiting without a
    timeout is still woken each time, however the puts fall around its drains."""
    queue: CoalescingQueue[tuple[int, int], int] = CoalescingQueue()
    producers, puts = 4, 3000
    taken: list[int] = []

    def consume() -> None:
        while True:  # no timeout: a lost wake-up would hang here
            items = queue.drain(None)
            taken.extend(value for _key, value in items)
            if any(key == (-1, -1) for key, _value in items):
                return

    def produce(producer: int) -> None:
        for n in range(puts):
            queue.put((producer, n), n)
            if n % 100 == 0:
                time.sleep(0.001)  # let the consumer empty the queue and wait again

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    queue.put((-1, -1), -1)
    consumer.join(10)
    assert not consumer.is_alive()
    assert len(taken) == producers * puts + 1  # distinct keys: nothing coalesced
