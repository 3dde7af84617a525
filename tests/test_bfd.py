"""BFD's pure parts: the packet codec (tables + hypothesis) and the session state machine."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.bgp.bfd import session as bfd
from kvip_bgp.bgp.bfd.child import parse_peers
from kvip_bgp.bgp.bfd.packet import (
    LENGTH,
    ControlPacket,
    Diagnostic,
    PacketError,
    State,
    decode,
    encode,
)
from kvip_bgp.bgp.bfd.supervisor import (
    RESTART_BACKOFF,
    BfdSupervisor,
    DropTotals,
    TxGaps,
    bfd_peers,
    parse_line,
)
from kvip_bgp.bgp.bfd.thread import BfdPeer, BfdPeerState, BfdThread
from kvip_bgp.configfile import load as config_load
from kvip_bgp.runtime.messages import BfdState
from kvip_bgp.runtime.metrics import Metrics

TIMERS = bfd.Timers(desired_min_tx_us=300_000, required_min_rx_us=300_000, multiplier=3)


def packet(**changes: object) -> ControlPacket:
    base = ControlPacket(
        state=State.DOWN,
        diagnostic=Diagnostic.NONE,
        detect_multiplier=3,
        my_discriminator=7,
        your_discriminator=0,
        desired_min_tx=300_000,
        required_min_rx=300_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- codec


def test_encode_matches_the_rfc_layout() -> None:
    wire = encode(
        packet(
            state=State.UP,
            diagnostic=Diagnostic.ADMINISTRATIVELY_DOWN,
            poll=True,
            my_discriminator=0x01020304,
            your_discriminator=0x0A0B0C0D,
            desired_min_tx=1_000_000,
            required_min_rx=250_000,
        )
    )
    assert len(wire) == LENGTH
    assert wire[0] == (1 << 5) | 7  # version 1, diag 7
    assert wire[1] == (3 << 6) | 0x20  # state Up, P bit
    assert wire[2] == 3 and wire[3] == 24
    assert struct.unpack("!IIIII", wire[4:]) == (
        0x01020304,
        0x0A0B0C0D,
        1_000_000,
        250_000,
        0,
    )


def _raw(
    first: int = 0x20,
    second: int = 0x40,
    mult: int = 3,
    length: int = 24,
    mine: int = 1,
    yours: int = 0,
) -> bytes:
    return struct.pack("!BBBBIIIII", first, second, mult, length, mine, yours, 1, 1, 0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "short"),
        (_raw()[:23], "short"),
        (_raw(first=0x40), "version"),  # version 2
        (_raw(first=0x00), "version"),  # version 0
        (_raw(second=0x40 | 0x04), "authentication"),
        (_raw(length=23), "length"),
        (_raw(length=25), "length"),  # longer than what arrived
        (_raw(mult=0), "multiplier"),
        (_raw(second=0x40 | 0x01), "multipoint"),
        (_raw(mine=0), "discriminator"),
        (_raw(second=0x40 | 0x30), "flags"),  # poll and final
    ],
)
def test_decode_refuses_what_section_6_8_6_discards(data: bytes, reason: str) -> None:
    with pytest.raises(PacketError) as caught:
        decode(data)
    assert caught.value.reason == reason


def test_decode_accepts_a_longer_datagram_and_reserved_diagnostics() -> None:
    decoded = decode(_raw(first=0x20 | 20) + b"\x00" * 8)
    assert decoded.diagnostic == 20
    assert decoded.state == State.DOWN


packets = st.builds(
    ControlPacket,
    state=st.sampled_from(State),
    diagnostic=st.integers(0, 31),
    detect_multiplier=st.integers(1, 255),
    my_discriminator=st.integers(1, 2**32 - 1),
    your_discriminator=st.integers(0, 2**32 - 1),
    desired_min_tx=st.integers(0, 2**32 - 1),
    required_min_rx=st.integers(0, 2**32 - 1),
    required_min_echo_rx=st.integers(0, 2**32 - 1),
    poll=st.booleans(),
    final=st.just(False),
    control_plane_independent=st.booleans(),
    demand=st.booleans(),
)


@given(packets)
def test_encode_then_decode_is_the_identity(value: ControlPacket) -> None:
    assert decode(encode(value)) == value


@given(st.binary(max_size=64))
def test_decode_of_any_bytes_returns_a_packet_or_a_packet_error(data: bytes) -> None:
    try:
        result = decode(data)
    except PacketError as error:
        assert error.reason
    else:
        assert decode(encode(result)) == result


# ------------------------------------------------------------------------ state machine


def fresh(now: float = 0.0) -> bfd.Session:
    return bfd.new_session(42, TIMERS, now)


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        # Section 6.8.6's table for a session that is not AdminDown.
        (State.DOWN, State.DOWN, State.INIT),
        (State.DOWN, State.INIT, State.UP),
        (State.DOWN, State.UP, State.DOWN),
        (State.DOWN, State.ADMIN_DOWN, State.DOWN),
        (State.INIT, State.DOWN, State.INIT),
        (State.INIT, State.INIT, State.UP),
        (State.INIT, State.UP, State.UP),
        (State.INIT, State.ADMIN_DOWN, State.DOWN),
        (State.UP, State.DOWN, State.DOWN),
        (State.UP, State.INIT, State.UP),
        (State.UP, State.UP, State.UP),
        (State.UP, State.ADMIN_DOWN, State.DOWN),
        (State.ADMIN_DOWN, State.UP, State.ADMIN_DOWN),
    ],
)
def test_receive_follows_the_rfc_table(local: State, remote: State, expected: State) -> None:
    start = dataclasses.replace(fresh(), state=local)
    assert bfd.receive(start, packet(state=remote), 1.0).state == expected


def test_neighbor_down_and_admin_down_set_diagnostic_3() -> None:
    up = dataclasses.replace(fresh(), state=State.UP)
    assert bfd.receive(up, packet(state=State.DOWN), 1.0).local_diagnostic == 3
    assert bfd.receive(up, packet(state=State.ADMIN_DOWN), 1.0).local_diagnostic == 3


def test_detection_time_is_the_remote_multiplier_times_the_slower_interval() -> None:
    s = bfd.receive(fresh(), packet(detect_multiplier=5, desired_min_tx=400_000), 10.0)
    assert s.detection_time_us == 5 * 400_000
    assert s.detect_deadline == pytest.approx(12.0)
    s = bfd.receive(fresh(), packet(detect_multiplier=3, desired_min_tx=100_000), 10.0)
    assert s.detection_time_us == 3 * 300_000  # our required min rx is slower


def test_expiry_takes_up_to_down_with_diagnostic_1_and_forgets_the_remote() -> None:
    s = bfd.receive(dataclasses.replace(fresh(), state=State.INIT), packet(state=State.UP), 1.0)
    assert s.state == State.UP
    assert bfd.expire(s, 1.89).state == State.UP
    down = bfd.expire(s, 1.91)
    assert down.state == State.DOWN
    assert down.local_diagnostic == Diagnostic.DETECTION_TIME_EXPIRED
    assert down.remote_discriminator == 0


def test_slow_timers_until_up_then_a_poll_sequence_to_the_configured_rate() -> None:
    s = fresh()
    s, first = bfd.transmit(s, 0.0, 0.0)
    assert first.desired_min_tx == bfd.SLOW_TX_US  # not Up: at least one second
    s = bfd.receive(s, packet(state=State.INIT), 0.1)
    assert s.state == State.UP
    s, sent = bfd.transmit(s, s.next_tx, 0.0)
    assert sent.poll and sent.desired_min_tx == 300_000
    # A faster rate applies at once, before the Final.
    assert s.transmit_interval_us == 300_000
    s = bfd.receive(s, packet(state=State.UP, final=True, your_discriminator=42), 0.5)
    assert not s.polling
    s, sent = bfd.transmit(s, s.next_tx, 0.0)
    assert not sent.poll


def test_a_poll_is_answered_by_a_final_at_once() -> None:
    s = bfd.receive(fresh(), packet(state=State.INIT), 0.0)
    s, _ = bfd.transmit(s, 0.0, 0.0)
    s = bfd.receive(s, packet(state=State.UP, poll=True), 0.05)
    assert bfd.due(s, 0.05)  # not waiting for the periodic timer
    s, sent = bfd.transmit(s, 0.05, 0.0)
    assert sent.final and not sent.poll


@pytest.mark.parametrize(("multiplier", "low", "high"), [(3, 0.75, 1.0), (1, 0.75, 0.90)])
def test_jitter_stays_inside_the_rfc_range(multiplier: int, low: float, high: float) -> None:
    timers = dataclasses.replace(TIMERS, multiplier=multiplier)
    s = dataclasses.replace(bfd.new_session(1, timers, 0.0), tx_interval_us=1_000_000)
    for jitter in (0.0, 0.5, 0.999):
        after, _ = bfd.transmit(s, 0.0, jitter)
        assert low - 1e-9 <= after.next_tx <= high + 1e-9


def test_no_periodic_packets_to_a_remote_that_asks_for_none() -> None:
    s = bfd.receive(fresh(), packet(required_min_rx=0), 0.0)
    assert not bfd.due(s, 100.0)


def test_admin_down_sends_diagnostic_7_at_once_and_ignores_the_remote() -> None:
    up = dataclasses.replace(fresh(), state=State.UP, next_tx=99.0)
    down = bfd.admin_down(up, 5.0)
    assert bfd.due(down, 5.0)
    _, sent = bfd.transmit(down, 5.0, 0.0)
    assert sent.state == State.ADMIN_DOWN and sent.diagnostic == 7
    assert bfd.receive(down, packet(state=State.UP), 6.0).state == State.ADMIN_DOWN


def test_two_sessions_come_up_and_one_notices_the_others_death_in_a_detection_time() -> None:
    """Two state machines wired back to back through encode/decode, time driven by hand."""
    a = bfd.new_session(1, TIMERS, 0.0)
    b = bfd.new_session(2, TIMERS, 0.0)
    now = 0.0
    while now < 5.0:
        for this, that in ((0, 1), (1, 0)):
            sessions = [a, b]
            if bfd.due(sessions[this], now):
                sessions[this], sent = bfd.transmit(sessions[this], now, 0.5)
                sessions[that] = bfd.receive(sessions[that], decode(encode(sent)), now)
            a, b = sessions
        now += 0.01
    assert a.state == b.state == State.UP
    assert a.transmit_interval_us == b.transmit_interval_us == 300_000
    # b goes silent: a must be Down within one detection time (0.9 s) and not before.
    silent_from = now
    while a.state == State.UP:
        if bfd.due(a, now):
            a, _ = bfd.transmit(a, now, 0.5)
        a = bfd.expire(a, now)
        now += 0.01
    assert 0.6 < now - silent_from <= 0.9 + 0.02
    assert a.local_diagnostic == Diagnostic.DETECTION_TIME_EXPIRED


def test_a_faster_remote_gets_the_next_packet_by_the_new_interval() -> None:
    """FRR leaves its slow rate by a Poll that lowers its RequiredMinRx from 1 s to 300 ms,
    and from its Final on it expects a packet within 0.9 s: the packet already scheduled
    by the old 1 s interval would come too late (a flap seen against FRR's bfdd)."""
    s = bfd.receive(fresh(), packet(state=State.INIT, required_min_rx=1_000_000), 0.0)
    s, _ = bfd.transmit(s, 0.0, 0.0)
    assert s.next_tx == pytest.approx(1.0)
    s = bfd.receive(s, packet(state=State.UP, poll=True, required_min_rx=300_000), 0.1)
    assert s.next_tx <= 0.1 + 0.3


# ----------------------------------------------------- the daemon's reading of the child


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '{"state": {"peer": "192.0.2.2", "state": "up", "diagnostic": 0, "at": 5.5}}',
            BfdState("192.0.2.2", "up", 0, 5.5),
        ),
        (
            '{"dropped": {"ttl": 3, "bogus": 1, "short": -1}}',
            DropTotals((("other", 1), ("ttl", 3))),
        ),
        (
            '{"max_tx_gap": {"192.0.2.2": 0.31, "x": 1, "192.0.2.6": -1}}',
            TxGaps((("192.0.2.2", 0.31),)),
        ),
        ('{"started": true}', None),
        ("not json", None),
        ("[1, 2]", None),
        (
            '{"state": {"peer": "192.0.2.2\\nannounce", "state": "up", "diagnostic": 0, "at": 1}}',
            None,
        ),
        ('{"state": {"peer": "192.0.2.2", "state": "sideways", "diagnostic": 0, "at": 1}}', None),
        ('{"state": {"peer": "192.0.2.2", "state": "up", "diagnostic": 99, "at": 1}}', None),
        ('{"state": {"peer": "192.0.2.2", "state": "up", "diagnostic": 0, "at": "x"}}', None),
        ('{"state": {"peer": "192.0.2.2", "state": "up"}}', None),
    ],
)
def test_the_childs_lines_are_parsed_strictly(line: str, expected: object) -> None:
    assert parse_line(line) == expected


