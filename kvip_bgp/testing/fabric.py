"""The fabric lab: one FRR ToR with ECMP, three kvip-bgp nodes, a client, the fake API.

Every other lab stops at "the route is in FRR's table"; this one carries traffic, so the
tests can count the requests a change of the cluster loses::

    kvfab-client 10.2.0.2 ── 10.2.0.1  kvfab-tor  (zebra + bgpd [+ bfdd], AS 64500,
                                        │  maximum-paths 8, L4 multipath hashing,
                                        │  the fake API on 10.9.0.1, "tor" answers
                                        │  for a VIP it has no route for)
            10.1.N.1 ───────────────────┼──── one veth per node
    kvfab-nN 10.1.N.2: kvip-bgp run (+ ExaBGP), VIPs on lo, the "pods" (pods.py)

The ToR's zebra puts the BGP routes into its kernel FIB, so a VIP announced by several
nodes is a multipath route and new connections spread over the nodes by their ports.
Nodes forward (as Kubernetes nodes do) and route everything else to the ToR. The fake
API runs in this process on a socket that lives in the ToR's namespace; a forwarder on
the host's loopback makes it reachable for the real ``kubectl`` too
(``host_kubeconfig``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.frr import FrrNeighbor, ZebraBgp
from kvip_bgp.testing.netlab import (
    Lab,
    Netns,
    cleanup,
    connect_in_netns,
    http_get_in_netns,
    listen_socket_in_netns,
    wait_until,
)
from kvip_bgp.testing.objects import node
from kvip_bgp.testing.procfs import exabgp_pid, json_log_lines, run_argv

__all__ = ["Fabric", "FabricNode", "NodeSpec"]

PREFIX = "kvfab-"
TOR_ASN = 64500
NODE_ASN = 64512
TOR_ROUTER_ID = "10.9.0.1"
API_ADDRESS = "10.9.0.1"
CLIENT_V4 = "10.2.0.2"
CLIENT_GATEWAY = "10.2.0.1"
HTTP_PORT = 9472
VIP_RANGE = "198.51.100.0/24"
TOR_ANSWER = "tor"
"""Who answers a request for a VIP the ToR has no route for."""
BFD_TIMERS: Mapping[str, int] = {"min_rx": 300, "min_tx": 300, "multiplier": 3}
# ECMP over every node: bgpd's multipath into zebra, which installs one multipath route.
MULTIPATH_CONFIG = """\
router bgp 64500
 address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
