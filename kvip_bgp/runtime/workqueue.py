"""A coalescing, lock-protected queue keyed by what a message is about.

Producers ``put(key, value)``; if the key is already pending, the new value replaces the
old one (latest desired value wins) and the replacement is counted. The single consumer
takes *everything* pending in one ``drain()``. Because the consumer is level-triggered
(it compares the full desired state with what it applied), dropping intermediate values
is always safe, and a burst of 10,000 changes to one VIP costs one reconcile, not 10,000.

The lock guards only this queue's own two fields; no caller ever holds it. Values must be
immutable (frozen dataclasses, tuples, ints): ownership of what crosses the queue is
never shared.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class CoalescingQueue(Generic[K, V]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._pending: dict[K, V] = {}
        self._coalesced = 0
        self._closed = False

    def put(self, key: K, value: V) -> None:
        with self._lock:
            pending = self._pending
            if not pending:
                # Only an empty queue can have its consumer waiting: once a put made it
                # non-empty (and woke the consumer), the next puts have no one to wake.
                # ``notify`` runs in Python (~0.25 us of a ~0.4 us put, and the cluster
                # thread puts twice per new Service).
                pending[key] = value
                self._ready.notify()
                return
            if key in pending:
                self._coalesced += 1
                # Re-insert so that drain() order follows the latest write of each key.
                del pending[key]
            pending[key] = value

    def drain(self, timeout: float | None = None) -> list[tuple[K, V]]:
        """Wait up to ``timeout`` for at least one item, then take every pending item."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while not self._pending and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._ready.wait(remaining)
            items = list(self._pending.items())
            self._pending.clear()
            return items

    def close(self) -> None:
        """Wake the consumer for good (shutdown); later drains return at once."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()

    def depth(self) -> int:
        with self._lock:
            return len(self._pending)

    def coalesced(self) -> int:
        """How many puts replaced a pending value (for the queue metric)."""
        with self._lock:
            return self._coalesced
