"""A small fake Kubernetes API server over real HTTP, for tests and the lab demo.

Why a fake of our own: no real kube-apiserver can run on the lab machines, and the
mocks on PyPI ignore ``resourceVersion``, selectors and bookmarks. The speaker's watch
code must survive 410 Gone, resumption from a resourceVersion, bookmarks, dropped and
stalled streams and garbage on the wire, so this fake implements exactly those
semantics and lets tests inject each fault. The real ``kubernetes`` client talks to it
through an ordinary kubeconfig, so the client's own streaming and error paths run too.

Stdlib only (the CLI's YAML seed loader imports PyYAML lazily). One lock, held by the
``FakeKubeAPI`` instance, guards the whole store; it is only ever held for short,
non-blocking sections, never across socket I/O.

Semantics, modelled on the real API server:

* A global counter assigns a new resourceVersion to every write (create, update,
  status update, delete).
* Each resource type keeps a bounded history of changes. A watch from ``RV`` replays
  every retained change with a newer resourceVersion, then streams live changes. If
  ``RV`` is older than the oldest retained change the stream carries one ERROR event
  (410 Expired) and ends.
* A watch without ``RV`` (or with ``"0"``) starts with a synthetic ADDED for every
  current object.
* With ``allowWatchBookmarks=true`` a BOOKMARK is sent every ``bookmark_interval``
  seconds while the stream is otherwise idle.
* A list with ``limit`` is served in pages of one consistent snapshot: each page carries
  the snapshot's resourceVersion and, while items remain, ``metadata.continue`` and
  ``remainingItemCount``. A continue token dies with the history (``expire_history``,
  ``restart``, like etcd compaction) or when ``max_list_snapshots`` newer paged lists
  pushed its snapshot out; it is then answered with 410 Expired.
* A write through HTTP that changes nothing is a no-op (no new resourceVersion, no
  event), like the real server. ``put`` from Python always writes: tests use it to
  force a MODIFIED event.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import random
import signal
import socket
import ssl
import string
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from kvip_bgp.testing import fakeapi_discovery
from kvip_bgp.testing.tls import server_context

__all__ = [
    "FakeKubeAPI",
    "RequestRecord",
    "ResourceType",
    "main",
]

_log = logging.getLogger(__name__)

JSONObject = dict[str, Any]

# How often an idle watch checks that its client is still connected, in seconds.
_PROBE_INTERVAL: Final = 0.5


@dataclass(frozen=True)
class ResourceType:
    """One served resource type: how its kind maps to URL paths and list kinds."""

    kind: str
    plural: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    status_subresource: bool

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def qualified(self) -> str:
        """``leases.coordination.k8s.io``: how the API server names it in messages."""
        return self.plural if not self.group else f"{self.plural}.{self.group}"


RESOURCE_TYPES: Final[tuple[ResourceType, ...]] = (
    ResourceType("Service", "services", "", "v1", namespaced=True, status_subresource=True),
    ResourceType("Node", "nodes", "", "v1", namespaced=False, status_subresource=True),
    ResourceType(
        "EndpointSlice",
        "endpointslices",
        "discovery.k8s.io",
        "v1",
        namespaced=True,
        status_subresource=False,
    ),
    ResourceType("Event", "events", "", "v1", namespaced=True, status_subresource=False),
    ResourceType(
        "Lease", "leases", "coordination.k8s.io", "v1", namespaced=True, status_subresource=False
    ),
)

_BY_KIND: Final[Mapping[str, ResourceType]] = types.MappingProxyType(
    {rt.kind: rt for rt in RESOURCE_TYPES}
)
_BY_PATH: Final[Mapping[tuple[str, str, str], ResourceType]] = types.MappingProxyType(
    {(rt.group, rt.version, rt.plural): rt for rt in RESOURCE_TYPES}
)

_REASONS: Final[Mapping[int, str]] = types.MappingProxyType(
    {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Expired",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }
)


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the fake received, for assertions like "one status PATCH"."""

    method: str
    path: str
    query: str


@dataclass(frozen=True)
class _Stored:
    """A stored object and its JSON encoding; ``obj`` is never mutated nor handed out."""

    obj: JSONObject
    raw: bytes
    rv: int

    @property
    def labels(self) -> Mapping[str, str]:
        labels = self.obj.get("metadata", {}).get("labels") or {}
        return labels if isinstance(labels, dict) else {}


@dataclass(frozen=True)
class _Change:
    """One entry of a resource's watch history, serialized once for every watcher."""

    rv: int
    type: str
    namespace: str
    name: str
    labels: Mapping[str, str]
    prev_labels: Mapping[str, str] | None  # labels before a MODIFIED, for selectors
    raw: bytes
    line: bytes


@dataclass(frozen=True)
class _ListSnapshot:
    """What a paged list's continue tokens read from: the items as of ``rv``."""

    kind: str
    selector: _Selector
    rv: int
    raws: tuple[bytes, ...]


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes


