"""Live reload against real FRR: two ToRs, one daemon, one lab shared by every step.

kvl node (kvip-bgp + ExaBGP) -- tor (FRR, AS 64500, 192.0.2.2)
                             \\- tor2 (FRR, AS 64501, 192.0.3.2)

The steps run in order on one running daemon; each rewrites the config file (and sends
SIGHUP, or not), then checks that every peer holds exactly what the new config implies
and that no session the step did not touch was reset: FRR's own counters for that
session (``connectionsEstablished`` and its uptime), not only its table.
"""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvip_bgp.testing.frr import FrrNeighbor, FrrPeer, FrrRoute
from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import NODE_ASN, Scenario, daemon_config

pytestmark = pytest.mark.lab

TOR2_ASN = 64501
NODE2_V4 = "192.0.3.1"
TOR2_V4 = "192.0.3.2"
LOW = "198.51.100.10"  # stays inside every allowed range of these steps
HIGH = "198.51.100.200"  # outside once the ranges are narrowed to /25
STATIC = "198.51.100.53"
PEER1 = {"address": Lab.TOR_V4, "asn": 64500, "local_address": Lab.NODE_V4}
PEER2 = {"address": TOR2_V4, "asn": TOR2_ASN, "local_address": NODE2_V4}


def second_tor(lab: Lab) -> None:
    tor2 = lab.add_netns("tor2")
    lab.add_link(lab.node, "node1", tor2, "tor1", [f"{NODE2_V4}/24"], [f"{TOR2_V4}/24"])


def start_tor2(scenario: Scenario) -> FrrPeer:
    """The second ToR's FRR, in the namespace ``second_tor`` made, stopped with the lab."""
    workdir = scenario.lab.workdir / "tor2"
    workdir.mkdir()
    tor2 = FrrPeer(
        scenario.lab.namespaces["tor2"],
        TOR2_ASN,
        TOR2_V4,
        [FrrNeighbor(NODE2_V4, NODE_ASN)],
        workdir,
    )
    tor2.start()
    scenario.lab.on_exit(tor2.stop)
    return tor2


class Lab2:
    """The running scenario, the second FRR, and the config as the test last wrote it."""

    def __init__(self, scenario: Scenario, tor2: FrrPeer) -> None:
        self.scenario = scenario
        self.tor1 = scenario.frr
        assert self.tor1 is not None
        self.tor2 = tor2
        assert scenario.kubeconfig is not None
        self.config = daemon_config(scenario.kubeconfig, static=[{"address": STATIC}])
        self.config["bgp"]["peers"] = [PEER1]

    @property
    def path(self) -> Path:
        assert self.scenario.config_path is not None
        return self.scenario.config_path

    def write(self, config: dict[str, Any], *, hup: bool = True) -> None:
        """Write ``config`` atomically (a poll never reads half a file), then SIGHUP."""
        self.config = config
        tmp = self.path.with_name("kvip-bgp.yaml.tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        os.replace(tmp, self.path)
        if hup:
            assert self.scenario.daemon is not None
            self.scenario.daemon.send_signal(signal.SIGHUP)

    def edited(self, **changes: Any) -> dict[str, Any]:
        config = copy.deepcopy(self.config)
        for dotted, value in changes.items():
            node_ = config
            *parents, last = dotted.split("__")
            for part in parents:
                node_ = node_[part]
            node_[last] = value
        return config

    def reloads(self, result: str) -> float:
        code, body = self.scenario.http("/metrics")
        assert code == 200
        for line in body.decode().splitlines():
            if line.startswith(f'kvip_bgp_config_reloads_total{{result="{result}"}}'):
                return float(line.split()[-1])
        return -1.0


def session(frr: FrrPeer, neighbor: str) -> tuple[int, int]:
    """(connectionsEstablished, the epoch its uptime counts from), from FRR's counters."""
    data = frr.vtysh_json(f"show bgp neighbors {neighbor} json")[neighbor]
    assert data["bgpState"] == "Established", f"{frr.ns.name}: {neighbor} is {data['bgpState']}"
    return int(data["connectionsEstablished"]), int(data["bgpTimerUpEstablishedEpoch"])


def assert_untouched(frr: FrrPeer, neighbor: str, before: tuple[int, int], since: float) -> None:
    """The session is the same one: no new connection, and its uptime kept counting from
    the same moment (established before the step began)."""
    now = session(frr, neighbor)
    # The epoch is FRR's "now - uptime" in whole seconds: it wobbles by one.
    same = now[0] == before[0] and abs(now[1] - before[1]) <= 1
    assert same, f"{frr.ns.name}: the session was reset ({before} -> {now})"
    assert before[1] <= time.time() - (time.monotonic() - since) + 1


def communities(routes: dict[str, FrrRoute]) -> dict[str, tuple[str, ...]]:
    return {prefix: route.communities for prefix, route in routes.items()}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab2]:
    from conftest import require_lab

    require_lab("/usr/lib/frr/bgpd", "vtysh")
    with Scenario(
        prefix="kvrl-",
        topology=second_tor,
        tor_neighbors=[FrrNeighbor(Lab.NODE_V4, NODE_ASN)],
    ) as scenario:
        tor2 = start_tor2(scenario)
        scenario.api.put(node())
        for name, vip in (("low", LOW), ("high", HIGH)):
            scenario.api.put(endpoint_slice(name, [NODE_NAME]))
            scenario.api.put(service(name, vip))
        lab2 = Lab2(scenario, tor2)
        scenario.start_daemon(lab2.config)
        scenario.wait_routes(
            lambda r: {f"{LOW}/32", f"{HIGH}/32", f"{STATIC}/32"} <= set(r), "the first routes"
        )
        yield lab2
        scenario.assert_daemon_alive()


