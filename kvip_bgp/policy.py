"""Which VIPs this node announces, with which attributes, and why not.

Pure functions of frozen inputs and the config: no I/O, no clock, no Kubernetes or
netlink imports. Every "no" carries a stable reason string (``class-mismatch``,
``no-local-endpoint``, ``invalid-annotation:kvip-bgp.io/med``...) that goes unchanged into
logs, Kubernetes Events, ``/status`` and ``kvip-bgp explain``.

Annotation values come from whoever may edit a Service, so they are parsed strictly into
typed values here; nothing from the cluster is ever pasted into an ExaBGP command.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from kvip_bgp.config import Config
from kvip_bgp.model import (
    MAX_U32,
    Advertisement,
    Community,
    IPAddress,
    LargeCommunity,
    RouteAttributes,
    parse_ip,
)
from kvip_bgp.resources import Endpoint, NodeInfo, ObjectKey, ServiceInfo, key_order

PREFIX: Final = "kvip-bgp.io/"
KUBE_VIP_PREFIX: Final = "kube-vip.io/"
EXCLUDE_LABEL: Final = "node.kubernetes.io/exclude-from-external-load-balancers"
MAX_ANNOTATION_LENGTH: Final = 1024
# C0 controls and DEL: a newline in an annotation must never reach a command line. One
# regex search, not a Python generator over every character of every annotation value.
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")
MAX_VIPS_PER_SERVICE: Final = 16

# Stable reasons. Those that take a detail are written "reason:detail".
NOT_LOAD_BALANCER: Final = "not-load-balancer"
CLASS_MISMATCH: Final = "class-mismatch"
IGNORED: Final = "ignored"
NO_VIP: Final = "no-vip"
INVALID_ANNOTATION: Final = "invalid-annotation"
OUTSIDE_ALLOWED: Final = "outside-allowed-ranges"
FORBIDDEN_ADDRESS: Final = "forbidden-address"
NO_LOCAL_ENDPOINT: Final = "no-local-endpoint"
NO_READY_ENDPOINT: Final = "no-ready-endpoint"
NODE_EXCLUDED: Final = "node-excluded"
NODE_NOT_FOUND: Final = "node-not-found"


class AnnotationError(ValueError):
    """A Service annotation that does not parse; ``annotation`` names it."""

    def __init__(self, annotation: str, message: str) -> None:
        super().__init__(f"{annotation}: {message}")
        self.annotation = annotation


@dataclass(frozen=True)
class VipVerdict:
    vip: IPAddress
    announce: bool
    reason: str | None = None


@dataclass(frozen=True)
class ServiceDecision:
    """What this node does for one Service, and the chain of reasons behind it."""

    service: ObjectKey
    reason: str | None
    verdicts: tuple[VipVerdict, ...] = ()
    attributes: RouteAttributes | None = None
    vip_source: str | None = None
    message: str | None = None

    @property
    def announced(self) -> tuple[IPAddress, ...]:
        return tuple(v.vip for v in self.verdicts if v.announce)


@dataclass(frozen=True)
class SharedVipConflict:
    """Two Services share a VIP but disagree on a scalar attribute; ``winner`` decides."""

    vip: IPAddress
    winner: ObjectKey
    loser: ObjectKey
    attribute: str


def _annotation(service: ServiceInfo, name: str, kube_vip_alias: bool = False) -> str | None:
    value = service.annotation(PREFIX + name)
    if value is None and kube_vip_alias:
        value = service.annotation(KUBE_VIP_PREFIX + name)
    return value


def _checked_text(annotation: str, value: str) -> str:
    if len(value) > MAX_ANNOTATION_LENGTH:
        raise AnnotationError(annotation, f"longer than {MAX_ANNOTATION_LENGTH} characters")
    if _CONTROL_CHARACTERS.search(value):
        raise AnnotationError(annotation, "contains control characters")
    return value.strip()


def _split(annotation: str, value: str) -> list[str]:
    text = _checked_text(annotation, value)
    items = [item.strip() for item in text.split(",")]
    if not text or any(not item for item in items):
        raise AnnotationError(annotation, f"empty item in comma list {text!r}")
    return items


def parse_vip_list(annotation: str, value: str) -> tuple[IPAddress, ...]:
    items = _split(annotation, value)
    if len(items) > MAX_VIPS_PER_SERVICE:
        raise AnnotationError(annotation, f"more than {MAX_VIPS_PER_SERVICE} addresses")
    result: list[IPAddress] = []
    for item in items:
        try:
            vip = parse_ip(item)
        except ValueError as error:
            raise AnnotationError(annotation, f"{item!r} is not an IP address") from error
        if isinstance(vip, ipaddress.IPv6Address) and vip.scope_id is not None:
            # Free text after '%' would otherwise reach ExaBGP's command line.
            raise AnnotationError(annotation, f"{item!r} carries a %zone")
        if vip not in result:
            result.append(vip)
    return tuple(result)


def parse_uint(annotation: str, value: str, low: int = 0, high: int = MAX_U32) -> int:
    text = _checked_text(annotation, value)
    if not text.isascii() or not text.isdigit():
        raise AnnotationError(annotation, f"{text!r} is not a whole number")
    number = int(text)
    if not low <= number <= high:
        raise AnnotationError(annotation, f"{number} is outside {low}..{high}")
    return number


def parse_service_attributes(service: ServiceInfo, defaults: RouteAttributes) -> RouteAttributes:
    """The service's BGP attributes: annotations override (communities extend) the defaults."""
    communities = list(defaults.communities)
    large = list(defaults.large_communities)
    local_pref = defaults.local_preference
    med = defaults.med
    prepend = defaults.as_path_prepend
    if (raw := _annotation(service, "communities")) is not None:
        name = PREFIX + "communities"
        for item in _split(name, raw):
            try:
                communities.append(Community.parse(item))
            except ValueError as error:
                raise AnnotationError(name, str(error)) from error
    if (raw := _annotation(service, "large-communities")) is not None:
        name = PREFIX + "large-communities"
        for item in _split(name, raw):
            try:
                large.append(LargeCommunity.parse(item))
            except ValueError as error:
                raise AnnotationError(name, str(error)) from error
    if (raw := _annotation(service, "local-preference")) is not None:
        local_pref = parse_uint(PREFIX + "local-preference", raw)
    if (raw := _annotation(service, "med")) is not None:
        med = parse_uint(PREFIX + "med", raw)
    if (raw := _annotation(service, "as-path-prepend")) is not None:
        prepend = parse_uint(PREFIX + "as-path-prepend", raw, 1, 10)
    return RouteAttributes(
        communities=tuple(communities),
        large_communities=tuple(large),
        local_preference=local_pref,
        med=med,
        as_path_prepend=prepend,
    )


