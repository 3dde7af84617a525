"""Wire capture beside the receiver: when each UPDATE reached the receiver's interface.

The receiver (``receiver.py``) stamps an UPDATE when its passive ExaBGP has parsed it,
turned it into JSON and written it to a pipe, and the helper has read the line: under
churn that ExaBGP and the helper are two more Python processes on the same two cores,
and their delay is the instrument's, not the speaker's. This process, run in the
receiver's namespace, reads every frame of the link with an ``AF_PACKET`` socket and
takes the time the kernel gave each frame (``SO_TIMESTAMPNS``) when it arrived: the
moment the UPDATE was on the ToR's side of the wire. It rebuilds the TCP byte stream
from the node to port 179 (a new SYN starts a new session), splits it into BGP
messages and writes, for each prefix of each UPDATE, a line in ``receiver.py``'s format:
``MONOTONIC_TIME A|W PREFIX``, stamped with the frame that completed the message.

The kernel's stamp is wall-clock time; it is brought to CLOCK_MONOTONIC (what the bench
compares with) by the difference of the two clocks read at each receive.

Usage: wire.py INTERFACE NODE_ADDRESS OUTFILE
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35  # SCM_TIMESTAMPNS is the same number
BGP_HEADER = 19
UPDATE = 2
MP_REACH, MP_UNREACH = 14, 15
AFI_BITS = {1: 32, 2: 128}


@dataclass
class TcpStream:
    """One direction of a TCP connection, reassembled in sequence order."""

    next_seq: int | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    buffer: bytearray = field(default_factory=bytearray)

    def segment(self, seq: int, syn: bool, payload: bytes) -> None:
        if syn:  # a new session: whatever was left belongs to the old one
            self.next_seq, self.pending, self.buffer = (seq + 1) & 0xFFFFFFFF, {}, bytearray()
            return
        if self.next_seq is None or not payload:
            return  # joined mid-stream: no message boundary to start from
        self.pending[seq] = payload
        while self.pending:
            for start, data in list(self.pending.items()):
                behind = (self.next_seq - start) & 0xFFFFFFFF
                if behind >= 1 << 31:  # still ahead of what we have: wait for the gap
                    continue
                del self.pending[start]
                if behind < len(data):  # a retransmission may overlap what we have
                    self.buffer += data[behind:]
                    self.next_seq = (start + len(data)) & 0xFFFFFFFF
                break
            else:
                return

    def messages(self) -> Iterator[bytes]:
        """Complete BGP messages, taken off the front of the buffer."""
        while len(self.buffer) >= BGP_HEADER:
            length = struct.unpack_from("!H", self.buffer, 16)[0]
            if length < BGP_HEADER or len(self.buffer) < length:
                return
            message = bytes(self.buffer[:length])
            del self.buffer[:length]
            yield message


def prefixes(data: bytes, bits: int) -> Iterator[str]:
    """The prefixes of an NLRI field (RFC 4271 4.3: a length in bits, then the bytes)."""
    at = 0
    while at < len(data):
        length = data[at]
        size = (length + 7) // 8
        raw = data[at + 1 : at + 1 + size].ljust(bits // 8, b"\0")
        at += 1 + size
        address = ipaddress.IPv4Address(raw) if bits == 32 else ipaddress.IPv6Address(raw)
        yield f"{address}/{length}"


def update_prefixes(message: bytes) -> list[tuple[str, str]]:
    """(``A`` or ``W``, prefix) for each route an UPDATE announces or withdraws."""
    if len(message) < BGP_HEADER + 4 or message[18] != UPDATE:
        return []
    body = message[BGP_HEADER:]
    withdrawn_len = struct.unpack_from("!H", body, 0)[0]
    rows = [("W", p) for p in prefixes(body[2 : 2 + withdrawn_len], 32)]
    at = 2 + withdrawn_len
    attrs_len = struct.unpack_from("!H", body, at)[0]
    attrs, nlri = body[at + 2 : at + 2 + attrs_len], body[at + 2 + attrs_len :]
    i = 0
    while i + 3 <= len(attrs):
        flags, kind = attrs[i], attrs[i + 1]
        if flags & 0x10:  # extended length
            length, i = struct.unpack_from("!H", attrs, i + 2)[0], i + 4
        else:
            length, i = attrs[i + 2], i + 3
        value, i = attrs[i : i + length], i + length
        if kind in (MP_REACH, MP_UNREACH) and len(value) >= 3:
            afi = struct.unpack_from("!H", value, 0)[0]
            if afi not in AFI_BITS:
                continue
            if kind == MP_REACH:
                next_hop_len = value[3]
                routes = value[5 + next_hop_len :]  # past the next hop and a reserved byte
                rows += [("A", p) for p in prefixes(routes, AFI_BITS[afi])]
            else:
                rows += [("W", p) for p in prefixes(value[3:], AFI_BITS[afi])]
    rows += [("A", p) for p in prefixes(nlri, 32)]
    return rows


def tcp_to_bgp(frame: bytes, node: bytes) -> tuple[int, bool, bytes] | None:
    """(sequence number, SYN, payload) of an Ethernet frame carrying TCP from ``node`` to
    port 179 over IPv4; None for any other frame."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header = (ip[0] & 0x0F) * 4
    if ip[9] != socket.IPPROTO_TCP or ip[12:16] != node:
        return None
    total = struct.unpack_from("!H", ip, 2)[0]
    tcp = ip[header:total]
    if len(tcp) < 20 or struct.unpack_from("!H", tcp, 2)[0] != 179:
        return None
    seq = struct.unpack_from("!I", tcp, 4)[0]
    syn = bool(tcp[13] & 0x02)
    return seq, syn, bytes(tcp[(tcp[12] >> 4) * 4 :])


def stamp_of(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = struct.unpack_from("@qq", data)
            return float(seconds + nanos / 1e9)
    return None


def main() -> int:
    interface, node, out_path = sys.argv[1], socket.inet_aton(sys.argv[2]), sys.argv[3]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((interface, 0))
    stream = TcpStream()
    with open(out_path, "a", buffering=1 << 16) as out:
        while True:
            frame, ancillary, _flags, _address = sock.recvmsg(1 << 18, 64)
            offset = time.time() - time.monotonic()
            wall = stamp_of(ancillary)
            stamp = (wall if wall is not None else time.time()) - offset
            segment = tcp_to_bgp(frame, node)
            if segment is None:
                continue
            stream.segment(*segment)
            rows = [
                f"{stamp} {kind} {prefix}\n"
                for message in stream.messages()
                for kind, prefix in update_prefixes(message)
            ]
            if rows:
                out.write("".join(rows))
                out.flush()


if __name__ == "__main__":
    raise SystemExit(main())
