"""Live reconfiguration, run by the main thread: a new config file, validated, handed out.

SIGHUP, or a change of the file seen by polling it (a ConfigMap's symlink swap or an
in-place write), makes the main thread read the file again. The whole new config is
validated first: by the loader, against the keys that need a restart, and (with
``output: exabgp``) by ExaBGP itself on the rendered file. Only a config that passes
every check is applied, and then each thread gets it through its own queue as one frozen
value, so no thread ever sees half a reload:
- the reconciler: ``ConfigChanged`` (this node's peers, the sources that feed it);
- the cluster-state thread: ``ClusterConfig`` (it decides every Service again and
  publishes only the VIPs whose route changed);
- each static VIP watcher: ``StaticChanged`` / ``StaticRetired``; new ones are started;
- ExaBGP: its new file, then SIGUSR1 (confirmed, retried, or ExaBGP restarted);
- the BFD process: the new BFD peer set on its stdin, when it changed.

The Node's labels (from the cluster-state thread's published status) choose the peers
with a ``node_selector``: when they change, the same peer path runs with the config as
it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from kvip_bgp import rundir
from kvip_bgp.bgp.config import render_config
from kvip_bgp.bgp.reload import validate_exabgp
from kvip_bgp.configfile.reader import ConfigError
from kvip_bgp.configfile.watch import Loaded, fingerprint, read, watched_files
from kvip_bgp.domain.config import Config, Peer, StaticVip
from kvip_bgp.domain.model import IPAddress, RouteAttributes
from kvip_bgp.domain.objects import NodeInfo
from kvip_bgp.domain.reload import config_diff, refusal_message
from kvip_bgp.domain.sources import VipSource
from kvip_bgp.ops import log as logging_setup
from kvip_bgp.runtime.messages import (
    ClusterConfig,
    ConfigChanged,
    Inbox,
    ReplyBox,
    StaticChanged,
    StaticRetired,
    post,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reload import ReloadStatus
from kvip_bgp.runtime.snapshot import Snapshot

if TYPE_CHECKING:
    from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor
    from kvip_bgp.bgp.process import ExabgpSupervisor
    from kvip_bgp.runtime.static import StaticVipWatcher

log = structlog.get_logger("kvip_bgp.app")

POLL_INTERVAL: Final = 2.0
"""Seconds between looks at the config file: a change applies well within 10 s."""
WITHDRAW_WAIT: Final = 3.0
"""At most this long ExaBGP keeps a removed peer while its routes are withdrawn."""


class ReloadRefused(Exception):
    """The new config cannot be applied; ``problems`` says every reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def peers_for_node(config: Config, labels: dict[str, str] | None) -> tuple[Peer, ...]:
    """The peers whose ``node_selector`` matches this node's labels."""
    chosen = []
    for peer in config.bgp.peers:
        matches = labels is not None and all(labels.get(k) == v for k, v in peer.node_selector)
        if not peer.node_selector or matches:
            chosen.append(peer)
    return tuple(chosen)


def static_source(vip: IPAddress) -> str:
    """Each static VIP is a source of its own: synced once its first check reported."""
    return VipSource.static(vip).wire


def sources_of(config: Config, kube_source: str) -> tuple[str, ...]:
    """Every source that feeds the reconciler under ``config``."""
    statics = tuple(static_source(s.address) for s in config.static)
    return statics + ((kube_source,) if config.kubernetes.enabled else ())


def node_config(config: Config, peers: tuple[Peer, ...]) -> Config:
    """``config`` with only this node's peers: what the announcer works with."""
    from dataclasses import replace

    return replace(config, bgp=replace(config.bgp, peers=peers))


@dataclass
class Children:
    """The processes and threads a reload may reconfigure; the main thread's alone."""

    inbox: Inbox
    kube_source: str
    exabgp: ExabgpSupervisor | None = None
    exabgp_config: Path | None = None
    api_socket: Path | None = None
    bfd: BfdSupervisor | None = None
    new_bfd: Callable[[tuple[Peer, ...]], BfdSupervisor] | None = None
    cluster_events: Any = None
    """The cluster-state thread's queue (``queue.SimpleQueue``), when Kubernetes is on."""
    new_pools: Callable[[Config], None] | None = None
    """Hands the allocator (in the cluster writer thread) the new config's pools."""
    statics: dict[IPAddress, StaticVipWatcher] = field(default_factory=dict)
    new_static: Callable[[StaticVip, RouteAttributes], StaticVipWatcher] | None = None


