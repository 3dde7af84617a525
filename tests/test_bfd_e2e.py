"""``kvip-bgp run`` with ``bfd`` on its peer: FRR bgpd and FRR bfdd in the ToR namespace.

What the daemon promises about BFD, checked on the real processes: the session comes up
and shows in /status and the metrics; a silent link makes the peer count as down
(/status, ``kvip_bgp_session_up``, /readyz) although BGP itself has not noticed yet;
SIGTERM withdraws every route before it sends AdminDown; a SIGKILL of the daemon takes
the BFD process with it, so the ToR sees the failure within its detection time.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_lab

from kvip_bgp.testing.bfdd import BFDD, Bfdd
from kvip_bgp.testing.frr import FrrNeighbor, ZebraBgp
from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import NODE_ASN, TOR_ASN, Scenario, daemon_config

pytestmark = pytest.mark.lab

V1 = "198.51.100.10"


@pytest.fixture
def scenario(lab_required: None) -> Iterator[Scenario]:
    require_lab(BFDD)
    with Scenario(prefix="kvbe-") as running:
        running.api.put(node())
        running.api.put(endpoint_slice("web", [NODE_NAME]))
        running.api.put(service("web", V1))
        yield running


def bfd_config(scenario: Scenario) -> dict[str, Any]:
    config = daemon_config(scenario.kubeconfig)
    config["bgp"]["peers"][0]["bfd"] = {"min_rx": 300, "min_tx": 300, "multiplier": 3}
    return config


def peer_view(scenario: Scenario) -> dict[str, Any]:
    peers = scenario.status()["peers"]
    assert len(peers) == 1, peers
    view: dict[str, Any] = peers[0]
    return view


def metric(scenario: Scenario, name: str) -> float | None:
    code, body = scenario.http("/metrics")
    assert code == 200
    for line in body.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_bfd_up_then_a_silent_link_counts_the_peer_as_down(scenario: Scenario) -> None:
    bfdd = Bfdd(scenario.lab)
    scenario.start_daemon(bfd_config(scenario))
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web's VIP at FRR")
    wait_until(lambda: peer_view(scenario)["bfd"] == "up", 10, what="BFD up in /status")
    assert peer_view(scenario)["up"] is True
    # bfdd goes Up on our first Up packet, which follows our Up by up to a second.
    wait_until(lambda: bfdd.status() == "up", 3, what="bfdd to see the session up")
    time.sleep(1.5)  # both sides leave the slow start rate (Poll sequences)
    assert metric(scenario, "kvip_bgp_bfd_session_up") == 1.0
    assert metric(scenario, "kvip_bgp_session_up") == 1.0
    assert scenario.http("/readyz")[0] == 200

    for ns, ifname in ((scenario.lab.tor, Lab.TOR_IF), (scenario.lab.node, Lab.NODE_IF)):
        ns.run("tc", "qdisc", "replace", "dev", ifname, "root", "pfifo", "limit", "0")
    start = time.monotonic()
    wait_until(lambda: peer_view(scenario)["bfd"] == "down", 5, 0.05, what="BFD down")
    took = time.monotonic() - start
    view = peer_view(scenario)
    # BGP (hold time 9 s) has not noticed yet; BFD has, and the peer counts as down.
    assert view["state"] == "up" and view["up"] is False, view
    assert took < 1.5, f"BFD down after {took:.2f} s"
    assert metric(scenario, "kvip_bgp_session_up") == 0.0
    assert metric(scenario, "kvip_bgp_bfd_session_up") == 0.0
    assert scenario.http("/readyz")[0] == 503
    changes = [
        line
        for line in scenario.log_lines()
        if line.get("event") == "bfd.log" and "bfd.state_changed" in line.get("line", "")
    ]
    assert changes, "the BFD process logs every state change"


def test_sigterm_withdraws_first_then_sends_admin_down(scenario: Scenario) -> None:
    bfdd = Bfdd(scenario.lab)
    daemon = scenario.start_daemon(bfd_config(scenario))
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web's VIP at FRR")
    wait_until(lambda: bfdd.status() == "up", 10, what="bfdd to see the session up")
    daemon.send_signal(signal.SIGTERM)
    # Sample both until the daemon is gone: the route must leave before BFD does.
    route_gone_at = bfd_down_at = None
    deadline = time.monotonic() + 15
    while daemon.poll() is None and time.monotonic() < deadline:
        now = time.monotonic()
        if route_gone_at is None and f"{V1}/32" not in scenario.routes():
            route_gone_at = now
        if bfd_down_at is None and bfdd.status() == "down":
            bfd_down_at = now
        time.sleep(0.02)
    assert daemon.wait(5) == 0
    assert route_gone_at is not None, "the route was still at FRR when the daemon exited"
    wait_until(lambda: bfdd.status() == "down", 3, what="bfdd to take the session down")
    peer = bfdd.peer()
    assert peer is not None and peer["remote-diagnostic"] == "administratively down"
    assert bfd_down_at is None or bfd_down_at >= route_gone_at


def test_a_killed_daemon_takes_bfd_with_it_and_the_tor_notices(scenario: Scenario) -> None:
    bfdd = Bfdd(scenario.lab)
    daemon = scenario.start_daemon(bfd_config(scenario))
    wait_until(lambda: bfdd.status() == "up", 15, what="bfdd to see the session up")
    time.sleep(1.5)  # both sides leave the slow start rate
    daemon.send_signal(signal.SIGKILL)
    start = time.monotonic()
    wait_until(lambda: bfdd.status() == "down", 5, 0.02, what="bfdd to see the crash")
    took = time.monotonic() - start
    assert took < 1.5, f"bfdd saw the crash after {took:.2f} s"
    peer = bfdd.peer()
    assert peer is not None and peer["diagnostic"] == "control detection time expired"


# ------------------------------------------------------- the ToR's side: bgpd + bfdd


def zebra_tor(lab: Lab) -> ZebraBgp:
    """A ToR whose bgpd ties the node's session to BFD (``neighbor X bfd``) through zebra."""
    tor = ZebraBgp(
        lab.tor,
        TOR_ASN,
        Lab.TOR_V4,
        [FrrNeighbor(Lab.NODE_V4, NODE_ASN, bfd=True)],
        lab.workdir / "tor",
        bfdd=True,
    )
    tor.start()
    lab.on_exit(tor.stop)
    return tor


