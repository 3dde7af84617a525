"""The validated configuration as frozen values (read by ``configfile``)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Final, Literal

from kvip_bgp.domain.addresses import RangeIndex, address_key
from kvip_bgp.domain.ipam import Pool
from kvip_bgp.domain.model import (
    IPAddress,
    IPNetwork,
    RouteAttributes,
)

OutputMode = Literal["exabgp", "kernel-table"]
BindMode = Literal["by-family", "address", "local-route"]
LogFormat = Literal["json", "console"]
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
UNBIND_DELAY: Final = 1.0
"""Seconds a withdrawn VIP stays bound after ExaBGP's ack (``vips.unbind_delay``)."""


@dataclass(frozen=True)
class BfdTimers:
    """``bgp.peers[].bfd``: single-hop BFD to that peer, intervals in milliseconds."""

    min_rx: int
    min_tx: int
    multiplier: int


@dataclass(frozen=True)
class Peer:
    """One BGP neighbor. ``password`` is read from ``password_file`` and never logged."""

    address: IPAddress
    asn: int
    port: int = 179
    local_address: IPAddress | None = None
    password_file: Path | None = None
    password: str | None = field(default=None, repr=False)
    ttl: int = 1
    node_selector: tuple[tuple[str, str], ...] = ()
    next_hop_v6: ipaddress.IPv6Address | None = None
    next_hop_v4: ipaddress.IPv4Address | None = None
    bfd: BfdTimers | None = None


@dataclass(frozen=True)
class BgpConfig:
    asn: int
    router_id: ipaddress.IPv4Address
    hold_time: int = 30
    graceful_restart: int = 120
    peers: tuple[Peer, ...] = ()

    @cached_property
    def peer_address_keys(self) -> frozenset[int]:
        """Every peer's address and local address (``address_key``): no VIP may be one.

        One set lookup of an integer per VIP, where comparing it with each peer's two
        addresses cost two ``ipaddress`` comparisons in Python per peer, and a set of
        the addresses themselves a hash of the VIP in Python (the policy checks every
        VIP of every Service). Derived from frozen fields only, never stale; not a field.
        """
        return frozenset(
            address_key(address)
            for peer in self.peers
            for address in (peer.address, peer.local_address)
            if address is not None
        )


@dataclass(frozen=True)
class AllowedRange:
    """A range VIPs may come from; ``namespaces`` empty means every namespace."""

    cidr: IPNetwork
    namespaces: tuple[str, ...] = ()

    def admits(self, vip: IPAddress, namespace: str | None) -> bool:
        if vip.version != self.cidr.version or vip not in self.cidr:
            return False
        return not self.namespaces or namespace in self.namespaces


@dataclass(frozen=True)
class VipConfig:
    allowed: tuple[AllowedRange, ...]
    interface: str | None = "lo"
    # "address": each VIP an address on ``interface`` (seen in ``ip addr``); "local-route":
    # a ``local`` route in table ``local`` via ``interface`` (seen in ``ip route show
    # table local``), which the kernel adds in constant time (see netif.LocalRouteTable);
    # "by-family": IPv4 VIPs as local routes, IPv6 VIPs as addresses (netif.FamilyTable).
    bind: BindMode = "by-family"
    # A withdrawn VIP stays bound this long after the routing daemon's ack, while the
    # peers' FIBs still send it here.
    unbind_delay: float = UNBIND_DELAY

    def admits(self, vip: IPAddress, namespace: str | None = None) -> bool:
        """The most specific range containing ``vip`` decides (a namespaced range
        nested in a wider one stays reserved to its namespaces)."""
        return self._ranges.admits(vip, namespace)

    def admits_int(self, ip: int, v4: bool, namespace: str | None = None) -> bool:
        """``admits`` of the address whose integer is ``ip`` (IPv4 if ``v4``)."""
        return self._ranges.admits_int(ip, v4, namespace)

    @cached_property
    def _ranges(self) -> RangeIndex:
        """``allowed`` as integers, built on first use: the policy checks every VIP.

        Derived from frozen fields only, so it never goes stale; two threads computing
        it at once store equal values. Not a field: equality and hashing ignore it.
        """
        return RangeIndex.of((r.cidr, r.namespaces) for r in self.allowed)


@dataclass(frozen=True)
class KubernetesConfig:
    enabled: bool = True
    kubeconfig: Path | None = None
    load_balancer_class: str = "kvip-bgp.io/bgp"
    legacy_class_handling: bool = True
    withdraw_when_cordoned: bool = False
    watch_read_timeout: float = 120.0
    lease_duration: int = 15  # the status writer's (and allocator's) Lease; renewed at 1/3


@dataclass(frozen=True)
class KernelTable:
    table: int = 198
    protocol: int = 248


@dataclass(frozen=True)
class HealthCheck:
    """How a static VIP is checked. Exactly one of ``tcp``, ``http``, ``exec`` is set."""

    tcp: tuple[str, int] | None = None
    http: str | None = None
    expect: int = 200
    exec_argv: tuple[str, ...] | None = None
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    # https only: the CA that signed the server's certificate (None: the system's CAs),
    # the name the certificate must carry (None: the URL's host), or no verification.
    ca_file: Path | None = None
    server_name: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class StaticVip:
    address: IPAddress
    check: HealthCheck | None = None
    down_med: int | None = None
    maintenance_file: Path | None = None


@dataclass(frozen=True)
class HttpConfig:
    listen: tuple[str, int] | None = ("127.0.0.1", 9472)


@dataclass(frozen=True)
class LogConfig:
    format: LogFormat = "json"
    level: str = "info"


@dataclass(frozen=True)
class Config:
    node_name: str
    bgp: BgpConfig
    advertise: RouteAttributes
    vips: VipConfig
    kubernetes: KubernetesConfig
    output: OutputMode = "exabgp"
    kernel_table: KernelTable = KernelTable()
    shutdown_timeout: float = 10.0
    static: tuple[StaticVip, ...] = ()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    ipam: tuple[Pool, ...] = ()
    """``ipam.pools``; empty: no allocation, VIPs come only from requests and status."""
    source: Path | None = None
