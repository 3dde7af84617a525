"""The parsers' fast paths change nothing: the same values as before them, for anything.

``parse_service``, ``parse_endpoint_slice`` and ``parse_node`` take shortcuts for what
JSON gives (exact dicts and strs, absent or empty maps, one port). Whatever the object
(real-shaped, malformed at any level, read-only mappings, str subclasses), each must
make what the parsers made before those shortcuts (tests/objects_777e1b2.py): equal,
and of the same types all the way down (a str subclass must not leak where a str was).
"""

from __future__ import annotations

import dataclasses
import json
import types
from typing import Any

import objects_777e1b2 as before
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvip_bgp.domain.objects import parse_endpoint_slice, parse_node, parse_service
from kvip_bgp.testing.objects import endpoint, endpoint_slice, node, service

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Text(str):
    """A str that is not a ``str``: what a Mapping from elsewhere might hold."""


def _shape(value: Any) -> Any:
    """``value`` as nested tuples of (type, value): equal only if types are equal too."""
    if dataclasses.is_dataclass(value):
        fields = dataclasses.fields(value)
        return (type(value).__name__, *((f.name, _shape(getattr(value, f.name))) for f in fields))
    if isinstance(value, tuple | frozenset):
        items = sorted(value, key=repr) if isinstance(value, frozenset) else value
        return (type(value).__name__, *(_shape(v) for v in items))
    return (type(value).__name__, repr(value))


SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False),
    st.sampled_from(["", " ", "x", "IPv4", "TCP", "Local", "Cluster", "kvip-bgp.io/x"]),
    st.text(max_size=6),
    st.text(max_size=6).map(Text),
)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=8,
)


def _mapping(strategy: st.SearchStrategy[dict[Any, Any]]) -> st.SearchStrategy[Any]:
    """A dict, mostly; sometimes the same as a read-only mapping (not a ``dict``)."""
    return st.one_of(strategy, strategy, strategy, strategy.map(types.MappingProxyType))


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, JSON)