ALL = {f"{LOW}/32", f"{HIGH}/32", f"{STATIC}/32"}


def test_1_a_second_tor_added_live_gets_every_route(lab: Lab2) -> None:
    before, since = session(lab.tor1, Lab.NODE_V4), time.monotonic()
    lab.write(lab.edited(bgp__peers=[PEER1, PEER2]))
    started = time.monotonic()
    routes = lab.tor2.wait_routes(lambda r: set(r) == ALL, 20, what="every route at tor2")
    print(f"second ToR had every route {time.monotonic() - started:.1f} s after SIGHUP")
    assert set(communities(routes).values()) == {("64512:100",)}
    assert set(lab.scenario.routes()) == ALL
    assert_untouched(lab.tor1, Lab.NODE_V4, before, since)
    assert lab.reloads("ok") == 1


def test_2_new_communities_reach_both_peers_without_a_reset(lab: Lab2) -> None:
    sessions = {1: session(lab.tor1, Lab.NODE_V4), 2: session(lab.tor2, NODE2_V4)}
    since = time.monotonic()
    lab.write(lab.edited(advertise={"communities": ["64512:200"]}))
    for frr in (lab.tor1, lab.tor2):
        frr.wait_routes(
            lambda r: set(r) == ALL and set(communities(r).values()) == {("64512:200",)},
            10,
            what="the new communities",
        )
    assert_untouched(lab.tor1, Lab.NODE_V4, sessions[1], since)
    assert_untouched(lab.tor2, NODE2_V4, sessions[2], since)


def test_3_narrowed_ranges_withdraw_only_what_fell_outside(lab: Lab2) -> None:
    sessions = {1: session(lab.tor1, Lab.NODE_V4), 2: session(lab.tor2, NODE2_V4)}
    since = time.monotonic()
    lab.write(lab.edited(vips={"allowed": ["198.51.100.0/25"], "interface": "lo"}))
    left = {f"{LOW}/32", f"{STATIC}/32"}
    for frr in (lab.tor1, lab.tor2):
        frr.wait_routes(lambda r: set(r) == left, 10, what="the narrowed set")
    # Unbound once vips.unbind_delay (1 s) has passed since ExaBGP acked the withdrawal.
    wait_until(lambda: HIGH not in lab.scenario.bound(), 5, what=f"{HIGH} unbound")
    services = {s["service"]: s for s in lab.scenario.status()["services"]}
    assert services["default/high"]["reason"] == "outside-allowed-ranges"
    assert_untouched(lab.tor1, Lab.NODE_V4, sessions[1], since)
    assert_untouched(lab.tor2, NODE2_V4, sessions[2], since)


