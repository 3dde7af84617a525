"""The one place that builds and wires everything, and the main thread's supervision loop.

Start order (each step only depends on the ones before it): the runtime directory's lock
(held for the process's life) and ExaBGP config → the API socket and the exabgp reader
thread → ExaBGP → the reconciler thread → the sources (static VIPs; the cluster-state
thread and its stream threads) → the HTTP thread.
The main thread then only waits for signals and restarts ExaBGP when it dies. The kube
adapter (and with it the ``kubernetes`` package) is imported only with kubernetes.enabled.

Shutdown (SIGTERM/SIGINT) runs in reverse within ``shutdown_timeout``: the reconciler
withdraws every route and waits for ExaBGP's acks, removes the addresses it bound, then
ExaBGP is stopped. The peer sees withdrawals, not a hold-timer expiry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kvip_bgp import process as process_settings
from kvip_bgp import rundir
from kvip_bgp.bgp import process as exabgp
from kvip_bgp.bgp.api import ApiReader, listen_api_socket
from kvip_bgp.bgp.config import exabgp_environment, render_config
from kvip_bgp.domain.config import Config, Peer
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.sources import VipSource
from kvip_bgp.ops.http import StatusServer
from kvip_bgp.runtime.allocation import AllocationStatus
from kvip_bgp.runtime.cluster import SOURCE as KUBE_SOURCE
from kvip_bgp.runtime.cluster import ClusterStatus
from kvip_bgp.runtime.messages import Inbox, SourceSynced, Stop, VipDesired, post
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.static import static_watchers
from kvip_bgp.runtime.workqueue import CoalescingQueue

if TYPE_CHECKING:  # at run time imported only where used: kubernetes.enabled, a peer with bfd
    from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor
    from kvip_bgp.kube.client import Configuration
    from kvip_bgp.kube.threads import KubernetesThreads

log = structlog.get_logger("kvip_bgp.app")


def static_source(vip: IPAddress) -> str:
    """Each static VIP is a source of its own: synced once its first check reported."""
    return VipSource.static(vip).wire


class StartupError(Exception):
    """Something the operator must fix before the daemon can run; the message says what."""


def peers_for_node(config: Config, labels: dict[str, str] | None) -> tuple[Peer, ...]:
    """The peers whose ``node_selector`` matches this node's labels."""
    chosen = []
    for peer in config.bgp.peers:
        matches = labels is not None and all(labels.get(k) == v for k, v in peer.node_selector)
        if not peer.node_selector or matches:
            chosen.append(peer)
    return tuple(chosen)


@dataclass(frozen=True)
class Speaker:
    """ExaBGP and the thread reading its API socket, for ``output: exabgp``."""

    supervisor: exabgp.ExabgpSupervisor
    reader: ApiReader
    socket_path: Path

    def stop(self, timeout: float) -> None:
        self.supervisor.stop(timeout)
        self.reader.stop()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()


