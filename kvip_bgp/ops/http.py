"""The HTTP thread: /metrics, /healthz, /readyz, /status. It reads frozen snapshots only.

Nothing here can change daemon state or block another thread: handlers read the latest
published ``ReconcilerStatus``/``ClusterStatus`` (immutable), whether ExaBGP runs (as the
main thread, its supervisor, last published it) and the metrics registry.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kvip_bgp.domain.explain import Explanation
from kvip_bgp.domain.model import address_order
from kvip_bgp.domain.objects import key_order
from kvip_bgp.domain.reasons import Reason, wire
from kvip_bgp.runtime.allocation import AllocationStatus
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import ReconcilerStatus
from kvip_bgp.runtime.reload import ReloadStatus
from kvip_bgp.runtime.snapshot import Snapshot


def status_document(
    reconciler: ReconcilerStatus, cluster: ClusterStatus, reload: ReloadStatus | None = None
) -> dict[str, Any]:
    """The /status JSON: peers, every announced VIP, every Service decision, last errors."""
    reload = reload or ReloadStatus()
    return {
        "config": {
            "hash": reload.config_hash,
            "loaded_at": reload.loaded_at,
            "last_reload_error": list(reload.last_error),
            "last_reload_error_at": reload.last_error_at or None,
        },
        "synced": reconciler.all_synced,
        "synced_sources": list(reconciler.synced_sources),
        "exabgp_connected": reconciler.exabgp_connected,
        "peers": [
            {
                "address": p.address,
                "state": p.state,
                "since": p.since,
                "reason": p.reason,
                "bfd": p.bfd,
                "up": p.up,
            }
            for p in reconciler.peers
        ],
        "announced": [
            {
                "vip": str(a.vip),
                "prefix": str(a.prefix),
                "sources": list(a.sources),
                "communities": [str(c) for c in a.attributes.communities],
                "large_communities": [str(c) for c in a.attributes.large_communities],
                "local_preference": a.attributes.local_preference,
                "med": a.attributes.med,
                "as_path_prepend": a.attributes.as_path_prepend,
            }
            for a in sorted(reconciler.announced, key=lambda a: address_order(a.vip))
        ],
        "bound": [str(v) for v in sorted(reconciler.bound, key=address_order)],
        "services": [
            {
                "service": str(d.service),
                "announced": bool(d.announced),
                "reason": wire(d.reason),
                "message": d.message,
                "vip_source": d.vip_source,
                "vips": [
                    {"vip": str(v.vip), "announce": v.announce, "reason": wire(v.reason)}
                    for v in d.verdicts
                ],
            }
            for d in sorted(cluster.decisions, key=lambda d: key_order(d.service))
            if d.reason is None or d.reason.reason is not Reason.NOT_LOAD_BALANCER
        ],
        "node": None
        if cluster.node is None
        else {"name": cluster.node.name, "unschedulable": cluster.node.unschedulable},
        "last_errors": list(reconciler.last_errors),
        "updated_at": reconciler.updated_at,
    }


class StatusServer:
    def __init__(
        self,
        listen: tuple[str, int],
        metrics: Metrics,
        reconciler: Snapshot[ReconcilerStatus],
        cluster: Snapshot[ClusterStatus],
        exabgp_running: Snapshot[bool] | None,
        threads_alive: Callable[[], bool],
        explain: Callable[[str], Explanation | None] | None = None,
        needs_peer: bool = True,
        ipam: Snapshot[AllocationStatus] | None = None,
        reload: Snapshot[ReloadStatus] | None = None,
    ) -> None:
        self._needs_peer = needs_peer
        self._ipam = ipam
        self._reload = reload
        self._explain = explain
        self._metrics = metrics
        self._reconciler = reconciler
        self._cluster = cluster
        self._exabgp_running = exabgp_running
        self._threads_alive = threads_alive
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                return  # access logs would drown the daemon's own decisions

        self._server = ThreadingHTTPServer(listen, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(request, 200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            problems = []
            if not self._threads_alive():
                problems.append("a daemon thread died")
            if self._exabgp_running is not None and not self._exabgp_running.read():
                problems.append("exabgp is not running")
            self._text(request, 503 if problems else 200, "; ".join(problems) or "ok")
        elif path == "/readyz":
            status = self._reconciler.read()
            problems = []
            if not status.all_synced:
                problems.append("first sync not done")
            if self._needs_peer and not any(p.up for p in status.peers):
                problems.append("no BGP peer is up")
            self._text(request, 503 if problems else 200, "; ".join(problems) or "ok")
        elif path == "/explain":
            query = parse_qs(request.path.partition("?")[2])
            service = (query.get("service") or [""])[0]
            if self._explain is None:
                self._text(request, 404, "explain needs kubernetes.enabled: true")
            elif "/" not in service:
                self._text(request, 400, "usage: /explain?service=NAMESPACE/NAME")
            else:
                answer = self._explain(service)
                if answer is None:
                    self._text(request, 503, "the cluster-state thread did not answer in time")
                else:
                    body = json.dumps(asdict(answer), indent=2).encode()
                    self._reply(request, 200, body, "application/json")
        elif path == "/status":
            document = status_document(
                self._reconciler.read(),
                self._cluster.read(),
                self._reload.read() if self._reload is not None else None,
            )
            if self._ipam is not None and (ipam := self._ipam.read()).enabled:
                document["ipam"] = ipam.document()
            document["now"] = time.time()
            body = json.dumps(document, indent=2).encode()
            self._reply(request, 200, body, "application/json")
        else:
            self._text(request, 404, "not found: try /metrics /healthz /readyz /status /explain")

    def _text(self, request: BaseHTTPRequestHandler, code: int, text: str) -> None:
        self._reply(request, code, (text + "\n").encode(), "text/plain; charset=utf-8")

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, code: int, body: bytes, content_type: str) -> None:
        request.send_response(code)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
