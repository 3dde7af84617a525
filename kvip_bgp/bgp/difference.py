"""Which routes a pass must send: the difference between desired and applied, in
proportion to what changed.

Why: under churn a pass carries a handful of changed VIPs, but comparing every desired
VIP with the applied one costs O(VIPs) per pass (10,000 ``ipaddress`` hashes, most of
the reconciler's CPU at 500 EndpointSlice writes/s). The reconciler knows which VIPs'
desired values changed (``runtime.desired``); only those, plus the ones held back last
time, can differ between desired and applied, as long as nothing else touched the
applied state. Whatever else does (a reconnect, an error ack, a reload, a peer coming
up, the periodic resync, the sources' first sync) asks for ``everything()``, and the
next pass is the full difference again: level-triggered as before, and exactly the same
result on every pass (tests/test_difference.py checks that against the full one).

Owned by the announcer, hence by the reconciler thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from kvip_bgp.domain.model import Advertisement, IPAddress

__all__ = ["PendingVips"]


class PendingVips:
    """The VIPs whose route may differ from what is applied, or "all of them"."""

    def __init__(self) -> None:
        self._all = True
        self._vips: set[IPAddress] = set()
        self._synced = False

    @property
    def full(self) -> bool:
        """Whether the next ``take`` computes the full difference."""
        return self._all

    def everything(self) -> None:
        """The applied state changed behind the desired one: look at every VIP next."""
        self._all = True
        self._vips = set()

    def add(self, changed: Set[IPAddress] | None) -> None:
        """VIPs whose desired value may have changed (None: any of them)."""
        if changed is None:
            self.everything()
        elif not self._all:
            self._vips |= changed

    def take(
        self,
        desired: Mapping[IPAddress, Advertisement],
        applied: Mapping[IPAddress, Advertisement],
        maybe_present: Set[IPAddress],
        held: Set[IPAddress],
        synced: bool,
    ) -> tuple[list[Advertisement], set[IPAddress]]:
        """(routes to announce, VIPs to withdraw) for this pass; what is ``held`` (not
        bound yet) is neither, and is looked at again by the next ``take``.

        Withdrawn: applied and no longer desired; once ``synced``, also what may be
        present from before (``maybe_present``) and is not desired. Announced: desired
        and not applied with the same value. The caller applies the result, or calls
        ``everything()`` when it could not.
        """
        if synced and not self._synced:
            self._all = True  # what an earlier run left may be withdrawn from now on
        self._synced = synced
        if self._all:
            # Set ops in C, ``is`` before the field compare: the full pass stays cheap. A
            # set minus a dict reuses the stored hashes; a keys view minus another hashes
            # every address of the right one again (10,000 ``ipaddress`` hashes).
            withdraw = set(applied).difference(desired)
            if synced and maybe_present:
                withdraw |= set(maybe_present).difference(desired)
            announce = [
                a
                for v, a in desired.items()
                if ((old := applied.get(v)) is None or (old is not a and old != a))
                and v not in held
            ]
        else:
            withdraw = set()
            announce = []
            # A held VIP that is desired is neither announced nor withdrawn: leave those
            # out by set operations (no ``ipaddress`` hash each; a cold start holds
            # thousands on every pass) and look at the rest as before.
            vips = self._vips.difference(held)
            if held:
                vips |= self._vips.intersection(held).difference(desired)
            for vip in vips:
                advert = desired.get(vip)
                if advert is None:
                    if vip in applied or (synced and vip in maybe_present):
                        withdraw.add(vip)
                elif (old := applied.get(vip)) is None or (old is not advert and old != advert):
                    announce.append(advert)  # not held: held and desired are left out above
        self._all = False
        self._vips = set(held)
        return announce, withdraw
