"""What an operator sees at 3 a.m.: metrics, health endpoints, status/explain, logs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_lab
from prometheus_client.parser import text_string_to_metric_families

from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import Scenario

pytestmark = pytest.mark.lab

KVIP = str(Path(sys.executable).parent / "kvip-bgp")
PEER = "192.0.2.2"
WEB = "198.51.100.10"


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    require_lab("/usr/lib/frr/bgpd", "vtysh")
    with Scenario() as running:
        api = running.api
        api.put(node())
        api.put(service("web", WEB, annotations={"kvip-bgp.io/med": "30"}))
        api.put(endpoint_slice("web", [NODE_NAME, "node-2"]))
        api.put(service("evil", "203.0.113.5"))
        api.put(service("bad", "198.51.100.12", annotations={"kvip-bgp.io/med": "lots"}))
        api.put(service("local", "198.51.100.13", traffic_policy="Local"))
        api.put(endpoint_slice("local", ["node-2"]))
        # Many Services at once: their decisions must be logged as a summary.
        for i in range(60):
            api.put(service(f"bulk-{i}", f"198.51.100.{100 + i}"))
            api.put(endpoint_slice(f"bulk-{i}", [NODE_NAME]))
        running.start_daemon()
        running.wait_routes(lambda r: f"{WEB}/32" in r and len(r) == 61, "all routes", 30)
        wait_until(lambda: running.http("/readyz")[0] == 200, 15, what="/readyz 200")
        yield running


def _metrics(scenario: Scenario) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, body = scenario.http("/metrics")
    assert code == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        assert family.documentation, f"{family.name} has no HELP text"
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_names_labels_and_values(scenario: Scenario) -> None:
    m = _metrics(scenario)
    assert m[("kvip_bgp_session_up", (("peer", PEER),))] == 1
    assert m[("kvip_bgp_prefixes_announced", (("peer", PEER),))] == 61
    assert m[("kvip_bgp_updates_sent_total", (("kind", "announce"), ("peer", PEER)))] >= 61
    assert m[("kvip_bgp_addresses_bound", ())] == 61
    assert m[("kvip_bgp_services_refused", (("reason", "outside-allowed-ranges"),))] == 1
    assert m[("kvip_bgp_services_refused", (("reason", "invalid-annotation"),))] == 1
    assert m[("kvip_bgp_services_refused", (("reason", "no-local-endpoint"),))] == 1
    assert m[("kvip_bgp_invalid_annotations_total", (("annotation", "kvip-bgp.io/med"),))] >= 1
    assert m[("kvip_bgp_reconcile_duration_seconds_count", ())] > 0
    assert m[("kvip_bgp_exabgp_command_errors_total", ())] == 0
    assert m[("kvip_bgp_exabgp_restarts_total", ())] == 0
    assert ("kvip_bgp_queue_depth", ()) in m
    assert ("kvip_bgp_queue_coalesced", ()) in m
    assert any(name == "kvip_bgp_build_info" for name, _ in m)

    # A dropped watch stream shows up per resource and reason.
    scenario.api.close_watches()
    wait_until(
        lambda: any(
            name == "kvip_bgp_watch_restarts_total" and value >= 1
            for (name, _), value in _metrics(scenario).items()
        ),
        15,
        what="watch restart counted",
    )


def test_health_endpoints(scenario: Scenario) -> None:
    assert scenario.http("/healthz") == (200, b"ok\n")
    assert scenario.http("/readyz") == (200, b"ok\n")
    status = scenario.status()
    assert [p["state"] for p in status["peers"]] == ["up"]
    assert {s["service"]: s["reason"] for s in status["services"]}["default/evil"] == (
        "outside-allowed-ranges"
    )


def _cli(scenario: Scenario, *args: str) -> subprocess.CompletedProcess[str]:
    return scenario.lab.node.run(KVIP, *args, "--url", "http://127.0.0.1:9472", check=False)


def test_status_command_prints_tables(scenario: Scenario) -> None:
    result = _cli(scenario, "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "PEERS" in out and PEER in out and "up" in out
    assert f"{WEB}/32" in out and "default/web" in out
    assert "NOT ANNOUNCED" in out and "default/evil" in out and "outside-allowed-ranges" in out


def test_explain_gives_the_chain_of_reasons(scenario: Scenario) -> None:
    local = _cli(scenario, "explain", "default/local")
    assert local.returncode == 3, local.stderr
    assert "externalTrafficPolicy: Local" in local.stdout
    assert "node-2: 1 healthy" in local.stdout
    assert "NOT ANNOUNCED (no-local-endpoint)" in local.stdout
    web = _cli(scenario, "explain", "default/web")
    assert web.returncode == 0, web.stderr
    assert "allowed by 198.51.100.0/24" in web.stdout
    assert "med 30" in web.stdout
    assert f"result on {NODE_NAME}: ANNOUNCED" in web.stdout
    evil = _cli(scenario, "explain", "default/evil")
    assert "in no allowed range" in evil.stdout
    missing = _cli(scenario, "explain", "default/nope")
    assert missing.returncode == 3 and "not found" in missing.stdout


def test_logs_are_aggregated_and_greppable(scenario: Scenario) -> None:
    lines = scenario.log_lines()
    assert all(line.get("event") != "unparsed" for line in lines), "every line is JSON"
    per_service = [
        line for line in lines if str(line.get("event", "")).startswith("cluster.service_")
    ]
    assert len(per_service) <= 20, f"{len(per_service)} per-Service lines for a startup burst"
    summary = [line for line in lines if line.get("event") == "cluster.decisions_changed"]
    assert summary and summary[0]["count"] >= 60
    for line in lines:
        assert "event" in line and "level" in line and "timestamp" in line
