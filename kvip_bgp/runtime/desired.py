"""The reconciler's desired routes per source and their merge, kept up to date per VIP.

Why: merging every source's routes again on every pass costs O(VIPs) while a pass under
churn usually carries a handful of changed VIPs. ``DesiredRoutes`` re-merges only the
VIPs a message touched and remembers them (``take_changed``) so the rest of the pass can
look at those alone; ``rebuild`` recomputes everything, for the periodic resync and
for a source that goes away. Owned by the reconciler thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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
