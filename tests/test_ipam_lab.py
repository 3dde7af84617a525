"""Address management with the real daemon, ExaBGP, FRR and the fake API.

One lab for the whole module, in steps that build on each other: a Service without a VIP
gets one and FRR learns it; a pool runs out and a release serves the waiting Service; a
restart and a pool edit move nothing; two daemons racing for the Lease never hand an
address out twice.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_lab

from kvip_bgp.domain.claims import POOL_ANNOTATION
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab

KVIP = str(Path(sys.executable).parent / "kvip-bgp")
POOLS = [{"name": "public", "addresses": ["198.51.100.64/30"]}]
EDITED = [
    {"name": "public", "addresses": ["198.51.100.60-198.51.100.70"]},
    {"name": "extra", "addresses": ["198.51.100.80/28"], "priority": 1},
]


def config(scenario: Scenario, pools: list[dict[str, Any]]) -> dict[str, Any]:
    cfg = daemon_config(scenario.kubeconfig)
    cfg["kubernetes"]["lease_duration"] = 3
    cfg["ipam"] = {"pools": pools}
    return cfg


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    require_lab("/usr/lib/frr/bgpd", "vtysh")
    with Scenario() as running:
        running.api.put(node())
        running.start_daemon(config(running, POOLS))
        wait_until(lambda: running.http("/readyz")[0] == 200, 20, what="/readyz 200")
        yield running


def add(scenario: Scenario, name: str, **kw: Any) -> None:
    scenario.api.put(endpoint_slice(name, [NODE_NAME]))
    scenario.api.put(service(name, **kw))


def ingress(scenario: Scenario, name: str) -> list[str]:
    obj = scenario.api.get("Service", name, "default") or {}
    status = (obj.get("status") or {}).get("loadBalancer") or {}
    return [i["ip"] for i in status.get("ingress") or []]


def pool_of(scenario: Scenario, name: str) -> str | None:
    obj = scenario.api.get("Service", name, "default") or {}
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(POOL_ANNOTATION)


def written_pool(scenario: Scenario, name: str) -> str | None:
    """The pool annotation, once the holder has written it: ``allocator.apply`` PATCHes
    the status first and the annotation after, so right after the ingress is seen the
    annotation may not be there yet."""
    wait_until(lambda: pool_of(scenario, name) is not None, 10, what=f"{name}'s pool annotation")
    return pool_of(scenario, name)


def events(scenario: Scenario, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in scenario.api.events()
        if e["involvedObject"]["name"] == name and e["reason"] == reason
    ]


def allocations(scenario: Scenario) -> dict[str, tuple[str, ...]]:
    return {
        s["metadata"]["name"]: tuple(ingress(scenario, s["metadata"]["name"]))
        for s in scenario.api.items("Service")
    }


def test_a_service_without_a_vip_gets_one_and_frr_learns_it(scenario: Scenario) -> None:
    add(scenario, "web")
    wait_until(lambda: ingress(scenario, "web") == ["198.51.100.64"], 10, what="web allocated")
    assert written_pool(scenario, "web") == "public"
    scenario.wait_routes(lambda r: "198.51.100.64/32" in r, "web's allocated VIP at FRR")
    (allocated,) = events(scenario, "web", "IPAllocated")
    assert allocated["type"] == "Normal" and "from pool public" in allocated["message"]
    explain = scenario.lab.node.run(KVIP, "explain", "default/web", check=False)
    assert "allocation: pool public -> 198.51.100.64" in explain.stdout, explain.stdout
    status = scenario.lab.node.run(KVIP, "status", check=False)
    assert "IPAM POOLS" in status.stdout and "public" in status.stdout


def test_exhaustion_fails_once_and_a_release_serves_the_waiting_service(
    scenario: Scenario,
) -> None:
    for name in ("a", "b", "c"):
        add(scenario, name)
    wait_until(lambda: all(ingress(scenario, n) for n in "abc"), 10, what="a, b, c allocated")
    time.sleep(1.1)  # d is younger (creationTimestamp has whole seconds)
    add(scenario, "d")
    wait_until(lambda: events(scenario, "d", "AllocationFailed"), 10, what="d fails")
    # Other changes make the allocator plan again: d is not told again.
    scenario.api.put(service("a", labels={"touched": "yes"}))
    time.sleep(2)
    (failed,) = events(scenario, "d", "AllocationFailed")
    assert failed["count"] == 1 and failed["type"] == "Warning"
    assert "no free address" in failed["message"]
    pending = scenario.status()["ipam"]["pending"]
    assert [p["service"] for p in pending] == ["default/d"]
    assert ingress(scenario, "d") == []
    # b goes: d gets its address without a restart or an edit.
    freed = ingress(scenario, "b")
    scenario.api.delete("Service", "b", "default")
    wait_until(lambda: ingress(scenario, "d") == freed, 10, what="d gets b's address")
    scenario.wait_routes(lambda r: f"{freed[0]}/32" in r, "d's route")
    pools = scenario.status()["ipam"]["pools"]
    assert pools == [{"pool": "public", "family": 4, "assigned": 4, "available": 0}]


def test_a_restart_keeps_every_address(scenario: Scenario) -> None:
    before = allocations(scenario)
    assert all(before.values())
    scenario.stop_daemon()
    scenario.api.clear_requests()
    scenario.start_daemon(config(scenario, POOLS))
    wait_until(lambda: scenario.http("/readyz")[0] == 200, 20, what="/readyz 200 again")
    wait_until(lambda: scenario.status()["ipam"]["allocating"], 10, what="allocating")
    time.sleep(1)
    assert allocations(scenario) == before
    assert scenario.api.count_requests("PATCH", "/status") == 0


def test_a_pool_edit_that_keeps_an_address_keeps_it(scenario: Scenario) -> None:
    before = allocations(scenario)
    scenario.stop_daemon()
    scenario.start_daemon(config(scenario, EDITED))
    wait_until(lambda: scenario.status()["ipam"]["allocating"], 20, what="allocating")
    add(scenario, "e")  # a new Service: the numbered pool comes first
    wait_until(lambda: ingress(scenario, "e") == ["198.51.100.80"], 10, what="e allocated")
    assert written_pool(scenario, "e") == "extra"
    assert {k: v for k, v in allocations(scenario).items() if k != "e"} == before
    assert not any(events(scenario, n, "ClearAssignment") for n in before)


def test_requests_are_honoured_inside_a_pool_and_refused_outside_or_in_contradiction(
    scenario: Scenario,
) -> None:
    add(scenario, "req", annotations={"kvip-bgp.io/loadbalancerIPs": "198.51.100.69"})
    add(scenario, "outside", annotations={"kvip-bgp.io/loadbalancerIPs": "198.51.100.200"})
    add(
        scenario,
        "torn",
        annotations={"kvip-bgp.io/loadbalancerIPs": "198.51.100.68"},
        spec_ip="198.51.100.70",
    )
    wait_until(lambda: ingress(scenario, "req") == ["198.51.100.69"], 10, what="req served")
    assert written_pool(scenario, "req") == "public"  # a request may come from any pool
    scenario.wait_routes(lambda r: "198.51.100.69/32" in r, "the requested VIP at FRR")
    wait_until(
        lambda: (
            events(scenario, "outside", "AllocationFailed")
            and events(scenario, "torn", "AllocationFailed")
        ),
        10,
        what="both refused",
    )
    (outside,) = events(scenario, "outside", "AllocationFailed")
    assert "198.51.100.200: not in a pool that admits it" in outside["message"]
    (torn,) = events(scenario, "torn", "AllocationFailed")
    assert "spec.loadBalancerIP" in torn["message"] and torn["type"] == "Warning"
    assert ingress(scenario, "outside") == [] and ingress(scenario, "torn") == []
    routes = scenario.routes()
    assert not {"198.51.100.200/32", "198.51.100.68/32", "198.51.100.70/32"} & set(routes)
    pending = {p["service"]: p["reason"] for p in scenario.status()["ipam"]["pending"]}
    assert set(pending) == {"default/outside", "default/torn"}


def test_two_daemons_racing_for_the_lease_never_hand_an_address_out_twice(
    scenario: Scenario,
) -> None:
    # A second daemon (another node name, kernel-table output, its own HTTP port and
    # runtime directory) races for the same Lease.
    other = config(scenario, EDITED)
    other["node_name"] = "node-2"
    other["output"] = "kernel-table"
    other["vips"]["interface"] = None
    other["http"]["listen"] = "127.0.0.1:9473"
    path = scenario.lab.workdir / "node-2.yaml"
    path.write_text(yaml.safe_dump(other))
    log = open(scenario.lab.workdir / "node-2.log", "ab")  # noqa: SIM115 (the daemon's)
    second = scenario.lab.popen(
        scenario.lab.node,
        [KVIP, "run", "--config", str(path), "--runtime-dir", str(scenario.lab.workdir / "run2")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    duplicates: list[Counter[str]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            held = Counter(ip for ips in allocations(scenario).values() for ip in ips)
            if any(n > 1 for n in held.values()):
                duplicates.append(held)
            done.wait(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        names = [f"r{i}" for i in range(6)]
        for name in names[:3]:
            add(scenario, name)
        # The holder dies mid-way; the second daemon takes over once the Lease expires.
        assert scenario.daemon is not None
        scenario.daemon.kill()
        scenario.daemon.wait(10)
        for name in names[3:]:
            add(scenario, name)
        wait_until(lambda: all(ingress(scenario, n) for n in names), 20, what="all allocated")
        lease = scenario.api.get("Lease", "kvip-bgp-status-writer", "kube-system")
        assert lease is not None and lease["spec"]["holderIdentity"] == "node-2"
        # The first node comes back as a follower and announces what the status says.
        scenario.start_daemon(config(scenario, EDITED))
        wanted = {f"{ip}/32" for ips in allocations(scenario).values() for ip in ips}
        scenario.wait_routes(lambda r: wanted <= set(r), "every allocated VIP at FRR", 30)
    finally:
        done.set()
        sampler.join(5)
        second.terminate()
        second.wait(20)
        log.close()
    assert duplicates == []
    held = [ip for ips in allocations(scenario).values() for ip in ips]
    assert len(held) == len(set(held))
