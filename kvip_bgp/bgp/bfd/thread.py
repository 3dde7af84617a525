"""The BFD thread: sole owner of every BFD session and of the BFD sockets (RFC 5881).

Single-hop only: packets go to UDP port 3784 from a source port in 49152-65535 with TTL
(hop limit) 255, and a packet that arrives with any other TTL is dropped (GTSM, RFC 5881
section 5), so nothing more than one hop away can bring a session up or down. Sessions
change only here; each state change leaves as a frozen ``BfdPeerState`` through the
``publish`` callback (the reconciler's inbox), like every other message.

Hostile input is counted, never fatal: a malformed packet, a wrong TTL, an unknown
discriminator or a packet from an address with no session is dropped with a reason
(``dropped`` callback: a metric), and a flood is read at most ``READ_BUDGET`` packets per
socket per turn so that transmitting on time never starves.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import queue
import random
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

import structlog

from kvip_bgp.bgp.bfd import session as bfd
from kvip_bgp.bgp.bfd.packet import (
    ControlPacket,
    Diagnostic,
    PacketError,
    State,
    decode,
    encode,
)

log = structlog.get_logger("kvip_bgp.bfd")

CONTROL_PORT: Final = 3784
SOURCE_PORTS: Final = range(49152, 65536)
TTL: Final = 255
READ_BUDGET: Final = 64
_RECV_BUFFER: Final = 512
# Linux values (not all exposed by the socket module on Python 3.11).
_IP_RECVTTL: Final = getattr(socket, "IP_RECVTTL", 12)
_IP_TTL_CMSG: Final = getattr(socket, "IP_TTL", 2)
_IPV6_RECVHOPLIMIT: Final = getattr(socket, "IPV6_RECVHOPLIMIT", 51)
_IPV6_HOPLIMIT: Final = getattr(socket, "IPV6_HOPLIMIT", 52)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class BfdPeer:
    """One configured single-hop session: the peer, our address towards it, its timers."""

    peer: IPAddress
    local: IPAddress
    timers: bfd.Timers


@dataclass(frozen=True, slots=True)
class BfdPeerState:
    """A session changed state (the message the reconciler and ``/status`` get)."""

    peer: str
    state: str  # "admin-down" | "down" | "init" | "up"
    diagnostic: int
    at: float


STATE_NAMES: Final = {
    State.ADMIN_DOWN: "admin-down",
    State.DOWN: "down",
    State.INIT: "init",
    State.UP: "up",
}


def _ttl_of(ancillary: Iterable[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if (level, kind) in (
            (socket.IPPROTO_IP, _IP_TTL_CMSG),
            (socket.IPPROTO_IPV6, _IPV6_HOPLIMIT),
        ):
            return int.from_bytes(data[:4], "little") if len(data) >= 4 else data[0]
    return None


def receive_socket(local: IPAddress) -> socket.socket:
    """Port 3784 on ``local``, asking the kernel for each packet's TTL (hop limit)."""
    family = socket.AF_INET6 if local.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVTTL, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVHOPLIMIT, 1)
    sock.bind((str(local), CONTROL_PORT))
    sock.setblocking(False)
    return sock


def send_socket(local: IPAddress, rng: random.Random) -> socket.socket:
    """A socket on ``local`` with TTL 255 and a source port of 49152-65535 kept for life."""
    family = socket.AF_INET6 if local.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, TTL)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, TTL)
    for _ in range(64):
        try:
            sock.bind((str(local), rng.choice(SOURCE_PORTS)))
            break
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                sock.close()
                raise
    else:
        sock.close()
        raise OSError(f"no free UDP source port in 49152-65535 on {local}")
    sock.setblocking(False)
    return sock