class _ApiError(Exception):
    """Raised inside request handling; turned into a Status reply."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or _REASONS.get(code, "Unknown")


@dataclass(frozen=True)
class _Selector:
    """Label and field selector of a list or watch; matches namespace, name and labels."""

    namespace: str | None
    label_terms: tuple[tuple[str, str, str], ...]  # (key, op, value), op in = != exists !
    field_terms: tuple[tuple[str, str, str], ...]  # (field, op, value), op in = !=

    def matches(self, namespace: str, name: str, labels: Mapping[str, str]) -> bool:
        if self.namespace is not None and namespace != self.namespace:
            return False
        for key, op, value in self.label_terms:
            if op == "=" and labels.get(key) != value:
                return False
            if op == "!=" and labels.get(key) == value:
                return False
            if op == "exists" and key not in labels:
                return False
            if op == "!" and key in labels:
                return False
        for field, op, value in self.field_terms:
            actual = name if field == "metadata.name" else namespace
            if (actual == value) != (op == "="):
                return False
        return True


def _parse_selector(namespace: str | None, label_selector: str, field_selector: str) -> _Selector:
    """Parse equality-based selectors; set-based ones (``in``, ``notin``) are refused."""
    labels: list[tuple[str, str, str]] = []
    for term in (t.strip() for t in label_selector.split(",")):
        if not term:
            continue
        if " in " in term or " notin " in term or "(" in term:
            raise _ApiError(400, f"set-based label selector not supported: {term!r}")
        if "!=" in term:
            key, value = term.split("!=", 1)
            labels.append((key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            labels.append((key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            labels.append((term[1:].strip(), "!", ""))
        else:
            labels.append((term, "exists", ""))
    fields: list[tuple[str, str, str]] = []
    for term in (t.strip() for t in field_selector.split(",")):
        if not term:
            continue
        op = "!=" if "!=" in term else "="
        key, value = term.replace("==", "=").split(op, 1)
        key = key.strip()
        if key not in ("metadata.name", "metadata.namespace"):
            raise _ApiError(400, f'field label not supported: "{key}"')
        fields.append((key, op, value.strip()))
    return _Selector(namespace, tuple(labels), tuple(fields))


def _event_line(event_type: str, raw: bytes) -> bytes:
    return b'{"type":"' + event_type.encode() + b'","object":' + raw + b"}\n"


def _bookmark_line(rt: ResourceType, rv: int) -> bytes:
    """A BOOKMARK carries an object of the watched kind with only its resourceVersion."""
    obj = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(rv)}}
    return _event_line("BOOKMARK", _dumps(obj))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _status(code: int, message: str, reason: str | None = None, **details: str) -> JSONObject:
    status: JSONObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, "Unknown"),
        "code": code,
    }
    if details:
        status["details"] = dict(details)
    return status


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; also how strategic merge patches are approximated.

    Strategic-merge directives (keys starting with ``$``) are dropped, and lists are
    replaced wholesale, which is what the speaker's status patches need.
    """
    if not isinstance(patch, dict):
        return json.loads(json.dumps(patch))
    result: JSONObject = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: JSONObject, ops: list[Any]) -> JSONObject:
    """RFC 6902 JSON patch with the ``add``, ``remove``, ``replace`` and ``test`` ops."""
    doc: JSONObject = json.loads(json.dumps(target))
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _ApiError(400, f"invalid JSON patch operation: {op!r}")
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in str(op["path"]).split("/")[1:]]
        if not tokens:
            raise _ApiError(422, "JSON patch on the whole document is not supported")
        parent: Any = doc
        for token in tokens[:-1]:
            try:
                parent = parent[int(token)] if isinstance(parent, list) else parent[token]
            except (KeyError, IndexError, ValueError, TypeError):
                raise _ApiError(422, f"JSON patch path not found: {op['path']}") from None
        last = tokens[-1]
        kind = op["op"]
        try:
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                if kind == "add":
                    parent.insert(index, op.get("value"))
                elif kind == "remove":
                    del parent[index]
                elif kind == "replace":
                    parent[index] = op.get("value")
                elif kind == "test":
                    if parent[index] != op.get("value"):
                        raise _ApiError(422, f"JSON patch test failed at {op['path']}")
                else:
                    raise _ApiError(400, f"unsupported JSON patch op {kind!r}")
            elif isinstance(parent, dict):
                if kind in ("add", "replace"):
                    if kind == "replace" and last not in parent:
                        raise _ApiError(422, f"JSON patch path not found: {op['path']}")
                    parent[last] = op.get("value")
                elif kind == "remove":
                    del parent[last]
                elif kind == "test":
                    if parent.get(last) != op.get("value"):
                        raise _ApiError(422, f"JSON patch test failed at {op['path']}")
                else:
                    raise _ApiError(400, f"unsupported JSON patch op {kind!r}")
            else:
                raise _ApiError(422, f"JSON patch path not found: {op['path']}")
        except (KeyError, IndexError, ValueError):
            raise _ApiError(422, f"JSON patch path not found: {op['path']}") from None
    return doc


