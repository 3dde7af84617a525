"""The reconciler's desired routes per source and their merge, kept up to date per VIP.

Why: merging every source's routes again on every pass costs O(VIPs) while a pass under
churn usually carries a handful of changed VIPs. ``DesiredRoutes`` re-merges only the
VIPs a message touched and remembers them (``take_changed``) so the rest of the pass can
look at those alone; ``rebuild`` recomputes everything, for the periodic resync and
for a source that goes away. Owned by the reconciler thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.policy import merge_sources

__all__ = ["DesiredRoutes"]


class DesiredRoutes:
    def __init__(self) -> None:
        self._per_source: dict[str, dict[IPAddress, Advertisement]] = {}
        self._effective: dict[IPAddress, Advertisement] = {}
        self._changed: set[IPAddress] = set()

    @property
    def effective(self) -> Mapping[IPAddress, Advertisement]:
        """What every source desires, merged per VIP (``merge_sources`` of all of them)."""
        return self._effective

    def sources(self) -> Iterable[str]:
        return self._per_source.keys()

    def put(self, source: str, vip: IPAddress, advert: Advertisement | None) -> None:
        """``source`` wants ``advert`` for ``vip`` (None: nothing)."""
        table = self._per_source.setdefault(source, {})
        if advert is None:
            if table.pop(vip, None) is None:
                return
        elif table.get(vip) == advert:
            return
        else:
            table[vip] = advert
        self._remerge(vip)

    def put_many(
        self, source: str, claims: Sequence[tuple[IPAddress, Advertisement | None]]
    ) -> None:
        """``put`` of each of ``claims`` in turn, with the same result (the tables, their
        order, what ``take_changed`` returns).

        Why: a burst brings ~60 new VIPs a pass and a cold start chunks of 1,000, nearly
        always from one source. One by one, a ``put`` hashed its ``ipaddress`` five times
        (a Python ``__hash__`` each) and merged a single claim: 1.4 us a VIP. When no
        other source claims anything, the source's table is the merge, so the VIPs new to
        it go into the tables by ``dict.update``, which reuses the hashes ``dict(claims)``
        computed once. The reconciler's CPU from the messages to the tables, per VIP
        (bench/reconciler_micro.py, 10,000 VIPs, acks included): a burst in batches of
        60 2.63 -> 0.99 us, a cold start 2.03 -> 0.50. Anything else, a VIP already
        claimed or the same VIP twice, takes ``put``.
        """
        if not claims:
            return
        batch = dict(claims)
        others = any(table for name, table in self._per_source.items() if name != source)
        if others or len(batch) != len(claims):
            for vip, advert in claims:
                self.put(source, vip, advert)
            return
        table = self._per_source.setdefault(source, {})
        new = set(batch).difference(table)  # set ops on a dict: the stored hashes
        if len(new) < len(batch):
            for vip in set(batch).difference(new):
                self.put(source, vip, batch.pop(vip))  # claimed already: compared by put
        unwanted = [vip for vip, advert in batch.items() if advert is None]
        for vip in unwanted:
            del batch[vip]  # neither claimed nor wanted: nothing changes (as in put)
        # Only ``source`` claims anything: its claims are the merged values.
        added = cast("dict[IPAddress, Advertisement]", batch)  # no None left
        table.update(added)
        self._effective.update(added)
        self._changed.update(added)

    def drop_source(self, source: str) -> None:
        """Forget everything ``source`` wanted (a reload removed it)."""
        table = self._per_source.pop(source, None)
        for vip in table or ():
            self._remerge(vip)

    def rebuild(self) -> set[IPAddress]:
        """Merge everything again; return the VIPs whose merged value differed."""
        fresh = merge_sources(self._per_source)
        old = self._effective
        differ = {v for v in fresh.keys() | old.keys() if fresh.get(v) != old.get(v)}
        self._effective = fresh
        self._changed |= differ
        return differ

    def take_changed(self) -> set[IPAddress]:
        """The VIPs whose merged value may have changed since the last call."""
        changed, self._changed = self._changed, set()
        return changed

    def _remerge(self, vip: IPAddress) -> None:
        claims = [
            (source, a) for source, t in self._per_source.items() if (a := t.get(vip)) is not None
        ]
        # None or one claim merges to itself: skip building the tables for merge_sources
        # (a cold start puts 10,000 VIPs, nearly all claimed by one source).
        advert: Advertisement | None = None
        if len(claims) == 1:
            advert = claims[0][1]
        elif claims:
            advert = merge_sources({source: {vip: a} for source, a in claims}).get(vip)
        if advert is None:
            self._effective.pop(vip, None)
        else:
            self._effective[vip] = advert
        self._changed.add(vip)
