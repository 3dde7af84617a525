"""``netif.AddressTable`` and ``netif.LocalRouteTable`` on a real interface in a namespace
of its own.

The batched netlink path (many requests per send, acks matched by sequence number) is
checked against the kernel: which addresses end up on the interface with our protocol
mark, that an existing foreign address is reported and left alone, that one refused
request in the middle of a batch is attributed to its own address, and that the
batches are split so that more than ``BATCH_SIZE`` requests work.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_lab
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_DELADDR, RTM_DELROUTE, RTM_NEWADDR, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD, ifaddrmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from kvip_bgp.domain.model import IPAddress
from kvip_bgp.netif.addresses import AddressTable, FamilyTable, LocalRouteTable
from kvip_bgp.netif.netlink import (
    ADDRESS_PROTO,
    BATCH_SIZE,
    address_request,
    local_route_request,
    requests,
)
from kvip_bgp.testing.netlab import Netns, add_vip_link, fresh_netns, in_netns

PREFIX = "kvn-"  # a prefix of its own: cleanup removes every namespace of a prefix


@pytest.fixture
def netns() -> Iterator[Netns]:
    require_lab()
    with fresh_netns(PREFIX) as ns:
        add_vip_link(ns)
        yield ns


def table_in(
    ns: Netns, interface: str = "vip0", kind: type[AddressTable] = AddressTable
) -> AddressTable:
    # The netlink sockets keep the namespace they were opened in.
    with in_netns(ns.name):
        return kind(interface, create=False)


# Each request kind, for both families: our struct packing against pyroute2's encoder.
ENCODER_CASES = [
    ("add", "198.51.100.7"),
    ("del", "198.51.100.7"),
    ("add", "2001:db8::7"),
    ("del", "2001:db8::7"),
]


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


@pytest.mark.lab
def test_bind_many_marks_ours_reports_foreign_and_splits_batches(netns: Netns) -> None:
    netns.run("ip", "addr", "add", "10.1.0.7/32", "dev", "vip0")  # someone else's
    v4 = [ip("10.1.0.0") + i for i in range(1, BATCH_SIZE * 2 + 50)]
    v6 = [ip("2001:db8::10"), ip("2001:db8::11")]
    table = table_in(netns)
    try:
        result = table.bind_many(v4 + v6)
        assert result.foreign == {ip("10.1.0.7")}
        assert result.failed == ()
        assert result.bound == set(v4 + v6) - {ip("10.1.0.7")}
        present = table.addresses()
        assert {a for a, e in present.items() if e.owned} == result.bound
        assert present[ip("10.1.0.7")].owned is False
        # A VIP must work at once: no duplicate address detection on IPv6.
        shown = netns.run("ip", "-6", "addr", "show", "dev", "vip0").stdout
        assert "2001:db8::10/128 scope global nodad" in shown, shown
    finally:
        table.close()

    # A new table (a restarted daemon) finds its own addresses by the protocol mark,
    # and binding them again is not an error.
    again = table_in(netns)
    try:
        assert again.owned() == set(v4 + v6) - {ip("10.1.0.7")}
        second = again.bind_many([*v4[:3], ip("10.1.0.7")])
        assert second.bound == set(v4[:3]) and second.foreign == {ip("10.1.0.7")}
    finally:
        again.close()


@pytest.mark.lab
def test_one_refused_request_is_attributed_to_its_own_address(netns: Netns) -> None:
    table = table_in(netns)
    try:
        # The interface goes away under us: every add is refused (ENODEV), each named.
        netns.run("ip", "link", "del", "vip0")
        vips = [ip("10.2.0.1"), ip("10.2.0.2")]
        result = table.bind_many(vips)
        assert result.bound == set()
        assert [(v, e.errno) for v, e in result.failed] == [(v, 19) for v in vips]
    finally:
        table.close()


@pytest.mark.lab
def test_unbind_many_removes_only_ours(netns: Netns) -> None:
    netns.run("ip", "addr", "add", "10.3.0.9/32", "dev", "vip0")  # someone else's
    ours = [ip("10.3.0.0") + i for i in range(1, 600)]
    table = table_in(netns)
    try:
        table.bind_many(ours)
        table.owned()
        # One of ours vanished behind our back: deleting it again is not an error.
        netns.run("ip", "addr", "del", "10.3.0.1/32", "dev", "vip0")
        failed = table.unbind_many({*ours, ip("10.3.0.9")})
        assert failed == {}
        left = table.addresses()
        assert set(left) == {ip("10.3.0.9")}, sorted(map(str, left))[:5]
    finally:
        table.close()


@pytest.mark.parametrize("count", [1, 2, 5])
def test_only_the_last_request_of_a_send_asks_for_an_ack(count: int) -> None:
    """Errors come back acked or not; one ack at the end says the kernel is done."""
    vips = [ip("2001:db8::1") + i for i in range(count)] + [ip("10.0.0.1")]

    def build(vip: IPAddress, sequence: int, ack: bool) -> bytes:
        kind = address_request if vip.version == 6 else local_route_request
        code = RTM_NEWADDR if vip.version == 6 else RTM_NEWROUTE
        return kind(code, vip, 42, sequence, ack)

    data = requests(build, vips, 100)
    acked = [build(vip, 100 + n, True) for n, vip in enumerate(vips)]
    flags, sizes, sequences, offset = [], [], [], 0
    while offset < len(data):
        length, _kind, flag, sequence, _port = struct.unpack_from("=IHHII", data, offset)
        flags.append(flag)
        sizes.append(length)
        sequences.append(sequence)
        offset += (length + 3) & ~3
    create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
    assert flags == [create] * count + [create | NLM_F_ACK]
    assert sequences == list(range(100, 101 + count))
    assert sizes == [len(r) for r in acked]  # nothing else differs from an acked request
    assert data == b"".join(
        r if i == count else r[:6] + struct.pack("=H", create) + r[8:] for i, r in enumerate(acked)
    )


@pytest.mark.parametrize(("kind", "vip"), ENCODER_CASES)
def test_address_request_encodes_what_pyroute2_encodes(kind: str, vip: str) -> None:
    """Our struct-packed request, byte for byte against pyroute2's own encoder."""
    address = ip(vip)
    message = ifaddrmsg()
    message["family"] = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    message["prefixlen"] = address.max_prefixlen
    message["index"] = 42
    attrs: list[tuple[str, object]] = [("IFA_LOCAL", vip), ("IFA_ADDRESS", vip)]
    if kind == "add":
        attrs.append(("IFA_PROTO", ADDRESS_PROTO))
        if address.version == 6:
            message["flags"] = IFA_F_NODAD
            attrs.append(("IFA_FLAGS", IFA_F_NODAD))
    message["attrs"] = attrs
    kind_code = RTM_NEWADDR if kind == "add" else RTM_DELADDR
    assert address_request(kind_code, address, 42, 7) == _encoded(message, kind_code, kind)


