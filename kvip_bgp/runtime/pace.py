"""How long a thread that takes a stream in batches lets the next batch gather.

The cluster thread and the reconciler take what waits in one batch, and a batch pays a
fixed part whatever its size: the wake-up, caches the other threads have emptied, a
netlink send, a write to ExaBGP, a log line, the status. In a burst of creates, 24
routes a batch at a 20 ms gap, that fixed part was more than half of the reconciler's
time (a pass of ~28 routes cost ~730 µs of its CPU, one of ~59 ~1,010 µs: ~480 µs and
~9 µs a route; 10,000 Services, this machine). Gathering longer costs every change in
the batch that much latency, and the churn a node lives with (a pod moving, a Local
Service's only endpoint going) is a few route changes a batch that must keep the short
gap.

So the gap depends on how fast routes changed: a batch that changed at least
``bulk_rate`` routes per second since the batch before it is bulk (a burst of creates,
a reload, a node drained), and the next batch gathers for ``bulk_gap``; any other for
``gap``. The rate is measured per batch, so a burst that ends, or a stream that slows,
takes the short gap again at the next batch; there is no state beyond the last batch.
"""

from __future__ import annotations

import math
from typing import Final

BULK_RATE: Final = 800.0  # route changes per second: 16 in a 20 ms batch
BULK_GAP: Final = 0.06  # seconds: a batch of bulk changes lets the next gather this long


class Pace:
    """The gap before a thread's next batch. Owned by that one thread."""

    def __init__(
        self, gap: float, bulk_gap: float | None = None, bulk_rate: float = BULK_RATE
    ) -> None:
        """``bulk_gap``: None for ``BULK_GAP``, or ``gap`` where that is longer."""
        self.gap = gap
        self.bulk_gap = max(gap, BULK_GAP) if bulk_gap is None else bulk_gap
        self.bulk_rate = bulk_rate
        self._at = -math.inf  # when the last batch that took messages was marked
        self._next = gap

    def wait(self, now: float) -> float:
        """Seconds to sleep at ``now`` before taking the next batch (0: take it now)."""
        return max(0.0, self._at + self._next - now)

    def took(self, now: float, changes: int) -> None:
        """A batch that took messages was done at ``now`` and changed ``changes`` routes."""
        since = now - self._at
        self._at = now
        bulk = changes > 0 and changes >= self.bulk_rate * since
        self._next = self.bulk_gap if bulk else self.gap

    @property
    def bulk(self) -> bool:
        """Whether the next batch gathers for ``bulk_gap``: the last one was bulk."""
        return self._next == self.bulk_gap and self._next != self.gap
