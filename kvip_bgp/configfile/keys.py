"""Every configuration key, once: its type, range, default and a one-line description.

The parsers take ranges, defaults and the allowed keys of each mapping from here, and
``configfile.reference`` generates docs/configuration.md and the chart's values schema
from the same table. Adding a key is one entry below, in its parent's place (the order
is the order of the docs and of the "allowed:" lists in error messages). Paths use
``[]`` for a list's items: ``bgp.peers[].port``.

Typed entries (``Int``, ``Number``, ``Bool``, ``Str``, ``Choice``) are read with the
matching ``Reader`` method; ``Other`` entries are parsed by hand (addresses, selectors,
lists) and the table only documents them and gives their JSON Schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from kvip_bgp.domain.config import LOG_LEVELS
from kvip_bgp.domain.model import MAX_U32


@dataclass(frozen=True, kw_only=True)
class Key:
    path: str
    doc: str
    required: bool = False
    default_doc: str = ""
    """The default as the docs show it, where it is not a plain value (derived, or none)."""
    notes: str = ""
    """Longer text shown below the section's table (why, interactions)."""

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1].removesuffix("[]")

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""


@dataclass(frozen=True, kw_only=True)
class Int(Key):
    low: int
    high: int
    default: int | None
    also: Mapping[str, Any] = field(default_factory=dict)
    """More JSON Schema for what the range cannot say (``bgp.hold_time``: not 1 or 2)."""


@dataclass(frozen=True, kw_only=True)
class Number(Key):
    low: float
    high: float
    default: float


@dataclass(frozen=True, kw_only=True)
class Bool(Key):
    default: bool


@dataclass(frozen=True, kw_only=True)
class Str(Key):
    default: str | None
    nullable: bool = False
    """``null`` is a value of its own (e.g. "do not bind"), not "use the default"."""


@dataclass(frozen=True, kw_only=True)
class Choice(Key):
    choices: tuple[str, ...]
    default: str


@dataclass(frozen=True, kw_only=True)
class Section(Key):
    """A mapping of the keys below it; ``listed``: a list of such mappings (``x[]``)."""

    listed: bool = False
    scalar: Mapping[str, Any] | None = None
    """With ``listed``: an item may also be this scalar (a bare CIDR for ``{cidr: ...}``)."""


@dataclass(frozen=True, kw_only=True)
class Other(Key):
    """Parsed by hand; ``type`` is what the docs say, ``schema`` its JSON Schema."""

    type: str
    schema: Mapping[str, Any] = field(default_factory=dict)
    default: Any = None


_STR: Final[Mapping[str, Any]] = {"type": "string"}
_ADDRESS: Final[Mapping[str, Any]] = {"type": "string", "minLength": 2}
_HOST_PORT: Final[Mapping[str, Any]] = {"type": "string", "pattern": ":[0-9]+$"}
_STRINGS: Final[Mapping[str, Any]] = {"type": "array", "items": _STR}
_LABELS: Final[Mapping[str, Any]] = {"type": "object", "additionalProperties": _STR}

