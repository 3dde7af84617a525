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
``ifaddrmsg`` and ``rtmsg`` are small fixed kernel ABIs, so :func:`address_request` and
:func:`local_route_request` pack them with ``struct`` (unit tests check them byte for
byte against pyroute2's encoder), much cheaper than pyroute2's encoder;
docs/performance.md has the figures.

The dumps the address tables need (:meth:`NetlinkBatch.addresses`,
:meth:`NetlinkBatch.routes`) go over that same socket and are decoded by pyroute2's own
message classes: pyroute2 stays the codec, but its ``IPRoute`` is not imported for them.
``pyroute2.iproute`` imports nearly all of pyroute2 (its request filters, traffic control
and its plugins, the mock ``IPRoute`` with ``unittest.mock``): the netif imports took
53 ms of the start's main thread with it, 8 ms without (docs/performance.md). Only the
rare paths open an ``IPRoute`` (:func:`open_iproute`): creating a missing VIP
interface, and ``output: kernel-table``.

Used by the reconciler thread only; the netlink sockets are never shared.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from kvip_bgp.runtime.imports import register_without_init

register_without_init("pyroute2")  # see runtime.imports

# Not pyroute2.iproute here (see the module's doc): these are light.
from pyroute2.netlink import (  # noqa: E402 (after the registration)
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError as NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import RTM_DELADDR as RTM_DELADDR  # noqa: E402
from pyroute2.netlink.rtnl import RTM_DELROUTE as RTM_DELROUTE  # noqa: E402
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETROUTE  # noqa: E402
from pyroute2.netlink.rtnl import RTM_NEWADDR as RTM_NEWADDR  # noqa: E402
from pyroute2.netlink.rtnl import RTM_NEWROUTE as RTM_NEWROUTE  # noqa: E402
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg  # noqa: E402
from pyroute2.netlink.rtnl.rtmsg import rtmsg  # noqa: E402

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
# A whole local route request in one pack, per family: nlmsghdr (length, type, flags,
# sequence, port), rtmsg (family, dst/src len, tos, table, proto, scope, type, flags),
# RTA_DST (length, type, the address), RTA_OIF (length, type, the interface). It runs for
# every IPv4 VIP bound by default: 0.95 -> 0.45 us a request against packing each part
# and joining them (timeit, 10,000 requests).
_LOCAL_ROUTE_V4: Final = struct.Struct("=IHHII BBBBBBBBI HH4s HHi")
_LOCAL_ROUTE_V6: Final = struct.Struct("=IHHII BBBBBBBBI HH16s HHi")


def _attribute(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def address_request(
    kind: int, vip: IPAddress, index: int, sequence: int, ack: bool = True
) -> bytes:
    """One ``RTM_NEWADDR`` (ours: marked ``ADDRESS_PROTO``, IPv6 without DAD) or
    ``RTM_DELADDR`` request for host address ``vip`` on interface ``index``; ``ack``: the
    request asks for an ack (see ``requests``)."""
    flags = (NLM_F_REQUEST | NLM_F_ACK) if ack else NLM_F_REQUEST
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


RequestBuilder = Callable[[IPAddress, int, bool], bytes]  # (vip, sequence, ack) -> a request


def local_route_request(
    kind: int, vip: IPAddress, index: int, sequence: int, ack: bool = True
) -> bytes:
    """One ``RTM_NEWROUTE`` or ``RTM_DELROUTE`` for ``local VIP dev <index> table local``,
    with route protocol ``ADDRESS_PROTO`` (on delete the kernel matches it, so a route of
    anyone else, such as the kernel's own for an address, is never removed); ``ack``: the
    request asks for an ack (see ``requests``)."""
    flags = (NLM_F_REQUEST | NLM_F_ACK) if ack else NLM_F_REQUEST
    if kind == RTM_NEWROUTE:
        flags |= NLM_F_CREATE | NLM_F_EXCL
    v6 = vip.version == 6
    layout = _LOCAL_ROUTE_V6 if v6 else _LOCAL_ROUTE_V4
    address = vip.packed
    return layout.pack(
        layout.size,
        kind,
        flags,
        sequence,
        0,  # port
        socket.AF_INET6 if v6 else socket.AF_INET,
        128 if v6 else 32,  # dst_len
        0,  # src_len
        0,  # tos
        RT_TABLE_LOCAL,
        ADDRESS_PROTO,
        RT_SCOPE_HOST,
        RTN_LOCAL,
        0,  # flags
        _RTATTR.size + len(address),
        _RTA_DST,
        address,
        _RTATTR.size + 4,
        _RTA_OIF,
        index,
    )


def requests(build: RequestBuilder, vips: Sequence[IPAddress], first: int) -> bytes:
    """``build`` for each of ``vips``, numbered from ``first``, for one ``send``: only
    the last request asks for an ack.

    Why: an ack per request is a message per request for the kernel to build and for
    the reconciler to read, 10,000 of each in a cold start; a request that fails is
    answered all the same. The flag is set as each request is built: clearing it
    afterwards in the joined bytes, request by request, cost a fifth of building them
    (10,000 local routes; this and the packing above together: 1.22 -> 0.49 us a
    request).
    """
    last = len(vips) - 1
    return b"".join([build(vip, first + n, n == last) for n, vip in enumerate(vips)])


class InterfaceError(Exception):
    """The VIP interface is missing and cannot be created; the message says what to do."""


def interface_index(name: str) -> int | None:
    """The index of interface ``name`` in the calling thread's namespace, None if it has none.

    ``if_nametoindex`` needs no ``IPRoute`` and finds what ``link_lookup(ifname=name)``
    found; a name the kernel cannot have (too long, a NUL in it) names no interface, as
    pyroute2 answered (its lookup's error became an empty list).
    """
    try:
        return socket.if_nametoindex(name)
    except (OSError, ValueError):
        return None


def open_iproute() -> Any:
    """A new pyroute2 ``IPRoute``, its module imported only now (see the module's doc)."""
    from pyroute2.iproute import IPRoute

    return IPRoute()


def create_dummy(name: str) -> int:
    """Create interface ``name`` as a dummy link, set it up, and return its index.

    Rare (the configured VIP interface is missing), so it may open an ``IPRoute``;
    ``NetlinkError`` when the kernel refuses, as when it lacks the dummy driver.
    """
    with open_iproute() as ipr:
        ipr.link("add", ifname=name, kind="dummy")
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")
        return int(ipr.link_lookup(ifname=name)[0])


@dataclass(frozen=True)
class LocalAddress:
    address: IPAddress
    owned: bool


class NetlinkBatch:
    """Many address or route requests per ``send``, each error matched by its sequence
    number; and the two dumps the address tables read, on the same socket.

    A socket of its own, not pyroute2's: no ``IPRoute`` is needed (see the module's doc).
    One request or dump at a time: messages of an earlier, abandoned one carry older
    sequence numbers and are skipped.
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
        """Send a chunk; only its last request asks for an ack (see ``requests``).

        The kernel handles one send's requests in order and answers each failure with an
        error of its sequence number, acked or not, so once the last request's answer is
        in, every request without an error has succeeded.
        """
        first = self._sequence + 1
        last = first + len(vips) - 1
        self._sequence += len(vips)
        self._sock.send(requests(build, vips, first))
        errors: dict[int, int] = {}
        while last not in errors:
            buffer = self._sock.recv(1 << 20)
            for offset, message_type, sequence in _headers(buffer):
                if message_type == NLMSG_ERROR and first <= sequence <= last:
                    (code,) = struct.unpack_from("=i", buffer, offset + _NLMSG_HEADER.size)
                    errors[sequence] = -code
        return [errors.get(first + offset, 0) for offset in range(len(vips))]

    def addresses(self, index: int) -> list[Any]:
        """What ``IPRoute.get_addr(index=index)`` returns: every address on interface
        ``index``, both families, as pyroute2's ``ifaddrmsg``, in the kernel's order.

        As pyroute2 does, the kernel dumps the addresses of every interface (family
        ``AF_UNSPEC``) and the interface is matched here.
        """
        header = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        dumped = self._dump(RTM_GETADDR, header, RTM_NEWADDR, ifaddrmsg)
        return [message for message in dumped if message.get("index") == index]

    def routes(self, family: int, table: int) -> list[Any]:
        """What ``IPRoute.get_routes(family=family, table=table)`` returns: every route of
        ``family`` in ``table``, as pyroute2's ``rtmsg``, in the kernel's order.

        The kernel dumps every table; the table is matched here as pyroute2's filter does
        (``get("table")``: ``RTA_TABLE``, which holds ids above 255, before the header's
        one-byte field).
        """
        header = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        dumped = self._dump(RTM_GETROUTE, header, RTM_NEWROUTE, rtmsg)
        return [message for message in dumped if message.get("table") == table]

    def _dump(self, kind: int, header: bytes, reply: int, message_class: Any) -> list[Any]:
        """Send dump request ``kind`` (``header``: its fixed part, no attributes) and
        decode every ``reply`` message of it with ``message_class`` until ``NLMSG_DONE``.

        The request is what pyroute2 sends for the same dump. An error answer raises what
        pyroute2 raises (``NetlinkError``; ``OSError`` for ENOBUFS).
        """
        self._sequence += 1
        sequence = self._sequence
        flags = NLM_F_REQUEST | NLM_F_DUMP
        length = _NLMSG_HEADER.size + len(header)
        self._sock.send(_NLMSG_HEADER.pack(length, kind, flags, sequence, 0) + header)
        messages: list[Any] = []
        while True:
            buffer = self._sock.recv(1 << 20)
            for offset, message_type, number in _headers(buffer):
                if number != sequence:
                    continue
                if message_type == NLMSG_DONE:
                    return messages
                if message_type == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", buffer, offset + _NLMSG_HEADER.size)
                    if code == 0:
                        return messages
                    if -code == errno.ENOBUFS:
                        raise OSError(-code, os.strerror(-code))
                    raise NetlinkError(-code)
                if message_type == reply:
                    message = message_class(buffer, offset=offset)
                    message.decode()
                    messages.append(message)


def _headers(buffer: bytes) -> Iterator[tuple[int, int, int]]:
    """(offset, type, sequence number) of each netlink message in ``buffer``, in order.

    A length shorter than a header is the kernel's bug or a corrupt buffer: an error,
    never a loop."""
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(buffer):
        length, message_type, _flags, sequence, _port = _NLMSG_HEADER.unpack_from(buffer, offset)
        if length < _NLMSG_HEADER.size:
            raise OSError(errno.EPROTO, "malformed netlink message from the kernel")
        yield offset, message_type, sequence
        offset += (length + 3) & ~3