class _Watcher:
    """One open watch stream. Mutated only under the API's lock."""

    __slots__ = ("abrupt", "closed", "conn", "end_after_pending", "pending", "rt", "selector")

    def __init__(self, rt: ResourceType, selector: _Selector, conn: socket.socket) -> None:
        self.rt = rt
        self.selector = selector
        self.conn = conn
        self.pending: collections.deque[bytes] = collections.deque()
        self.closed = False
        self.abrupt = False
        self.end_after_pending = False

    def offer(self, change: _Change) -> None:
        """Queue ``change`` as this watcher sees it through its selector.

        Like the real server, an object that starts (stops) matching the selector shows
        up as ADDED (DELETED) to this watcher.
        """
        now = self.selector.matches(change.namespace, change.name, change.labels)
        if change.prev_labels is None:
            if now:
                self.pending.append(change.line)
            return
        before = self.selector.matches(change.namespace, change.name, change.prev_labels)
        if now and before:
            self.pending.append(change.line)
        elif now:
            self.pending.append(_event_line("ADDED", change.raw))
        elif before:
            self.pending.append(_event_line("DELETED", change.raw))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FakeKubeAPI

    def server_bind(self) -> None:  # pragma: no cover - we never let the server bind
        """Skip ``getfqdn``: it can stall on DNS and we bind the socket ourselves."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("fakeapi: error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # Headers and body leave in two writes; with Nagle the body waits for the
            # client's delayed ACK, 40 ms per request on a kept-alive connection. Go's
            # net/http (the real API server) sets TCP_NODELAY too.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.api._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("fakeapi: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length > 0 else b""
            tokens = self.server.api.accepted_tokens
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if tokens is not None and (scheme.lower() != "bearer" or token not in tokens):
                self._send(_Reply(401, _dumps(_status(401, "Unauthorized"))))
                return
            result = self.server.api._handle(
                method,
                self.path,
                self.headers.get("Content-Type", ""),
                body,
                self.connection,
                self.headers.get("Accept", ""),
            )
            if isinstance(result, _Reply):
                self._send(result)
            else:
                self.server.api._stream_watch(self, result)
        except OSError:
            self.close_connection = True

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def send_stream_headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))


class FakeKubeAPI:
    """An in-memory API server for Services, Nodes, EndpointSlices, Events and Leases.

    Thread-safe: tests call ``put``/``delete``/fault injectors from their own thread
    while handler threads serve the client.
    """

    def __init__(
        self, bookmark_interval: float = 1.0, history: int = 100_000, max_list_snapshots: int = 32
    ) -> None:
        self.bookmark_interval = bookmark_interval
        self._history_len = history
        self._max_list_snapshots = max_list_snapshots
        self._cond = threading.Condition()
        self._rv = 0
        self._objects: dict[str, dict[tuple[str, str], _Stored]] = {
            rt.kind: {} for rt in RESOURCE_TYPES
        }
        self._history: dict[str, collections.deque[_Change]] = {
            rt.kind: collections.deque(maxlen=history) for rt in RESOURCE_TYPES
        }
        # Oldest resourceVersion a watch of this kind may resume from.
        self._floor: dict[str, int] = {rt.kind: 0 for rt in RESOURCE_TYPES}
        self._watchers: set[_Watcher] = set()
        # Paged lists in progress, oldest first: snapshot id -> snapshot.
        self._list_snapshots: collections.OrderedDict[int, _ListSnapshot] = (
            collections.OrderedDict()
        )
        self._next_snapshot = 0
        self._conns: set[socket.socket] = set()
        self._accepted = 0  # connections ever accepted (see connections_accepted)
        self._requests: list[RequestRecord] = []
        self._fail_count = 0
        self._fail_status = 500
        self._stall_until = 0.0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        self.accepted_tokens: frozenset[str] | None = None
        """Bearer tokens the fake accepts (401 for any other); None: no authentication,
        as most tests want. A test rotating a token swaps the set."""

    # ------------------------------------------------------------------ store API

    @property
    def resource_version(self) -> int:
        """The newest resourceVersion handed out."""
        with self._cond:
            return self._rv

    def put(self, obj: Mapping[str, Any]) -> JSONObject:
        """Create or replace ``obj`` (by kind, namespace and name); return a copy."""
        with self._cond:
            stored = self._put_locked(obj)
            self._cond.notify_all()
        return json.loads(stored.raw)  # type: ignore[no-any-return]

    def put_many(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Create or replace many objects under one lock hold (fast for 10,000)."""
        with self._cond:
            for obj in objs:
                self._put_locked(obj)
            self._cond.notify_all()

    def delete(self, kind: str, name: str, namespace: str | None = None) -> JSONObject | None:
        """Delete an object (a DELETED event with a new rv); return it, or None."""
        rt = _resource(kind)
        key = (self._ns(rt, namespace), name)
        with self._cond:
            if key not in self._objects[rt.kind]:
                return None
            stored = self._delete_locked(rt, key)
            self._cond.notify_all()
        return json.loads(stored.raw)  # type: ignore[no-any-return]

    def get(self, kind: str, name: str, namespace: str | None = None) -> JSONObject | None:
        rt = _resource(kind)
        with self._cond:
            stored = self._objects[rt.kind].get((self._ns(rt, namespace), name))
        return None if stored is None else json.loads(stored.raw)

    def items(self, kind: str) -> list[JSONObject]:
        """Every stored object of ``kind``, sorted by namespace and name."""
        rt = _resource(kind)
        with self._cond:
            raws = [s.raw for _, s in sorted(self._objects[rt.kind].items())]
        return [json.loads(raw) for raw in raws]

    def events(self) -> list[JSONObject]:
        """Every stored core/v1 Event (what the speaker reported)."""
        return self.items("Event")

    def connections_accepted(self) -> int:
        """How many client connections the fake has accepted so far (keep-alive checks)."""
        with self._cond:
            return self._accepted

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every HTTP request so far (query string left out)."""
        with self._cond:
            return [(r.method, r.path) for r in self._requests]

    @property
    def request_log(self) -> list[RequestRecord]:
        with self._cond:
            return list(self._requests)

    def count_requests(self, method: str | None = None, path_suffix: str = "") -> int:
        """How many requests had ``method`` (any if None) and a path ending so."""
        with self._cond:
            return sum(
                1
                for r in self._requests
                if (method is None or r.method == method) and r.path.endswith(path_suffix)
            )

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    def watcher_count(self, kind: str | None = None) -> int:
        with self._cond:
            return sum(1 for w in self._watchers if kind is None or w.rt.kind == kind)

    def wait_for_watchers(self, count: int, kind: str | None = None, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` watches (of ``kind``) are open."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for w in self._watchers if kind is None or w.rt.kind == kind) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    # ------------------------------------------------------------ fault injection

    def close_watches(self, abrupt: bool = True) -> int:
        """End every open watch stream; return how many.

        ``abrupt`` (the default) drops the TCP connection mid-stream, so the client sees
        a truncated chunked body (urllib3 ``ProtocolError``); otherwise the stream ends
        cleanly as after ``timeoutSeconds``.
        """
        with self._cond:
            watchers = list(self._watchers)
            for w in watchers:
                w.closed = True
                w.abrupt = abrupt
            self._cond.notify_all()
        if abrupt:
            for w in watchers:
                _shutdown(w.conn)
        return len(watchers)

    def fail_requests(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` HTTP requests with ``status`` and a Status body."""
        with self._cond:
            self._fail_count = count
            self._fail_status = status

    def stall_watches(self, seconds: float) -> None:
        """Send nothing on any watch (open or new, not even headers) for ``seconds``."""
        with self._cond:
            self._stall_until = time.monotonic() + seconds
            self._cond.notify_all()

    def inject_malformed_line(self) -> None:
        """Make the next line of every open watch stream ``{not json``."""
        with self._cond:
            for w in self._watchers:
                w.pending.append(b"{not json\n")
            self._cond.notify_all()

    def expire_history(self) -> None:
        """Forget the watch history: resuming from any older resourceVersion, or
        continuing any paged list, gets 410."""
        with self._cond:
            self._expire_locked()

    def restart(self, rv_jump: int = 1000) -> None:
        """Simulate an API server restart: drop every connection, jump the rv, forget
        history. The listener stays up at the same address."""
        with self._cond:
            self._rv += rv_jump
            self._expire_locked()
            for w in self._watchers:
                w.closed = True
                w.abrupt = True
            self._stall_until = 0.0
            conns = list(self._conns)
            self._cond.notify_all()
        for conn in conns:
            _shutdown(conn)

    # ------------------------------------------------------------------ serving

    def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        sock: socket.socket | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> str:
        """Serve in a background thread; return the base URL ``http://host:port``.

        ``sock`` is an already bound TCP socket (for example one created inside a
        network namespace); the fake then owns it and closes it on ``stop``. With ``tls``
        (a server context) it serves HTTPS, as the in-cluster address of a real API
        server does.
        """
        if self._server is not None:
            raise RuntimeError("FakeKubeAPI already started")
        if sock is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=128)
        else:
            sock.listen(128)
        address = sock.getsockname()
        server = _Server(address[:2], _Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = sock if tls is None else tls.wrap_socket(sock, server_side=True)
        server.address_family = sock.family
        server.server_address = address
        server.api = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fakeapi",
        )
        self._thread.start()
        bound = str(address[0])
        if bound in ("0.0.0.0", ""):
            bound = "127.0.0.1"
        elif bound == "::":
            bound = "::1"
        if ":" in bound:
            bound = f"[{bound}]"
        self.url = f"{'http' if tls is None else 'https'}://{bound}:{address[1]}"
        return self.url

    def stop(self) -> None:
        """Stop listening and drop every open connection, watches included."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        with self._cond:
            for w in self._watchers:
                w.closed = True
                w.abrupt = True
            conns = list(self._conns)
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        for conn in conns:
            _shutdown(conn)
        if thread is not None:
            thread.join(timeout=5)

    def write_kubeconfig(self, path: str | Path, server_url: str | None = None) -> Path:
        """Write a kubeconfig for ``kubernetes.config.load_kube_config``.

        JSON is valid YAML, so no YAML library is needed.
        """
        url = server_url or self.url
        if url is None:
            raise RuntimeError("start() the fake (or pass server_url) before a kubeconfig")
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fakeapi", "cluster": {"server": url}}],
            "users": [{"name": "fakeapi", "user": {"token": "fakeapi-token"}}],
            "contexts": [
                {
                    "name": "fakeapi",
                    "context": {"cluster": "fakeapi", "user": "fakeapi", "namespace": "default"},
                }
            ],
            "current-context": "fakeapi",
            "preferences": {},
        }
        out = Path(path)
        out.write_text(json.dumps(config, indent=2) + "\n")
        return out

    def __enter__(self) -> FakeKubeAPI:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------- store internals

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        return (namespace or "default") if rt.namespaced else ""

    def _put_locked(self, src: Mapping[str, Any]) -> _Stored:
        kind = src.get("kind")
        if not isinstance(kind, str):
            raise ValueError("object has no kind")
        rt = _resource(kind)
        meta = dict(src.get("metadata") or {})
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind} has no metadata.name")
        namespace = self._ns(rt, meta.get("namespace"))
        old = self._objects[rt.kind].get((namespace, name))
        obj = dict(src)
        obj["metadata"] = meta
        return self._write_locked(rt, obj, old)

    def _write_locked(self, rt: ResourceType, obj: JSONObject, old: _Stored | None) -> _Stored:
        """Store ``obj`` (its top level and metadata are ours to change) as a new version."""
        meta: JSONObject = obj["metadata"]
        obj["kind"] = rt.kind
        obj["apiVersion"] = rt.api_version
        if rt.namespaced:
            meta["namespace"] = meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        old_meta = old.obj["metadata"] if old is not None else {}
        meta["uid"] = old_meta.get("uid") or meta.get("uid") or str(uuid.uuid4())
        meta["creationTimestamp"] = (
            old_meta.get("creationTimestamp") or meta.get("creationTimestamp") or _now()
        )
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        raw = _dumps(obj)
        stored = _Stored(json.loads(raw), raw, self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        self._objects[rt.kind][key] = stored
        event_type = "ADDED" if old is None else "MODIFIED"
        self._record_locked(rt, stored, event_type, None if old is None else old.labels)
        return stored

    def _delete_locked(self, rt: ResourceType, key: tuple[str, str]) -> _Stored:
        old = self._objects[rt.kind].pop(key)
        self._rv += 1
        obj = json.loads(old.raw)
        obj["metadata"]["resourceVersion"] = str(self._rv)
        raw = _dumps(obj)
        stored = _Stored(obj, raw, self._rv)
        self._record_locked(rt, stored, "DELETED", None)
        return stored

    def _record_locked(
        self,
        rt: ResourceType,
        stored: _Stored,
        event_type: str,
        prev_labels: Mapping[str, str] | None,
    ) -> None:
        meta = stored.obj["metadata"]
        change = _Change(
            rv=stored.rv,
            type=event_type,
            namespace=meta.get("namespace", ""),
            name=meta["name"],
            labels=stored.labels,
            prev_labels=prev_labels,
            raw=stored.raw,
            line=_event_line(event_type, stored.raw),
        )
        history = self._history[rt.kind]
        if history.maxlen is not None and len(history) == history.maxlen:
            self._floor[rt.kind] = history[0].rv
        history.append(change)
        for w in self._watchers:
            if w.rt is rt and not w.end_after_pending:
                w.offer(change)

    def _expire_locked(self) -> None:
        for rt in RESOURCE_TYPES:
            self._history[rt.kind].clear()
            self._floor[rt.kind] = self._rv
        self._list_snapshots.clear()  # compaction: every continue token is now too old

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(conn)
                self._accepted += 1
            else:
                self._conns.discard(conn)

    # ----------------------------------------------------------- HTTP internals

    def _handle(
        self,
        method: str,
        target: str,
        content_type: str,
        body: bytes,
        conn: socket.socket,
        accept: str = "",
    ) -> _Reply | _Watcher:
        split = urlsplit(target)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        with self._cond:
            self._requests.append(RequestRecord(method, path, split.query))
            if self._fail_count > 0:
                self._fail_count -= 1
                code = self._fail_status
                return _Reply(code, _dumps(_status(code, f"injected failure ({code})")))
        segs = [unquote(s) for s in path.split("/") if s]
        special = fakeapi_discovery.intercept(method, segs, query, self.events)
        if special is not None:
            return _Reply(special[0], _dumps(special[1]))
        try:
            result = self._route(method, path, query, content_type, body, conn)
            if isinstance(result, _Reply) and method == "GET" and result.status == 200:
                table = fakeapi_discovery.as_table(result.body, accept)
                if table is not None:
                    return _Reply(200, table)
            return result
        except _ApiError as err:
            return _Reply(err.code, _dumps(_status(err.code, err.message, err.reason)))

    def _route(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        content_type: str,
        body: bytes,
        conn: socket.socket,
    ) -> _Reply | _Watcher:
        segs = [unquote(s) for s in path.split("/") if s]
        if segs == ["fake", "objects"]:
            return self._bulk(method, query, body)
        if method == "GET" and segs in (["version"], ["api"], ["apis"]):
            return _Reply(200, _dumps(self._discovery(segs[0])))
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _ApiError(404, f"the server could not find the requested resource ({path})")
        watch = query.get("watch", "").lower() in ("true", "1")
        if rest[:1] == ["watch"]:
            watch, rest = True, rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest:
            if method == "GET":
                return _Reply(200, _dumps(self._resource_list(group, version)))
            raise _ApiError(404, f"the server could not find the requested resource ({path})")
        rt = _BY_PATH.get((group, version, rest[0]))
        if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
            raise _ApiError(404, f"the server could not find the requested resource ({path})")
        if len(rest) == 1:
            if method == "GET":
                selector = _parse_selector(
                    namespace, query.get("labelSelector", ""), query.get("fieldSelector", "")
                )
                if watch:
                    return self._open_watch(rt, selector, query, conn)
                return self._list(rt, selector, query)
            if method == "POST" and (namespace is not None or not rt.namespaced):
                return self._create(rt, namespace, _parse_body(body, dict))
            raise _ApiError(405, f"method {method} not allowed on {path}", "MethodNotAllowed")
        if rt.namespaced and namespace is None:
            raise _ApiError(404, f"the server could not find the requested resource ({path})")
        name = rest[1]
        sub = rest[2] if len(rest) == 3 else ""
        if sub not in ("", "status") or (sub == "status" and not rt.status_subresource):
            raise _ApiError(404, f"the server could not find the requested resource ({path})")
        key = (self._ns(rt, namespace), name)
        if method == "GET":
            with self._cond:
                stored = self._objects[rt.kind].get(key)
            if stored is None:
                raise _not_found(rt, name)
            return _Reply(200, stored.raw)
        if method == "PUT":
            return self._replace(rt, key, _parse_body(body, dict), sub == "status")
        if method == "PATCH":
            return self._patch(rt, key, content_type, body, sub == "status")
        if method == "DELETE" and not sub:
            with self._cond:
                if key not in self._objects[rt.kind]:
                    raise _not_found(rt, name)
                deleted = self._delete_locked(rt, key)
                self._cond.notify_all()
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {
                    "name": name,
                    "kind": rt.plural,
                    "group": rt.group,
                    "uid": deleted.obj["metadata"].get("uid", ""),
                },
            }
            return _Reply(200, _dumps(status))
        raise _ApiError(405, f"method {method} not allowed on {path}", "MethodNotAllowed")

    def _bulk(self, method: str, query: Mapping[str, str], body: bytes) -> _Reply:
        """``/fake/objects``, no real API server's path: ``POST`` a JSON list to
        ``put_many`` it, ``DELETE ?kind=K`` to delete every K. For seeding a fake that
        runs in its own process (``python -m kvip_bgp.testing.fakeapi``) with 20,000
        objects between measurements; what is measured writes through the REST paths."""
        if method == "POST":
            objs = _parse_body(body, list)
            if not all(isinstance(obj, dict) for obj in objs):
                raise _ApiError(400, "request body must be a JSON list of objects")
            try:
                self.put_many(objs)
            except (KeyError, TypeError, ValueError) as err:
                raise _ApiError(400, f"bad object in the list: {err!r}") from None
            return _Reply(200, _dumps({"count": len(objs)}))
        if method == "DELETE":
            try:
                rt = _resource(query.get("kind", ""))
            except ValueError as err:
                raise _ApiError(400, str(err)) from None
            with self._cond:
                keys = list(self._objects[rt.kind])
                for key in keys:
                    self._delete_locked(rt, key)
                self._cond.notify_all()
            return _Reply(200, _dumps({"count": len(keys)}))
        raise _ApiError(405, f"method {method} not allowed on /fake/objects", "MethodNotAllowed")

    def _discovery(self, what: str) -> JSONObject:
        if what == "version":
            return {
                "major": "1",
                "minor": "31",
                "gitVersion": "v1.31.0-fakeapi",
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2024-01-01T00:00:00Z",
                "goVersion": "go1.22.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if what == "api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        groups = sorted({rt.group for rt in RESOURCE_TYPES if rt.group})
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                    "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"},
                }
                for g in groups
            ],
        }

    def _resource_list(self, group: str, version: str) -> JSONObject:
        resources = [rt for rt in RESOURCE_TYPES if (rt.group, rt.version) == (group, version)]
        if not resources:
            raise _ApiError(404, f"the server could not find the requested resource ({group})")
        verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
        entries: list[JSONObject] = []
        for rt in resources:
            entries.append(
                {
                    "name": rt.plural,
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": verbs,
                    **fakeapi_discovery.resource_extras(rt.plural, rt.kind),
                }
            )
            if rt.status_subresource:
                entries.append(
                    {
                        "name": rt.plural + "/status",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": resources[0].api_version,
            "resources": entries,
        }

    def _list(self, rt: ResourceType, selector: _Selector, query: Mapping[str, str]) -> _Reply:
        """A list, or one page of it with ``limit`` (and ``continue`` after the first)."""
        try:
            limit = int(query.get("limit") or 0)
        except ValueError:
            raise _ApiError(400, f"invalid limit: {query.get('limit')!r}") from None
        token = query.get("continue", "")
        if token:
            snapshot, offset = self._continued(rt, selector, token)
        else:
            with self._cond:
                rv = self._rv
                stored = list(self._objects[rt.kind].items())
            stored.sort(key=lambda item: item[0])
            raws = tuple(s.raw for (ns, name), s in stored if selector.matches(ns, name, s.labels))
            snapshot, offset = _ListSnapshot(rt.kind, selector, rv, raws), 0
        end = len(snapshot.raws) if limit <= 0 else min(len(snapshot.raws), offset + limit)
        meta: JSONObject = {"resourceVersion": str(snapshot.rv)}
        if end < len(snapshot.raws):
            meta["continue"] = self._continue_token(snapshot, token, end)
            meta["remainingItemCount"] = len(snapshot.raws) - end
        head = _dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        items = b",".join(snapshot.raws[offset:end])
        return _Reply(200, head[:-1] + b',"items":[' + items + b"]}")

    def _continued(
        self, rt: ResourceType, selector: _Selector, token: str
    ) -> tuple[_ListSnapshot, int]:
        """The snapshot and offset a continue token points at; 410 once it is gone."""
        try:
            ident_text, offset_text = token.split("-", 1)
            ident, offset = int(ident_text), int(offset_text)
        except ValueError:
            raise _ApiError(400, f"invalid continue token: {token!r}") from None
        with self._cond:
            snapshot = self._list_snapshots.get(ident)
        if snapshot is None:
            raise _ApiError(
                410,
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter.",
                "Expired",
            )
        if (snapshot.kind, snapshot.selector) != (rt.kind, selector) or offset < 0:
            raise _ApiError(400, "continue token does not match the request's parameters")
        return snapshot, offset

    def _continue_token(self, snapshot: _ListSnapshot, token: str, end: int) -> str:
        """``<snapshot id>-<offset>``; the first page of a list registers its snapshot."""
        with self._cond:
            if token:
                ident = int(token.split("-", 1)[0])
            else:
                ident = self._next_snapshot
                self._next_snapshot += 1
                self._list_snapshots[ident] = snapshot
                while len(self._list_snapshots) > self._max_list_snapshots:
                    self._list_snapshots.popitem(last=False)
        return f"{ident}-{end}"

    def _create(self, rt: ResourceType, namespace: str | None, body: JSONObject) -> _Reply:
        meta = dict(body.get("metadata") or {})
        if meta.get("resourceVersion"):
            raise _ApiError(500, "resourceVersion should not be set on objects to be created")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise _ApiError(
                    400,
                    "the namespace of the provided object does not match the namespace "
                    "sent on the request",
                )
            meta["namespace"] = namespace
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise _ApiError(
                    422, f"{rt.kind} is invalid: metadata.name: Required value", "Invalid"
                )
            meta["name"] = prefix + "".join(
                random.choices(string.ascii_lowercase + string.digits, k=5)
            )
        obj = dict(body)
        obj["metadata"] = meta
        with self._cond:
            key = (self._ns(rt, namespace), meta["name"])
            if key in self._objects[rt.kind]:
                raise _ApiError(
                    409,
                    f'{rt.qualified} "{meta["name"]}" already exists',
                    "AlreadyExists",
                )
            stored = self._write_locked(rt, obj, None)
            self._cond.notify_all()
        return _Reply(201, stored.raw)

    def _replace(
        self, rt: ResourceType, key: tuple[str, str], body: JSONObject, status_only: bool
    ) -> _Reply:
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, key[1]):
            raise _ApiError(400, "the name of the object does not match the name on the URL")
        with self._cond:
            old = self._objects[rt.kind].get(key)
            if old is None:
                raise _not_found(rt, key[1])
            return self._update_locked(rt, old, body, status_only, meta.get("resourceVersion"))

    def _patch(
        self,
        rt: ResourceType,
        key: tuple[str, str],
        content_type: str,
        body: bytes,
        status_only: bool,
    ) -> _Reply:
        ctype = content_type.split(";")[0].strip().lower()
        if ctype not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
            "application/json",
        ):
            raise _ApiError(415, f"the body of the request was in an unknown format: {ctype}")
        patch = _parse_body(body, object)
        with self._cond:
            old = self._objects[rt.kind].get(key)
            if old is None:
                raise _not_found(rt, key[1])
            current: JSONObject = json.loads(old.raw)
            if isinstance(patch, list):
                patched = json_patch(current, patch)
            elif isinstance(patch, dict):
                patched = merge_patch(current, patch)
            else:
                raise _ApiError(400, "patch body must be a JSON object or a JSON patch list")
            precondition = None
            if isinstance(patch, dict):
                precondition = (patch.get("metadata") or {}).get("resourceVersion")
            return self._update_locked(rt, old, patched, status_only, precondition)

    def _update_locked(
        self,
        rt: ResourceType,
        old: _Stored,
        new: JSONObject,
        status_only: bool,
        precondition: Any,
    ) -> _Reply:
        """Apply an update from HTTP: optimistic concurrency, subresource rules, no-ops."""
        name = old.obj["metadata"]["name"]
        if precondition and str(precondition) != str(old.rv):
            raise _ApiError(
                409,
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                "Conflict",
            )
        if status_only:
            result: JSONObject = json.loads(old.raw)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
        else:
            result = dict(new)
            if rt.status_subresource:
                if "status" in old.obj:
                    result["status"] = json.loads(json.dumps(old.obj["status"]))
                else:
                    result.pop("status", None)
        meta = dict(result.get("metadata") or {})
        for field in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
            if field in old.obj["metadata"]:
                meta[field] = old.obj["metadata"][field]
            else:
                meta.pop(field, None)
        result["metadata"] = meta
        result["kind"] = rt.kind
        result["apiVersion"] = rt.api_version
        if result == old.obj:
            return _Reply(200, old.raw)
        stored = self._write_locked(rt, result, old)
        self._cond.notify_all()
        return _Reply(200, stored.raw)

    # ------------------------------------------------------------------ watches

    def _open_watch(
        self, rt: ResourceType, selector: _Selector, query: Mapping[str, str], conn: socket.socket
    ) -> _Watcher:
        rv_text = query.get("resourceVersion", "")
        since: int | None = None
        if rv_text not in ("", "0"):
            try:
                since = int(rv_text)
            except ValueError:
                raise _ApiError(400, f"invalid resource version: {rv_text!r}") from None
        w = _Watcher(rt, selector, conn)
        with self._cond:
            if since is None:
                current = sorted(self._objects[rt.kind].items(), key=lambda item: item[1].rv)
                for (ns, name), s in current:
                    if selector.matches(ns, name, s.labels):
                        w.pending.append(_event_line("ADDED", s.raw))
            elif since < self._floor[rt.kind]:
                gone = _status(
                    410,
                    f"too old resource version: {since} ({self._floor[rt.kind]})",
                    "Expired",
                )
                w.pending.append(b'{"type":"ERROR","object":' + _dumps(gone) + b"}\n")
                w.end_after_pending = True
            else:
                replay: list[_Change] = []
                for change in reversed(self._history[rt.kind]):
                    if change.rv <= since:
                        break
                    replay.append(change)
                for change in reversed(replay):
                    w.offer(change)
            self._watchers.add(w)
            self._cond.notify_all()
        return w

    def _stream_watch(self, handler: _Handler, w: _Watcher) -> None:
        """Write ``w``'s events to the client until timeout, close or fault."""
        query = {k: v[-1] for k, v in parse_qs(urlsplit(handler.path).query).items()}
        timeout = query.get("timeoutSeconds")
        try:
            deadline = time.monotonic() + float(timeout) if timeout else math.inf
        except ValueError:
            deadline = math.inf
        bookmarks = query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        headers_sent = False
        next_bookmark = time.monotonic() + self.bookmark_interval
        next_probe = time.monotonic() + _PROBE_INTERVAL
        try:
            while True:
                done = False
                batch = b""
                with self._cond:
                    while True:
                        if w.closed:
                            done = True
                            break
                        now = time.monotonic()
                        if now >= next_probe:
                            next_probe = now + _PROBE_INTERVAL
                            if _peer_gone(w.conn):
                                w.closed = w.abrupt = True
                                continue
                        if self._stall_until > now:
                            self._cond.wait(min(self._stall_until - now, _PROBE_INTERVAL))
                            continue
                        if not headers_sent:
                            break  # answer at once, like the real server, events or not
                        if w.pending:
                            batch = b"".join(w.pending)
                            w.pending.clear()
                            break
                        if w.end_after_pending or now >= deadline:
                            done = True
                            break
                        wake = deadline
                        if bookmarks:
                            if now >= next_bookmark:
                                next_bookmark = now + self.bookmark_interval
                                batch = _bookmark_line(w.rt, self._rv)
                                break
                            wake = min(wake, next_bookmark)
                        self._cond.wait(min(wake, next_probe) - now)
                if w.closed and w.abrupt:
                    handler.close_connection = True
                    return
                if not headers_sent:
                    handler.send_stream_headers()
                    headers_sent = True
                if batch:
                    handler.send_chunk(batch)
                if done:
                    handler.wfile.write(b"0\r\n\r\n")
                    return
        except OSError:
            handler.close_connection = True
        finally:
            with self._cond:
                self._watchers.discard(w)
                self._cond.notify_all()


