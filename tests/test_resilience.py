"""Resilience: ExaBGP, its helper and the daemon itself killed while routes are announced.

FRR's table is polled every ~70 ms through each restart and every observation is kept,
so an assertion failure prints the whole present/stale/absent timeline.

- ExaBGP SIGKILLed: the daemon restarts it (backoff 2 s after a short life) and
  re-announces everything, then sends End-of-RIB. With ``graceful_restart`` > 0 the
  prefixes are NEVER absent at FRR (present -> stale -> present); without it they vanish
  and come back by themselves.
- The relay (ExaBGP's helper process) SIGKILLed: ExaBGP respawns it and keeps its
  routes and sessions; the routes never even go stale.
- The daemon SIGKILLed, a Service deleted while it is dead, the daemon started again: the
  deleted VIP's stale route is flushed by End-of-RIB, its address (ours, protocol 248) is
  removed, the surviving VIP is announced once by exactly one ExaBGP, and an address
  added by hand on the same ``lo`` is untouched.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from kvip_bgp.netif.addresses import FamilyTable
from kvip_bgp.testing.netlab import in_netns, send_signal, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.procfs import cmdline, parent, pid_alive
from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab

PREFIX = "kvi-"
V1 = "198.51.100.10"
V2 = "198.51.100.11"
FOREIGN = "198.51.100.99"
POLL = 0.07


def node_pids(scenario: Scenario, *needle: str) -> list[int]:
    """Live pids in the node namespace whose command line contains ``needle`` in order."""
    found = []
    for pid in scenario.lab.node.pids():
        argv = cmdline(pid)
        text = " ".join(argv)
        if pid_alive(pid) and " ".join(needle) in text:
            found.append(pid)
    return found


def exabgp_pid(scenario: Scenario) -> int:
    """The ExaBGP server that is a child of the daemon (exactly one must run)."""
    assert scenario.daemon is not None
    pids = node_pids(scenario, "exabgp", "server")
    children = [pid for pid in pids if parent(pid) == scenario.daemon.pid]
    assert len(pids) == 1 and children == pids, f"exabgp processes {pids}, children {children}"
    return pids[0]


@dataclass(frozen=True)
class Observation:
    at: float
    state: str  # "fresh" | "stale" | "absent"


def observe(scenario: Scenario, prefixes: set[str], t0: float) -> Observation:
    routes = scenario.routes()
    if not prefixes <= set(routes):
        state = "absent"
    elif any(routes[p].stale for p in prefixes):
        state = "stale"
    else:
        state = "fresh"
    return Observation(round(time.monotonic() - t0, 2), state)


def timeline(observations: list[Observation]) -> str:
    """Compress the observations into "fresh@0.0 stale@0.3 fresh@2.9"."""
    steps: list[str] = []
    last = None
    for obs in observations:
        if obs.state != last:
            steps.append(f"{obs.state}@{obs.at}")
            last = obs.state
    return " ".join(steps)


def watch_restart(scenario: Scenario, prefixes: set[str], timeout: float) -> list[Observation]:
    """Poll FRR until the prefixes went away from fresh and came back fresh (or timeout)."""
    t0 = time.monotonic()
    seen: list[Observation] = []
    left_fresh = False
    while time.monotonic() - t0 < timeout:
        scenario.assert_daemon_alive()
        obs = observe(scenario, prefixes, t0)
        seen.append(obs)
        if obs.state != "fresh":
            left_fresh = True
        elif left_fresh:
            return seen
        time.sleep(POLL)
    return seen


@pytest.fixture
def static_scenario(lab_required: None) -> Iterator[Scenario]:
    with Scenario(kubernetes=False, prefix=PREFIX) as scenario:
        yield scenario


@pytest.mark.parametrize("graceful_restart", [30, 0], ids=["graceful-restart", "no-gr"])
def test_exabgp_sigkill_routes_come_back(static_scenario: Scenario, graceful_restart: int) -> None:
    scenario = static_scenario
    config = daemon_config(None, static=[{"address": V1}, {"address": V2}])
    config["bgp"]["graceful_restart"] = graceful_restart
    scenario.start_daemon(config)
    prefixes = {f"{V1}/32", f"{V2}/32"}
    scenario.wait_routes(
        lambda r: prefixes <= set(r) and not any(r[p].stale for p in prefixes), "fresh VIPs"
    )
    old = exabgp_pid(scenario)

    send_signal(old, signal.SIGKILL)
    seen = watch_restart(scenario, prefixes, timeout=30)
    story = timeline(seen)
    print(f"ExaBGP SIGKILL, graceful_restart={graceful_restart}: {story} ({len(seen)} polls)")

    assert seen[-1].state == "fresh", f"routes did not come back: {story}\n{scenario.log_tail()}"
    new = exabgp_pid(scenario)
    assert new != old
    states = {obs.state for obs in seen}
    if graceful_restart:
        assert "absent" not in states, f"a prefix vanished during a graceful restart: {story}"
        assert "stale" in states, f"FRR never saw the restart: {story}"
    else:
        assert "absent" in states, story
    events = [line.get("event") for line in scenario.log_lines()]
    assert "app.exabgp_exited" in events


def test_relay_sigkill_keeps_routes_fresh(static_scenario: Scenario) -> None:
    """ExaBGP respawns its helper; the daemon resends on the new connection; BGP is unaware."""
    scenario = static_scenario
    scenario.start_daemon(daemon_config(None, static=[{"address": V1}]))
    prefixes = {f"{V1}/32"}
    scenario.wait_routes(lambda r: f"{V1}/32" in r and not r[f"{V1}/32"].stale, "fresh VIP")
    relays = node_pids(scenario, "kvip_bgp.bgp.relay")
    assert len(relays) == 1, relays
    exabgp = exabgp_pid(scenario)

    send_signal(relays[0], signal.SIGKILL)
    t0 = time.monotonic()
    seen = []

    def reconnected() -> bool:
        seen.append(observe(scenario, prefixes, t0))
        connects = [
            line for line in scenario.log_lines() if line.get("event") == "exabgp.api_connected"
        ]
        return len(connects) >= 2 and scenario.status()["exabgp_connected"]

    wait_until(reconnected, 15, POLL, what="the daemon to see the respawned relay")
    for _ in range(10):  # and a little while after the resend
        seen.append(observe(scenario, prefixes, t0))
        time.sleep(POLL)
    story = timeline(seen)
    print(f"relay SIGKILL: {story}")
    assert {obs.state for obs in seen} == {"fresh"}, story
    assert exabgp_pid(scenario) == exabgp  # ExaBGP itself never restarted
    new_relays = node_pids(scenario, "kvip_bgp.bgp.relay")
    assert len(new_relays) == 1 and new_relays != relays


def test_daemon_sigkill_and_restart(lab_required: None) -> None:
    with Scenario(prefix=PREFIX) as scenario:
        assert scenario.frr is not None
        scenario.api.put_many(
            [
                node(),
                service("web", V1),
                endpoint_slice("web", [NODE_NAME]),
                service("db", V2),
                endpoint_slice("db", [NODE_NAME]),
            ]
        )
        # Someone else's address on the same interface, inside the allowed range.
        scenario.lab.node.run("ip", "addr", "add", f"{FOREIGN}/32", "dev", "lo")
        scenario.start_daemon()
        both = {f"{V1}/32", f"{V2}/32"}
        scenario.wait_routes(lambda r: both <= set(r), "both VIPs")
        assert scenario.bound() == {V1, V2, FOREIGN}

        daemon = scenario.daemon
        assert daemon is not None
        daemon.kill()
        daemon.wait(5)
        # ExaBGP follows its parent (PDEATHSIG), without a NOTIFICATION: FRR keeps the
        # routes as stale (graceful restart) and the addresses stay where they were.
        wait_until(lambda: not node_pids(scenario, "exabgp", "server"), 10, what="ExaBGP to exit")
        scenario.frr.wait_routes(  # not scenario.wait_routes: that insists the daemon runs
            lambda r: both <= set(r) and all(r[p].stale for p in both), what="stale routes"
        )
        assert scenario.bound() == {V1, V2, FOREIGN}

        scenario.api.delete("Service", "db", "default")  # while the daemon is dead
        started = time.monotonic()
        scenario.start_daemon()
        routes = scenario.wait_routes(
            lambda r: f"{V2}/32" not in r and f"{V1}/32" in r and not r[f"{V1}/32"].stale,
            "V1 fresh and the deleted Service's V2 flushed",
        )
        elapsed = time.monotonic() - started
        print(f"daemon SIGKILL + restart: converged {elapsed:.2f}s after the new start")
        assert set(routes) == {f"{V1}/32"}
        wait_until(
            lambda: scenario.bound() == {V1, FOREIGN},
            10,
            what=f"addresses {{V1, FOREIGN}}, have {scenario.bound()}",
        )

        # Exactly one ExaBGP, one path per prefix, nothing stale.
        exabgp_pid(scenario)
        detail = scenario.frr.vtysh_json(f"show bgp ipv4 unicast {V1}/32 json")
        assert len(detail["paths"]) == 1, detail
        # The foreign address kept no protocol mark, ours (an IPv4 VIP: a local route with
        # the default vips.bind) carries 248 (read through the daemon's own netlink code:
        # iproute2 6.1 cannot show IFA_PROTO).
        with in_netns(scenario.lab.node.name):
            table = FamilyTable("lo", create=False)
        try:
            marks = {
                str(a): entry.owned for a, entry in table.addresses().items() if not a.is_loopback
            }
        finally:
            table.close()
        assert marks == {V1: True, FOREIGN: False}, marks
        adopted = [
            line
            for line in scenario.log_lines()
            if line.get("event") == "reconciler.adopted_addresses"
        ]
        assert adopted and adopted[-1]["count"] == 2, adopted
