"""Table-driven tests of the announce policy, fed with raw Kubernetes-shaped JSON."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvip_bgp.configfile.load import parse
from kvip_bgp.domain import config, policy
from kvip_bgp.domain.explain import explain
from kvip_bgp.domain.model import Advertisement, Community, LargeCommunity, RouteAttributes
from kvip_bgp.domain.objects import (
    Endpoint,
    ObjectKey,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from kvip_bgp.domain.policy import ServiceDecision, SharedVipConflict, advertisements, decide
from kvip_bgp.domain.reasons import POLICY_REASONS, Reason, Refusal, wire
from kvip_bgp.domain.sources import SourceKind, VipSource, service_wire
from kvip_bgp.testing import objects
from kvip_bgp.testing.objects import endpoint as ep

NODE = "worker-1"
VIP4 = "198.51.100.10"
VIP6 = "2001:db8:100::10"


def make_config(**kubernetes: Any) -> config.Config:
    return parse(
        {
            "node_name": NODE,
            "bgp": {
                "asn": 64512,
                "peers": [
                    {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
                    {"address": "2001:db8::2", "asn": 64500, "local_address": "2001:db8::1"},
                ],
            },
            "advertise": {"communities": ["64512:100"]},
            "vips": {
                "allowed": [
                    "198.51.100.0/24",
                    "2001:db8:100::/64",
                    # Peers' own subnets are allowed too, to show the peer-address guard.
                    "192.0.2.0/24",
                    "2001:db8::/64",
                    {"cidr": "203.0.113.0/28", "namespaces": ["team-a"]},
                ]
            },
            "kubernetes": kubernetes,
        },
        environ={},
    )


def service_json(
    name: str = "web",
    namespace: str = "default",
    *,
    type: str = "LoadBalancer",
    lb_class: str | None = None,
    lb_ip: str | None = None,
    etp: str | None = "Cluster",
    annotations: dict[str, str] | None = None,
    ingress: list[str] | None = None,
) -> dict[str, Any]:
    """The shared Service builder with this table's defaults (VIP4 unless annotated)."""
    return objects.service(
        name,
        VIP4 if annotations is None else None,
        namespace=namespace,
        annotations=annotations,
        type=type,
        traffic_policy=etp,
        lb_class=lb_class,
        spec_ip=lb_ip,
        cluster_ip="10.96.0.10",
        uid=f"uid-{namespace}-{name}",
        resource_version="1234",
        ingress=ingress or [],
    )


