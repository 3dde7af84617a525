"""BFD Control packets (RFC 5880 section 4.1): a frozen value, its encoder and a strict decoder.

Packets arrive from the network, so the decoder trusts nothing: every check of RFC 5880
section 6.8.6 that can be made without a session is made here, and a packet that fails
one is refused with a ``PacketError`` that names the check (its ``reason`` is a metric
label). Authentication (optional in the RFC) is not implemented: a packet with the A bit
is refused, as section 6.8.6 requires of a session that does not use it.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

VERSION: Final = 1
LENGTH: Final = 24
_FORMAT: Final = struct.Struct("!BBBBIIIII")
MAX_U32: Final = 0xFFFFFFFF

_POLL: Final = 0x20
_FINAL: Final = 0x10
_CPI: Final = 0x08
_AUTH: Final = 0x04
_DEMAND: Final = 0x02
_MULTIPOINT: Final = 0x01


class State(enum.IntEnum):
    """bfd.SessionState and the State field (section 4.1)."""

    ADMIN_DOWN = 0
    DOWN = 1
    INIT = 2
    UP = 3


class Diagnostic(enum.IntEnum):
    """The Diag field (section 4.1): why the sender's session last left Up."""

    NONE = 0
    DETECTION_TIME_EXPIRED = 1
    ECHO_FAILED = 2
    NEIGHBOR_DOWN = 3
    FORWARDING_RESET = 4
    PATH_DOWN = 5
    CONCATENATED_PATH_DOWN = 6
    ADMINISTRATIVELY_DOWN = 7
    REVERSE_CONCATENATED_PATH_DOWN = 8


class PacketError(ValueError):
    """A packet refused on receipt; ``reason`` is a short stable label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """One BFD Control packet without authentication. Intervals are in microseconds."""

    state: State
    diagnostic: int  # a Diagnostic; values 9..31 are reserved and kept as received
    detect_multiplier: int
    my_discriminator: int
    your_discriminator: int
    desired_min_tx: int
    required_min_rx: int
    required_min_echo_rx: int = 0
    poll: bool = False
    final: bool = False
    control_plane_independent: bool = False
    demand: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.detect_multiplier <= 255:
            raise ValueError(f"detect_multiplier {self.detect_multiplier}: must be 1..255")
        if not 0 <= self.diagnostic <= 31:
            raise ValueError(f"diagnostic {self.diagnostic}: must be 0..31")
        for name in (
            "my_discriminator",
            "your_discriminator",
            "desired_min_tx",
            "required_min_rx",
            "required_min_echo_rx",
        ):
            value = getattr(self, name)
            if not 0 <= value <= MAX_U32:
                raise ValueError(f"{name} {value}: must be 0..{MAX_U32}")
        if self.poll and self.final:
            raise ValueError("poll and final must not both be set (RFC 5880 6.5)")


def encode(packet: ControlPacket) -> bytes:
    """The 24 bytes on the wire."""
    flags = (
        (_POLL if packet.poll else 0)
        | (_FINAL if packet.final else 0)
        | (_CPI if packet.control_plane_independent else 0)
        | (_DEMAND if packet.demand else 0)
    )
    return _FORMAT.pack(
        (VERSION << 5) | int(packet.diagnostic),
        (int(packet.state) << 6) | flags,
        packet.detect_multiplier,
        LENGTH,
        packet.my_discriminator,
        packet.your_discriminator,
        packet.desired_min_tx,
        packet.required_min_rx,
        packet.required_min_echo_rx,
    )


def decode(data: bytes) -> ControlPacket:
    """Parse and check one datagram's payload; raise ``PacketError`` naming the first problem."""
    if len(data) < LENGTH:
        raise PacketError("short", f"{len(data)} bytes, a Control packet has at least {LENGTH}")
    first, second, multiplier, length, mine, yours, tx, rx, echo = _FORMAT.unpack_from(data)
    version = first >> 5
    if version != VERSION:
        raise PacketError("version", f"version {version}, only {VERSION} is spoken")
    if second & _AUTH:
        raise PacketError("authentication", "the A bit is set; authentication is not supported")
    if length < LENGTH:
        raise PacketError("length", f"length field {length} < {LENGTH}")
    if length > len(data):
        raise PacketError("length", f"length field {length} > {len(data)} bytes received")
    if multiplier == 0:
        raise PacketError("multiplier", "detect multiplier is 0")
    if second & _MULTIPOINT:
        raise PacketError("multipoint", "the M bit is set")
    if mine == 0:
        raise PacketError("discriminator", "my discriminator is 0")
    poll, final = bool(second & _POLL), bool(second & _FINAL)
    if poll and final:
        raise PacketError("flags", "poll and final both set")
    return ControlPacket(
        state=State(second >> 6),
        diagnostic=first & 0x1F,
        detect_multiplier=multiplier,
        my_discriminator=mine,
        your_discriminator=yours,
        desired_min_tx=tx,
        required_min_rx=rx,
        required_min_echo_rx=echo,
        poll=poll,
        final=final,
        control_plane_independent=bool(second & _CPI),
        demand=bool(second & _DEMAND),
    )
