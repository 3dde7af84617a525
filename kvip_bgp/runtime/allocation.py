"""The allocator's state: every Service as last seen, the pools, and what to write next.

Owned by the thread that holds the status-writer Lease (``kube/writer.py``), which does
the I/O: it feeds Services in (from the cluster thread and from a LIST of its own when it
becomes the holder), asks ``next_writes`` for the writes that make the cluster match the
plan, and reports back what the API answered. Everything here is plain computation, so
the rules are tested without an API server.

Stale input never wins: a Service version older (by ``resourceVersion``) than the one
held, or than the last full list, is ignored, so a late watch event cannot make an
address look free that a Service holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from kvip_bgp.domain.claims import POOL_ANNOTATION, InvalidRequest, claim_of, held_ips
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import (
    EVENT_ALLOCATED,
    EVENT_CLEARED,
    EVENT_FAILED,
    Claim,
    Event,
    Family,
    Plan,
    Pool,
    plan,
)
from kvip_bgp.domain.model import IPAddress
from kvip_bgp.domain.objects import ObjectKey, ServiceInfo, key_order

ClaimOf = Claim | InvalidRequest | None
FAMILIES: Final[tuple[Family, ...]] = (4, 6)


@dataclass(frozen=True, slots=True)
class AllocationWrite:
    """Make ``service`` hold ``ips`` from ``pool`` (``()``/None: release both).

    ``after``: Services whose write must succeed first in the same pass, because they
    give up an address this write takes.
    """

    service: ServiceInfo
    ips: tuple[IPAddress, ...]
    pool: str | None
    status: bool  # status.loadBalancer.ingress changes
    annotation: bool  # the pool annotation changes
    events: tuple[Event, ...] = ()
    after: frozenset[ObjectKey] = frozenset()

    @property
    def releases(self) -> frozenset[IPAddress]:
        return frozenset(held_ips(self.service)) - frozenset(self.ips)


@dataclass(frozen=True, slots=True)
class PoolUsage:
    pool: str
    family: Family
    assigned: int
    available: int


@dataclass(frozen=True)
class AllocationStatus:
    """Frozen view for /status, the metric and explain."""

    enabled: bool = False  # pools are configured (a reload can add or remove them)
    allocating: bool = False  # this node holds the Lease and has listed the Services
    assigned: Mapping[ObjectKey, tuple[str, tuple[IPAddress, ...]]] = field(default_factory=dict)
    pending: Mapping[ObjectKey, str] = field(default_factory=dict)
    usage: tuple[PoolUsage, ...] = ()
    outstanding: int = 0  # writes planned, not yet done

    def steps(self, key: ObjectKey) -> tuple[str, ...]:
        """What ``explain`` says about the Service's addresses."""
        if not self.allocating:
            return ("allocation: made by the Lease holder (not this node); see its explain",)
        if key in self.assigned:
            pool, ips = self.assigned[key]
            return (f"allocation: pool {pool} -> {', '.join(map(str, ips))}",)
        if key in self.pending:
            return (f"allocation: PENDING: {self.pending[key]}",)
        return ("allocation: none (not a Service of ours)",)

    def document(self) -> dict[str, object]:
        """The ``ipam`` part of /status."""
        return {
            "allocating": self.allocating,
            "outstanding_writes": self.outstanding,
            "pools": [
                {
                    "pool": u.pool,
                    "family": u.family,
                    "assigned": u.assigned,
                    "available": u.available,
                }
                for u in self.usage
            ],
            "allocations": [
                {"service": str(k), "pool": pool, "ips": [str(ip) for ip in ips]}
                for k, (pool, ips) in sorted(self.assigned.items(), key=lambda i: key_order(i[0]))
            ],
            "pending": [
                {"service": str(k), "reason": why}
                for k, why in sorted(self.pending.items(), key=lambda i: key_order(i[0]))
            ],
        }


