"""Local addresses (and kernel routes) through netlink. The only module that uses pyroute2.

Ownership is recorded in the kernel itself: every address kvip-bgp adds carries the
address protocol ``ADDRESS_PROTO`` (``IFA_PROTO``, Linux >= 5.18). After a SIGKILL and a
restart the daemon therefore knows exactly which addresses are its own, and an address
someone else added to the same interface (protocol 0) is never touched, even if it is a
VIP we also want.

With ``vips.bind: local-route`` (:class:`LocalRouteTable`) a VIP is a ``local`` route in
table ``local`` instead, marked by the same number as its route protocol.

The same holds for ``output: kernel-table``: :class:`RouteTable` installs each VIP as a
host route in a configured table with a configured route protocol number, and only routes
carrying that number are ever listed or removed (the kernel itself refuses a delete whose
protocol does not match, so a foreign route in the same table is safe even from a race).

Addresses are added and removed in batches: many requests go to the kernel in one
``send`` on a socket of this table's own, each with its own sequence number, so that
every error is matched to its address (pyroute2's own batch call stops at the first
error without saying which request failed); only the last request of a send is acked.
``ifaddrmsg`` is a small fixed kernel ABI, so :func:`address_request` packs it with
``struct`` (a unit test checks it byte for byte against pyroute2's encoder), much
cheaper than pyroute2's encoder; docs/performance.md has the figures. Dumps, links and
routes still go through pyroute2.

Used by the reconciler thread only; the netlink sockets are never shared.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from kvip_bgp.runtime.imports import register_without_init

register_without_init("pyroute2")  # see runtime.imports

from pyroute2.iproute import IPRoute as IPRoute  # noqa: E402 (after the registration)
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST  # noqa: E402
from pyroute2.netlink.exceptions import NetlinkError as NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import RTM_DELADDR as RTM_DELADDR  # noqa: E402
from pyroute2.netlink.rtnl import RTM_DELROUTE as RTM_DELROUTE  # noqa: E402
from pyroute2.netlink.rtnl import RTM_NEWADDR as RTM_NEWADDR  # noqa: E402
from pyroute2.netlink.rtnl import RTM_NEWROUTE as RTM_NEWROUTE  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD  # noqa: E402

from kvip_bgp.domain.model import IPAddress  # noqa: E402

log = structlog.get_logger("kvip_bgp.netif")

ADDRESS_PROTO: Final = 248  # IFA_PROTO marking "added by kvip-bgp"
EEXIST: Final = 17
ENOENT: Final = 2
EADDRNOTAVAIL: Final = 99
EOPNOTSUPP: Final = 95
ESRCH: Final = 3
RT_SCOPE_LINK: Final = 253
# Requests per send: their errors (36 bytes each with NETLINK_CAP_ACK) must fit the
# receive buffer, and one send must fit the send buffer (~60 bytes per request).
BATCH_SIZE: Final = 500
ACK_TIMEOUT: Final = 5.0
_NLMSG_ERROR: Final = 2
_NLMSG_HEADER: Final = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_SOL_NETLINK: Final = 270
_NETLINK_CAP_ACK: Final = 10
_IFADDRMSG: Final = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTATTR: Final = struct.Struct("=HH")  # length, type
_IFA_ADDRESS: Final = 1
_IFA_LOCAL: Final = 2
_IFA_FLAGS: Final = 8
_IFA_PROTO: Final = 11
_RTMSG: Final = struct.Struct("=BBBBBBBBI")  # family, dst/src len, tos, table, proto, scope, type
RT_TABLE_LOCAL: Final = 255
RT_SCOPE_HOST: Final = 254
RTN_LOCAL: Final = 2
_RTA_DST: Final = 1
_RTA_OIF: Final = 4


def _attribute(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def address_request(kind: int, vip: IPAddress, index: int, sequence: int) -> bytes:
    """One ``RTM_NEWADDR`` (ours: marked ``ADDRESS_PROTO``, IPv6 without DAD) or
    ``RTM_DELADDR`` request for host address ``vip`` on interface ``index``, acked."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    v6 = vip.version == 6
    address = vip.packed
    adding = kind == RTM_NEWADDR
    body = _IFADDRMSG.pack(
        socket.AF_INET6 if v6 else socket.AF_INET,
        vip.max_prefixlen,
        IFA_F_NODAD if adding and v6 else 0,
        0,
        index,
    )
    body += _attribute(_IFA_LOCAL, address) + _attribute(_IFA_ADDRESS, address)
    if adding:
        flags |= NLM_F_CREATE | NLM_F_EXCL
        body += _attribute(_IFA_PROTO, bytes([ADDRESS_PROTO]))
        if v6:
            # No duplicate address detection: a VIP must be usable at once.
            body += _attribute(_IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), kind, flags, sequence, 0) + body


