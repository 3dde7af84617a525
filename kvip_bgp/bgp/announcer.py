"""``output: exabgp``: the announcer that writes ExaBGP's API commands.

It runs in the reconciler thread, which owns it: the writer end of the relay's socket,
the commands in flight and their acks, the retry backoff, End-of-RIB per fresh session
and the peers' views. ExaBGP acks a command once parsed; an error ack puts what the
command carried back into the next pass's difference, after a backoff.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Set
from typing import Final, assert_never

import structlog

from kvip_bgp.bgp.api import ApiWriter
from kvip_bgp.bgp.commands import (
    Command,
    NextHopPolicy,
    announce_commands,
    end_of_rib_commands,
    withdraw_commands,
)
from kvip_bgp.bgp.difference import PendingVips
from kvip_bgp.bgp.rewithdraw import Rewithdrawals
from kvip_bgp.bgp.sent import record_sent
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement, IPAddress, address_order, host_prefix
from kvip_bgp.runtime.announcer import PeerView, Receive
from kvip_bgp.runtime.backoff import Backoff
from kvip_bgp.runtime.messages import (
    ApiConnected,
    ApiDisconnected,
    ApiMessage,
    CommandAck,
    ExabgpShutdown,
    PeerState,
    ReplyBox,
)
from kvip_bgp.runtime.metrics import Metrics

Vips = Set[IPAddress]
log = structlog.get_logger("kvip_bgp.reconciler")  # the reconciler's events, either output

# ExaBGP acks a command once parsed, not once its UPDATE is on the wire, and its API has
# nothing that reports the send. Stopped too soon after the acks, it closes the session
# silently (graceful restart) and the peer keeps our withdrawn routes as stale for the
# restart time. Its reactor sends parsed changes within a few turns.
WITHDRAW_FLUSH_GRACE: Final = 1.0
INITIAL_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0


class ExabgpAnnouncer:
    """Announces through ExaBGP's API; owned by the reconciler thread."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._clock = clock  # only for the shutdown's wait; passes get ``now``
        self._sleep = sleep
        self._next_hops = NextHopPolicy(config.bgp.peers)
        self._applied: dict[IPAddress, Advertisement] = {}
        self._maybe_present: set[IPAddress] = set()
        self._in_flight: deque[Command] = deque()
        self._peers: dict[str, PeerView] = {}
        self._writer: ApiWriter | None = None
        self._eor_pending: set[str] = set()
        self._announced_ever: set[IPAddress] = set()
        self._again = Rewithdrawals()  # the resync's safety net (bgp/rewithdraw.py)
        self._pending = PendingVips()  # which VIPs the next pass compares
        self._changes = 0  # see changes()
        self._backoff = Backoff(INITIAL_BACKOFF, MAX_BACKOFF, INITIAL_BACKOFF)
        self._errors: list[str] = []
        # Peers a reload added: ExaBGP starts them with an empty RIB, so their first
        # session gets every applied route (``_replay``) before its End-of-RIB.
        self._fresh: set[str] = set()
        self._replay: set[str] = set()
        # Peers a reload removed: ExaBGP's last word about them is not a session of ours.
        self._removed: set[str] = set()
        # Withdrawals to removed peers in flight, and who waits for their acks.
        self._leaving: set[int] = set()
        self._left: list[ReplyBox[bool]] = []

    # -- the Announcer interface -----------------------------------------------------

    def start(self) -> None:
        for peer, family in self._next_hops.unreachable():
            missing = "next_hop_v6" if family == 6 else "next_hop_v4"
            log.warning(
                "reconciler.peer_without_next_hop",
                peer=str(peer.address),
                reason=f"IPv{peer.address.version} session without {missing}: "
                f"IPv{family} VIPs are not sent to it",
            )

    def handle(self, message: ApiMessage, now: float) -> None:
        if not isinstance(message, PeerState) and not (
            isinstance(message, CommandAck) and message.ok
        ):
            self._changes += 1  # may change what is applied
        match message:
            case ApiConnected():
                self._connected(message)
            case ApiDisconnected():
                if self._writer is not None and self._writer.generation == message.generation:
                    self._drop_writer("relay disconnected")
            case CommandAck():
                self._ack(message, now)
            case PeerState():
                self._peer_state(message)
            case ExabgpShutdown():
                log.info("reconciler.exabgp_shutdown", generation=message.generation)
            case _:
                assert_never(message)

    def resync(self) -> None:
        self._again.resync(self._applied)  # withdrawn once more, a chunk a pass
        self._pending.everything()

    def set(
        self,
        desired: Mapping[IPAddress, Advertisement],
        held: Set[IPAddress],
        synced: bool,
        now: float,
        changed: Set[IPAddress] | None = None,
    ) -> None:
        self._pending.add(changed)
        if self._writer is None or not self._backoff.ready(now):
            return
        announce, withdraw = self._pending.take(
            desired, self._applied, self._maybe_present, held, synced
        )
        again = self._again.take(desired.keys(), self._applied.keys(), now) if synced else set()
        if announce or withdraw or again:
            self._changes += 1
        self._send_routes(announce, withdraw, synced and not held, again - withdraw)

    def withdraw_all(self, deadline: float, receive: Receive) -> None:
        """Withdraw every route, wait for ExaBGP's acks and its send, then let go."""
        withdraw = sorted(set(self._applied) | self._maybe_present, key=address_order)
        log.info("reconciler.shutdown", withdrawing=len(withdraw))
        self._changes += 1
        if self._writer is not None and withdraw:
            commands = withdraw_commands([host_prefix(v) for v in withdraw], self._next_hops)
            try:
                self._writer.send(commands)
                self._in_flight.extend(commands)
            except OSError as error:
                log.error("reconciler.shutdown_write_failed", error=str(error))
                self._in_flight.clear()
            while self._in_flight and self._clock() < deadline:
                for message in receive(max(0.01, deadline - self._clock())):
                    if isinstance(message, CommandAck):
                        self._ack(message, self._clock())
                    elif isinstance(message, ApiDisconnected):
                        self._in_flight.clear()
            if self._in_flight:
                log.warning("reconciler.shutdown_unacked", commands=len(self._in_flight))
            else:
                self._sleep(max(0.0, min(WITHDRAW_FLUSH_GRACE, deadline - self._clock())))
        self._applied.clear()
        self._maybe_present.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def announced(self) -> Mapping[IPAddress, Advertisement]:
        return self._applied

    def changes(self) -> int:
        return self._changes

    def withdrawing(self) -> Set[IPAddress]:
        return {
            prefix.network_address for command in self._in_flight for prefix in command.withdrawn
        }

    def peers(self) -> tuple[PeerView, ...]:
        return tuple(sorted(self._peers.values(), key=lambda p: p.address))

    def connected(self) -> bool:
        return self._writer is not None

    def wake_at(self) -> float | None:
        again = self._again.wake_at() if self._writer is not None else None
        if self._backoff.until > 0:  # nothing is sent before the retry
            return self._backoff.until if again is None else max(again, self._backoff.until)
        return again

    def take_errors(self) -> list[str]:
        errors, self._errors = self._errors, []
        return errors

    def reconfigure(self, config: Config, routes_left: ReplyBox[bool] | None = None) -> None:
        self._changes += 1
        before = {str(peer.address) for peer in self._config.bgp.peers}
        after = {str(peer.address) for peer in config.bgp.peers}
        old_hops = {p.address: (p.next_hop_v4, p.next_hop_v6) for p in self._config.bgp.peers}
        if any(
            old_hops.get(p.address, (p.next_hop_v4, p.next_hop_v6))
            != (p.next_hop_v4, p.next_hop_v6)
            for p in config.bgp.peers
        ):
            # A peer's next hop changed: every route goes out again with the new one.
            self._maybe_present |= set(self._applied)
            self._applied.clear()
        gone = tuple(p for p in self._config.bgp.peers if str(p.address) not in after)
        if routes_left is not None:
            self._left.append(routes_left)
        if gone and self._writer is not None and self._applied:
            prefixes = [host_prefix(v) for v in self._applied]
            commands = withdraw_commands(prefixes, NextHopPolicy(gone, explicit=True))
            try:
                self._writer.send(commands)
            except OSError as error:
                self._drop_writer(f"write failed: {error}")
            else:
                self._in_flight.extend(commands)
                self._leaving |= {id(command) for command in commands}
                log.info("reconciler.withdraw_from_removed", peers=[str(p.address) for p in gone])
        self._answer_left()
        self._config = config
        self._next_hops = NextHopPolicy(config.bgp.peers)
        for peer in before - after:
            self._peers.pop(peer, None)
            self._eor_pending.discard(peer)
            self._metrics.prefixes_announced.labels(peer).set(0)
        self._removed = (self._removed | (before - after)) - after
        self._fresh = (self._fresh | (after - before)) & after
        self._replay &= after
        self._pending.everything()
        self.start()

    # -- messages ------------------------------------------------------------------

    def _connected(self, message: ApiConnected) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = ApiWriter(message.fd, message.generation)
        self._in_flight.clear()
        self._leaving.clear()
        self._answer_left()
        self._eor_pending.clear()
        self._fresh.clear()  # a new connection re-sends everything to every peer
        self._replay.clear()
        # Whatever we told the previous ExaBGP (or relay) may still be there: re-announce
        # every desired route and withdraw anything else we had sent.
        self._maybe_present |= set(self._applied)
        self._applied.clear()
        self._pending.everything()
        self._backoff = self._backoff.cleared()
        self._peers.clear()
        log.info(
            "reconciler.exabgp_connected",
            generation=message.generation,
            resending=len(self._maybe_present),
        )

    def _answer_left(self) -> None:
        if not self._leaving:
            for box in self._left:
                box.put(True)
            self._left.clear()

    def _drop_writer(self, why: str) -> None:
        self._changes += 1
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._in_flight.clear()
        self._leaving.clear()
        self._answer_left()
        self._maybe_present |= set(self._applied)
        self._applied.clear()  # nothing is sent before the next connection's full pass
        log.warning("reconciler.exabgp_unreachable", reason=why)

    def _ack(self, ack: CommandAck, now: float) -> None:
        if self._writer is None or ack.generation != self._writer.generation:
            return
        if not self._in_flight:
            log.warning("reconciler.unexpected_ack", index=ack.index)
            return
        command = self._in_flight.popleft()
        if id(command) in self._leaving:
            self._leaving.discard(id(command))
            self._answer_left()
            return  # routes left to a removed peer: nothing to retry
        if ack.ok:
            self._backoff = self._backoff.succeeded()
            return
        self._metrics.command_errors.inc()
        text = command.text if len(command.text) < 300 else command.text[:300] + "..."
        self._errors.append(f"exabgp error: {text}")
        log.error("reconciler.command_error", command=text, retry_in=self._backoff.delay)
        for advert in command.announced:
            if self._applied.get(advert.vip) == advert:
                del self._applied[advert.vip]
        for prefix in command.withdrawn:
            self._maybe_present.add(prefix.network_address)
        self._pending.everything()
        self._backoff = self._backoff.failed(now)

    def _peer_state(self, message: PeerState) -> None:
        if message.peer in self._removed:
            return
        previous = self._peers.get(message.peer)
        if (
            previous is None
            or previous.state != message.state
            or previous.session != message.session  # a flap coalesced into one "up"
        ):
            self._peers[message.peer] = PeerView(
                message.peer, message.state, message.at, message.reason, message.session
            )
            if message.state == "up":
                # ExaBGP re-sends its RIB to a fresh session; we close it with End-of-RIB
                # once every desired route is in (manual-eor: hitless restarts).
                self._eor_pending.add(message.peer)
                if message.peer in self._fresh:
                    self._fresh.discard(message.peer)
                    self._replay.add(message.peer)
                # ExaBGP 5.0.15 also replays to the new session routes that were
                # announced and then withdrawn while it was down: withdraw, before the
                # End-of-RIB, everything we ever announced that is not applied now.
                self._maybe_present |= self._announced_ever - set(self._applied)
                self._pending.everything()
            else:
                self._eor_pending.discard(message.peer)
            log.info(
                "reconciler.peer_state",
                peer=message.peer,
                state=message.state,
                reason=message.reason,
            )

    # -- sending ---------------------------------------------------------------------

    def _replay_commands(self, withdraw: Set[IPAddress]) -> list[Command]:
        """Every applied route, to the peers a reload added (their RIB in ExaBGP is empty)."""
        peers = tuple(p for p in self._config.bgp.peers if str(p.address) in self._replay)
        if not peers:
            return []
        routes = [a for v, a in self._applied.items() if v not in withdraw]
        if not routes:
            return []
        log.info("reconciler.replay", peers=[str(p.address) for p in peers], routes=len(routes))
        policy = NextHopPolicy(peers, explicit=True)
        return announce_commands(routes, self._config.bgp.asn, policy)

    def _send_routes(
        self, announce: list[Advertisement], withdraw: Vips, complete: bool, again: Vips
    ) -> None:
        """This pass's changes, then ``again``: withdrawn once more (bgp/rewithdraw.py)."""
        commands = self._replay_commands(set(withdraw))
        if withdraw:
            commands += withdraw_commands([host_prefix(v) for v in withdraw], self._next_hops)
        if announce:
            commands += announce_commands(announce, self._config.bgp.asn, self._next_hops)
        eor_peers = (
            sorted(self._eor_pending) if complete and self._config.bgp.graceful_restart > 0 else []
        )
        for peer in eor_peers:
            commands += end_of_rib_commands(peer)
        if again:
            commands += withdraw_commands([host_prefix(v) for v in again], self._next_hops)
        if not commands:  # e.g. a family no peer takes: not applied, looked at again
            self._pending.add({a.vip for a in announce} | withdraw)
            return
        assert self._writer is not None
        try:
            self._writer.send(commands)
        except OSError as error:
            self._drop_writer(f"write failed: {error}")
            return
        self._in_flight.extend(commands)
        for vip in withdraw:
            self._applied.pop(vip, None)
            self._maybe_present.discard(vip)
        self._again.withdrawn(withdraw)
        self._applied.update(sent := {advert.vip: advert for advert in announce})  # 1 hash each
        if self._maybe_present:
            self._maybe_present.difference_update(sent)
        self._announced_ever.update(sent)
        self._eor_pending.difference_update(eor_peers)
        self._replay.clear()
        peers = [str(p.address) for p in self._config.bgp.peers]
        record_sent(
            self._metrics, peers, announce, withdraw, commands, eor_peers, len(self._applied)
        )
