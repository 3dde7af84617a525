"""The reconciler thread on its own: a socketpair stands in for the relay to ExaBGP."""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from kvip_bgp import config as config_module
from kvip_bgp.app import peers_for_node
from kvip_bgp.exabgp import ApiConnected, ApiDisconnected, CommandAck, PeerState
from kvip_bgp.metrics import Metrics
from kvip_bgp.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.reconciler import (
    Inbox,
    Reconciler,
    ReconcilerStatus,
    SourceSynced,
    Stop,
    VipDesired,
    post,
)
from kvip_bgp.snapshot import Snapshot
from kvip_bgp.workqueue import CoalescingQueue

CONFIG = {
    "node_name": "n1",
    "bgp": {
        "asn": 64512,
        "router_id": "192.0.2.1",
        "peers": [{"address": "192.0.2.2", "asn": 64500}],
    },
    "vips": {"allowed": ["198.51.100.0/24"]},
}


class FakeAddresses:
    """Stands in for netif.AddressTable; only the reconciler thread calls it."""

    def __init__(self, owned: set[IPAddress]) -> None:
        self.bound = set(owned)
        self.log: list[str] = []

    def owned(self) -> set[IPAddress]:
        return set(self.bound)

    def bind(self, vip: IPAddress) -> bool:
        self.bound.add(vip)
        self.log.append(f"bind {vip}")
        return True

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        for vip in vips:
            self.bound.discard(vip)
            self.log.append(f"unbind {vip}")
        return {}


class Harness:
    def __init__(self, sources: tuple[str, ...], owned: set[IPAddress]) -> None:
        self.config = config_module.parse(CONFIG)
        self.inbox: Inbox = CoalescingQueue()
        self.addresses = FakeAddresses(owned)
        self.status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        self.reconciler = Reconciler(
            self.config, self.inbox, self.addresses, Metrics(), self.status, sources
        )
        self.thread = threading.Thread(target=self.reconciler.run, daemon=True)
        self.generation = 0
        self.acks = 0
        self.exabgp: socket.socket | None = None
        self.buffer = b""

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        self.generation += 1
        self.acks = 0
        self.exabgp = theirs
        post(self.inbox, ApiConnected(self.generation, os.dup(ours.fileno())))
        ours.close()

    def lines(self, wait: float = 0.3) -> list[str]:
        """Every command line ExaBGP received within ``wait`` seconds of quiet."""
        assert self.exabgp is not None
        self.exabgp.settimeout(wait)
        while True:
            try:
                data = self.exabgp.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in lines]

    def ack(self, count: int, ok: bool = True) -> None:
        for _ in range(count):
            self.acks += 1
            post(self.inbox, CommandAck(self.generation, self.acks, ok))


def advert(ip: str, *communities: str) -> Advertisement:
    from kvip_bgp.model import Community

    vip = ipaddress.ip_address(ip)
    attrs = RouteAttributes(communities=tuple(Community.parse(c) for c in communities))
    return Advertisement(vip, attrs, ("test",))


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(("kubernetes", "static:x"), owned={ipaddress.ip_address("198.51.100.99")})
    h.thread.start()
    h.connect()
    yield h
    post(h.inbox, Stop(deadline=time.monotonic() + 2))
    h.thread.join(5)


def test_nothing_withdrawn_or_unbound_before_every_source_synced(harness: Harness) -> None:
    post(
        harness.inbox, VipDesired("kubernetes", advert("198.51.100.1").vip, advert("198.51.100.1"))
    )
    post(harness.inbox, SourceSynced("kubernetes"))
    lines = harness.lines()
    assert lines == ["announce attributes next-hop self nlri 198.51.100.1/32"]
    harness.ack(1)
    # 198.51.100.99 was bound by an earlier run; "static:x" has not reported yet.
    assert ipaddress.ip_address("198.51.100.99") in harness.addresses.bound
    post(harness.inbox, SourceSynced("static:x"))
    harness.lines()
    deadline = time.monotonic() + 2
    while ipaddress.ip_address("198.51.100.99") in harness.addresses.bound:
        assert time.monotonic() < deadline, "orphaned address never unbound after sync"
        time.sleep(0.02)


