"""CPU of the cluster-state thread per Service: a cold first pass, and a burst of creates.

Drives the real ``ClusterState.run`` in this thread (its queue, a collecting publish, the
writer's coalescing queue as write, ``Metrics``, ``Snapshot``) over N Services and their
EndpointSlices, shaped like ``bench/run.py``'s (``service_objects``: a VIP annotation, one
ready endpoint on this node). Objects are parsed before the clock starts: parsing is the
stream threads' work.

- cold: the three ``Listed`` events, then the thread's first pass.
- burst: synced with no Services, then ``Changed`` ADDED events, Service then its slice
  for each index, taken by the thread in batches of ``--batch`` (as a stream arrives at
  the thread's gather interval): a Service and its slice mostly in one batch.
- burst-lag: the same with each slice ``--lag`` events after its Service (the two
  watch streams do not keep step): every Service is decided twice, once without
  endpoints and once with its slice.
- echo: after the cold pass, every Service MODIFIED with the status this node asked
  for written, as the status writer's PATCHes come back on every node's watch; only
  those batches are timed.

Logs go, rendered as the daemon renders them (JSON), to /dev/null; the cyclic collector
runs with the daemon's thresholds.

Reports the median (and range) of ``time.thread_time`` over ``--repeat`` runs, in us per
Service. Run from a worktree with ``PYTHONPATH=$PWD python -m bench.cluster_micro``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import (
    EndpointSliceInfo,
    ServiceInfo,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from kvip_bgp.kube.writer import ClusterWriter
from kvip_bgp.ops import log
from kvip_bgp.process import tune_gc
from kvip_bgp.runtime.cluster import ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import Changed, ClusterStop, Listed, WriteRequest
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import daemon_config

from .run import VIP_ALLOWED, vip


class Batches(queue.SimpleQueue[Any]):
    """A queue that hands out ``batches`` as the thread would take them from a stream.

    ``get`` starts the next batch, ``get_nowait`` says "empty" at its end: one thread
    can queue every event up front and the cluster thread still takes them in batches.
    """

    def __init__(self, batches: Sequence[Sequence[Any]], timed_from: int = 0) -> None:
        super().__init__()
        self._batches = iter(batches)
        self._current: Iterator[Any] = iter(())
        self._next = 0
        self._timed_from = timed_from
        self.started = time.thread_time()  # when batch ``timed_from`` was handed out

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self._next == self._timed_from:
            self.started = time.thread_time()
        self._next += 1
        self._current = iter(next(self._batches))
        return next(self._current)

    def get_nowait(self) -> Any:
        try:
            return next(self._current)
        except StopIteration:
            raise queue.Empty from None


def bench_config() -> Config:
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text("unused")
        raw = daemon_config(kubeconfig)
        raw["vips"] = {"allowed": [VIP_ALLOWED]}
        return config_module.parse(raw)


def objects(count: int) -> tuple[list[ServiceInfo], list[EndpointSliceInfo]]:
    names = [f"svc-{index:05d}" for index in range(count)]
    services = [parse_service(service(n, vip(i))) for i, n in enumerate(names)]
    slices = [parse_endpoint_slice(endpoint_slice(n, [NODE_NAME])) for n in names]
    return services, slices


def burst_events(
    services: Sequence[ServiceInfo], slices: Sequence[EndpointSliceInfo], lag: int
) -> list[Any]:
    """ADDED events: Service ``i``, and the slice of Service ``i - lag`` after it."""
    events: list[Any] = []
    for index in range(len(services) + lag):
        if index < len(services):
            events.append(Changed("services", "ADDED", services[index]))
        if index >= lag:
            events.append(Changed("endpointslices", "ADDED", slices[index - lag]))
    return events


def echo_events(services: Sequence[ServiceInfo]) -> list[Any]:
    """Each Service MODIFIED with its VIP in ``status.loadBalancer.ingress``."""
    return [
        Changed(
            "services",
            "MODIFIED",
            dataclasses.replace(s, ingress_ips=(vip(i),), resource_version=f"s{i}"),
        )
        for i, s in enumerate(services)
    ]


def quiet_json_logs() -> None:
    """The daemon's log configuration, writing to /dev/null (kept open to the end)."""
    stderr = sys.stderr
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the log writes to it until exit
    try:
        log.configure("json", "info")
    finally:
        sys.stderr = stderr


def run_once(
    config: Config, events: Sequence[Any], batch: int, untimed: Sequence[Any] = ()
) -> tuple[float, int]:
    """CPU seconds of one ``ClusterState.run`` over ``events``, after ``untimed`` (one
    batch, not timed); and the VIPs published."""
    published: list[tuple[IPAddress, Advertisement | None]] = []
    # As kube.threads wires it: the writer's coalescing queue, put to by this thread.
    writes: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    batches = [events[start : start + batch] for start in range(0, len(events), batch)]
    first = [list(untimed)] if untimed else []
    q = Batches([*first, *batches, [ClusterStop()]], timed_from=len(first))
    state = ClusterState(
        config,
        q,
        lambda v, a: published.append((v, a)),
        lambda: None,
        Metrics(),
        Snapshot(ClusterStatus()),
        lambda request: writes.put(ClusterWriter.key(request), request),
        gather=0.0,
        bulk_gather=0.0,  # batches back to back: the thread's CPU, not its pauses
    )
    gc.collect()
    state.run()
    return time.thread_time() - q.started, len(published)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="Services (default 10,000)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--batch", type=int, default=50, help="burst events per batch")
    parser.add_argument("--lag", type=int, default=25, help="burst-lag: slice after Service")
    parser.add_argument(
        "--scenario", choices=("cold", "burst", "burst-lag", "echo", "all"), action="append"
    )
    args = parser.parse_args(argv)
    chosen = set(args.scenario or ["all"])
    if "all" in chosen:
        chosen = {"cold", "burst", "burst-lag", "echo"}
    quiet_json_logs()
    tune_gc()  # the daemon's thresholds: the collector's share depends on them
    config = bench_config()
    services, slices = objects(args.n)
    nodes = (parse_node(node()),)
    scenarios: dict[str, tuple[list[Any], int, list[Any]]] = {}
    cold = [
        Listed("nodes", nodes, "1"),
        Listed("services", tuple(services), "1"),
        Listed("endpointslices", tuple(slices), "1"),
    ]
    if "cold" in chosen:
        scenarios["cold"] = (cold, len(cold), [])  # one batch
    empty = [Listed("nodes", nodes, "1"), Listed("services", (), "1")]
    empty.append(Listed("endpointslices", (), "1"))
    if "burst" in chosen:
        scenarios["burst"] = (empty + burst_events(services, slices, 0), args.batch, [])
    if "burst-lag" in chosen:
        burst_lag = empty + burst_events(services, slices, args.lag)
        scenarios["burst-lag"] = (burst_lag, args.batch, [])
    if "echo" in chosen:
        scenarios["echo"] = (echo_events(services), args.batch, cold)
    for name, (events, batch, untimed) in scenarios.items():
        samples = []
        for _ in range(args.repeat):
            cpu, count = run_once(config, events, batch, untimed)
            samples.append(cpu / args.n * 1e6)
        print(
            f"{name}: {statistics.median(samples):.1f} us/Service "
            f"(range {min(samples):.1f}-{max(samples):.1f}, {args.repeat} runs, "
            f"{count} publishes)"
        )


if __name__ == "__main__":
    main()
