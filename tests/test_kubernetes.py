"""Kubernetes semantics through the whole path: fake API → kvip-bgp → ExaBGP → FRR."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import Scenario

pytestmark = pytest.mark.lab


@pytest.fixture
def scenario(lab_required: None) -> Iterator[Scenario]:
    with Scenario() as running:
        running.api.put(node())
        yield running


def _p(ip: str) -> str:
    return f"{ip}/32"


def test_traffic_policy_local_follows_endpoints_between_nodes(scenario: Scenario) -> None:
    local, cluster = "198.51.100.30", "198.51.100.31"
    scenario.api.put(service("local", local, traffic_policy="Local"))
    scenario.api.put(endpoint_slice("local", ["node-2"]))
    scenario.api.put(service("cluster", cluster, traffic_policy="Cluster"))
    scenario.api.put(endpoint_slice("cluster", ["node-2"]))
    scenario.start_daemon()
    # Cluster: announced from every node while any endpoint is healthy; Local: not here.
    scenario.wait_routes(lambda r: _p(cluster) in r, "Cluster Service announced")
    assert _p(local) not in scenario.routes()

    # The Local endpoint moves onto this node: announced.
    scenario.api.put(endpoint_slice("local", ["node-2", NODE_NAME]))
    scenario.wait_routes(lambda r: _p(local) in r, "Local endpoint arrived on this node")
    # Our endpoint stops being ready (and serving): withdrawn.
    scenario.api.put(endpoint_slice("local", ["node-2", (NODE_NAME, False)]))
    scenario.wait_routes(lambda r: _p(local) not in r, "local endpoint not ready")
    # A second slice of the same Service brings a ready local endpoint: slices merge.
    scenario.api.put(endpoint_slice("local", [NODE_NAME], suffix="b"))
    scenario.wait_routes(lambda r: _p(local) in r, "endpoint from a second slice")

    # Cluster Service loses its last healthy endpoint: withdrawn everywhere.
    scenario.api.put(endpoint_slice("cluster", [("node-2", False)]))
    scenario.wait_routes(lambda r: _p(cluster) not in r, "no healthy endpoint anywhere")


def test_load_balancer_class_filtering_and_ignore(scenario: Scenario) -> None:
    ours, legacy, other, ignored = (f"198.51.100.{n}" for n in (40, 41, 42, 43))
    scenario.api.put(service("ours", ours, lb_class="kvip-bgp.io/bgp"))
    scenario.api.put(service("legacy", legacy))
    scenario.api.put(service("other", other, lb_class="example.com/other"))
    scenario.api.put(service("ignored", ignored, annotations={"kube-vip.io/ignore": "true"}))
    for name in ("ours", "legacy", "other", "ignored"):
        scenario.api.put(endpoint_slice(name, [NODE_NAME]))
    scenario.start_daemon()
    routes = scenario.wait_routes(
        lambda r: {_p(ours), _p(legacy)} <= set(r), "our class and the legacy Service"
    )
    assert _p(other) not in routes
    assert _p(ignored) not in routes
    reasons = {s["service"]: s["reason"] for s in scenario.status()["services"]}
    assert reasons["default/other"] == "class-mismatch"
    assert reasons["default/ignored"] == "ignored"


def test_per_service_attributes_are_visible_at_frr(scenario: Scenario) -> None:
    vip = "198.51.100.50"
    scenario.api.put(
        service(
            "tuned",
            vip,
            annotations={
                "kvip-bgp.io/communities": "64512:200,no-export",
                "kvip-bgp.io/large-communities": "64512:1:2",
                "kvip-bgp.io/med": "50",
                "kvip-bgp.io/as-path-prepend": "2",
            },
        )
    )
    scenario.api.put(endpoint_slice("tuned", [NODE_NAME]))
    scenario.start_daemon()
    route = scenario.wait_routes(lambda r: _p(vip) in r, "tuned Service")[_p(vip)]
    assert set(route.communities) == {"64512:100", "64512:200", "no-export"}
    assert route.large_communities == ("64512:1:2",)
    assert route.med == 50
    assert route.as_path == (64512, 64512, 64512)


def test_invalid_annotation_skips_only_that_service(scenario: Scenario) -> None:
    good, bad = "198.51.100.60", "198.51.100.61"
    scenario.api.put(service("good", good))
    scenario.api.put(
        service("bad", bad, annotations={"kvip-bgp.io/communities": "64512:100\nannounce"})
    )
    for name in ("good", "bad"):
        scenario.api.put(endpoint_slice(name, [NODE_NAME]))
    scenario.start_daemon()
    routes = scenario.wait_routes(lambda r: _p(good) in r, "the valid Service")
    assert _p(bad) not in routes
    reasons = {s["service"]: s["reason"] for s in scenario.status()["services"]}
    assert reasons["default/bad"] == "invalid-annotation:kvip-bgp.io/communities"
    # Fixing the annotation brings it in.
    scenario.api.put(service("bad", bad, annotations={"kvip-bgp.io/communities": "64512:7"}))
    route = scenario.wait_routes(lambda r: _p(bad) in r, "fixed Service")[_p(bad)]
    assert set(route.communities) == {"64512:100", "64512:7"}


def test_shared_vip_is_one_route_withdrawn_after_both_services(scenario: Scenario) -> None:
    vip = "198.51.100.70"
    scenario.api.put(
        service(
            "a", vip, annotations={"kvip-bgp.io/communities": "64512:1", "kvip-bgp.io/med": "10"}
        )
    )
    scenario.api.put(
        service(
            "b", vip, annotations={"kvip-bgp.io/communities": "64512:2", "kvip-bgp.io/med": "99"}
        )
    )
    for name in ("a", "b"):
        scenario.api.put(endpoint_slice(name, [NODE_NAME]))
    scenario.start_daemon()
    route = scenario.wait_routes(
        lambda r: _p(vip) in r and "64512:2" in r[_p(vip)].communities, "shared VIP"
    )[_p(vip)]
    assert set(route.communities) == {"64512:1", "64512:100", "64512:2"}
    assert route.med == 10  # default/a sorts first and wins the scalar
    scenario.api.delete("Service", "a", "default")
    scenario.wait_routes(lambda r: _p(vip) in r and r[_p(vip)].med == 99, "b alone keeps the VIP")
    scenario.api.delete("Service", "b", "default")
    scenario.wait_routes(lambda r: _p(vip) not in r, "withdrawn after both are gone")


def test_node_exclusion_withdraws_everything(scenario: Scenario) -> None:
    vip = "198.51.100.80"
    scenario.api.put(service("web", vip))
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: _p(vip) in r, "announced")
    scenario.api.put(node(labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""}))
    scenario.wait_routes(lambda r: _p(vip) not in r, "excluded node withdraws")
    scenario.api.put(node())
    scenario.wait_routes(lambda r: _p(vip) in r, "exclusion lifted")


def test_watch_410_and_dropped_stream_converge(scenario: Scenario) -> None:
    first, second, third = "198.51.100.90", "198.51.100.91", "198.51.100.92"
    scenario.api.put(service("one", first))
    scenario.api.put(endpoint_slice("one", [NODE_NAME]))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: _p(first) in r, "first Service")
    assert scenario.api.wait_for_watchers(3, timeout=10)

    # Streams dropped mid-flight; a change made while they are down must still arrive.
    scenario.api.close_watches()
    scenario.api.put(service("two", second))
    scenario.api.put(endpoint_slice("two", [NODE_NAME]))
    scenario.wait_routes(lambda r: _p(second) in r, "change made while streams dropped")

    # History expired while disconnected: resuming gets 410 Gone, a relist follows, and a
    # deletion that happened meanwhile is noticed (the relist replaces the cache).
    scenario.api.expire_history()
    scenario.api.close_watches()
    scenario.api.delete("Service", "one", "default")
    scenario.api.put(service("three", third))
    scenario.api.put(endpoint_slice("three", [NODE_NAME]))
    scenario.wait_routes(
        lambda r: _p(third) in r and _p(first) not in r and _p(second) in r,
        "converged after 410",
    )
    restarts = [line for line in scenario.log_lines() if line.get("event") == "kube.watch_expired"]
    assert restarts, "the 410 path was not taken"


def test_status_written_once_and_events_on_refusals(scenario: Scenario) -> None:
    vip, outside = "198.51.100.100", "203.0.113.9"
    scenario.api.put(service("web", vip))
    scenario.api.put(endpoint_slice("web", [NODE_NAME]))
    scenario.api.put(service("evil", outside))
    scenario.api.put(service("bad", "198.51.100.101", annotations={"kvip-bgp.io/med": "-1"}))
    scenario.start_daemon()
    scenario.wait_routes(lambda r: _p(vip) in r, "web announced")

    def ingress(name: str) -> list[str]:
        obj = scenario.api.get("Service", name, "default") or {}
        items = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return [item.get("ip") for item in items]

    from kvip_bgp.testing.netlab import wait_until

    wait_until(lambda: ingress("web") == [vip], 15, what="status.loadBalancer written")
    # Changes that do not change the status cause no further PATCH.
    scenario.api.put(endpoint_slice("web", [NODE_NAME, "node-2"]))
    scenario.wait_routes(lambda r: _p(vip) in r, "still announced")
    import time

    time.sleep(1.5)
    assert scenario.api.count_requests("PATCH", "/services/web/status") == 1
    assert ingress("evil") == []  # a refused VIP is never written to status

    lease = scenario.api.get("Lease", "kvip-bgp-status-writer", "kube-system")
    assert lease is not None and lease["spec"]["holderIdentity"] == NODE_NAME

    def reasons() -> set[tuple[str, str]]:
        return {
            (e["involvedObject"]["name"], e["reason"])
            for e in scenario.api.events()
            if e.get("involvedObject", {}).get("kind") == "Service"
        }

    wait_until(
        lambda: {("evil", "VIPRefused"), ("bad", "InvalidAnnotation")} <= reasons(),
        10,
        what="Warning Events on refused Services",
    )
    assert ("web", "VIPRefused") not in reasons()
