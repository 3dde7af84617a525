"""The integer address checks (domain/addresses.py) against ``ipaddress``'s own answers.

The fast paths replace ``vip in network`` and ``vip.is_*`` on the policy's hot path; they
must give the same answer for every address, so they are compared with the slow forms on
random IPv4 and IPv6 addresses and networks, biased towards the edges of the networks.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from kvip_bgp.domain.addresses import RangeIndex, forbidden_class
from kvip_bgp.domain.config import AllowedRange, VipConfig
from kvip_bgp.domain.model import IPAddress, IPNetwork

SETTINGS = settings(max_examples=500, deadline=None)
NAMESPACES = st.sampled_from(["a", "b", "c"])


def _network(version: Literal[4, 6]) -> st.SearchStrategy[IPNetwork]:
    bits = 32 if version == 4 else 128
    return st.builds(
        lambda address, prefixlen: ipaddress.ip_network((int(address), prefixlen), strict=False),
        st.ip_addresses(v=version),
        st.integers(0, bits),
    )


NETWORKS = st.lists(st.one_of(_network(4), _network(6)), max_size=6)


@st.composite
def _address_near(draw: st.DrawFn, networks: list[IPNetwork]) -> IPAddress:
    """Any address, or one inside, at the edge of or just outside one of ``networks``."""
    if not networks or draw(st.booleans()):
        return draw(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
    network = draw(st.sampled_from(networks))
    first, last = int(network.network_address), int(network.broadcast_address)
    top = (1 << network.max_prefixlen) - 1
    value = draw(
        st.one_of(
            st.sampled_from([first, last, max(first - 1, 0), min(last + 1, top)]),
            st.integers(first, last),
        )
    )
    if network.version == 4:
        return ipaddress.IPv4Address(value)
    return ipaddress.IPv6Address(value)


def _reference_admits(allowed: list[AllowedRange], vip: IPAddress, namespace: str | None) -> bool:
    """``VipConfig.admits`` as it was written with ``ipaddress`` before the fast path."""
    containing = [r for r in allowed if r.cidr.version == vip.version and vip in r.cidr]
    if not containing:
        return False
    longest = max(r.cidr.prefixlen for r in containing)
    return any(r.admits(vip, namespace) for r in containing if r.cidr.prefixlen == longest)


@SETTINGS
@given(data=st.data(), networks=NETWORKS)
def test_range_index_without_namespaces_is_vip_in_any_network(
    data: st.DataObject, networks: list[IPNetwork]
) -> None:
    vip = data.draw(_address_near(networks))
    index = RangeIndex.of((network, ()) for network in networks)
    assert index.admits(vip, None) == any(vip in network for network in networks)
    assert index.admits(vip, "a") == any(vip in network for network in networks)


@SETTINGS
@given(
    data=st.data(),
    networks=NETWORKS,
    namespaces=st.lists(st.lists(NAMESPACES, max_size=2).map(tuple), min_size=6, max_size=6),
    namespace=st.one_of(st.none(), NAMESPACES),
)
def test_vip_config_admits_as_the_most_specific_range_decides(
    data: st.DataObject,
    networks: list[IPNetwork],
    namespaces: list[tuple[str, ...]],
    namespace: str | None,
) -> None:
    # Nested and equal networks with different namespaces: the case the rule is for.
    nest = data.draw(st.booleans())
    if networks and nest:
        networks = [*networks, networks[0].supernet(new_prefix=max(networks[0].prefixlen - 1, 0))]
        networks = [*networks, networks[0]]
    allowed = [AllowedRange(n, ns) for n, ns in zip(networks, namespaces * 2, strict=False)]
    vip = data.draw(_address_near(networks))
    config = VipConfig(allowed=tuple(allowed))
    assert config.admits(vip, namespace) == _reference_admits(allowed, vip, namespace)


def _slow_class(vip: IPAddress) -> str | None:
    for name in ("unspecified", "multicast", "link-local", "loopback"):
        if getattr(vip, "is_" + name.replace("-", "_")):
            return name
    return None


_EDGES = [
    "0.0.0.0",
    "0.0.0.1",
    "126.255.255.255",
    "127.0.0.0",
    "127.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.254.0.0",
    "169.254.255.255",
    "169.255.0.0",
    "223.255.255.255",
    "224.0.0.0",
    "239.255.255.255",
    "240.0.0.0",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
]


@SETTINGS
@given(
    vip=st.one_of(
        st.ip_addresses(v=4),
        st.ip_addresses(v=6),
        st.sampled_from(_EDGES).map(ipaddress.ip_address),
    )
)
def test_forbidden_class_is_ipaddress_is_properties(vip: IPAddress) -> None:
    assert forbidden_class(vip) == _slow_class(vip)
