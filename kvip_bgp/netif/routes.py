"""``output: kernel-table``: VIP host routes in a table of their own, marked as ours."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import structlog

from kvip_bgp.domain.model import IPAddress
from kvip_bgp.netif.netlink import (
    EEXIST,
    ENOENT,
    ESRCH,
    RT_SCOPE_LINK,
    InterfaceError,
    NetlinkError,
    open_iproute,
)

log = structlog.get_logger("kvip_bgp.netif")


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
        # This mode keeps pyroute2's IPRoute, imported only when it runs (netif.netlink).
        self._ipr: Any = open_iproute()
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
            args["scope"] = RT_SCOPE_LINK
        return args

    def install(self, vip: IPAddress) -> bool:
        """Route ``vip`` as ours. False if the table already routes it for someone else."""
        args = self._route_args(vip)
        args["oif"] = self._index
        try:
            self._ipr.route("add", **args)
        except NetlinkError as error:
            if error.code == EEXIST:
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
            if error.code not in (ESRCH, ENOENT):
                raise