def test_changes_are_diffs_grouped_by_attributes(harness: Harness) -> None:
    # Both VIPs wait for their source's sync, so one pass sees them together.
    for ip in ("198.51.100.1", "198.51.100.2"):
        post(
            harness.inbox, VipDesired("kubernetes", ipaddress.ip_address(ip), advert(ip, "64512:1"))
        )
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    lines = harness.lines()
    assert (
        "announce attributes next-hop self community [64512:1] nlri 198.51.100.1/32 198.51.100.2/32"
        in lines
    )
    harness.ack(len(lines))
    # Same desired value again: nothing sent. A change of one: only that one.
    post(
        harness.inbox,
        VipDesired(
            "kubernetes", ipaddress.ip_address("198.51.100.1"), advert("198.51.100.1", "64512:1")
        ),
    )
    assert harness.lines() == []
    post(harness.inbox, VipDesired("kubernetes", ipaddress.ip_address("198.51.100.2"), None))
    assert harness.lines() == ["withdraw attributes next-hop self nlri 198.51.100.2/32"]


def test_error_ack_is_retried_with_backoff(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.5"), advert("198.51.100.5")),
    )
    first = harness.lines()
    assert first == ["announce attributes next-hop self nlri 198.51.100.5/32"]
    harness.ack(1, ok=False)
    retried = harness.lines(wait=1.5)
    assert retried == first
    assert any("exabgp error" in e for e in harness.status.read().last_errors)


def test_reconnect_resends_everything_then_end_of_rib(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.7"), advert("198.51.100.7")),
    )
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.8"), advert("198.51.100.8")),
    )
    harness.ack(len(harness.lines()))
    # ExaBGP goes away; while it is gone .8 stops being wanted; then it is back.
    post(harness.inbox, ApiDisconnected(harness.generation))
    post(harness.inbox, VipDesired("kubernetes", ipaddress.ip_address("198.51.100.8"), None))
    harness.connect()
    post(harness.inbox, PeerState("192.0.2.2", "up", None, time.time()))
    lines = harness.lines()
    assert "withdraw attributes next-hop self nlri 198.51.100.8/32" in lines
    assert "announce attributes next-hop self nlri 198.51.100.7/32" in lines
    assert lines[-2:] == [
        "neighbor 192.0.2.2 announce eor ipv4 unicast",
        "neighbor 192.0.2.2 announce eor ipv6 unicast",
    ]


def test_stop_withdraws_waits_for_acks_and_unbinds(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.9"), advert("198.51.100.9")),
    )
    harness.ack(len(harness.lines()))
    post(harness.inbox, Stop(deadline=time.monotonic() + 3))
    assert harness.lines() == ["withdraw attributes next-hop self nlri 198.51.100.9/32"]
    assert harness.thread.is_alive(), "must wait for ExaBGP's answer"
    harness.ack(1)
    harness.thread.join(3)
    assert not harness.thread.is_alive()
    assert harness.addresses.bound == set()
    assert harness.status.read().stopped


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, ["192.0.2.2"]),
        ({"rack": "a"}, ["192.0.2.2", "192.0.2.3"]),
        ({"rack": "b"}, ["192.0.2.2", "192.0.2.4"]),
        ({"rack": "c"}, ["192.0.2.2"]),
    ],
    ids=["no-labels", "rack-a", "rack-b", "other-rack"],
)
def test_peers_for_node_by_selector(labels: dict[str, str] | None, expected: list[str]) -> None:
    doc = dict(CONFIG)
    doc["bgp"] = {
        **CONFIG["bgp"],  # type: ignore[dict-item]
        "peers": [
            {"address": "192.0.2.2", "asn": 64500},
            {"address": "192.0.2.3", "asn": 64501, "node_selector": {"rack": "a"}},
            {"address": "192.0.2.4", "asn": 64502, "node_selector": {"rack": "b"}},
        ],
    }
    cfg = config_module.parse(doc)
    assert [str(p.address) for p in peers_for_node(cfg, labels)] == expected
