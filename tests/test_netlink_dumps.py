"""The address tables' own dumps against pyroute2's ``IPRoute``, on real interfaces in a
namespace of their own.

``NetlinkBatch.addresses`` and ``NetlinkBatch.routes`` replace ``IPRoute.get_addr(index=)``
and ``IPRoute.get_routes(family=, table=)`` so that the default start imports no
``IPRoute``: they must give the same messages, decoded the same, in the same order. The
namespace holds what the filters must tell apart: IPv4 and IPv6 addresses (host and
subnet, primary and secondary, ours, someone else's, another protocol's), the same
addresses on other interfaces, local routes in table ``local`` of several protocols and
types, local routes in other tables (one above 255, which only ``RTA_TABLE`` names), a
multipath route, and enough of ours that a dump takes several reads. Then the tables'
``addresses()`` are compared with what the code before gave, written here with
``IPRoute`` as it was.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_lab

from kvip_bgp.domain.model import IPAddress
from kvip_bgp.netif.addresses import AddressTable, FamilyTable, LocalRouteTable
from kvip_bgp.netif.netlink import (
    ADDRESS_PROTO,
    RT_TABLE_LOCAL,
    RTM_NEWADDR,
    RTN_LOCAL,
    LocalAddress,
    NetlinkBatch,
    address_request,
    open_iproute,
)
from kvip_bgp.testing.netlab import Netns, fresh_netns, in_netns

PREFIX = "kvd-"  # a prefix of its own: cleanup removes every namespace of a prefix
TABLES = (RT_TABLE_LOCAL, 254, 100, 1000, 7)  # 7: empty
V4 = [ipaddress.ip_address("10.7.0.0") + i for i in range(1, 800)]  # ours (see _ours)
V6 = [ipaddress.ip_address("2001:db8:7::") + i for i in range(1, 600)]
SEVERAL_READS = 40 << 10  # bytes: the kernel sends a dump in parts of up to 32 KiB


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@pytest.fixture
def netns() -> Iterator[Netns]:
    require_lab()
    with fresh_netns(PREFIX) as ns:
        # No duplicate address detection: link-local addresses that turn from tentative
        # to valid between two dumps would differ for no fault of either.
        for scope in ("default", "all"):
            ns.run("sysctl", "-qw", f"net.ipv6.conf.{scope}.accept_dad=0")
        # veth pairs: this kernel may lack the dummy driver.
        for a, b in (("vip0", "vip1"), ("other0", "other1")):
            ns.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
            ns.run("ip", "link", "set", a, "up")
            ns.run("ip", "link", "set", b, "up")
        _populate(ns)
        yield ns


def _populate(ns: Netns) -> None:
    """Someone else's addresses and routes (the tables add ours in the tests)."""
    for command in (
        "addr add 10.6.0.1/32 dev vip0",  # a host address, not ours
        "addr add 10.6.1.1/24 dev vip0",  # a subnet, and a secondary in it
        "addr add 10.6.1.2/24 dev vip0",
        "addr add 10.6.0.1/32 dev vip1",  # the same address on another interface
        "addr add 10.6.0.3/32 dev other0",
        "-6 addr add 2001:db8:6::1/128 dev vip0 nodad",
        "-6 addr add 2001:db8:6:1::1/64 dev vip0 nodad",
        "-6 addr add 2001:db8:6::1/128 dev vip1 nodad",
        "route add local 10.6.2.1/32 dev vip0 table local proto static",
        "route add local 10.6.2.2/32 dev vip1 table local",
        "route add local 10.6.2.0/24 dev vip0 table local",  # not a host route
        "route add 10.6.3.1/32 dev vip0 table local",  # unicast, in table local
        "route add 10.6.7.0/24 table local nexthop dev vip0 nexthop dev vip1",  # no RTA_OIF
        "route add local 10.6.4.1/32 dev vip0 table 100",
        "route add local 10.6.4.2/32 dev vip0 table 1000 proto 248",
        "route add 10.6.4.3/32 dev vip0",  # table main
        "-6 route add local 2001:db8:6::10/128 dev vip0 table local proto 99",
        "-6 route add local 2001:db8:6::11/128 dev vip1 table local proto 248",
        "-6 route add local 2001:db8:6::12/128 dev vip0 table 1000 proto 248",
        "-6 route add 2001:db8:6::13/128 dev vip0 table local",
        "-6 route add local 2001:db8:6::14/128 dev vip0 table 100",
    ):
        ns.run("ip", *command.split())
    # An address of another protocol than ours (iproute2 6.1 cannot set one).
    with in_netns(ns.name), open_iproute() as ipr:
        index = ipr.link_lookup(ifname="vip0")[0]
        ipr.addr("add", index=index, address="10.6.0.4", prefixlen=32, proto=99)


def _canonical(message: Any) -> dict[str, Any]:
    """A decoded message without what differs from socket to socket: the header's sequence
    number and port, and what pyroute2's socket adds (its target, stats, event name)."""
    dumped = message.dump()
    header = dumped.pop("header")
    dumped.pop("event", None)
    dumped["header"] = (header["length"], header["type"], header["flags"])
    return dumped


def _ours(ns: Netns) -> None:
    """Ours of both kinds and families, more than one part of a dump holds."""
    v4, v6 = V4, V6
    with in_netns(ns.name):
        routes = LocalRouteTable("vip0", create=False)
        addresses = AddressTable("vip0", create=False)
        other = AddressTable("vip1", create=False)
    try:
        assert not routes.bind_many([*v4[:600], *v6[:100]]).failed
        assert not addresses.bind_many([*v4[600:], *v6[100:]]).failed
        assert not other.bind_many([v4[0], v6[0]]).failed
    finally:
        routes.close()
        addresses.close()
        other.close()


