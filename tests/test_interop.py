"""Interop: kvip-bgp (real ExaBGP) against real BGP implementations in network namespaces.

Each test judges what the *peer* received (prefix, next hop, communities, large
communities, MED, local preference, AS path), never what kvip-bgp believes it sent:

- FRR eBGP and iBGP with per-Service attribute annotations (local-pref only shows on
  iBGP; an AS-path prepend only makes sense on eBGP);
- FRR multihop through a router namespace: the session comes up with ``ttl: 2`` (and
  ``ebgp-multihop`` on FRR), never with ``ttl: 1``;
- FRR with TCP-MD5: a wrong password never establishes, the right one does, and neither
  password shows in the daemon's log, ``/status`` or ``/metrics``;
- an IPv6 session carrying a /128 with next-hop self, and an IPv4 session carrying a
  /128 with the configured ``next_hop_v6``;
- BIRD 2 and GoBGP as peers receiving IPv4 and IPv6 routes with their attributes, and
  the withdrawals of a SIGTERM.

All namespaces use the prefix ``kvi-`` (other suites use ``kvl-`` at the same time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from conftest import require_lab

from kvip_bgp.testing.bird import BirdNeighbor, BirdPeer
from kvip_bgp.testing.frr import FrrNeighbor
from kvip_bgp.testing.gobgp import GobgpNeighbor, GobgpPeer
from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import NODE_ASN, TOR_ASN, Scenario, daemon_config

pytestmark = pytest.mark.lab

PREFIX = "kvi-"
V1 = "198.51.100.10"
V2 = "198.51.100.11"
V6 = "2001:db8:100::10"
ROUTER_V4 = "192.0.2.254"
TOR_FAR_V4 = "203.0.113.2"

ANNOTATIONS = {
    "kvip-bgp.io/communities": "64512:200,no-export",
    "kvip-bgp.io/large-communities": "64512:7:8",
    "kvip-bgp.io/med": "50",
    "kvip-bgp.io/as-path-prepend": "2",
    "kvip-bgp.io/local-preference": "250",
}
DEFAULTS = {"communities": ["64512:100"], "large_communities": ["64512:1:1"]}


def static_config(*vips: str, **overrides: Any) -> dict[str, Any]:
    return daemon_config(None, static=[{"address": v} for v in vips], **overrides)


def never(condition: Callable[[], bool], seconds: float, what: str, interval: float = 0.25) -> None:
    """Assert ``condition`` stays false for ``seconds`` (polled), naming ``what`` if not."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not condition(), what
        time.sleep(interval)


# ------------------------------------------------------------------ FRR eBGP and iBGP


@pytest.mark.parametrize("session", ["ebgp", "ibgp"])
def test_frr_receives_service_annotations(lab_required: None, session: str) -> None:
    tor_asn = NODE_ASN if session == "ibgp" else TOR_ASN
    with Scenario(
        prefix=PREFIX,
        tor_asn=tor_asn,
        tor_neighbors=[FrrNeighbor(Lab.NODE_V4, NODE_ASN)],
    ) as scenario:
        scenario.api.put_many(
            [
                node(),
                service("web", V1, annotations=ANNOTATIONS),
                endpoint_slice("web", [NODE_NAME]),
                service("plain", V2),
                endpoint_slice("plain", [NODE_NAME]),
            ]
        )
        config = daemon_config(scenario.kubeconfig, advertise=DEFAULTS)
        config["bgp"]["peers"][0]["asn"] = tor_asn
        scenario.start_daemon(config)
        routes = scenario.wait_routes(
            lambda r: {f"{V1}/32", f"{V2}/32"} <= set(r), f"both VIPs over {session}"
        )
        web, plain = routes[f"{V1}/32"], routes[f"{V2}/32"]
        assert web.next_hop == plain.next_hop == Lab.NODE_V4
        # Annotations extend the default communities and override the scalars.
        assert web.communities == ("64512:100", "64512:200", "no-export")
        assert web.large_communities == ("64512:1:1", "64512:7:8")
        assert web.med == 50
        assert plain.communities == ("64512:100",)
        assert plain.large_communities == ("64512:1:1",)
        assert plain.med is None
        if session == "ebgp":
            # Prepend 2: our AS three times. LOCAL_PREF is not sent to an eBGP peer.
            assert web.as_path == (NODE_ASN, NODE_ASN, NODE_ASN)
            assert plain.as_path == (NODE_ASN,)
            assert web.local_pref is None
        else:
            # iBGP: the path stays empty (our own AS in it is a loop to the whole AS and
            # FRR drops the route), and the local preference arrives.
            assert web.as_path == plain.as_path == ()
            assert web.local_pref == 250
            assert plain.local_pref == 100


# ------------------------------------------------------------------ FRR multihop


