"""Address management: which Service gets which VIP from which pool, as a pure function.

``plan(pools, claims)`` takes every Service that wants addresses (with what it holds
today) and returns, for each, its addresses or why it has none, plus the Events to post.
It keeps no state between calls: what a Service holds lives in the Service itself
(``status.loadBalancer.ingress`` and the pool annotation), so a restart or a failover of
the allocating node computes the same answer from the same cluster.

Stability first: holdings are adopted before anything new is handed out, oldest Service
first, so a restart never moves an address; a holding stays as long as its pool still
contains and admits it. A new address is the first free one of the first pool that
admits the Service, walking past taken addresses only: the cost grows with what is
allocated, never with the size of a pool (a /64 is a fine pool).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from kvip_bgp.domain.model import IPAddress
from kvip_bgp.domain.objects import ObjectKey

Family = Literal[4, 6]
EVENT_ALLOCATED: Final = "IPAllocated"
EVENT_FAILED: Final = "AllocationFailed"
EVENT_CLEARED: Final = "ClearAssignment"


@dataclass(frozen=True, slots=True)
class AddressRange:
    """``first``..``last`` inclusive, one IP version."""

    first: IPAddress
    last: IPAddress

    def __post_init__(self) -> None:
        if self.first.version != self.last.version:
            raise ValueError(f"{self.first}-{self.last}: mixes IPv4 and IPv6")
        if int(self.last) < int(self.first):
            raise ValueError(f"{self.first}-{self.last}: the last address is below the first")

    @property
    def family(self) -> Family:
        return 4 if self.first.version == 4 else 6

    def __contains__(self, ip: IPAddress) -> bool:
        return ip.version == self.first.version and int(self.first) <= int(ip) <= int(self.last)

    def overlaps(self, other: AddressRange) -> bool:
        return self.family == other.family and not (
            int(self.last) < int(other.first) or int(other.last) < int(self.first)
        )

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


def parse_range(text: str) -> AddressRange:
    """A CIDR (every address of it) or ``first-last``; ``ValueError`` names the problem."""
    if "/" in text:
        network = ipaddress.ip_network(text.strip(), strict=True)
        return AddressRange(network.network_address, network.broadcast_address)
    first, dash, last = text.partition("-")
    if not dash:
        raise ValueError(f"{text!r}: neither a CIDR nor a first-last range")
    return AddressRange(ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip()))


@dataclass(frozen=True, slots=True)
class Pool:
    """``ipam.pools[]``: where addresses come from and which Services they are for."""

    name: str
    ranges: tuple[AddressRange, ...]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    namespaces: frozenset[str] = frozenset()
    service_selector: tuple[tuple[str, str], ...] = ()
    priority: int = 0

    def admits(self, claim: Claim) -> bool:
        """Its namespaces and label selector let this Service in (empty: anyone)."""
        if self.namespaces and claim.key.namespace not in self.namespaces:
            return False
        return all(claim.labels.get(k) == v for k, v in self.service_selector)

    def usable(self, ip: IPAddress) -> bool:
        if not any(ip in r for r in self.ranges):
            return False
        return not (self.avoid_buggy_ips and ip.version == 4 and int(ip) & 0xFF in (0, 255))

    def families(self) -> frozenset[Family]:
        return frozenset(r.family for r in self.ranges)

    def first_free(self, family: Family, taken: Mapping[IPAddress, object]) -> IPAddress | None:
        """The lowest usable free address of ``family``; skips only taken (or .0/.255)."""
        for r in self.ranges:
            if r.family != family:
                continue
            value, last = int(r.first), int(r.last)
            while value <= last:
                ip = ipaddress.ip_address(value) if family == 4 else ipaddress.IPv6Address(value)
                if ip.version == 4 and self.avoid_buggy_ips and value & 0xFF in (0, 255):
                    value += 1
                    continue
                if ip not in taken:
                    return ip
                value += 1
        return None

    @property
    def order(self) -> tuple[int, int, str]:
        """Lower priority first, 0 after every numbered pool, ties by name."""
        return (1 if self.priority == 0 else 0, self.priority, self.name)


@dataclass(frozen=True, slots=True)
class Claim:
    """One Service of ours that wants addresses, with what it asks for and holds today."""

    key: ObjectKey
    created: str  # creationTimestamp (RFC 3339 sorts as text): the older keeps a conflict
    families: tuple[Family, ...] = (4,)  # spec.ipFamilies; absent: IPv4 SingleStack
    family_policy: str = "SingleStack"  # SingleStack | PreferDualStack | RequireDualStack
    labels: Mapping[str, str] = field(default_factory=dict)
    requested_ips: tuple[IPAddress, ...] = ()
    requested_pool: str | None = None
    sharing_key: str | None = None
    local_selector: str | None = None  # externalTrafficPolicy Local: the pod selector
    ports: frozenset[tuple[str, int]] = frozenset()
    held: tuple[IPAddress, ...] = ()  # status.loadBalancer.ingress today
    held_pool: str | None = None  # the pool annotation today


@dataclass(frozen=True, slots=True)
class Assignment:
    pool: str
    ips: tuple[IPAddress, ...]


@dataclass(frozen=True, slots=True)
class Event:
    service: ObjectKey
    reason: str  # IPAllocated | AllocationFailed | ClearAssignment
    message: str

    @property
    def warning(self) -> bool:
        return self.reason != EVENT_ALLOCATED


@dataclass(frozen=True, slots=True)
class Plan:
    assigned: Mapping[ObjectKey, Assignment]
    pending: Mapping[ObjectKey, str]  # why a Service has no address
    events: tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class _Holder:
    key: ObjectKey
    sharing_key: str | None
    local_selector: str | None
    ports: frozenset[tuple[str, int]]


def _compatible(taken: list[_Holder], claim: Claim) -> bool:
    """Two Services share an IP only by agreement and without a clash (MetalLB's rules)."""
    for holder in taken:
        if claim.sharing_key is None or holder.sharing_key != claim.sharing_key:
            return False
        if holder.key.namespace != claim.key.namespace:
            return False
        if holder.local_selector != claim.local_selector:
            return False
        if holder.ports & claim.ports:
            return False
    return True


def _wanted_families(claim: Claim, pool: Pool) -> tuple[Family, ...] | None:
    """The families to allocate from ``pool``, or None if the pool cannot serve them."""
    offered = pool.families()
    if claim.family_policy == "SingleStack":
        wanted = claim.families[:1] or (4,)
        return wanted if set(wanted) <= offered else None
    both = tuple(f for f in claim.families or (4, 6) if f in offered)
    if claim.family_policy == "RequireDualStack":
        return both if len(set(both)) == 2 else None
    return both or None


def _candidate_pools(pools: Sequence[Pool], claim: Claim) -> list[Pool] | str:
    if claim.requested_pool is not None:
        named = [p for p in pools if p.name == claim.requested_pool]
        if not named:
            return f"address-pool {claim.requested_pool!r} does not exist"
        if not named[0].admits(claim):
            return f"pool {claim.requested_pool!r} does not admit this Service"
        return named
    admitting = sorted((p for p in pools if p.admits(claim)), key=lambda p: p.order)
    if claim.requested_ips:
        return admitting  # a request may come from any admitting pool, auto_assign or not
    return [p for p in admitting if p.auto_assign]


def plan(pools: Sequence[Pool], claims: Iterable[Claim]) -> Plan:
    """Every claim's addresses, oldest Service first: holdings, then requests, then new.

    The Events are this plan's; the caller posts only those that differ from what it
    posted for the previous plan, so an exhausted pool warns once, not once per pass.
    """
    ordered = sorted(claims, key=lambda c: (c.created, c.key.namespace, c.key.name))
    taken: dict[IPAddress, list[_Holder]] = {}
    assigned: dict[ObjectKey, Assignment] = {}
    pending: dict[ObjectKey, str] = {}
    events: list[Event] = []

    def take(claim: Claim, ips: Iterable[IPAddress]) -> None:
        holder = _Holder(claim.key, claim.sharing_key, claim.local_selector, claim.ports)
        for ip in ips:
            taken.setdefault(ip, []).append(holder)

    def free_for(claim: Claim, ip: IPAddress) -> bool:
        return ip not in taken or _compatible(taken[ip], claim)

    later: list[Claim] = []
    for claim in ordered:  # 1. adopt what Services already hold, if it is still valid
        kept = _valid_holding(pools, claim)
        if kept is not None and all(free_for(claim, ip) for ip in kept.ips):
            take(claim, kept.ips)
            assigned[claim.key] = kept
        else:
            if claim.held:
                why = "conflict with an older Service" if kept is not None else "not in a pool"
                events.append(
                    Event(claim.key, EVENT_CLEARED, f"{', '.join(map(str, claim.held))}: {why}")
                )
            later.append(claim)
    for claim in later:  # 2. requests and new addresses, oldest first
        result = _allocate(pools, claim, taken)
        if isinstance(result, str):
            pending[claim.key] = result
            events.append(Event(claim.key, EVENT_FAILED, result))
        else:
            take(claim, result.ips)
            assigned[claim.key] = result
            ips = ", ".join(map(str, result.ips))
            events.append(Event(claim.key, EVENT_ALLOCATED, f"{ips} from pool {result.pool}"))
    return Plan(assigned, pending, tuple(events))


def _valid_holding(pools: Sequence[Pool], claim: Claim) -> Assignment | None:
    """What the Service holds, if one admitting pool still contains all of it and it
    still matches the request (a changed request releases the old addresses)."""
    if not claim.held:
        return None
    if claim.requested_ips and set(claim.requested_ips) != set(claim.held):
        return None
    for pool in sorted(pools, key=lambda p: p.order):
        if claim.requested_pool is not None and pool.name != claim.requested_pool:
            continue
        if pool.admits(claim) and all(pool.usable(ip) for ip in claim.held):
            return Assignment(pool.name, claim.held)
    return None


def _allocate(
    pools: Sequence[Pool],
    claim: Claim,
    taken: Mapping[IPAddress, list[_Holder]],
) -> Assignment | str:
    candidates = _candidate_pools(pools, claim)
    if isinstance(candidates, str):
        return candidates
    if claim.requested_ips:
        for pool in candidates:
            if all(pool.usable(ip) for ip in claim.requested_ips):
                clash = [ip for ip in claim.requested_ips if not _shareable(taken, ip, claim)]
                if clash:
                    return f"{clash[0]} is in use by another Service"
                return Assignment(pool.name, claim.requested_ips)
        return f"{', '.join(map(str, claim.requested_ips))}: not in a pool that admits it"
    if not candidates:
        return "no pool admits this Service (namespaces, service_selector, auto_assign)"
    for pool in candidates:
        families = _wanted_families(claim, pool)
        if families is None:
            continue
        ips = []
        for family in families:
            ip = _first_shareable(pool, family, taken, claim)
            if ip is None:
                break
            ips.append(ip)
        else:
            return Assignment(pool.name, tuple(ips))
    return "no free address in the pools that admit this Service"


def _shareable(taken: Mapping[IPAddress, list[_Holder]], ip: IPAddress, claim: Claim) -> bool:
    return ip not in taken or _compatible(taken[ip], claim)


def _first_shareable(
    pool: Pool, family: Family, taken: Mapping[IPAddress, list[_Holder]], claim: Claim
) -> IPAddress | None:
    """An address this Service may share (same key, compatible) before the first free one."""
    if claim.sharing_key is not None:
        for ip, holders in sorted(taken.items(), key=lambda item: int(item[0])):
            if ip.version == family and pool.usable(ip) and _compatible(holders, claim):
                return ip
    return pool.first_free(family, taken)
