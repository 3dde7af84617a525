"""The reconciler's published view, apart from the thread that makes it."""

from __future__ import annotations

from dataclasses import dataclass

from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.runtime.announcer import PeerView

__all__ = ["ReconcilerStatus"]


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
