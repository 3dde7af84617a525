"""The reconciler thread: the one place where routes and addresses change.

It is the sole owner of what is bound, of the announcer (what is announced, the pipe to
ExaBGP or the kernel table, the retry timers) and of the netlink sockets. Everything else
talks to it through its coalescing inbox.

It is level-triggered: each pass compares the full desired set (merged from every
source: Kubernetes, static VIPs) with what it has applied, and the announcer sends only
the difference. A coalesced or lost message can therefore never leave a stale route.
Between two periodic resyncs, which look at everything, binding, unbinding and the
announcer's difference look only at the VIPs whose merged value changed
(``runtime.desired``, ``bgp.difference``).
Two safety rules:
- nothing is withdrawn or unbound until every source has delivered its first full state
  (an empty cache at startup must not look like "withdraw everything"); what a source
  publishes before that is final and announced at once;
- an address is bound before its route is announced, and unbound only once the routing
  daemon has acknowledged the withdrawal and ``unbind_delay`` has passed since: the
  peers need that long to move the traffic away (their FIB follows the UPDATE), and
  until then the node must keep accepting what they still send it.

Binding and announcing are pipelined: a pass binds at most ``BIND_CHUNK`` new addresses
and announces what is bound, and the next pass follows at once. ExaBGP, a process of its
own, encodes and sends one chunk while this thread binds the next, so a cold start does
not wait for every address before the first route goes out. End-of-RIB waits for the
last chunk (a graceful-restart peer drops stale routes on it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Set
from typing import Final, assert_never

import structlog

from kvip_bgp.domain.model import Advertisement, IPAddress, address_order
from kvip_bgp.runtime.announcer import Announcer, PeerView
from kvip_bgp.runtime.messages import (
    ApiConnected,
    ApiDisconnected,
    BfdState,
    CommandAck,
    ConfigChanged,
    ExabgpShutdown,
    Inbox,
    Message,
    PeerState,
    SourceSynced,
    Stop,
    VipDesired,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.pace import Pace
from kvip_bgp.runtime.reconciler_state import AddressBinder as AddressBinder
from kvip_bgp.runtime.reconciler_state import ReconcilerState
from kvip_bgp.runtime.reconciler_status import CHEAP_STATUS as CHEAP_STATUS
from kvip_bgp.runtime.reconciler_status import STATUS_INTERVAL as STATUS_INTERVAL
from kvip_bgp.runtime.reconciler_status import ReconcilerStatus as ReconcilerStatus
from kvip_bgp.runtime.reconciler_status import publish_status
from kvip_bgp.runtime.snapshot import Snapshot

__all__ = ["BIND_CHUNK", "RESYNC_INTERVAL", "AddressBinder", "PeerView", "Reconciler"]

log = structlog.get_logger("kvip_bgp.reconciler")

RESYNC_INTERVAL: Final = 30.0
# Re-reading every address on the interface is expensive with many VIPs: repair
# addresses changed behind our back every 5 minutes, not on every resync.
ADDRESS_REPAIR_INTERVAL: Final = 300.0
DETAILED_LOG_LIMIT: Final = 20
BIND_CHUNK: Final = 1000
PASS_GAP: Final = 0.02  # seconds from the end of a pass to the next one, at least


class Reconciler:
    def __init__(
        self,
        inbox: Inbox,
        addresses: AddressBinder | None,
        announcer: Announcer,
        metrics: Metrics,
        status: Snapshot[ReconcilerStatus],
        sources: tuple[str, ...],
        *,
        unbind_delay: float = 0.0,
    ) -> None:
        self._inbox = inbox
        self._unbind_delay = unbind_delay
        self._addresses = addresses
        self._announcer = announcer
        self._metrics = metrics
        self._status = status
        self._sources = sources
        self._s = ReconcilerState()

    # -- thread body ---------------------------------------------------------------

    def run(self) -> None:
        """Loop until a Stop has been carried out. Runs in the reconciler thread."""
        self.start(time.monotonic())
        pace = Pace(PASS_GAP)
        while True:
            # A stream of messages (a burst, churn, the acks) gathers after a pass that
            # took some (runtime.pace): not after a timer's pass (a lone change must not
            # wait for it), nor between the chunks of a cold start's binds.
            gap = pace.wait(time.monotonic())
            if gap > 0 and not self._s.bind_backlog:
                time.sleep(gap)
            batch = self._inbox.drain(self.timeout(time.monotonic()))
            messages = [message for _key, message in batch]
            if not self.step(messages, time.monotonic()):
                return
            if messages:
                pace.took(time.monotonic(), sum(isinstance(m, VipDesired) for m in messages))

    def start(self, now: float) -> None:
        """Adopt the addresses and routes an earlier run left (before the first step)."""
        s = self._s
        s.last_repair = now
        if self._addresses is not None:
            s.bound = self._addresses.owned()
            s.bound_changed = True
            if s.bound:
                log.info(
                    "reconciler.adopted_addresses",
                    count=len(s.bound),
                    vips=sorted(map(str, s.bound))[:20],
                )
        self._announcer.start()
        self._collect_errors()

    def step(self, messages: Iterable[Message], now: float) -> bool:
        """One pass: take ``messages``, reconcile at time ``now``. False once stopped."""
        s = self._s
        started = time.perf_counter()
        self._take(messages, now)
        if s.stop is not None:
            self._shutdown(s.stop)
            return False
        self._reconcile(now)
        self._metrics.reconcile_seconds.observe(time.perf_counter() - started)
        self._metrics.queue_depth.set(self._inbox.depth())
        self._metrics.queue_coalesced.set(self._inbox.coalesced())
        self._publish(now)
        return True

    def timeout(self, now: float) -> float:
        """How long the next drain may wait: until the next resync or retry."""
        s = self._s
        if s.bind_backlog:
            return 0.0
        wait = 0.0 if s.last_resync is None else RESYNC_INTERVAL - (now - s.last_resync)
        retry_at = self._announcer.wake_at()
        if retry_at is not None and retry_at > now:
            wait = min(wait, retry_at - now)
        if s.unbind_at:
            wait = min(wait, min(s.unbind_at.values()) - now)
        if s.views_stale:
            wait = min(wait, s.views_at + STATUS_INTERVAL - now)
        return max(0.01, wait)

    # -- messages ------------------------------------------------------------------

    def _take(self, messages: Iterable[Message], now: float) -> None:
        """Handle ``messages`` in order, each run of one source's ``VipDesired`` at once.

        Why: a pass of a burst or a cold start takes tens to thousands of them; one
        ``put_many`` per run costs a fraction of a ``put`` and a dispatch each (see
        ``DesiredRoutes.put_many``). A run ends at any other message, so everything
        happens in the order it came (a reload that retires a source, say).
        """
        run: list[VipDesired] = []
        for message in messages:
            if isinstance(message, VipDesired):
                if run and run[0].source != message.source:
                    self._desire(run)
                    run = []
                run.append(message)
                continue
            if run:
                self._desire(run)
                run = []
            self._handle(message, now)
        if run:
            self._desire(run)

    def _desire(self, run: list[VipDesired]) -> None:
        """Take a run of ``VipDesired`` of one source (see ``_take``)."""
        source = run[0].source
        if source not in self._s.retired:
            self._s.desired.put_many(source, [(m.vip, m.advert) for m in run])

    def _handle(self, message: Message, now: float) -> None:
        s = self._s
        match message:
            case VipDesired():
                self._desire([message])  # ``_take`` hands runs of them to it directly
            case SourceSynced() if message.source in s.retired:
                pass
            case SourceSynced():
                if message.source not in s.synced:
                    s.synced.add(message.source)
                    log.info("reconciler.source_synced", source=message.source)
            case Stop():
                s.stop = message
            case BfdState():
                s.bfd[message.peer] = message
            case ConfigChanged():
                self._reconfigure(message)
            case ApiConnected() | ApiDisconnected() | CommandAck() | PeerState() | ExabgpShutdown():
                self._announcer.handle(message, now)
                self._collect_errors()
            case _:
                assert_never(message)

    def _reconfigure(self, change: ConfigChanged) -> None:
        """A reload: forget removed sources and peers; the next pass applies the rest
        (level-triggered, so only routes whose desired value changed are sent)."""
        s = self._s
        gone = set(self._sources) - set(change.sources)
        for source in gone:
            s.desired.drop_source(source)
            s.synced.discard(source)
        s.retired = (s.retired | gone) - set(change.sources)
        self._sources = change.sources
        self._unbind_delay = change.config.vips.unbind_delay
        peers = {str(peer.address) for peer in change.config.bgp.peers if peer.bfd is not None}
        s.bfd = {peer: state for peer, state in s.bfd.items() if peer in peers}
        self._announcer.reconfigure(change.config, change.routes_left)
        self._collect_errors()
        log.info(
            "reconciler.reconfigured",
            sources_removed=sorted(gone),
            peers=[str(peer.address) for peer in change.config.bgp.peers],
        )

    def _collect_errors(self) -> None:
        self._s.errors.extend(self._announcer.take_errors())

    # -- the level-triggered pass -------------------------------------------------

    def _all_synced(self) -> bool:
        return all(source in self._s.synced for source in self._sources)

    def _reconcile(self, now: float) -> None:
        """One pass over what every source desires, synced or not.

        A source publishes only final values, also before its sync (the cluster's first
        pass publishes a VIP once every Service naming it is decided), so they can be
        bound and announced at once; the sync only gates withdrawing and unbinding what
        no source has claimed yet.
        """
        s = self._s
        all_synced = self._all_synced()
        everything = s.last_resync is None or now - s.last_resync >= RESYNC_INTERVAL
        if everything:
            s.last_resync = now
            s.bind_failed.clear()
            s.desired.rebuild()
            self._announcer.resync()
            if self._addresses is not None and now - s.last_repair >= ADDRESS_REPAIR_INTERVAL:
                # Repair anything changed behind our back (an address deleted by hand).
                s.last_repair = now
                s.bound = self._addresses.owned()
                s.bound_changed = True
        effective = s.desired.effective
        changed = s.desired.take_changed()
        if everything:
            s.undesired_bound = s.bound - effective.keys()
        elif changed:
            # Set operations: no ``ipaddress`` hash per VIP (they reuse the stored ones).
            absent = changed.difference(effective)
            s.undesired_bound -= changed - absent
            s.undesired_bound |= absent & s.bound

        # Not yet bound (next pass): not announced yet, but not withdrawn either.
        deferred = self._bind(effective, None if everything else changed)
        self._announcer.set(effective, deferred, all_synced, now, None if everything else changed)
        self._collect_errors()
        if all_synced:
            self._unbind(self._due_unbinds(effective, now))

    def _due_unbinds(
        self, effective: Mapping[IPAddress, Advertisement], now: float
    ) -> set[IPAddress]:
        """What may be unbound now: not desired, not announced, its withdrawal acknowledged
        at least ``unbind_delay`` ago. A VIP desired again meanwhile keeps its address."""
        s = self._s
        announced = self._announcer.announced()
        s.undesired_bound = {v for v in s.undesired_bound if v in s.bound and v not in effective}
        gone = {v for v in s.undesired_bound if v not in announced}
        for vip in set(s.unbind_at) - gone:
            del s.unbind_at[vip]
        if not gone:
            return set()
        withdrawing = self._announcer.withdrawing()
        due: set[IPAddress] = set()
        for vip in gone:
            if vip in withdrawing:
                continue  # the delay starts at the acknowledgement
            if s.unbind_at.setdefault(vip, now + self._unbind_delay) <= now:
                due.add(vip)
        for vip in due:
            del s.unbind_at[vip]
        return due

    def _bind(
        self, effective: Mapping[IPAddress, Advertisement], changed: set[IPAddress] | None
    ) -> Set[IPAddress]:
        """Bind up to ``BIND_CHUNK`` desired addresses; return those left for later passes.
        ``changed``: the VIPs whose desired value changed since the last pass (None: look
        at every desired VIP); with those left by the last pass, only they can need a bind.

        A failed bind is logged and the VIP announced anyway (traffic may still be
        handled, e.g. by kube-proxy); it is retried at the next resync. An address that
        exists as someone else's is announced and never unbound.
        """
        s = self._s
        if self._addresses is None:
            return set()
        chunk = s.bind_queue.take(effective, changed, s.bound, s.bind_failed, BIND_CHUNK)
        s.bind_backlog = len(s.bind_queue)
        if not chunk:
            return s.bind_queue.held
        result = self._addresses.bind_many(chunk)
        s.bound |= result.bound | result.foreign
        s.bound_changed = True
        reported = len(result.bound) + len(result.foreign) + len(result.failed)
        if s.bind_backlog and reported < len(chunk):
            s.bind_queue.everything()  # one not reported on: the next pass finds it
        if len(chunk) <= DETAILED_LOG_LIMIT:
            logger = log.bind()  # one logger per pass, not one per line (2.4 of 7.5 us a line)
            for vip in sorted(result.bound, key=address_order):
                logger.info("reconciler.bound", vip=str(vip))
        else:
            log.info("reconciler.bound_many", count=len(result.bound), left=s.bind_backlog)
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
        return s.bind_queue.held

    def _unbind(self, vips: set[IPAddress]) -> None:
        if self._addresses is None or not vips:
            return
        failed = self._addresses.unbind_many(vips)
        for vip, error in failed.items():
            self._s.errors.append(f"unbind {vip}: {error}")
            log.error("reconciler.unbind_failed", vip=str(vip), error=str(error))
        done = vips - set(failed)
        if len(done) <= DETAILED_LOG_LIMIT:
            logger = log.bind()  # see _bind
            for vip in done:
                logger.info("reconciler.unbound", vip=str(vip))
        else:
            log.info("reconciler.unbound_many", count=len(done))
        self._s.bound -= vips
        self._s.bound_changed = True
        self._metrics.addresses_bound.set(len(self._s.bound))

    # -- shutdown -------------------------------------------------------------------

    def _shutdown(self, stop: Stop) -> None:
        """Withdraw every route (and wait for it), then remove our addresses."""

        def receive(timeout: float) -> list[Message]:
            return [message for _key, message in self._inbox.drain(timeout)]

        # Addresses stay bound meanwhile: traffic may arrive until peers converge.
        self._announcer.withdraw_all(stop.deadline, receive)
        self._collect_errors()
        if self._addresses is not None:
            self._unbind(set(self._addresses.owned()))
        self._publish(time.monotonic(), stopped=True)
        log.info("reconciler.stopped")

    def _publish(self, now: float, stopped: bool = False) -> None:
        publish_status(
            self._s, self._announcer, self._metrics, self._status, self._all_synced(), now, stopped
        )
