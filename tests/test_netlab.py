"""Lab plumbing tests: namespaces, veth, sockets across namespaces, and the FRR peer.

These check the harness every other lab test stands on, against the real kernel and the
real FRR 8.4, so a broken harness fails here with a clear name instead of as a mystery
in an end-to-end test.
"""

from __future__ import annotations

import http.server
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.testing.frr import (
    FrrError,
    FrrNeighbor,
    FrrNetwork,
    FrrPeer,
    FrrRoute,
    parse_routes_detail,
)
from kvip_bgp.testing.netlab import (
    DEFAULT_PREFIX,
    Lab,
    Netns,
    cleanup,
    connect_in_netns,
    http_get_in_netns,
    list_netns,
    listen_socket_in_netns,
    wait_until,
)

NODE_AS = 64512
TOR_AS = 64500
VIP4 = "198.51.100.7/32"
VIP6 = "2001:db8:100::7/128"

# A real `show bgp ipv4 unicast json detail` from FRR 8.4.4 (peer killed, graceful
# restart holding the route): a header object first, then one object per path.
DETAIL_SAMPLE = {
    "vrfId": 0,
    "routerId": "192.0.2.2",
    "localAS": 64500,
    "routes": {
        "198.51.100.7/32": [
            {"prefix": "198.51.100.7/32", "version": 1},
            {
                "aspath": {
                    "string": "64512 64512",
                    "segments": [{"type": "as-sequence", "list": [64512, 64512]}],
                    "length": 2,
                },
                "stale": True,
                "origin": "IGP",
                "metric": 50,
                "valid": True,
                "bestpath": {"overall": True, "selectionReason": "First path received"},
                "community": {
                    "string": "64512:100 no-export",
                    "list": ["64512:100", "noExport"],
                },
                "largeCommunity": {"string": "64512:1:2", "list": ["64512:1:2"]},
                "nexthops": [{"ip": "192.0.2.1", "afi": "ipv4", "used": True}],
                "peer": {"peerId": "192.0.2.1", "type": "external"},
            },
        ],
        "2001:db8:100::7/128": [
            {"prefix": "2001:db8:100::7/128", "version": 2},
            {
                "aspath": {"string": "", "segments": [], "length": 0},
                "valid": True,
                "locPrf": 200,
                "bestpath": {"overall": True},
                "nexthops": [
                    {"ip": "fe80::1", "scope": "link-local"},
                    {"ip": "2001:db8:0:1::1", "scope": "global"},
                ],
            },
        ],
    },
}


# --------------------------------------------------------------------------- no lab


def test_parse_routes_detail_reads_every_attribute() -> None:
    routes = parse_routes_detail(DETAIL_SAMPLE)
    assert routes[VIP4] == FrrRoute(
        prefix=VIP4,
        next_hop="192.0.2.1",
        communities=("64512:100", "no-export"),
        large_communities=("64512:1:2",),
        med=50,
        local_pref=None,
        as_path=(64512, 64512),
        stale=True,
    )
    v6 = routes[VIP6]
    assert v6.next_hop == "2001:db8:0:1::1"
    assert (v6.med, v6.local_pref, v6.as_path, v6.communities) == (None, 200, (), ())


def test_wait_until_names_what_it_waited_for() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("not yet")

    with pytest.raises(TimeoutError, match=r"the answer.*ConnectionRefusedError"):
        wait_until(boom, 0.2, 0.05, what="the answer")
    calls = iter([False, False, True])
    wait_until(lambda: next(calls), 2, 0.01, what="third call")


# --------------------------------------------------------------------------- lab


@pytest.fixture
def lab(lab_required: None) -> Iterator[Lab]:
    with Lab() as built:
        yield built
    assert not [ns for ns in list_netns() if ns.startswith(DEFAULT_PREFIX)]


def _root_links_with_prefix() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if f": {DEFAULT_PREFIX}" in line]


def test_lab_builds_and_tears_down(lab_required: None) -> None:
    with Lab() as lab:
        assert {lab.node.name, lab.tor.name} == {"kvl-node", "kvl-tor"}
        assert {lab.node.name, lab.tor.name} <= set(list_netns())
        addrs = lab.node.run("ip", "-o", "addr", "show", "dev", "node0").stdout
        assert "192.0.2.1/24" in addrs and "2001:db8:0:1::1/64" in addrs
        assert "tor0" in lab.tor.run("ip", "-o", "link").stdout
        assert not _root_links_with_prefix()  # veth ends never touch the root namespace
        # Real TCP across the veth, IPv4 and IPv6 (nodad: usable at once).
        for host, family in ((Lab.NODE_V4, socket.AF_INET), (Lab.NODE_V6, socket.AF_INET6)):
            with listen_socket_in_netns(lab.node.name, host, 0, family) as server:
                port = server.getsockname()[1]
                with connect_in_netns(lab.tor.name, host, port, timeout=3) as client:
                    conn, peer = server.accept()
                    with conn:
                        assert ipaddress.ip_address(peer[0]).version == (
                            6 if family == socket.AF_INET6 else 4
                        )
                        client.sendall(b"ping")
                        assert conn.recv(4) == b"ping"
        # The test process itself stays in the root namespace.
        with pytest.raises(OSError):
            socket.create_connection((Lab.NODE_V4, 9), timeout=0.5).close()
    assert not [ns for ns in list_netns() if ns.startswith(DEFAULT_PREFIX)]
    assert not _root_links_with_prefix()


def test_cleanup_kills_processes_and_is_idempotent(lab_required: None) -> None:
    ns = Netns.create(DEFAULT_PREFIX + "leftover")
    proc = ns.popen(["sleep", "60"])
    try:
        wait_until(lambda: proc.pid in ns.pids(), 5, what="sleep to be in the namespace")
        cleanup()
        assert proc.wait(timeout=5) != 0
        assert not ns.exists()
        cleanup()  # nothing left: still fine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep pytest output clean."""


