"""The reconciler's published view, and how the reconciler thread publishes it.

Moved out of ``runtime/reconciler.py`` to keep that module small; ``publish_status``
runs in the reconciler thread, after every pass, over the state that thread owns.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Final

from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.runtime.announcer import Announcer, PeerView
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler_state import ReconcilerState
from kvip_bgp.runtime.snapshot import Snapshot

__all__ = ["CHEAP_STATUS", "STATUS_INTERVAL", "ReconcilerStatus", "publish_status"]

STATUS_INTERVAL: Final = 0.5  # with many VIPs, the status's copies at most this often
CHEAP_STATUS: Final = 1000  # below this many VIPs they are copied on every change


@dataclass(frozen=True)
class ReconcilerStatus:
    """What /status and the health endpoints read (published after every pass)."""

    announced: tuple[Advertisement, ...] = ()
    bound: tuple[IPAddress, ...] = ()
    peers: tuple[PeerView, ...] = ()
    synced_sources: tuple[str, ...] = ()
    all_synced: bool = False
    exabgp_connected: bool = False
    last_errors: tuple[str, ...] = ()
    updated_at: float = 0.0
    stopped: bool = False
    bind_backlog: int = 0
    """Desired addresses not bound yet (so not announced yet): the pipeline is busy."""

    def routes_busy(self, source: str) -> bool:
        """Whether ``source``'s routes are not all out yet (not synced, or addresses left
        to bind). What waits for them: the status writes (``kube.ClusterWriter``), which
        would compete for the CPU with the cluster thread's first pass, a cold start's
        critical path; and the end of the collector's start pause (``process.pause_gc``).
        """
        return source not in self.synced_sources or self.bind_backlog > 0


def _peers(s: ReconcilerState, announcer: Announcer, metrics: Metrics) -> tuple[PeerView, ...]:
    """The announcer's sessions with their BFD state; ``session_up`` follows both."""
    views = {view.address: view for view in announcer.peers()}
    for peer, bfd in s.bfd.items():
        view = views.get(peer) or PeerView(peer, "unknown", bfd.at, None)
        views[peer] = dataclasses.replace(view, bfd=bfd.state)
    for peer in s.published_peers - views.keys():
        metrics.session_up.labels(peer).set(0)
    for view in views.values():
        metrics.session_up.labels(view.address).set(1 if view.up else 0)
    s.published_peers = frozenset(views)
    return tuple(sorted(views.values(), key=lambda view: view.address))


def publish_status(
    s: ReconcilerState,
    announcer: Announcer,
    metrics: Metrics,
    status: Snapshot[ReconcilerStatus],
    all_synced: bool,
    now: float,
    stopped: bool = False,
) -> None:
    # This runs after every pass; copying (and freeing) 10,000 entries was a fifth of
    # the thread's time. So the copies are unsorted (the readers sort), made only when
    # changed, and with many VIPs at most every STATUS_INTERVAL (a burst changes them
    # on every pass; ``timeout`` wakes a pass for the last change). The small fields
    # (backlog, peers, sync) are fresh after every pass.
    announced = announcer.announced()
    if s.bound_changed or s.announced_version != announcer.changes():
        large = max(len(announced), len(s.bound)) >= CHEAP_STATUS
        s.views_stale = large and not stopped and now - s.views_at < STATUS_INTERVAL
        if not s.views_stale:
            s.views = (tuple(announced.values()), tuple(s.bound))
            s.views_at = now
            s.announced_version = announcer.changes()
            s.bound_changed = False
    status.publish(
        ReconcilerStatus(
            announced=s.views[0],
            bound=s.views[1],
            peers=_peers(s, announcer, metrics),
            synced_sources=tuple(sorted(s.synced)),
            all_synced=all_synced,
            exabgp_connected=announcer.connected(),
            last_errors=tuple(s.errors),
            updated_at=time.time(),
            stopped=stopped,
            bind_backlog=s.bind_backlog,
        )
    )