# fmt: off
KEYS: Final[tuple[Key, ...]] = (
    Str(path="node_name", default=None, doc="this node's name (Node object, peers' node_selector)",
        default_doc="`$NODE_NAME`, then the host name"),

    Section(path="bgp", required=True, doc="the BGP speaker and its sessions"),
    Int(path="bgp.asn", low=1, high=MAX_U32, default=None, required=True, doc="local AS number"),
    Other(path="bgp.router_id", type="IPv4 address", schema=_ADDRESS,
          doc="BGP identifier", default_doc="the first peer's IPv4 `local_address`"),
    Int(path="bgp.hold_time", low=0, high=65535, default=30, also={"not": {"enum": [1, 2]}},
        doc="seconds; 0 or 3..65535 (RFC 4271)"),
    Int(path="bgp.graceful_restart", low=0, high=4095, default=120,
        doc="graceful-restart time in seconds; 0 turns it off"),
    Section(path="bgp.peers", listed=True,
            doc="BGP neighbors (at least one with `output: exabgp`)"),
    Other(path="bgp.peers[].address", type="IP address", schema=_ADDRESS, required=True,
          doc="the neighbor's address"),
    Int(path="bgp.peers[].asn", low=1, high=MAX_U32, default=None, required=True,
        doc="the neighbor's AS number"),
    Int(path="bgp.peers[].port", low=1, high=65535, default=179, doc="the neighbor's TCP port"),
    Other(path="bgp.peers[].local_address", type="IP address", schema=_ADDRESS,
          doc="source address of the session (same IP version as `address`)"),
    Str(path="bgp.peers[].password_file", default=None,
        doc="file holding the TCP-MD5 password (1..80 characters); never logged"),
    Int(path="bgp.peers[].ttl", low=1, high=255, default=1, doc="IP TTL; above 1 is multihop"),
    Other(path="bgp.peers[].node_selector", type="labels", schema=_LABELS, default_doc="{}",
          doc="peer only from nodes whose labels match (per-rack ToRs)"),
    Other(path="bgp.peers[].next_hop_v6", type="IPv6 address", schema=_ADDRESS,
          doc="next hop for IPv6 VIPs over an IPv4 session; without it the peer gets none"),
    Other(path="bgp.peers[].next_hop_v4", type="IPv4 address", schema=_ADDRESS,
          doc="next hop for IPv4 VIPs over an IPv6 session; without it the peer gets none"),
    Section(path="bgp.peers[].bfd", doc="single-hop BFD (RFC 5881) to this peer; needs "
            "`local_address` and `ttl: 1`; BFD Down counts as session down"),
    Int(path="bgp.peers[].bfd.min_rx", low=10, high=60000, default=300,
        doc="milliseconds: the slowest rate this side accepts"),
    Int(path="bgp.peers[].bfd.min_tx", low=10, high=60000, default=300,
        doc="milliseconds: the rate this side sends at"),
    Int(path="bgp.peers[].bfd.multiplier", low=1, high=255, default=3,
        doc="packets missed before the session is down"),

    Section(path="advertise", doc="route attributes of every VIP (Service annotations "
            "override them per Service)"),
    Other(path="advertise.communities", type="list of `ASN:VALUE`", schema=_STRINGS,
          default_doc="[]", doc="standard communities (RFC 1997)"),
    Other(path="advertise.large_communities", type="list of `A:B:C`", schema=_STRINGS,
          default_doc="[]", doc="large communities (RFC 8092)"),
    Int(path="advertise.local_preference", low=0, high=MAX_U32, default=None,
        doc="LOCAL_PREF (meaningful to iBGP peers)"),
    Int(path="advertise.med", low=0, high=MAX_U32, default=None, doc="MULTI_EXIT_DISC"),

    Section(path="vips", required=True, doc="where VIPs may come from and how they are bound"),
    Section(path="vips.allowed", required=True, listed=True, scalar=_STR,
            doc="ranges VIPs may come from, each a CIDR or `{cidr, namespaces}`; a VIP "
                "outside every range is refused; the most specific range decides"),
    Other(path="vips.allowed[].cidr", type="CIDR", schema=_STR, required=True,
          doc="the range (a bare CIDR item means just this)"),
    Other(path="vips.allowed[].namespaces", type="list of namespace names", schema=_STRINGS,
          default_doc="[] (any)", doc="only Services in these namespaces may use it"),
    Str(path="vips.interface", default="lo", nullable=True,
        doc="device VIPs are bound on; null: do not bind"),
    Choice(path="vips.bind", choices=("by-family", "address", "local-route"),
           default="by-family",
           doc="`by-family`: IPv4 VIPs as local routes, IPv6 VIPs as addresses; `address`: an "
           "address per VIP; `local-route`: a local route per VIP",
           notes="`vips.bind: address` makes each VIP an address on `vips.interface`, listed "
           "by `ip addr`. `local-route` makes it `local VIP dev INTERFACE table local proto "
           "248`, listed by `ip route show table local`; the kernel accepts traffic for it "
           "exactly as for an address. Adding an IPv4 address walks the interface's whole "
           "address list, so many VIPs cost quadratic kernel time at start; local routes "
           "cost constant time each (figures: [performance](performance.md)). The cost: an IPv6 "
           "service cannot `bind()` to the VIP itself (only to `[::]`) unless "
           "`net.ipv6.ip_nonlocal_bind=1`, and connections the node opens to an IPv6 VIP "
           "get another of its addresses as source; IPv4 services can bind, and an IPv4 "
           "local route is chosen as source like an address. Needs `vips.interface`. "
           "`by-family` (the default) takes the side of each family where nothing is lost: "
           "IPv4 VIPs as local routes, IPv6 VIPs as addresses (without duplicate address "
           "detection). A VIP of ours left as the other kind by an earlier run (another "
           "`vips.bind`) is adopted as it is and removed as what it is."),
    Number(path="vips.unbind_delay", low=0, high=60, default=1.0,
           doc="seconds a withdrawn VIP stays bound after ExaBGP acknowledged the withdrawal",
           notes="`vips.unbind_delay` counts from ExaBGP's acknowledgement of the withdrawal "
           "(with `output: kernel-table`: from the route's removal). Routers move traffic "
           "away only once the UPDATE is in their FIB: in the fabric lab the ToR's FIB "
           "dropped a node's next hop 55-70 ms after the withdrawal, and unbinding at the "
           "acknowledgement alone (`0`) lost 3-4 requests of 50/s per withdrawn Service, the "
           "default none ([performance](performance.md)). A VIP desired again meanwhile keeps "
           "its address; SIGTERM has its own wait (acks, then a 1 s flush grace, within "
           "`shutdown_timeout`). Raise it for routers whose FIB programming is slower."),

    Section(path="kubernetes", doc="the cluster watch (Services, EndpointSlices, Nodes)"),
    Bool(path="kubernetes.enabled", default=True,
         doc="watch the cluster; false: static VIPs only (then `static` must not be empty)"),
    Str(path="kubernetes.kubeconfig", default=None, doc="kubeconfig file",
        default_doc="in-cluster, then `$KUBECONFIG`"),
    Str(path="kubernetes.load_balancer_class", default="kvip-bgp.io/bgp",
        doc="Services with this `spec.loadBalancerClass` are served"),
    Bool(path="kubernetes.legacy_class_handling", default=True,
         doc="also serve LoadBalancer Services that name no class"),
    Bool(path="kubernetes.withdraw_when_cordoned", default=False,
         doc="withdraw this node's VIPs while it is cordoned"),
    Number(path="kubernetes.watch_read_timeout", low=1, high=3600, default=120.0,
           doc="seconds without a byte (bookmarks included) before a watch counts as dead"),
    Int(path="kubernetes.lease_duration", low=3, high=300, default=15,
        doc="seconds of the `kvip-bgp-status-writer` Lease, renewed every third of it: how "
        "long a dead holder's statuses, Events and allocations wait for another node"),

    Choice(path="output", choices=("exabgp", "kernel-table"), default="exabgp",
           doc="`exabgp`: own BGP sessions; `kernel-table`: routes for the host's FRR/BIRD",
           notes="`output: kernel-table` runs no ExaBGP: each VIP becomes a unicast `dev lo` "
           "host route in `kernel_table.table` with protocol `kernel_table.protocol`; the "
           "host's FRR (`ip import-table N` + `redistribute table N`, IPv4 only in FRR 8.4) "
           "or BIRD (`kernel` protocol with `learn`, filter on `krt_source`) exports it. BGP "
           "attributes cannot travel in a kernel route: the host's export policy sets them, "
           "and BFD runs with the host's sessions (`bgp.peers[].bfd` is refused)."),
    Section(path="kernel_table", doc="used by `output: kernel-table`"),
    Int(path="kernel_table.table", low=1, high=2**32 - 1, default=198,
        doc="routing table number (not 253/254/255, the kernel's own)"),
    Int(path="kernel_table.protocol", low=1, high=255, default=248,
        doc="route protocol number the host's routing daemon filters on"),
    Number(path="shutdown_timeout", low=1, high=600, default=10.0,
           doc="seconds on SIGTERM to withdraw, unbind and stop ExaBGP"),

    Section(path="static", listed=True, doc="VIPs of this host, optionally health-checked "
            "(bare metal, the control plane)"),
    Other(path="static[].address", type="IP address", schema=_ADDRESS, required=True,
          doc="the VIP; inside `vips.allowed`, each listed once"),
    Section(path="static[].check", doc="health check: exactly one of `tcp`, `http`, `exec`"),
    Other(path="static[].check.tcp", type="`HOST:PORT`", schema=_HOST_PORT,
          doc="up while a TCP connection succeeds"),
    Str(path="static[].check.http", default=None,
        doc="`http://` or `https://` URL; up while it answers `expect`"),
    Int(path="static[].check.expect", low=100, high=599, default=200,
        doc="HTTP status code that counts as up"),
    Other(path="static[].check.exec", type="list of strings (argv)", schema=_STRINGS,
          doc="up while the command exits 0 (no shell)"),
    Number(path="static[].check.interval", low=0.1, high=3600, default=2.0,
           doc="seconds between checks"),
    Number(path="static[].check.timeout", low=0.1, high=3600, default=1.0,
           doc="seconds one check may take; at most `interval`"),
    Int(path="static[].check.rise", low=1, high=100, default=2,
        doc="successes in a row before the VIP is up"),
    Int(path="static[].check.fall", low=1, high=100, default=3,
        doc="failures in a row before the VIP is down"),
    Str(path="static[].check.ca_file", default=None, default_doc="the system's CAs",
        doc="https: CA bundle the server's certificate must chain to"),
    Str(path="static[].check.server_name", default=None, default_doc="the URL's host",
        doc="https: name the certificate must carry, sent as SNI (`kubernetes` for an "
            "API server reached at 127.0.0.1)"),
    Bool(path="static[].check.insecure", default=False,
         doc="https: do not verify the certificate at all"),
    Int(path="static[].down_med", low=0, high=MAX_U32, default=None,
        doc="while down: keep announcing with this MED; null: withdraw"),
    Str(path="static[].maintenance_file", default=None,
        doc="while this file exists the VIP is withdrawn (drain)"),

    Section(path="http", doc="the HTTP server: /metrics /healthz /readyz /status"),
    Other(path="http.listen", type="`HOST:PORT` or null", default="127.0.0.1:9472",
          schema={"anyOf": [_HOST_PORT, {"type": "null"}]}, doc="where it listens; null: off"),

    Section(path="log", doc="logging to standard error"),
    Choice(path="log.format", choices=("json", "console"), default="json",
           doc="one JSON object per line, or readable lines"),
    Choice(path="log.level", choices=LOG_LEVELS, default="info", doc="the lowest level logged"),

    Section(path="ipam", doc="address pools Services without a requested VIP get one from"),
    Section(path="ipam.pools", listed=True,
            doc="absent or empty: no allocation, VIPs come only from requests and status",
            notes="Each pool lies inside one range of `vips.allowed` and no two overlap; "
            "every problem is reported by key path. With pools, a Service's VIPs are the "
            "ones the Lease holder wrote into its status after checking them against the "
            "pools, requests included. See [ipam.md](ipam.md)."),
    Str(path="ipam.pools[].name", default=None, required=True,
        doc="a DNS label; what `kvip-bgp.io/address-pool` names"),
    Other(path="ipam.pools[].addresses", required=True, schema=_STRINGS,
          type="list of CIDRs or `FIRST-LAST`",
          doc="the pool's addresses, each inside one range of `vips.allowed`, no overlaps"),
    Bool(path="ipam.pools[].auto_assign", default=True,
         doc="false: only Services that ask for this pool or one of its IPs"),
    Bool(path="ipam.pools[].avoid_buggy_ips", default=False,
         doc="never hand out IPv4 addresses ending in .0 or .255"),
    Other(path="ipam.pools[].namespaces", type="list of namespace names", schema=_STRINGS,
          default_doc="[] (any)", doc="only Services in these namespaces"),
    Other(path="ipam.pools[].service_selector", type="labels", schema=_LABELS,
          default_doc="{} (any)", doc="labels the Service must carry (like matchLabels)"),
    Int(path="ipam.pools[].priority", low=0, high=1_000_000, default=0,
        doc="lower first; 0: after every numbered pool"),
)
# fmt: on

BY_PATH: Final[Mapping[str, Key]] = {key.path: key for key in KEYS}


def names(parent: str) -> tuple[str, ...]:
    """The keys allowed in the mapping at ``parent`` (``""``: the top level), in order."""
    return tuple(key.name for key in KEYS if key.parent == parent)


def default(path: str) -> Any:
    """The default of any key (``None`` for sections and keys without one)."""
    return getattr(BY_PATH[path], "default", None)


def template(where: str) -> str:
    """``bgp.peers[3].bfd`` -> ``bgp.peers[].bfd``: the table's path for a concrete one."""
    return _INDEX.sub("[]", where)


_INDEX: Final = re.compile(r"\[\d+\]")