class BfdThread(threading.Thread):
    def __init__(
        self,
        peers: tuple[BfdPeer, ...],
        publish: Callable[[BfdPeerState], None],
        dropped: Callable[[str], None],
        rng: random.Random | None = None,
        gap: Callable[[IPAddress, float], None] | None = None,
    ) -> None:
        super().__init__(name="bfd", daemon=True)
        self._peers = peers
        self._publish = publish
        self._dropped = dropped
        self._gap = gap
        # peer -> (time, transmit interval) of the last periodic packet sent while Up
        self._last_up_tx: dict[IPAddress, tuple[float, int]] = {}
        self._rng = rng or random.SystemRandom()
        self._stop_at: float | None = None
        self._stopping = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._updates: queue.SimpleQueue[tuple[BfdPeer, ...]] = queue.SimpleQueue()
        self._used: set[int] = set()

    def update(self, peers: tuple[BfdPeer, ...]) -> None:
        """A new peer set (from the child's stdin, any thread): the loop starts sessions
        for new peers and drops those of removed or changed ones; the rest run on."""
        self._updates.put(peers)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def stop(self, linger: float) -> None:
        """Send AdminDown for up to ``linger`` seconds, then end (called by the main thread)."""
        self._stop_at = time.monotonic() + max(0.0, linger)
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def run(self) -> None:
        now = time.monotonic()
        sessions: dict[IPAddress, bfd.Session] = {}
        by_discriminator: dict[int, IPAddress] = {}
        senders: dict[IPAddress, socket.socket] = {}
        receivers: dict[socket.socket, IPAddress] = {}
        self._configured: dict[IPAddress, BfdPeer] = {}
        try:
            for peer in self._peers:
                if not self._add(peer, now, sessions, by_discriminator, senders, receivers):
                    return
            self._loop(sessions, by_discriminator, senders, receivers)
        finally:
            for sock in (*senders.values(), *receivers, self._wake_r, self._wake_w):
                sock.close()

    def _add(
        self,
        peer: BfdPeer,
        now: float,
        sessions: dict[IPAddress, bfd.Session],
        by_discriminator: dict[int, IPAddress],
        senders: dict[IPAddress, socket.socket],
        receivers: dict[socket.socket, IPAddress],
    ) -> bool:
        """A session for ``peer`` and its sockets; False when they cannot be had."""
        discriminator = self._discriminator(self._used)
        sessions[peer.peer] = bfd.new_session(discriminator, peer.timers, now)
        by_discriminator[discriminator] = peer.peer
        self._configured[peer.peer] = peer
        try:
            senders[peer.peer] = send_socket(peer.local, self._rng)
            if peer.local not in receivers.values():
                receivers[receive_socket(peer.local)] = peer.local
        except OSError as error:
            # Typically the local address is not (yet) on this host: say so and end (the
            # daemon restarts the process with backoff; the session comes with the address).
            log.error(
                "bfd.socket_failed", peer=str(peer.peer), local=str(peer.local), error=str(error)
            )
            self._publish(BfdPeerState(str(peer.peer), "down", Diagnostic.NONE, time.time()))
            return False
        log.info(
            "bfd.session_created",
            peer=str(peer.peer),
            local=str(peer.local),
            min_tx_ms=peer.timers.desired_min_tx_us // 1000,
            min_rx_ms=peer.timers.required_min_rx_us // 1000,
            multiplier=peer.timers.multiplier,
        )
        return True

    def _apply_updates(
        self,
        now: float,
        sessions: dict[IPAddress, bfd.Session],
        by_discriminator: dict[int, IPAddress],
        senders: dict[IPAddress, socket.socket],
        receivers: dict[socket.socket, IPAddress],
    ) -> bool:
        """Take a new peer set if one came; False when a new session cannot start."""
        try:
            peers = self._updates.get_nowait()
        except queue.Empty:
            return True
        wanted = {peer.peer: peer for peer in peers}
        for address in [a for a in sessions if self._configured.get(a) != wanted.get(a)]:
            session = sessions.pop(address)
            by_discriminator.pop(session.local_discriminator, None)
            self._configured.pop(address, None)
            senders.pop(address).close()
            log.info("bfd.session_removed", peer=str(address))
        return all(
            self._add(peer, now, sessions, by_discriminator, senders, receivers)
            for peer in peers
            if peer.peer not in sessions
        )

    def _discriminator(self, used: set[int]) -> int:
        while True:
            value = self._rng.randrange(1, 1 << 32)
            if value not in used:
                used.add(value)
                return value

    def _loop(
        self,
        sessions: dict[IPAddress, bfd.Session],
        by_discriminator: dict[int, IPAddress],
        senders: dict[IPAddress, socket.socket],
        receivers: dict[socket.socket, IPAddress],
    ) -> None:
        admin_down_sent = False
        while True:
            now = time.monotonic()
            if not self._apply_updates(now, sessions, by_discriminator, senders, receivers):
                return
            if self._stopping.is_set() and not admin_down_sent:
                for peer, s in list(sessions.items()):
                    self._set(sessions, peer, bfd.admin_down(s, now))
                admin_down_sent = True
            if self._stop_at is not None and now >= self._stop_at:
                return
            for peer, s in list(sessions.items()):
                self._set(sessions, peer, bfd.expire(s, now))
                s = sessions[peer]
                if bfd.due(s, now):
                    periodic = now >= s.next_tx
                    s, packet = bfd.transmit(s, now, self._rng.random())
                    sessions[peer] = s
                    self._send(senders[peer], peer, packet)
                    if periodic:
                        self._measure_gap(peer, s, now)
            wait = (
                min(
                    [s.next_tx for s in sessions.values()]
                    + [
                        s.detect_deadline
                        for s in sessions.values()
                        if s.detect_deadline is not None
                    ]
                    + ([self._stop_at] if self._stop_at is not None else [])
                )
                - time.monotonic()
            )
            readable, _, _ = select.select([*receivers, self._wake_r], [], [], max(0.0, wait))
            for sock in readable:
                if sock is self._wake_r:
                    with contextlib.suppress(OSError):
                        sock.recv(64)
                    continue
                self._read(sock, sessions, by_discriminator)

    def _read(
        self,
        sock: socket.socket,
        sessions: dict[IPAddress, bfd.Session],
        by_discriminator: dict[int, IPAddress],
    ) -> None:
        for _ in range(READ_BUDGET):
            try:
                data, ancillary, _flags, source = sock.recvmsg(_RECV_BUFFER, socket.CMSG_SPACE(4))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("bfd.receive_failed", error=str(error))
                return
            now = time.monotonic()
            ttl = _ttl_of(ancillary)
            if ttl != TTL:
                self._dropped("ttl")
                continue
            try:
                packet = decode(data)
            except PacketError as error:
                self._dropped(error.reason)
                continue
            try:
                sender = ipaddress.ip_address(source[0].split("%")[0])
            except ValueError:
                self._dropped("source")
                continue
            if packet.your_discriminator:
                peer = by_discriminator.get(packet.your_discriminator)
                if peer is None or peer != sender:
                    self._dropped("discriminator")
                    continue
            else:
                if sender not in sessions:
                    self._dropped("unknown-peer")
                    continue
                if packet.state not in (State.DOWN, State.ADMIN_DOWN):
                    # Section 6.8.6: Your Discriminator 0 is only valid from Down/AdminDown.
                    self._dropped("discriminator")
                    continue
                current = sessions[sender]
                known = current.remote_discriminator
                if current.state == State.UP and known and packet.my_discriminator != known:
                    # Not the remote we are Up with: a forged Down or AdminDown from one
                    # hop away must not end the session. A remote that restarted (new
                    # discriminator) is let in once our detection time expires; before
                    # Up, a new discriminator is taken as is (a peer's session recreated).
                    self._dropped("discriminator")
                    continue
                peer = sender
            self._set(sessions, peer, bfd.receive(sessions[peer], packet, now))

    def _set(
        self,
        sessions: dict[IPAddress, bfd.Session],
        peer: IPAddress,
        new: bfd.Session,
    ) -> None:
        old = sessions[peer]
        sessions[peer] = new
        if old.state == new.state:
            return
        name = STATE_NAMES[new.state]
        log.info(
            "bfd.state_changed",
            peer=str(peer),
            state=name,
            previous=STATE_NAMES[old.state],
            diagnostic=int(new.local_diagnostic),
            detection_ms=new.detection_time_us // 1000,
        )
        self._publish(BfdPeerState(str(peer), name, int(new.local_diagnostic), time.time()))

    def _measure_gap(self, peer: IPAddress, s: bfd.Session, now: float) -> None:
        """Report the time between two periodic packets sent while Up at one rate.

        The interval is at most the negotiated one; anything longer is this process
        being late (scheduling, the GIL), which is what eats into the peer's detection
        time. Gaps across a state or rate change are not this kind and are skipped.
        """
        if self._gap is None:
            return
        if s.state != State.UP:
            self._last_up_tx.pop(peer, None)
            return
        last = self._last_up_tx.get(peer)
        if last is not None and last[1] == s.transmit_interval_us:
            self._gap(peer, now - last[0])
        self._last_up_tx[peer] = (now, s.transmit_interval_us)

    def _send(self, sock: socket.socket, peer: IPAddress, packet: ControlPacket) -> None:
        try:
            sock.sendto(encode(packet), (str(peer), CONTROL_PORT))
        except OSError as error:
            log.warning("bfd.send_failed", peer=str(peer), error=str(error))
