"""The fake Kubernetes API in its own process, and a client that writes to it over HTTP.

Why: a real API server is another process (another machine, usually). With the fake
inside the bench's process, the bench's writes, the fake's JSON encoding and the
daemon's measurement all share one interpreter and its GIL, and the fake's CPU cannot
be told apart from the bench's. ``FakeApiProcess`` runs ``python -m
kvip_bgp.testing.fakeapi`` in a lab namespace (the node's: the daemon reaches it on its
own loopback); ``FakeApiClient`` writes to any fake over HTTP as a client would: a
``POST`` per create, a ``PUT`` per replace, a ``DELETE`` per delete, over one kept-alive
connection opened inside that namespace. Seeding thousands of objects before a
measurement uses the fake's own ``/fake/objects`` bulk path instead (one request).

``InMemoryStore`` is the same interface over a ``FakeKubeAPI`` of this process, writing
in memory as the bench did before (kept for comparison).
"""

from __future__ import annotations

import json
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from kvip_bgp.testing.fakeapi import RESOURCE_TYPES, FakeKubeAPI
from kvip_bgp.testing.netlab import Lab, Netns, connect_in_netns
from kvip_bgp.testing.tls import Certs, client_context

JSONObject = dict[str, Any]
_BY_KIND = {rt.kind: rt for rt in RESOURCE_TYPES}


class KubeStore(Protocol):
    """What the bench does to the API's objects."""

    def put(self, obj: Mapping[str, Any]) -> object: ...

    def put_many(self, objs: Iterable[Mapping[str, Any]]) -> None: ...

    def create(self, obj: Mapping[str, Any]) -> None: ...

    def delete(self, kind: str, name: str, namespace: str | None = None) -> object: ...

    def delete_all(self, kind: str) -> None: ...

    def items(self, kind: str) -> list[JSONObject]: ...

    def another(self) -> KubeStore:
        """A store for another writer thread (its own connection, if it has one)."""
        ...

    def close(self) -> None: ...


def collection_path(kind: str, namespace: str | None) -> str:
    """``/api/v1/namespaces/NS/services``, ``/apis/GROUP/VERSION/...``; cluster-wide
    (every namespace) when ``namespace`` is None for a namespaced kind."""
    rt = _BY_KIND[kind]
    base = f"/api/{rt.version}" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    if rt.namespaced and namespace is not None:
        base += f"/namespaces/{quote(namespace, safe='')}"
    return f"{base}/{rt.plural}"


def object_path(kind: str, name: str, namespace: str | None) -> str:
    rt = _BY_KIND[kind]
    ns = (namespace or "default") if rt.namespaced else None
    return f"{collection_path(kind, ns)}/{quote(name, safe='')}"


def _where(obj: Mapping[str, Any]) -> tuple[str, str, str | None]:
    meta = obj.get("metadata") or {}
    kind = str(obj["kind"])
    namespace = (meta.get("namespace") or "default") if _BY_KIND[kind].namespaced else None
    return kind, str(meta["name"]), namespace


class _Closed(Exception):
    """The server closed the kept-alive connection between two requests."""


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:300]!r}")
        self.status = status