def service_vips(service: ServiceInfo) -> tuple[tuple[IPAddress, ...], str | None]:
    """The VIPs a Service asks for and where they came from.

    Order of precedence: the ``loadbalancerIPs`` annotation (ours, then kube-vip's), then
    ``spec.loadBalancerIP``, then ``status.loadBalancer.ingress[].ip`` (an IPAM such as
    MetalLB's controller may have written it).
    """
    for name in (PREFIX + "loadbalancerIPs", KUBE_VIP_PREFIX + "loadbalancerIPs"):
        raw = service.annotation(name)
        if raw is not None:
            return parse_vip_list(name, raw), f"annotation {name}"
    if service.load_balancer_ip:
        return parse_vip_list("spec.loadBalancerIP", service.load_balancer_ip), (
            "spec.loadBalancerIP"
        )
    if service.ingress_ips:
        return (
            parse_vip_list("status.loadBalancer.ingress", ",".join(service.ingress_ips)),
            "status.loadBalancer.ingress",
        )
    return (), None


def named_vips(service: ServiceInfo) -> tuple[IPAddress, ...]:
    """Every VIP ``service`` names, before any check; () when its VIP annotation is bad.

    What ``decide`` may announce for it is a subset: the cluster's first pass holds a VIP
    back until every Service naming it has been decided.
    """
    try:
        return service_vips(service)[0]
    except AnnotationError:
        return ()


def address_refusal(
    vip: IPAddress, namespace: str | None, config: Config, node: NodeInfo | None
) -> str | None:
    """Why this VIP may never be announced (hijack protection), or None if it may."""
    if vip.is_unspecified or vip.is_multicast or vip.is_link_local or vip.is_loopback:
        return f"{FORBIDDEN_ADDRESS}:{_address_class(vip)}"
    if node is not None and vip in node.ips:
        return f"{FORBIDDEN_ADDRESS}:node-address"
    if any(vip == peer.address or vip == peer.local_address for peer in config.bgp.peers):
        return f"{FORBIDDEN_ADDRESS}:peer-address"
    if not config.vips.admits(vip, namespace):
        return OUTSIDE_ALLOWED
    return None


def _address_class(vip: IPAddress) -> str:
    if vip.is_unspecified:
        return "unspecified"
    if vip.is_multicast:
        return "multicast"
    if vip.is_link_local:
        return "link-local"
    return "loopback"


def node_refusal(node: NodeInfo | None, config: Config) -> str | None:
    """Why this node must announce nothing from the cluster right now, or None."""
    if node is None:
        return NODE_NOT_FOUND
    if node.label(EXCLUDE_LABEL) is not None:
        return f"{NODE_EXCLUDED}:label"
    if node.network_unavailable:
        return f"{NODE_EXCLUDED}:network-unavailable"
    if config.kubernetes.withdraw_when_cordoned and node.unschedulable:
        return f"{NODE_EXCLUDED}:cordoned"
    return None


