"""What a configuration reload changes: a pure comparison of two validated configs.

A reload is all or nothing, so it is decided before anything is applied: the keys that
only a restart can change (the local AS, the listening socket, the output mode...) make
the whole reload fail, by name; everything else is listed so that each thread applies
only its part and a BGP session whose own settings are unchanged is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

from kvip_bgp.domain.config import Config, Peer

RESTART_KEYS: Final = (
    "node_name",
    "bgp.asn",
    "bgp.router_id",
    "output",
    "vips.interface",
    "vips.bind",
    "http.listen",
    "kubernetes.enabled",
    "kubernetes.kubeconfig",
    "kubernetes.watch_read_timeout",
    "kubernetes.lease_duration",
    "kernel_table",
    "log.format",
)
"""Keys a running daemon cannot change: each is read once, by a thread or socket that
lives as long as the process (the cache's node, the HTTP socket, the watch streams...)."""

RELOAD_KEYS: Final = (
    "bgp.hold_time",
    "bgp.graceful_restart",
    "bgp.peers",
    "advertise",
    "vips.allowed",
    "vips.unbind_delay",
    "kubernetes.load_balancer_class",
    "kubernetes.legacy_class_handling",
    "kubernetes.withdraw_when_cordoned",
    "static",
    "ipam",
    "shutdown_timeout",
    "log.level",
)
"""Keys applied in place; together with RESTART_KEYS they cover every field of Config."""


def _get(config: Config, path: str) -> object:
    value: object = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class PeerChanges:
    """The BGP sessions a reload touches, by peer address (the rest stay as they are)."""

    added: tuple[Peer, ...] = ()
    removed: tuple[Peer, ...] = ()
    changed: tuple[Peer, ...] = ()
    """Same address, other settings (password, port, TTL, BFD, ...): re-established."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class ConfigDiff:
    """The difference between the running config and a new one."""

    restart_needed: tuple[str, ...]
    """Changed keys that need a restart: non-empty means the reload is refused."""
    changed: tuple[str, ...]
    """Changed keys that are applied in place."""

    @property
    def empty(self) -> bool:
        return not self.restart_needed and not self.changed


def config_diff(old: Config, new: Config) -> ConfigDiff:
    """Which keys differ between ``old`` and ``new``, split by how they can be applied."""
    restart = tuple(key for key in RESTART_KEYS if _get(old, key) != _get(new, key))
    changed = tuple(key for key in RELOAD_KEYS if _get(old, key) != _get(new, key))
    return ConfigDiff(restart, changed)


def peer_changes(old: tuple[Peer, ...], new: tuple[Peer, ...]) -> PeerChanges:
    """Added, removed and changed sessions between two peer sets (keyed by address)."""
    before = {peer.address: peer for peer in old}
    after = {peer.address: peer for peer in new}
    return PeerChanges(
        added=tuple(peer for address, peer in after.items() if address not in before),
        removed=tuple(peer for address, peer in before.items() if address not in after),
        changed=tuple(
            peer
            for address, peer in after.items()
            if address in before and _session_settings(before[address]) != _session_settings(peer)
        ),
    )


def _session_settings(peer: Peer) -> tuple[object, ...]:
    """Everything of a peer but where its selector applies (that only decides presence)."""
    return tuple(getattr(peer, f.name) for f in fields(peer) if f.name != "node_selector")


def refusal_message(diff: ConfigDiff) -> str:
    """The one line an operator reads when a reload is refused for restart-only keys."""
    return (
        "these keys need a restart of kvip-bgp, nothing of the new file was applied: "
        + ", ".join(diff.restart_needed)
    )