def test_in_process_server_in_netns_is_reachable(lab: Lab) -> None:
    """How a fake API in the test process serves a daemon running inside a namespace."""
    sock = listen_socket_in_netns(lab.node.name, "127.0.0.1", 0)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hello, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = sock.getsockname()[1]
        script = (
            "import urllib.request, sys;"
            f"print(urllib.request.urlopen('http://127.0.0.1:{port}/x', timeout=5).read()"
            ".decode())"
        )
        out = lab.node.run(sys.executable, "-c", script, timeout=15).stdout
        assert out.strip() == "hello /x"
        # Loopback of kvl-node, not of the root namespace.
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_get_reaches_server_inside_netns(lab: Lab) -> None:
    with listen_socket_in_netns(lab.node.name, Lab.NODE_V6, 0, socket.AF_INET6) as probe:
        port = probe.getsockname()[1]  # a free port; released when the with ends
    lab.popen(
        lab.node,
        [sys.executable, "-m", "http.server", "--bind", Lab.NODE_V6, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://[{Lab.NODE_V6}]:{port}/"
    wait_until(
        lambda: http_get_in_netns(lab.tor.name, url, timeout=2)[0] == 200,
        10,
        what="http.server in the node namespace",
    )
    status, body = http_get_in_netns(lab.tor.name, url + "nope", timeout=2)
    assert status == 404 and body


# --------------------------------------------------------------------------- FRR


def _node_announcer(lab: Lab, password: str | None = None) -> FrrPeer:
    """FRR in kvl-node standing in for kvip-bgp: a /32 with attributes and a /128."""
    nh6 = (
        "route-map KVL-NH6 permit 10\n"
        f" set ipv6 next-hop global {Lab.NODE_V6}\n"
        "exit\n"
        f"router bgp {NODE_AS}\n"
        " address-family ipv6 unicast\n"
        f"  neighbor {Lab.TOR_V4} route-map KVL-NH6 out\n"
        " exit-address-family\n"
        "exit"
    )
    peer = FrrPeer(
        lab.node,
        NODE_AS,
        Lab.NODE_V4,
        [FrrNeighbor(Lab.TOR_V4, TOR_AS, password=password)],
        lab.workdir / "node",
        networks=[
            FrrNetwork(VIP4, ("64512:100", "64512:200"), ("64512:1:2",), med=50),
            FrrNetwork(VIP6, ("64512:300",)),
        ],
        extra_config=nh6,
    )
    lab.on_exit(peer.stop)
    return peer


def _tor(lab: Lab, password: str | None = None) -> FrrPeer:
    peer = FrrPeer(
        lab.tor,
        TOR_AS,
        Lab.TOR_V4,
        [FrrNeighbor(Lab.NODE_V4, NODE_AS, password=password)],
        lab.workdir / "tor",
    )
    lab.on_exit(peer.stop)
    return peer


def test_frr_peers_exchange_routes_with_attributes(lab: Lab) -> None:
    node, tor = _node_announcer(lab), _tor(lab)
    node.start()
    tor.start()
    tor.wait_established(Lab.NODE_V4)
    assert node.peer_state(Lab.TOR_V4) == "Established"

    routes = tor.wait_routes(lambda r: VIP4 in r, what=VIP4)
    assert routes[VIP4] == FrrRoute(
        prefix=VIP4,
        next_hop=Lab.NODE_V4,
        communities=("64512:100", "64512:200"),
        large_communities=("64512:1:2",),
        med=50,
        local_pref=None,  # eBGP: no LOCAL_PREF on the wire
        as_path=(NODE_AS,),
        stale=False,
    )
    # A /128 over the IPv4 session with an explicit IPv6 next hop.
    v6 = tor.wait_routes(lambda r: VIP6 in r, afi="ipv6", what=VIP6)[VIP6]
    assert (v6.next_hop, v6.communities, v6.as_path) == (Lab.NODE_V6, ("64512:300",), (NODE_AS,))
    assert tor.prefixes_received(Lab.NODE_V4, "ipv4") == 1
    assert tor.prefixes_received(Lab.NODE_V4) == 2

    # The announcer crashes: graceful restart keeps its routes, marked stale ...
    node.stop(graceful=False)
    assert not node.running()
    tor.wait_routes(lambda r: VIP4 in r and r[VIP4].stale, 10, what="stale " + VIP4)
    assert tor.peer_state(Lab.NODE_V4) != "Established"
    # ... and fresh again once it is back.
    node.start()
    tor.wait_routes(lambda r: VIP4 in r and not r[VIP4].stale, 15, what="refreshed " + VIP4)


def test_frr_md5_mismatch_keeps_session_down(lab: Lab) -> None:
    node, tor = _node_announcer(lab, password="wrong-secret"), _tor(lab, password="secret")
    node.start()
    tor.start()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert tor.peer_state(Lab.NODE_V4) != "Established"
        time.sleep(0.25)
    assert tor.routes() == {}
    node.configure(f"router bgp {NODE_AS}", f"neighbor {Lab.TOR_V4} password secret")
    tor.wait_established(Lab.NODE_V4, timeout=20)


def test_frr_config_error_is_reported(lab: Lab, tmp_path: Path) -> None:
    bad = FrrPeer(
        lab.tor, TOR_AS, Lab.TOR_V4, [], tmp_path / "bad", extra_config="router bgp 1\n bogus\n"
    )
    with pytest.raises(FrrError, match=r"No such command.*bogus"):
        bad.start()
    assert not bad.running()
