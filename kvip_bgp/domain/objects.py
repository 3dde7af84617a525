"""Kubernetes objects as frozen values, parsed from raw JSON.

The stream threads parse each object once, here, and hand the frozen result to the
cluster-state thread: what crosses the queue is immutable, and the rest of the program
never sees a raw dict from the cluster. Parsing is total: a field of the wrong type is
treated as absent, so a strange object can never raise in a thread that serves every
other Service. Annotation *values* are kept as strings here; the policy parses them
strictly and turns a bad one into a reason.

Memory: the cluster thread keeps one of these per Service and per EndpointSlice, 10,000 of
each at scale, so the classes use ``__slots__`` (one allocation per object instead of an
object and its attribute array) and strings that repeat across objects (namespaces, node
names, types, annotation keys) are ``sys.intern``ed: the JSON parser makes a new copy of
each for every object and every watch event. Names, uids and addresses are not interned:
they are unique, and interning them would only add an entry to the interpreter's table.
"""

from __future__ import annotations

import ipaddress
import operator
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, NamedTuple

from kvip_bgp.domain.addresses import address_key
from kvip_bgp.domain.model import parse_ip
from kvip_bgp.domain.values import fast_init

ANNOTATION_PREFIXES: Final = ("kvip-bgp.io/", "kube-vip.io/", "metallb.io/")


class ObjectKey(NamedTuple):
    """``namespace/name`` (namespace empty for cluster-scoped objects).

    A tuple, not a frozen dataclass, because it is the key of every dict and index of
    the cluster cache: a burst looks each Service up by it ~23 times, and a tuple hashes
    and compares in C, where a dataclass's ``__hash__`` and ``__eq__`` are two Python
    calls per lookup (8-20% of the cluster thread's CPU in ``bench.cluster_micro``).
    It equals a plain tuple of the same two strings; no dict mixes the two.
    """

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def key_order(key: ObjectKey) -> tuple[str, str]:
    """Sort key: namespace, then name (the order in which a shared VIP's winner is chosen)."""
    return (key.namespace, key.name)


@fast_init
@dataclass(frozen=True, slots=True)
class ServiceInfo:
    key: ObjectKey
    uid: str
    type: str
    load_balancer_class: str | None
    load_balancer_ip: str | None
    external_traffic_policy: str
    ingress_ips: tuple[str, ...]
    annotations: tuple[tuple[str, str], ...]
    resource_version: str
    # What address management needs (domain/claims.py); the policy reads none of it.
    # Kept as interned text where Services repeat each other (ports, families): one
    # copy for all of them, parsed only by the holder when it plans.
    created: str = ""  # metadata.creationTimestamp: the older Service keeps a conflict
    labels: tuple[tuple[str, str], ...] = ()
    ip_families: str = ""  # spec.ipFamilies joined by ",": "IPv4", "IPv6,IPv4"
    ip_family_policy: str | None = None
    ports: str = ""  # "TCP/80,UDP/53": spec.ports' (protocol, port), sorted
    selector: str = ""  # externalTrafficPolicy Local: "app=web,tier=x", spec.selector sorted

    def annotation(self, name: str) -> str | None:
        for key, value in self.annotations:
            if key == name:
                return value
        return None


_BUT_STATUS: Final = operator.attrgetter(
    *(f.name for f in fields(ServiceInfo) if f.name not in ("ingress_ips", "resource_version"))
)


def status_only(old: ServiceInfo, new: ServiceInfo) -> bool:
    """Whether ``new`` differs from ``old`` in ``status`` (and so its resourceVersion) alone.

    That is what the status writer's own PATCH comes back as, on every node's watch: a
    MODIFIED event per Service written (10,000 after a burst of 10,000).
    """
    return bool(_BUT_STATUS(old) == _BUT_STATUS(new))


@fast_init
@dataclass(frozen=True, slots=True)
class Endpoint:
    node_name: str | None
    ready: bool
    serving: bool

    @property
    def healthy(self) -> bool:
        """A terminating pod that still serves keeps the route: no flap in rolling updates."""
        return self.ready or self.serving


