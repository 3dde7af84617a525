"""Address checks of the policy's hot path, on integers instead of ``ipaddress`` objects.

The cluster thread checks every VIP of every Service against the forbidden classes and
the allowed ranges: 10,000 at a cold start. ``ipaddress`` does each ``vip in network``
in Python (a version check, a mask, an attribute lookup per side) and each ``is_*``
property through one more ``__contains__``: together ~2.4 us of the policy's ~13 us per
Service. Here the ranges are turned into ``(first, last)`` integers once per config and
the check is a couple of integer comparisons.

Only what has the same meaning on every Python version is done on integers: IPv4's
classes and range containment in both families. IPv6's ``is_*`` properties treat
IPv4-mapped addresses differently in newer Pythons, so IPv6 keeps asking them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from kvip_bgp.domain.model import IPAddress, IPNetwork

_V4_LOOPBACK: Final = 127  # 127.0.0.0/8, by its first octet
_V4_LINK_LOCAL: Final = 0xA9FE  # 169.254.0.0/16, by its first two octets
_V4_MULTICAST: Final = 0xE  # 224.0.0.0/4, by its first four bits


# Above every IPv4 address's integer: an IPv6 address's key (``address_key``).
_V6_KEY: Final = 1 << 128


def address_key(vip: IPAddress) -> int:
    """An integer that only ``vip`` has among all addresses of both families: ``int(vip)``,
    IPv6 addresses moved above every IPv4 one (``::a.b.c.d`` is not ``a.b.c.d``).

    Why: sets of addresses the policy looks every VIP up in (this node's, the peers')
    hash an ``ipaddress`` object in Python (``hash(hex(int))``, ~3,400 instructions);
    an integer hashes in C.
    """
    ip = int(vip)
    return ip if isinstance(vip, ipaddress.IPv4Address) else ip | _V6_KEY


def forbidden_class(vip: IPAddress) -> str | None:
    """``unspecified``, ``multicast``, ``link-local`` or ``loopback``: a class of address
    that is never a VIP; None for any other address (``ipaddress``'s ``is_*`` meaning)."""
    if isinstance(vip, ipaddress.IPv4Address):
        return forbidden_v4(int(vip))
    return _forbidden_v6(vip)


def forbidden_v4(ip: int) -> str | None:
    """``forbidden_class`` of the IPv4 address whose integer is ``ip``."""
    if ip == 0:
        return "unspecified"
    if ip >> 28 == _V4_MULTICAST:
        return "multicast"
    if ip >> 16 == _V4_LINK_LOCAL:
        return "link-local"
    if ip >> 24 == _V4_LOOPBACK:
        return "loopback"
    return None


def _forbidden_v6(vip: IPAddress) -> str | None:
    if vip.is_unspecified:
        return "unspecified"
    if vip.is_multicast:
        return "multicast"
    if vip.is_link_local:
        return "link-local"
    if vip.is_loopback:
        return "loopback"
    return None


@dataclass(frozen=True, slots=True)
class Span:
    """One allowed network as integers, with the namespaces it is reserved to."""

    first: int
    last: int
    prefixlen: int
    namespaces: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RangeIndex:
    """Allowed networks as integer spans per family, longest prefix first.

    Built once per config (``VipConfig``), read by every thread: a frozen value.
    """

    v4: tuple[Span, ...]
    v6: tuple[Span, ...]

    @classmethod
    def of(cls, networks: Iterable[tuple[IPNetwork, tuple[str, ...]]]) -> RangeIndex:
        v4: list[Span] = []
        v6: list[Span] = []
        for network, namespaces in networks:
            span = Span(
                int(network.network_address),
                int(network.broadcast_address),
                network.prefixlen,
                namespaces,
            )
            (v4 if network.version == 4 else v6).append(span)
        v4.sort(key=lambda s: -s.prefixlen)
        v6.sort(key=lambda s: -s.prefixlen)
        return cls(tuple(v4), tuple(v6))

    def admits(self, vip: IPAddress, namespace: str | None) -> bool:
        """The most specific networks holding ``vip`` decide: True if one of them is open
        to every namespace or lists ``namespace``; False if no network holds it."""
        return self.admits_int(int(vip), isinstance(vip, ipaddress.IPv4Address), namespace)

    def admits_int(self, ip: int, v4: bool, namespace: str | None) -> bool:
        """``admits`` of the address whose integer is ``ip`` (IPv4 if ``v4``)."""
        longest = -1
        for span in self.v4 if v4 else self.v6:
            if span.prefixlen < longest:
                break
            if span.first <= ip <= span.last:
                if not span.namespaces or namespace in span.namespaces:
                    return True
                longest = span.prefixlen
        return False
