"""Exactly one status writer: two ClusterWriters race for the Lease on the fake API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kvip_bgp.kube import writer as kube
from kvip_bgp.kube.client import load_api_client
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.runtime.messages import StatusWanted, WriteRequest
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import service


def _writer(
    kubeconfig: Path, identity: str, leaders: dict[str, bool], lock: threading.Lock
) -> kube.ClusterWriter:
    def changed(leader: bool) -> None:
        with lock:
            leaders[identity] = leader

    queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    settings = LeaseSettings(namespace="kube-system", duration=2, renew_every=0.2)
    return kube.ClusterWriter(load_api_client(kubeconfig), identity, settings, queue, changed)


def _put_web_service(fake: FakeKubeAPI) -> None:
    """The Service whose status the writers are asked to write."""
    fake.put(service("web"))


def _started_writer(
    kubeconfig: Path, routes_busy: Callable[[], bool], settings: LeaseSettings
) -> tuple[kube.ClusterWriter, CoalescingQueue[tuple[str, ...], WriteRequest]]:
    """A started writer, asked for web's status, whose route pipeline is ``routes_busy``."""
    queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    writer = kube.ClusterWriter(
        load_api_client(kubeconfig), "node-a", settings, queue, routes_busy=routes_busy
    )
    queue.put(("status", "default/web"), StatusWanted("default/web", ("198.51.100.1",)))
    writer.start()
    return writer, queue


def test_one_leader_and_takeover_after_expiry(api: FakeKubeAPI, kubeconfig: Path) -> None:
    fake = api
    leaders: dict[str, bool] = {}
    lock = threading.Lock()
    first = _writer(kubeconfig, "node-a", leaders, lock)
    second = _writer(kubeconfig, "node-b", leaders, lock)
    first.start()
    wait_until(lambda: leaders.get("node-a") is True, 5, what="node-a leads")
    second.start()
    try:
        # node-b keeps trying but never leads while node-a renews.
        threading.Event().wait(1.0)
        assert leaders.get("node-b") is not True
        lease = fake.get("Lease", "kvip-bgp-status-writer", "kube-system")
        assert lease is not None and lease["spec"]["holderIdentity"] == "node-a"
        # node-a dies (stops renewing): node-b takes over once the lease expires.
        first.stop()
        first.join(5)
        wait_until(lambda: leaders.get("node-b") is True, 8, what="node-b takes over")
        lease = fake.get("Lease", "kvip-bgp-status-writer", "kube-system")
        assert lease is not None and lease["spec"]["holderIdentity"] == "node-b"
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        first.stop()
        second.stop()
        second.join(5)


def test_non_leader_writes_nothing_then_finishes_pending_work(
    api: FakeKubeAPI,
    kubeconfig: Path,
) -> None:
    fake = api
    _put_web_service(fake)
    # Someone else holds a fresh lease.
    holder = _writer(kubeconfig, "node-a", {}, threading.Lock())
    holder.start()
    wait_until(
        lambda: fake.get("Lease", "kvip-bgp-status-writer", "kube-system") is not None,
        5,
        what="lease created",
    )
    leaders: dict[str, bool] = {}
    follower = _writer(kubeconfig, "node-b", leaders, threading.Lock())
    follower._requests.put(
        ("status", "default/web"), StatusWanted("default/web", ("198.51.100.1",))
    )
    follower.start()
    try:
        threading.Event().wait(1.0)
        assert fake.count_requests("PATCH", "/services/web/status") == 0
        holder.stop()
        holder.join(5)
        wait_until(
            lambda: fake.count_requests("PATCH", "/services/web/status") == 1,
            8,
            what="the new leader writes the pending status",
        )
        web = fake.get("Service", "web", "default")
        assert web is not None
        assert web["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.1"}]
    finally:
        holder.stop()
        follower.stop()
        follower.join(5)


@pytest.mark.parametrize(
    ("busy_for", "yield_max", "written_while_busy"),
    [
        # The route pipeline is busy for 1.5 s: no status is written until it is done.
        (1.5, 10.0, False),
        # Busy for longer than the cap: the status is written anyway, after the cap.
        (30.0, 0.5, True),
    ],
)
def test_status_writes_wait_for_the_route_pipeline(
    api: FakeKubeAPI,
    kubeconfig: Path,
    monkeypatch: pytest.MonkeyPatch,
    busy_for: float,
    yield_max: float,
    written_while_busy: bool,
) -> None:
    fake = api
    monkeypatch.setattr(kube, "STATUS_YIELD_MAX", yield_max)
    _put_web_service(fake)
    busy = threading.Event()
    busy.set()
    settings = LeaseSettings(namespace="kube-system", duration=2, renew_every=0.2)
    writer, _queue = _started_writer(kubeconfig, busy.is_set, settings)
    timer = threading.Timer(busy_for, busy.clear)
    timer.start()
    try:
        wait_until(
            lambda: fake.count_requests("PATCH", "/services/web/status") > 0,
            busy_for + 5,
            what="the status written",
        )
        assert busy.is_set() is written_while_busy
        if not written_while_busy:
            assert fake.count_requests("PATCH", "/services/web/status") == 1
    finally:
        timer.cancel()
        writer.stop()
        writer.join(5)


def test_waiting_for_the_routes_looks_at_them_every_yield_poll_not_per_request(
    api: FakeKubeAPI, kubeconfig: Path
) -> None:
    """While status writes wait for the routes, requests keep coming in (a cold start's
    first pass asks for a status per Service): the writer looks at the routes every
    YIELD_POLL, not at every request or every 10 ms, then writes what is pending."""
    fake = api
    _put_web_service(fake)
    looked: list[float] = []
    busy = threading.Event()
    busy.set()

    def routes_busy() -> bool:
        looked.append(1.0)
        return busy.is_set()

    settings = LeaseSettings(namespace="kube-system", duration=10, renew_every=5)
    writer, queue = _started_writer(kubeconfig, routes_busy, settings)
    stop = threading.Event()

    def ask() -> None:  # a request every 5 ms, as a first pass's chunks would
        index = 0
        while not stop.wait(0.005):
            index += 1
            name = f"default/other-{index}"
            queue.put(("status", name), StatusWanted(name, ("198.51.100.2",)))

    asker = threading.Thread(target=ask, daemon=True)
    try:
        wait_until(lambda: len(looked) > 0, 5, what="the writer's first look at the routes")
        asker.start()
        looked.clear()
        stop.wait(1.0)
        during = len(looked)
        # ~1 / YIELD_POLL looks in that second; 10 ms drains or a look per request: >= 100.
        assert during <= 1.0 / kube.YIELD_POLL + 5, during
        stop.set()
        busy.clear()
        wait_until(
            lambda: fake.count_requests("PATCH", "/services/web/status") > 0,
            5,
            what="the status written once the routes are out",
        )
    finally:
        stop.set()
        writer.stop()
        writer.join(5)
