"""The namespace lab with everything running: fake API → kvip-bgp → ExaBGP → FRR.

Used by the integration tests and by ``make lab``:

    kvl-node: kvip-bgp (+ ExaBGP), the fake Kubernetes API on 127.0.0.1, VIPs on lo
        |  veth 192.0.2.1 <-> 192.0.2.2
    kvl-tor:  FRR bgpd, AS 64500

The fake API server runs inside this (test) process but listens on a socket created in
the node namespace, so the daemon reaches it on its own loopback while tests change
objects directly in memory.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kvip_bgp.netif.netlink import ADDRESS_PROTO
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.frr import FrrNeighbor, FrrPeer, FrrRoute
from kvip_bgp.testing.incluster import InCluster, ensure_mount_point
from kvip_bgp.testing.netlab import (
    Lab,
    http_get_in_netns,
    listen_socket_in_netns,
    wait_for_value,
)
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.procfs import json_log_lines, run_argv

NODE_ASN = 64512
TOR_ASN = 64500
HTTP_PORT = 9472


def daemon_config(kubeconfig: Path | None, **overrides: Any) -> dict[str, Any]:
    """The daemon's config for the lab node (a plain dict, written as YAML)."""
    config: dict[str, Any] = {
        "node_name": NODE_NAME,
        "bgp": {
            "asn": NODE_ASN,
            "hold_time": 9,
            "graceful_restart": 30,
            "peers": [{"address": Lab.TOR_V4, "asn": TOR_ASN, "local_address": Lab.NODE_V4}],
        },
        "advertise": {"communities": ["64512:100"]},
        "vips": {"allowed": ["198.51.100.0/24", "2001:db8:100::/64"], "interface": "lo"},
        "kubernetes": {
            "enabled": kubeconfig is not None,
            "kubeconfig": str(kubeconfig) if kubeconfig else None,
        },
        "http": {"listen": f"127.0.0.1:{HTTP_PORT}"},
        "log": {"format": "json", "level": "info"},
        "shutdown_timeout": 10,
    }
    for key, value in overrides.items():
        config[key] = value
    return config