def slice_json(
    service: str = "web", namespace: str = "default", endpoints: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return objects.endpoint_slice(
        service,
        namespace=namespace,
        suffix="abcde",
        endpoints=[ep(NODE)] if endpoints is None else endpoints,
    )


def node_json(
    name: str = NODE,
    *,
    labels: dict[str, str] | None = None,
    unschedulable: bool = False,
    network_unavailable: str | None = None,
    addresses: list[str] | None = None,
) -> dict[str, Any]:
    return objects.node(
        name,
        {"kubernetes.io/hostname": name, **(labels or {})},
        addresses=addresses or ["10.0.0.11"],
        hostname_address=True,
        unschedulable=unschedulable,
        network_unavailable=network_unavailable,
    )


@dataclass
class Case:
    id: str
    expected_reason: str | None
    announced: tuple[str, ...] = (VIP4,)
    service: dict[str, Any] = field(default_factory=dict)
    endpoints: list[dict[str, Any]] | None = None
    node: dict[str, Any] | None = field(default_factory=dict)
    kubernetes: dict[str, Any] = field(default_factory=dict)


def run(case: Case) -> ServiceDecision:
    service = parse_service(service_json(**case.service))
    endpoints = parse_endpoint_slice(slice_json(endpoints=case.endpoints)).endpoints
    node = None if case.node is None else parse_node(node_json(**case.node))
    return decide(service, endpoints, node, make_config(**case.kubernetes))


NO = ()
CASES = [
    Case("announced", None),
    # type and class
    Case("type-cluster-ip", "not-load-balancer", NO, {"type": "ClusterIP"}),
    Case("type-node-port", "not-load-balancer", NO, {"type": "NodePort"}),
    Case("class-match", None, service={"lb_class": "kvip-bgp.io/bgp"}),
    Case("class-mismatch", "class-mismatch", NO, {"lb_class": "io.cilium/bgp"}),
    Case("class-none-legacy-on", None, kubernetes={"legacy_class_handling": True}),
    Case(
        "class-none-legacy-off", "class-mismatch", NO, kubernetes={"legacy_class_handling": False}
    ),
    Case(
        "class-match-legacy-off",
        None,
        service={"lb_class": "kvip-bgp.io/bgp"},
        kubernetes={"legacy_class_handling": False},
    ),
    Case(
        "class-configured",
        None,
        service={"lb_class": "example.com/bgp"},
        kubernetes={"load_balancer_class": "example.com/bgp"},
    ),
    # ignore annotations
    Case(
        "kvip-ignore",
        "ignored",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": VIP4, "kvip-bgp.io/ignore": "true"}},
    ),
    Case(
        "kvip-ignore-spaced-caps",
        "ignored",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": VIP4, "kvip-bgp.io/ignore": " True "}},
    ),
    Case(
        "kvip-ignore-false",
        None,
        service={"annotations": {"kvip-bgp.io/loadbalancerIPs": VIP4, "kvip-bgp.io/ignore": "no"}},
    ),
    Case(
        "kube-vip-ignore",
        "ignored",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": VIP4, "kube-vip.io/ignore": "true"}},
    ),
    # where the VIP comes from
    Case(
        "vip-precedence-kvip-annotation",
        None,
        ("198.51.100.1",),
        {
            "annotations": {
                "kvip-bgp.io/loadbalancerIPs": "198.51.100.1",
                "kube-vip.io/loadbalancerIPs": "198.51.100.2",
            },
            "lb_ip": "198.51.100.3",
            "ingress": ["198.51.100.4"],
        },
    ),
    Case(
        "vip-precedence-kube-vip-annotation",
        None,
        ("198.51.100.2",),
        {
            "annotations": {"kube-vip.io/loadbalancerIPs": "198.51.100.2"},
            "lb_ip": "198.51.100.3",
            "ingress": ["198.51.100.4"],
        },
    ),
    Case(
        "vip-precedence-spec",
        None,
        ("198.51.100.3",),
        {"annotations": {}, "lb_ip": "198.51.100.3", "ingress": ["198.51.100.4"]},
    ),
    Case(
        "vip-precedence-status",
        None,
        ("198.51.100.4", "198.51.100.5"),
        {"annotations": {}, "ingress": ["198.51.100.4", "198.51.100.5"]},
    ),
    Case(
        "vip-empty-spec-ignored",
        None,
        ("198.51.100.4",),
        {"annotations": {}, "lb_ip": "", "ingress": ["198.51.100.4"]},
    ),
    Case("no-vip", "no-vip", NO, {"annotations": {}}),
    Case(
        "dual-stack",
        None,
        (VIP4, VIP6),
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": f" {VIP4} , {VIP6} "}},
    ),
    Case(
        "duplicates-collapse",
        None,
        (VIP4,),
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": f"{VIP4},{VIP4}"}},
    ),
    Case(
        "ipv6-non-canonical",
        None,
        (VIP6,),
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": "2001:DB8:100:0:0:0:0:10"}},
    ),
    # allowed ranges
    Case(
        "outside-allowed",
        "outside-allowed-ranges",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": "203.0.114.5"}},
    ),
    Case(
        "one-of-two-outside",
        None,
        (VIP4,),
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": f"{VIP4},203.0.114.5"}},
    ),
    Case(
        "namespace-range-own-namespace",
        None,
        ("203.0.113.5",),
        {"namespace": "team-a", "annotations": {"kvip-bgp.io/loadbalancerIPs": "203.0.113.5"}},
    ),
    Case(
        "namespace-range-other-namespace",
        "outside-allowed-ranges",
        NO,
        {"namespace": "team-b", "annotations": {"kvip-bgp.io/loadbalancerIPs": "203.0.113.5"}},
    ),
    # forbidden addresses (checked before the allowed ranges)
    *[
        Case(
            f"forbidden-{label}-{vip}",
            f"forbidden-address:{label}",
            NO,
            {"annotations": {"kvip-bgp.io/loadbalancerIPs": vip}},
        )
        for vip, label in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.5", "multicast"),
            ("239.1.2.3", "multicast"),
            ("ff02::1", "multicast"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("192.0.2.2", "peer-address"),
            ("192.0.2.1", "peer-address"),
            ("2001:db8::2", "peer-address"),
            ("2001:db8::1", "peer-address"),
        ]
    ],
    Case(
        "forbidden-node-address",
        "forbidden-address:node-address",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": "198.51.100.20"}},
        node={"addresses": ["10.0.0.11", "198.51.100.20"]},
    ),
    Case(
        "forbidden-node-address-written-differently",
        "forbidden-address:node-address",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": "2001:db8:100::20"}},
        node={"addresses": ["10.0.0.11", "2001:DB8:100:0::0020"]},
    ),
    Case(
        "other-node-address-is-fine",
        None,
        service={"annotations": {"kvip-bgp.io/loadbalancerIPs": VIP4}},
        node={"addresses": ["198.51.100.11"]},
    ),
    # externalTrafficPolicy and endpoints
    Case("local-with-local-endpoint", None, service={"etp": "Local"}),
    Case(
        "local-endpoint-elsewhere",
        "no-local-endpoint",
        NO,
        {"etp": "Local"},
        endpoints=[ep("worker-2"), ep("worker-3")],
    ),
    Case(
        "local-endpoint-not-ready",
        "no-local-endpoint",
        NO,
        {"etp": "Local"},
        endpoints=[ep(NODE, ready=False), ep("worker-2")],
    ),
    Case("local-no-endpoints", "no-local-endpoint", NO, {"etp": "Local"}, endpoints=[]),
    Case(
        "local-endpoint-without-node-name",
        "no-local-endpoint",
        NO,
        {"etp": "Local"},
        endpoints=[ep(None)],
    ),
    Case(
        "local-ready-unset-means-ready",
        None,
        service={"etp": "Local"},
        endpoints=[ep(NODE, ready=None)],
    ),
    Case(
        "local-serving-not-ready-terminating",
        None,
        service={"etp": "Local"},
        endpoints=[ep(NODE, ready=False, serving=True, terminating=True)],
    ),
    Case(
        "local-terminating-not-serving",
        "no-local-endpoint",
        NO,
        {"etp": "Local"},
        endpoints=[ep(NODE, ready=False, serving=False, terminating=True)],
    ),
    Case("cluster-endpoint-elsewhere", None, endpoints=[ep("worker-2")]),
    Case(
        "cluster-none-healthy",
        "no-ready-endpoint",
        NO,
        endpoints=[ep(NODE, ready=False), ep("worker-2", ready=False, serving=False)],
    ),
    Case("cluster-no-endpoints", "no-ready-endpoint", NO, endpoints=[]),
    Case("cluster-ready-unset", None, endpoints=[ep("worker-2", ready=None)]),
    Case("etp-unset-is-cluster", None, service={"etp": None}, endpoints=[ep("worker-2")]),
    # the node
    Case("node-missing", "node-not-found", NO, node=None),
    Case(
        "node-exclude-label",
        "node-excluded:label",
        NO,
        node={"labels": {"node.kubernetes.io/exclude-from-external-load-balancers": ""}},
    ),
    Case(
        "node-network-unavailable",
        "node-excluded:network-unavailable",
        NO,
        node={"network_unavailable": "True"},
    ),
    Case("node-network-available", None, node={"network_unavailable": "False"}),
    Case(
        "node-cordoned-withdraw-on",
        "node-excluded:cordoned",
        NO,
        node={"unschedulable": True},
        kubernetes={"withdraw_when_cordoned": True},
    ),
    Case(
        "node-cordoned-withdraw-off",
        None,
        node={"unschedulable": True},
        kubernetes={"withdraw_when_cordoned": False},
    ),
    Case(
        # A forbidden address says so even when the node would refuse anyway.
        "address-reason-before-node-reason",
        "forbidden-address:loopback",
        NO,
        {"annotations": {"kvip-bgp.io/loadbalancerIPs": "127.0.0.1"}},
        node=None,
    ),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_decide(case: Case) -> None:
    decision = run(case)
    assert wire(decision.reason) == case.expected_reason, decision
    assert decision.announced == tuple(ipaddress.ip_address(v) for v in case.announced)
    assert decision.service == ObjectKey(
        case.service.get("namespace", "default"), case.service.get("name", "web")
    )
    if case.expected_reason is not None:
        assert not decision.announced
    for verdict in decision.verdicts:
        assert verdict.announce == (verdict.reason is None)


# --------------------------------------------------------------------------- annotations

LONG = "1" * 5000
INVALID_ANNOTATIONS = [
    ("communities", "garbage"),
    ("communities", "65536:1"),
    ("communities", "1:65536"),
    ("communities", "1:2:3"),
    ("communities", "64512:100,"),
    ("communities", ",64512:100"),
    ("communities", ""),
    ("communities", "64512:100\nannounce route 0.0.0.0/0 next-hop self"),
    ("communities", "64512:100\r"),
    ("communities", "64512:100] nlri 0.0.0.0/0"),
    ("communities", "[64512:100"),
    ("communities", "64512:100;"),
    ("communities", "64512:100 # x"),
    ("communities", "64512:100 64512:200"),
    ("communities", "-1:5"),
    ("communities", ",".join(["64512:100"] * 200)),
    ("large-communities", "1:2"),
    ("large-communities", "4294967296:1:1"),
    ("large-communities", "1:2:3\nannounce route 0.0.0.0/0 next-hop self"),
    ("large-communities", "1:2:3]"),
    ("large-communities", "no-export"),
    ("med", "abc"),
    ("med", "-1"),
    ("med", "1.5"),
    ("med", "1e3"),
    ("med", "0x10"),
    ("med", "4294967296"),
    ("med", "10;"),
    ("med", "10 # comment"),
    ("med", "\u0661\u0660"),
    ("med", "10\n"),
    ("med", LONG),
    ("local-preference", "-1"),
    ("local-preference", ""),
    ("local-preference", " "),
    ("local-preference", "100]"),
    ("as-path-prepend", "0"),
    ("as-path-prepend", "11"),
    ("as-path-prepend", "2 64512"),
    ("as-path-prepend", "[3]"),
    ("loadbalancerIPs", "not-an-ip"),
    ("loadbalancerIPs", f"{VIP4},"),
    ("loadbalancerIPs", ""),
    ("loadbalancerIPs", f"{VIP4}\nannounce route 0.0.0.0/0 next-hop self"),
    ("loadbalancerIPs", f"{VIP4};"),
    ("loadbalancerIPs", f"{VIP4} #"),
    ("loadbalancerIPs", f"[{VIP6}]"),
    ("loadbalancerIPs", f"{VIP4}/32"),
    ("loadbalancerIPs", f"{VIP6}%eth0"),
    ("loadbalancerIPs", f"{VIP6}%]; announce route 0.0.0.0/0 next-hop self"),
    ("loadbalancerIPs", f"{VIP6}%]; announce route 198.51.100.99 next-hop self"),
    ("loadbalancerIPs", f"{VIP6}%x nlri 198.51.100.99"),
    ("loadbalancerIPs", ",".join(f"198.51.100.{i}" for i in range(1, 18))),
    ("loadbalancerIPs", f"{VIP4}," * 300 + VIP4),
    ("loadbalancerIPs", LONG),
]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param(n, v, id=f"{n}={v[:40]!r}{'...' if len(v) > 40 else ''}")
        for n, v in INVALID_ANNOTATIONS
    ],
)
def test_invalid_annotation(name: str, value: str) -> None:
    annotations = {"kvip-bgp.io/loadbalancerIPs": VIP4, f"kvip-bgp.io/{name}": value}
    decision = run(Case("x", None, service={"annotations": annotations}))
    assert wire(decision.reason) == f"invalid-annotation:kvip-bgp.io/{name}"
    assert decision.announced == ()
    assert decision.attributes is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param("garbage", "invalid-annotation:kube-vip.io/loadbalancerIPs", id="kube-vip"),
        pytest.param("300.1.1.1", "invalid-annotation:spec.loadBalancerIP", id="spec"),
    ],
)
def test_invalid_vip_from_other_sources(value: str, reason: str) -> None:
    service = (
        {"annotations": {"kube-vip.io/loadbalancerIPs": value}}
        if reason.endswith("kube-vip.io/loadbalancerIPs")
        else {"annotations": {}, "lb_ip": value}
    )
    assert wire(run(Case("x", None, service=service)).reason) == reason


