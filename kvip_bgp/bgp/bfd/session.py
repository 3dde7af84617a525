"""One BFD session as a frozen value and the pure transitions of RFC 5880 section 6.8.

No clock, no socket, no randomness inside: the BFD thread passes ``now`` (monotonic
seconds) and the jitter factor, so every rule is a table-driven test. Asynchronous mode
only (no Demand mode, no Echo function); intervals are microseconds as on the wire.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

from kvip_bgp.bgp.bfd.packet import ControlPacket, Diagnostic, State

SLOW_TX_US: Final = 1_000_000
"""While not Up, DesiredMinTxInterval is at least one second (section 6.8.3)."""


@dataclass(frozen=True, slots=True)
class Timers:
    """What the operator configured for a peer (``bfd: {min_rx, min_tx, multiplier}``)."""

    desired_min_tx_us: int
    required_min_rx_us: int
    multiplier: int


@dataclass(frozen=True, slots=True)
class Session:
    """The state variables of section 6.8.1 that asynchronous mode uses."""

    local_discriminator: int
    timers: Timers
    state: State = State.DOWN
    remote_state: State = State.DOWN
    remote_discriminator: int = 0
    local_diagnostic: int = Diagnostic.NONE
    remote_min_rx_us: int = 1
    remote_desired_min_tx_us: int = 0
    remote_multiplier: int = 0
    advertised_tx_us: int = SLOW_TX_US
    """The DesiredMinTxInterval our packets carry now."""
    tx_interval_us: int = SLOW_TX_US
    """The DesiredMinTxInterval our transmit timer uses: an increase waits for the Final."""
    polling: bool = False
    final_owed: bool = False
    detect_deadline: float | None = None
    next_tx: float = 0.0

    @property
    def detection_time_us(self) -> int:
        """Asynchronous mode: the remote's multiplier x the slower of its tx and our rx."""
        return self.remote_multiplier * max(
            self.timers.required_min_rx_us, self.remote_desired_min_tx_us
        )

    @property
    def transmit_interval_us(self) -> int:
        """Section 6.8.7: the slower of what we want to send and what the remote can take."""
        return max(self.tx_interval_us, self.remote_min_rx_us)


def new_session(local_discriminator: int, timers: Timers, now: float) -> Session:
    """A session in Down, sending its first packet at once."""
    if local_discriminator == 0:
        raise ValueError("a local discriminator must be nonzero (RFC 5880 6.8.1)")
    return Session(local_discriminator, timers, next_tx=now)


def _desired_tx(session: Session, state: State) -> int:
    if state == State.UP:
        return session.timers.desired_min_tx_us
    return max(SLOW_TX_US, session.timers.desired_min_tx_us)


def _with_state(session: Session, state: State, diagnostic: int) -> Session:
    """Enter ``state``; a change of the advertised tx interval starts a Poll Sequence."""
    if state == session.state:
        return session
    desired = _desired_tx(session, state)
    changed = desired != session.advertised_tx_us
    return dataclasses.replace(
        session,
        state=state,
        local_diagnostic=diagnostic,
        advertised_tx_us=desired,
        # A faster rate applies at once; a slower one only once the remote has seen it.
        tx_interval_us=min(desired, session.tx_interval_us) if changed else desired,
        polling=session.polling or (changed and state == State.UP),
    )


def receive(session: Session, packet: ControlPacket, now: float) -> Session:
    """Section 6.8.6, after the checks of ``packet.decode`` and the discriminator lookup."""
    s = dataclasses.replace(
        session,
        remote_discriminator=packet.my_discriminator,
        remote_state=packet.state,
        remote_min_rx_us=packet.required_min_rx,
        remote_desired_min_tx_us=packet.desired_min_tx,
        remote_multiplier=packet.detect_multiplier,
        final_owed=session.final_owed or packet.poll,
    )
    if packet.final and s.polling:
        s = dataclasses.replace(s, polling=False, tx_interval_us=s.advertised_tx_us)
    if s.state == State.ADMIN_DOWN:
        return s
    if packet.state == State.ADMIN_DOWN:
        if s.state != State.DOWN:
            s = _with_state(s, State.DOWN, Diagnostic.NEIGHBOR_DOWN)
    elif s.state == State.DOWN:
        if packet.state == State.DOWN:
            s = _with_state(s, State.INIT, Diagnostic.NONE)
        elif packet.state == State.INIT:
            s = _with_state(s, State.UP, Diagnostic.NONE)
    elif s.state == State.INIT:
        if packet.state in (State.INIT, State.UP):
            s = _with_state(s, State.UP, Diagnostic.NONE)
    elif packet.state == State.DOWN:
        s = _with_state(s, State.DOWN, Diagnostic.NEIGHBOR_DOWN)
    deadline = now + s.detection_time_us / 1e6 if s.state in (State.INIT, State.UP) else None
    next_tx = s.next_tx
    if s.transmit_interval_us < session.transmit_interval_us:
        # The remote now expects packets faster (its RequiredMinRx fell, or we came Up):
        # a next packet still timed by the old, slower interval would arrive after the
        # remote's new detection time. Send by the new interval (its shortest jitter).
        next_tx = min(next_tx, now + s.transmit_interval_us / 1e6 * 0.75)
    return dataclasses.replace(s, detect_deadline=deadline, next_tx=next_tx)


def expire(session: Session, now: float) -> Session:
    """Section 6.8.4: no valid packet for a Detection Time takes Init or Up to Down."""
    deadline = session.detect_deadline
    if deadline is None or now < deadline:
        return session
    s = _with_state(session, State.DOWN, Diagnostic.DETECTION_TIME_EXPIRED)
    return dataclasses.replace(
        s, remote_discriminator=0, detect_deadline=None, polling=False, final_owed=False
    )


def due(session: Session, now: float) -> bool:
    """Whether a packet should go out now: a Final is owed, or the periodic timer ran out."""
    if session.final_owed:
        return True
    # A remote that asks for no packets (RequiredMinRx 0) gets none periodically.
    return session.remote_min_rx_us != 0 and now >= session.next_tx


def transmit(session: Session, now: float, jitter: float) -> tuple[Session, ControlPacket]:
    """The packet to send now and the session with its next transmit time.

    ``jitter`` is uniform in [0, 1): the interval is cut by 0-25% (10-25% with a
    multiplier of 1), section 6.8.7, so that sessions do not synchronise.
    """
    low = 0.10 if session.timers.multiplier == 1 else 0.0
    cut = low + (0.25 - low) * jitter
    final = session.final_owed
    packet = ControlPacket(
        state=session.state,
        diagnostic=session.local_diagnostic,
        detect_multiplier=session.timers.multiplier,
        my_discriminator=session.local_discriminator,
        your_discriminator=session.remote_discriminator,
        desired_min_tx=session.advertised_tx_us,
        required_min_rx=session.timers.required_min_rx_us,
        poll=session.polling and not final,
        final=final,
    )
    interval = session.transmit_interval_us / 1e6 * (1.0 - cut)
    periodic = now >= session.next_tx
    return (
        dataclasses.replace(
            session,
            final_owed=False,
            next_tx=now + interval if periodic else session.next_tx,
        ),
        packet,
    )


def admin_down(session: Session, now: float) -> Session:
    """Stop the session on purpose (shutdown): the peer must not read it as a failure.

    The AdminDown packet goes out at once, not at the next periodic time.
    """
    return dataclasses.replace(
        _with_state(session, State.ADMIN_DOWN, Diagnostic.ADMINISTRATIVELY_DOWN),
        detect_deadline=None,
        polling=False,
        next_tx=now,
    )