def _peer_gone(conn: socket.socket) -> bool:
    """Whether the client hung up: an idle or stalled watch would never notice otherwise
    and would linger as a watcher until ``stop``.

    Peeks at the TCP socket itself (``socket.socket.recv``): ``SSLSocket.recv`` refuses
    flags with a ValueError, which ended every watch served over TLS after 0.5 s."""
    try:
        return socket.socket.recv(conn, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _resource(kind: str) -> ResourceType:
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; known: {sorted(_BY_KIND)}") from None


def _not_found(rt: ResourceType, name: str) -> _ApiError:
    return _ApiError(404, f'{rt.qualified} "{name}" not found')


def _parse_body(body: bytes, expected: type) -> Any:
    try:
        value = json.loads(body or b"null")
    except ValueError as err:
        raise _ApiError(400, f"invalid JSON body: {err}") from None
    if not isinstance(value, expected):
        raise _ApiError(400, f"request body must be a JSON {expected.__name__}")
    return value


# ---------------------------------------------------------------------- CLI


def load_seed(path: str | Path) -> list[JSONObject]:
    """Objects from a JSON file or a multi-document YAML file (``List`` kinds flattened)."""
    text = Path(path).read_text()
    docs: list[Any]
    if str(path).endswith(".json"):
        loaded = json.loads(text)
        docs = loaded if isinstance(loaded, list) else [loaded]
    else:
        import yaml

        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    return list(_flatten(docs))


def _flatten(docs: Iterable[Any]) -> Iterator[JSONObject]:
    for doc in docs:
        if not isinstance(doc, dict):
            raise ValueError(f"seed document is not an object: {doc!r}")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            yield from _flatten(doc["items"])
        else:
            yield doc


def main(argv: list[str] | None = None, ready: Callable[[str], None] | None = None) -> int:
    """``python -m kvip_bgp.testing.fakeapi``: serve seeded objects until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m kvip_bgp.testing.fakeapi")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any)")
    parser.add_argument("--seed", action="append", default=[], help="YAML or JSON objects")
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the fake here")
    parser.add_argument("--bookmark-interval", type=float, default=1.0)
    parser.add_argument(
        "--tls-cert",
        help="serve HTTPS only, with this PEM server certificate (needs --tls-key); the "
        "printed URL is then https://",
    )
    parser.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    parser.add_argument(
        "--token",
        action="append",
        help="accept only requests with 'Authorization: Bearer TOKEN' (repeatable; "
        "default: any or none); others get 401, as from a real API server",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    host, _, port = args.listen.rpartition(":")
    api = FakeKubeAPI(bookmark_interval=args.bookmark_interval)
    if args.token:
        api.accepted_tokens = frozenset(args.token)
    for seed in args.seed:
        api.put_many(load_seed(seed))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    tls = None if args.tls_cert is None else server_context(args.tls_cert, args.tls_key)
    url = api.start(host.strip("[]") or "127.0.0.1", int(port or 0), tls=tls)
    if args.kubeconfig:
        api.write_kubeconfig(args.kubeconfig)
    print(url, flush=True)
    if ready is not None:
        ready(url)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