class FakeApiClient:
    """HTTP writes to a fake API at ``url``, from inside ``netns`` (None: this one).

    A minimal HTTP/1.1 client on one kept-alive connection, not ``http.client``: that
    one's header parsing (the ``email`` package) cost more than the fake's handling of
    a create (424 against 289 µs per create, sequential, 4,000 creates), and the bench's
    CPU is taken from the daemon's on this machine. Enough for the fake's replies, which
    always carry ``Content-Length`` (watches are not read through it).

    An ``https://`` URL needs ``tls``, a client context trusting the fake's CA: the
    socket is wrapped with the URL's host as the name to check (an address checks
    against the certificate's IP entries). ``token``: sent as a bearer token.
    """

    def __init__(
        self,
        url: str,
        netns: str | None = None,
        timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
        token: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        wanted = "https" if tls is not None else "http"
        if parts.scheme != wanted or parts.hostname is None or parts.port is None:
            raise ValueError(f"need {wanted}://HOST:PORT, got {url!r}")
        self._url = url
        self._netns, self._host, self._port = netns, parts.hostname, parts.port
        self._timeout = timeout
        self._tls, self._token = tls, token
        self._auth = "" if token is None else f"Authorization: Bearer {token}\r\n"
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def another(self) -> FakeApiClient:
        """A client of the same API on a connection of its own: one writer's requests
        wait for their replies, so a higher rate needs several connections."""
        return FakeApiClient(self._url, self._netns, self._timeout, self._tls, self._token)

    def _drop(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
        self._sock = self._reader = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            if self._netns is None:
                sock = socket.create_connection((self._host, self._port), self._timeout)
            else:
                sock = connect_in_netns(self._netns, self._host, self._port, self._timeout)
            # Headers and body may leave in two writes (they do on the fake's side);
            # with Nagle the second waits for a delayed ACK: 40 ms per request.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            self._sock, self._reader = sock, sock.makefile("rb")
        return self._sock

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """One request on the kept-alive connection (reconnects once if it was closed)."""
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n{self._auth}"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._connect().sendall(head + data)
                    return self._response()
                except (ConnectionError, _Closed, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    self._drop()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _response(self) -> tuple[int, bytes]:
        reader = self._reader
        status_line = reader.readline()
        if not status_line:
            raise _Closed
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        payload: bytes = reader.read(length)
        if close:
            self._drop()
        return status, payload

    def _ok(self, method: str, path: str, body: Any = None) -> bytes:
        status, data = self.request(method, path, body)
        if status >= 300:
            raise ApiError(method, path, status, data)
        return data

    def create(self, obj: Mapping[str, Any]) -> None:
        """``POST`` to the object's collection, as ``kubectl create`` does."""
        kind, _name, namespace = _where(obj)
        self._ok("POST", collection_path(kind, namespace), dict(obj))

    def put(self, obj: Mapping[str, Any]) -> None:
        """``PUT`` the object (a replace); ``POST`` it if it does not exist yet."""
        kind, name, namespace = _where(obj)
        status, data = self.request("PUT", object_path(kind, name, namespace), dict(obj))
        if status == 404:
            self.create(obj)
        elif status >= 300:
            raise ApiError("PUT", object_path(kind, name, namespace), status, data)

    def delete(self, kind: str, name: str, namespace: str | None = None) -> None:
        status, data = self.request("DELETE", object_path(kind, name, namespace))
        if status >= 300 and status != 404:
            raise ApiError("DELETE", object_path(kind, name, namespace), status, data)

    def items(self, kind: str) -> list[JSONObject]:
        """Every object of ``kind``, in all namespaces (one unpaged list)."""
        listed = json.loads(self._ok("GET", collection_path(kind, None)))
        items: list[JSONObject] = listed.get("items") or []
        return items

    def put_many(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Seeding, not a client's traffic: one ``POST /fake/objects`` of them all."""
        self._ok("POST", "/fake/objects", [dict(obj) for obj in objs])

    def delete_all(self, kind: str) -> None:
        self._ok("DELETE", f"/fake/objects?kind={quote(kind)}")


class InMemoryStore:
    """``KubeStore`` over a ``FakeKubeAPI`` of this process, writing in memory."""

    def __init__(self, api: FakeKubeAPI) -> None:
        self.api = api

    def put(self, obj: Mapping[str, Any]) -> object:
        return self.api.put(obj)

    def put_many(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.api.put_many(objs)

    def create(self, obj: Mapping[str, Any]) -> None:
        # put_many of one: skips the parsed copy ``put`` returns (a second per 20,000
        # under the GIL, see docs/performance.md).
        self.api.put_many((obj,))

    def delete(self, kind: str, name: str, namespace: str | None = None) -> object:
        return self.api.delete(kind, name, namespace)

    def delete_all(self, kind: str) -> None:
        for obj in self.api.items(kind):
            meta = obj["metadata"]
            self.api.delete(kind, meta["name"], meta.get("namespace"))

    def items(self, kind: str) -> list[JSONObject]:
        return self.api.items(kind)

    def another(self) -> InMemoryStore:
        return self  # the fake's own lock serialises writers in this process

    def close(self) -> None:
        """Nothing to close: no connection."""


class FakeApiProcess:
    """``python -m kvip_bgp.testing.fakeapi`` in ``ns`` of ``lab``, with its kubeconfig.

    The lab terminates it on close; ``stop`` does it earlier. ``client`` writes to it
    from the bench's process through a socket opened in ``ns``. With ``certs`` (their
    certificate valid for 127.0.0.1) it serves HTTPS only, writes no kubeconfig
    (``kubeconfig`` is None: clients take the CA from ``certs``), and ``client`` speaks
    TLS too; with ``token`` the fake accepts only that bearer token, which ``client``
    sends.
    """

    def __init__(
        self,
        lab: Lab,
        ns: Netns,
        workdir: Path,
        start_timeout: float = 30.0,
        certs: Certs | None = None,
        token: str | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig: Path | None = workdir / "kubeconfig" if certs is None else None
        self._log = open(workdir / "fakeapi.log", "ab")  # noqa: SIM115 (closed in stop)
        argv: list[str] = [sys.executable, "-m", "kvip_bgp.testing.fakeapi"]
        argv += ["--listen", "127.0.0.1:0"]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        if certs is not None:
            argv += ["--tls-cert", str(certs.cert), "--tls-key", str(certs.key)]
        if token is not None:
            # "--token=...": a random token may start with "-", which argparse would take
            # for an option after a separate "--token" (the fake then exits 2).
            argv += [f"--token={token}"]
        self.proc = lab.popen(ns, argv, stdout=subprocess.PIPE, stderr=self._log)
        self.url = self._read_url(start_timeout)
        tls = None if certs is None else client_context(certs.ca)
        self.client = FakeApiClient(self.url, ns.name, tls=tls, token=token)
        lab.on_exit(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_url(self, timeout: float) -> str:
        """The fake prints its URL once it listens (and the kubeconfig is written)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if self.proc.poll() is not None or left <= 0:
                self.stop()
                raise RuntimeError(f"the fake API did not start (exit {self.proc.returncode})")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = self.proc.stdout.read1(256)  # type: ignore[attr-defined]
                if not chunk:
                    continue
                line += chunk
        return line.decode().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if hasattr(self, "client"):
            self.client.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