def _fields(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return _mapping(st.fixed_dictionaries({}, optional={k: _maybe(v) for k, v in fields.items()}))


KEYS = st.one_of(
    st.sampled_from(
        [
            "kvip-bgp.io/loadbalancerIPs",
            "kvip-bgp.io/ip-allocated-from-pool",
            "kube-vip.io/loadbalancerIPs",
            "metallb.io/address-pool",
            "metallb.universe.tf/address-pool",
            "app",
            "tier",
            "",
        ]
    ),
    st.text(max_size=5),
    st.text(max_size=5).map(Text),
    st.integers(0, 3),  # a Mapping need not have str keys
)
STRING_MAP = _mapping(st.dictionaries(KEYS, _maybe(st.text(max_size=5)), max_size=4))
NAMES = st.sampled_from(["web", "svc-00001", "", "a"]) | st.sampled_from(["web", ""]).map(Text)
NAMESPACES = st.sampled_from(["default", "team-a", ""]) | st.just("team-a").map(Text)
SERVICE = _fields(
    apiVersion=st.just("v1"),
    kind=st.just("Service"),
    metadata=_fields(
        name=NAMES,
        namespace=NAMESPACES,
        uid=st.sampled_from(["6ea591c7-8043-4b7c-ba9f-47b0e121b7d9", ""]),
        resourceVersion=st.integers(0, 10**6).map(str),
        creationTimestamp=st.sampled_from(["2026-12-02T16:37:26Z", ""]),
        annotations=STRING_MAP,
        labels=STRING_MAP,
    ),
    spec=_fields(
        type=st.sampled_from(["LoadBalancer", "ClusterIP", "NodePort", ""]),
        loadBalancerClass=st.sampled_from(["kvip-bgp.io/bgp", "example.com/other", ""]),
        loadBalancerIP=st.sampled_from(["192.0.2.10", "192.0.2.10,2001:db8::1", ""]),
        externalTrafficPolicy=st.sampled_from(["Local", "Cluster", ""]),
        ipFamilies=st.lists(_maybe(st.sampled_from(["IPv4", "IPv6", "ipv4"])), max_size=3),
        ipFamilyPolicy=st.sampled_from(["SingleStack", "PreferDualStack", ""]),
        ports=st.lists(
            _fields(
                port=st.one_of(st.integers(0, 65535), st.booleans()),
                protocol=st.sampled_from(["TCP", "UDP", "SCTP", ""]),
                targetPort=st.integers(0, 65535),
            ),
            max_size=4,
        ),
        selector=STRING_MAP,
    ),
    status=_fields(
        loadBalancer=_fields(
            ingress=st.lists(_fields(ip=st.sampled_from(["192.0.2.10", "", "::1"])), max_size=3)
        )
    ),
)
SLICE = _fields(
    metadata=_fields(
        name=NAMES,
        namespace=NAMESPACES,
        labels=_mapping(
            st.fixed_dictionaries(
                {}, optional={"kubernetes.io/service-name": _maybe(NAMES), "x": JSON}
            )
        ),
    ),
    endpoints=st.lists(
        _fields(
            nodeName=st.sampled_from(["node-1", "node-2", ""]) | st.just("node-1").map(Text),
            conditions=_fields(
                ready=st.booleans(), serving=st.booleans(), terminating=st.booleans()
            ),
            addresses=st.just(["10.244.0.1"]),
        ),
        max_size=4,
    ),
)
NODE = _fields(
    metadata=_fields(name=NAMES, labels=STRING_MAP),
    spec=_fields(unschedulable=st.booleans()),
    status=_fields(
        addresses=st.lists(
            _fields(
                type=st.sampled_from(["InternalIP", "Hostname"]),
                address=st.sampled_from(["192.0.2.1", " 2001:db8::1 ", "node-1", ""]),
            ),
            max_size=3,
        ),
        conditions=st.lists(
            _fields(
                type=st.sampled_from(["Ready", "NetworkUnavailable"]),
                status=st.sampled_from(["True", "False"]),
            ),
            max_size=2,
        ),
    ),
)


@SETTINGS
@given(obj=st.one_of(SERVICE, _mapping(st.dictionaries(st.text(max_size=8), JSON))))
def test_parse_service_makes_what_it_made(obj: Any) -> None:
    assert _shape(parse_service(obj)) == _shape(before.parse_service(obj))


@SETTINGS
@given(obj=st.one_of(SLICE, _mapping(st.dictionaries(st.text(max_size=8), JSON))))
def test_parse_endpoint_slice_makes_what_it_made(obj: Any) -> None:
    assert _shape(parse_endpoint_slice(obj)) == _shape(before.parse_endpoint_slice(obj))


@SETTINGS
@given(obj=st.one_of(NODE, _mapping(st.dictionaries(st.text(max_size=8), JSON))))
def test_parse_node_makes_what_it_made(obj: Any) -> None:
    assert _shape(parse_node(obj)) == _shape(before.parse_node(obj))


REAL = [
    service("web", "192.0.2.10", uid="u-1", resource_version="7"),
    service("web", None, traffic_policy="Local", labels={"app": "web"}, lb_class="x/y"),
    service("web", spec_ip="192.0.2.10", ingress=["192.0.2.10", "2001:db8::1"]),
    service("web", "192.0.2.10", annotations={"metallb.io/address-pool": "p", "other": "1"}),
    service("web", type="ClusterIP", traffic_policy=None),
    {  # the fields a real API server adds to a Service
        **service("web", "192.0.2.10"),
        "spec": {
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ipFamilies": ["IPv4", "IPv6"],
            "ipFamilyPolicy": "PreferDualStack",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "nodePort": 30054},
                {"name": "http", "port": 80, "nodePort": 30080},
            ],
            "selector": {"tier": "x", "app": "dns"},
            "externalTrafficPolicy": "Local",
            "internalTrafficPolicy": "Cluster",
            "allocateLoadBalancerNodePorts": True,
        },
    },
]


@pytest.mark.parametrize("obj", [json.loads(json.dumps(o)) for o in REAL])
def test_real_services_parse_as_before(obj: Any) -> None:
    assert _shape(parse_service(obj)) == _shape(before.parse_service(obj))


@pytest.mark.parametrize(
    "obj",
    [
        endpoint_slice("web", ["node-1", ("node-2", False)]),
        endpoint_slice("web", endpoints=[endpoint(None), endpoint("n", ready=None, serving=True)]),
        node(addresses=("192.0.2.1", "2001:db8::1"), hostname_address=True, unschedulable=True),
    ],
)
def test_real_slices_and_nodes_parse_as_before(obj: Any) -> None:
    parse, old = (
        (parse_node, before.parse_node)
        if obj["kind"] == "Node"
        else (parse_endpoint_slice, before.parse_endpoint_slice)
    )
    assert _shape(parse(obj)) == _shape(old(obj))


def test_a_bool_is_not_a_port() -> None:
    """``True`` is an ``int`` to ``isinstance``; kept, it became "TCP/True" (which the
    holder's claims cannot read back) interpreted and "TCP/1" compiled by mypyc."""
    ports = [{"port": True}, {"port": 80}, {"port": False, "protocol": "UDP"}]
    assert parse_service({"spec": {"ports": ports}}).ports == "TCP/80"