class Daemon:
    def __init__(self, config: Config, runtime_dir: Path = rundir.DEFAULT_RUNTIME_DIR) -> None:
        self.config = config
        self.paths = rundir.RuntimePaths(runtime_dir)
        self.metrics = Metrics()
        self.inbox: Inbox = CoalescingQueue()
        self.reconciler_status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        self.cluster_status: Snapshot[ClusterStatus] = Snapshot(ClusterStatus())
        self.ipam_status: Snapshot[AllocationStatus] = Snapshot(AllocationStatus())
        # Whether ExaBGP runs: published by the main thread, the only user of the process
        # (it polls, restarts and stops it); /healthz reads this, never the process.
        self.exabgp_running: Snapshot[bool] = Snapshot(False)
        self._stop = threading.Event()
        self._signal: int | None = None

    def _on_signal(self, signum: int) -> None:
        self._signal = signum
        self._stop.set()

    # -- main -------------------------------------------------------------------------

    def run(self) -> int:
        """The whole life of the daemon, holding the runtime directory's lock throughout."""
        config = self.config
        process_settings.configure()
        process_settings.on_stop_signals(self._on_signal)
        self.metrics.build_info.info({"version": _version()})
        log.info(
            "app.starting",
            node=config.node_name,
            output=config.output,
            config=str(config.source),
            kubernetes=config.kubernetes.enabled,
            static=len(config.static),
        )
        try:
            lock = rundir.DirectoryLock.acquire(self.paths)
        except rundir.RuntimeDirBusy as error:
            raise StartupError(str(error)) from error
        except OSError as error:
            raise StartupError(f"runtime directory {self.paths.directory}: {error}") from error
        try:
            return self._run()
        finally:
            lock.release()

    def _run(self) -> int:
        config = self.config
        kube_configuration = self._kube_configuration()
        labels = self._node_labels(kube_configuration)
        peers = peers_for_node(config, labels)
        if config.output == "exabgp" and not peers:
            raise StartupError(
                "no bgp.peers match this node's labels (node_selector); nothing to peer with"
            )
        from kvip_bgp.bgp.announcer import ExabgpAnnouncer
        from kvip_bgp.netif.addresses import AddressTable, LocalRouteTable
        from kvip_bgp.netif.announcer import KernelTableAnnouncer
        from kvip_bgp.netif.netlink import InterfaceError
        from kvip_bgp.netif.routes import RouteTable
        from kvip_bgp.runtime.announcer import Announcer

        kernel_routes = None
        speaker = None
        if config.output == "kernel-table":
            kernel_routes = RouteTable(config.kernel_table.table, config.kernel_table.protocol)
        else:
            speaker = self._start_exabgp(peers)

        bfd = None
        if speaker is not None and any(peer.bfd is not None for peer in peers):
            from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor

            bfd = BfdSupervisor(peers, lambda m: post(self.inbox, m), self.metrics)
            bfd.start()

        addresses = None
        if config.vips.interface is not None:
            try:
                table = LocalRouteTable if config.vips.bind == "local-route" else AddressTable
                addresses = table(config.vips.interface)
            except InterfaceError as error:
                if bfd is not None:
                    bfd.stop(2.0)
                if speaker is not None:
                    speaker.stop(5.0)
                raise StartupError(str(error)) from error

        sources = tuple(static_source(s.address) for s in config.static) + (
            (KUBE_SOURCE,) if config.kubernetes.enabled else ()
        )
        announcer: Announcer = (
            KernelTableAnnouncer(kernel_routes)
            if kernel_routes is not None
            else ExabgpAnnouncer(
                dataclasses.replace(config, bgp=dataclasses.replace(config.bgp, peers=peers)),
                self.metrics,
            )
        )
        reconciler = Reconciler(
            self.inbox,
            addresses,
            announcer,
            self.metrics,
            self.reconciler_status,
            sources,
            unbind_delay=config.vips.unbind_delay,
        )
        reconciler_thread = threading.Thread(target=reconciler.run, name="reconciler")
        reconciler_thread.start()

        watchers = self._start_static()
        kubernetes = self._start_kubernetes(kube_configuration)
        # Built once, before the HTTP thread exists, and immutable: /healthz reads it from
        # that thread, so it must never see a half-filled or changing collection.
        threads: tuple[threading.Thread, ...] = (
            reconciler_thread,
            *watchers,
            *((speaker.reader,) if speaker is not None else ()),
            *(kubernetes.all() if kubernetes is not None else ()),
        )
        http_server = None
        if config.http.listen is not None:
            http_server = StatusServer(
                config.http.listen,
                self.metrics,
                self.reconciler_status,
                self.cluster_status,
                self.exabgp_running if speaker is not None else None,
                lambda: all(t.is_alive() for t in threads),
                kubernetes.explain if kubernetes is not None else None,
                # With output: kernel-table the host's routing daemon owns the sessions.
                needs_peer=speaker is not None,
                ipam=self.ipam_status if config.ipam else None,
            )
            http_server.start()

        exit_code = self._supervise(speaker.supervisor if speaker else None, bfd, reconciler_thread)

        # -- shutdown, in reverse order --------------------------------------------------
        deadline = time.monotonic() + config.shutdown_timeout
        log.info("app.stopping", signal=self._signal, timeout=config.shutdown_timeout)
        if kubernetes is not None:
            kubernetes.stop()
        # Leave ExaBGP a little time of the budget to be stopped.
        post(self.inbox, Stop(deadline=deadline - min(2.0, config.shutdown_timeout / 4)))
        reconciler_thread.join(max(0.1, deadline - time.monotonic()))
        # The netlink tables are the reconciler's: closed here only once it has ended.
        reconciler_stopped = not reconciler_thread.is_alive()
        if not reconciler_stopped:
            log.error("app.reconciler_did_not_stop", netlink="left open: still the reconciler's")
            exit_code = exit_code or 1
        if bfd is not None:
            # After the withdrawals: AdminDown tells the peers this stop is planned.
            bfd.stop(max(0.5, min(3.0, deadline - time.monotonic())))
        if speaker is not None:
            speaker.stop(max(0.5, deadline - time.monotonic()))
        if http_server is not None:
            http_server.stop()
        if reconciler_stopped:
            for netlink_table in (kernel_routes, addresses):
                if netlink_table is not None:
                    netlink_table.close()
        log.info("app.stopped", exit_code=exit_code)
        return exit_code

    def _start_exabgp(self, peers: tuple[Peer, ...]) -> Speaker:
        """ExaBGP's private config (0600: it holds MD5 passwords), the API socket, ExaBGP."""
        rundir.write_private(
            self.paths.exabgp_config,
            render_config(self.config, self.paths.api_socket, peers, show_secrets=True),
        )
        listener = listen_api_socket(self.paths.api_socket)
        reader = ApiReader(listener, lambda m: post(self.inbox, m))
        reader.start()
        supervisor = exabgp.ExabgpSupervisor(
            exabgp.ExabgpProcess(self.paths.exabgp_config, exabgp_environment()),
            self.exabgp_running,
            self._session_came_up_since,
            self.metrics.exabgp_restarts.inc,
        )
        supervisor.start()
        return Speaker(supervisor, reader, self.paths.api_socket)

    def _session_came_up_since(self, wall_time: float) -> bool:
        return any(
            p.state == "up" and p.since >= wall_time for p in self.reconciler_status.read().peers
        )

    def _supervise(
        self,
        exabgp_side: exabgp.ExabgpSupervisor | None,
        bfd: BfdSupervisor | None,
        reconciler: threading.Thread,
    ) -> int:
        """Wait for a signal; restart ExaBGP or BFD when they die; fail if the reconciler did."""
        while not self._stop.wait(0.25):
            if not reconciler.is_alive():
                log.error("app.reconciler_died")
                self._stop.set()
                return 1
            if exabgp_side is not None:
                exabgp_side.tick(time.monotonic())
            if bfd is not None:
                bfd.tick(time.monotonic())
        return 0

    # -- sources ----------------------------------------------------------------------

    def _start_static(self) -> list[threading.Thread]:
        """One watcher thread per static VIP; each is its own source for the reconciler.

        A watcher reports its first check result before the reconciler may withdraw
        anything, so a restart never withdraws a healthy static VIP on an empty state.
        """

        def publish(vip: IPAddress, advert: Advertisement | None) -> None:
            post(self.inbox, VipDesired(static_source(vip), vip, advert))

        def reported(vip: IPAddress) -> None:
            post(self.inbox, SourceSynced(static_source(vip)))

        watchers = static_watchers(
            self.config.static,
            self.config.advertise,
            publish,
            self.metrics,
            self._stop,
            reported,
        )
        for watcher in watchers:
            watcher.start()
        return list(watchers)

    def _start_kubernetes(self, configuration: Configuration | None) -> KubernetesThreads | None:
        """The kube adapter, imported here only: a static-only daemon never loads it."""
        if configuration is None:
            return None
        from kvip_bgp.kube.threads import start_kubernetes

        def publish(vip: IPAddress, advert: Advertisement | None) -> None:
            post(self.inbox, VipDesired(KUBE_SOURCE, vip, advert))

        def synced() -> None:
            post(self.inbox, SourceSynced(KUBE_SOURCE))
            process_settings.trim_c_heap()

        return start_kubernetes(
            self.config,
            configuration,
            publish,
            synced,
            self.metrics,
            self.cluster_status,
            self._kubernetes_routes_busy,
            self.ipam_status,
        )

    def _kubernetes_routes_busy(self) -> bool:
        """Status writes wait (see ``kube.ClusterWriter._flush_status``) until the cluster's
        routes are out: its first full state reached the reconciler and nothing is left
        to bind. Before that sync the writer would compete for the CPU with the cluster
        thread's first pass, which is on the critical path of a cold start."""
        status = self.reconciler_status.read()
        return KUBE_SOURCE not in status.synced_sources or status.bind_backlog > 0

    def _kube_configuration(self) -> Configuration | None:
        """The cluster credentials, loaded once; each kube thread gets its own client."""
        if not self.config.kubernetes.enabled:
            return None
        from kvip_bgp.kube.client import KubeConfigError, load_configuration

        try:
            return load_configuration(self.config.kubernetes.kubeconfig)
        except KubeConfigError as error:
            raise StartupError(str(error)) from error

    def _node_labels(self, configuration: Configuration | None) -> dict[str, str] | None:
        """This node's labels, needed only when a peer has a node_selector."""
        if not any(p.node_selector for p in self.config.bgp.peers):
            return None
        if configuration is None:
            raise StartupError(
                "bgp.peers[].node_selector needs kubernetes.enabled: true (labels come from "
                "this node's Node object)"
            )
        from kvip_bgp.kube.client import KubeError, new_api_client, node_labels

        with new_api_client(configuration) as api:
            try:
                return node_labels(api, self.config.node_name)
            except KubeError as error:
                raise StartupError(str(error)) from error


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvip-bgp")
    except PackageNotFoundError:
        return "unknown"
