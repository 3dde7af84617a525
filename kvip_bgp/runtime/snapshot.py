"""A box holding the latest frozen snapshot one thread publishes for others to read.

The owner replaces the whole value; readers get a reference to an immutable object. No
reader can ever see a half-updated state, and no reader can change what it sees.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(self, initial: T) -> None:
        self._lock = threading.Lock()
        self._value = initial

    def publish(self, value: T) -> None:
        with self._lock:
            self._value = value

    def read(self) -> T:
        with self._lock:
            return self._value