def test_4_an_invalid_file_and_a_restart_only_key_change_nothing(lab: Lab2) -> None:
    sessions = {1: session(lab.tor1, Lab.NODE_V4), 2: session(lab.tor2, NODE2_V4)}
    since = time.monotonic()
    good = lab.config
    routes = {1: lab.tor1.routes(), 2: lab.tor2.routes()}
    failed = lab.reloads("failed")

    def last_error() -> str:
        return " ".join(lab.scenario.status()["config"]["last_reload_error"])

    invalid = lab.edited(bgp__hold_time="banana", advertise={"communities": ["64512:999"]})
    restart_only = lab.edited(bgp__asn=64999, advertise={"communities": ["64512:999"]})
    lab.write(invalid)
    wait_until(lambda: "bgp.hold_time" in last_error(), 10, what="the invalid file refused")
    lab.write(restart_only)
    wait_until(lambda: "bgp.asn" in last_error(), 10, what="the asn change refused")
    assert "need a restart" in last_error()
    # The poll and the signal may both have read a file: at least one failure each.
    assert lab.reloads("failed") >= failed + 2
    time.sleep(1.0)
    assert lab.tor1.routes() == routes[1]
    assert lab.tor2.routes() == routes[2]
    assert_untouched(lab.tor1, Lab.NODE_V4, sessions[1], since)
    assert_untouched(lab.tor2, NODE2_V4, sessions[2], since)
    lab.config = good