class Scenario:
    """Owns one lab run. Use as a context manager; ``start_daemon()`` when ready."""

    def __init__(
        self,
        kubernetes: bool = True,
        keep_workdir: bool = False,
        prefix: str = "kvl-",
        *,
        tor_asn: int = TOR_ASN,
        tor_neighbors: Sequence[FrrNeighbor] | None = None,
        topology: Callable[[Lab], object] | None = None,
        tor: Callable[[Lab], object] | None = None,
    ) -> None:
        """``tor_asn``/``tor_neighbors`` change the FRR ToR (iBGP, MD5, multihop, IPv6
        neighbors); ``topology`` runs after the standard node <-> tor link is built and
        before any peer starts (a router namespace between them, extra namespaces);
        ``tor`` replaces FRR with another peer: it is called with the lab, starts the
        peer in ``lab.tor`` (registering its own ``lab.on_exit`` stop) and returns it as
        ``scenario.tor_peer``.
        """
        # Distinct prefixes let several labs run at once (cleanup removes only its own).
        self.lab = Lab(prefix, keep_workdir=keep_workdir)
        self.kubernetes = kubernetes
        self.api = FakeKubeAPI(bookmark_interval=1.0)
        self.frr: FrrPeer | None = None
        self.tor_asn = tor_asn
        self.tor_neighbors = tuple(tor_neighbors) if tor_neighbors is not None else None
        self._topology = topology
        self._tor_factory = tor
        self.tor_peer: object | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.config_path: Path | None = None
        self.kubeconfig: Path | None = None
        self._log_handle: Any = None

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Scenario:
        self.lab.__enter__()
        try:
            if self._topology is not None:
                self._topology(self.lab)
            if self._tor_factory is not None:
                self.tor_peer = self._tor_factory(self.lab)
            else:
                self._start_tor()
            if self.kubernetes:
                sock = listen_socket_in_netns(self.lab.node.name, "127.0.0.1", 0)
                url = self.api.start(sock=sock)
                self.kubeconfig = self.api.write_kubeconfig(self.lab.workdir / "kubeconfig", url)
                self.lab.on_exit(self.api.stop)
        except BaseException:
            self.lab.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_daemon()
        finally:
            if self._log_handle is not None:
                self._log_handle.close()
            self.lab.close()

    def _start_tor(self) -> None:
        workdir = self.lab.workdir / "tor"
        workdir.mkdir(exist_ok=True)
        self.frr = FrrPeer(
            self.lab.tor,
            self.tor_asn,
            Lab.TOR_V4,
            self.tor_neighbors or [FrrNeighbor(Lab.NODE_V4, NODE_ASN)],
            workdir,
        )
        self.frr.start()
        self.lab.on_exit(self.frr.stop)

    @property
    def log_path(self) -> Path:
        return self.lab.workdir / "kvip-bgp.log"

    def write_config(self, config: Mapping[str, Any]) -> Path:
        path = self.lab.workdir / "kvip-bgp.yaml"
        path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        self.config_path = path
        return path

    def start_daemon(
        self,
        config: Mapping[str, Any] | None = None,
        source: Path | None = None,
        in_cluster: InCluster | None = None,
    ) -> subprocess.Popen[bytes]:
        """``kvip-bgp run`` in the node namespace. ``source``: a checkout whose
        ``kvip_bgp`` the daemon (and the ExaBGP and helpers it starts) imports instead
        of this one's, with the same interpreter (``PYTHONPATH`` and cwd point there).
        ``in_cluster``: with its env and its credentials at the in-cluster path, seen
        by the daemon only (``InCluster.argv``); ``config`` then names no kubeconfig."""
        path = self.write_config(config or daemon_config(self.kubeconfig))
        if self._log_handle is not None:  # a restart: the previous run's handle is done
            self._log_handle.close()
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 (kept for the run)
        argv = run_argv(path, self.lab.workdir / "run")
        extra: dict[str, Any] = {}
        env = dict(os.environ)
        if source is not None:
            env["PYTHONPATH"] = str(source)
            extra["cwd"] = str(source)
        if in_cluster is not None:
            ensure_mount_point()
            argv = in_cluster.argv(argv)
            env.update(in_cluster.env())
        if env != os.environ:
            extra["env"] = env
        self.daemon = self.lab.popen(
            self.lab.node, argv, stdout=self._log_handle, stderr=subprocess.STDOUT, **extra
        )
        return self.daemon

    def stop_daemon(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20) -> int | None:
        proc = self.daemon
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise

    # -- observation ------------------------------------------------------------------

    def routes(self, afi: str = "ipv4") -> dict[str, FrrRoute]:
        assert self.frr is not None
        return self.frr.routes(afi)

    def wait_routes(
        self,
        predicate: Callable[[dict[str, FrrRoute]], bool],
        what: str,
        timeout: float = 20.0,
        afi: str = "ipv4",
    ) -> dict[str, FrrRoute]:
        """Wait for FRR's table to satisfy ``predicate``; the failure names the last table."""
        seen: list[dict[str, FrrRoute]] = [{}]

        def fetch() -> dict[str, FrrRoute]:
            self.assert_daemon_alive()
            seen[0] = self.routes(afi)
            return seen[0]

        try:
            return wait_for_value(fetch, predicate, timeout, what=what)
        except TimeoutError as error:
            table = sorted(seen[0])
            raise TimeoutError(f"{error}; FRR has {table}\n{self.log_tail()}") from None

    def local_routes(self) -> set[str]:
        """VIPs bound as local routes of ours on the node's lo (``vips.bind: local-route``)."""
        result = set()
        for family in ("-4", "-6"):
            out = self.lab.node.run(
                "ip", "-j", family, "route", "show", "table", "local", "proto", str(ADDRESS_PROTO)
            ).stdout
            result |= {entry["dst"] for entry in json.loads(out or "[]")}
        return result

    def bound(self) -> set[str]:
        """VIPs bound on the node's lo either way: host addresses (any protocol mark) and
        local routes of ours (the default ``vips.bind: by-family`` binds IPv4 VIPs as
        local routes, IPv6 VIPs as addresses)."""
        return self.addresses() | self.local_routes()

    def addresses(self) -> set[str]:
        """Host addresses on the node's lo (VIPs), with their protocol mark."""
        out = self.lab.node.run("ip", "-j", "addr", "show", "dev", "lo").stdout
        result = set()
        for link in json.loads(out):
            for info in link.get("addr_info", []):
                if info.get("prefixlen") in (32, 128) and info.get("local") not in (
                    "127.0.0.1",
                    "::1",
                ):
                    result.add(info["local"])
        return result

    def http(self, path: str) -> tuple[int, bytes]:
        return http_get_in_netns(self.lab.node.name, f"http://127.0.0.1:{HTTP_PORT}{path}")

    def status(self) -> dict[str, Any]:
        code, body = self.http("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def assert_daemon_alive(self) -> None:
        if self.daemon is not None and self.daemon.poll() is not None:
            raise AssertionError(
                f"kvip-bgp exited with {self.daemon.returncode}\n{self.log_tail()}"
            )

    def log_lines(self) -> list[dict[str, Any]]:
        return json_log_lines(self.log_path)

    def log_tail(self, count: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])
        except OSError:
            return "(no daemon log)"


