"""End to end: a LoadBalancer Service becomes a route at a real FRR peer.

Real parts only: the real ``kubernetes`` client inside ``kvip-bgp run`` against a fake API
over HTTP, real ExaBGP, real FRR in a network namespace, real addresses on the node
namespace's ``lo``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab

V1 = "198.51.100.10"
V2 = "198.51.100.11"


@pytest.fixture
def scenario(lab_required: None) -> Iterator[Scenario]:
    with Scenario() as running:
        running.api.put(node())
        yield running


@pytest.mark.parametrize("bind", ["address", "local-route"])
def test_service_lifecycle_reaches_frr_and_interface(scenario: Scenario, bind: str) -> None:
    # address: the VIP is an address on lo; local-route: a local route of ours, never an
    # address. Either way it comes, moves and goes with the route.
    config = daemon_config(scenario.kubeconfig)
    config["vips"]["bind"] = bind
    bound, other = (
        (scenario.addresses, scenario.local_routes)
        if bind == "address"
        else (scenario.local_routes, scenario.addresses)
    )
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.api.put(service("web", V1))
    scenario.start_daemon(config)

    routes = scenario.wait_routes(lambda r: f"{V1}/32" in r, "web's VIP at FRR")
    assert routes[f"{V1}/32"].communities == ("64512:100",)
    assert routes[f"{V1}/32"].as_path == (64512,)
    assert routes[f"{V1}/32"].next_hop == "192.0.2.1"
    assert bound() == {V1}
    assert other() == set()

    # Patch the VIP: the old route and address go, the new ones come.
    scenario.api.put(service("web", V2))
    scenario.wait_routes(lambda r: f"{V2}/32" in r and f"{V1}/32" not in r, "VIP moved")
    assert V2 in bound()  # bound before announced; the old one within vips.unbind_delay
    wait_until(lambda: bound() == {V2}, 5, what=f"only {V2} bound")

    # Delete the Service: withdrawn and unbound.
    scenario.api.delete("Service", "web", "default")
    scenario.wait_routes(lambda r: f"{V2}/32" not in r, "deleted Service withdrawn")
    deadline = time.monotonic() + 5
    while bound() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bound() == set()


def test_type_change_withdraws(scenario: Scenario) -> None:
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.api.put(service("web", V1))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web announced")
    scenario.api.put(service("web", V1, type="ClusterIP"))
    scenario.wait_routes(lambda r: f"{V1}/32" not in r, "ClusterIP Service withdrawn")


def test_vip_outside_allowed_ranges_never_reaches_frr(scenario: Scenario) -> None:
    scenario.api.put(endpoint_slice("good", [NODE_NAME]))
    scenario.api.put(service("good", V1))
    scenario.api.put(endpoint_slice("evil", [NODE_NAME]))
    scenario.api.put(service("evil", "203.0.113.7"))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "the allowed VIP")
    # A VIP moved out of range is withdrawn too.
    scenario.api.put(service("good", "203.0.113.8"))
    scenario.wait_routes(lambda r: f"{V1}/32" not in r, "out-of-range move withdrawn")
    time.sleep(1.0)
    assert set(scenario.routes()) == set()
    wait_until(lambda: scenario.bound() == set(), 5, what="the VIP unbound")
    refused = [
        line
        for line in scenario.log_lines()
        if line.get("event") == "cluster.service_not_announced"
        and line.get("reason") == "outside-allowed-ranges"
    ]
    assert {line["service"] for line in refused} >= {"default/evil", "default/good"}
    services = {s["service"]: s for s in scenario.status()["services"]}
    assert services["default/evil"]["reason"] == "outside-allowed-ranges"


def test_vip_sources_spec_and_status(scenario: Scenario) -> None:
    """VIP from spec.loadBalancerIP, else from status.loadBalancer.ingress."""
    from_spec = service("from-spec", spec_ip="198.51.100.20")
    from_status = service("from-status")
    from_status["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.21"}]}}
    for obj in (from_spec, from_status):
        scenario.api.put(obj)
        scenario.api.put(endpoint_slice(obj["metadata"]["name"], [NODE_NAME]))
    scenario.start_daemon()
    scenario.wait_routes(
        lambda r: {"198.51.100.20/32", "198.51.100.21/32"} <= set(r), "spec and status VIPs"
    )


def test_foreign_address_is_never_removed(scenario: Scenario) -> None:
    # Someone else's address that is also a VIP: announced, but left alone on withdraw.
    scenario.lab.node.run("ip", "addr", "add", f"{V1}/32", "dev", "lo")
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.api.put(service("web", V1))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web announced")
    scenario.api.delete("Service", "web", "default")
    scenario.wait_routes(lambda r: f"{V1}/32" not in r, "web withdrawn")
    time.sleep(0.5)
    assert V1 in scenario.bound()


def test_sigterm_withdraws_everything_and_exits_zero(scenario: Scenario) -> None:
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.api.put(service("web", V1))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: f"{V1}/32" in r, "web announced")
    started = time.monotonic()
    code = scenario.stop_daemon(signal.SIGTERM)
    elapsed = time.monotonic() - started
    assert code == 0, scenario.log_tail()
    assert elapsed < 10, f"shutdown took {elapsed:.1f}s (shutdown_timeout is 10)"
    # Withdrawn by an UPDATE, so gone at once (not after the 9 s hold timer expiry).
    assert f"{V1}/32" not in scenario.routes()
    assert scenario.bound() == set()
    events = [line.get("event") for line in scenario.log_lines()]
    assert "reconciler.shutdown" in events
    assert "app.stopped" in events


def test_static_vips_without_kubernetes(lab_required: None) -> None:
    with Scenario(kubernetes=False) as scenario:
        config = daemon_config(
            None,
            static=[{"address": "198.51.100.53"}, {"address": "198.51.100.54"}],
            advertise={"communities": ["64512:300", "no-export"], "med": 5},
        )
        scenario.start_daemon(config)
        routes = scenario.wait_routes(
            lambda r: {"198.51.100.53/32", "198.51.100.54/32"} <= set(r), "static VIPs"
        )
        assert routes["198.51.100.53/32"].communities == ("64512:300", "no-export")
        assert routes["198.51.100.53/32"].med == 5
        assert scenario.bound() == {"198.51.100.53", "198.51.100.54"}


def test_check_config_and_render_exabgp_cli(lab_required: None, tmp_path: object) -> None:
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).parent / "kvip-bgp")
    good = Path(str(tmp_path)) / "good.yaml"
    import yaml

    good.write_text(yaml.safe_dump(daemon_config(None, static=[{"address": V1}])))
    ok = subprocess.run([exe, "check-config", "--config", str(good)], capture_output=True)
    assert ok.returncode == 0, ok.stderr
    rendered = subprocess.run(
        [exe, "render-exabgp", "--config", str(good)], capture_output=True, text=True
    )
    assert rendered.returncode == 0
    assert "neighbor 192.0.2.2 {" in rendered.stdout
    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("bgp: {asn: 0}\nvips: {allowed: []}\nextra: 1\n")
    result = subprocess.run(
        [exe, "check-config", "--config", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "bgp.asn: must be 1..4294967295, got 0" in result.stderr
    assert "extra: unknown key" in result.stderr