def _local_routes(ns: Netns) -> str:
    return "\n".join(
        ns.run("ip", *family, "route", "show", "table", "local").stdout for family in ([], ["-6"])
    )


@pytest.mark.lab
def test_local_routes_are_ours_by_protocol_and_take_traffic(netns: Netns) -> None:
    netns.run("ip", "link", "set", "lo", "up")
    # Someone else's: an address (its kernel local route) and a local route of another
    # protocol. Both are reported foreign and survive our unbind.
    netns.run("ip", "addr", "add", "10.4.0.7/32", "dev", "vip0")
    netns.run("ip", "route", "add", "local", "10.4.0.8/32", "dev", "vip0", "table", "local")
    v4 = [ip("10.4.0.0") + i for i in range(1, BATCH_SIZE + 50)]
    v6 = [ip("2001:db8::20"), ip("2001:db8::21")]
    table = table_in(netns, kind=LocalRouteTable)
    try:
        result = table.bind_many(v4 + v6)
        assert result.foreign == {ip("10.4.0.7"), ip("10.4.0.8")}
        assert result.failed == ()
        assert result.bound == set(v4 + v6) - result.foreign
        shown = _local_routes(netns)
        assert f"local 10.4.0.1 dev vip0 proto {ADDRESS_PROTO} scope host" in shown, shown
        assert f"local 2001:db8::20 dev vip0 proto {ADDRESS_PROTO}" in shown, shown
        # Not an address: `ip addr` shows only the foreign one.
        assert "10.4.0.1/32" not in netns.run("ip", "addr", "show", "dev", "vip0").stdout
        # The kernel accepts traffic for the VIP: an IPv4 service binds to it directly,
        # an IPv6 one through [::] (a specific bind needs ip_nonlocal_bind).
        netns.run(
            "python3",
            "-c",
            "import socket\n"
            "s = socket.create_server(('10.4.0.1', 0))\n"
            "socket.create_connection(s.getsockname(), timeout=2).close()\n"
            "s6 = socket.create_server(('::', 0), family=socket.AF_INET6)\n"
            "socket.create_connection(('2001:db8::20', s6.getsockname()[1]), timeout=2).close()\n",
        )
    finally:
        table.close()

    again = table_in(netns, kind=LocalRouteTable)  # a restarted daemon
    try:
        assert again.owned() == set(v4 + v6) - {ip("10.4.0.7"), ip("10.4.0.8")}
        netns.run("ip", "route", "del", "local", "10.4.0.1/32", "dev", "vip0", "table", "local")
        failed = again.unbind_many(set(v4 + v6))
        assert failed == {}
        assert set(again.addresses()) == {ip("10.4.0.7"), ip("10.4.0.8")}
    finally:
        again.close()