def decide(
    service: ServiceInfo,
    endpoints: Sequence[Endpoint],
    node: NodeInfo | None,
    config: Config,
) -> ServiceDecision:
    """Decide for one Service on this node. Never raises on any input."""
    key = service.key
    if service.type != "LoadBalancer":
        return ServiceDecision(key, NOT_LOAD_BALANCER)
    wanted = config.kubernetes.load_balancer_class
    if service.load_balancer_class is None:
        if not config.kubernetes.legacy_class_handling:
            return ServiceDecision(key, CLASS_MISMATCH, message="no loadBalancerClass")
    elif service.load_balancer_class != wanted:
        return ServiceDecision(
            key, CLASS_MISMATCH, message=f"class {service.load_balancer_class!r} is not ours"
        )
    for ignore_key in (PREFIX + "ignore", KUBE_VIP_PREFIX + "ignore"):
        raw = service.annotation(ignore_key)
        if raw is not None and raw.strip().lower() == "true":
            return ServiceDecision(key, IGNORED, message=f"{ignore_key}=true")
    try:
        vips, source = service_vips(service)
        attributes = parse_service_attributes(service, config.advertise)
    except AnnotationError as error:
        return ServiceDecision(key, f"{INVALID_ANNOTATION}:{error.annotation}", message=str(error))
    if not vips:
        return ServiceDecision(key, NO_VIP, message="no VIP from annotation, spec or status")

    verdicts: list[VipVerdict] = []
    gate = node_refusal(node, config) or _endpoint_refusal(service, endpoints, config)
    for vip in vips:
        refusal = address_refusal(vip, key.namespace, config, node)
        if refusal is None and gate is not None:
            refusal = gate
        verdicts.append(VipVerdict(vip, refusal is None, refusal))
    announced = [v for v in verdicts if v.announce]
    reason = None if announced else verdicts[0].reason
    return ServiceDecision(key, reason, tuple(verdicts), attributes=attributes, vip_source=source)


def _endpoint_refusal(
    service: ServiceInfo, endpoints: Sequence[Endpoint], config: Config
) -> str | None:
    healthy = [ep for ep in endpoints if ep.healthy]
    if service.external_traffic_policy == "Local":
        if not any(ep.node_name == config.node_name for ep in healthy):
            return NO_LOCAL_ENDPOINT
        return None
    if not healthy:
        return NO_READY_ENDPOINT
    return None


def advertisements(
    decisions: Iterable[ServiceDecision],
) -> tuple[dict[IPAddress, Advertisement], list[SharedVipConflict]]:
    """Merge per-Service decisions into one route per VIP.

    A VIP shared by several Services is one route: communities unite; for scalar
    attributes the Service first in ``namespace/name`` order wins, and every disagreement
    is returned so the caller can put a Warning Event on the losing Service.
    """
    merged: dict[IPAddress, Advertisement] = {}
    winners: dict[IPAddress, ServiceDecision] = {}
    conflicts: list[SharedVipConflict] = []
    ordered = sorted(decisions, key=lambda d: key_order(d.service))
    for decision in ordered:
        if decision.attributes is None:
            continue
        for vip in decision.announced:
            current = merged.get(vip)
            if current is None:
                merged[vip] = Advertisement(vip, decision.attributes, (str(decision.service),))
                winners[vip] = decision
                continue
            winner = winners[vip]
            assert winner.attributes is not None
            for attribute in ("local_preference", "med", "as_path_prepend"):
                if getattr(winner.attributes, attribute) != getattr(decision.attributes, attribute):
                    conflicts.append(
                        SharedVipConflict(vip, winner.service, decision.service, attribute)
                    )
            merged[vip] = Advertisement(
                vip,
                current.attributes.merged_with(decision.attributes),
                (*current.sources, str(decision.service)),
            )
    return merged, conflicts


def merge_sources(
    per_source: Mapping[str, Mapping[IPAddress, Advertisement]],
) -> dict[IPAddress, Advertisement]:
    """Union of the desired routes of several sources (Kubernetes, static), merged per VIP."""
    result: dict[IPAddress, Advertisement] = {}
    for source in sorted(per_source):
        for vip, advert in per_source[source].items():
            current = result.get(vip)
            if current is None:
                result[vip] = advert
            else:
                result[vip] = Advertisement(
                    vip,
                    current.attributes.merged_with(advert.attributes),
                    (*current.sources, *advert.sources),
                )
    return result


@dataclass(frozen=True)
class Explanation:
    """``kvip-bgp explain``: the decision for one Service on this node, step by step."""

    service: str
    announced: tuple[str, ...]
    reason: str | None
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
        return Explanation(str(key), (), "not-found", ("Service not found in the cache",))
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
        result = "announce" if verdict.announce else f"not announced: {verdict.reason}"
        steps.append(f"VIP {verdict.vip}: {range_text}; {result}")
    if node is None:
        steps.append(f"node {config.node_name}: not found in the cluster")
    else:
        state = node_refusal(node, config) or "eligible"
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
    final = "ANNOUNCED" if decision.announced else f"NOT ANNOUNCED ({decision.reason})"
    steps.append(f"result on {config.node_name}: {final}")
    return Explanation(
        str(key), tuple(str(v) for v in decision.announced), decision.reason, tuple(steps)
    )
