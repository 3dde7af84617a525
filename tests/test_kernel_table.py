"""``output: kernel-table``: VIPs as routes in a kernel table that the host's router exports.

``netif.RouteTable`` is exercised directly inside a lab namespace (its netlink socket is
opened there with ``in_netns``, so it only ever sees that namespace's tables). Then the
host's routing daemon picks the routes up and announces them over BGP to an FRR ToR:

- FRR 8.4 (zebra + bgpd in the node namespace): ``ip import-table 198`` makes zebra import
  table 198 into its RIB, ``redistribute table 198`` hands it to BGP. FRR 8.4 has no
  ``ipv6 import-table``, so this path is IPv4 only.
- BIRD 2: a ``kernel`` protocol with ``kernel table 198; learn;`` reads both families and
  can filter on the route protocol (``krt_source``), so only our routes are exported.

Measured on the lab machine (FRR 8.4.4, BIRD 2.0.12): zebra imports a unicast ``dev lo``
route and a blackhole but ignores a ``type local`` route (and would copy a blackhole into
the main table), hence unicast via ``lo``. From ``install()`` to the route at the ToR:
~1.2 s through zebra + bgpd, ~0.05 s through BIRD (it follows netlink notifications).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator

import pytest
from conftest import require_lab

from kvip_bgp.netif.routes import RouteTable
from kvip_bgp.testing.bird import BirdNeighbor, BirdPeer
from kvip_bgp.testing.frr import FrrNeighbor, FrrPeer, ZebraBgp
from kvip_bgp.testing.netlab import Lab, Netns, in_netns, wait_until
from kvip_bgp.testing.procfs import cmdline, pid_alive

pytestmark = pytest.mark.lab

PREFIX = "kvi-"  # never the shared default "kvl-": cleanup removes every namespace of a prefix
TABLE = 198
PROTO = 248
V4 = ipaddress.ip_address("198.51.100.10")
V6 = ipaddress.ip_address("2001:db8:100::10")
FOREIGN = "198.51.100.20"
FOREIGN_V6 = "2001:db8:100::20"
NODE_ASN = 64512
TOR_ASN = 64500


def kernel_routes(ns: Netns, table: int | str = TABLE) -> dict[str, dict[str, object]]:
    """``ip -j route show table N`` for both families, keyed by destination."""
    result: dict[str, dict[str, object]] = {}
    for family in ("-4", "-6"):
        proc = ns.run("ip", "-j", family, "route", "show", "table", str(table), check=False)
        if "table does not exist" in proc.stderr:
            continue
        out = proc.stdout
        for route in json.loads(out or "[]"):
            route.setdefault("protocol", "boot")  # ip -j leaves out the default protocol
            result[str(route["dst"])] = route
    return result


@pytest.fixture
def lab(lab_required: None) -> Iterator[Lab]:
    with Lab(PREFIX) as running:
        yield running


@pytest.fixture
def table(lab: Lab) -> Iterator[RouteTable]:
    # The netlink socket is created inside the node namespace and stays bound to it.
    with in_netns(lab.node.name):
        route_table = RouteTable(TABLE, PROTO)
    yield route_table
    route_table.close()


def add_foreign_routes(ns: Netns) -> None:
    """Someone else's routes: same table other protocol, and our protocol in another table."""
    ns.run(
        "ip", "route", "add", f"{FOREIGN}/32", "dev", "lo", "table", str(TABLE), "proto", "static"
    )
    ns.run("ip", "-6", "route", "add", f"{FOREIGN_V6}/128", "dev", "lo", "table", str(TABLE))
    ns.run("ip", "route", "add", "198.51.100.30/32", "dev", "lo", "table", "199", "proto", "248")


def test_route_table_touches_only_its_own_protocol(lab: Lab, table: RouteTable) -> None:
    add_foreign_routes(lab.node)
    assert table.routes() == set()

    assert table.install(V4) is True
    assert table.install(V6) is True
    assert table.install(V4) is True  # idempotent
    assert table.routes() == {V4, V6}
    routes = kernel_routes(lab.node)
    for vip in (V4, V6):
        assert routes[str(vip)]["dev"] == "lo"
        assert routes[str(vip)]["protocol"] == str(PROTO)
    # Nothing leaked into the main table, where it would change forwarding.
    assert str(V4) not in kernel_routes(lab.node, "main")

    # A foreign route for a VIP we want: refused, and left exactly as it was.
    assert table.install(ipaddress.ip_address(FOREIGN)) is False
    table.remove(ipaddress.ip_address(FOREIGN))
    table.remove(ipaddress.ip_address(FOREIGN_V6))
    routes = kernel_routes(lab.node)
    assert routes[FOREIGN]["protocol"] == "static"
    assert routes[FOREIGN_V6]["protocol"] == "boot"
    assert "198.51.100.30" in kernel_routes(lab.node, 199)  # our protocol, other table

    # After a restart a new instance adopts what the previous one installed.
    with in_netns(lab.node.name):
        again = RouteTable(TABLE, PROTO)
    try:
        assert again.routes() == {V4, V6}
        again.remove(V4)
        again.remove(V4)  # already gone: not an error
    finally:
        again.close()
    assert table.routes() == {V6}
    table.remove(V6)
    routes = kernel_routes(lab.node)
    assert set(routes) == {FOREIGN, FOREIGN_V6}


