"""The parsers as they were at 777e1b2, before their fast paths: the reference.

tests/test_objects_fast.py checks that today's parsers make of any object exactly
what these made of it. Copied, not imported from history: they build today's classes.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping
from typing import Any

from kvip_bgp.domain.model import parse_ip
from kvip_bgp.domain.objects import (
    ANNOTATION_PREFIXES,
    Endpoint,
    EndpointSliceInfo,
    NodeInfo,
    ObjectKey,
    ServiceInfo,
)


def _map(value: Any) -> Mapping[str, Any]:
    # JSON gives dicts: ``type() is dict`` first, as the ABC check costs 8x as much and
    # runs a dozen times per object, 20,000 objects in a burst (docs/performance.md).
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _shared(value: Any) -> str | None:
    """``_str`` for values that repeat across objects: one copy for all of them.

    ``str(value)``: ``sys.intern`` refuses str subclasses, and parsing must never raise.
    """
    return sys.intern(str(value)) if isinstance(value, str) else None


def _key(meta: Mapping[str, Any]) -> ObjectKey:
    return ObjectKey(_shared(meta.get("namespace")) or "", _str(meta.get("name")) or "")


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo:
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    status = _map(_map(obj.get("status")).get("loadBalancer"))
    ingress = status.get("ingress")
    ingress_ips = tuple(
        ip
        for item in (ingress if isinstance(ingress, list) else [])
        if (ip := _str(_map(item).get("ip"))) is not None
    )
    annotations = tuple(
        sorted(
            (sys.intern(str(k)), v)
            for k, v in _map(meta.get("annotations")).items()
            if isinstance(k, str) and isinstance(v, str) and k.startswith(ANNOTATION_PREFIXES)
        )
    )
    return ServiceInfo(
        key=_key(meta),
        uid=_str(meta.get("uid")) or "",
        type=_shared(spec.get("type")) or "ClusterIP",
        load_balancer_class=_shared(spec.get("loadBalancerClass")),
        load_balancer_ip=_str(spec.get("loadBalancerIP")) or None,
        external_traffic_policy=_shared(spec.get("externalTrafficPolicy")) or "Cluster",
        ingress_ips=ingress_ips,
        annotations=annotations,
        resource_version=_str(meta.get("resourceVersion")) or "",
        created=_shared(meta.get("creationTimestamp")) or "",
        labels=_pairs(meta.get("labels")),
        ip_families=sys.intern(
            ",".join(f for f in _list(spec.get("ipFamilies")) if f in ("IPv4", "IPv6"))
        ),
        ip_family_policy=_shared(spec.get("ipFamilyPolicy")),
        ports=_ports(spec.get("ports")),
        selector=",".join(f"{k}={v}" for k, v in _pairs(spec.get("selector")))
        if spec.get("externalTrafficPolicy") == "Local"
        else "",
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ports(value: Any) -> str:
    """``spec.ports`` as "TCP/80,UDP/53": (protocol, port) sorted, one shared copy."""
    ports = []
    for item in _list(value):
        port = _map(item)
        number = port.get("port")
        # Changed since 777e1b2, as in kvip_bgp/domain/objects.py: a bool is not a port.
        if type(number) is int:
            ports.append(f"{_str(port.get('protocol')) or 'TCP'}/{number}")
    ports.sort()
    return sys.intern(",".join(ports))


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A string map (labels, a selector) as sorted pairs; other entries left out."""
    return tuple(
        sorted((k, v) for k, v in _map(value).items() if isinstance(k, str) and isinstance(v, str))
    )


def parse_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSliceInfo:
    meta = _map(obj.get("metadata"))
    key = _key(meta)
    service_name = _str(_map(meta.get("labels")).get("kubernetes.io/service-name"))
    raw = obj.get("endpoints")
    endpoints: list[Endpoint] = []
    for item in raw if isinstance(raw, list) else []:
        ep = _map(item)
        conditions = _map(ep.get("conditions"))
        ready = conditions.get("ready")
        serving = conditions.get("serving")
        endpoints.append(
            Endpoint(
                node_name=_shared(ep.get("nodeName")),
                # Unset "ready" means ready (API contract for consumers of EndpointSlices).
                ready=ready is not False,
                serving=serving is True,
            )
        )
    return EndpointSliceInfo(
        key=key,
        service=ObjectKey(key.namespace, service_name) if service_name else None,
        endpoints=tuple(endpoints),
    )


def parse_node(obj: Mapping[str, Any]) -> NodeInfo:
    meta = _map(obj.get("metadata"))
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    conditions = status.get("conditions")
    network_unavailable = any(
        _map(c).get("type") == "NetworkUnavailable" and _map(c).get("status") == "True"
        for c in (conditions if isinstance(conditions, list) else [])
    )
    addrs = status.get("addresses")
    addresses = tuple(
        a
        for item in (addrs if isinstance(addrs, list) else [])
        if (a := _str(_map(item).get("address"))) is not None
    )
    return NodeInfo(
        name=_str(meta.get("name")) or "",
        labels=tuple(
            sorted(
                (k, v)
                for k, v in _map(meta.get("labels")).items()
                if isinstance(k, str) and isinstance(v, str)
            )
        ),
        unschedulable=spec.get("unschedulable") is True,
        network_unavailable=network_unavailable,
        addresses=addresses,
        ips=frozenset(ip for a in addresses if (ip := _ip(a)) is not None),
    )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address in ``text`` (the same address may be written several ways), or None."""
    try:
        return parse_ip(text.strip())
    except ValueError:
        return None  # a Hostname entry, or junk
