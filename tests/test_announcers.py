"""The two announcers behind the reconciler, driven by ``Reconciler.step`` (no thread)."""

from __future__ import annotations

import ipaddress
import time

from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.netif.announcer import KernelTableAnnouncer
from kvip_bgp.runtime.announcer import Announcer
from kvip_bgp.runtime.messages import (
    BfdState,
    Inbox,
    PeerState,
    SourceSynced,
    Stop,
    VipDesired,
    post,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakes import CONFIG, FakeAddresses, FakeExabgp, FakeRoutes


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def want(inbox: Inbox, vip: IPAddress, wanted: bool = True) -> None:
    advert = Advertisement(vip, RouteAttributes(), ("test",)) if wanted else None
    post(inbox, VipDesired("kubernetes", vip, advert))


class Driven:
    """A reconciler with fakes at its edges; ``pump`` runs one pass at a given time."""

    def __init__(self, announcer: Announcer, owned: set[IPAddress] | None = None) -> None:
        self.inbox: Inbox = CoalescingQueue()
        self.addresses = FakeAddresses(owned or set())
        self.status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        self.reconciler = Reconciler(
            self.inbox, self.addresses, announcer, Metrics(), self.status, ("kubernetes",)
        )

    def pump(self, now: float) -> bool:
        return self.reconciler.step([m for _k, m in self.inbox.drain(0)], now)


def test_kernel_table_keeps_an_earlier_runs_routes_until_synced_and_binds_first() -> None:
    routes = FakeRoutes(ours={ip("198.51.100.50")})  # left by an earlier run
    driven = Driven(KernelTableAnnouncer(routes))
    routes.log = driven.addresses.log  # one log: the order of binds and routes
    driven.reconciler.start(0.0)
    want(driven.inbox, ip("198.51.100.1"))
    driven.pump(0.0)
    assert routes.ours == {ip("198.51.100.1"), ip("198.51.100.50")}
    assert driven.addresses.log == ["bind 198.51.100.1", "install 198.51.100.1"]
    post(driven.inbox, SourceSynced("kubernetes"))
    driven.pump(1.0)
    assert routes.ours == {ip("198.51.100.1")}
    assert [a.vip for a in driven.status.read().announced] == [ip("198.51.100.1")]
    # No longer wanted: the route goes before the address.
    want(driven.inbox, ip("198.51.100.1"), wanted=False)
    driven.pump(2.0)
    assert driven.addresses.log[-2:] == ["remove 198.51.100.1", "unbind 198.51.100.1"]
    assert routes.ours == set()
    assert driven.status.read().exabgp_connected is False


def test_kernel_table_failed_install_is_an_error_and_retried_foreign_is_left_alone() -> None:
    routes = FakeRoutes()
    routes.broken.add(ip("198.51.100.2"))
    routes.foreign.add(ip("198.51.100.3"))
    driven = Driven(KernelTableAnnouncer(routes))
    driven.reconciler.start(0.0)
    post(driven.inbox, SourceSynced("kubernetes"))
    want(driven.inbox, ip("198.51.100.2"))
    want(driven.inbox, ip("198.51.100.3"))
    driven.pump(0.0)
    status = driven.status.read()
    assert any("install route 198.51.100.2" in e for e in status.last_errors)
    assert [a.vip for a in status.announced] == [ip("198.51.100.3")]
    routes.broken.clear()
    driven.pump(1.0)
    assert ip("198.51.100.2") in routes.ours
    assert ip("198.51.100.3") not in routes.ours


def test_kernel_table_stop_removes_every_route_of_ours_then_unbinds() -> None:
    routes = FakeRoutes(ours={ip("198.51.100.50")})
    driven = Driven(KernelTableAnnouncer(routes))
    driven.reconciler.start(0.0)
    want(driven.inbox, ip("198.51.100.1"))
    driven.pump(0.0)
    post(driven.inbox, Stop(deadline=time.monotonic() + 2))
    assert not driven.pump(1.0)
    assert routes.ours == set()
    assert driven.addresses.bound == set()
    assert driven.status.read().stopped


def test_exabgp_error_acks_are_retried_after_a_doubling_backoff() -> None:
    config = config_module.parse(CONFIG)
    driven = Driven(ExabgpAnnouncer(config, Metrics()))
    exabgp = FakeExabgp(driven.inbox)
    exabgp.connect()
    driven.reconciler.start(0.0)
    post(driven.inbox, SourceSynced("kubernetes"))
    want(driven.inbox, ip("198.51.100.5"))
    driven.pump(0.0)
    announce = ["announce attributes next-hop self nlri 198.51.100.5/32"]
    assert exabgp.lines(wait=0.05) == announce
    exabgp.ack(1, ok=False)
    driven.pump(10.0)  # failed at 10.0: retried 0.5 s later
    assert driven.reconciler.timeout(10.0) == 0.5
    driven.pump(10.4)
    assert exabgp.lines(wait=0.05) == []
    driven.pump(10.5)
    assert exabgp.lines(wait=0.05) == announce
    exabgp.ack(1, ok=False)
    driven.pump(10.5)  # the second failure waits twice as long
    driven.pump(11.4)
    assert exabgp.lines(wait=0.05) == []
    driven.pump(11.5)
    assert exabgp.lines(wait=0.05) == announce
    exabgp.ack(1)
    driven.pump(12.0)
    assert [a.vip for a in driven.status.read().announced] == [ip("198.51.100.5")]
    assert not driven.reconciler.step([Stop(deadline=time.monotonic() + 0.2)], 13.0)


def test_bfd_down_counts_the_peer_as_down_in_status_and_metrics() -> None:
    """BGP is Established, BFD is not: the peer is down for /readyz, /status, metrics."""
    metrics = Metrics()
    inbox: Inbox = CoalescingQueue()
    status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
    config = config_module.parse(CONFIG, environ={})
    reconciler = Reconciler(
        inbox, None, ExabgpAnnouncer(config, metrics), metrics, status, ("kubernetes",)
    )
    reconciler.start(0.0)
    gauge = metrics.session_up.labels("192.0.2.2")
    peer_up = PeerState("192.0.2.2", "up", None, 1.0, session=1)
    reconciler.step([peer_up], 1.0)
    (view,) = status.read().peers
    assert (view.state, view.bfd, view.up, gauge._value.get()) == ("up", None, True, 1.0)
    reconciler.step([BfdState("192.0.2.2", "up", 0, 2.0)], 2.0)
    (view,) = status.read().peers
    assert (view.bfd, view.up, gauge._value.get()) == ("up", True, 1.0)
    reconciler.step([BfdState("192.0.2.2", "down", 1, 3.0)], 3.0)
    (view,) = status.read().peers
    assert (view.state, view.bfd, view.up, gauge._value.get()) == ("up", "down", False, 0.0)
    # A BFD state for a peer ExaBGP has not reported yet still shows.
    reconciler.step([BfdState("192.0.2.9", "init", 0, 4.0)], 4.0)
    assert [(p.address, p.state, p.bfd) for p in status.read().peers] == [
        ("192.0.2.2", "up", "down"),
        ("192.0.2.9", "unknown", "init"),
    ]