# ------------------------------------------------------------------------------ make lab


class RouteSampler:
    """FRR's table sampled in the background while the block runs, so a test can assert
    on every moment (a prefix that flickered in between two checks is still seen)."""

    def __init__(
        self, scenario: Scenario, interval: float = 0.25, afis: Sequence[str] = ("ipv4",)
    ) -> None:
        self.scenario = scenario
        self.interval = interval
        self.afis = tuple(afis)
        self.samples: list[tuple[float, set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="route-sampler")

    def _run(self) -> None:
        while not self._stop.is_set():
            table: set[str] = set()
            for afi in self.afis:
                table |= set(self.scenario.routes(afi))
            self.samples.append((time.monotonic(), table))
            self._stop.wait(self.interval)

    @property
    def seen(self) -> set[str]:
        """Every prefix FRR held in any sample."""
        return set().union(*(table for _, table in list(self.samples)))

    def __enter__(self) -> RouteSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def seed_objects() -> list[dict[str, Any]]:
    """The example Services of ``make lab``: two announced, one refused, one not ours."""
    return [
        node(),
        service("web", "198.51.100.10"),
        endpoint_slice("web", [NODE_NAME, "node-2"]),
        service(
            "dns",
            "198.51.100.53",
            annotations={"kvip-bgp.io/communities": "64512:200", "kvip-bgp.io/med": "20"},
            traffic_policy="Local",
        ),
        endpoint_slice("dns", [NODE_NAME]),
        service("hijack", "203.0.113.7"),
        endpoint_slice("hijack", [NODE_NAME]),
        service("other-class", "198.51.100.99", lb_class="example.com/other"),
        endpoint_slice("other-class", [NODE_NAME]),
    ]


def lab_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make lab",
        description="Run kvip-bgp in a network-namespace lab against FRR and a fake "
        "Kubernetes API seeded with example Services; Ctrl-C removes everything.",
    )
    parser.add_argument("--config", type=Path, help="your own kvip-bgp config (YAML)")
    parser.add_argument("--seed", type=Path, help="objects to load into the fake API (YAML)")
    parser.add_argument("--once", action="store_true", help="exit after printing the table")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make lab needs root (network namespaces)", file=sys.stderr)
        return 1
    with Scenario() as scenario:
        from kvip_bgp.testing.fakeapi import load_seed

        objects = load_seed(args.seed) if args.seed else seed_objects()
        scenario.api.put_many(objects)
        config: dict[str, Any] = daemon_config(scenario.kubeconfig)
        if args.config is not None:
            config = yaml.safe_load(args.config.read_text())
            config.setdefault("kubernetes", {})["kubeconfig"] = str(scenario.kubeconfig)
        config["log"] = {"format": "console", "level": "info"}
        scenario.start_daemon(config)
        print(f"lab: kvip-bgp log at {scenario.log_path}", flush=True)
        try:
            scenario.wait_routes(lambda r: len(r) > 0, "first routes at FRR", timeout=30)
            time.sleep(1.0)
            assert scenario.frr is not None
            print(scenario.frr.vtysh("show bgp ipv4 unicast"), flush=True)
            print(scenario.frr.vtysh("show bgp ipv6 unicast"), flush=True)
            print("lab: VIPs bound in kvl-node:", sorted(scenario.bound()), flush=True)
        except TimeoutError as error:
            print(f"lab: {error}", file=sys.stderr)
            return 1
        if args.once:
            return 0
        print("lab: running; Ctrl-C stops and removes the lab", flush=True)
        try:
            while scenario.daemon is not None and scenario.daemon.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nlab: stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(lab_main())