def test_route_table_above_255(lab: Lab) -> None:
    """Tables > 255 are carried in RTA_TABLE; the 8-bit header field alone would lie."""
    with in_netns(lab.node.name):
        big = RouteTable(100_000, PROTO)
    try:
        assert big.install(V4)
        assert big.routes() == {V4}
        assert str(V4) in kernel_routes(lab.node, 100_000)
        assert str(V4) not in kernel_routes(lab.node, 100_000 % 256)
        big.remove(V4)
        assert big.routes() == set()
    finally:
        big.close()


# ---------------------------------------------------------------- FRR zebra redistributes


@pytest.fixture
def tor(lab: Lab) -> FrrPeer:
    peer = FrrPeer(
        lab.tor, TOR_ASN, Lab.TOR_V4, [FrrNeighbor(Lab.NODE_V4, NODE_ASN)], lab.workdir / "tor"
    )
    peer.start()
    lab.on_exit(peer.stop)
    return peer


def test_frr_zebra_redistributes_the_table(lab: Lab, table: RouteTable, tor: FrrPeer) -> None:
    require_lab("/usr/lib/frr/zebra")
    host = ZebraBgp(
        lab.node,
        NODE_ASN,
        Lab.NODE_V4,
        [FrrNeighbor(Lab.TOR_V4, TOR_ASN)],
        lab.workdir / "host-frr",
        extra_config=f"router bgp {NODE_ASN}\n address-family ipv4 unicast\n"
        f"  redistribute table {TABLE}\n exit-address-family\nexit",
        zebra_config=f"ip import-table {TABLE}\n",
    )
    host.start()
    lab.on_exit(host.stop)
    tor.wait_established(Lab.NODE_V4, timeout=20)

    started = time.monotonic()
    assert table.install(V4)
    routes = tor.wait_routes(lambda r: f"{V4}/32" in r, timeout=20, what="the VIP via zebra")
    elapsed = time.monotonic() - started
    assert routes[f"{V4}/32"].next_hop == Lab.NODE_V4
    assert routes[f"{V4}/32"].as_path == (NODE_ASN,)
    print(f"kernel route -> FRR ToR via zebra import-table: {elapsed:.2f}s")

    table.remove(V4)
    tor.wait_routes(lambda r: f"{V4}/32" not in r, timeout=20, what="the VIP withdrawn")


# ---------------------------------------------------------------- BIRD learns the table

BIRD_KERNEL = f"""
protocol kernel kt4 {{
  kernel table {TABLE};
  learn;
  scan time 1;
  ipv4 {{ import where krt_source = {PROTO}; export none; }};
}}
protocol kernel kt6 {{
  kernel table {TABLE};
  learn;
  scan time 1;
  ipv6 {{ import where krt_source = {PROTO}; export none; }};
}}
"""


def _without_link_local(ns: Netns, ifname: str) -> None:
    """Remove the interface's IPv6 link-local address and stop it coming back.

    Once BIRD knows the link-local address of the interface towards a directly connected
    neighbor, it sends it as a second IPv6 next hop (global + link-local, 32 bytes). The
    lab's FRR runs bgpd without zebra, so it cannot tell which interface that link-local
    address is on: it logs "sent a v6 LL next-hop and there's no peer interface
    information", misparses the NLRI and resets the session (NOTIFICATION 3/10), again and
    again. Whether BIRD knew the address when the session came up was a race (the address
    appears when the veth comes up, DAD takes a moment), so the IPv6 route arrived in most
    runs and never in others; waiting for the address first made every run fail. A
    production ToR runs zebra and resolves the address; the lab has no use for it.
    """
    ns.run("ip", "link", "set", "dev", ifname, "addrgenmode", "none")
    ns.run("ip", "-6", "addr", "flush", "dev", ifname, "scope", "link")


def _bird_path_report(lab: Lab, host: BirdPeer, tor: FrrPeer) -> str:
    """Each hop of the IPv6 path kernel table -> BIRD -> ToR, for a failure message."""
    sections = {
        "kernel table": lambda: (
            lab.node.run("ip", "-6", "route", "show", "table", str(TABLE), check=False).stdout
        ),
        "node addresses": lambda: lab.node.run("ip", "-6", "addr", check=False).stdout,
        "birdc show protocols all": lambda: host.birdc("show", "protocols", "all"),
        "birdc show route all": lambda: host.birdc("show", "route", "all"),
        "ToR show bgp ipv6 unicast": lambda: tor.vtysh("show bgp ipv6 unicast"),
        "ToR show bgp summary": lambda: tor.vtysh("show bgp summary"),
        "ToR bgpd log (tail)": lambda: "\n".join(tor.log_path.read_text().splitlines()[-40:]),
        "BIRD log (tail)": lambda: "\n".join(host.log_path.read_text().splitlines()[-40:]),
    }
    parts = []
    for title, read in sections.items():
        try:
            text = read()
        except Exception as error:  # a report must not hide the original failure
            text = f"(failed: {error!r})"
        parts.append(f"--- {title}\n{text.strip()}")
    return "\n".join(parts)


