"""Service annotations parsed strictly into typed values.

Annotation values come from whoever may edit a Service, so they are parsed strictly into
typed values here; nothing from the cluster is ever pasted into an ExaBGP command.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final

from kvip_bgp.domain.model import (
    MAX_U32,
    Community,
    IPAddress,
    LargeCommunity,
    RouteAttributes,
    parse_ip,
)
from kvip_bgp.domain.objects import ServiceInfo

PREFIX: Final = "kvip-bgp.io/"
KUBE_VIP_PREFIX: Final = "kube-vip.io/"
EXCLUDE_LABEL: Final = "node.kubernetes.io/exclude-from-external-load-balancers"
MAX_ANNOTATION_LENGTH: Final = 1024
# C0 controls and DEL: a newline in an annotation must never reach a command line. One
# regex search, not a Python generator over every character of every annotation value.
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")
MAX_VIPS_PER_SERVICE: Final = 16
# The VIP annotations, ours before kube-vip's (service_vips).
_VIP_ANNOTATIONS: Final = (PREFIX + "loadbalancerIPs", KUBE_VIP_PREFIX + "loadbalancerIPs")
_ATTRIBUTE_ANNOTATIONS: Final = frozenset(
    PREFIX + name
    for name in ("communities", "large-communities", "local-preference", "med", "as-path-prepend")
)


class AnnotationError(ValueError):
    """A Service annotation that does not parse; ``annotation`` names it."""

    def __init__(self, annotation: str, message: str) -> None:
        super().__init__(f"{annotation}: {message}")
        self.annotation = annotation


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
    if text and "," not in text:
        return [text]  # one item (most VIP lists): already stripped, not empty
    items = [item.strip() for item in text.split(",")]
    if not text or any(not item for item in items):
        raise AnnotationError(annotation, f"empty item in comma list {text!r}")
    return items


def parse_vip_list(annotation: str, value: str) -> tuple[IPAddress, ...]:
    """The distinct addresses of a comma list, in order; ``AnnotationError`` if bad.

    A value that ``inet_pton`` takes as IPv4 whole (nearly every VIP annotation: one
    plain address) is that address alone: such a value has no comma, space, control
    character or zone, so the checks below would pass it unchanged (``parse_ip``);
    ~0.5 us of a decision's ~5 us. Anything else takes the general path.
    """
    try:
        return (ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, value)),)
    except (OSError, ValueError):
        pass
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
    """The service's BGP attributes: annotations override (communities extend) the defaults.

    Most Services set none of them: then ``defaults`` itself, not an equal copy (a frozen
    ``RouteAttributes`` costs ~2 us to build and sort, once per Service per decision).
    """
    if not any(key in _ATTRIBUTE_ANNOTATIONS for key, _ in service.annotations):
        return defaults
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


def service_vips(
    service: ServiceInfo, allocated_only: bool = False
) -> tuple[tuple[IPAddress, ...], str | None]:
    """The VIPs a Service asks for and where they came from.

    Order of precedence: the ``loadbalancerIPs`` annotation (ours, then kube-vip's), then
    ``spec.loadBalancerIP``, then ``status.loadBalancer.ingress[].ip`` (an IPAM such as
    MetalLB's controller may have written it). ``allocated_only`` (pools are configured):
    the status alone, which the allocator writes once it has checked the request.
    """
    for name in () if allocated_only else _VIP_ANNOTATIONS:
        raw = service.annotation(name)
        if raw is not None:
            return parse_vip_list(name, raw), f"annotation {name}"
    if service.load_balancer_ip and not allocated_only:
        return parse_vip_list("spec.loadBalancerIP", service.load_balancer_ip), (
            "spec.loadBalancerIP"
        )
    if service.ingress_ips:
        return (
            parse_vip_list("status.loadBalancer.ingress", ",".join(service.ingress_ips)),
            "status.loadBalancer.ingress",
        )
    return (), None


def named_vips(service: ServiceInfo, allocated_only: bool = False) -> tuple[IPAddress, ...]:
    """Every VIP ``service`` names, before any check; () when its VIP annotation is bad.

    What ``decide`` may announce for it is a subset: the cluster's first pass holds a VIP
    back until every Service naming it has been decided.
    """
    try:
        return service_vips(service, allocated_only)[0]
    except AnnotationError:
        return ()