exit
"""


@dataclass(frozen=True)
class NodeSpec:
    """Node N of the fabric: its names and the /24 of its link to the ToR."""

    index: int

    @property
    def name(self) -> str:
        return f"node-{self.index}"

    @property
    def short(self) -> str:
        return f"n{self.index}"

    @property
    def address(self) -> str:
        return f"10.1.{self.index}.2"

    @property
    def tor_address(self) -> str:
        return f"10.1.{self.index}.1"

    node_if = "tor0"

    @property
    def tor_if(self) -> str:
        return f"node{self.index}"


class FabricNode:
    """One node: its namespace and the ``kvip-bgp run`` in it (its own config and log)."""

    def __init__(self, spec: NodeSpec, ns: Netns, lab: Lab, kubeconfig: Path) -> None:
        self.spec = spec
        self.ns = ns
        self.lab = lab
        self.kubeconfig = kubeconfig
        self.workdir = lab.workdir / spec.short
        self.workdir.mkdir(exist_ok=True)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.bfd = False
        self.overrides: dict[str, Any] = {}
        self._log: Any = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def log_path(self) -> Path:
        return self.workdir / "kvip-bgp.log"

    def config(self) -> dict[str, Any]:
        """This node's kvip-bgp config (a plain dict, written as YAML)."""
        peer: dict[str, Any] = {
            "address": self.spec.tor_address,
            "asn": TOR_ASN,
            "local_address": self.spec.address,
        }
        if self.bfd:
            peer["bfd"] = dict(BFD_TIMERS)
        config: dict[str, Any] = {
            "node_name": self.name,
            "bgp": {
                "asn": NODE_ASN,
                "router_id": self.spec.address,
                "hold_time": 9,
                "graceful_restart": 30,
                "peers": [peer],
            },
            "vips": {"allowed": [VIP_RANGE], "interface": "lo"},
            "kubernetes": {
                "enabled": True,
                "kubeconfig": str(self.kubeconfig),
                "withdraw_when_cordoned": True,
            },
            "http": {"listen": f"127.0.0.1:{HTTP_PORT}"},
            "log": {"format": "json", "level": "info"},
            "shutdown_timeout": 10,
        }
        for key, value in self.overrides.items():
            section = config.setdefault(key, {})
            if isinstance(value, Mapping) and isinstance(section, dict):
                section.update(value)
            else:
                config[key] = value
        return config

    def start(self) -> subprocess.Popen[bytes]:
        """Start ``kvip-bgp run`` (its log appended to ``log_path``)."""
        if self.running():
            raise RuntimeError(f"kvip-bgp already runs on {self.name}")
        path = self.workdir / "kvip-bgp.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        if self._log is not None:
            self._log.close()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (kept for the run)
        argv = run_argv(path, self.workdir / "run")
        self.daemon = self.lab.popen(self.ns, argv, stdout=self._log, stderr=subprocess.STDOUT)
        return self.daemon

    def running(self) -> bool:
        return self.daemon is not None and self.daemon.poll() is None

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Signal the daemon and wait for it; its exit status (None if it was not running)."""
        proc = self.daemon
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                raise
        return proc.returncode

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None

    def exabgp_pid(self) -> int | None:
        return None if self.daemon is None else exabgp_pid(self.daemon.pid)

    def http(self, path: str) -> tuple[int, bytes]:
        return http_get_in_netns(self.ns.name, f"http://127.0.0.1:{HTTP_PORT}{path}")

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        if code != 200:
            raise RuntimeError(f"/status of {self.name}: {code} {body[:200]!r}")
        result: dict[str, Any] = json.loads(body)
        return result

    def bound(self) -> set[str]:
        """The /32 addresses on the node's lo (its bound VIPs)."""
        out = self.ns.run("ip", "-j", "-4", "addr", "show", "dev", "lo").stdout
        return {
            info["local"]
            for entry in json.loads(out or "[]")
            for info in entry.get("addr_info", [])
            if info.get("prefixlen") == 32 and info.get("local") != "127.0.0.1"
        }

    def log_lines(self) -> list[dict[str, Any]]:
        return json_log_lines(self.log_path)

    def log_tail(self, count: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log for {self.name})"
        return f"--- {self.name}:\n" + "\n".join(lines[-count:])

    def silence(self, on: bool = True) -> None:
        """Drop every packet on the node's link, both ends, the link staying up (a node
        that died silently); ``on=False`` heals it."""
        tor = Netns(self.lab.prefix + "tor")
        for ns, ifname in ((tor, self.spec.tor_if), (self.ns, self.spec.node_if)):
            if on:
                ns.run("tc", "qdisc", "replace", "dev", ifname, "root", "pfifo", "limit", "0")
            else:
                ns.run("tc", "qdisc", "del", "dev", ifname, "root", check=False)