def attrs(
    communities: tuple[str, ...] = ("64512:100",),
    large: tuple[str, ...] = (),
    local_preference: int | None = None,
    med: int | None = None,
    as_path_prepend: int = 0,
) -> RouteAttributes:
    return RouteAttributes(
        communities=tuple(Community.parse(c) for c in communities),
        large_communities=tuple(LargeCommunity.parse(c) for c in large),
        local_preference=local_preference,
        med=med,
        as_path_prepend=as_path_prepend,
    )


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        pytest.param({}, attrs(), id="defaults"),
        pytest.param(
            {"communities": "no-export, no-advertise ,64512:200"},
            attrs(("64512:100", "64512:200", "65535:65281", "65535:65282")),
            id="well-known-communities",
        ),
        pytest.param(
            {"communities": "NO-EXPORT,blackhole,no-export-subconfed"},
            attrs(("64512:100", "65535:65281", "65535:65283", "65535:666")),
            id="well-known-any-case",
        ),
        pytest.param(
            {"communities": "64512:100,0:0,65535:65535"},
            attrs(("0:0", "64512:100", "65535:65535")),
            id="community-bounds-and-dedup",
        ),
        pytest.param(
            {"large-communities": "64512:1:2, 4294967295:0:4294967295"},
            attrs(large=("4294967295:0:4294967295", "64512:1:2")),
            id="large-communities",
        ),
        pytest.param(
            {"med": " 0 ", "local-preference": "4294967295"},
            attrs(med=0, local_preference=4294967295),
            id="med-and-local-preference",
        ),
        pytest.param({"as-path-prepend": "1"}, attrs(as_path_prepend=1), id="prepend-1"),
        pytest.param({"as-path-prepend": "10"}, attrs(as_path_prepend=10), id="prepend-10"),
    ],
)
def test_service_attributes(annotations: dict[str, str], expected: RouteAttributes) -> None:
    full = {"kvip-bgp.io/loadbalancerIPs": VIP4}
    full.update({f"kvip-bgp.io/{k}": v for k, v in annotations.items()})
    decision = run(Case("x", None, service={"annotations": full}))
    assert decision.reason is None
    assert decision.attributes == expected


