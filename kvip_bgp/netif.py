"""Local addresses (and kernel routes) through netlink. The only module that uses pyroute2.

Ownership is recorded in the kernel itself: every address kvip-bgp adds carries the
address protocol ``ADDRESS_PROTO`` (``IFA_PROTO``, Linux >= 5.18). After a SIGKILL and a
restart the daemon therefore knows exactly which addresses are its own, and an address
someone else added to the same interface (protocol 0) is never touched, even if it is a
VIP we also want.

The same holds for ``output: kernel-table``: :class:`RouteTable` installs each VIP as a
host route in a configured table with a configured route protocol number, and only routes
carrying that number are ever listed or removed (the kernel itself refuses a delete whose
protocol does not match, so a foreign route in the same table is safe even from a race).

Used by the reconciler thread only; the netlink socket is never shared.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any, Final

import structlog
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from kvip_bgp.model import IPAddress

log = structlog.get_logger("kvip_bgp.netif")

ADDRESS_PROTO: Final = 248  # IFA_PROTO marking "added by kvip-bgp"
_EEXIST: Final = 17
_ENOENT: Final = 2
_EADDRNOTAVAIL: Final = 99
_EOPNOTSUPP: Final = 95
_ESRCH: Final = 3
_RT_SCOPE_LINK: Final = 253


class InterfaceError(Exception):
    """The VIP interface is missing and cannot be created; the message says what to do."""


@dataclass(frozen=True)
class LocalAddress:
    address: IPAddress
    owned: bool


class AddressTable:
    """The VIP addresses on one interface."""

    def __init__(self, interface: str, create: bool = True) -> None:
        self.interface = interface
        self._ipr: Any = IPRoute()
        self._index = self._lookup_or_create(create)
        # Addresses this table knows to be ours (refreshed by every owned() dump), so that
        # unbind needs no dump of the whole interface: that is O(addresses) per VIP.
        self._owned: set[IPAddress] = set()

    def close(self) -> None:
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

    def owned(self) -> set[IPAddress]:
        self._owned = {a.address for a in self.addresses().values() if a.owned}
        return set(self._owned)

    def bind(self, vip: IPAddress) -> bool:
        """Add the VIP as ours. False if it already exists as someone else's address."""
        try:
            self._ipr.addr(
                "add",
                index=self._index,
                address=str(vip),
                prefixlen=vip.max_prefixlen,
                IFA_PROTO=ADDRESS_PROTO,
                **({"nodad": True} if vip.version == 6 else {}),
            )
        except NetlinkError as error:
            if error.code == _EEXIST:
                mine = self.addresses().get(vip, LocalAddress(vip, False)).owned
                if mine:
                    self._owned.add(vip)
                return mine
            raise
        self._owned.add(vip)
        return True

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        """Remove those of ``vips`` that are ours, without dumping the interface per VIP.

        Ownership comes from the set the last ``owned()`` dump and our own binds built
        (the kernel ignores the protocol mark on delete). The window this leaves: an
        address of ours deleted and re-added by someone else between two dumps would be
        removed. Returns the VIPs that could not be removed, with the error.
        """
        owned = self._owned
        failed: dict[IPAddress, OSError] = {}
        for vip in vips:
            if vip not in owned:
                continue
            try:
                self._ipr.addr(
                    "del", index=self._index, address=str(vip), prefixlen=vip.max_prefixlen
                )
            except NetlinkError as error:
                if error.code not in (_EADDRNOTAVAIL, _ENOENT):
                    failed[vip] = error
                    continue
            except OSError as error:
                failed[vip] = error
                continue
            owned.discard(vip)
        return failed


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