def test_peers_document_lists_only_peers_with_bfd() -> None:
    parsed = config_load.parse(
        {
            "node_name": "n1",
            "bgp": {
                "asn": 64512,
                "peers": [
                    {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
                    {
                        "address": "192.0.2.6",
                        "asn": 64500,
                        "local_address": "192.0.2.5",
                        "bfd": {"min_rx": 250},
                    },
                ],
            },
            "vips": {"allowed": ["198.51.100.0/24"]},
        },
        environ={},
    )
    document = bfd_peers(parsed.bgp.peers)
    assert document == [
        {"peer": "192.0.2.6", "local": "192.0.2.5", "min_tx": 300, "min_rx": 250, "multiplier": 3}
    ]
    assert parse_peers(json.dumps(document))[0].timers == bfd.Timers(300_000, 250_000, 3)


GOOD_PEER = {"peer": "192.0.2.2", "local": "192.0.2.1", "min_tx": 300, "min_rx": 300}
GOOD_PEER["multiplier"] = 3


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{}",
        json.dumps([{k: v for k, v in GOOD_PEER.items() if k != "multiplier"}]),
        json.dumps([GOOD_PEER | {"local": "2001:db8::1"}]),
        json.dumps([GOOD_PEER | {"min_tx": 0}]),
        json.dumps([GOOD_PEER | {"min_tx": True}]),
        json.dumps([GOOD_PEER | {"peer": "x"}]),
        json.dumps([GOOD_PEER | {"extra": 1}]),
    ],
)
def test_the_child_refuses_a_bad_peers_document(text: str) -> None:
    assert parse_peers(json.dumps([GOOD_PEER]))  # the base case is good
    with pytest.raises((ValueError, TypeError)):
        parse_peers(text)


