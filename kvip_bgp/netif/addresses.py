"""VIPs bound on an interface: as addresses, as local routes, or by family (default:
IPv4 as local routes, IPv6 as addresses).

Used by the reconciler thread only; the netlink sockets are never shared.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable

import structlog

from kvip_bgp.domain.model import BindResult, IPAddress
from kvip_bgp.netif.netlink import (
    ADDRESS_PROTO,
    EADDRNOTAVAIL,
    EEXIST,
    ENOENT,
    ESRCH,
    RT_TABLE_LOCAL,
    RTM_DELADDR,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    RTN_LOCAL,
    InterfaceError,
    LocalAddress,
    NetlinkBatch,
    NetlinkError,
    RequestBuilder,
    address_request,
    create_dummy,
    interface_index,
    local_route_request,
)

log = structlog.get_logger("kvip_bgp.netif")


class AddressTable:
    """The VIP addresses on one interface.

    One netlink socket of its own (``NetlinkBatch``) for the batches and the dumps;
    pyroute2's ``IPRoute`` only to create a missing interface (netif.netlink says why).
    """

    def __init__(self, interface: str, create: bool = True) -> None:
        self.interface = interface
        self._batch = NetlinkBatch()
        try:
            self._index = self._lookup_or_create(create)
        except BaseException:
            self._batch.close()
            raise
        # Addresses this table knows to be ours (refreshed by every owned() dump), so that
        # unbind needs no dump of the whole interface: that is O(addresses) per VIP.
        self._owned: set[IPAddress] = set()

    def close(self) -> None:
        self._batch.close()

    def _lookup_or_create(self, create: bool) -> int:
        found = interface_index(self.interface)
        if found is not None:
            return found
        if not create:
            raise InterfaceError(f"vips.interface {self.interface!r} does not exist")
        try:
            index = create_dummy(self.interface)
        except NetlinkError as error:
            raise InterfaceError(
                f"vips.interface {self.interface!r} does not exist and could not be created "
                f"as a dummy link ({error.args[-1] if error.args else error}); this kernel may "
                "lack the dummy driver: create the interface yourself or set "
                "vips.interface: lo"
            ) from error
        log.info("netif.created", interface=self.interface, kind="dummy")
        return index

    def addresses(self) -> dict[IPAddress, LocalAddress]:
        """Every host address (/32, /128) on the interface, and whether it is ours."""
        result: dict[IPAddress, LocalAddress] = {}
        for msg in self._batch.addresses(self._index):
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
        return lambda vip, sequence, ack: address_request(kind, vip, self._index, sequence, ack)

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
        if not any(codes):  # every request succeeded, as nearly always: no loop
            every = frozenset(wanted)
            self._owned |= every
            return BindResult(every, frozenset(), ())
        bound: set[IPAddress] = set()
        existing: list[IPAddress] = []
        failed: list[tuple[IPAddress, OSError]] = []
        for vip, code in zip(wanted, codes, strict=True):
            if code == 0:
                bound.add(vip)
            elif code == EEXIST:
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
                    failed.append((vip, OSError(ENOENT, "address vanished while binding")))
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
            if code in (0, EADDRNOTAVAIL, ENOENT, ESRCH):  # ESRCH: no such route
                self._owned.discard(vip)
            else:
                failed[vip] = OSError(code, os.strerror(code))
        return failed


class LocalRouteTable(AddressTable):
    """VIPs as ``local`` routes in table ``local`` via the interface (``vips.bind:
    local-route``), not as addresses on it.

    A local route is what an address adds under the hood to make the kernel accept
    traffic for it, and the kernel adds one in constant time. Each IPv4 address, in
    contrast, walks the interface's whole address list (``__inet_insert_ifa``), so
    binding N addresses costs the kernel O(N^2) (figures in docs/performance.md).
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
            for msg in self._batch.routes(family, RT_TABLE_LOCAL):
                raw = msg.get("RTA_DST")
                if raw is None or msg["type"] != RTN_LOCAL:
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
        index = self._index
        return lambda vip, sequence, ack: local_route_request(kind, vip, index, sequence, ack)


class FamilyTable(LocalRouteTable):
    """IPv4 VIPs as local routes, IPv6 VIPs as addresses (``vips.bind: by-family``, the
    default).

    Why per family: an IPv4 local route receives traffic exactly as an address does
    (services bound to the VIP or to 0.0.0.0; connections from the node itself get the
    VIP as source), and costs the kernel constant time where an IPv4 address walks the
    interface's address list. 10,000 IPv4 VIPs on lo: 0.17 s as local routes against
    2.4 s (nearly all kernel time, charged to our process) as addresses. An IPv6 local
    route does not let a service ``bind()`` to the VIP (``EADDRNOTAVAIL`` without
    ``net.ipv6.ip_nonlocal_bind=1``) and is never picked as a source address, so IPv6
    VIPs stay addresses (without DAD). Figures: docs/performance.md.

    Ours of the other kind (left by a run with ``vips.bind: address`` or
    ``local-route``) are adopted as they are and removed as what they are, so changing
    the mode, or upgrading to this default, leaves nothing behind.
    """

    def __init__(self, interface: str, create: bool = True) -> None:
        super().__init__(interface, create)
        # Owned VIPs bound as the other kind than their family's (see the class doc).
        self._other_kind: set[IPAddress] = set()

    @staticmethod
    def _as_route(vip: IPAddress) -> bool:
        return vip.version == 4

    def addresses(self) -> dict[IPAddress, LocalAddress]:
        """Host local routes and host addresses on the interface, and whether each is
        ours: the kind of its family first, the other kind where that one is not ours."""
        routes = LocalRouteTable.addresses(self)
        addresses = AddressTable.addresses(self)
        result: dict[IPAddress, LocalAddress] = {}
        other: set[IPAddress] = set()
        for vip in routes.keys() | addresses.keys():
            native, alien = (routes, addresses) if self._as_route(vip) else (addresses, routes)
            entry, alternative = native.get(vip), alien.get(vip)
            if alternative is not None and alternative.owned:
                other.add(vip)
                if entry is None or not entry.owned:
                    entry = alternative
            if entry is not None:
                result[vip] = entry
        self._other_kind = other
        return result

    def _request_builder(self, adding: bool) -> RequestBuilder:
        return self._builder(adding, native=True)

    def _builder(self, adding: bool, native: bool) -> RequestBuilder:
        route = RTM_NEWROUTE if adding else RTM_DELROUTE
        addr = RTM_NEWADDR if adding else RTM_DELADDR
        index = self._index

        def build(vip: IPAddress, sequence: int, ack: bool) -> bytes:
            if self._as_route(vip) == native:
                return local_route_request(route, vip, index, sequence, ack)
            return address_request(addr, vip, index, sequence, ack)

        return build

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        """Ours of the other kind first (left by an earlier run: the last ``owned()`` dump
        found them), then the family's kind of every VIP of ours; the kernel refuses the
        delete of a kind that is not there (or not ours), which counts as removed."""
        failed: dict[IPAddress, OSError] = {}
        other = [vip for vip in vips if vip in self._other_kind]
        codes = self._batch.request(self._builder(adding=False, native=False), other)
        for vip, code in zip(other, codes, strict=True):
            if code in (0, EADDRNOTAVAIL, ENOENT, ESRCH):
                self._other_kind.discard(vip)
            else:
                failed[vip] = OSError(code, os.strerror(code))
        failed.update(super().unbind_many(vips - failed.keys()))
        return failed