@pytest.fixture
def bfd_tor(lab_required: None) -> Iterator[tuple[Scenario, ZebraBgp]]:
    require_lab(BFDD, "/usr/lib/frr/zebra")
    with Scenario(prefix="kvbz-", tor=zebra_tor) as running:
        tor = running.tor_peer
        assert isinstance(tor, ZebraBgp)
        running.frr = tor
        running.api.put(node())
        running.api.put(endpoint_slice("web", [NODE_NAME]))
        running.api.put(service("web", V1))
        yield running, tor


def tor_fib_has(scenario: Scenario, prefix: str) -> bool:
    out = scenario.lab.tor.run("ip", "route", "show", prefix, check=False).stdout
    return prefix.split("/")[0] in out


def test_the_tor_drops_a_silent_nodes_routes_within_its_detection_time(
    bfd_tor: tuple[Scenario, ZebraBgp],
) -> None:
    """The node goes silent (link up, every packet dropped): hold time 9 s, BFD 0.9 s."""
    scenario, tor = bfd_tor
    scenario.start_daemon(bfd_config(scenario))
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web's VIP at the ToR")
    wait_until(lambda: any(p["status"] == "up" for p in tor.bfd_peers()), 15, what="bgpd's BFD up")
    wait_until(lambda: tor_fib_has(scenario, f"{V1}/32"), 5, what="the VIP in the ToR's FIB")
    time.sleep(1.5)  # both sides leave the slow start rate
    for ns, ifname in ((scenario.lab.tor, Lab.TOR_IF), (scenario.lab.node, Lab.NODE_IF)):
        ns.run("tc", "qdisc", "replace", "dev", ifname, "root", "pfifo", "limit", "0")
    start = time.monotonic()
    wait_until(lambda: not tor_fib_has(scenario, f"{V1}/32"), 5, 0.02, what="FIB cleared")
    took = time.monotonic() - start
    print(f"silent node: its VIP left the ToR's FIB after {took:.2f} s (hold time 9 s)")
    assert took < 1.5, f"the ToR dropped the route after {took:.2f} s"


def test_a_killed_daemons_routes_stay_stale_at_the_tor_despite_bfd(
    bfd_tor: tuple[Scenario, ZebraBgp],
) -> None:
    """What a crash does today, with graceful restart on (the default): kvip-bgp SIGKILLed
    takes ExaBGP and the BFD process with it, the TCP session closes at once, and the ToR
    keeps the routes as stale (graceful-restart helper) although BFD goes down 0.9 s
    later: FRR's bgpd acts on a BFD Down only for an Established session. The node's
    VIPs stay bound, so the traffic keeps flowing until the restarted daemon takes over
    (the README says why that is the right outcome); silent failures (above) are where
    BFD shortens the outage."""
    scenario, tor = bfd_tor
    daemon = scenario.start_daemon(bfd_config(scenario))
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web's VIP at the ToR")
    wait_until(lambda: any(p["status"] == "up" for p in tor.bfd_peers()), 15, what="bgpd's BFD up")
    time.sleep(1.5)
    daemon.send_signal(signal.SIGKILL)
    wait_until(
        lambda: all(p["status"] == "down" for p in tor.bfd_peers()), 5, 0.05, what="BFD down"
    )
    time.sleep(1.0)
    route = scenario.routes()[f"{V1}/32"]
    assert route.stale, "the route should be kept as stale by the graceful-restart helper"
    assert tor_fib_has(scenario, f"{V1}/32")
    assert V1 in scenario.bound(), "the node still holds the VIP it is attracting"