def test_bird_learns_the_table_both_families(lab: Lab, table: RouteTable, tor: FrrPeer) -> None:
    require_lab("bird", "birdc")
    add_foreign_routes(lab.node)
    _without_link_local(lab.node, Lab.NODE_IF)
    host = BirdPeer(
        lab.node,
        NODE_ASN,
        Lab.NODE_V4,
        Lab.NODE_V4,
        [
            BirdNeighbor(
                Lab.TOR_V4,
                TOR_ASN,
                export='where proto = "kt4" || proto = "kt6"',
                next_hop_v6=Lab.NODE_V6,
            )
        ],
        lab.workdir / "host-bird",
        extra_config=BIRD_KERNEL,
    )
    host.start()
    lab.on_exit(host.stop)
    tor.wait_established(Lab.NODE_V4, timeout=20)

    def kernel_protocols_up() -> bool:
        lines = host.birdc("show", "protocols").splitlines()
        return all(
            any(ln.split()[:1] == [p] and " up " in f" {ln} " for ln in lines)
            for p in ("kt4", "kt6")
        )

    # BIRD's kernel protocols may still be starting: a route installed before kt6 is up
    # would wait for its next scan.
    wait_until(kernel_protocols_up, 20, what="BIRD's kernel protocols up")
    started = time.monotonic()
    assert table.install(V4)
    assert table.install(V6)
    v4 = tor.wait_routes(lambda r: f"{V4}/32" in r, timeout=20, what="the IPv4 VIP via BIRD")
    try:
        v6 = tor.wait_routes(
            lambda r: f"{V6}/128" in r, timeout=20, afi="ipv6", what="the IPv6 VIP via BIRD"
        )
    except TimeoutError as error:
        # Say where the route stopped: kernel table, BIRD's kernel protocol, BIRD's
        # export, the session, the ToR (this report found the link-local race above).
        raise AssertionError(f"{error}\n{_bird_path_report(lab, host, tor)}") from None
    print(f"kernel routes -> FRR ToR via BIRD kernel protocol: {time.monotonic() - started:.2f}s")
    assert v4[f"{V4}/32"].next_hop == Lab.NODE_V4
    assert v6[f"{V6}/128"].next_hop == Lab.NODE_V6
    # BIRD filtered on the route protocol: the foreign routes in the same table stay home.
    assert f"{FOREIGN}/32" not in v4
    assert f"{FOREIGN_V6}/128" not in v6

    table.remove(V4)
    table.remove(V6)
    tor.wait_routes(lambda r: f"{V4}/32" not in r, timeout=20, what="the IPv4 VIP withdrawn")
    tor.wait_routes(
        lambda r: f"{V6}/128" not in r, timeout=20, afi="ipv6", what="the IPv6 VIP withdrawn"
    )
    assert set(kernel_routes(lab.node)) == {FOREIGN, FOREIGN_V6}


def test_daemon_in_kernel_table_mode(lab_required: None) -> None:
    """``kvip-bgp run`` with output: kernel-table: no ExaBGP, routes in table 198 only."""
    from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
    from kvip_bgp.testing.scenario import Scenario, daemon_config

    with Scenario(prefix=PREFIX) as scenario:
        ns = scenario.lab.node
        ns.run("ip", "route", "add", f"{FOREIGN}/32", "dev", "lo", "table", str(TABLE))
        scenario.api.put(node())
        scenario.api.put(service("web", str(V4)))
        scenario.api.put(endpoint_slice("web", [NODE_NAME]))
        config = daemon_config(
            scenario.kubeconfig,
            output="kernel-table",
            kernel_table={"table": TABLE, "protocol": PROTO},
        )
        scenario.start_daemon(config)

        def ours() -> set[str]:
            return {
                dst
                for dst, route in kernel_routes(ns).items()
                if str(route.get("protocol")) == str(PROTO)
            }

        wait_until(lambda: ours() == {str(V4)}, 15, what="VIP route in table 198")
        wait_until(lambda: scenario.http("/readyz")[0] == 200, 10, what="ready without peers")
        assert "exabgp" not in " ".join(
            " ".join(cmdline(pid)) for pid in ns.pids() if pid_alive(pid)
        )
        scenario.api.delete("Service", "web", "default")
        wait_until(lambda: ours() == set(), 15, what="route removed with the Service")
        assert FOREIGN in kernel_routes(ns), "a foreign route in the table is never touched"
        scenario.api.put(service("web2", "198.51.100.11"))
        scenario.api.put(endpoint_slice("web2", [NODE_NAME]))
        wait_until(lambda: ours() == {"198.51.100.11"}, 15, what="second VIP")
        assert scenario.stop_daemon() == 0
        assert ours() == set(), "SIGTERM removes our routes"
        assert FOREIGN in kernel_routes(ns)