def test_a_local_address_that_is_not_here_reports_the_peer_down_and_ends() -> None:
    """No silent 'up without BFD': the peer is reported down, the thread (process) ends,
    and the daemon restarts the BFD process with backoff until the address exists."""
    published: list[BfdPeerState] = []
    peer = BfdPeer(ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("192.0.2.77"), TIMERS)
    thread = BfdThread((peer,), published.append, lambda reason: None)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert [(p.peer, p.state) for p in published] == [("192.0.2.2", "down")]


def test_a_dead_bfd_process_leaves_every_session_down_not_its_last_state() -> None:
    """The child reports changes only; when it dies, the supervisor reports each peer
    down (its last report may have been "up"), then restarts it after the backoff."""
    parsed = config_load.parse(
        {
            "node_name": "n1",
            "bgp": {
                "asn": 64512,
                "peers": [
                    {"address": "127.0.0.2", "asn": 64500, "local_address": "127.0.0.1"}
                    | {"bfd": {}}
                ],
            },
            "vips": {"allowed": ["198.51.100.0/24"]},
        },
        environ={},
    )
    published: list[BfdState] = []
    supervisor = BfdSupervisor(parsed.bgp.peers, published.append, Metrics())
    supervisor.start()
    try:
        process = supervisor._process
        assert process is not None
        process.kill()
        process.wait(5)
        supervisor.tick(100.0)
        assert [(s.peer, s.state) for s in published if s.state == "down"] == [
            ("127.0.0.2", "down")
        ]
        supervisor.tick(100.0 + RESTART_BACKOFF[0])  # restarted after the backoff
        assert supervisor._process is not process and supervisor._process.poll() is None
    finally:
        supervisor.stop(3.0)