def test_kube_vip_prefix_is_honoured_only_for_vips_and_ignore() -> None:
    annotations = {"kube-vip.io/loadbalancerIPs": VIP4, "kube-vip.io/med": "garbage"}
    decision = run(Case("x", None, service={"annotations": annotations}))
    assert decision.reason is None
    assert decision.attributes == attrs()
    assert decision.vip_source == "annotation kube-vip.io/loadbalancerIPs"


# --------------------------------------------------------------------------- shared VIPs


def decision_for(name: str, namespace: str, annotations: dict[str, str]) -> ServiceDecision:
    full = {"kvip-bgp.io/loadbalancerIPs": VIP4, **annotations}
    return run(Case("x", None, service={"name": name, "namespace": namespace, "annotations": full}))


def test_shared_vip_is_one_advertisement_with_the_first_services_scalars() -> None:
    first = decision_for("web", "a", {"kvip-bgp.io/communities": "1:1", "kvip-bgp.io/med": "10"})
    second = decision_for(
        "web",
        "b",
        {
            "kvip-bgp.io/communities": "2:2",
            "kvip-bgp.io/med": "20",
            "kvip-bgp.io/as-path-prepend": "2",
        },
    )
    refused = decision_for("web", "0-refused", {"kvip-bgp.io/med": "nope"})
    # Input order must not matter: a/web comes first in namespace/name order.
    merged, conflicts = advertisements([second, refused, first])
    vip = ipaddress.ip_address(VIP4)
    assert list(merged) == [vip]
    advert = merged[vip]
    assert advert.attributes == attrs(("1:1", "2:2", "64512:100"), med=10)
    assert advert.sources == ("a/web", "b/web")
    assert conflicts == [
        SharedVipConflict(vip, ObjectKey("a", "web"), ObjectKey("b", "web"), "med"),
        SharedVipConflict(vip, ObjectKey("a", "web"), ObjectKey("b", "web"), "as_path_prepend"),
    ]


