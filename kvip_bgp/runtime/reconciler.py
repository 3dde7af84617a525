"""The reconciler thread: the one place where routes and addresses change.

It is the sole owner of what is announced, what is bound, the netlink socket, the pipe
to ExaBGP and the retry timers. Everything else talks to it through its coalescing inbox.

It is level-triggered: each pass compares the full desired set (merged from every
source: Kubernetes, static VIPs) with what it has applied, and sends only the difference.
A coalesced or lost message can therefore never leave a stale route. Two safety rules:
- nothing is withdrawn or unbound until every source has delivered its first full state
  (an empty cache at startup must not look like "withdraw everything"); what a source
  publishes before that is final and announced at once;
- an address is bound before its route is announced and unbound after it is withdrawn.

Binding and announcing are pipelined: a pass binds at most ``BIND_CHUNK`` new addresses
and announces what is bound, and the next pass follows at once. ExaBGP, a process of its
own, encodes and sends one chunk while this thread binds the next, so a cold start with
10,000 VIPs no longer waits for every address before the first route goes out.
End-of-RIB waits for the last chunk (a graceful-restart peer drops stale routes on it).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from kvip_bgp.bgp.api import ApiWriter
from kvip_bgp.bgp.commands import (
    Command,
    NextHopPolicy,
    announce_commands,
    end_of_rib_commands,
    withdraw_commands,
)
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, BindResult, IPAddress, address_order, host_prefix
from kvip_bgp.domain.policy import merge_sources
from kvip_bgp.runtime.messages import (
    ApiConnected,
    ApiDisconnected,
    CommandAck,
    ExabgpShutdown,
    Inbox,
    Message,
    PeerState,
    SourceSynced,
    Stop,
    VipDesired,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot

log = structlog.get_logger("kvip_bgp.reconciler")

RESYNC_INTERVAL: Final = 30.0
# Re-reading every address on the interface costs ~1.5 s of CPU at 10,000 VIPs: repair
# addresses changed behind our back every 5 minutes, not on every resync.
ADDRESS_REPAIR_INTERVAL: Final = 300.0
DETAILED_LOG_LIMIT: Final = 20
BIND_CHUNK: Final = 1000
# ExaBGP acks a command once parsed, not once its UPDATE is on the wire, and its API has
# nothing that reports the send. Stopped too soon after the acks, it closes the session
# silently (graceful restart) and the peer keeps our withdrawn routes as stale for the
# restart time. Its reactor sends parsed changes within a few turns; without this wait
# the lab saw it once, on a machine loaded by two other labs (not reproduced on demand).
WITHDRAW_FLUSH_GRACE: Final = 1.0
MAX_BACKOFF: Final = 30.0


class RouteInstaller(Protocol):
    """What the reconciler needs from ``netif.RouteTable`` (``output: kernel-table``)."""

    def routes(self) -> set[IPAddress]: ...
    def install(self, vip: IPAddress) -> bool: ...
    def remove(self, vip: IPAddress) -> None: ...


class AddressBinder(Protocol):
    """What the reconciler needs from ``netif.AddressTable`` (a fake in unit tests)."""

    def owned(self) -> set[IPAddress]: ...
    def bind_many(self, vips: Iterable[IPAddress]) -> BindResult: ...
    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]: ...


@dataclass(frozen=True)
class PeerView:
    address: str
    state: str
    since: float
    reason: str | None


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


@dataclass
class _State:
    """Mutable state owned by the reconciler thread alone (never handed out)."""

    desired: dict[str, dict[IPAddress, Advertisement]] = field(default_factory=dict)
    synced: set[str] = field(default_factory=set)
    applied: dict[IPAddress, Advertisement] = field(default_factory=dict)
    maybe_present: set[IPAddress] = field(default_factory=set)
    bound: set[IPAddress] = field(default_factory=set)
    # Binds that failed: announced anyway, retried at the next resync (not every pass).
    bind_failed: set[IPAddress] = field(default_factory=set)
    # New addresses left for the next pass (BIND_CHUNK): that pass comes at once.
    bind_backlog: int = 0
    in_flight: deque[Command] = field(default_factory=deque)
    peers: dict[str, PeerView] = field(default_factory=dict)
    writer: ApiWriter | None = None
    eor_pending: set[str] = field(default_factory=set)
    announced_ever: set[IPAddress] = field(default_factory=set)
    # Withdrawn since the last resync: withdrawn once more at the resync (see _reconcile).
    recently_withdrawn: set[IPAddress] = field(default_factory=set)
    retry_at: float = 0.0
    backoff: float = 0.5
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stop: Stop | None = None


class Reconciler:
    def __init__(
        self,
        config: Config,
        inbox: Inbox,
        addresses: AddressBinder | None,
        metrics: Metrics,
        status: Snapshot[ReconcilerStatus],
        sources: tuple[str, ...],
        kernel_routes: RouteInstaller | None = None,
    ) -> None:
        self._kernel_routes = kernel_routes
        self._config = config
        self._inbox = inbox
        self._addresses = addresses
        self._metrics = metrics
        self._status = status
        self._sources = sources
        self._next_hops = NextHopPolicy(config.bgp.peers)
        self._s = _State()
        self._last_resync = 0.0
        self._last_repair = time.monotonic()

    # -- thread body ---------------------------------------------------------------

    def run(self) -> None:
        """Loop until a Stop has been carried out. Runs in the reconciler thread."""
        s = self._s
        if self._addresses is not None:
            s.bound = self._addresses.owned()
            if s.bound:
                log.info(
                    "reconciler.adopted_addresses",
                    count=len(s.bound),
                    vips=sorted(map(str, s.bound))[:20],
                )
        if self._kernel_routes is not None:
            # Routes of an earlier run: kept until every source synced, then reconciled.
            s.maybe_present = self._kernel_routes.routes()
        for peer, family in self._next_hops.unreachable():
            missing = "next_hop_v6" if family == 6 else "next_hop_v4"
            log.warning(
                "reconciler.peer_without_next_hop",
                peer=str(peer.address),
                reason=f"IPv{peer.address.version} session without {missing}: "
                f"IPv{family} VIPs are not sent to it",
            )
        while True:
            timeout = self._timeout()
            batch = self._inbox.drain(timeout)
            started = time.perf_counter()
            for _key, message in batch:
                self._handle(message)
            if s.stop is not None:
                self._shutdown(s.stop)
                return
            self._reconcile()
            self._metrics.reconcile_seconds.observe(time.perf_counter() - started)
            self._metrics.queue_depth.set(self._inbox.depth())
            self._metrics.queue_coalesced.set(self._inbox.coalesced())
            self._publish()

    def _timeout(self) -> float:
        if self._s.bind_backlog:
            return 0.0
        now = time.monotonic()
        wait = RESYNC_INTERVAL - (now - self._last_resync)
        if self._s.retry_at > now:
            wait = min(wait, self._s.retry_at - now)
        return max(0.01, wait)

    # -- messages ------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        s = self._s
        if isinstance(message, VipDesired):
            table = s.desired.setdefault(message.source, {})
            if message.advert is None:
                table.pop(message.vip, None)
            else:
                table[message.vip] = message.advert
        elif isinstance(message, SourceSynced):
            if message.source not in s.synced:
                s.synced.add(message.source)
                log.info("reconciler.source_synced", source=message.source)
        elif isinstance(message, Stop):
            s.stop = message
        elif isinstance(message, ApiConnected):
            self._connected(message)
        elif isinstance(message, ApiDisconnected):
            if s.writer is not None and s.writer.generation == message.generation:
                self._drop_writer("relay disconnected")
        elif isinstance(message, CommandAck):
            self._ack(message)
        elif isinstance(message, PeerState):
            self._peer_state(message)
        elif isinstance(message, ExabgpShutdown):
            log.info("reconciler.exabgp_shutdown", generation=message.generation)

    def _connected(self, message: ApiConnected) -> None:
        s = self._s
        if s.writer is not None:
            s.writer.close()
        s.writer = ApiWriter(message.fd, message.generation)
        s.in_flight.clear()
        s.eor_pending.clear()
        # Whatever we told the previous ExaBGP (or relay) may still be there: re-announce
        # every desired route and withdraw anything else we had sent.
        s.maybe_present |= set(s.applied)
        s.applied.clear()
        s.retry_at = 0.0
        for view in s.peers.values():
            self._metrics.session_up.labels(view.address).set(0)
        s.peers.clear()
        log.info(
            "reconciler.exabgp_connected",
            generation=message.generation,
            resending=len(s.maybe_present),
        )

    def _drop_writer(self, why: str) -> None:
        s = self._s
        if s.writer is not None:
            s.writer.close()
        s.writer = None
        s.in_flight.clear()
        s.maybe_present |= set(s.applied)
        s.applied.clear()
        log.warning("reconciler.exabgp_unreachable", reason=why)

    def _ack(self, ack: CommandAck) -> None:
        s = self._s
        if s.writer is None or ack.generation != s.writer.generation:
            return
        if not s.in_flight:
            log.warning("reconciler.unexpected_ack", index=ack.index)
            return
        command = s.in_flight.popleft()
        if ack.ok:
            s.backoff = 0.5
            return
        self._metrics.command_errors.inc()
        text = command.text if len(command.text) < 300 else command.text[:300] + "..."
        s.errors.append(f"exabgp error: {text}")
        log.error("reconciler.command_error", command=text, retry_in=s.backoff)
        for advert in command.announced:
            if s.applied.get(advert.vip) == advert:
                del s.applied[advert.vip]
        for prefix in command.withdrawn:
            s.maybe_present.add(prefix.network_address)
        s.retry_at = time.monotonic() + s.backoff
        s.backoff = min(MAX_BACKOFF, s.backoff * 2)

    def _peer_state(self, message: PeerState) -> None:
        s = self._s
        previous = s.peers.get(message.peer)
        if previous is None or previous.state != message.state:
            s.peers[message.peer] = PeerView(
                message.peer, message.state, message.at, message.reason
            )
            if message.state == "up":
                # ExaBGP re-sends its RIB to a fresh session; we close it with End-of-RIB
                # once every desired route is in (manual-eor: hitless restarts).
                s.eor_pending.add(message.peer)
                # ExaBGP 5.0.15 also replays to the new session routes that were
                # announced and then withdrawn while it was down: withdraw, before the
                # End-of-RIB, everything we ever announced that is not applied now.
                s.maybe_present |= s.announced_ever - set(s.applied)
            else:
                s.eor_pending.discard(message.peer)
            log.info(
                "reconciler.peer_state",
                peer=message.peer,
                state=message.state,
                reason=message.reason,
            )
        self._metrics.session_up.labels(message.peer).set(1 if message.state == "up" else 0)

    # -- the level-triggered pass -------------------------------------------------

    def _all_synced(self) -> bool:
        return all(source in self._s.synced for source in self._sources)

    def _effective(self) -> dict[IPAddress, Advertisement]:
        """What every source desires, synced or not.

        A source publishes only final values, also before its sync (the cluster's first
        pass publishes a VIP once every Service naming it is decided), so they can be
        bound and announced at once; the sync only gates withdrawing and unbinding what
        no source has claimed yet.
        """
        return merge_sources(self._s.desired)

    def _reconcile(self) -> None:
        s = self._s
        now = time.monotonic()
        effective = self._effective()
        all_synced = self._all_synced()
        again: set[IPAddress] = set()
        if now - self._last_resync >= RESYNC_INTERVAL:
            self._last_resync = now
            s.bind_failed.clear()
            if self._kernel_routes is None:
                # Safety net. Under the stress test's churn (announce, then withdraw of the
                # same prefix a few ms later) ExaBGP 5.0.15 acked and logged both in order,
                # yet FRR kept a few of those prefixes; the cause inside ExaBGP is not
                # found. A second withdraw of a prefix that is gone is a no-op for the
                # peer, so what was withdrawn since the last resync is withdrawn again.
                again = s.recently_withdrawn - set(s.applied)
                s.maybe_present |= again
            s.recently_withdrawn = set()
            if self._addresses is not None and now - self._last_repair >= ADDRESS_REPAIR_INTERVAL:
                # Repair anything changed behind our back (an address deleted by hand).
                self._last_repair = now
                s.bound = self._addresses.owned()

        # Not yet bound (next pass): not announced yet, but not withdrawn either.
        deferred = self._bind(effective)
        if self._kernel_routes is not None:
            self._install_kernel_routes(effective, deferred, all_synced)
        elif s.writer is not None and now >= s.retry_at:
            withdraw = {v for v in s.applied if v not in effective}
            if all_synced:
                withdraw |= {v for v in s.maybe_present if v not in effective}
            announce = [
                a for v, a in effective.items() if s.applied.get(v) != a and v not in deferred
            ]
            self._send_routes(announce, withdraw, all_synced and not deferred)
            s.recently_withdrawn -= again  # once more is enough
        if all_synced:
            # Unbind only what is no longer desired and no longer announced anywhere.
            self._unbind(s.bound - set(effective) - set(s.applied))

    def _install_kernel_routes(
        self,
        effective: dict[IPAddress, Advertisement],
        deferred: set[IPAddress],
        all_synced: bool,
    ) -> None:
        """``output: kernel-table``: one host route per VIP; the host's FRR/BIRD exports it.

        BGP attributes cannot travel in a kernel route; the host routing daemon's export
        policy sets them. Only routes carrying our protocol number are ever removed.
        """
        s = self._s
        routes = self._kernel_routes
        assert routes is not None
        remove = {v for v in s.applied if v not in effective}
        if all_synced:
            remove |= {v for v in s.maybe_present if v not in effective}
        for vip in sorted(remove, key=address_order):
            try:
                routes.remove(vip)
                log.info("reconciler.route_removed", vip=str(vip))
            except OSError as error:
                s.errors.append(f"remove route {vip}: {error}")
                log.error("reconciler.route_remove_failed", vip=str(vip), error=str(error))
                continue
            s.applied.pop(vip, None)
            s.maybe_present.discard(vip)
        for vip, advert in sorted(effective.items(), key=lambda i: address_order(i[0])):
            if vip in deferred:
                continue
            if vip in s.applied:
                s.applied[vip] = advert
                continue
            try:
                if routes.install(vip):
                    log.info(
                        "reconciler.route_installed", vip=str(vip), services=list(advert.sources)
                    )
                else:
                    log.warning(
                        "reconciler.foreign_route",
                        vip=str(vip),
                        reason="a route of another protocol exists: left alone",
                    )
            except OSError as error:
                s.errors.append(f"install route {vip}: {error}")
                log.error("reconciler.route_install_failed", vip=str(vip), error=str(error))
                continue
            s.applied[vip] = advert
            s.maybe_present.discard(vip)

    def _send_routes(
        self, announce: list[Advertisement], withdraw: set[IPAddress], all_synced: bool
    ) -> None:
        s = self._s
        commands: list[Command] = []
        if withdraw:
            commands += withdraw_commands(
                [host_prefix(v) for v in withdraw],
                self._next_hops,
            )
        if announce:
            commands += announce_commands(announce, self._config.bgp.asn, self._next_hops)
        eor_peers = (
            sorted(s.eor_pending) if all_synced and self._config.bgp.graceful_restart > 0 else []
        )
        for peer in eor_peers:
            commands += end_of_rib_commands(peer)
        if not commands:
            return
        assert s.writer is not None
        try:
            s.writer.send(commands)
        except OSError as error:
            self._drop_writer(f"write failed: {error}")
            return
        s.in_flight.extend(commands)
        for vip in withdraw:
            s.applied.pop(vip, None)
            s.maybe_present.discard(vip)
        s.recently_withdrawn |= withdraw
        for advert in announce:
            s.applied[advert.vip] = advert
            s.maybe_present.discard(advert.vip)
            s.announced_ever.add(advert.vip)
        s.eor_pending.difference_update(eor_peers)
        peers = [str(p.address) for p in self._config.bgp.peers]
        for peer in peers:
            if announce:
                self._metrics.updates_sent.labels(peer, "announce").inc(len(announce))
            if withdraw:
                self._metrics.updates_sent.labels(peer, "withdraw").inc(len(withdraw))
            self._metrics.prefixes_announced.labels(peer).set(len(s.applied))
        if len(announce) + len(withdraw) <= 20:
            for advert in announce:
                log.info("reconciler.announce", vip=str(advert.vip), services=list(advert.sources))
            for vip in withdraw:
                log.info("reconciler.withdraw", vip=str(vip))
        else:
            log.info(
                "reconciler.batch",
                announced=len(announce),
                withdrawn=len(withdraw),
                commands=len(commands),
            )
        for peer in eor_peers:
            log.info("reconciler.end_of_rib", peer=peer, routes=len(s.applied))

    def _bind(self, effective: Mapping[IPAddress, Advertisement]) -> set[IPAddress]:
        """Bind up to ``BIND_CHUNK`` desired addresses; return those left for later passes.

        A failed bind is logged and the VIP announced anyway (traffic may still be
        handled, e.g. by kube-proxy); it is retried at the next resync. An address that
        exists as someone else's is announced and never unbound.
        """
        s = self._s
        if self._addresses is None:
            return set()
        pending = sorted(
            (v for v in effective if v not in s.bound and v not in s.bind_failed),
            key=address_order,
        )
        chunk, rest = pending[:BIND_CHUNK], pending[BIND_CHUNK:]
        s.bind_backlog = len(rest)
        if not chunk:
            return set()
        result = self._addresses.bind_many(chunk)
        s.bound |= result.bound | result.foreign
        if len(chunk) <= DETAILED_LOG_LIMIT:
            for vip in sorted(result.bound, key=address_order):
                log.info("reconciler.bound", vip=str(vip))
        else:
            log.info("reconciler.bound_many", count=len(result.bound), left=len(rest))
        for vip in sorted(result.foreign, key=address_order):
            log.warning(
                "reconciler.foreign_address",
                vip=str(vip),
                reason="address exists and is not ours: left alone",
            )
        for vip, error in result.failed:
            s.bind_failed.add(vip)
            s.errors.append(f"bind {vip}: {error}")
            log.error("reconciler.bind_failed", vip=str(vip), error=str(error))
        self._metrics.addresses_bound.set(len(s.bound))
        return set(rest)

    def _unbind(self, vips: set[IPAddress]) -> None:
        if self._addresses is None or not vips:
            return
        failed = self._addresses.unbind_many(vips)
        for vip, error in failed.items():
            self._s.errors.append(f"unbind {vip}: {error}")
            log.error("reconciler.unbind_failed", vip=str(vip), error=str(error))
        done = vips - set(failed)
        if len(done) <= DETAILED_LOG_LIMIT:
            for vip in done:
                log.info("reconciler.unbound", vip=str(vip))
        else:
            log.info("reconciler.unbound_many", count=len(done))
        self._s.bound -= vips
        self._metrics.addresses_bound.set(len(self._s.bound))

    # -- shutdown -------------------------------------------------------------------

    def _shutdown(self, stop: Stop) -> None:
        """Withdraw every route, wait for ExaBGP's acks, then remove our addresses."""
        s = self._s
        withdraw = sorted(set(s.applied) | s.maybe_present, key=address_order)
        log.info("reconciler.shutdown", withdrawing=len(withdraw))
        if s.writer is not None and withdraw:
            commands = withdraw_commands([host_prefix(v) for v in withdraw], self._next_hops)
            try:
                s.writer.send(commands)
                s.in_flight.extend(commands)
            except OSError as error:
                log.error("reconciler.shutdown_write_failed", error=str(error))
                s.in_flight.clear()
            while s.in_flight and time.monotonic() < stop.deadline:
                for _key, message in self._inbox.drain(max(0.01, stop.deadline - time.monotonic())):
                    if isinstance(message, CommandAck):
                        self._ack(message)
                    elif isinstance(message, ApiDisconnected):
                        s.in_flight.clear()
            if s.in_flight:
                log.warning("reconciler.shutdown_unacked", commands=len(s.in_flight))
            else:
                # Addresses stay bound meanwhile: traffic may arrive until peers converge.
                time.sleep(max(0.0, min(WITHDRAW_FLUSH_GRACE, stop.deadline - time.monotonic())))
        if self._kernel_routes is not None:
            for vip in self._kernel_routes.routes():
                try:
                    self._kernel_routes.remove(vip)
                except OSError as error:
                    log.error("reconciler.route_remove_failed", vip=str(vip), error=str(error))
        s.applied.clear()
        s.maybe_present.clear()
        if self._addresses is not None:
            self._unbind(set(self._addresses.owned()))
        if s.writer is not None:
            s.writer.close()
            s.writer = None
        self._publish(stopped=True)
        log.info("reconciler.stopped")

    def _publish(self, stopped: bool = False) -> None:
        s = self._s
        self._status.publish(
            ReconcilerStatus(
                # Unsorted: the readers sort; this runs after every pass.
                announced=tuple(s.applied.values()),
                bound=tuple(s.bound),
                peers=tuple(sorted(s.peers.values(), key=lambda p: p.address)),
                synced_sources=tuple(sorted(s.synced)),
                all_synced=self._all_synced(),
                exabgp_connected=s.writer is not None,
                last_errors=tuple(s.errors),
                updated_at=time.time(),
                stopped=stopped,
                bind_backlog=s.bind_backlog,
            )
        )


def desired_from_static(config: Config) -> Mapping[IPAddress, Advertisement]:
    """Static VIPs without a health check: always wanted, with the default attributes."""
    return {
        vip.address: Advertisement(vip.address, config.advertise, (f"static:{vip.address}",))
        for vip in config.static
    }
