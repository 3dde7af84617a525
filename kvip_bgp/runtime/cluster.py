"""The cluster-state thread: sole owner of the cluster cache and the per-Service decisions.

It takes parsed objects from the stream threads (a ``queue.SimpleQueue``), keeps the
cache of Services, EndpointSlices and this Node (``runtime.cache``), recomputes the
decision of every Service an event may have changed with the pure ``policy.decide``,
merges decisions into one desired route per VIP, and publishes only the VIPs whose
desired value changed to the reconciler's coalescing queue.

Nothing is published before every watched resource has been listed once: a half-filled
cache must never look like "these Services are gone". The first pass then publishes
each VIP as soon as its value is final (see ``_first_pass``) and tells the reconciler
when it is complete.

What it logs about decisions, and the Events and statuses it asks the elected writer
for, are in ``runtime.reports``.
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Final

import structlog

from kvip_bgp.domain.annotations import named_vips
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.explain import explain
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import (
    ObjectKey,
    ServiceInfo,
)
from kvip_bgp.domain.policy import (
    NO_READY_ENDPOINT,
    ServiceDecision,
    advertisements,
    conclude,
    prepare,
)
from kvip_bgp.domain.reasons import Reason, Refusal
from kvip_bgp.domain.sources import VipSource, service_wire
from kvip_bgp.runtime.cache import ClusterCache
from kvip_bgp.runtime.cluster_status import ClusterStatus, publish_status
from kvip_bgp.runtime.messages import (
    RESOURCES,
    Changed,
    ClusterConfig,
    ClusterStop,
    ExplainRequest,
    Listed,
    ServiceSeen,
    ServicesListed,
    StreamEvent,
    WriteRequest,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.pace import Pace
from kvip_bgp.runtime.reports import log_changes, report, report_conflict, want_status
from kvip_bgp.runtime.snapshot import Snapshot

log = structlog.get_logger("kvip_bgp.cluster")

SOURCE: Final = VipSource.kubernetes().wire  # the reconciler's name for this thread
STATUS_INTERVAL: Final = 0.5  # seconds between /status snapshots (each is O(Services))
CHEAP_SNAPSHOT: Final = 1000  # below this many Services a snapshot per batch is cheap
FIRST_PASS_CHUNK: Final = 1000  # Services decided between two publishes in the first pass
# A stream of events (a burst of creates, EndpointSlice churn) is taken in batches at
# most this often: each batch pays a fixed part (waking up, recomputing, logging,
# publishing) that a batch per event pays per event. An event after a quiet spell is
# taken at once, so a lone change is not delayed; after a batch of bulk route changes
# the next gathers longer (runtime.pace, docs/performance.md).
GATHER: Final = 0.02


class ClusterState:
    def __init__(
        self,
        config: Config,
        events: queue.SimpleQueue[StreamEvent | ClusterConfig | ClusterStop | ExplainRequest],
        publish: Callable[[IPAddress, Advertisement | None], None],
        synced: Callable[[], None],
        metrics: Metrics,
        status: Snapshot[ClusterStatus],
        write: Callable[[WriteRequest], None] | None = None,
        *,
        gather: float = GATHER,
        bulk_gather: float | None = None,
        on_bulk: Callable[[bool], None] = lambda bulk: None,
    ) -> None:
        self._config = config
        self._gather, self._bulk_gather = gather, bulk_gather  # see runtime.pace
        self._on_bulk = on_bulk  # called when the gap turns bulk, and back (the streams)
        self._published = 0  # VIPs published so far: how fast routes change
        self._events = events
        self._publish_vip = publish
        self._synced = synced
        self._metrics = metrics
        self._status = status
        self._write = write
        self._c = ClusterCache(config.node_name)

    def run(self) -> None:
        pace = Pace(self._gather, self._bulk_gather)
        while True:
            wait = pace.wait(time.monotonic())
            if wait > 0:  # in a stream: let it gather (an explain or a stop waits too)
                time.sleep(wait)
            try:
                first = self._events.get(timeout=STATUS_INTERVAL if self._c.status_dirty else None)
            except queue.Empty:
                self._publish_status()
                continue
            taken, published = time.monotonic(), self._published
            batch: list[StreamEvent | ClusterConfig | ClusterStop | ExplainRequest] = [first]
            while True:  # take everything already waiting: one recompute per burst
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            affected: set[ObjectKey] = set()
            everything = False
            questions: list[ExplainRequest] = []
            for event in batch:
                if isinstance(event, ClusterStop):
                    return
                if isinstance(event, ExplainRequest):
                    questions.append(event)
                    continue
                if isinstance(event, ClusterConfig):
                    # A reload: every decision again; only VIPs whose route changed go out.
                    self._config = event.config
                    everything = True
                    continue
                if self._config.ipam:  # the test first: a call per event is a cost
                    self._forward_to_allocator(event)
                changed = self._c.apply(event)
                if changed is None:
                    everything = True
                else:
                    affected.update(changed)
            echoes = self._c.take_echoes()
            if affected or everything:
                self._recompute(None if everything else affected, echoes)
            bulk = pace.bulk
            pace.took(taken, self._published - published)
            if pace.bulk != bulk:
                self._on_bulk(pace.bulk)
            c = self._c
            # A snapshot costs O(Services): with few Services publish after every batch,
            # at scale at most every STATUS_INTERVAL (a timeout above flushes the last).
            if c.status_dirty and (
                len(c.decisions) < CHEAP_SNAPSHOT
                or time.monotonic() - c.status_published_at >= STATUS_INTERVAL
            ):
                self._publish_status()
            for question in questions:
                c = self._c
                question.reply.put(
                    explain(
                        c.services.get(question.service),
                        c.endpoints(question.service),
                        c.node,
                        self._config,
                        question.service,
                    )
                )

    def _forward_to_allocator(self, event: StreamEvent) -> None:
        """With pools, the allocator (in the writer thread) sees every Service too."""
        if self._write is None or not self._config.ipam or event.resource != "services":
            return
        if isinstance(event, Listed):
            services = tuple(s for s in event.objects if isinstance(s, ServiceInfo))
            self._write(ServicesListed(services, event.resource_version))
        elif isinstance(event, Changed) and isinstance(event.object, ServiceInfo):
            self._write(ServiceSeen(event.object, deleted=event.kind == "DELETED"))

    # -- decisions ----------------------------------------------------------------------

    def _recompute(self, affected: Iterable[ObjectKey] | None, echoes: set[ObjectKey]) -> None:
        c = self._c
        if not RESOURCES_LISTED.issubset(c.listed):
            # Decide nothing on a half-filled cache; the last initial list recomputes all.
            return
        if not c.announced_synced:
            self._first_pass()
            return
        keys = set(c.services) | set(c.decisions) if affected is None else set(affected)
        if affected is not None and echoes:
            keys -= self._echoed(keys & echoes)
        changes, touched = self._decide(keys)
        log_changes(changes)
        self._merge(None if affected is None else touched)
        c.status_dirty = True

    def _first_pass(self) -> None:
        """Decide every Service in chunks; publish each VIP as soon as its value is final.

        Why: the reconciler binds and announces what a source publishes before that
        source's sync (only withdrawals wait for it), so the first routes go out while
        the rest of the Services are still being decided. Every value published here is
        final for this listing: a VIP goes out once every Service that names it (read
        before the pass: its prepared decision's VIPs, else ``named_vips``) is decided,
        so its merge is the one a single pass would make, and the conflicts of a shared
        VIP are reported once.
        """
        c = self._c
        keys = list(c.services)
        ipam = bool(self._config.ipam)
        # Each Service prepared once, here (its VIPs parsed once), and decided from that.
        services, node, config = c.services, c.node, self._config
        prepared = {key: prepare(services[key], node, config) for key in keys}
        # What a Service names: its prepared decision's VIPs, or for the few refused
        # before any was read, named_vips (not a tuple per Service: 10,000 at scale).
        unread = {k: named_vips(services[k], ipam) for k, p in prepared.items() if not p.verdicts}
        counts = Counter([v.vip for p in prepared.values() for v in p.verdicts])
        counts.update([vip for vips in unread.values() for vip in vips])
        # Only VIPs that several Services name are counted down: any other is final as
        # soon as its one Service is decided (nearly every VIP; a count each is a cost).
        undecided = {vip: count for vip, count in counts.items() if count > 1}
        held: set[IPAddress] = set()  # touched, but a Service naming it is still undecided
        changes: list[ServiceDecision] = []
        for start in range(0, len(keys), FIRST_PASS_CHUNK):
            chunk = keys[start : start + FIRST_PASS_CHUNK]
            chunk_changes, touched = self._decide(chunk, prepared)
            changes += chunk_changes
            if undecided:
                for key in chunk:
                    p = prepared[key]
                    for vip in [v.vip for v in p.verdicts] if p.verdicts else unread[key]:
                        if vip in undecided:
                            undecided[vip] -= 1
                held |= {vip for vip in touched if vip in undecided}
                ready = {vip for vip in held if undecided[vip] <= 0}
                held -= ready
                ready |= {vip for vip in touched if vip not in undecided}
            else:
                ready = touched
            self._merge(ready)
        log_changes(changes)
        c.announced_synced = True
        log.info(
            "cluster.synced",
            services=len(c.services),
            vips=len(c.published),
            node_found=c.node is not None,
        )
        self._synced()
        c.status_dirty = True

    def _decide(
        self, keys: Iterable[ObjectKey], prepared: Mapping[ObjectKey, ServiceDecision] | None = None
    ) -> tuple[list[ServiceDecision], set[IPAddress]]:
        """Decide ``keys`` again; return the changed decisions and the VIPs they touch.

        ``prepared``: ``prepare``'s decisions for the current Services, node and config.
        """
        c = self._c
        services, decisions, write, config = c.services, c.decisions, self._write, self._config
        changes: list[ServiceDecision] = []
        touched: set[IPAddress] = set()
        for key in keys:
            service = services.get(key)
            old = decisions.get(key)
            if service is None:
                c.prepared.pop(key, None)
                if old is not None:
                    del decisions[key]
                    touched.update(c.index(key, old, None))
                    changes.append(ServiceDecision(key, DELETED))
                continue
            ready = None if prepared is None else prepared.get(key)
            ready = self._prepared(service) if ready is None else ready
            if ready.reason is None:  # only then can the endpoints change the decision
                decision = conclude(ready, service, c.endpoints(key), config)
                if decision.reason is NO_READY_ENDPOINT:
                    c.prepared[key] = (service, c.node, config, ready)  # see _prepared
            else:
                decision = ready
            # Asked of the prepared decision: the endpoints never change the status
            # wanted, and a kept one is then the same object (see want_status).
            want_status(c, write, service, ready)
            if old is None or decision != old:  # None first: ``!=`` is a Python call
                decisions[key] = decision
                touched.update(c.index(key, old, decision))
                if old is None or (old.reason, old.verdicts) != (
                    decision.reason,
                    decision.verdicts,
                ):
                    changes.append(decision)
        for decision in changes:
            report(c, write, self._metrics, decision)
        return changes, touched

    def _echoed(self, keys: Iterable[ObjectKey]) -> set[ObjectKey]:
        """Of ``keys`` (Services whose status alone changed), those whose decision stands.

        Why: each status PATCH comes back as a MODIFIED Service on every node's watch, and
        deciding it again gives the same decision unless that took its VIPs from the
        status. For the others only the status wanted is looked at again (this may be
        our PATCH), and a kept prepared decision is the new object's (``prepare`` alike).
        """
        c, kept = self._c, set()
        for key in () if self._config.ipam else keys:
            decision, service = c.decisions.get(key), c.services.get(key)
            if decision is None or service is None or decision.vip_source in NOT_FROM_SPEC:
                continue
            want_status(c, self._write, service, decision)
            if (prepared := c.prepared.get(key)) is not None:
                c.prepared[key] = (service, *prepared[1:])
            kept.add(key)
        return kept

    def _prepared(self, service: ServiceInfo) -> ServiceDecision:
        """``prepare(service, node, config)``, or what was kept of it for the same objects.

        Why: in a burst of creates a Service is decided before its EndpointSlice arrives
        (refused: no ready endpoint) and again once it has; the second time only the
        endpoints changed. So the prepared decision of a Service with no ready endpoint is
        kept and taken back while the Service, this Node and the config are the same
        objects. Only those: each kept costs ~250 B (10,000 Services, tracemalloc), and
        a Service its endpoints refuse for good on this node (no local endpoint, here
        for ever) would hold it for nothing but its slices' churn.
        """
        c = self._c
        kept = c.prepared.pop(service.key, None)
        if (
            kept is not None
            and kept[0] is service
            and kept[1] is c.node
            and kept[2] is self._config
        ):
            return kept[3]
        return prepare(service, c.node, self._config)

    def _merge(self, vips: set[IPAddress] | None) -> None:
        """Re-merge the routes of ``vips`` (None: all) and publish those that changed.

        Only Services that claim a VIP take part in its merge (``services_by_vip``), so
        one change costs the Services sharing that VIP, not all 10,000. A VIP with one
        claimant (nearly every VIP) is that Service's route as it stands: no sort, no
        merge, no conflict to look for.
        """
        c = self._c
        if vips is None:
            vips = set(c.services_by_vip) | set(c.published)
        claims = [(vip, c.services_by_vip.get(vip, ())) for vip in vips]
        shared = [k for _vip, keys in claims if len(keys) > 1 for k in keys]
        desired, conflicts = advertisements(c.decisions[k] for k in set(shared) if k in c.decisions)
        for vip, keys in claims:
            if len(keys) == 1:
                decision = c.decisions.get(keys[0])
                advert: Advertisement | None = (
                    None
                    if decision is None or decision.attributes is None  # indexed with them
                    else Advertisement(vip, decision.attributes, (service_wire(decision.service),))
                )
            else:
                advert = desired.get(vip)
            if advert is None:
                if c.published.pop(vip, None) is not None:
                    self._publish_vip(vip, None)
                    self._published += 1
            else:
                count = len(c.published)
                current = c.published.setdefault(vip, advert)  # new: one hash, not two
                if (new := len(c.published) > count) or current != advert:
                    if not new:
                        c.published[vip] = advert
                    self._publish_vip(vip, advert)
                    self._published += 1
            if not conflicts and not c.conflicts:
                continue  # no conflict before or now: nothing to report or forget
            mine = frozenset(x for x in conflicts if x.vip == vip)
            for conflict in mine - c.conflicts.get(vip, frozenset()):
                report_conflict(c, self._write, conflict)
            if mine:
                c.conflicts[vip] = mine
            else:
                c.conflicts.pop(vip, None)

    def _publish_status(self) -> None:
        publish_status(self._c, self._metrics, self._status)


RESOURCES_LISTED: Final = frozenset(RESOURCES)
# Decisions that a Service's status can change: no VIP read yet, or the VIPs read from it.
NOT_FROM_SPEC: Final = frozenset((None, "status.loadBalancer.ingress"))
DELETED: Final = Refusal(Reason.DELETED)  # the change logged when a Service goes away