# ------------------------------------------------------------------- churn and processes
#
# Used by the fault tests (tests/test_faults.py) and the soak run (soak/run.py): a small
# version of the stress test's churn, with the same independent oracle (it does not use
# policy.py), runnable in a background thread that tests can pause.

OUR_CLASS = "kvip-bgp.io/bgp"
ALLOWED_V4 = "198.51.100.0/24"


@dataclass
class ChurnModel:
    """What the churn itself believes one Service looks like (drives the oracle)."""

    name: str
    vip: str
    exists: bool = True
    local: bool = False
    lb_class: str | None = None
    communities: tuple[str, ...] = ()
    med: int | None = None
    invalid: bool = False
    slices: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def service_object(self) -> dict[str, Any]:
        notes: dict[str, str] = {}
        if self.communities:
            notes["kvip-bgp.io/communities"] = ",".join(self.communities)
        if self.invalid:
            notes["kvip-bgp.io/med"] = "not-a-number"
        elif self.med is not None:
            notes["kvip-bgp.io/med"] = str(self.med)
        return service(
            self.name,
            self.vip,
            annotations=notes,
            traffic_policy="Local" if self.local else "Cluster",
            lb_class=self.lb_class,
        )

    def expected(self) -> tuple[str, frozenset[str], int | None] | None:
        """The oracle: ``(prefix, communities, med)`` this node should announce, or None."""
        if not self.exists or self.invalid:
            return None
        if self.lb_class not in (None, OUR_CLASS):
            return None
        if ipaddress.ip_address(self.vip) not in ipaddress.ip_network(ALLOWED_V4):
            return None
        ready = [n for eps in self.slices.values() for n, ok in eps if ok]
        if (self.local and NODE_NAME not in ready) or not ready:
            return None
        return f"{self.vip}/32", frozenset({"64512:100", *self.communities}), self.med