class Reloader:
    """Notices a new config file and applies it all or not at all. Main thread only."""

    def __init__(
        self,
        path: Path,
        loaded: Loaded,
        labels: dict[str, str] | None,
        children: Children,
        metrics: Metrics,
        status: Snapshot[ReloadStatus],
        node: Callable[[], NodeInfo | None] | None = None,
    ) -> None:
        self._path = path
        self.config = loaded.config
        self._labels = labels
        self._node = node
        self._peers = peers_for_node(loaded.config, labels)
        self._children = children
        self._metrics = metrics
        self._status = status
        self._requested = False
        # ExaBGP's new file waits for the withdrawals to removed peers (or a deadline).
        self._install: tuple[ReplyBox[bool], float] | None = None
        self._watched = fingerprint(watched_files(path, loaded.config))
        self._next_poll = 0.0
        for result in ("ok", "failed"):
            metrics.config_reloads.labels(result)
        status.publish(ReloadStatus(config_hash=loaded.digest, loaded_at=time.time()))

    def request(self) -> None:
        """SIGHUP: reload at the next tick (runs in the signal handler: only a flag)."""
        self._requested = True

    def tick(self, now: float) -> None:
        """Reload if asked to, or if the file (or a password file) changed on disk; choose
        the peers again if this node's labels changed."""
        self._follow_labels()
        self._install_exabgp(now)
        if not self._requested and now < self._next_poll:
            return
        self._next_poll = now + POLL_INTERVAL
        seen = fingerprint(watched_files(self._path, self.config))
        if not self._requested and seen == self._watched:
            return
        trigger = "signal" if self._requested else "file changed"
        self._requested = False
        self._watched = seen
        self.reload(trigger)

    def reload(self, trigger: str) -> bool:
        """Read, validate and apply the file; on any problem keep the running config."""
        try:
            loaded = read(self._path)
            self._apply(loaded, trigger)
        except Exception as error:
            # Anything else is a bug, but the main thread must go on supervising.
            problems = (
                list(error.problems)
                if isinstance(error, ConfigError | ReloadRefused)
                else [f"internal error: {type(error).__name__}: {error}"]
            )
            self._metrics.config_reloads.labels("failed").inc()
            log.error("config.reload_failed", trigger=trigger, problems=problems)
            previous = self._status.read()
            self._status.publish(
                ReloadStatus(previous.config_hash, previous.loaded_at, tuple(problems), time.time())
            )
            return False
        self._metrics.config_reloads.labels("ok").inc()
        # The new config may name other password files: watch those from now on.
        self._watched = fingerprint(watched_files(self._path, self.config))
        self._status.publish(ReloadStatus(config_hash=loaded.digest, loaded_at=time.time()))
        return True

    def _follow_labels(self) -> None:
        node = self._node() if self._node is not None else None
        if node is None or dict(node.labels) == self._labels:
            return
        self._labels = dict(node.labels)
        peers = peers_for_node(self.config, self._labels)
        if peers == self._peers:
            return
        log.info("config.node_labels_changed", peers=[str(p.address) for p in peers])
        try:
            exabgp_text = self._prepare_exabgp(self.config, peers)
        except ReloadRefused as error:
            log.error("config.peers_not_applied", problems=error.problems)
            return
        self._commit_peers(self.config, peers, exabgp_text)

    # -- applying ---------------------------------------------------------------------

    def _prepare_exabgp(self, config: Config, peers: tuple[Peer, ...]) -> str | None:
        """ExaBGP's new file, validated and written beside the live one; None: unchanged."""
        c = self._children
        if c.exabgp is None or c.exabgp_config is None or c.api_socket is None:
            return None
        text = render_config(config, c.api_socket, peers, show_secrets=True)
        if text == c.exabgp_config.read_text(encoding="utf-8"):
            return None
        candidate = c.exabgp_config.with_name("exabgp.conf.new")
        rundir.write_private(candidate, text)
        problems = validate_exabgp(candidate)
        if problems:
            raise ReloadRefused(problems)
        return text

    def _commit_peers(
        self, config: Config, peers: tuple[Peer, ...], exabgp_text: str | None
    ) -> None:
        """Hand the peers out: the reconciler first, then ExaBGP's file (once the routes
        are withdrawn from removed peers) and BFD."""
        c = self._children
        self._peers = peers
        if not peers and c.exabgp is not None:
            log.warning("config.no_peers", reason="no bgp.peers match this node's labels")
        routes_left: ReplyBox[bool] = ReplyBox()
        sources = sources_of(config, c.kube_source)
        post(c.inbox, ConfigChanged(node_config(config, peers), sources, routes_left))
        if exabgp_text is not None:
            self._install = (routes_left, time.monotonic() + WITHDRAW_WAIT)
            self._install_exabgp(time.monotonic())
        else:
            self._install = None  # the running file is already the one wanted
        if c.bfd is not None:
            c.bfd.set_peers(peers)
        elif c.new_bfd is not None and any(p.bfd is not None for p in peers):
            c.bfd = c.new_bfd(peers)

    def _apply(self, loaded: Loaded, trigger: str) -> None:
        old, new = self.config, loaded.config
        diff = config_diff(old, new)
        if diff.restart_needed:
            raise ReloadRefused([refusal_message(diff)])
        c = self._children
        peers = peers_for_node(new, self._labels)
        exabgp_text = self._prepare_exabgp(new, peers)
        # -- everything checked: from here on the new config is applied, part by part.
        self.config = new
        if diff.empty:
            log.info("config.reloaded", trigger=trigger, changed=[], hash=loaded.digest)
            return
        secrets = [p.password for p in new.bgp.peers if p.password]
        logging_setup.configure(new.log.format, new.log.level, secrets=secrets)
        self._commit_peers(new, peers, exabgp_text)
        if c.cluster_events is not None:
            c.cluster_events.put(ClusterConfig(new))
        if c.new_pools is not None and "ipam" in diff.changed:
            c.new_pools(new)
        self._apply_static(old, new)
        log.info("config.reloaded", trigger=trigger, changed=list(diff.changed), hash=loaded.digest)

    def _install_exabgp(self, now: float) -> None:
        c = self._children
        if self._install is None or c.exabgp is None or c.exabgp_config is None:
            return
        routes_left, deadline = self._install
        if routes_left.get(0) is None and now < deadline:
            return
        self._install = None
        c.exabgp_config.with_name("exabgp.conf.new").replace(c.exabgp_config)
        c.exabgp.request_reload()

    def _apply_static(self, old: Config, new: Config) -> None:
        c = self._children
        wanted = {s.address: s for s in new.static}
        before = {s.address: s for s in old.static}
        for address in list(c.statics):
            if address not in wanted:
                c.statics.pop(address).update(StaticRetired())
        for address, vip in wanted.items():
            watcher = c.statics.get(address)
            if watcher is None:
                if c.new_static is not None:
                    c.statics[address] = c.new_static(vip, new.advertise)
            elif vip != before.get(address) or new.advertise != old.advertise:
                watcher.update(StaticChanged(vip, new.advertise))