RequestBuilder = Callable[[IPAddress, int], bytes]  # (vip, sequence) -> one request


def local_route_request(kind: int, vip: IPAddress, index: int, sequence: int) -> bytes:
    """One ``RTM_NEWROUTE`` or ``RTM_DELROUTE`` for ``local VIP dev <index> table local``,
    with route protocol ``ADDRESS_PROTO`` (on delete the kernel matches it, so a route of
    anyone else, such as the kernel's own for an address, is never removed)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    if kind == RTM_NEWROUTE:
        flags |= NLM_F_CREATE | NLM_F_EXCL
    body = _RTMSG.pack(
        socket.AF_INET6 if vip.version == 6 else socket.AF_INET,
        vip.max_prefixlen,
        0,  # src_len
        0,  # tos
        RT_TABLE_LOCAL,
        ADDRESS_PROTO,
        RT_SCOPE_HOST,
        RTN_LOCAL,
        0,  # flags
    )
    body += _attribute(_RTA_DST, vip.packed) + _attribute(_RTA_OIF, struct.pack("=i", index))
    return _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), kind, flags, sequence, 0) + body


class InterfaceError(Exception):
    """The VIP interface is missing and cannot be created; the message says what to do."""


@dataclass(frozen=True)
class LocalAddress:
    address: IPAddress
    owned: bool


class NetlinkBatch:
    """Many address or route requests per ``send``, each error matched by its sequence number.

    A socket of its own: pyroute2's sequence numbers and response queue stay undisturbed.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        # Acks carry only the request's header, not the whole request back.
        self._sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        # The kernel acks every request at once; never hang the reconciler on a lost one.
        self._sock.settimeout(ACK_TIMEOUT)
        self._sequence = 0

    def close(self) -> None:
        self._sock.close()

    def request(self, build: RequestBuilder, vips: Sequence[IPAddress]) -> list[int]:
        """``build(vip, sequence)`` sent for each of ``vips``: the errno of each, 0 for success.

        A socket error (a timeout, ENOBUFS) counts for every request of its batch; acks
        of an abandoned batch that arrive later carry old sequence numbers and are skipped.
        """
        results: list[int] = []
        for start in range(0, len(vips), BATCH_SIZE):
            chunk = vips[start : start + BATCH_SIZE]
            try:
                results += self._request_chunk(build, chunk)
            except OSError as error:
                results += [error.errno or errno.EIO] * len(chunk)
        return results

    def _request_chunk(self, build: RequestBuilder, vips: Sequence[IPAddress]) -> list[int]:
        """Send a chunk; only its last request asks for an ack (see ``_acks_only_last``).

        The kernel handles one send's requests in order and answers each failure with an
        error of its sequence number, acked or not, so once the last request's answer is
        in, every request without an error has succeeded.
        """
        first = self._sequence + 1
        last = first + len(vips) - 1
        self._sequence += len(vips)
        data = bytearray(b"".join(build(vip, first + offset) for offset, vip in enumerate(vips)))
        _acks_only_last(data)
        self._sock.send(data)
        errors: dict[int, int] = {}
        while last not in errors:
            buffer = self._sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(buffer):
                length, message_type, _flags, sequence, _port = _NLMSG_HEADER.unpack_from(
                    buffer, offset
                )
                if length < _NLMSG_HEADER.size:
                    raise OSError(errno.EPROTO, "malformed netlink message from the kernel")
                if message_type == _NLMSG_ERROR and first <= sequence <= last:
                    (code,) = struct.unpack_from("=i", buffer, offset + _NLMSG_HEADER.size)
                    errors[sequence] = -code
                offset += (length + 3) & ~3
        return [errors.get(first + offset, 0) for offset in range(len(vips))]


def _acks_only_last(data: bytearray) -> None:
    """Clear ``NLM_F_ACK`` on every request in ``data`` but the last.

    Why: an ack per request is a message per request for the kernel to build and for
    the reconciler to read, 10,000 of each in a cold start; a request that fails is
    answered all the same.
    """
    offset = 0
    while True:
        (length,) = struct.unpack_from("=I", data, offset)
        following = offset + ((length + 3) & ~3)
        if following >= len(data):
            return
        (flags,) = struct.unpack_from("=H", data, offset + 6)
        struct.pack_into("=H", data, offset + 6, flags & ~NLM_F_ACK)
        offset = following