@pytest.mark.parametrize(("kind", "vip"), ENCODER_CASES)
def test_local_route_request_encodes_what_pyroute2_encodes(kind: str, vip: str) -> None:
    address = ip(vip)
    message = rtmsg()
    message["family"] = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    message["dst_len"] = address.max_prefixlen
    message["table"] = 255
    message["proto"] = ADDRESS_PROTO
    message["scope"] = 254
    message["type"] = 2  # RTN_LOCAL
    message["attrs"] = [("RTA_DST", vip), ("RTA_OIF", 42)]
    kind_code = RTM_NEWROUTE if kind == "add" else RTM_DELROUTE
    assert local_route_request(kind_code, address, 42, 7) == _encoded(message, kind_code, kind)


def _encoded(message: Any, kind: int, action: str) -> bytes:
    """pyroute2's own encoding of ``message`` as request ``kind``, sequence number 7,
    acked; an "add" creates exclusively (an existing entry is an error, not replaced)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    if action == "add":
        flags |= NLM_F_CREATE | NLM_F_EXCL
    message["header"]["type"] = kind
    message["header"]["flags"] = flags
    message["header"]["sequence_number"] = 7
    message.encode()
    return bytes(message.data)


def _addresses(ns: Netns) -> str:
    return ns.run("ip", "addr", "show", "dev", "vip0").stdout


@pytest.mark.lab
def test_by_family_binds_ipv4_as_local_routes_ipv6_as_addresses_and_adopts_either(
    netns: Netns,
) -> None:
    netns.run("ip", "link", "set", "lo", "up")
    netns.run("ip", "addr", "add", "10.5.0.9/32", "dev", "vip0")  # someone else's
    # Ours of the other kind, from a run with vips.bind: address / local-route.
    left = table_in(netns, kind=AddressTable)
    try:
        assert left.bind_many([ip("10.5.0.7")]).bound == {ip("10.5.0.7")}
    finally:
        left.close()
    left = table_in(netns, kind=LocalRouteTable)
    try:
        assert left.bind_many([ip("2001:db8::37")]).bound == {ip("2001:db8::37")}
    finally:
        left.close()

    v4 = [ip("10.5.0.0") + i for i in range(1, 20)]
    v6 = [ip("2001:db8::30") + i for i in range(8)]
    table = table_in(netns, kind=FamilyTable)
    try:
        assert table.owned() == {ip("10.5.0.7"), ip("2001:db8::37")}
        result = table.bind_many(v4 + v6)
        assert result.foreign == {ip("10.5.0.9")}
        assert result.failed == ()
        assert result.bound == set(v4 + v6) - {ip("10.5.0.9")}
        routes, addresses = _local_routes(netns), _addresses(netns)
        assert f"local 10.5.0.1 dev vip0 proto {ADDRESS_PROTO} scope host" in routes, routes
        assert "10.5.0.1/32" not in addresses, addresses
        assert "2001:db8::30/128" in addresses, addresses
        assert f"local 2001:db8::30 dev vip0 proto {ADDRESS_PROTO}" not in routes, routes
        # The adopted ones kept their kind.
        assert (
            "10.5.0.7/32" in addresses
            and f"local 2001:db8::37 dev vip0 proto {ADDRESS_PROTO}" in routes
        )
        # Traffic: an IPv4 service on the VIP itself, an IPv6 one on its VIP too (an address).
        netns.run(
            "python3",
            "-c",
            "import socket\n"
            "s = socket.create_server(('10.5.0.1', 0))\n"
            "socket.create_connection(s.getsockname(), timeout=2).close()\n"
            "s6 = socket.create_server(('2001:db8::30', 0), family=socket.AF_INET6)\n"
            "socket.create_connection(s6.getsockname()[:2], timeout=2).close()\n",
        )
    finally:
        table.close()

    again = table_in(netns, kind=FamilyTable)  # a restarted daemon removes each as what it is
    try:
        assert again.owned() == set(v4 + v6) - {ip("10.5.0.9")}
        assert again.unbind_many(set(v4 + v6)) == {}
        assert set(again.addresses()) == {ip("10.5.0.9")}
        assert f"proto {ADDRESS_PROTO}" not in _local_routes(netns)
    finally:
        again.close()
