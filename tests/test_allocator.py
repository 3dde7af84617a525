"""The allocator against the fake API over HTTP: writes, 409 Conflict, the Lease race."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from kvip_bgp.configfile.load import parse
from kvip_bgp.domain.claims import POOL_ANNOTATION
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import Pool, parse_range
from kvip_bgp.domain.objects import parse_service
from kvip_bgp.kube import writer as kube
from kvip_bgp.kube.allocator import Allocator, apply
from kvip_bgp.kube.client import load_api_client
from kvip_bgp.kube.lease import Lease, LeaseSettings
from kvip_bgp.runtime.allocation import AllocationWrite
from kvip_bgp.runtime.messages import (
    AllocatorConfig,
    ServiceEvent,
    ServiceSeen,
    ServicesListed,
    WriteRequest,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing import fakes
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import service


def config(*ranges: str) -> Config:
    return dataclasses.replace(
        parse(fakes.CONFIG), ipam=(Pool("public", tuple(parse_range(r) for r in ranges)),)
    )


def ingress(fake: FakeKubeAPI, name: str) -> list[str]:
    obj = fake.get("Service", name, "default") or {}
    return [
        i["ip"] for i in ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    ]


def pool_of(fake: FakeKubeAPI, name: str) -> str | None:
    obj = fake.get("Service", name, "default") or {}
    annotations: dict[str, str] = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(POOL_ANNOTATION)


def never_stop() -> bool:
    return False


def test_a_write_on_a_changed_service_is_a_409_and_the_next_pass_uses_the_new_version(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.put(service("web"))
    events: list[ServiceEvent] = []
    metrics = Metrics()
    allocator = Allocator(load_api_client(kubeconfig), config("198.51.100.64/30"), metrics=metrics)
    allocator.leadership(True)
    allocator.step(0.0, events.append, never_stop)  # lists and plans; no time left to write
    assert ingress(api, "web") == []
    # A user edits the Service meanwhile: the planned write carries the old version.
    edited = service("web", labels={"team": "a"})
    api.put(edited)
    patches = api.count_requests("PATCH")
    allocator.step(1e12, events.append, never_stop)
    assert api.count_requests("PATCH") == patches + 1  # answered 409, nothing written
    assert ingress(api, "web") == []
    allocator.step(1e12, events.append, never_stop)  # planned again from the re-read
    assert ingress(api, "web") == ["198.51.100.64"] and pool_of(api, "web") == "public"
    obj = api.get("Service", "web", "default")
    assert obj is not None and obj["metadata"]["labels"] == {"team": "a"}  # the edit stays
    assert [(e.reason, e.type) for e in events] == [("IPAllocated", "Normal")]
    sample = metrics.ipam_addresses.labels("public", "ipv4", "assigned")
    assert sample._value.get() == 1


def test_apply_sends_the_version_and_reads_again_on_conflict(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    stale = parse_service(api.put(service("web")))
    api.put(service("web", labels={"x": "y"}))
    client = load_api_client(kubeconfig)
    write = AllocationWrite(stale, (parse_range("198.51.100.64/32").first,), "public", True, True)
    outcome = apply(client, write)
    assert not outcome.ok and outcome.conflict
    assert outcome.service is not None and outcome.service.labels == (("x", "y"),)
    assert apply(client, dataclasses.replace(write, service=outcome.service)).ok
    assert ingress(api, "web") == ["198.51.100.64"] and pool_of(api, "web") == "public"
    released = parse_service(api.get("Service", "web", "default") or {})
    assert apply(client, AllocationWrite(released, (), None, True, True)).ok
    assert ingress(api, "web") == [] and pool_of(api, "web") is None


def _writer(kubeconfig: Path, identity: str, cfg: Config) -> tuple[kube.ClusterWriter, Any]:
    queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    settings = LeaseSettings(namespace="kube-system", duration=3, renew_every=0.3)
    allocator = Allocator(load_api_client(kubeconfig), cfg)
    writer = kube.ClusterWriter(
        load_api_client(kubeconfig), identity, settings, queue, allocator=allocator
    )
    return writer, queue


def test_two_writers_racing_for_the_lease_never_hand_an_address_out_twice(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    names = [f"s{i:02}" for i in range(24)]
    listed = tuple(parse_service(api.put(service(name))) for name in names[:12])
    cfg = config("198.51.100.64/27")
    first, first_queue = _writer(kubeconfig, "node-a", cfg)
    second, second_queue = _writer(kubeconfig, "node-b", cfg)
    for queue in (first_queue, second_queue):  # what each cluster thread lists at start
        queue.put(("services",), ServicesListed(listed, str(api.resource_version)))
    duplicates: list[Counter[str]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            held = Counter(ip for name in names for ip in ingress(api, name))
            if any(n > 1 for n in held.values()):
                duplicates.append(held)
            sampling.wait(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    first.start()
    second.start()
    try:
        wait_until(lambda: all(ingress(api, n) for n in names[:12]), 10, what="first dozen")
        # More Services while the holder dies; the other takes over after the expiry,
        # listing first: it sees every allocation its predecessor made.
        for name in names[12:]:
            obj = api.put(service(name))
            for queue in (first_queue, second_queue):
                queue.put(("service", f"default/{name}"), ServiceSeen(parse_service(obj)))
        lease = api.get("Lease", "kvip-bgp-status-writer", "kube-system")
        assert lease is not None
        leader = first if lease["spec"]["holderIdentity"] == "node-a" else second
        leader.stop()
        leader.join(5)
        wait_until(lambda: all(ingress(api, n) for n in names), 15, what="all allocated")
    finally:
        sampling.set()
        sampler.join(5)
        for writer in (first, second):
            writer.stop()
            writer.join(5)
    assert duplicates == []
    held = [ip for name in names for ip in ingress(api, name)]
    assert len(held) == len(set(held)) == len(names)
    assert {pool_of(api, n) for n in names} == {"public"}


def test_a_writer_that_does_not_hold_the_lease_allocates_nothing(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.put(
        {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "kvip-bgp-status-writer", "namespace": "kube-system"},
            "spec": {
                "holderIdentity": "node-z",
                "leaseDurationSeconds": 15,
                "renewTime": "2099-01-01T00:00:00.000000Z",
            },
        }
    )
    api.put(service("web"))
    writer, _queue = _writer(kubeconfig, "node-a", config("198.51.100.64/30"))
    writer.start()
    try:
        threading.Event().wait(1.5)
        assert ingress(api, "web") == []
        assert api.count_requests("PATCH") == 0
    finally:
        writer.stop()
        writer.join(5)


def test_nothing_is_planned_before_a_full_list_and_a_takeover_lists_itself(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    listed = (parse_service(api.put(service("web"))),)
    client = load_api_client(kubeconfig)
    # Created the Lease (or renewed its own): the cluster thread's list is awaited.
    allocator = Allocator(client, config("198.51.100.64/30"))
    allocator.leadership(True, list_first=False)
    allocator.step(1e12, lambda _e: None, never_stop)
    assert not allocator.busy
    assert api.count_requests("GET", "/services") == 0 and ingress(api, "web") == []
    allocator.take(ServicesListed(listed, str(api.resource_version)))
    assert allocator.busy
    allocator.step(1e12, lambda _e: None, never_stop)
    assert ingress(api, "web") == ["198.51.100.64"]
    # Taken over from another node: its own LIST before the first plan.
    other = Allocator(client, config("198.51.100.64/30"))
    other.leadership(True, list_first=True)
    other.step(1e12, lambda _e: None, never_stop)
    assert api.count_requests("GET", "/services") == 1
    assert other.state.status(True).assigned[listed[0].key][1] == (
        parse_range("198.51.100.64/32").first,
    )


def test_the_lease_says_whether_it_was_taken_over(api: FakeKubeAPI, kubeconfig: Path) -> None:
    settings = LeaseSettings(namespace="kube-system", duration=3, renew_every=1)
    a = Lease(load_api_client(kubeconfig), "node-a", settings)
    b = Lease(load_api_client(kubeconfig), "node-b", settings)
    assert a.try_acquire() and not a.taken_over  # created
    assert a.try_acquire() and not a.taken_over  # renewed
    assert not b.try_acquire()
    lease = api.get("Lease", "kvip-bgp-status-writer", "kube-system")
    assert lease is not None
    lease["spec"]["renewTime"] = "2000-01-01T00:00:00.000000Z"  # expired
    api.put(lease)
    assert b.try_acquire() and b.taken_over
    assert not a.try_acquire() and not a.taken_over


def test_the_first_plan_waits_for_the_routes_at_most_yield_max(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.put(service("web"))
    busy = [True]
    allocator = Allocator(
        load_api_client(kubeconfig),
        config("198.51.100.64/30"),
        routes_busy=lambda: busy[0],
        yield_max=0.3,
    )
    allocator.leadership(True)
    allocator.step(1e12, lambda _e: None, never_stop)
    assert ingress(api, "web") == [] and allocator.busy  # comes back soon, to check
    busy[0] = False
    allocator.step(1e12, lambda _e: None, never_stop)
    assert ingress(api, "web") == ["198.51.100.64"]
    # Routes busy for longer than yield_max: the plan goes ahead anyway.
    api.put(service("other"))
    late = Allocator(
        load_api_client(kubeconfig),
        config("198.51.100.64/30"),
        routes_busy=lambda: True,
        yield_max=0.3,
    )
    late.leadership(True)
    late.step(1e12, lambda _e: None, never_stop)
    assert ingress(api, "other") == []
    threading.Event().wait(0.35)
    late.step(1e12, lambda _e: None, never_stop)
    assert ingress(api, "other") == ["198.51.100.65"]


def test_new_pools_from_a_reload_reach_the_allocator_and_a_pending_service_is_served(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    api.put(service("a"))
    api.put(service("b"))
    metrics = Metrics()
    allocator = Allocator(load_api_client(kubeconfig), config("198.51.100.64/32"), metrics=metrics)
    allocator.leadership(True)
    failures: list[ServiceEvent] = []
    allocator.step(1e12, failures.append, never_stop)
    assert [ingress(api, n) for n in "ab"] == [["198.51.100.64"], []]
    assert sorted(e.reason for e in failures) == ["AllocationFailed", "IPAllocated"]
    assert metrics.ipam_pending._value.get() == 1  # what KvipBgpAllocationPending reads
    allocator.take(AllocatorConfig(config("198.51.100.64/31")))  # the pool grows
    allocator.step(1e12, failures.append, never_stop)
    assert ingress(api, "b") == ["198.51.100.65"]
    assert metrics.ipam_pending._value.get() == 0
    # From no pools at all: the allocator lists the Services first (none were forwarded).
    empty = Allocator(load_api_client(kubeconfig), dataclasses.replace(config(), ipam=()))
    empty.leadership(True, list_first=False)
    empty.step(1e12, failures.append, never_stop)
    empty.take(AllocatorConfig(config("198.51.100.64/30")))
    empty.step(1e12, failures.append, never_stop)
    assert empty.state.status(True).pending == {}
