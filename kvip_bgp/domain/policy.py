"""Which VIPs this node announces, with which attributes, and why not.

Pure functions of frozen inputs and the config: no I/O, no clock, no Kubernetes or
netlink imports. Every "no" carries a ``Refusal`` whose stable wire form
(``class-mismatch``, ``no-local-endpoint``, ``invalid-annotation:kvip-bgp.io/med``...)
goes unchanged into logs, Kubernetes Events, ``/status`` and ``kvip-bgp explain``.

Annotation values come from whoever may edit a Service, so they are parsed strictly into
typed values here; nothing from the cluster is ever pasted into an ExaBGP command.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from kvip_bgp.domain.addresses import address_key, forbidden_class, forbidden_v4
from kvip_bgp.domain.annotations import (
    EXCLUDE_LABEL,
    KUBE_VIP_PREFIX,
    PREFIX,
    AnnotationError,
    parse_service_attributes,
    service_vips,
)
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import (
    Advertisement,
    IPAddress,
    RouteAttributes,
)
from kvip_bgp.domain.objects import Endpoint, NodeInfo, ObjectKey, ServiceInfo, key_order
from kvip_bgp.domain.reasons import Reason, Refusal
from kvip_bgp.domain.sources import service_wire
from kvip_bgp.domain.values import fast_init


@fast_init
@dataclass(frozen=True, slots=True)
class VipVerdict:
    vip: IPAddress
    announce: bool
    reason: Refusal | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class ServiceDecision:
    """What this node does for one Service, and the chain of reasons behind it.

    ``slots``: the cluster thread keeps one per Service, 10,000 at scale.
    """

    service: ObjectKey
    reason: Refusal | None
    verdicts: tuple[VipVerdict, ...] = ()
    attributes: RouteAttributes | None = None
    vip_source: str | None = None
    message: str | None = None
    # The VIPs announced, derived from ``verdicts`` once: the cluster thread's index and
    # merge read them several times per decision.
    announced: tuple[IPAddress, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        verdicts = self.verdicts
        if len(verdicts) == 1:  # nearly every Service: no generator (~0.25 us of ~1 us)
            only = verdicts[0]
            announced: tuple[IPAddress, ...] = (only.vip,) if only.announce else ()
        else:
            announced = tuple([v.vip for v in verdicts if v.announce])
        object.__setattr__(self, "announced", announced)


@dataclass(frozen=True)
class SharedVipConflict:
    """Two Services share a VIP but disagree on a scalar attribute; ``winner`` decides."""

    vip: IPAddress
    winner: ObjectKey
    loser: ObjectKey
    attribute: str


def address_refusal(
    vip: IPAddress, namespace: str | None, config: Config, node: NodeInfo | None
) -> Refusal | None:
    """Why this VIP may never be announced (hijack protection), or None if it may.

    On the VIP's integer, taken once (``address_key``): looking an ``ipaddress`` object
    up in the node's and the peers' sets hashed it in Python twice (docs/performance.md).
    """
    ip = int(vip)
    v4 = isinstance(vip, ipaddress.IPv4Address)
    if (forbidden := forbidden_v4(ip) if v4 else forbidden_class(vip)) is not None:
        return Refusal(Reason.FORBIDDEN_ADDRESS, forbidden)
    key = ip if v4 else address_key(vip)
    if node is not None and key in node.ip_keys:
        return Refusal(Reason.FORBIDDEN_ADDRESS, "node-address")
    if key in config.bgp.peer_address_keys:
        return Refusal(Reason.FORBIDDEN_ADDRESS, "peer-address")
    if not config.vips.admits_int(ip, v4, namespace):
        return Refusal(Reason.OUTSIDE_ALLOWED)
    return None


def node_refusal(node: NodeInfo | None, config: Config) -> Refusal | None:
    """Why this node must announce nothing from the cluster right now, or None."""
    if node is None:
        return Refusal(Reason.NODE_NOT_FOUND)
    if node.label(EXCLUDE_LABEL) is not None:
        return Refusal(Reason.NODE_EXCLUDED, "label")
    if node.network_unavailable:
        return Refusal(Reason.NODE_EXCLUDED, "network-unavailable")
    if config.kubernetes.withdraw_when_cordoned and node.unschedulable:
        return Refusal(Reason.NODE_EXCLUDED, "cordoned")
    return None


def prepare(service: ServiceInfo, node: NodeInfo | None, config: Config) -> ServiceDecision:
    """The decision for ``service`` if its endpoints admit it: all but the endpoint check.

    Why: the cluster thread decides a Service again whenever its EndpointSlices change
    (in a burst of creates, once before its slice exists and once after), and everything
    but that check (class, ignore, the VIPs parsed from annotations, spec or status, the
    attributes, the address refusals, this node's own state) depends only on the Service,
    this Node and the config: ``decide`` is ``conclude(prepare(...), ...)``, and the
    thread keeps a prepared decision while those three are the same objects.

    Only a decision that announces (``reason`` None) can still be refused by endpoints;
    any other is final. Never raises on any input.
    """
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
    for ignore_key in IGNORE_KEYS:
        raw = service.annotation(ignore_key)
        if raw is not None and raw.strip().lower() == "true":
            return ServiceDecision(key, IGNORED, message=f"{ignore_key}=true")
    try:
        vips, source = service_vips(service, allocated_only=bool(config.ipam))
        attributes = parse_service_attributes(service, config.advertise)
    except AnnotationError as error:
        invalid = Refusal(Reason.INVALID_ANNOTATION, error.annotation)
        return ServiceDecision(key, invalid, message=str(error))
    if not vips:
        return ServiceDecision(
            key,
            NO_VIP,
            message="no address allocated from a pool yet"
            if config.ipam
            else "no VIP from annotation, spec or status",
        )

    verdicts = []
    announced = False
    for vip in vips:
        refusal = address_refusal(vip, key.namespace, config, node)
        announced = announced or refusal is None
        verdicts.append(VipVerdict(vip, refusal is None, refusal))
    decision = ServiceDecision(
        key, None if announced else verdicts[0].reason, tuple(verdicts), attributes, source
    )
    if announced and (gate := node_refusal(node, config)) is not None:
        return _gated(decision, gate)
    return decision


def conclude(
    prepared: ServiceDecision,
    service: ServiceInfo,
    endpoints: Sequence[Endpoint],
    config: Config,
) -> ServiceDecision:
    """The decision for ``service`` with these endpoints, from ``prepare``'s for it."""
    if prepared.reason is not None:
        return prepared
    refusal = _endpoint_refusal(service, endpoints, config)
    return prepared if refusal is None else _gated(prepared, refusal)


def decide(
    service: ServiceInfo,
    endpoints: Sequence[Endpoint],
    node: NodeInfo | None,
    config: Config,
) -> ServiceDecision:
    """Decide for one Service on this node. Never raises on any input."""
    return conclude(prepare(service, node, config), service, endpoints, config)


def _gated(decision: ServiceDecision, gate: Refusal) -> ServiceDecision:
    """``decision`` with ``gate`` refusing every VIP its own address did not refuse."""
    verdicts = tuple(
        [v if v.reason is not None else VipVerdict(v.vip, False, gate) for v in decision.verdicts]
    )
    return ServiceDecision(
        decision.service, verdicts[0].reason, verdicts, decision.attributes, decision.vip_source
    )


def _endpoint_refusal(
    service: ServiceInfo, endpoints: Sequence[Endpoint], config: Config
) -> Refusal | None:
    """No healthy endpoint (for ``Local``, none on this node): a refusal; else None.

    Loops with ``Endpoint.healthy`` written out (ready or serving), not a list of the
    healthy ones through the property: this runs for every decision that announces.
    """
    if service.external_traffic_policy == "Local":
        node_name = config.node_name
        for ep in endpoints:
            if (ep.ready or ep.serving) and ep.node_name == node_name:
                return None
        return NO_LOCAL_ENDPOINT
    for ep in endpoints:
        if ep.ready or ep.serving:
            return None
    return NO_READY_ENDPOINT


IGNORE_KEYS: Final = (PREFIX + "ignore", KUBE_VIP_PREFIX + "ignore")  # ours first
# Refusals without a detail are values that never vary: one of each, not one per decision.
NOT_LOAD_BALANCER: Final = Refusal(Reason.NOT_LOAD_BALANCER)
CLASS_MISMATCH: Final = Refusal(Reason.CLASS_MISMATCH)
IGNORED: Final = Refusal(Reason.IGNORED)
NO_VIP: Final = Refusal(Reason.NO_VIP)
NO_LOCAL_ENDPOINT: Final = Refusal(Reason.NO_LOCAL_ENDPOINT)
NO_READY_ENDPOINT: Final = Refusal(Reason.NO_READY_ENDPOINT)


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
                merged[vip] = Advertisement(
                    vip, decision.attributes, (service_wire(decision.service),)
                )
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
                (*current.sources, service_wire(decision.service)),
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