@pytest.mark.lab
def test_the_dumps_give_what_iproutes_dumps_give(netns: Netns) -> None:
    _ours(netns)
    with in_netns(netns.name), open_iproute() as ipr:
        batch = NetlinkBatch()
        try:
            indexes = [ipr.link_lookup(ifname=n)[0] for n in ("lo", "vip0", "vip1", "other0")]
            for index in [*indexes, 9999]:
                ours = [_canonical(m) for m in batch.addresses(index)]
                theirs = [_canonical(m) for m in ipr.get_addr(index=index)]
                assert ours == theirs, index
            families = {m["family"] for m in batch.addresses(indexes[1])}
            assert families == {socket.AF_INET, socket.AF_INET6}
            sizes = [m["header"]["length"] for m in batch.addresses(indexes[1])]
            assert sum(sizes) > SEVERAL_READS
            sizes = [m["header"]["length"] for m in batch.routes(socket.AF_INET, RT_TABLE_LOCAL)]
            assert sum(sizes) > SEVERAL_READS
            for family in (socket.AF_INET, socket.AF_INET6):
                for table in TABLES:
                    ours = [_canonical(m) for m in batch.routes(family, table)]
                    theirs = [_canonical(m) for m in ipr.get_routes(family=family, table=table)]
                    assert ours == theirs, (family, table)
                    assert bool(ours) is (table != 7), (family, table)
            # The sequence numbers go on from the dumps: a batch after them still works.
            vip = ip("10.8.0.1")
            vip0 = indexes[1]
            add = lambda v, seq, ack: address_request(RTM_NEWADDR, v, vip0, seq, ack)  # noqa: E731
            assert batch.request(add, [vip]) == [0]
            assert vip in {ip(m.get("IFA_ADDRESS")) for m in batch.addresses(indexes[1])}
        finally:
            batch.close()


def _addresses_before(ipr: Any, index: int) -> dict[IPAddress, LocalAddress]:
    """``AddressTable.addresses`` as it was, with ``IPRoute``."""
    result: dict[IPAddress, LocalAddress] = {}
    for msg in ipr.get_addr(index=index):
        raw = msg.get("IFA_ADDRESS")
        if raw is None:
            continue
        address = ipaddress.ip_address(raw)
        if msg["prefixlen"] != address.max_prefixlen:
            continue
        result[address] = LocalAddress(address, msg.get("IFA_PROTO") == ADDRESS_PROTO)
    return result


def _local_routes_before(ipr: Any, index: int) -> dict[IPAddress, LocalAddress]:
    """``LocalRouteTable.addresses`` as it was, with ``IPRoute``."""
    result: dict[IPAddress, LocalAddress] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.get_routes(family=family, table=RT_TABLE_LOCAL):
            raw = msg.get("RTA_DST")
            if raw is None or msg["type"] != RTN_LOCAL:
                continue
            if msg.get("RTA_OIF") != index:
                continue
            address = ipaddress.ip_address(raw)
            if msg["dst_len"] != address.max_prefixlen:
                continue
            result[address] = LocalAddress(address, msg["proto"] == ADDRESS_PROTO)
    return result


@pytest.mark.lab
@pytest.mark.parametrize("interface", ["vip0", "vip1", "other0", "lo"])
def test_the_tables_find_what_they_found_with_iproute(netns: Netns, interface: str) -> None:
    _ours(netns)
    with in_netns(netns.name), open_iproute() as ipr:
        index = ipr.link_lookup(ifname=interface)[0]
        addresses = _addresses_before(ipr, index)
        routes = _local_routes_before(ipr, index)
        tables = [kind(interface, create=False) for kind in (AddressTable, LocalRouteTable)]
        family_table = FamilyTable(interface, create=False)
    try:
        address_table, route_table = tables
        # Same entries, same order (a dict keeps the dump's).
        assert list(address_table.addresses().items()) == list(addresses.items())
        assert list(route_table.addresses().items()) == list(routes.items())
        assert address_table.owned() == {a for a, e in addresses.items() if e.owned}
        assert route_table.owned() == {a for a, e in routes.items() if e.owned}
        # FamilyTable merges the two dumps: the kind of a VIP's family, the other kind
        # where that one is missing or not ours and the other is ours (its doc).
        found = family_table.addresses()
        expected = {}
        for vip in routes.keys() | addresses.keys():
            native, alien = (routes, addresses) if vip.version == 4 else (addresses, routes)
            entry, other = native.get(vip), alien.get(vip)
            if other is not None and other.owned and (entry is None or not entry.owned):
                entry = other
            if entry is not None:
                expected[vip] = entry
        assert found == expected
        if interface == "vip0":
            assert found[V4[0]].owned and found[V4[700]].owned
            assert found[V6[0]].owned and found[V6[300]].owned
            # Someone else's: addresses (IPv4 through their kernel local routes), local
            # routes of other protocols.
            assert not found[ip("10.6.0.1")].owned and not found[ip("10.6.2.1")].owned
            assert not found[ip("10.6.0.4")].owned and not found[ip("2001:db8:6::1")].owned
            assert not found[ip("10.6.1.2")].owned  # a secondary's local route
            # Not host local routes in table local of this interface.
            assert ip("10.6.4.1") not in found and ip("10.6.3.1") not in found
            assert ip("10.6.2.0") not in found and ip("2001:db8:6::12") not in found
            assert ip("2001:db8:6::10") not in found  # IPv6: the address kind only
    finally:
        for table in (*tables, family_table):
            table.close()