def test_shared_vip_with_equal_scalars_has_no_conflict() -> None:
    one = decision_for("one", "default", {"kvip-bgp.io/med": "5"})
    two = decision_for("two", "default", {"kvip-bgp.io/med": "5"})
    three = decision_for("three", "default", {"kvip-bgp.io/med": "5"})
    merged, conflicts = advertisements([three, two, one])
    assert conflicts == []
    assert merged[ipaddress.ip_address(VIP4)].sources == (
        "default/one",
        "default/three",
        "default/two",
    )


def test_advertisements_keep_only_announced_vips() -> None:
    dual = run(
        Case(
            "x",
            None,
            service={"annotations": {"kvip-bgp.io/loadbalancerIPs": f"{VIP4},203.0.114.5,{VIP6}"}},
        )
    )
    nothing = run(Case("x", "no-ready-endpoint", service={"name": "idle"}, endpoints=[]))
    merged, conflicts = advertisements([dual, nothing])
    assert sorted(str(v) for v in merged) == [VIP4, VIP6]
    assert all(a.sources == ("default/web",) for a in merged.values())
    assert conflicts == []


def test_merge_sources_unites_kubernetes_and_static() -> None:
    vip = ipaddress.ip_address(VIP4)
    kube, _ = advertisements([decision_for("web", "default", {"kvip-bgp.io/med": "7"})])
    static = {
        vip: Advertisement(vip, attrs(("9:9",), med=99), ("static",)),
    }
    merged = policy.merge_sources({"static": static, "kubernetes": kube})
    assert merged[vip].attributes == attrs(("64512:100", "9:9"), med=7)
    assert merged[vip].sources == ("default/web", "static")