@fast_init
@dataclass(frozen=True, slots=True)
class EndpointSliceInfo:
    key: ObjectKey
    service: ObjectKey | None
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    labels: tuple[tuple[str, str], ...]
    unschedulable: bool
    network_unavailable: bool
    addresses: tuple[str, ...]
    ips: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()
    """``addresses`` parsed (Hostname entries and junk left out), once per Node event,
    not once per VIP: the policy checks every VIP of every Service against them."""
    ip_keys: frozenset[int] = field(init=False, repr=False, compare=False)
    """``ips`` as ``address_key``s, what the policy looks each VIP up in."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip_keys", frozenset(address_key(ip) for ip in self.ips))

    def label(self, name: str) -> str | None:
        """The label's value (the last, as a dict of them would keep it), or None.

        A scan, not ``dict(self.labels)``: the policy asks for one label per Service
        decided, and building the dict cost more than looking.
        """
        for key, value in reversed(self.labels):
            if key == name:
                return value
        return None


def _map(value: Any) -> Mapping[Any, Any]:
    # JSON gives dicts: ``type() is dict`` first, as the ABC check costs 8x as much and
    # runs a dozen times per object, 20,000 objects in a burst (docs/performance.md).
    # Keys typed ``Any``, not ``str``: callers check them (``isinstance(k, str)``), and
    # compiled by mypyc a ``str`` key type is itself checked, raising on ``{0: ""}``.
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _shared(value: Any) -> str | None:
    """``_str`` for values that repeat across objects: one copy for all of them.

    ``str(value)``: ``sys.intern`` refuses str subclasses, and parsing must never raise.
    """
    if type(value) is str:
        return sys.intern(value)
    return sys.intern(str(value)) if isinstance(value, str) else None


def _key(meta: Mapping[str, Any]) -> ObjectKey:
    return ObjectKey(_shared(meta.get("namespace")) or "", _str(meta.get("name")) or "")


def parse_service(obj: Mapping[str, Any]) -> ServiceInfo:
    """The Service in ``obj``; the stream thread's work per Service event, so cheap first.

    Each field has a fast case for what JSON gives (an exact ``dict`` or ``str``, an
    absent or empty map) and falls back to the general helper for anything else, which
    decides exactly as before; tests/test_objects_fast.py compares the two over
    generated objects, malformed ones included.
    """
    meta = obj.get("metadata")
    if type(meta) is not dict:
        meta = _map(meta)
    spec = obj.get("spec")
    if type(spec) is not dict:
        spec = _map(spec)
    status = obj.get("status")
    notes = meta.get("annotations")
    labels = meta.get("labels")
    families = spec.get("ipFamilies")
    policy = spec.get("externalTrafficPolicy")
    # Positional, in the fields' order: 15 keyword arguments cost a third more than the
    # construction itself (19,414 against 12,896 instructions, callgrind), and the
    # comparison in tests/test_objects_fast.py catches two fields swapped.
    return ServiceInfo(
        _key(meta),  # key
        _text(meta.get("uid")),  # uid
        _shared(spec.get("type")) or "ClusterIP",  # type
        _shared(spec.get("loadBalancerClass")),  # load_balancer_class
        _str(spec.get("loadBalancerIP")) or None,  # load_balancer_ip
        _shared(policy) or "Cluster",  # external_traffic_policy
        _ingress_ips(status) if status else (),  # ingress_ips
        _annotations(notes) if notes else (),  # annotations
        _text(meta.get("resourceVersion")),  # resource_version
        _shared(meta.get("creationTimestamp")) or "",  # created
        _pairs(labels) if labels else (),  # labels
        _families(families) if families else "",  # ip_families
        _shared(spec.get("ipFamilyPolicy")),  # ip_family_policy
        _ports(spec.get("ports")),  # ports
        ",".join(f"{k}={v}" for k, v in _pairs(spec.get("selector")))  # selector
        if policy == "Local"
        else "",
    )


def _text(value: Any) -> str:
    """``_str(value) or ""``, without a call for the usual case."""
    return value if type(value) is str else _str(value) or ""


def _ingress_ips(status: Any) -> tuple[str, ...]:
    ingress = _map(_map(status).get("loadBalancer")).get("ingress")
    return tuple(
        ip
        for item in (ingress if isinstance(ingress, list) else [])
        if (ip := _str(_map(item).get("ip"))) is not None
    )


def _annotations(value: Any) -> tuple[tuple[str, str], ...]:
    """Ours and kube-vip's and MetalLB's annotations, sorted; the rest are not kept."""
    found = [
        (sys.intern(str(k)), v)
        for k, v in _map(value).items()
        if isinstance(k, str) and isinstance(v, str) and k.startswith(ANNOTATION_PREFIXES)
    ]
    found.sort()
    return tuple(found)


def _families(value: Any) -> str:
    return sys.intern(",".join(f for f in _list(value) if f in ("IPv4", "IPv6")))


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ports(value: Any) -> str:
    """``spec.ports`` as "TCP/80,UDP/53": (protocol, port) sorted, one shared copy."""
    ports = []
    for item in _list(value):
        port = item if type(item) is dict else _map(item)
        number = port.get("port")
        # ``type() is int``: a bool is not a port. ``isinstance`` let ``False`` through as
        # "TCP/False" (which claims._ports cannot read back), and mypyc, which unboxes a
        # narrowed ``int``, wrote it as "TCP/0".
        if type(number) is int:
            ports.append(f"{_str(port.get('protocol')) or 'TCP'}/{number}")
    if len(ports) > 1:
        ports.sort()
    return sys.intern(",".join(ports))


def _pairs(value: Any) -> tuple[tuple[str, str], ...]:
    """A string map (labels, a selector) as sorted pairs; other entries left out."""
    return tuple(
        sorted((k, v) for k, v in _map(value).items() if isinstance(k, str) and isinstance(v, str))
    )


def parse_endpoint_slice(obj: Mapping[str, Any]) -> EndpointSliceInfo:
    """The EndpointSlice in ``obj``; like ``parse_service``, the usual case first."""
    meta = obj.get("metadata")
    if type(meta) is not dict:
        meta = _map(meta)
    key = _key(meta)
    labels = meta.get("labels")
    if type(labels) is not dict:
        labels = _map(labels)
    service_name = labels.get("kubernetes.io/service-name")
    if type(service_name) is not str:
        service_name = _str(service_name)
    raw = obj.get("endpoints")
    endpoints: list[Endpoint] = []
    for item in raw if isinstance(raw, list) else []:
        ep = item if type(item) is dict else _map(item)
        conditions = ep.get("conditions")
        if type(conditions) is not dict:
            conditions = _map(conditions)
        endpoints.append(
            Endpoint(
                _shared(ep.get("nodeName")),
                # Unset "ready" means ready (API contract for consumers of EndpointSlices).
                conditions.get("ready") is not False,
                conditions.get("serving") is True,
            )
        )
    return EndpointSliceInfo(
        key,
        ObjectKey(key.namespace, service_name) if service_name else None,
        tuple(endpoints),
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