class Churn:
    """Random Service/EndpointSlice churn against a ``FakeKubeAPI``, with an oracle.

    ``step()`` makes one random change; ``start(rate)`` runs steps in a background thread
    (``rate`` per second, 0 = as fast as the fake takes them); ``paused()`` stops it
    while a test compares FRR with ``expected()``. Every tenth Service asks for a VIP
    outside ``198.51.100.0/24``.
    """

    def __init__(
        self,
        api: FakeKubeAPI,
        services: int = 30,
        nodes: int = 10,
        seed: int = 20261124,
        name_prefix: str = "churn",
    ) -> None:
        self.api = api
        self.rng = random.Random(seed)
        self.nodes = [NODE_NAME] + [f"node-{n}" for n in range(2, nodes + 1)]
        self.models = [
            ChurnModel(
                f"{name_prefix}-{i}",
                f"203.0.113.{i % 250}" if i % 10 == 9 else f"198.51.100.{i % 250 + 1}",
            )
            for i in range(services)
        ]
        self.events = 0
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

    def seed_objects(self) -> None:
        """Put every Node, Service and first EndpointSlice into the fake API."""
        with self._lock:
            self.api.put_many([node(n) for n in self.nodes])
            for model in self.models:
                model.slices["a"] = [(self.rng.choice(self.nodes), True) for _ in range(3)]
                self.api.put(model.service_object())
                self.api.put(endpoint_slice(model.name, model.slices["a"]))

    def step(self, only_if_running: bool = False) -> ChurnModel | None:
        """One random change (same mix as the stress test); the model it changed."""
        with self._lock:
            if only_if_running and not self._running.is_set():
                return None  # paused between the check in the loop and taking the lock
            rng, api = self.rng, self.api
            model = rng.choice(self.models)
            action = rng.randrange(9)
            if not model.exists:
                model.exists = True
                api.put(model.service_object())
            elif action == 0:
                model.exists = False
                api.delete("Service", model.name, "default")
            elif action in (1, 2):
                suffix = rng.choice("ab")
                model.slices[suffix] = [
                    (rng.choice(self.nodes), rng.random() < 0.8) for _ in range(rng.randint(0, 4))
                ]
                api.put(endpoint_slice(model.name, model.slices[suffix], suffix=suffix))
            elif action == 3:
                eps = model.slices.get("a") or [(NODE_NAME, True)]
                eps[0] = (eps[0][0], not eps[0][1])
                model.slices["a"] = eps
                api.put(endpoint_slice(model.name, eps))
            elif action == 4:
                model.local = not model.local
                api.put(model.service_object())
            elif action == 5:
                model.communities = tuple(
                    f"64512:{rng.randint(1, 999)}" for _ in range(rng.randint(0, 3))
                )
                model.med = rng.choice([None, rng.randint(0, 1000)])
                api.put(model.service_object())
            elif action == 6:
                model.invalid = rng.random() < 0.3
                api.put(model.service_object())
            elif action == 7:
                model.lb_class = rng.choice([None, OUR_CLASS, "example.com/other"])
                api.put(model.service_object())
            else:
                api.put(model.service_object())
            self.events += 1
            return model

    # -- background thread -------------------------------------------------------------

    def start(self, rate: float = 100.0) -> None:
        self._running.set()

        def loop() -> None:
            interval = 1.0 / rate if rate > 0 else 0.0
            while not self._stop.is_set():
                if not self._running.wait(0.1):
                    continue
                try:
                    self.step(only_if_running=True)
                except BaseException as error:  # surfaced by the test, not swallowed
                    self.errors.append(error)
                    return
                if interval:
                    time.sleep(interval)

        self._thread = threading.Thread(target=loop, name="churn", daemon=True)
        self._thread.start()

    def pause(self) -> None:
        self._running.clear()
        with self._lock:  # wait for a step in progress
            pass

    def resume(self) -> None:
        self._running.set()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.errors:
            raise RuntimeError(f"churn thread failed: {self.errors[0]!r}")

    # -- oracle -------------------------------------------------------------------------

    def expected(self) -> dict[str, tuple[str, frozenset[str], int | None]]:
        with self._lock:
            return {e[0]: e for m in self.models if (e := m.expected()) is not None}

    def expected_vips(self) -> set[str]:
        return {prefix.split("/")[0] for prefix in self.expected()}

    def matches(self, routes: Mapping[str, FrrRoute]) -> bool:
        """FRR's table equals the oracle, attributes included, and nothing is stale."""
        expected = self.expected()
        if set(routes) != set(expected):
            return False
        return all(
            frozenset(routes[p].communities) == expected[p][1]
            and routes[p].med == expected[p][2]
            and not routes[p].stale
            for p in expected
        )