def test_5_a_configmap_symlink_swap_applies_without_a_signal(lab: Lab2) -> None:
    sessions = {1: session(lab.tor1, Lab.NODE_V4), 2: session(lab.tor2, NODE2_V4)}
    since = time.monotonic()
    directory = lab.path.parent
    data = directory / "..2026_01_01_00_00_00.1"
    data.mkdir()
    config = lab.edited(advertise={"communities": ["64512:300"]})
    (data / "kvip-bgp.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (directory / "..data").symlink_to(data.name)
    (directory / "link.tmp").symlink_to("..data/kvip-bgp.yaml")
    started = time.monotonic()
    (directory / "link.tmp").replace(lab.path)
    lab.config = config
    for frr in (lab.tor1, lab.tor2):
        frr.wait_routes(
            lambda r: set(communities(r).values()) == {("64512:300",)},
            10,
            what="the swapped file's communities",
        )
    print(f"symlink swap applied in {time.monotonic() - started:.1f} s without a signal")
    assert_untouched(lab.tor1, Lab.NODE_V4, sessions[1], since)
    assert_untouched(lab.tor2, NODE2_V4, sessions[2], since)
    # Back to a plain file for the next steps.
    lab.path.unlink()
    lab.write(config, hup=False)


def test_6_a_password_change_re_establishes_that_peer_alone(lab: Lab2) -> None:
    untouched, since = session(lab.tor1, Lab.NODE_V4), time.monotonic()
    before2 = session(lab.tor2, NODE2_V4)
    secret = lab.path.parent / "tor2.md5"
    secret.write_text("s3cret-tor2\n")
    lab.tor2.configure("router bgp 64501", f"neighbor {NODE2_V4} password s3cret-tor2")
    lab.write(lab.edited(bgp__peers=[PEER1, {**PEER2, "password_file": str(secret)}]))
    wait_until(
        lambda: (
            session(lab.tor2, NODE2_V4)[0] > before2[0]
            and lab.tor2.peer_state(NODE2_V4) == "Established"
        ),
        30,
        what="tor2 re-established with the password",
    )
    lab.tor2.wait_routes(
        lambda r: set(r) == {f"{LOW}/32", f"{STATIC}/32"}, 15, what="tor2's routes"
    )
    assert set(lab.tor1.routes()) == {f"{LOW}/32", f"{STATIC}/32"}
    assert_untouched(lab.tor1, Lab.NODE_V4, untouched, since)


def test_7_a_removed_peer_is_closed_and_the_other_stays(lab: Lab2) -> None:
    untouched, since = session(lab.tor1, Lab.NODE_V4), time.monotonic()
    lab.write(lab.edited(bgp__peers=[PEER1]))
    wait_until(
        lambda: lab.tor2.peer_state(NODE2_V4) != "Established",
        15,
        what="tor2's session closed",
    )
    # Withdrawn before the session went: no stale routes kept for the restart time.
    assert lab.tor2.routes() == {}
    peers = [p["address"] for p in lab.scenario.status()["peers"]]
    assert peers == [Lab.TOR_V4]
    assert set(lab.tor1.routes()) == {f"{LOW}/32", f"{STATIC}/32"}
    assert_untouched(lab.tor1, Lab.NODE_V4, untouched, since)
    lab.scenario.assert_daemon_alive()

    def events() -> list[Any]:
        return [line.get("event") for line in lab.scenario.log_lines()]

    # ExaBGP took each peer change (steps 1, 6, 7) as a reload, never as a restart.
    wait_until(lambda: events().count("exabgp.reloaded") == 3, 10, what="3 confirmed reloads")
    assert "exabgp.reload_failed" not in events()
    assert "app.exabgp_exited" not in events()


def test_8_a_node_label_brings_a_per_rack_peer_up_and_down(lab: Lab2) -> None:
    untouched, since = session(lab.tor1, Lab.NODE_V4), time.monotonic()
    secret = lab.path.parent / "tor2.md5"  # tor2 kept the password of step 6
    rack2 = {**PEER2, "password_file": str(secret), "node_selector": {"rack": "r2"}}
    lab.write(lab.edited(bgp__peers=[PEER1, rack2]))
    wait_until(lambda: lab.reloads("ok") >= 1, 5, what="reloaded")
    time.sleep(2.0)
    assert lab.tor2.peer_state(NODE2_V4) != "Established"  # this node is not in rack r2
    assert lab.tor2.routes() == {}
    started = time.monotonic()
    lab.scenario.api.put(node(labels={"kubernetes.io/hostname": NODE_NAME, "rack": "r2"}))
    lab.tor2.wait_routes(
        lambda r: set(r) == {f"{LOW}/32", f"{STATIC}/32"}, 20, what="the rack peer's routes"
    )
    print(f"label to routes at the rack's ToR: {time.monotonic() - started:.1f} s")
    lab.scenario.api.put(node())
    wait_until(
        lambda: lab.tor2.peer_state(NODE2_V4) != "Established",
        15,
        what="the rack peer closed once the label is gone",
    )
    assert lab.tor2.routes() == {}
    assert set(lab.tor1.routes()) == {f"{LOW}/32", f"{STATIC}/32"}
    assert_untouched(lab.tor1, Lab.NODE_V4, untouched, since)
    lab.scenario.assert_daemon_alive()


# ---------------------------------------------- BFD: a new peer set restarts the child


def test_a_new_bfd_peer_set_leaves_the_other_bfd_sessions_bgp_up() -> None:
    """A BFD peer added by a reload: the ToR, whose bgpd ties its session to BFD, must
    not reset BGP. (Replacing the BFD process with one for the new set made FRR reset
    that session on the AdminDown: so the running process takes the new set.)"""
    from conftest import require_lab

    from kvip_bgp.testing.bfdd import BFDD
    from kvip_bgp.testing.frr import ZebraBgp

    require_lab(BFDD, "/usr/lib/frr/zebra", "vtysh")

    from test_bfd_e2e import zebra_tor  # the ToR of the BFD lab tests: bgpd + bfdd + zebra

    with Scenario(prefix="kvrb-", tor=zebra_tor) as scenario:
        tor = scenario.tor_peer
        assert isinstance(tor, ZebraBgp)
        scenario.frr = tor
        scenario.api.put(node())
        scenario.api.put(endpoint_slice("low", [NODE_NAME]))
        scenario.api.put(service("low", LOW))
        assert scenario.kubeconfig is not None
        config = daemon_config(scenario.kubeconfig)
        bfd = {"min_rx": 300, "min_tx": 300, "multiplier": 3}
        config["bgp"]["peers"] = [{**PEER1, "bfd": bfd}]
        scenario.start_daemon(config)
        scenario.wait_routes(lambda r: f"{LOW}/32" in r, "the route")
        wait_until(lambda: any(p["status"] == "up" for p in tor.bfd_peers()), 15, what="BFD up")
        time.sleep(1.5)  # both sides leave the slow start rate
        before, since = session(tor, Lab.NODE_V4), time.monotonic()
        # A second BFD peer (nobody answers there): the BFD process adds its session.
        config["bgp"]["peers"].append(
            {"address": "192.0.2.99", "asn": 64500, "local_address": Lab.NODE_V4, "bfd": bfd}
        )
        path = scenario.write_config(config)
        assert path == scenario.config_path and scenario.daemon is not None
        scenario.daemon.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any(e.get("event") == "bfd.peers_changed" for e in scenario.log_lines()),
            10,
            what="the BFD process told of the new peer",
        )
        wait_until(
            lambda: any(
                e.get("event") == "bfd.log"
                and "session_created" in e.get("line", "")
                and "192.0.2.99" in e.get("line", "")
                for e in scenario.log_lines()
            ),
            10,
            what="the running BFD process to start the new peer's session",
        )
        assert any(p["status"] == "up" for p in tor.bfd_peers())
        time.sleep(2.0)
        assert f"{LOW}/32" in scenario.routes()
        assert_untouched(tor, Lab.NODE_V4, before, since)