# --------------------------------------------------------------------------- wire forms

# What logs, Events, /status, metrics and `kvip-bgp explain` show: these never change.
REFUSAL_WIRES = [
    (Refusal(Reason.NOT_LOAD_BALANCER), "not-load-balancer"),
    (Refusal(Reason.CLASS_MISMATCH), "class-mismatch"),
    (Refusal(Reason.IGNORED), "ignored"),
    (Refusal(Reason.NO_VIP), "no-vip"),
    (Refusal(Reason.INVALID_ANNOTATION, "kvip-bgp.io/med"), "invalid-annotation:kvip-bgp.io/med"),
    (
        Refusal(Reason.INVALID_ANNOTATION, "spec.loadBalancerIP"),
        "invalid-annotation:spec.loadBalancerIP",
    ),
    (Refusal(Reason.OUTSIDE_ALLOWED), "outside-allowed-ranges"),
    (Refusal(Reason.FORBIDDEN_ADDRESS, "loopback"), "forbidden-address:loopback"),
    (Refusal(Reason.FORBIDDEN_ADDRESS, "peer-address"), "forbidden-address:peer-address"),
    (Refusal(Reason.NO_LOCAL_ENDPOINT), "no-local-endpoint"),
    (Refusal(Reason.NO_READY_ENDPOINT), "no-ready-endpoint"),
    (Refusal(Reason.NODE_EXCLUDED, "cordoned"), "node-excluded:cordoned"),
    (Refusal(Reason.NODE_NOT_FOUND), "node-not-found"),
    (Refusal(Reason.NOT_FOUND), "not-found"),
    (Refusal(Reason.DELETED), "deleted"),
]


@pytest.mark.parametrize(("refusal", "text"), [pytest.param(r, t, id=t) for r, t in REFUSAL_WIRES])
def test_refusal_wire_form_is_stable_and_parses_back(refusal: Refusal, text: str) -> None:
    assert refusal.wire == str(refusal) == text
    assert Refusal.parse(text) == refusal