def _rv(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def newer(incoming: str, than: str) -> bool:
    """Whether version ``incoming`` may replace ``than`` (opaque versions: always)."""
    a, b = _rv(incoming), _rv(than)
    return a is None or b is None or a >= b


class Allocations:
    """One thread's allocation state; see the module docstring."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._services: dict[ObjectKey, ServiceInfo] = {}
        self._claims: dict[ObjectKey, ClaimOf] = {}
        # Seen but not turned into claims yet: only a planning holder pays for claims.
        self._unclaimed: set[ObjectKey] = set()
        self._listed_at = ""  # resourceVersion of the last full list ("": none yet)
        self.listed = False
        self.dirty = True
        self._failed: dict[ObjectKey, str] = {}  # AllocationFailed posted: once, not per pass
        self._plan: Plan | None = None

    @property
    def pools(self) -> tuple[Pool, ...]:
        return self._config.ipam

    def set_config(self, config: Config) -> None:
        """New pools (a reload): every claim is rebuilt, the next pass re-plans."""
        self._config = config
        self._unclaimed |= set(self._services)
        self.dirty = True

    def listed_all(self, services: Iterable[ServiceInfo], resource_version: str) -> None:
        """A full list: what it shows replaces older knowledge; what it lacks is gone."""
        seen: set[ObjectKey] = set()
        for service in services:
            seen.add(service.key)
            self.seen(service)
        for key in [k for k in self._services if k not in seen]:
            if newer(resource_version, self._services[key].resource_version):
                self._forget(key)
        if not self._listed_at or newer(resource_version, self._listed_at):
            self._listed_at = resource_version
        self.listed = True
        self.dirty = True

    def seen(self, service: ServiceInfo, deleted: bool = False) -> None:
        """A watch event or our own write's answer; ignored if older than what we hold."""
        key = service.key
        current = self._services.get(key)
        base = current.resource_version if current is not None else self._listed_at
        if base and not newer(service.resource_version, base):
            return
        if current is not None and service.resource_version == current.resource_version:
            return
        if deleted:
            self._forget(key)
            return
        self._services[key] = service
        self._unclaimed.add(key)

    @property
    def changed(self) -> bool:
        """Something may need a new plan (cheap: claims are not built here)."""
        return self.dirty or bool(self._unclaimed)

    def refresh(self) -> bool:
        """Build the claims of Services seen since; whether the plan must be made again."""
        for key in self._unclaimed:
            service = self._services.get(key)
            if service is None:
                continue
            claim = claim_of(service, self._config)
            if claim != self._claims.get(key) or (claim is None and _ours_before(service)):
                self.dirty = True
            self._claims[key] = claim
        self._unclaimed = set()
        return self.dirty

    def uid(self, key: ObjectKey) -> str:
        service = self._services.get(key)
        return service.uid if service is not None else ""

    def gone(self, key: ObjectKey) -> None:
        """The API says the Service no longer exists."""
        self._forget(key)

    def _forget(self, key: ObjectKey) -> None:
        self._services.pop(key, None)
        self._unclaimed.discard(key)
        if self._claims.pop(key, None) is not None:
            self.dirty = True
        self._failed.pop(key, None)

    def next_writes(self) -> tuple[list[AllocationWrite], list[Event]]:
        """Plan again; the writes that make every Service match it, releases first, and
        the AllocationFailed Events not posted yet."""
        self.refresh()
        self.dirty = False
        claims: list[Claim] = []
        invalid: dict[ObjectKey, InvalidRequest] = {}
        for key, claim in self._claims.items():
            if isinstance(claim, InvalidRequest):
                invalid[key] = claim
                held = held_ips(self._services[key])
                if held:  # keep its addresses out of reach until the release is written
                    claims.append(Claim(key, self._services[key].created, held=held))
            elif claim is not None:
                claims.append(claim)
        result = plan(self.pools, claims)
        self._plan = result
        events: dict[ObjectKey, list[Event]] = {}
        for event in result.events:
            events.setdefault(event.service, []).append(event)
        writes: list[AllocationWrite] = []
        failures: list[Event] = []
        for key, service in self._services.items():
            claim = self._claims.get(key)
            mine = events.get(key, [])
            if isinstance(claim, InvalidRequest):
                failure = Event(key, EVENT_FAILED, claim.message)
                if held_ips(service) or service.annotation(POOL_ANNOTATION) is not None:
                    cleared = Event(key, EVENT_CLEARED, f"released: {claim.message}")
                    writes.append(self._write(service, (), None, (cleared,)))
                failures += self._fail_once(failure)
            elif claim is None:
                if service.annotation(POOL_ANNOTATION) is not None:
                    writes.append(self._release(service))
            elif key in result.assigned:
                self._failed.pop(key, None)
                got = result.assigned[key]
                told = tuple(e for e in mine if e.reason in (EVENT_CLEARED, EVENT_ALLOCATED))
                if claim.held != got.ips or claim.held_pool != got.pool:
                    writes.append(self._write(service, got.ips, got.pool, told))
            else:
                told = tuple(e for e in mine if e.reason == EVENT_CLEARED)
                if claim.held or claim.held_pool is not None:
                    writes.append(self._write(service, (), None, told))
                failures += [
                    f for e in mine if e.reason == EVENT_FAILED for f in self._fail_once(e)
                ]
        return _ordered(writes), failures

    def _fail_once(self, event: Event) -> list[Event]:
        if self._failed.get(event.service) == event.message:
            return []
        self._failed[event.service] = event.message
        return [event]

    def _release(self, service: ServiceInfo) -> AllocationWrite:
        """No longer ours: clear the status only where it is an address of our pools."""
        held = held_ips(service)
        ours = bool(held) and all(any(p.usable(ip) for p in self.pools) for ip in held)
        return AllocationWrite(service, (), None, status=ours, annotation=True)

    @staticmethod
    def _write(
        service: ServiceInfo,
        ips: tuple[IPAddress, ...],
        pool: str | None,
        events: tuple[Event, ...],
    ) -> AllocationWrite:
        return AllocationWrite(
            service,
            ips,
            pool,
            status=held_ips(service) != ips,
            annotation=service.annotation(POOL_ANNOTATION) != pool,
            events=events,
        )

    def status(self, allocating: bool, outstanding: int = 0) -> AllocationStatus:
        result = self._plan
        if not allocating or result is None:
            return AllocationStatus(enabled=bool(self.pools), allocating=False)
        pending = dict(result.pending)
        for key, claim in self._claims.items():
            if isinstance(claim, InvalidRequest):
                pending[key] = claim.message
        assigned = {k: (a.pool, a.ips) for k, a in result.assigned.items() if k not in pending}
        return AllocationStatus(
            enabled=bool(self.pools),
            allocating=True,
            assigned=assigned,
            pending=pending,
            usage=usage(self.pools, (ip for _, ips in assigned.values() for ip in ips)),
            outstanding=outstanding,
        )


def _ours_before(service: ServiceInfo) -> bool:
    return service.annotation(POOL_ANNOTATION) is not None


def _ordered(writes: list[AllocationWrite]) -> list[AllocationWrite]:
    """Releases before takes; a write that takes an address another write gives up
    names that write in ``after``, so it waits for it (never two holders at once)."""
    giving_up: dict[IPAddress, ObjectKey] = {}
    for w in writes:
        for ip in w.releases:
            giving_up[ip] = w.service.key
    result = []
    for w in writes:
        deps = frozenset(
            giving_up[ip] for ip in w.ips if ip in giving_up and giving_up[ip] != w.service.key
        )
        result.append(
            AllocationWrite(w.service, w.ips, w.pool, w.status, w.annotation, w.events, deps)
        )
    return sorted(result, key=lambda w: (not w.releases, len(w.after)))


def usage(pools: Iterable[Pool], assigned: Iterable[IPAddress]) -> tuple[PoolUsage, ...]:
    """Assigned and available addresses per pool and family, computed, never enumerated."""
    pools = tuple(pools)
    taken: dict[tuple[str, int], set[IPAddress]] = {}
    for ip in set(assigned):
        for pool in pools:
            if pool.usable(ip):
                taken.setdefault((pool.name, ip.version), set()).add(ip)
                break
    rows = []
    for pool in pools:
        for family in FAMILIES:
            size = pool_size(pool, family)
            if size == 0:
                continue
            used = len(taken.get((pool.name, family), ()))
            rows.append(PoolUsage(pool.name, family, used, size - used))
    return tuple(rows)


def pool_size(pool: Pool, family: Family) -> int:
    """How many addresses of ``family`` the pool can hand out (``.0``/``.255`` excepted
    with ``avoid_buggy_ips``)."""
    total = 0
    for r in pool.ranges:
        if r.family != family:
            continue
        first, last = int(r.first), int(r.last)
        total += last - first + 1
        if pool.avoid_buggy_ips and family == 4:
            for rest in (0, 255):
                total -= (last - rest) // 256 - (first - 1 - rest) // 256
    return total
