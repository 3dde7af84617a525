"""The cluster cache: Services, EndpointSlices and this Node, with the indexes on them.

It belongs to the cluster-state thread (``runtime.cluster``) alone, which also keeps its
per-Service decisions and what it published here, so that one object holds everything
that thread owns.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import (
    Endpoint,
    EndpointSliceInfo,
    NodeInfo,
    ObjectKey,
    ServiceInfo,
    status_only,
)
from kvip_bgp.domain.policy import ServiceDecision, SharedVipConflict
from kvip_bgp.runtime.messages import Changed, Listed, StreamEvent


@dataclass
class ClusterCache:
    """Owned by the cluster-state thread alone.

    The two indexes hold tuples, not sets: nearly every Service has one EndpointSlice and
    nearly every VIP one Service, and a one-element set costs ~200 bytes more than a
    one-element tuple, 10,000 times over (``_with``/``_without`` keep them current).
    """

    node_name: str
    services: dict[ObjectKey, ServiceInfo] = field(default_factory=dict)
    slices: dict[ObjectKey, EndpointSliceInfo] = field(default_factory=dict)
    slices_by_service: dict[ObjectKey, tuple[ObjectKey, ...]] = field(default_factory=dict)
    node: NodeInfo | None = None
    listed: set[str] = field(default_factory=set)
    decisions: dict[ObjectKey, ServiceDecision] = field(default_factory=dict)
    # Services without a ready endpoint: the Service, Node and config their decision was
    # prepared from, and that prepared decision (ClusterState._prepared).
    prepared: dict[ObjectKey, tuple[ServiceInfo, NodeInfo | None, Config, ServiceDecision]] = field(
        default_factory=dict
    )
    published: dict[IPAddress, Advertisement] = field(default_factory=dict)
    announced_synced: bool = False
    # Services whose status we asked for: the object it was asked for, the ips, and the
    # decision they were last found from (reports.want_status).
    status_wanted: dict[ObjectKey, tuple[ServiceInfo, tuple[str, ...], ServiceDecision]] = field(
        default_factory=dict
    )
    conflicts: dict[IPAddress, frozenset[SharedVipConflict]] = field(default_factory=dict)
    services_by_vip: dict[IPAddress, tuple[ObjectKey, ...]] = field(default_factory=dict)
    status_dirty: bool = False
    status_published_at: float = 0.0
    # Since the last take_echoes: the Services whose only change was their status
    # (status_only against the object before), and every Service changed otherwise.
    echoes: set[ObjectKey] = field(default_factory=set)
    _changed: set[ObjectKey] = field(default_factory=set)
    _all_changed: bool = False

    def take_echoes(self) -> set[ObjectKey]:
        """The Services that changed in nothing but their status since the last call.

        For each of them, every change the cache took since the last call was of that
        kind, and no slice of theirs, no Node and no list came in meanwhile: their
        decision, made before those changes, is the one their current object gives,
        unless the decision read the status (``ClusterState._echoed`` checks that).
        """
        echoes, self.echoes = self.echoes, set()
        self._changed = set()
        self._all_changed = False
        return echoes

    def apply(self, event: StreamEvent) -> Collection[ObjectKey] | None:
        """Update the cache; return the Services affected (None: all of them)."""
        if isinstance(event, Listed):
            self.listed.add(event.resource)
            if event.resource == "services":
                self.services = {o.key: o for o in event.objects if isinstance(o, ServiceInfo)}
            elif event.resource == "endpointslices":
                self.slices = {}
                self.slices_by_service = {}
                for obj in event.objects:
                    if isinstance(obj, EndpointSliceInfo):
                        self._put_slice(obj)
            elif event.resource == "nodes":
                self.node = next(
                    (
                        o
                        for o in event.objects
                        if isinstance(o, NodeInfo) and o.name == self.node_name
                    ),
                    None,
                )
            self._everything_changed()
            return None
        return self._change(event)

    def _change(self, event: Changed) -> Collection[ObjectKey]:
        obj = event.object
        deleted = event.kind == "DELETED"
        if isinstance(obj, ServiceInfo):
            key = obj.key
            old = self.services.pop(key, None) if deleted else self.services.get(key)
            if not deleted:
                self.services[key] = obj
            if (
                not deleted
                and old is not None
                and not self._all_changed
                and key not in self._changed
                and status_only(old, obj)
            ):
                self.echoes.add(key)
            else:
                self._changed.add(key)
                self.echoes.discard(key)
            return (key,)
        if isinstance(obj, EndpointSliceInfo):
            affected = set()
            old_slice = self.slices.pop(obj.key, None)
            if old_slice is not None and old_slice.service is not None:
                _without(self.slices_by_service, old_slice.service, obj.key)
                affected.add(old_slice.service)
            if not deleted:
                self._put_slice(obj)
                if obj.service is not None:
                    affected.add(obj.service)
            self._changed |= affected
            self.echoes -= affected
            return affected
        if obj.name != self.node_name:
            return ()
        self.node = None if deleted else obj
        self._everything_changed()
        return set(self.services)

    def _everything_changed(self) -> None:
        self._all_changed = True
        self.echoes.clear()

    def _put_slice(self, obj: EndpointSliceInfo) -> None:
        self.slices[obj.key] = obj
        if obj.service is not None:
            _with(self.slices_by_service, obj.service, obj.key)

    def endpoints(self, service: ObjectKey) -> Sequence[Endpoint]:
        """The Service's endpoints, its slices in name order; a lone slice's as they are."""
        keys = self.slices_by_service.get(service, ())
        if len(keys) == 1:  # nearly every Service: no sort, no copy
            return self.slices[keys[0]].endpoints
        if not keys:  # a Service created before its slice (a burst): nothing to build
            return ()
        return [
            endpoint for key in sorted(keys, key=str) for endpoint in self.slices[key].endpoints
        ]

    def index(
        self, key: ObjectKey, old: ServiceDecision | None, new: ServiceDecision | None
    ) -> tuple[IPAddress, ...]:
        """Keep ``services_by_vip`` current; return the VIPs whose claimants changed.

        On the decisions' tuples, not sets of them: a Service claims one VIP or a few,
        and five sets per decision cost more than a scan of a one-element tuple. What
        it returns may repeat a VIP; the caller puts it into a set.
        """
        before = old.announced if old is not None and old.attributes is not None else ()
        after = new.announced if new is not None and new.attributes is not None else ()
        for vip in before:
            if vip not in after:
                _without(self.services_by_vip, vip, key)
        for vip in after:
            if vip not in before:
                _with(self.services_by_vip, vip, key)
        return before + after if before else after


K = TypeVar("K")


def _with(index: dict[K, tuple[ObjectKey, ...]], at: K, key: ObjectKey) -> None:
    """Add ``key`` to the tuple ``index[at]`` (created if missing); no duplicates.

    ``setdefault``: a new entry (nearly every VIP and slice) costs one hash of ``at``,
    not two (an ``ipaddress`` hash is a Python call, ~0.15 us).
    """
    keys = index.setdefault(at, (key,))
    if key not in keys:
        index[at] = (*keys, key)


def _without(index: dict[K, tuple[ObjectKey, ...]], at: K, key: ObjectKey) -> None:
    """Remove ``key`` from the tuple ``index[at]``; an emptied entry goes away."""
    keys = index.get(at)
    if keys is None:
        return
    rest = tuple(k for k in keys if k != key)
    if rest:
        index[at] = rest
    else:
        del index[at]