def routed_topology(lab: Lab) -> None:
    """node 192.0.2.1/24 -- (192.0.2.254) rtr (203.0.113.1) -- 203.0.113.2/24 tor."""
    lab.node.run("ip", "link", "del", Lab.NODE_IF)  # the direct veth goes, both ends
    rtr = lab.add_netns("rtr")
    lab.add_link(lab.node, Lab.NODE_IF, rtr, "r0", [f"{Lab.NODE_V4}/24"], [f"{ROUTER_V4}/24"])
    lab.add_link(rtr, "r1", lab.tor, Lab.TOR_IF, ["203.0.113.1/24"], [f"{TOR_FAR_V4}/24"])
    rtr.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    lab.node.run("ip", "route", "add", "203.0.113.0/24", "via", ROUTER_V4)
    lab.tor.run("ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.1")


def test_frr_multihop_needs_ttl_2(lab_required: None) -> None:
    with Scenario(
        kubernetes=False,
        prefix=PREFIX,
        topology=routed_topology,
        tor_neighbors=[FrrNeighbor(Lab.NODE_V4, NODE_ASN, ebgp_multihop=2)],
    ) as scenario:
        assert scenario.frr is not None
        frr = scenario.frr

        def peer(ttl: int) -> dict[str, Any]:
            return {
                "address": TOR_FAR_V4,
                "asn": TOR_ASN,
                "local_address": Lab.NODE_V4,
                "ttl": ttl,
            }

        config = static_config(V1)
        config["bgp"]["peers"] = [peer(1)]
        scenario.start_daemon(config)
        # ttl 1: every packet dies at the router, so FRR never sees an OPEN.
        never(
            lambda: frr.peer_state(Lab.NODE_V4) == "Established",
            4.0,
            "a ttl: 1 session came up through a router",
        )
        assert scenario.routes() == {}
        assert scenario.stop_daemon() == 0

        config["bgp"]["peers"] = [peer(2)]
        started = time.monotonic()
        scenario.start_daemon(config)
        routes = scenario.wait_routes(lambda r: f"{V1}/32" in r, "the VIP over two hops")
        assert routes[f"{V1}/32"].next_hop == Lab.NODE_V4
        assert frr.peer_state(Lab.NODE_V4) == "Established"
        print(f"multihop ttl 2: route at FRR {time.monotonic() - started:.2f}s after start")


# ------------------------------------------------------------------ FRR TCP-MD5

RIGHT_PASSWORD = "kvi-Right-Secret-7f3a"
WRONG_PASSWORD = "kvi-Wrong-Secret-91c2"


def test_frr_md5_password(lab_required: None) -> None:
    with Scenario(
        kubernetes=False,
        prefix=PREFIX,
        tor_neighbors=[FrrNeighbor(Lab.NODE_V4, NODE_ASN, password=RIGHT_PASSWORD)],
    ) as scenario:
        assert scenario.frr is not None
        frr = scenario.frr
        password_file = scenario.lab.workdir / "tor.md5"
        password_file.write_text(WRONG_PASSWORD + "\n")
        password_file.chmod(0o600)
        config = static_config(V1)
        config["bgp"]["peers"][0]["password_file"] = str(password_file)

        def leaked() -> list[str]:
            found = []
            texts = {
                "log": scenario.log_path.read_text(errors="replace"),
                "/status": scenario.http("/status")[1].decode(errors="replace"),
                "/metrics": scenario.http("/metrics")[1].decode(errors="replace"),
            }
            for where, text in texts.items():
                for secret in (RIGHT_PASSWORD, WRONG_PASSWORD):
                    if secret in text:
                        found.append(f"{secret} in {where}")
            return found

        scenario.start_daemon(config)
        never(
            lambda: frr.peer_state(Lab.NODE_V4) == "Established",
            4.0,
            "a session with the wrong MD5 password came up",
        )
        assert scenario.routes() == {}
        status = scenario.status()
        assert all(p["state"] != "up" for p in status["peers"]), status["peers"]
        assert leaked() == []
        assert scenario.stop_daemon() == 0

        password_file.write_text(RIGHT_PASSWORD + "\n")
        scenario.start_daemon(config)
        scenario.wait_routes(lambda r: f"{V1}/32" in r, "the VIP over the MD5 session")
        assert frr.peer_state(Lab.NODE_V4) == "Established"
        assert leaked() == []


# ------------------------------------------------------------------ IPv6


V6_SESSION = {"address": Lab.TOR_V6, "asn": TOR_ASN, "local_address": Lab.NODE_V6}
V4_SESSION_NH6 = {
    "address": Lab.TOR_V4,
    "asn": TOR_ASN,
    "local_address": Lab.NODE_V4,
    "next_hop_v6": Lab.NODE_V6,
}