def test_policy_reasons_are_the_metric_labels() -> None:
    assert [r.value for r in POLICY_REASONS] == [
        "not-load-balancer",
        "class-mismatch",
        "ignored",
        "no-vip",
        "invalid-annotation",
        "outside-allowed-ranges",
        "forbidden-address",
        "no-local-endpoint",
        "no-ready-endpoint",
        "node-excluded",
        "node-not-found",
    ]


@pytest.mark.parametrize(
    "text", ["", "nope", "invalid-annotation", "class-mismatch:x", "node-excluded:"]
)
def test_refusal_parse_refuses_what_no_refusal_writes(text: str) -> None:
    with pytest.raises(ValueError):
        Refusal.parse(text)


def test_only_the_detailed_reasons_take_a_detail() -> None:
    with pytest.raises(ValueError):
        Refusal(Reason.INVALID_ANNOTATION)
    with pytest.raises(ValueError):
        Refusal(Reason.NO_VIP, "x")


def test_address_refusals_are_the_same_on_every_node() -> None:
    address = {r.reason for r, _ in REFUSAL_WIRES if r.of_address}
    assert address == {Reason.OUTSIDE_ALLOWED, Reason.FORBIDDEN_ADDRESS}


def test_explain_writes_reasons_in_their_wire_form() -> None:
    cfg = make_config(withdraw_when_cordoned=True)
    loop = parse_service(service_json(annotations={"kvip-bgp.io/loadbalancerIPs": "127.0.0.1"}))
    cordoned = parse_node(node_json(unschedulable=True))
    answer = explain(loop, [], cordoned, cfg, loop.key)
    assert answer.reason == "forbidden-address:loopback"
    assert "VIP 127.0.0.1: in no allowed range; not announced: forbidden-address:loopback" in (
        answer.steps
    )
    assert any(s.startswith(f"node {NODE}: node-excluded:cordoned (") for s in answer.steps)
    assert answer.steps[-1] == f"result on {NODE}: NOT ANNOUNCED (forbidden-address:loopback)"
    web = parse_service(service_json())
    endpoints = parse_endpoint_slice(slice_json()).endpoints
    ok = explain(web, endpoints, parse_node(node_json()), cfg, web.key)
    assert ok.reason is None
    assert any(s.startswith(f"node {NODE}: eligible (") for s in ok.steps)
    missing = explain(None, [], None, cfg, ObjectKey("default", "nope"))
    assert missing.reason == "not-found"


SOURCE_WIRES = [
    (VipSource.kubernetes(), "kubernetes"),
    (VipSource.service(ObjectKey("default", "web")), "default/web"),
    (VipSource.static(ipaddress.ip_address("198.51.100.1")), "static:198.51.100.1"),
    (VipSource.static(ipaddress.ip_address("2001:db8::1")), "static:2001:db8::1"),
]


@pytest.mark.parametrize(("source", "text"), [pytest.param(s, t, id=t) for s, t in SOURCE_WIRES])
def test_vip_source_wire_form_is_stable_and_parses_back(source: VipSource, text: str) -> None:
    assert source.wire == str(source) == text
    assert VipSource.parse(text) == source
    if source.kind is SourceKind.SERVICE:
        assert service_wire(ObjectKey("default", "web")) == text


@pytest.mark.parametrize(
    "text", ["", "static:", "static:web", "static:198.51.100.1/32", "/web", "a/"]
)
def test_vip_source_parse_refuses_what_no_source_writes(text: str) -> None:
    with pytest.raises(ValueError):
        VipSource.parse(text)


def test_vip_source_detail_matches_its_kind() -> None:
    with pytest.raises(ValueError):
        VipSource(SourceKind.STATIC)
    with pytest.raises(ValueError):
        VipSource(SourceKind.KUBERNETES, "x")


# --------------------------------------------------------------------------- resources


def test_parse_endpoint_slice_conditions() -> None:
    parsed = parse_endpoint_slice(
        slice_json(
            endpoints=[
                ep(NODE),
                ep(NODE, ready=None),
                ep(NODE, ready=False),
                ep(NODE, ready=False, serving=True, terminating=True),
                ep(None, ready=None),
            ]
        )
    )
    assert parsed.service == ObjectKey("default", "web")
    assert parsed.endpoints == (
        Endpoint(NODE, ready=True, serving=False),
        Endpoint(NODE, ready=True, serving=False),
        Endpoint(NODE, ready=False, serving=False),
        Endpoint(NODE, ready=False, serving=True),
        Endpoint(None, ready=True, serving=False),
    )
    assert [e.healthy for e in parsed.endpoints] == [True, True, False, True, True]


