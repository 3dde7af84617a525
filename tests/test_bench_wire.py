"""``bench/wire.py``: frames of the node's BGP session back to the prefixes they carry.

The churn row's wire latency is only as good as this decoding: each case builds the
Ethernet, IPv4, TCP and BGP bytes by hand and checks what comes out, including a message
split over two segments, a retransmission, segments out of order and a new session."""

from __future__ import annotations

import socket
import struct

import pytest

from bench.wire import TcpStream, stamp_of, tcp_to_bgp, update_prefixes

NODE, PEER = "203.0.113.1", "203.0.113.2"


def nlri(*prefixes: str) -> bytes:
    out = b""
    for prefix in prefixes:
        address, length = prefix.split("/")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        raw = socket.inet_pton(family, address)
        out += bytes([int(length)]) + raw[: (int(length) + 7) // 8]
    return out


def attribute(kind: int, value: bytes, extended: bool = False) -> bytes:
    if extended:
        return bytes([0x90, kind]) + struct.pack("!H", len(value)) + value
    return bytes([0x40 if kind < 14 else 0x80, kind, len(value)]) + value


def update(withdrawn: bytes = b"", attrs: bytes = b"", announced: bytes = b"") -> bytes:
    body = struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attrs))
    body += attrs + announced
    return b"\xff" * 16 + struct.pack("!HB", 19 + len(body), 2) + body


def keepalive() -> bytes:
    return b"\xff" * 16 + struct.pack("!HB", 19, 4)


IPV4_ATTRS = attribute(1, b"\x00") + attribute(2, b"") + attribute(3, socket.inet_aton(NODE))


def mp_reach(*prefixes: str) -> bytes:
    next_hop = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    value = struct.pack("!HBB", 2, 1, len(next_hop)) + next_hop + b"\x00" + nlri(*prefixes)
    return attribute(14, value, extended=True)


def mp_unreach(*prefixes: str) -> bytes:
    return attribute(15, struct.pack("!HB", 2, 1) + nlri(*prefixes))


@pytest.mark.parametrize(
    ("message", "rows"),
    [
        (update(attrs=IPV4_ATTRS, announced=nlri("100.64.0.1/32")), [("A", "100.64.0.1/32")]),
        (
            update(attrs=IPV4_ATTRS, announced=nlri("100.64.0.1/32", "100.64.1.0/24")),
            [("A", "100.64.0.1/32"), ("A", "100.64.1.0/24")],
        ),
        (update(withdrawn=nlri("100.64.0.9/32")), [("W", "100.64.0.9/32")]),
        (
            update(withdrawn=nlri("10.0.0.0/8"), attrs=IPV4_ATTRS, announced=nlri("0.0.0.0/0")),
            [("W", "10.0.0.0/8"), ("A", "0.0.0.0/0")],
        ),
        (
            update(attrs=attribute(1, b"\x00") + mp_reach("2001:db8:5::1/128")),
            [("A", "2001:db8:5::1/128")],
        ),
        (update(attrs=mp_unreach("2001:db8:5::/64")), [("W", "2001:db8:5::/64")]),
        (update(), []),  # End-of-RIB
        (keepalive(), []),
    ],
)
def test_an_update_gives_its_prefixes(message: bytes, rows: list[tuple[str, str]]) -> None:
    assert update_prefixes(message) == rows


def frame(seq: int, payload: bytes, syn: bool = False, src: str = NODE, dport: int = 179) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40000, dport, seq, 0, 5 << 4, 0x02 if syn else 0x18, 0, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0, socket.inet_aton(src),
                     socket.inet_aton(PEER))  # fmt: skip
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + tcp + payload + b"\x00" * 4


def run(frames: list[bytes]) -> list[list[tuple[str, str]]]:
    """What each frame completes, as the capture loop would write it."""
    stream, out = TcpStream(), []
    node = socket.inet_aton(NODE)
    for raw in frames:
        segment = tcp_to_bgp(raw, node)
        if segment is None:
            out.append([])
            continue
        stream.segment(*segment)
        out.append([row for m in stream.messages() for row in update_prefixes(m)])
    return out


ONE = update(attrs=IPV4_ATTRS, announced=nlri("100.64.0.1/32"))
TWO = update(withdrawn=nlri("100.64.0.2/32"))


def test_a_message_split_over_segments_is_stamped_by_the_last() -> None:
    assert run([frame(99, b"", syn=True), frame(100, ONE[:10]), frame(110, ONE[10:] + TWO)]) == [
        [],
        [],
        [("A", "100.64.0.1/32"), ("W", "100.64.0.2/32")],
    ]


def test_retransmitted_and_reordered_segments_count_once() -> None:
    half = len(ONE) // 2
    frames = [
        frame(99, b"", syn=True),
        frame(100 + half, ONE[half:]),  # arrives before the bytes it follows
        frame(100, ONE[:half]),
        frame(100, ONE),  # a retransmission of both
        frame(100 + len(ONE), TWO),
    ]
    assert run(frames) == [[], [], [("A", "100.64.0.1/32")], [], [("W", "100.64.0.2/32")]]


def test_sequence_numbers_wrap() -> None:
    start = 0xFFFFFFFF - 5
    frames = [frame(start - 1, b"", syn=True), frame(start, ONE[:8]), frame(2, ONE[8:])]
    assert run(frames)[-1] == [("A", "100.64.0.1/32")]


def test_a_new_session_starts_from_its_syn_and_a_stream_joined_late_is_skipped() -> None:
    frames = [
        frame(500, ONE),  # no SYN seen: no message boundary known
        frame(99, ONE[:12], syn=True),
        frame(100, TWO),
    ]
    assert run(frames) == [[], [], [("W", "100.64.0.2/32")]]


def test_other_traffic_is_ignored() -> None:
    assert tcp_to_bgp(frame(1, ONE, src=PEER), socket.inet_aton(NODE)) is None
    assert tcp_to_bgp(frame(1, ONE, dport=80), socket.inet_aton(NODE)) is None
    assert tcp_to_bgp(b"\x00" * 12 + b"\x86\xdd" + b"\x00" * 60, socket.inet_aton(NODE)) is None


def test_the_kernel_stamp_is_read_from_the_ancillary_data() -> None:
    data = struct.pack("@qq", 1_700_000_000, 250_000_000)
    assert stamp_of([(socket.SOL_SOCKET, 35, data)]) == pytest.approx(1_700_000_000.25)
    assert stamp_of([]) is None
