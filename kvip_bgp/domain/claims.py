"""From a Service to its address claim: what it asks the pools for, and what it holds.

Pure, like the policy, so the allocating thread and the tests build claims the same way.
A request that contradicts itself (two annotations, or an annotation and
``spec.loadBalancerIP``, that name different addresses or pools) is an error on that
Service, never a silent choice of one of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from kvip_bgp.domain.annotations import (
    KUBE_VIP_PREFIX,
    MAX_ANNOTATION_LENGTH,
    PREFIX,
    AnnotationError,
    parse_vip_list,
)
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import Claim, Family
from kvip_bgp.domain.model import IPAddress, parse_ip
from kvip_bgp.domain.objects import ServiceInfo

METALLB_PREFIX: Final = "metallb.io/"
POOL_ANNOTATION: Final = PREFIX + "ip-allocated-from-pool"
"""Written by the allocator next to ``status.loadBalancer.ingress``: where the IPs are from."""
_REQUESTED_IPS: Final = (
    PREFIX + "loadbalancerIPs",
    KUBE_VIP_PREFIX + "loadbalancerIPs",
    METALLB_PREFIX + "loadBalancerIPs",
)
_FAMILIES: Final[dict[str, Family]] = {"IPv4": 4, "IPv6": 6}


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A Service of ours whose request cannot be served as written; ``message`` says why."""

    message: str


def serves(service: ServiceInfo, config: Config) -> bool:
    """Whether the Service is ours to allocate for: its type, class and ignore annotations."""
    if service.type != "LoadBalancer":
        return False
    if service.load_balancer_class is None:
        if not config.kubernetes.legacy_class_handling:
            return False
    elif service.load_balancer_class != config.kubernetes.load_balancer_class:
        return False
    for name in (PREFIX + "ignore", KUBE_VIP_PREFIX + "ignore"):
        raw = service.annotation(name)
        if raw is not None and raw.strip().lower() == "true":
            return False
    return True


def held_ips(service: ServiceInfo) -> tuple[IPAddress, ...]:
    """``status.loadBalancer.ingress`` as addresses (entries that are no IP left out)."""
    result: list[IPAddress] = []
    for text in service.ingress_ips:
        try:
            ip = parse_ip(text.strip())
        except ValueError:
            continue
        if ip not in result:
            result.append(ip)
    return tuple(result)


def claim_of(service: ServiceInfo, config: Config) -> Claim | InvalidRequest | None:
    """The Service's claim on the pools; None when it is not ours."""
    if not serves(service, config):
        return None
    try:
        requested = _requested_ips(service)
        pool = _one_value(service, "address-pool")
        sharing = _one_value(service, "allow-shared-ip")
    except AnnotationError as error:
        return InvalidRequest(str(error))
    families = tuple(_FAMILIES[f] for f in service.ip_families.split(",") if f in _FAMILIES)
    local = service.selector if service.external_traffic_policy == "Local" else None
    return Claim(
        key=service.key,
        created=service.created,
        families=families or (4,),
        family_policy=service.ip_family_policy or "SingleStack",
        labels=dict(service.labels),
        requested_ips=requested,
        requested_pool=pool,
        sharing_key=sharing,
        local_selector=local,
        ports=_ports(service.ports),
        held=held_ips(service),
        held_pool=service.annotation(POOL_ANNOTATION),
    )


def _requested_ips(service: ServiceInfo) -> tuple[IPAddress, ...]:
    found: list[tuple[str, tuple[IPAddress, ...]]] = []
    for name in _REQUESTED_IPS:
        raw = service.annotation(name)
        if raw is not None:
            found.append((name, parse_vip_list(name, raw)))
    if service.load_balancer_ip:
        field = "spec.loadBalancerIP"
        found.append((field, parse_vip_list(field, service.load_balancer_ip)))
    for name, ips in found[1:]:
        if set(ips) != set(found[0][1]):
            raise AnnotationError(
                name, f"asks for {_text(ips)} but {found[0][0]} asks for {_text(found[0][1])}"
            )
    return found[0][1] if found else ()


def _one_value(service: ServiceInfo, key: str) -> str | None:
    """``kvip-bgp.io/KEY`` or MetalLB's ``metallb.io/KEY``; both present must agree."""
    ours = service.annotation(PREFIX + key)
    theirs = service.annotation(METALLB_PREFIX + key)
    for name, value in ((PREFIX + key, ours), (METALLB_PREFIX + key, theirs)):
        if value is not None and (len(value) > MAX_ANNOTATION_LENGTH or not value.strip()):
            raise AnnotationError(name, "empty or longer than 1024 characters")
    if ours is not None and theirs is not None and ours.strip() != theirs.strip():
        raise AnnotationError(
            METALLB_PREFIX + key, f"is {theirs.strip()!r} but {PREFIX + key} is {ours.strip()!r}"
        )
    value = ours if ours is not None else theirs
    return None if value is None else value.strip()


def _ports(text: str) -> frozenset[tuple[str, int]]:
    result = set()
    for item in text.split(",") if text else ():
        protocol, _, port = item.rpartition("/")
        result.add((protocol, int(port)))
    return frozenset(result)


def _text(ips: tuple[IPAddress, ...]) -> str:
    return ", ".join(map(str, ips))