class _Forwarder:
    """TCP from the host's loopback into a namespace, for the real ``kubectl``.

    One thread accepts, two threads per connection copy bytes; all end with ``close``.
    """

    def __init__(self, netns: str, host: str, port: int) -> None:
        self._target = (netns, host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="fabric-forward", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = connect_in_netns(*self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()
        self._thread.join(2)


class Fabric:
    """Builds and owns the fabric; a context manager (leaving removes everything).

    ``bfd_nodes`` run BFD with the ToR (300 ms x 3); the others rely on the hold time.
    Nodes are started by ``start_nodes`` once the test has put its objects in ``api``.
    """

    def __init__(
        self,
        nodes: int = 3,
        *,
        prefix: str = PREFIX,
        bfd_nodes: Sequence[int] = (),
        keep_workdir: bool = False,
    ) -> None:
        self.lab = Lab(prefix, keep_workdir=keep_workdir)
        self.specs = tuple(NodeSpec(i) for i in range(1, nodes + 1))
        self.bfd_nodes = frozenset(bfd_nodes)
        self.api = FakeKubeAPI(bookmark_interval=1.0)
        self.nodes: dict[str, FabricNode] = {}
        self.tor: ZebraBgp | None = None
        self.kubeconfig: Path | None = None
        """For the nodes: the API on the ToR's 10.9.0.1."""
        self.host_kubeconfig: Path | None = None
        """For the host (``kubectl``): the API through a loopback forwarder."""
        self._forwarder: _Forwarder | None = None

    # -- building ---------------------------------------------------------------------

    def __enter__(self) -> Fabric:
        cleanup(self.lab.prefix)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tor_ns(self) -> Netns:
        return self.lab.namespaces["tor"]

    @property
    def client_ns(self) -> Netns:
        return self.lab.namespaces["client"]

    def _build(self) -> None:
        lab = self.lab
        tor = lab.add_netns("tor")
        # No ICMP rate limit: a client must hear "no route" for every SYN, not one a second.
        # accept_local: the ToR owns the VIP range (its "no route" answer, below), so a
        # node's reply from a VIP (a SYN-ACK) that arrives just after that VIP's route
        # left the FIB has a local source address and was dropped as a martian; a real
        # ToR owns no VIP and forwards it. Without this a SYN in that millisecond was
        # lost once in CI (retransmitted 1 s later).
        for key in (
            "net.ipv4.ip_forward=1",
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.conf.all.accept_local=1",
        ):
            tor.run("sysctl", "-qw", key)
        tor.add_address("lo", f"{API_ADDRESS}/32")
        client = lab.add_netns("client")
        lab.add_link(client, "tor0", tor, "client", (f"{CLIENT_V4}/24",), (f"{CLIENT_GATEWAY}/24",))
        client.run("ip", "route", "add", "default", "via", CLIENT_GATEWAY)
        for spec in self.specs:
            ns = lab.add_netns(spec.short)
            lab.add_link(
                ns,
                spec.node_if,
                tor,
                spec.tor_if,
                (f"{spec.address}/24",),
                (f"{spec.tor_address}/24",),
            )
            ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0")
            ns.run("ip", "route", "add", "default", "via", spec.tor_address)

        # Where the ToR has no route for a VIP it answers itself ("tor"), so a client can
        # tell "withdrawn everywhere" from a failure a node caused.
        tor.run("ip", "route", "add", "local", VIP_RANGE, "dev", "lo", "table", "main")
        sink = [sys.executable, "-m", "kvip_bgp.testing.pods", "0.0.0.0", "80", TOR_ANSWER]
        lab.popen(tor, sink, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        sock = listen_socket_in_netns(tor.name, API_ADDRESS, 0)
        port = sock.getsockname()[1]
        url = self.api.start(sock=sock)
        lab.on_exit(self.api.stop)
        self.kubeconfig = self.api.write_kubeconfig(lab.workdir / "kubeconfig-nodes", url)
        self._forwarder = _Forwarder(tor.name, API_ADDRESS, port)
        lab.on_exit(self._forwarder.close)
        self.host_kubeconfig = self.api.write_kubeconfig(
            lab.workdir / "kubeconfig", f"http://127.0.0.1:{self._forwarder.port}"
        )

        self.tor = ZebraBgp(
            tor,
            TOR_ASN,
            TOR_ROUTER_ID,
            [FrrNeighbor(s.address, NODE_ASN, bfd=s.index in self.bfd_nodes) for s in self.specs],
            lab.workdir / "tor",
            ipv6=False,
            extra_config=MULTIPATH_CONFIG,
            bfdd=bool(self.bfd_nodes),
        )
        self.tor.start()
        lab.on_exit(self.tor.stop)

        for spec in self.specs:
            fabric_node = FabricNode(spec, lab.namespaces[spec.short], lab, self.kubeconfig)
            fabric_node.bfd = spec.index in self.bfd_nodes
            self.nodes[spec.name] = fabric_node
            self.api.put(node(spec.name, addresses=(spec.address,)))

    def close(self) -> None:
        for fabric_node in self.nodes.values():
            fabric_node.close()
        self.lab.close()

    # -- running ----------------------------------------------------------------------

    def node(self, name: str) -> FabricNode:
        return self.nodes[name]

    def start_nodes(self, timeout: float = 60.0) -> None:
        """Start kvip-bgp on every node; wait until the ToR has all sessions up."""
        for fabric_node in self.nodes.values():
            fabric_node.start()
        for fabric_node in self.nodes.values():
            self.wait_established(fabric_node, timeout)

    def wait_established(self, fabric_node: FabricNode, timeout: float = 30.0) -> None:
        assert self.tor is not None

        def up() -> bool:
            if not fabric_node.running():
                raise AssertionError(f"kvip-bgp exited\n{fabric_node.log_tail()}")
            assert self.tor is not None
            return self.tor.peer_state(fabric_node.spec.address) == "Established"

        wait_until(up, timeout, what=f"the ToR's session with {fabric_node.name}")

    def next_hops(self, vip: str) -> set[str]:
        """The next hops of ``vip``'s route in the ToR's kernel FIB (empty: no route)."""
        out = self.tor_ns.run("ip", "-j", "route", "show", f"{vip}/32").stdout
        hops: set[str] = set()
        for route in json.loads(out or "[]"):
            if "gateway" in route:
                hops.add(route["gateway"])
            for hop in route.get("nexthops", []):
                hops.add(hop["gateway"])
        return hops

    def nodes_in_fib(self, vip: str) -> set[str]:
        """The names of the nodes the ToR's FIB sends ``vip`` to."""
        hops = self.next_hops(vip)
        return {s.name for s in self.specs if s.address in hops}

    def wait_fib(self, vip: str, nodes: set[str], timeout: float = 20.0) -> None:
        """Wait until the ToR's FIB sends ``vip`` to exactly ``nodes``."""
        seen: list[set[str]] = [set()]

        def check() -> bool:
            seen[0] = self.nodes_in_fib(vip)
            return seen[0] == nodes

        try:
            wait_until(check, timeout, 0.05, what=f"{vip} -> {sorted(nodes)} in the ToR's FIB")
        except TimeoutError as error:
            tails = "\n".join(n.log_tail(15) for n in self.nodes.values())
            raise TimeoutError(f"{error}; FIB has {sorted(seen[0])}\n{tails}") from None

    @staticmethod
    def admits(vip: str) -> bool:
        """Whether ``vip`` is inside the nodes' ``vips.allowed``."""
        return ipaddress.ip_address(vip) in ipaddress.ip_network(VIP_RANGE)

    def tor_table(self) -> str:
        """The ToR's BGP table and kernel routes for the VIP range (for humans)."""
        assert self.tor is not None
        bgp = self.tor.vtysh("show bgp ipv4 unicast")
        fib = self.tor_ns.run("ip", "route", "show", "root", VIP_RANGE).stdout
        return f"{bgp}\n--- the ToR's kernel FIB:\n{fib}"

    @contextlib.contextmanager
    def silenced(self, name: str) -> Iterator[FabricNode]:
        """A node that died silently for the block, healed afterwards."""
        fabric_node = self.nodes[name]
        fabric_node.silence()
        try:
            yield fabric_node
        finally:
            fabric_node.silence(False)