@pytest.mark.parametrize(
    "sessions",
    [
        pytest.param(("v6",), id="ipv6-session"),
        pytest.param(("v4",), id="ipv4-session-next-hop-v6"),
        # Both at once: the daemon must address each neighbor with its own next hop
        # ("neighbor X announce ..."), and FRR gets one path per session.
        pytest.param(("v4", "v6"), id="both-sessions"),
    ],
)
def test_frr_ipv6_vip(lab_required: None, sessions: tuple[str, ...]) -> None:
    neighbors = {"v4": FrrNeighbor(Lab.NODE_V4, NODE_ASN), "v6": FrrNeighbor(Lab.NODE_V6, NODE_ASN)}
    peers = {"v4": V4_SESSION_NH6, "v6": V6_SESSION}
    with Scenario(
        kubernetes=False, prefix=PREFIX, tor_neighbors=[neighbors[s] for s in sessions]
    ) as scenario:
        assert scenario.frr is not None
        config = static_config(V6, advertise={"communities": ["64512:600"], "med": 7})
        config["bgp"]["peers"] = [peers[s] for s in sessions]
        config["bgp"]["router_id"] = Lab.NODE_V4
        scenario.start_daemon(config)
        routes = scenario.wait_routes(lambda r: f"{V6}/128" in r, "the /128", afi="ipv6")
        route = routes[f"{V6}/128"]
        assert route.next_hop == Lab.NODE_V6
        assert route.communities == ("64512:600",)
        assert route.med == 7
        assert route.as_path == (NODE_ASN,)
        for name in sessions:
            scenario.frr.wait_established(neighbors[name].address)

        def senders() -> set[str]:
            assert scenario.frr is not None
            detail = scenario.frr.vtysh_json(f"show bgp ipv6 unicast {V6}/128 json")
            return {path["peer"]["peerId"] for path in detail.get("paths", [])}

        expected = {neighbors[s].address for s in sessions}
        wait_until(lambda: senders() == expected, 10, what=f"a path from each of {expected}")
        assert V6 in scenario.bound()
        assert scenario.status()["last_errors"] == []


# ------------------------------------------------------------------ BIRD and GoBGP


def start_bird(lab: Lab) -> BirdPeer:
    peer = BirdPeer(
        lab.tor,
        TOR_ASN,
        Lab.TOR_V4,
        Lab.TOR_V4,
        [BirdNeighbor(Lab.NODE_V4, NODE_ASN)],
        lab.workdir / "bird",
    )
    peer.start()
    lab.on_exit(peer.stop)
    return peer


def start_gobgp(lab: Lab) -> GobgpPeer:
    peer = GobgpPeer(
        lab.tor, TOR_ASN, Lab.TOR_V4, [GobgpNeighbor(Lab.NODE_V4, NODE_ASN)], lab.workdir / "gobgp"
    )
    peer.start()
    lab.on_exit(peer.stop)
    return peer


PEERS: dict[str, tuple[tuple[str, ...], Callable[[Lab], object]]] = {
    "bird": (("bird", "birdc"), start_bird),
    "gobgp": (("gobgpd", "gobgp"), start_gobgp),
}


def peer_routes(peer: object) -> dict[str, Any]:
    """Every route the peer holds, IPv4 and IPv6, as BirdRoute/GobgpRoute values."""
    if isinstance(peer, BirdPeer):
        return dict(peer.routes())
    gobgp = cast(GobgpPeer, peer)
    return {**gobgp.routes("ipv4"), **gobgp.routes("ipv6")}


@pytest.fixture(params=sorted(PEERS))
def other_peer(request: pytest.FixtureRequest, lab_required: None) -> Iterator[Scenario]:
    binaries, start = PEERS[request.param]
    require_lab(*binaries)
    with Scenario(kubernetes=False, prefix=PREFIX, tor=start) as scenario:
        yield scenario


def test_bird_and_gobgp_receive_routes_with_attributes(other_peer: Scenario) -> None:
    scenario = other_peer
    peer = scenario.tor_peer
    config = static_config(
        V1,
        V6,
        advertise={
            "communities": ["64512:300", "no-export"],
            "large_communities": ["64512:1:2"],
            "med": 5,
        },
    )
    config["bgp"]["peers"][0]["next_hop_v6"] = Lab.NODE_V6
    scenario.start_daemon(config)

    seen: dict[str, dict[str, Any]] = {}

    def arrived() -> bool:
        scenario.assert_daemon_alive()
        seen["last"] = peer_routes(peer)
        return {f"{V1}/32", f"{V6}/128"} <= set(seen["last"])

    try:
        wait_until(arrived, 20, 0.2, what="both VIPs at the peer")
    except TimeoutError as error:
        detail = f"{error}; peer has {seen.get('last')}\n{scenario.log_tail()}"
        raise AssertionError(detail) from None
    routes = seen["last"]
    for prefix, next_hop in ((f"{V1}/32", Lab.NODE_V4), (f"{V6}/128", Lab.NODE_V6)):
        route = routes[prefix]
        assert route.next_hop == next_hop, route
        # BIRD prints no-export numerically, GoBGP by name.
        assert set(route.communities) in (
            {"64512:300", "no-export"},
            {"64512:300", "65535:65281"},
        ), route
        assert route.large_communities == ("64512:1:2",), route
        assert route.med == 5, route
        assert route.as_path == (NODE_ASN,), route

    # SIGTERM: the peer sees withdrawals at once (not a hold-timer expiry 9 s later).
    assert scenario.stop_daemon() == 0
    assert set(peer_routes(peer)) & {f"{V1}/32", f"{V6}/128"} == set()
