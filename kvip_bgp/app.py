"""The one place that builds and wires everything, and the main thread's supervision loop.

Start order (each step only depends on the ones before it): the runtime directory's lock
(held for the process's life) and ExaBGP config → the API socket and the exabgp reader
thread → ExaBGP → the reconciler thread → the sources (static VIPs; the cluster-state
thread and its stream threads) → the HTTP thread. The main thread then only waits for
signals, restarts ExaBGP when it dies and reloads the config file (SIGHUP or a change on
disk, see ``live``). The kube adapter (with ``kubernetes``) is imported only with
kubernetes.enabled, once ExaBGP runs (before, if a peer's node_selector needs the labels).

Shutdown (SIGTERM/SIGINT) runs in reverse within ``shutdown_timeout``: the reconciler
withdraws every route, waits for ExaBGP's acks and removes the addresses it bound; then
ExaBGP stops. The peer sees withdrawals, not a hold-timer expiry.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from kvip_bgp import installed_version, rundir
from kvip_bgp import process as process_settings
from kvip_bgp.bgp.config import render_config
from kvip_bgp.bgp.speaker import Speaker, start_speaker
from kvip_bgp.configfile.watch import Loaded
from kvip_bgp.domain.config import Config, Peer, StaticVip
from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.live import Children, Reloader, node_config, peers_for_node, sources_of, static_source
from kvip_bgp.ops.http import StatusServer
from kvip_bgp.runtime.allocation import AllocationStatus
from kvip_bgp.runtime.cluster import SOURCE as KUBE_SOURCE
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import Inbox, SourceSynced, Stop, VipDesired, post
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.reload import ReloadStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue

if TYPE_CHECKING:  # imported only where used: kubernetes.enabled, bfd, a static VIP
    from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor
    from kvip_bgp.kube.client import Configuration
    from kvip_bgp.kube.threads import KubernetesThreads
    from kvip_bgp.runtime.static import StaticVipWatcher

log = structlog.get_logger("kvip_bgp.app")


class StartupError(Exception):
    """Something the operator must fix before the daemon can run; the message says what."""


class Daemon:
    def __init__(
        self,
        config: Config,
        runtime_dir: Path = rundir.DEFAULT_RUNTIME_DIR,
        digest: str = "",
    ) -> None:
        self.config = config
        self._digest = digest  # of the file ``config`` was read from (cli: configfile.watch)
        self.reload_status: Snapshot[ReloadStatus] = Snapshot(ReloadStatus(digest))
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
        self._reload_requested = False
        # The threads /healthz checks: republished when a reload adds or ends a watcher.
        self._threads: Snapshot[tuple[threading.Thread, ...]] = Snapshot(())

    def _on_signal(self, signum: int) -> None:
        self._signal = signum
        self._stop.set()

    def _on_reload_signal(self) -> None:
        self._reload_requested = True

    # -- main -------------------------------------------------------------------------

    def run(self) -> int:
        """The whole life of the daemon, holding the runtime directory's lock throughout."""
        config = self.config
        process_settings.configure()
        process_settings.on_stop_signals(self._on_signal)
        process_settings.on_reload_signal(self._on_reload_signal)
        self.metrics.build_info.info({"version": installed_version()})
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
        # ExaBGP first when its peers do not depend on this node's labels: its start and
        # the sessions (~0.2 s) overlap with importing and loading the kube client.
        speaker = None
        if config.output == "exabgp" and not any(p.node_selector for p in config.bgp.peers):
            speaker = self._start_exabgp(peers_for_node(config, None))
        try:
            kube_configuration = self._kube_configuration()
            labels = self._node_labels(kube_configuration)
        except StartupError:
            if speaker is not None:
                speaker.stop(5.0)
            raise
        peers = peers_for_node(config, labels)
        if config.output == "exabgp" and not peers:
            raise StartupError(
                "no bgp.peers match this node's labels (node_selector); nothing to peer with"
            )
        from kvip_bgp.bgp.announcer import ExabgpAnnouncer
        from kvip_bgp.netif.addresses import AddressTable, FamilyTable, LocalRouteTable
        from kvip_bgp.netif.announcer import KernelTableAnnouncer
        from kvip_bgp.netif.netlink import InterfaceError
        from kvip_bgp.netif.routes import RouteTable
        from kvip_bgp.runtime.announcer import Announcer

        kernel_routes = None
        if config.output == "kernel-table":
            kernel_routes = RouteTable(config.kernel_table.table, config.kernel_table.protocol)
        elif speaker is None:
            speaker = self._start_exabgp(peers)

        bfd = None
        if speaker is not None and any(peer.bfd is not None for peer in peers):
            bfd = self._start_bfd(peers)

        addresses = None
        if config.vips.interface is not None:
            try:
                table = {
                    "address": AddressTable,
                    "local-route": LocalRouteTable,
                    "by-family": FamilyTable,
                }[config.vips.bind]
                addresses = table(config.vips.interface)
            except InterfaceError as error:
                if bfd is not None:
                    bfd.stop(2.0)
                if speaker is not None:
                    speaker.stop(5.0)
                raise StartupError(str(error)) from error

        announcer: Announcer = (
            KernelTableAnnouncer(kernel_routes)
            if kernel_routes is not None
            else ExabgpAnnouncer(node_config(config, peers), self.metrics)
        )
        reconciler = Reconciler(
            self.inbox,
            addresses,
            announcer,
            self.metrics,
            self.reconciler_status,
            sources_of(config, KUBE_SOURCE),
            unbind_delay=config.vips.unbind_delay,
        )
        reconciler_thread = threading.Thread(target=reconciler.run, name="reconciler")
        reconciler_thread.start()

        watchers = {v.address: self._new_static(v, config.advertise) for v in config.static}
        kubernetes = self._start_kubernetes(kube_configuration)
        # Published whole, before the HTTP thread exists, and again after a reload:
        # /healthz reads it from that thread and never sees a half-filled collection.
        fixed: tuple[threading.Thread, ...] = (
            reconciler_thread,
            *((speaker.reader,) if speaker is not None else ()),
            *(kubernetes.all() if kubernetes is not None else ()),
        )
        self._threads.publish((*fixed, *watchers.values()))
        children = Children(
            self.inbox,
            KUBE_SOURCE,
            exabgp=speaker.supervisor if speaker is not None else None,
            exabgp_config=self.paths.exabgp_config,
            api_socket=self.paths.api_socket,
            bfd=bfd,
            new_bfd=self._start_bfd if speaker is not None else None,
            cluster_events=kubernetes.events if kubernetes is not None else None,
            new_pools=kubernetes.new_pools if kubernetes is not None else None,
            statics=watchers,
            new_static=self._new_static,
        )
        http_server = None
        if config.http.listen is not None:
            http_server = StatusServer(
                config.http.listen,
                self.metrics,
                self.reconciler_status,
                self.cluster_status,
                self.exabgp_running if speaker is not None else None,
                lambda: all(t.is_alive() for t in self._threads.read()),
                kubernetes.explain if kubernetes is not None else None,
                # With output: kernel-table the host's routing daemon owns the sessions.
                needs_peer=speaker is not None,
                ipam=self.ipam_status if kubernetes is not None else None,
                reload=self.reload_status,
            )
            http_server.start()

        reloader = None
        if config.source is not None:
            loaded = Loaded(config, self._digest)
            reloader = Reloader(
                config.source,
                loaded,
                labels,
                children,
                self.metrics,
                self.reload_status,
                (lambda: self.cluster_status.read().node) if kubernetes is not None else None,
            )
        if kubernetes is None:  # else through the first sync: see process.pause_gc
            process_settings.resume_gc()
        exit_code = self._supervise(children, reloader, reconciler_thread, fixed)
        bfd = children.bfd

        # -- shutdown, in reverse order --------------------------------------------------
        deadline = time.monotonic() + self.config.shutdown_timeout
        log.info("app.stopping", signal=self._signal, timeout=self.config.shutdown_timeout)
        if kubernetes is not None:
            kubernetes.stop()
        # Leave ExaBGP a little time of the budget to be stopped.
        post(self.inbox, Stop(deadline=deadline - min(2.0, self.config.shutdown_timeout / 4)))
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
        return start_speaker(
            self.paths.exabgp_config,
            self.paths.api_socket,
            lambda m: post(self.inbox, m),
            self.exabgp_running,
            self._session_came_up_since,
            self.metrics.exabgp_restarts.inc,
        )

    def _session_came_up_since(self, wall_time: float) -> bool:
        return any(
            p.state == "up" and p.since >= wall_time for p in self.reconciler_status.read().peers
        )

    def _supervise(
        self,
        children: Children,
        reloader: Reloader | None,
        reconciler: threading.Thread,
        fixed: tuple[threading.Thread, ...],
    ) -> int:
        """Until a signal: restart a dead ExaBGP or BFD, fail with the reconciler, reload."""
        resume_by = time.monotonic() + process_settings.GC_PAUSE_LIMIT
        while not self._stop.wait(0.25):
            process_settings.resume_gc_once(self._kubernetes_routes_busy, resume_by)
            if not reconciler.is_alive():
                log.error("app.reconciler_died")
                self._stop.set()
                return 1
            if reloader is not None:
                if self._reload_requested:
                    self._reload_requested = False
                    reloader.request()
                reloader.tick(time.monotonic())
                self.config = reloader.config
                self._threads.publish((*fixed, *children.statics.values()))
            if children.exabgp is not None:
                children.exabgp.tick(time.monotonic())
            if children.bfd is not None:
                children.bfd.tick(time.monotonic())
        return 0

    def _start_bfd(self, peers: tuple[Peer, ...]) -> BfdSupervisor:
        from kvip_bgp.bgp.bfd.supervisor import BfdSupervisor

        bfd = BfdSupervisor(peers, lambda m: post(self.inbox, m), self.metrics)
        bfd.start()
        return bfd

    # -- sources ----------------------------------------------------------------------

    def _new_static(self, vip: StaticVip, defaults: RouteAttributes) -> StaticVipWatcher:
        """A started watcher thread for one static VIP, its own source for the reconciler.

        A watcher reports its first check result before the reconciler may withdraw
        anything, so a restart never withdraws a healthy static VIP on an empty state.
        Imported here: a daemon without static VIPs (the DaemonSet's) never loads it.
        """
        from kvip_bgp.runtime.static import StaticVipWatcher

        def publish(address: IPAddress, advert: Advertisement | None) -> None:
            post(self.inbox, VipDesired(static_source(address), address, advert))

        def reported(address: IPAddress) -> None:
            post(self.inbox, SourceSynced(static_source(address)))

        watcher = StaticVipWatcher(vip, defaults, publish, self.metrics, self._stop, reported)
        watcher.start()
        return watcher

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

    def _kubernetes_routes_busy(self) -> bool:  # what the status writes and the GC wait for
        return self.reconciler_status.read().routes_busy(KUBE_SOURCE)

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