def test_parse_service_keeps_only_our_annotations() -> None:
    raw = service_json(
        annotations={
            "kvip-bgp.io/med": "5",
            "kube-vip.io/ignore": "false",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        lb_ip="198.51.100.3",
        ingress=["198.51.100.4"],
        lb_class="kvip-bgp.io/bgp",
    )
    raw["status"]["loadBalancer"]["ingress"].append({"hostname": "lb.example.com"})
    parsed = parse_service(raw)
    assert parsed.annotations == (("kube-vip.io/ignore", "false"), ("kvip-bgp.io/med", "5"))
    assert parsed.ingress_ips == ("198.51.100.4",)
    assert parsed.load_balancer_ip == "198.51.100.3"
    assert parsed.load_balancer_class == "kvip-bgp.io/bgp"
    assert parsed.key == ObjectKey("default", "web")
    assert parsed.resource_version == "1234"


# --------------------------------------------------------------------------- totality

GARBAGE_SERVICES: list[Any] = [
    {},
    {"metadata": None, "spec": [], "status": "x"},
    {"metadata": {"name": 5, "namespace": ["x"]}, "spec": {"type": "LoadBalancer"}},
    {"spec": {"type": "LoadBalancer", "loadBalancerIP": 12, "externalTrafficPolicy": 3}},
    {
        "metadata": {"annotations": {"kvip-bgp.io/loadbalancerIPs": 5, 3: "x", None: None}},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": ["a"]},
    },
    {
        "metadata": {"annotations": "kvip-bgp.io/loadbalancerIPs=1.2.3.4"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": "198.51.100.1"}},
    },
    {
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [None, 5, {"ip": 3}, {"ip": "x,y"}, {"ip": ""}]}},
    },
    {
        "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1\n"}]}},
    },
    {
        "metadata": {"annotations": {"kvip-bgp.io/loadbalancerIPs": "\x00\udcff\u202e"}},
        "spec": {"type": "LoadBalancer"},
    },
    service_json(
        annotations={
            "kvip-bgp.io/loadbalancerIPs": "198.51.100.1",
            "kvip-bgp.io/communities": "\udcff:1",
            "kvip-bgp.io/as-path-prepend": "\u00b2",
            "kvip-bgp.io/med": "9" * 400,
        }
    ),
]
GARBAGE_SLICES: list[Any] = [
    {},
    {"endpoints": "x", "metadata": []},
    {"endpoints": [None, 5, {"conditions": "x", "nodeName": 3}, {"conditions": {"ready": "yes"}}]},
    slice_json(),
]
GARBAGE_NODES: list[Any] = [
    None,
    {},
    {"metadata": {"labels": {3: 4, "a": None}}, "spec": {"unschedulable": "yes"}},
    {"status": {"conditions": "x", "addresses": [None, {"address": 5}, {"address": "not-ip"}]}},
    {"status": {"conditions": [None, {"type": "NetworkUnavailable"}], "addresses": "x"}},
    node_json(),
]


@pytest.mark.parametrize(
    "raw_service", GARBAGE_SERVICES, ids=[f"service{i}" for i in range(len(GARBAGE_SERVICES))]
)
@pytest.mark.parametrize(
    "raw_slice", GARBAGE_SLICES, ids=[f"slice{i}" for i in range(len(GARBAGE_SLICES))]
)
@pytest.mark.parametrize(
    "raw_node", GARBAGE_NODES, ids=[f"node{i}" for i in range(len(GARBAGE_NODES))]
)
def test_decide_never_raises_on_junk(raw_service: Any, raw_slice: Any, raw_node: Any) -> None:
    cfg = make_config(legacy_class_handling=True)
    service = parse_service(raw_service)
    endpoints = parse_endpoint_slice(raw_slice).endpoints
    node = None if raw_node is None else parse_node(raw_node)
    decision = decide(service, endpoints, node, cfg)
    assert isinstance(decision, ServiceDecision)
    advertisements([decision])
