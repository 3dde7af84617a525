"""``decide`` split in two (``prepare`` then ``conclude``) gives what it gave in one piece.

The reference below is ``policy.decide`` as it was before the split (777e1b2), copied
verbatim but for names. Hypothesis generates Services, endpoints, Nodes and configs, both
plausible (built with ``kvip_bgp.testing.objects``, so most reach the VIP checks) and
hostile (``test_properties``' strategies), and checks: one prepared decision concluded
with any endpoints is the reference decision for those endpoints (what the cluster
thread relies on when it keeps it while only endpoints change), a prepared refusal is
final, and the VIPs of a prepared decision are ``named_vips``'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_properties import CONFIGS, NODE, SERVICE, SETTINGS, SLICE, VIPS, _policy_config

from kvip_bgp.domain.annotations import (
    EXCLUDE_LABEL,
    KUBE_VIP_PREFIX,
    PREFIX,
    AnnotationError,
    named_vips,
    parse_service_attributes,
    service_vips,
)
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import Pool, parse_range
from kvip_bgp.domain.objects import (
    Endpoint,
    NodeInfo,
    ServiceInfo,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from kvip_bgp.domain.policy import (
    ServiceDecision,
    VipVerdict,
    address_refusal,
    conclude,
    decide,
    node_refusal,
    prepare,
)
from kvip_bgp.domain.reasons import Reason, Refusal
from kvip_bgp.testing import objects


def reference_decide(
    service: ServiceInfo,
    endpoints: Sequence[Endpoint],
    node: NodeInfo | None,
    config: Config,
) -> ServiceDecision:
    """``policy.decide`` at 777e1b2, in one piece."""
    key = service.key
    if service.type != "LoadBalancer":
        return ServiceDecision(key, Refusal(Reason.NOT_LOAD_BALANCER))
    wanted = config.kubernetes.load_balancer_class
    if service.load_balancer_class is None:
        if not config.kubernetes.legacy_class_handling:
            return ServiceDecision(
                key, Refusal(Reason.CLASS_MISMATCH), message="no loadBalancerClass"
            )
    elif service.load_balancer_class != wanted:
        return ServiceDecision(
            key,
            Refusal(Reason.CLASS_MISMATCH),
            message=f"class {service.load_balancer_class!r} is not ours",
        )
    for ignore_key in (PREFIX + "ignore", KUBE_VIP_PREFIX + "ignore"):
        raw = service.annotation(ignore_key)
        if raw is not None and raw.strip().lower() == "true":
            return ServiceDecision(key, Refusal(Reason.IGNORED), message=f"{ignore_key}=true")
    try:
        vips, source = service_vips(service, allocated_only=bool(config.ipam))
        attributes = parse_service_attributes(service, config.advertise)
    except AnnotationError as error:
        invalid = Refusal(Reason.INVALID_ANNOTATION, error.annotation)
        return ServiceDecision(key, invalid, message=str(error))
    if not vips:
        return ServiceDecision(
            key,
            Refusal(Reason.NO_VIP),
            message="no address allocated from a pool yet"
            if config.ipam
            else "no VIP from annotation, spec or status",
        )

    verdicts: list[VipVerdict] = []
    gate = node_refusal(node, config) or _reference_endpoint_refusal(service, endpoints, config)
    for vip in vips:
        refusal = address_refusal(vip, key.namespace, config, node)
        if refusal is None and gate is not None:
            refusal = gate
        verdicts.append(VipVerdict(vip, refusal is None, refusal))
    announced = [v for v in verdicts if v.announce]
    reason = None if announced else verdicts[0].reason
    return ServiceDecision(key, reason, tuple(verdicts), attributes=attributes, vip_source=source)


def _reference_endpoint_refusal(
    service: ServiceInfo, endpoints: Sequence[Endpoint], config: Config
) -> Refusal | None:
    healthy = [ep for ep in endpoints if ep.healthy]
    if service.external_traffic_policy == "Local":
        if not any(ep.node_name == config.node_name for ep in healthy):
            return Refusal(Reason.NO_LOCAL_ENDPOINT)
        return None
    if not healthy:
        return Refusal(Reason.NO_READY_ENDPOINT)
    return None


# The property tests' configs, and one with pools: then only the status counts.
ALL_CONFIGS = [
    *CONFIGS,
    dataclasses.replace(_policy_config(), ipam=(Pool("p", (parse_range("198.51.100.0/25"),)),)),
]

PLAUSIBLE_SERVICE = st.builds(
    lambda name, vip, spec_ip, ingress, kind, lb_class, policy, notes, namespace: objects.service(
        name,
        vip,
        namespace=namespace,
        spec_ip=spec_ip,
        ingress=ingress,
        type=kind,
        lb_class=lb_class,
        traffic_policy=policy,
        annotations=notes,
    ),
    name=st.sampled_from(["web", "dns"]),
    vip=st.one_of(st.none(), VIPS, st.lists(VIPS, min_size=1, max_size=3).map(",".join)),
    spec_ip=st.one_of(st.none(), VIPS),
    ingress=st.one_of(st.none(), st.lists(VIPS, max_size=2)),
    kind=st.sampled_from(["LoadBalancer", "LoadBalancer", "LoadBalancer", "ClusterIP"]),
    lb_class=st.sampled_from([None, None, "kvip-bgp.io/bgp", "example.com/other"]),
    policy=st.sampled_from(["Cluster", "Local", None]),
    notes=st.fixed_dictionaries(
        {},
        optional={
            PREFIX + "ignore": st.sampled_from(["true", "false", " TRUE "]),
            KUBE_VIP_PREFIX + "ignore": st.sampled_from(["true", "no"]),
            KUBE_VIP_PREFIX + "loadbalancerIPs": VIPS,
            PREFIX + "med": st.sampled_from(["10", "x", "-1"]),
            PREFIX + "communities": st.sampled_from(["64512:7", "64512:7,no-export", "bad"]),
        },
    ),
    namespace=st.sampled_from(["default", "team-a"]),
)
PLAUSIBLE_SLICE = st.builds(
    lambda nodes: objects.endpoint_slice("web", nodes),
    st.lists(st.tuples(st.sampled_from(["node-1", "node-2"]), st.booleans()), max_size=3),
)
PLAUSIBLE_NODE = st.builds(
    lambda labels, addresses, unschedulable, unavailable: objects.node(
        labels=labels,
        addresses=addresses,
        unschedulable=unschedulable,
        network_unavailable=unavailable,
    ),
    labels=st.sampled_from([None, {EXCLUDE_LABEL: ""}, {"rack": "a"}]),
    addresses=st.lists(VIPS, max_size=2),
    unschedulable=st.booleans(),
    unavailable=st.sampled_from([None, "True", "False"]),
)
INPUTS: dict[str, st.SearchStrategy[Any]] = {
    "service": st.one_of(PLAUSIBLE_SERVICE, PLAUSIBLE_SERVICE, SERVICE),
    "slices": st.lists(
        st.lists(st.one_of(PLAUSIBLE_SLICE, PLAUSIBLE_SLICE, SLICE), max_size=2),
        min_size=1,
        max_size=4,
    ),
    "node": st.one_of(st.none(), PLAUSIBLE_NODE, PLAUSIBLE_NODE, NODE),
    "which": st.sampled_from(range(len(ALL_CONFIGS))),
}


def _endpoints(slices: list[dict[str, Any]]) -> list[Endpoint]:
    return [ep for s in slices for ep in parse_endpoint_slice(s).endpoints]


@SETTINGS
@given(**INPUTS)
def test_one_prepared_service_concluded_with_any_endpoints_is_the_reference_decision(
    service: dict[str, Any],
    slices: list[list[dict[str, Any]]],
    node: dict[str, Any] | None,
    which: int,
) -> None:
    config = ALL_CONFIGS[which]
    svc = parse_service(service)
    node_info = None if node is None else parse_node(node)
    prepared = prepare(svc, node_info, config)
    for endpoint_slices in slices:  # the same Service as its endpoints change
        endpoints = _endpoints(endpoint_slices)
        expected = reference_decide(svc, endpoints, node_info, config)
        assert conclude(prepared, svc, endpoints, config) == expected
        assert decide(svc, endpoints, node_info, config) == expected
        if prepared.reason is not None:  # final: the thread then reads no endpoints
            assert conclude(prepared, svc, (), config) == expected
            assert conclude(prepared, svc, (), config) is prepared
    if prepared.verdicts:  # the VIPs the first pass holds back for it
        assert tuple(v.vip for v in prepared.verdicts) == named_vips(svc, bool(config.ipam))


def _svc(**kwargs: Any) -> ServiceInfo:
    return parse_service(objects.service("web", **kwargs))


HERE = [parse_endpoint_slice(objects.endpoint_slice("web", ["node-1"])).endpoints[0]]
ELSEWHERE = [parse_endpoint_slice(objects.endpoint_slice("web", ["node-2"])).endpoints[0]]
NODE_1 = parse_node(objects.node())
V4 = "198.51.100.5"
BAD = "127.0.0.1"


@pytest.mark.parametrize(
    ("service", "endpoints", "node", "reason", "matter"),
    [
        (_svc(vip=V4, type="ClusterIP"), HERE, NODE_1, "not-load-balancer", False),
        (_svc(vip=V4, lb_class="x/y"), HERE, NODE_1, "class-mismatch", False),
        (_svc(vip=V4, annotations={PREFIX + "ignore": "true"}), HERE, NODE_1, "ignored", False),
        (_svc(vip="x"), HERE, NODE_1, "invalid-annotation:kvip-bgp.io/loadbalancerIPs", False),
        (
            _svc(vip=V4, annotations={PREFIX + "med": "x"}),
            HERE,
            NODE_1,
            "invalid-annotation:kvip-bgp.io/med",
            False,
        ),
        (_svc(), HERE, NODE_1, "no-vip", False),
        (_svc(vip=BAD), HERE, NODE_1, "forbidden-address:loopback", False),
        (_svc(vip=f"{BAD},{V4}"), [], NODE_1, "forbidden-address:loopback", True),
        (_svc(vip=V4), HERE, None, "node-not-found", False),
        (_svc(vip=V4), [], NODE_1, "no-ready-endpoint", True),
        (_svc(vip=V4, traffic_policy="Local"), ELSEWHERE, NODE_1, "no-local-endpoint", True),
        (_svc(vip=V4, traffic_policy="Local"), HERE, NODE_1, None, True),
        (_svc(vip=f"{V4},{BAD}"), HERE, NODE_1, None, True),
    ],
)
def test_each_reason_is_prepared_or_concluded_as_before(
    service: ServiceInfo,
    endpoints: list[Endpoint],
    node: NodeInfo | None,
    reason: str | None,
    matter: bool,
) -> None:
    config = CONFIGS[0]
    prepared = prepare(service, node, config)
    decision = conclude(prepared, service, endpoints, config)
    assert decision == reference_decide(service, endpoints, node, config)
    assert (None if decision.reason is None else decision.reason.wire) == reason
    assert (prepared.reason is None) is matter  # only then can endpoints refuse it
