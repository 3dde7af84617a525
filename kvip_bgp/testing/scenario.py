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
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.frr import FrrNeighbor, FrrPeer, FrrRoute
from kvip_bgp.testing.netlab import Lab, http_get_in_netns, listen_socket_in_netns, wait_until

NODE_NAME = "node-1"
NODE_ASN = 64512
TOR_ASN = 64500
HTTP_PORT = 9472


def service(
    name: str,
    vip: str | None = None,
    *,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    type: str = "LoadBalancer",
    traffic_policy: str = "Cluster",
    lb_class: str | None = None,
    spec_ip: str | None = None,
) -> dict[str, Any]:
    """A Service object as the API server stores it."""
    notes = dict(annotations or {})
    if vip is not None:
        notes["kvip-bgp.io/loadbalancerIPs"] = vip
    spec: dict[str, Any] = {
        "type": type,
        "externalTrafficPolicy": traffic_policy,
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
        "selector": {"app": name},
    }
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    if spec_ip is not None:
        spec["loadBalancerIP"] = spec_ip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": notes},
        "spec": spec,
    }


def endpoint_slice(
    service_name: str,
    nodes: Sequence[str | tuple[str, bool]],
    *,
    namespace: str = "default",
    suffix: str = "a",
) -> dict[str, Any]:
    """An EndpointSlice with one endpoint per node (``(node, ready)`` or ``node``)."""
    endpoints = []
    for index, entry in enumerate(nodes):
        node, ready = (entry, True) if isinstance(entry, str) else entry
        endpoints.append(
            {
                "addresses": [f"10.244.{index // 250}.{index % 250 + 1}"],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": node,
            }
        )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"port": 8080, "protocol": "TCP"}],
    }


def node(name: str = NODE_NAME, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {"kubernetes.io/hostname": name})},
        "spec": {},
        "status": {
            "addresses": [{"type": "InternalIP", "address": Lab.NODE_V4}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


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
        self, kubernetes: bool = True, keep_workdir: bool = False, prefix: str = "kvl-"
    ) -> None:
        # Distinct prefixes let several labs run at once (cleanup removes only its own).
        self.lab = Lab(prefix, keep_workdir=keep_workdir)
        self.kubernetes = kubernetes
        self.api = FakeKubeAPI(bookmark_interval=1.0)
        self.frr: FrrPeer | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.config_path: Path | None = None
        self.kubeconfig: Path | None = None
        self._log_handle: Any = None

    # -- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> Scenario:
        self.lab.__enter__()
        try:
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
            TOR_ASN,
            Lab.TOR_V4,
            [FrrNeighbor(Lab.NODE_V4, NODE_ASN)],
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

    def start_daemon(self, config: Mapping[str, Any] | None = None) -> subprocess.Popen[bytes]:
        path = self.write_config(config or daemon_config(self.kubeconfig))
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 (kept for the run)
        argv = [
            str(Path(sys.executable).parent / "kvip-bgp"),
            "run",
            "--config",
            str(path),
            "--runtime-dir",
            str(self.lab.workdir / "run"),
        ]
        self.daemon = self.lab.popen(
            self.lab.node, argv, stdout=self._log_handle, stderr=subprocess.STDOUT
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
        seen: dict[str, dict[str, FrrRoute]] = {}

        def check() -> bool:
            self.assert_daemon_alive()
            seen["last"] = self.routes(afi)
            return predicate(seen["last"])

        try:
            wait_until(check, timeout, interval=0.2, what=what)
        except TimeoutError as error:
            table = sorted(seen.get("last", {}))
            raise TimeoutError(f"{error}; FRR has {table}\n{self.log_tail()}") from None
        return seen["last"]

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
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "unparsed", "line": raw})
        return lines

    def log_tail(self, count: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-count:])
        except OSError:
            return "(no daemon log)"


# ------------------------------------------------------------------------------ make lab


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
            print("lab: VIPs bound in kvl-node:", sorted(scenario.addresses()), flush=True)
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
