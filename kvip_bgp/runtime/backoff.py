"""A retry backoff as a frozen value; the caller's clock comes in as ``now``.

Tests drive it with any number for ``now`` instead of sleeping or patching constants.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Wait ``delay`` after a failure, doubling up to ``maximum``; a success resets it."""

    initial: float = 0.5
    maximum: float = 30.0
    delay: float = 0.5
    until: float = 0.0
    """Nothing is retried before this time (on the caller's clock)."""

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failed(self, now: float) -> Backoff:
        """Wait the current delay from ``now``; the next failure waits twice as long."""
        return dataclasses.replace(
            self, until=now + self.delay, delay=min(self.maximum, self.delay * 2)
        )

    def succeeded(self) -> Backoff:
        """The next failure waits ``initial`` again (a pending wait is kept)."""
        return dataclasses.replace(self, delay=self.initial)

    def cleared(self) -> Backoff:
        """Retry at once (a fresh connection), keeping the delay reached so far."""
        return dataclasses.replace(self, until=0.0)
