"""The reconciler thread's mutable state and what it needs from the address table.

Moved out of ``runtime/reconciler.py`` to keep that module small. ``ReconcilerState`` is
owned by the reconciler thread alone and never handed out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from kvip_bgp.domain.model import Advertisement, BindResult, IPAddress
from kvip_bgp.runtime.bindqueue import BindQueue
from kvip_bgp.runtime.desired import DesiredRoutes
from kvip_bgp.runtime.messages import BfdState, Stop

__all__ = ["AddressBinder", "ReconcilerState"]


class AddressBinder(Protocol):
    """What the reconciler needs from ``netif.AddressTable`` (a fake in unit tests)."""

    def owned(self) -> set[IPAddress]: ...
    def bind_many(self, vips: Iterable[IPAddress]) -> BindResult: ...
    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]: ...


@dataclass
class ReconcilerState:
    """Mutable state owned by the reconciler thread alone (never handed out)."""

    desired: DesiredRoutes = field(default_factory=DesiredRoutes)
    # Bound but not desired (since the last pass): what _due_unbinds looks at.
    undesired_bound: set[IPAddress] = field(default_factory=set)
    synced: set[str] = field(default_factory=set)
    bound: set[IPAddress] = field(default_factory=set)
    # Binds that failed: announced anyway, retried at the next resync (not every pass).
    bind_failed: set[IPAddress] = field(default_factory=set)
    # New addresses left for the next pass (BIND_CHUNK): that pass comes at once.
    bind_queue: BindQueue = field(default_factory=BindQueue)
    bind_backlog: int = 0  # len(bind_queue) after the last pass
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stop: Stop | None = None
    last_resync: float | None = None  # None: the first pass is a resync
    last_repair: float = 0.0
    bfd: dict[str, BfdState] = field(default_factory=dict)
    published_peers: frozenset[str] = frozenset()
    unbind_at: dict[IPAddress, float] = field(default_factory=dict)  # withdrawn, acked, bound
    retired: set[str] = field(default_factory=set)  # a reload removed them: drop their posts
    # The status's copies of what is announced and bound, kept while unchanged:
    # ``bound_changed`` or another version of the announcer's ``changes()`` makes a
    # publish copy again, with many VIPs at most every STATUS_INTERVAL.
    views: tuple[tuple[Advertisement, ...], tuple[IPAddress, ...]] = ((), ())
    bound_changed: bool = True
    announced_version: int = -1
    views_at: float = float("-inf")  # when the copies were last made
    views_stale: bool = False  # changed since, waiting for STATUS_INTERVAL
