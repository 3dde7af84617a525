"""The Kubernetes side of the daemon: its threads, started together and stopped together.

Three stream threads (one per watched kind) feed the cluster-state thread, which feeds
the cluster writer. Each thread that talks to the API has a client of its own, built
from the one loaded configuration (see ``client.new_api_client``).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvip_bgp.domain.config import Config
from kvip_bgp.domain.explain import Explanation
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import ObjectKey
from kvip_bgp.kube.allocator import Allocator
from kvip_bgp.kube.client import Configuration, new_api_client
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.kube.watch import BULK_GATHER, GATHER, ResourceStream, WatchTimeouts, resources
from kvip_bgp.kube.writer import ClusterWriter
from kvip_bgp.runtime.allocation import AllocationStatus
from kvip_bgp.runtime.cluster import ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import (
    AllocatorConfig,
    ClusterStop,
    ExplainRequest,
    ReplyBox,
    WriteRequest,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue


@dataclass(frozen=True)
class KubernetesThreads:
    """The Kubernetes side, started together and stopped together."""

    streams: tuple[ResourceStream, ...]
    events: queue.SimpleQueue[Any]
    cluster: threading.Thread
    writer: ClusterWriter
    ipam: Snapshot[AllocationStatus] | None = None  # None: no pools
    writes: CoalescingQueue[tuple[str, ...], WriteRequest] | None = None

    def new_pools(self, config: Config) -> None:
        """Hand the allocator (in the writer thread) a new config: its pools and classes."""
        if self.writes is not None:
            request = AllocatorConfig(config)
            self.writes.put(ClusterWriter.key(request), request)

    def explain(self, service: str, timeout: float = 5.0) -> Explanation | None:
        """Ask the cluster-state thread (it owns the cache) and wait for its answer;
        with pools, the allocator's view of the Service goes before the result line."""
        namespace, _, name = service.partition("/")
        key = ObjectKey(namespace, name)
        reply: ReplyBox[Explanation] = ReplyBox()
        self.events.put(ExplainRequest(key, reply))
        answer = reply.get(timeout)
        if answer is None or self.ipam is None or not answer.steps:
            return answer
        if not self.ipam.read().enabled:
            return answer
        steps = (*answer.steps[:-1], *self.ipam.read().steps(key), answer.steps[-1])
        return dataclasses.replace(answer, steps=steps)

    def stop(self) -> None:
        for stream in self.streams:
            stream.stop()
        self.events.put(ClusterStop())
        self.writer.stop()

    def all(self) -> tuple[threading.Thread, ...]:
        return (*self.streams, self.cluster, self.writer)


def start_kubernetes(
    config: Config,
    configuration: Configuration,
    publish: Callable[[IPAddress, Advertisement | None], None],
    synced: Callable[[], None],
    metrics: Metrics,
    status: Snapshot[ClusterStatus],
    routes_busy: Callable[[], bool],
    ipam: Snapshot[AllocationStatus] | None = None,
) -> KubernetesThreads:
    """The writer, the cluster-state thread, then the streams that feed it; all started."""
    # SimpleQueue: ~0.04 µs a put or get where Queue's Condition costs ~0.5 (10-20 times
    # as much with cold caches), and 20,000 events a burst cross it; nothing here needs
    # Queue's maxsize or task tracking.
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writes: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    writer = ClusterWriter(
        new_api_client(configuration),
        config.node_name,
        LeaseSettings(
            namespace=os.environ.get("POD_NAMESPACE") or "kube-system",
            duration=config.kubernetes.lease_duration,
            renew_every=config.kubernetes.lease_duration / 3,
        ),
        writes,
        routes_busy=routes_busy,
        allocator=Allocator(
            new_api_client(configuration), config, ipam, metrics, routes_busy=routes_busy
        ),
    )
    writer.start()
    # How long a busy watch gathers between reads: longer while the cluster thread
    # takes bulk changes (see watch.GATHER).
    gather: Snapshot[float] = Snapshot(GATHER)
    cluster = ClusterState(
        config,
        events,
        publish,
        synced,
        metrics,
        status,
        write=lambda request: writes.put(ClusterWriter.key(request), request),
        on_bulk=lambda bulk: gather.publish(BULK_GATHER if bulk else GATHER),
    )
    cluster_thread = threading.Thread(target=cluster.run, name="cluster-state", daemon=True)
    cluster_thread.start()
    streams: list[ResourceStream] = []
    for resource in resources(configuration, config.node_name):
        stream = ResourceStream(
            resource,
            events.put,
            lambda res, why: metrics.watch_restarts.labels(res, why).inc(),
            WatchTimeouts(read_seconds=config.kubernetes.watch_read_timeout),
            gather.read,
        )
        stream.start()
        streams.append(stream)
    return KubernetesThreads(tuple(streams), events, cluster_thread, writer, ipam, writes)
