"""The resync's safety net: what was withdrawn since the last resync is withdrawn once
more, a few VIPs a pass.

Why once more: ExaBGP 5.0.15 could send two queued changes of one prefix out of order
and leave a withdrawn route at the peer. ``bgp/exabgp.py`` fixes that, but runs ExaBGP
unpatched when its outgoing RIB is not the one the fix knows, and a second withdrawal
of a prefix that is gone changes nothing at the peer.

Why a few a pass: under churn that is every flipped VIP of the last 30 s, ~1,000 at
2,000 EndpointSlice writes/s with 10,000 Services. Sent in one pass, ExaBGP took
~200 ms to put them on the wire, and the flips written meanwhile waited behind them:
most of the slowest 1% of the flips, at every resync (a relay trace and the wire
capture of the churn row, docs/performance.md). ``CHUNK`` a pass goes after the pass's
own changes; the reconciler comes back for the next ``GAP`` later even when nothing
else happens (``wake_at``). Flip p99 at 2,000/s: 74.7 -> 58.2 ms (2 runs each).

Owned by the announcer, hence by the reconciler thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Final

from kvip_bgp.domain.model import Advertisement, IPAddress, address_order

__all__ = ["CHUNK", "GAP", "Rewithdrawals"]

CHUNK: Final = 50  # VIPs withdrawn once more per pass (ExaBGP puts 50 in an UPDATE)
GAP: Final = 0.02  # seconds from a pass that sent some to the next that may


class Rewithdrawals:
    """Withdrawn since the last resync, and those left to withdraw once more."""

    def __init__(self) -> None:
        self._recent: set[IPAddress] = set()
        self._queue: list[IPAddress] = []  # the next chunk at the end
        self._due = 0.0

    def withdrawn(self, vips: Iterable[IPAddress]) -> None:
        """``vips`` were withdrawn by a pass (not by this safety net)."""
        self._recent.update(vips)

    def resync(self, applied: Mapping[IPAddress, Advertisement]) -> None:
        """Queue what was withdrawn since the last resync and is not announced now."""
        again = set(self._queue).union(self._recent).difference(applied)
        self._queue = sorted(again, key=address_order, reverse=True)
        self._recent = set()
        self._due = 0.0

    def take(self, desired: Set[IPAddress], applied: Set[IPAddress], now: float) -> set[IPAddress]:
        """Up to ``CHUNK`` VIPs to withdraw once more in this pass. One desired or
        announced again meanwhile is dropped from the queue: its route is the pass's."""
        if not self._queue or now < self._due:
            return set()
        chunk: set[IPAddress] = set()
        while self._queue and len(chunk) < CHUNK:
            vip = self._queue.pop()
            if vip not in desired and vip not in applied:
                chunk.add(vip)
        self._due = now + GAP
        return chunk

    def wake_at(self) -> float | None:
        """When the next chunk is due, while some are left."""
        return self._due if self._queue else None

    def __len__(self) -> int:
        return len(self._queue)
