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
every ack is matched to its address. Measured at 10,000 addresses on the lab machine:
one ``IPRoute.addr()`` round trip each took 4.3 s, pyroute2's ``nlm_request_batch`` 2.4 s
(and it stops at the first error without saying which request failed), batches of
pyroute2-encoded messages 1.2 s, of which 0.6 s was pyroute2 building and encoding the
messages. ``ifaddrmsg`` is a small fixed kernel ABI, so :func:`address_request` packs
it with ``struct`` (a unit test checks it byte for byte against pyroute2's encoder):
0.02 s for 10,000, CPU the other threads of the daemon get back. ``bind_many`` of 10,000
measured 1.4 s end to end on an idle machine, ``unbind_many`` 0.95 s; the rest is the
kernel. Dumps, links and routes still go through pyroute2.

Used by the reconciler thread only; the netlink sockets are never shared.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from kvip_bgp.model import IPAddress

log = structlog.get_logger("kvip_bgp.netif")

ADDRESS_PROTO: Final = 248  # IFA_PROTO marking "added by kvip-bgp"
_EEXIST: Final = 17
_ENOENT: Final = 2
_EADDRNOTAVAIL: Final = 99
_EOPNOTSUPP: Final = 95
_ESRCH: Final = 3
_RT_SCOPE_LINK: Final = 253
# Requests per send: their acks (36 bytes each with NETLINK_CAP_ACK) must fit the
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
_RT_TABLE_LOCAL: Final = 255
_RT_SCOPE_HOST: Final = 254
_RTN_LOCAL: Final = 2
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
        _RT_TABLE_LOCAL,
        ADDRESS_PROTO,
        _RT_SCOPE_HOST,
        _RTN_LOCAL,
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


@dataclass(frozen=True)
class BindResult:
    """What one ``bind_many`` did: ours now, someone else's (left alone), failed."""

    bound: frozenset[IPAddress]
    foreign: frozenset[IPAddress]
    failed: tuple[tuple[IPAddress, OSError], ...]


class _NetlinkBatch:
    """Many address or route requests per ``send``, each ack matched by its sequence number.

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
        first = self._sequence + 1
        self._sequence += len(vips)
        self._sock.send(b"".join(build(vip, first + offset) for offset, vip in enumerate(vips)))
        errors: dict[int, int] = {}
        while len(errors) < len(vips):
            buffer = self._sock.recv(1 << 20)
            offset = 0
            while offset + _NLMSG_HEADER.size <= len(buffer):
                length, message_type, _flags, sequence, _port = _NLMSG_HEADER.unpack_from(
                    buffer, offset
                )
                if length < _NLMSG_HEADER.size:
                    raise OSError(errno.EPROTO, "malformed netlink message from the kernel")
                if message_type == _NLMSG_ERROR and first <= sequence < first + len(vips):
                    (code,) = struct.unpack_from("=i", buffer, offset + _NLMSG_HEADER.size)
                    errors[sequence] = -code
                offset += (length + 3) & ~3
        return [errors[first + offset] for offset in range(len(vips))]


class AddressTable:
    """The VIP addresses on one interface."""

    def __init__(self, interface: str, create: bool = True) -> None:
        self.interface = interface
        self._ipr: Any = IPRoute()
        self._batch = _NetlinkBatch()
        self._index = self._lookup_or_create(create)
        # Addresses this table knows to be ours (refreshed by every owned() dump), so that
        # unbind needs no dump of the whole interface: that is O(addresses) per VIP.
        self._owned: set[IPAddress] = set()

    def close(self) -> None:
        self._batch.close()
        self._ipr.close()

    def _lookup_or_create(self, create: bool) -> int:
        found = self._ipr.link_lookup(ifname=self.interface)
        if found:
            return int(found[0])
        if not create:
            raise InterfaceError(f"vips.interface {self.interface!r} does not exist")
        try:
            self._ipr.link("add", ifname=self.interface, kind="dummy")
            self._ipr.link("set", index=self._ipr.link_lookup(ifname=self.interface)[0], state="up")
        except NetlinkError as error:
            raise InterfaceError(
                f"vips.interface {self.interface!r} does not exist and could not be created "
                f"as a dummy link ({error.args[-1] if error.args else error}); this kernel may "
                "lack the dummy driver: create the interface yourself or set "
                "vips.interface: lo"
            ) from error
        log.info("netif.created", interface=self.interface, kind="dummy")
        return int(self._ipr.link_lookup(ifname=self.interface)[0])

    def addresses(self) -> dict[IPAddress, LocalAddress]:
        """Every host address (/32, /128) on the interface, and whether it is ours."""
        result: dict[IPAddress, LocalAddress] = {}
        for msg in self._ipr.get_addr(index=self._index):
            raw = msg.get("IFA_ADDRESS")
            if raw is None:
                continue
            address = ipaddress.ip_address(raw)
            if msg["prefixlen"] != address.max_prefixlen:
                continue
            owned = msg.get("IFA_PROTO") == ADDRESS_PROTO
            result[address] = LocalAddress(address, owned)
        return result

    def _request_builder(self, adding: bool) -> RequestBuilder:
        kind = RTM_NEWADDR if adding else RTM_DELADDR
        return lambda vip, sequence: address_request(kind, vip, self._index, sequence)

    def owned(self) -> set[IPAddress]:
        self._owned = {a.address for a in self.addresses().values() if a.owned}
        return set(self._owned)

    def bind_many(self, vips: Iterable[IPAddress]) -> BindResult:
        """Add ``vips`` as ours, in batches.

        An address that already exists is ours if it carries our protocol mark (an
        earlier run's) and someone else's otherwise: one dump of the interface settles
        every such address of the batch.
        """
        wanted = list(vips)
        codes = self._batch.request(self._request_builder(adding=True), wanted)
        bound: set[IPAddress] = set()
        existing: list[IPAddress] = []
        failed: list[tuple[IPAddress, OSError]] = []
        for vip, code in zip(wanted, codes, strict=True):
            if code == 0:
                bound.add(vip)
            elif code == _EEXIST:
                existing.append(vip)
            else:
                failed.append((vip, OSError(code, os.strerror(code))))
        foreign: set[IPAddress] = set()
        if existing:
            present = self.addresses()
            for vip in existing:
                entry = present.get(vip)
                if entry is not None and entry.owned:
                    bound.add(vip)
                elif entry is not None:
                    foreign.add(vip)
                else:  # deleted again between the add and the dump: try next time
                    failed.append((vip, OSError(_ENOENT, "address vanished while binding")))
        self._owned |= bound
        return BindResult(frozenset(bound), frozenset(foreign), tuple(failed))

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        """Remove those of ``vips`` that are ours, in batches, without dumping the interface.

        Ownership comes from the set the last ``owned()`` dump and our own binds built
        (the kernel ignores the protocol mark on delete). The window this leaves: an
        address of ours deleted and re-added by someone else between two dumps would be
        removed. Returns the VIPs that could not be removed, with the error.
        """
        ours = [vip for vip in vips if vip in self._owned]
        codes = self._batch.request(self._request_builder(adding=False), ours)
        failed: dict[IPAddress, OSError] = {}
        for vip, code in zip(ours, codes, strict=True):
            if code in (0, _EADDRNOTAVAIL, _ENOENT, _ESRCH):  # ESRCH: no such route
                self._owned.discard(vip)
            else:
                failed[vip] = OSError(code, os.strerror(code))
        return failed


class LocalRouteTable(AddressTable):
    """VIPs as ``local`` routes in table ``local`` via the interface (``vips.bind:
    local-route``), not as addresses on it.

    A local route is what an address adds under the hood to make the kernel accept
    traffic for it, and the kernel adds one in constant time. Each IPv4 address, in
    contrast, walks the interface's whole address list (``__inet_insert_ifa``): on the
    lab machine 10 chunks of 1,000 addresses on ``lo`` took 0.034 s for the first and
    0.340 s for the tenth (1.70 s in all), 10,000 local routes 0.14 s (``ip -batch``).
    The costs: operators find the VIPs with ``ip route show table local``, not ``ip
    addr``; an IPv6 service cannot ``bind()`` to such a VIP (only to ``[::]``) unless
    ``net.ipv6.ip_nonlocal_bind=1``; IPv4 binds work. Ownership is the route protocol
    ``ADDRESS_PROTO``; a local route anyone else made (the kernel's for an address, a
    foreign one) is never touched.
    """

    def addresses(self) -> dict[IPAddress, LocalAddress]:
        """Every host local route through the interface, and whether it is ours."""
        result: dict[IPAddress, LocalAddress] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._ipr.get_routes(family=family, table=_RT_TABLE_LOCAL):
                raw = msg.get("RTA_DST")
                if raw is None or msg["type"] != _RTN_LOCAL:
                    continue
                if msg.get("RTA_OIF") != self._index:
                    continue
                address = ipaddress.ip_address(raw)
                if msg["dst_len"] != address.max_prefixlen:
                    continue
                result[address] = LocalAddress(address, msg["proto"] == ADDRESS_PROTO)
        return result

    def _request_builder(self, adding: bool) -> RequestBuilder:
        kind = RTM_NEWROUTE if adding else RTM_DELROUTE
        return lambda vip, sequence: local_route_request(kind, vip, self._index, sequence)


class RouteTable:
    """VIP host routes in one kernel routing table, for ``output: kernel-table``.

    Each VIP becomes ``VIP/32`` (``/128``) ``dev lo`` (unicast, scope link) in ``table``
    with route protocol ``protocol``; the host's routing daemon redistributes that table
    (FRR: ``ip import-table N`` + ``redistribute table N``; BIRD: a ``kernel`` protocol with
    ``kernel table N; learn;``). Checked on the lab machines: FRR 8.4's zebra picks up a
    unicast ``dev lo`` route and a blackhole, but ignores a ``local`` route; a blackhole
    would be imported into the main table as a blackhole, so unicast via ``lo`` it is.
    The table is not consulted for forwarding unless an ``ip rule`` points at it.
    """

    def __init__(self, table: int, protocol: int, interface: str = "lo") -> None:
        if table in (0, 253, 254, 255):
            raise ValueError(f"table {table} is one of the kernel's own tables")
        if not 1 <= protocol <= 255:
            raise ValueError(f"route protocol must be 1..255, got {protocol}")
        self.table = table
        self.protocol = protocol
        self.interface = interface
        self._ipr: Any = IPRoute()
        found = self._ipr.link_lookup(ifname=interface)
        if not found:
            self._ipr.close()
            raise InterfaceError(f"interface {interface!r} for kernel-table routes does not exist")
        self._index = int(found[0])

    def close(self) -> None:
        self._ipr.close()

    def _all_host_routes(self) -> dict[IPAddress, int]:
        """Every host route in the table (both families) with its route protocol."""
        result: dict[IPAddress, int] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for msg in self._ipr.get_routes(family=family, table=self.table):
                raw = msg.get("RTA_DST")
                if raw is None:
                    continue
                address = ipaddress.ip_address(raw)
                if msg["dst_len"] != address.max_prefixlen:
                    continue
                table = msg.get("RTA_TABLE")
                if (table if table is not None else msg["table"]) != self.table:
                    continue
                result[address] = int(msg["proto"])
        return result

    def routes(self) -> set[IPAddress]:
        """The VIPs routed in the table with our protocol number (never anyone else's)."""
        return {vip for vip, proto in self._all_host_routes().items() if proto == self.protocol}

    def _route_args(self, vip: IPAddress) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": str(vip),
            "dst_len": vip.max_prefixlen,
            "table": self.table,
            "proto": self.protocol,
        }
        if vip.version == 6:
            args["family"] = socket.AF_INET6
        else:
            # The kernel matches the scope on delete too (ESRCH without it).
            args["scope"] = _RT_SCOPE_LINK
        return args

    def install(self, vip: IPAddress) -> bool:
        """Route ``vip`` as ours. False if the table already routes it for someone else."""
        args = self._route_args(vip)
        args["oif"] = self._index
        try:
            self._ipr.route("add", **args)
        except NetlinkError as error:
            if error.code == _EEXIST:
                owner = self._all_host_routes().get(vip)
                if owner != self.protocol:
                    log.warning(
                        "netif.route_foreign",
                        vip=str(vip),
                        table=self.table,
                        protocol=owner,
                        reason="a route with another protocol exists; left alone",
                    )
                return owner == self.protocol
            raise
        return True

    def remove(self, vip: IPAddress) -> None:
        """Delete the route for ``vip`` only if it carries our protocol number.

        The kernel matches the protocol on delete (ESRCH otherwise), so even a foreign
        route put in place between a listing and this call is never removed.
        """
        try:
            self._ipr.route("del", **self._route_args(vip))
        except NetlinkError as error:
            if error.code not in (_ESRCH, _ENOENT):
                raise
