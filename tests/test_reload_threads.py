"""A reload as each thread sees it: one frozen config on its queue, only changes applied."""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.bgp import process as exabgp
from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.config import StaticVip
from kvip_bgp.domain.model import Advertisement, Community, IPAddress, RouteAttributes
from kvip_bgp.domain.objects import parse_endpoint_slice, parse_node, parse_service
from kvip_bgp.runtime.cluster import ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import (
    ClusterConfig,
    ClusterStop,
    ConfigChanged,
    Inbox,
    Listed,
    PeerState,
    ReplyBox,
    SourceSynced,
    StaticChanged,
    StaticRetired,
    Stop,
    VipDesired,
    post,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.static import StaticVipWatcher
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakes import CONFIG, FakeExabgp
from kvip_bgp.testing.objects import endpoint_slice, node, service
from kvip_bgp.testing.scenario import daemon_config

PEER_B = {"address": "192.0.2.3", "asn": 64500}


def advert(ip: str, community: str = "64512:1", source: str = "kubernetes") -> Advertisement:
    attrs = RouteAttributes(communities=(Community.parse(community),))
    return Advertisement(ipaddress.ip_address(ip), attrs, (source,))


class Harness:
    """The reconciler driven by ``step`` (no thread), with a fake ExaBGP socket."""

    def __init__(self, peers: list[dict[str, Any]], sources: tuple[str, ...]) -> None:
        document = copy.deepcopy(CONFIG)
        document["bgp"]["peers"] = peers
        self.config = config_module.parse(document)
        self.inbox: Inbox = CoalescingQueue()
        self.status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        self.reconciler = Reconciler(
            self.inbox,
            None,
            ExabgpAnnouncer(self.config, Metrics()),
            Metrics(),
            self.status,
            sources,
        )
        self.fake = FakeExabgp(self.inbox)
        self.fake.connect()
        self.reconciler.start(0.0)
        self.now = 0.0

    def pump(self) -> list[str]:
        self.now += 1.0
        self.reconciler.step([m for _k, m in self.inbox.drain(0)], self.now)
        lines = self.fake.lines(wait=0.05)
        self.fake.ack(len(lines))
        self.reconciler.step([m for _k, m in self.inbox.drain(0)], self.now)
        return lines

    def reload(self, peers: list[dict[str, Any]], sources: tuple[str, ...]) -> None:
        document = copy.deepcopy(CONFIG)
        document["bgp"]["peers"] = peers
        post(self.inbox, ConfigChanged(config_module.parse(document), sources))

    def stop(self) -> None:
        self.reconciler.step([Stop(deadline=time.monotonic() + 1)], self.now + 1)


PEER_A = CONFIG["bgp"]["peers"][0]


def test_an_added_peer_gets_every_route_then_end_of_rib_and_the_others_nothing() -> None:
    h = Harness([PEER_A], ("kubernetes",))
    try:
        post(h.inbox, SourceSynced("kubernetes"))
        post(
            h.inbox,
            VipDesired("kubernetes", ipaddress.ip_address("198.51.100.7"), advert("198.51.100.7")),
        )
        post(h.inbox, PeerState("192.0.2.2", "up", None, time.time(), 1))
        first = h.pump()
        assert "announce attributes next-hop self community [64512:1] nlri 198.51.100.7/32" in first
        h.reload([PEER_A, PEER_B], ("kubernetes",))
        assert h.pump() == []  # nothing changed for the peer that was there
        post(h.inbox, PeerState("192.0.2.3", "up", None, time.time(), 1))
        assert h.pump() == [
            "neighbor 192.0.2.3 announce attributes next-hop self community [64512:1] "
            "nlri 198.51.100.7/32",
            "neighbor 192.0.2.3 announce eor ipv4 unicast",
            "neighbor 192.0.2.3 announce eor ipv6 unicast",
        ]
        peers = [p.address for p in h.status.read().peers]
        assert peers == ["192.0.2.2", "192.0.2.3"]
    finally:
        h.stop()


def test_a_removed_peer_has_its_routes_withdrawn_first_and_leaves_the_status() -> None:
    """Removed from ExaBGP without a NOTIFICATION, a graceful-restart peer would keep our
    routes as stale: they are withdrawn from it first, and the main thread told."""
    h = Harness([PEER_A, PEER_B], ("kubernetes",))
    try:
        post(h.inbox, SourceSynced("kubernetes"))
        post(
            h.inbox,
            VipDesired("kubernetes", ipaddress.ip_address("198.51.100.7"), advert("198.51.100.7")),
        )
        post(h.inbox, PeerState("192.0.2.3", "up", None, time.time(), 1))
        h.pump()
        document = copy.deepcopy(CONFIG)
        routes_left: ReplyBox[bool] = ReplyBox()
        post(h.inbox, ConfigChanged(config_module.parse(document), ("kubernetes",), routes_left))
        h.now += 1
        h.reconciler.step([m for _k, m in h.inbox.drain(0)], h.now)
        assert h.fake.lines(wait=0.05) == [
            "neighbor 192.0.2.3 withdraw attributes next-hop self nlri 198.51.100.7/32"
        ]
        assert routes_left.get(0) is None  # not before ExaBGP acked it
        h.fake.ack(1)
        h.reconciler.step([m for _k, m in h.inbox.drain(0)], h.now)
        assert routes_left.get(0) is True
        assert h.pump() == []  # the peer that stays is not touched
        post(h.inbox, PeerState("192.0.2.3", "down", "removed", time.time(), 1))
        h.pump()
        assert [p.address for p in h.status.read().peers] == []
    finally:
        h.stop()


def test_a_removed_source_is_withdrawn_and_what_it_posts_after_is_dropped() -> None:
    h = Harness([PEER_A], ("kubernetes", "static:198.51.100.9"))
    try:
        for source in ("kubernetes", "static:198.51.100.9"):
            post(h.inbox, SourceSynced(source))
        vip = ipaddress.ip_address("198.51.100.9")
        post(h.inbox, VipDesired("static:198.51.100.9", vip, advert(str(vip))))
        assert any("198.51.100.9/32" in line for line in h.pump())
        h.reload([PEER_A], ("kubernetes",))
        assert h.pump() == ["withdraw attributes next-hop self nlri 198.51.100.9/32"]
        # The retired watcher's last publish, racing the reload, changes nothing.
        post(h.inbox, VipDesired("static:198.51.100.9", vip, advert(str(vip))))
        assert h.pump() == []
        assert h.status.read().all_synced
    finally:
        h.stop()


# -- the cluster-state thread ------------------------------------------------------------


def test_cluster_thread_decides_again_and_publishes_only_changed_vips(tmp_path: Path) -> None:
    raw = daemon_config(tmp_path / "kubeconfig")
    raw["vips"] = {"allowed": ["198.51.100.0/24"]}
    (tmp_path / "kubeconfig").write_text("unused")
    config = config_module.parse(raw)
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    published: queue.Queue[tuple[IPAddress, Advertisement | None]] = queue.Queue()
    state = ClusterState(
        config,
        events,
        lambda vip, advert: published.put((vip, advert)),
        lambda: None,
        Metrics(),
        Snapshot(ClusterStatus()),
    )
    objects = [
        service("low", "198.51.100.10"),
        endpoint_slice("low", ["node-1"]),
        service("high", "198.51.100.200"),
        endpoint_slice("high", ["node-1"]),
    ]
    events.put(Listed("nodes", (parse_node(node()),), "1"))
    events.put(
        Listed("services", tuple(parse_service(o) for o in objects if o["kind"] == "Service"), "1")
    )
    events.put(
        Listed(
            "endpointslices",
            tuple(parse_endpoint_slice(o) for o in objects if o["kind"] == "EndpointSlice"),
            "1",
        )
    )
    thread = threading.Thread(target=state.run, daemon=True)
    thread.start()
    try:
        first = {published.get(timeout=10)[0] for _ in range(2)}
        assert first == {
            ipaddress.ip_address("198.51.100.10"),
            ipaddress.ip_address("198.51.100.200"),
        }
        narrowed = dataclasses.replace(
            config,
            vips=config_module.parse({**raw, "vips": {"allowed": ["198.51.100.0/25"]}}).vips,
        )
        events.put(ClusterConfig(narrowed))
        vip, advert_or_none = published.get(timeout=10)
        assert (vip, advert_or_none) == (ipaddress.ip_address("198.51.100.200"), None)
        with pytest.raises(queue.Empty):
            published.get(timeout=0.5)  # the VIP still allowed is not published again
    finally:
        events.put(ClusterStop())
        thread.join(5)


# -- a static VIP watcher ------------------------------------------------------------------


def test_a_static_watcher_takes_new_attributes_at_once_and_ends_when_retired() -> None:
    vip = StaticVip(ipaddress.ip_address("198.51.100.53"))
    seen: queue.Queue[Advertisement | None] = queue.Queue()
    stop = threading.Event()
    watcher = StaticVipWatcher(
        vip,
        RouteAttributes(communities=(Community.parse("64512:1"),)),
        lambda _vip, advert: seen.put(advert),
        Metrics(),
        stop,
        poll_interval=60.0,  # nothing but the update can make it evaluate again soon
    )
    watcher.start()
    try:
        first = seen.get(timeout=5)
        assert first is not None and str(first.attributes.communities[0]) == "64512:1"
        watcher.update(
            StaticChanged(vip, RouteAttributes(communities=(Community.parse("64512:2"),)))
        )
        second = seen.get(timeout=5)
        assert second is not None and str(second.attributes.communities[0]) == "64512:2"
        watcher.update(StaticRetired())
        watcher.join(5)
        assert not watcher.is_alive()
        assert seen.empty()
    finally:
        stop.set()


# -- ExaBGP's reload under the supervisor ------------------------------------------------


class FakeProcess:
    """Records signals; answers each reload as ``outcomes`` says (None: ExaBGP skipped it)."""

    def __init__(self, outcomes: list[bool | None]) -> None:
        self.outcomes = outcomes
        self.pending: bool | None = None
        self.calls: list[str] = []
        self.started_at = 0.0

    def start(self) -> None:
        self.calls.append("start")

    def poll(self) -> int | None:
        return None

    def running(self) -> bool:
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append("stop")

    def signal_reload(self) -> None:
        self.calls.append("SIGUSR1")
        self.pending = self.outcomes.pop(0) if self.outcomes else None

    def reload_outcome(self) -> bool | None:
        outcome, self.pending = self.pending, None
        return outcome


def supervise(outcomes: list[bool | None], seconds: float) -> list[str]:
    process = FakeProcess(outcomes)
    supervisor = exabgp.ExabgpSupervisor(
        process,  # type: ignore[arg-type]
        Snapshot(True),
        lambda _t: False,
        lambda: None,
    )
    supervisor.request_reload()
    now = 0.0
    while now < seconds:
        supervisor.tick(now)
        now += 0.25
    return process.calls


@pytest.mark.parametrize(
    ("outcomes", "calls"),
    [
        ([True], ["SIGUSR1"]),
        # Skipped while updates were queued: asked again after RELOAD_CONFIRM.
        ([None, True], ["SIGUSR1", "SIGUSR1"]),
        # A file it could not load: its API processes are gone; restart it.
        ([False], ["SIGUSR1", "stop", "start"]),
        # Never confirmed: restarted after RELOAD_TRIES tries.
        ([None] * 9, ["SIGUSR1"] * exabgp.RELOAD_TRIES + ["stop", "start"]),
    ],
)
def test_exabgp_reload_is_confirmed_retried_or_ends_in_a_restart(
    outcomes: list[bool | None], calls: list[str]
) -> None:
    assert supervise(outcomes, exabgp.RELOAD_CONFIRM * (exabgp.RELOAD_TRIES + 2)) == calls


def test_exabgp_validate_accepts_our_render_and_names_a_problem(tmp_path: Path) -> None:
    from kvip_bgp.bgp.config import render_config
    from kvip_bgp.bgp.reload import validate_exabgp

    good = tmp_path / "good.conf"
    good.write_text(render_config(config_module.parse(CONFIG), tmp_path / "api.sock"))
    assert validate_exabgp(good) == []
    bad = tmp_path / "bad.conf"
    bad.write_text("neighbor 192.0.2.2 { hold-time banana; }\n")
    problems = validate_exabgp(bad)
    assert len(problems) == 1 and "ExaBGP refuses" in problems[0], problems
    assert "bad.conf" in problems[0]


def test_a_new_check_keeps_the_vip_up_until_it_fails_fall_times() -> None:
    """Adding a check to a serving VIP by reload must not withdraw it for rise intervals."""
    from kvip_bgp.domain.config import HealthCheck

    vip = StaticVip(ipaddress.ip_address("198.51.100.53"))
    seen: queue.Queue[Advertisement | None] = queue.Queue()
    stop = threading.Event()
    watcher = StaticVipWatcher(vip, RouteAttributes(), lambda _v, a: seen.put(a), Metrics(), stop)
    watcher.start()
    try:
        assert seen.get(timeout=5) is not None  # unchecked: up at once
        closed = HealthCheck(tcp=("127.0.0.1", 9), interval=0.1, timeout=0.1, rise=2, fall=3)
        started = time.monotonic()
        watcher.update(StaticChanged(dataclasses.replace(vip, check=closed), RouteAttributes()))
        assert seen.get(timeout=5) is None  # withdrawn only after `fall` failed checks
        assert time.monotonic() - started >= 0.2
        watcher.update(StaticChanged(vip, RouteAttributes()))  # the check removed again
        assert seen.get(timeout=5) is not None
    finally:
        stop.set()
        watcher.join(5)


def test_bfd_peers_changed_by_reload_go_to_the_running_process() -> None:
    """Replacing the process would end every session with AdminDown (FRR then resets
    the BGP sessions tied to BFD): the running child gets the new set instead."""
    from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor

    def peers(*addresses: str) -> Any:
        document = copy.deepcopy(CONFIG)
        document["bgp"]["peers"] = [
            {"address": a, "asn": 64500, "local_address": "127.0.0.1", "bfd": {}} for a in addresses
        ]
        return config_module.parse(document, environ={}).bgp.peers

    supervisor = BfdSupervisor(peers("127.0.0.2"), lambda _m: None, Metrics())
    supervisor.start()
    try:
        first = supervisor._process
        supervisor.set_peers(peers("127.0.0.2", "127.0.0.3"))
        time.sleep(0.5)
        assert supervisor._process is first and first is not None and first.poll() is None
        assert "127.0.0.3" in supervisor._document  # a restart would use the new set
        supervisor.set_peers(())
        assert first.poll() is not None and supervisor._process is None
        supervisor.tick(1000.0)
        assert supervisor._process is None  # no BFD peer: nothing to restart
        supervisor.set_peers(peers("127.0.0.3"))
        assert supervisor._process is not None and supervisor._process.poll() is None
    finally:
        supervisor.stop(3.0)


def test_reloader_reloads_once_per_change_and_watches_new_password_files(tmp_path: Path) -> None:
    import yaml

    from kvip_bgp.configfile.watch import read
    from kvip_bgp.live import POLL_INTERVAL, Children, Reloader
    from kvip_bgp.runtime.reload import ReloadStatus

    path = tmp_path / "kvip-bgp.yaml"
    document = copy.deepcopy(CONFIG)
    document["kubernetes"] = {"enabled": False}
    document["static"] = [{"address": "198.51.100.9"}]
    path.write_text(yaml.safe_dump(document))
    inbox: Inbox = CoalescingQueue()
    metrics = Metrics()
    status: Snapshot[ReloadStatus] = Snapshot(ReloadStatus())
    reloader = Reloader(path, read(path), None, Children(inbox, "kubernetes"), metrics, status)

    def count(result: str) -> float:
        return metrics.config_reloads.labels(result)._value.get()

    now = 0.0

    def poll() -> None:
        nonlocal now
        now += POLL_INTERVAL
        reloader.tick(now)

    poll()
    assert count("ok") == count("failed") == 0  # nothing changed
    secret = tmp_path / "md5"
    secret.write_text("one\n")
    document["bgp"]["peers"][0]["password_file"] = str(secret)
    path.write_text(yaml.safe_dump(document))
    poll()
    poll()
    assert count("ok") == 1  # once, not again for the password file it now names
    assert isinstance(inbox.drain(0)[-1][1], ConfigChanged)
    secret.write_text("two\n")  # a rotated password alone is a change too
    poll()
    assert count("ok") == 2
    assert reloader.config.bgp.peers[0].password == "two"
    path.write_text("bgp: [")
    poll()
    assert count("failed") == 1
    assert status.read().last_error and "not valid YAML" in status.read().last_error[0]
    assert reloader.config.bgp.peers[0].password == "two"


def test_a_changed_next_hop_sends_the_routes_again() -> None:
    h = Harness([{**PEER_A, "next_hop_v6": "2001:db8::1"}], ("kubernetes",))
    try:
        post(h.inbox, SourceSynced("kubernetes"))
        vip = ipaddress.ip_address("2001:db8:100::7")
        post(h.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
        route = "community [64512:1] nlri 2001:db8:100::7/128"
        assert h.pump() == [f"announce attributes next-hop 2001:db8::1 {route}"]
        h.reload([{**PEER_A, "next_hop_v6": "2001:db8::2"}], ("kubernetes",))
        assert h.pump() == [f"announce attributes next-hop 2001:db8::2 {route}"]
    finally:
        h.stop()


def test_a_reload_that_changes_the_pools_hands_them_to_the_allocator(tmp_path: Path) -> None:
    """ipam.pools reload in place: the cluster thread decides again (ClusterConfig) and
    the allocator, in the writer thread, gets the new pools; a reload that leaves the
    pools alone does not disturb the allocator."""
    import yaml

    from kvip_bgp.configfile.watch import read
    from kvip_bgp.domain.config import Config
    from kvip_bgp.live import POLL_INTERVAL, Children, Reloader
    from kvip_bgp.runtime.messages import ClusterConfig
    from kvip_bgp.runtime.reload import ReloadStatus

    path = tmp_path / "kvip-bgp.yaml"
    document = copy.deepcopy(CONFIG)
    path.write_text(yaml.safe_dump(document))
    inbox: Inbox = CoalescingQueue()
    cluster: queue.Queue[object] = queue.Queue()
    handed: list[Config] = []
    children = Children(inbox, "kubernetes", cluster_events=cluster, new_pools=handed.append)
    metrics = Metrics()
    status: Snapshot[ReloadStatus] = Snapshot(ReloadStatus())
    reloader = Reloader(path, read(path), None, children, metrics, status)
    now = 0.0

    def reload_with(doc: dict[str, Any]) -> None:
        nonlocal now
        path.write_text(yaml.safe_dump(doc))
        now += POLL_INTERVAL
        reloader.tick(now)

    document["ipam"] = {"pools": [{"name": "lab", "addresses": ["198.51.100.128/25"]}]}
    reload_with(document)
    assert metrics.config_reloads.labels("ok")._value.get() == 1, status.read().last_error
    assert [tuple(p.name for p in c.ipam) for c in handed] == [("lab",)]
    assert isinstance(cluster.get_nowait(), ClusterConfig)
    document["log"] = {"level": "debug"}
    reload_with(document)
    assert metrics.config_reloads.labels("ok")._value.get() == 2
    assert len(handed) == 1  # the pools did not change
    document.pop("ipam")
    reload_with(document)
    assert [len(c.ipam) for c in handed] == [1, 0]  # removed pools reach it too
