"""``kvip-bgp explain``: every step of a Service's decision, for a person to read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvip_bgp.domain.config import Config
from kvip_bgp.domain.objects import Endpoint, NodeInfo, ObjectKey, ServiceInfo
from kvip_bgp.domain.policy import decide, node_refusal
from kvip_bgp.domain.reasons import Reason, wire


@dataclass(frozen=True)
class Explanation:
    """``kvip-bgp explain``: the decision for one Service on this node, step by step."""

    service: str
    announced: tuple[str, ...]
    reason: str | None  # the wire form: this goes out as JSON
    steps: tuple[str, ...]


def explain(
    service: ServiceInfo | None,
    endpoints: Sequence[Endpoint],
    node: NodeInfo | None,
    config: Config,
    key: ObjectKey,
) -> Explanation:
    """Why this node does or does not announce a Service: every rule ``decide`` applies.

    It calls ``decide`` for the verdict and only adds the evidence around it, so the
    explanation cannot disagree with what the daemon actually does.
    """
    if service is None:
        return Explanation(
            str(key), (), Reason.NOT_FOUND.value, ("Service not found in the cache",)
        )
    decision = decide(service, endpoints, node, config)
    steps: list[str] = []
    ok, no = "yes", "NO"
    steps.append(f"type: {service.type} -> {ok if service.type == 'LoadBalancer' else no}")
    wanted = config.kubernetes.load_balancer_class
    klass = service.load_balancer_class
    if klass is None:
        legacy = "served (legacy_class_handling)" if config.kubernetes.legacy_class_handling else no
        steps.append(f"loadBalancerClass: none -> {legacy}")
    else:
        steps.append(
            f"loadBalancerClass: {klass} (ours: {wanted}) -> {ok if klass == wanted else no}"
        )
    if decision.vip_source is not None:
        vips = ", ".join(str(v.vip) for v in decision.verdicts)
        steps.append(f"VIP source: {decision.vip_source} -> {vips}")
    for verdict in decision.verdicts:
        containing = sorted(
            (
                r
                for r in config.vips.allowed
                if r.cidr.version == verdict.vip.version and verdict.vip in r.cidr
            ),
            key=lambda r: r.cidr.prefixlen,
        )
        if not containing:
            range_text = "in no allowed range"
        elif config.vips.admits(verdict.vip, key.namespace):
            range_text = f"allowed by {containing[-1].cidr}"
        else:
            owners = ", ".join(containing[-1].namespaces)
            range_text = f"in {containing[-1].cidr}, reserved to namespaces {owners}"
        result = "announce" if verdict.announce else f"not announced: {wire(verdict.reason)}"
        steps.append(f"VIP {verdict.vip}: {range_text}; {result}")
    if node is None:
        steps.append(f"node {config.node_name}: not found in the cluster")
    else:
        state = wire(node_refusal(node, config)) or "eligible"
        steps.append(
            f"node {node.name}: {state} (unschedulable={node.unschedulable}, "
            f"network_unavailable={node.network_unavailable})"
        )
    per_node: dict[str, list[int]] = {}
    for endpoint in endpoints:
        counts = per_node.setdefault(endpoint.node_name or "(no node)", [0, 0])
        counts[0 if endpoint.healthy else 1] += 1
    listing = ", ".join(
        f"{name}: {h} healthy/{u} not" for name, (h, u) in sorted(per_node.items())[:20]
    )
    more = f" (+{len(per_node) - 20} nodes)" if len(per_node) > 20 else ""
    steps.append(
        f"externalTrafficPolicy: {service.external_traffic_policy}; endpoints: "
        f"{listing or 'none'}{more}"
    )
    if decision.attributes is not None:
        a = decision.attributes
        steps.append(
            "attributes: communities ["
            + " ".join(str(c) for c in a.communities)
            + "] large ["
            + " ".join(str(c) for c in a.large_communities)
            + f"] local-preference {a.local_preference} med {a.med} prepend {a.as_path_prepend}"
        )
    if decision.message:
        steps.append(f"detail: {decision.message}")
    final = "ANNOUNCED" if decision.announced else f"NOT ANNOUNCED ({wire(decision.reason)})"
    steps.append(f"result on {config.node_name}: {final}")
    return Explanation(
        str(key), tuple(str(v) for v in decision.announced), wire(decision.reason), tuple(steps)
    )
