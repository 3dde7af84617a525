"""The desired VIPs not bound yet, in bind order, kept from one pass to the next.

Why: a cold start binds in chunks (``BIND_CHUNK`` per pass, see ``runtime.reconciler``).
Finding what is left by scanning every desired VIP and sorting it again on every pass
cost Python-level ``ipaddress`` hashes and sort keys for all of them per chunk: about
half of the reconciler's CPU in a cold start of 10,000. The queue keeps what the last
pass left and takes in only the VIPs whose desired value changed since, which gives the
same VIPs in the same order (tests/test_bindqueue.py checks that against the scan).
Set operations between sets and dicts reuse the stored hashes, so they are used where a
loop would hash each address again.

Owned by the reconciler thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from kvip_bgp.domain.model import Advertisement, IPAddress, address_order

__all__ = ["BindQueue"]


class BindQueue:
    """What is left to bind: desired, neither bound nor failed, in address order."""

    def __init__(self) -> None:
        self._queue: list[IPAddress] = []  # address order
        self._held: set[IPAddress] = set()  # the same VIPs
        self._full = True  # the next take looks at every desired VIP

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def held(self) -> Set[IPAddress]:
        """The VIPs left for later takes (not to be announced yet). Read it before the
        next take: it changes in place."""
        return self._held

    def everything(self) -> None:
        """Something other than a take changed what is bound: look at everything next."""
        self._full = True

    def take(
        self,
        effective: Mapping[IPAddress, Advertisement],
        changed: set[IPAddress] | None,
        bound: set[IPAddress],
        failed: set[IPAddress],
        size: int,
    ) -> list[IPAddress]:
        """The first ``size`` VIPs of ``effective`` that are in neither ``bound`` nor
        ``failed``, in address order; the others stay queued.

        ``changed``: the VIPs whose desired value changed since the last take (None:
        any). Between two takes, ``bound`` and ``failed`` may grow only by the VIPs the
        last take returned, and ``bound`` lose only VIPs no longer desired; whatever
        else changes them calls ``everything`` (or passes None).
        """
        if changed is None or self._full:
            held = set(effective).difference(bound, failed)
            pending = sorted(held, key=address_order)
        else:
            held = self._held
            pending = self._queue
            absent = changed.difference(effective)
            fresh = changed.difference(absent, bound, failed, held)
            gone = held & absent
            if gone:
                held -= gone
                pending = [vip for vip in pending if vip not in gone]
            if fresh:
                held |= fresh
                pending = sorted([*pending, *fresh], key=address_order)
        chunk, self._queue = pending[:size], pending[size:]
        if self._queue:
            held.difference_update(chunk)
        else:
            held.clear()  # all taken (a burst's pass, a cold start's last): no hash each
        self._held = held
        self._full = False
        return chunk
