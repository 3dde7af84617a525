"""The fabric lab's "pods": HTTP servers in the nodes' namespaces, and their EndpointSlices.

A pod of Service S on node N is a small server process in N's namespace listening on
S's VIP, port 80 (``IP_FREEBIND``: it may start before the VIP is bound, as a pod starts
before the speaker announces), answering every request with N's name. ``Pods`` keeps
one EndpointSlice per Service in the fake API that matches the pods it runs, so ETP
Local really means "only nodes that run a pod answer". There is no kube-proxy: a node
answers only with its own pod, so a Cluster Service in the lab has a pod on every node.

The lifecycle mirrors the kubelet's: ``start`` (server up, endpoint ready),
``terminate`` (endpoint not ready but serving and terminating, server still up),
``remove`` (endpoint gone from the slice) and ``stop`` (the server ends), each a
separate step so a test can place the delays between them.

Run as ``python -m kvip_bgp.testing.pods VIP PORT NAME`` this module is the server.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from kvip_bgp.testing.fabric import Fabric
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import endpoint, endpoint_slice

__all__ = ["PodState", "Pods", "serve"]

PORT: Final = 80
_IP_FREEBIND: Final = 15  # linux/in.h


@dataclass(frozen=True)
class PodState:
    """One pod's endpoint conditions as the EndpointSlice shows them."""

    ready: bool = True
    serving: bool = True
    terminating: bool = False


class Pods:
    """Pod servers and the EndpointSlices that describe them, for every Service."""

    def __init__(self, fabric: Fabric) -> None:
        self.fabric = fabric
        self._vips: dict[str, str] = {}
        self._states: dict[str, dict[str, PodState]] = {}
        self._servers: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        fabric.lab.on_exit(self.close)

    # -- the kubelet's steps ------------------------------------------------------------

    def start(self, service: str, vip: str, *nodes: str, wait: bool = True) -> None:
        """Run a pod of ``service`` on each of ``nodes`` (ready once its server listens)."""
        self._vips[service] = vip
        started = [n for n in nodes if (service, n) not in self._servers]
        for name in started:
            ns = self.fabric.node(name).ns
            argv = [sys.executable, "-m", "kvip_bgp.testing.pods", vip, str(PORT), name]
            self._servers[(service, name)] = self.fabric.lab.popen(
                ns, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        if wait:
            for name in started:
                wait_until(
                    lambda n=name: self._listening(vip, n),  # type: ignore[misc]
                    10,
                    0.05,
                    what=f"the pod of {service} on {name} to listen",
                )
        states = self._states.setdefault(service, {})
        for name in nodes:
            states[name] = PodState()
        self._write(service)

    def terminate(self, service: str, *nodes: str) -> None:
        """The pods are terminating: not ready, still serving (their servers keep running)."""
        for name in nodes:
            self._states[service][name] = PodState(ready=False, serving=True, terminating=True)
        self._write(service)

    def remove(self, service: str, *nodes: str) -> None:
        """The pods' endpoints leave the slice (their servers keep running until ``stop``)."""
        for name in nodes:
            self._states[service].pop(name, None)
        self._write(service)

    def stop(self, service: str, *nodes: str) -> None:
        """The pods' servers end (a pod that is still in the slice stays there)."""
        for name in nodes:
            proc = self._servers.pop((service, name), None)
            if proc is not None:
                _end(proc)

    def delete(self, service: str, *nodes: str) -> None:
        """``remove`` then ``stop`` at once."""
        self.remove(service, *nodes)
        self.stop(service, *nodes)

    # -- what is running ----------------------------------------------------------------

    def nodes(self, service: str) -> set[str]:
        """Nodes whose pod of ``service`` is in its slice, ready or not."""
        return set(self._states.get(service, {}))

    def serving(self, service: str) -> set[str]:
        """Nodes whose server of ``service`` runs."""
        return {n for (s, n), p in self._servers.items() if s == service and p.poll() is None}

    def close(self) -> None:
        for key in list(self._servers):
            _end(self._servers.pop(key))

    def _write(self, service: str) -> None:
        states = self._states.get(service, {})
        endpoints = [
            endpoint(
                name,
                address=f"10.244.{self.fabric.node(name).spec.index}.{10 + i}",
                ready=state.ready,
                serving=state.serving,
                terminating=state.terminating,
            )
            for i, (name, state) in enumerate(sorted(states.items()))
        ]
        self.fabric.api.put(endpoint_slice(service, endpoints=endpoints))

    def _listening(self, vip: str, name: str) -> bool:
        """Whether the node's namespace has a TCP listener on ``vip``:80."""
        out = self.fabric.node(name).ns.run("ss", "-Htln", f"src {vip}:{PORT}").stdout
        return bool(out.strip())


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


# ------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    server: _PodServer
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        body = f"{self.server.node_name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a pod answers 50 requests a second."""


class _PodServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    node_name = ""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()[:2]


def serve(vip: str, port: int, node_name: str) -> None:
    """Answer every GET with ``node_name`` until SIGTERM."""
    server = _PodServer((vip, port), _Handler)
    server.node_name = node_name

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    with contextlib.suppress(SystemExit, KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)
    server.server_close()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
