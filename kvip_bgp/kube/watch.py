"""Stream threads: list, then watch, one resource each, and push parsed objects.

They own no cluster state: all they remember is the ``resourceVersion`` to resume from.
Each owns its API client (see ``client.new_api_client``) and every response it reads:
only the stream thread releases or closes them.
"""

from __future__ import annotations

import contextlib
import random
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from kvip_bgp.domain.objects import parse_endpoint_slice, parse_node, parse_service
from kvip_bgp.kube import jsonbody
from kvip_bgp.kube.chunked import BodyEnded, ChunkedBody, Lines
from kvip_bgp.kube.client import (
    LIST_PAGE_SIZE,
    ApiClient,
    ApiException,
    Configuration,
    Gone,
    new_api_client,
    request,
)
from kvip_bgp.runtime.messages import Changed, KubeObject, Listed, StreamEvent

log = structlog.get_logger("kvip_bgp.kube")


@dataclass(frozen=True)
class WatchTimeouts:
    """Server-side watch length, client read timeout (must exceed the bookmark interval)."""

    watch_seconds: int = 300
    read_seconds: float = 120.0
    connect_seconds: float = 10.0
    max_backoff: float = 30.0


@dataclass(frozen=True)
class Resource:
    """How to list/watch one resource kind (``path``: its collection) and parse its objects.

    ``api`` is used by the one stream thread of this resource only.
    """

    name: str
    api: ApiClient
    path: str
    parse: Callable[[Mapping[str, Any]], KubeObject]
    params: tuple[tuple[str, str], ...] = ()

    def get(self, query: Sequence[tuple[str, str]], timeout: tuple[float, float]) -> Any:
        """A list or watch request; the streaming response (see ``request``)."""
        return request(self.api, "GET", self.path, (*self.params, *query), timeout=timeout)


def resources(configuration: Configuration, node_name: str) -> tuple[Resource, ...]:
    """The three watched kinds, each with an API client of its own on ``configuration``."""
    return (
        Resource("services", new_api_client(configuration), "/api/v1/services", parse_service),
        Resource(
            "endpointslices",
            new_api_client(configuration),
            "/apis/discovery.k8s.io/v1/endpointslices",
            parse_endpoint_slice,
        ),
        # Only our own Node matters; the selector saves watching all 80 of them.
        Resource(
            "nodes",
            new_api_client(configuration),
            "/api/v1/nodes",
            parse_node,
            (("fieldSelector", f"metadata.name={node_name}"),),
        ),
    )


# Seconds between two reads of a busy watch (raw_reads): less than the cluster thread's
# 20 ms (10 cost no more CPU than 20, took ~6 ms off flip p99 at 2,000 writes/s), and
# more while it takes bulk changes every 60 ms (runtime.pace; docs/performance.md).
GATHER: Final = 0.01
BULK_GATHER: Final = 0.04
READ_SIZE: Final = 1 << 16


def raw_reads(
    read: Callable[[int], bytes],
    wait: Callable[[float], bool],
    clock: Callable[[], float] = time.monotonic,
    gather: Callable[[], float] = lambda: GATHER,
    waiting: Callable[[], bool] = lambda: False,
) -> Iterator[list[bytes]]:
    """The lines of a chunked watch body read by ``read``, a list per read.

    Why gather: in a burst every event used to cost a wake-up, a socket read and a trip
    through urllib3 of its own, and with cold caches that was most of a stream thread's
    CPU. Here one read takes all the socket holds, and a read that gave whole lines is
    followed by the next no sooner than ``gather()`` after it, so events that arrive
    meanwhile wait in the socket and come in one read. An event after a quiet spell is
    read at once; a read that gave only part of a line, or filled ``READ_SIZE`` (more is
    waiting), is followed at once. ``wait`` sleeps and says whether to stop.

    ``waiting`` (``readable``): over TLS a read gives one record (<= 16 KiB, one event if
    the server flushes each), so reads go on while more waits; without, HTTPS streams
    read an event per ``gather``: 80 s for a burst of 10,000 (bench, in-cluster)."""
    body, lines = ChunkedBody(), Lines()
    while not body.done:
        data = read(READ_SIZE)
        if not data:
            raise BodyEnded("the watch ended before its last chunk")
        while len(data) < READ_SIZE and waiting() and (more := read(READ_SIZE - len(data))):
            data += more  # (an empty read is the end: the next read says so)
        done_at = clock()
        batch = lines.feed(body.feed(data))
        yield batch
        if batch and len(data) < READ_SIZE and not body.done:
            pause = done_at + gather() - clock()
            if pause > 0 and wait(pause):
                return
    yield lines.rest()


def readable(body: Any) -> Callable[[], bool]:
    """Whether socket file ``body`` holds bytes now (after a whole read1, only its socket can)."""
    poller = select.poll()
    poller.register(body.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))


def chunk_reads(response: Any) -> Iterator[list[bytes]]:
    """The lines of a watch body as urllib3 decodes it, a list per chunk: for a response
    the stream thread cannot read itself (see ``raw_body``)."""
    lines = Lines()
    for chunk in response.stream(READ_SIZE, decode_content=True):
        yield lines.feed(chunk)
    yield lines.rest()


def raw_body(response: Any) -> Any:
    """The response's socket file, if the stream thread can decode the body itself.

    That is urllib3's ``HTTPResponse._fp`` (the ``http.client`` response) and its ``fp``,
    read before either has read any of the body, in plain chunked coding (the API server
    compresses nothing we do not ask for). Anything else (a urllib3 that moved these) is
    read through urllib3 by ``chunk_reads``.
    """
    inner = getattr(response, "_fp", None)
    body = getattr(inner, "fp", None)
    if (
        getattr(response, "chunked", False) is not True
        or getattr(inner, "chunked", False) is not True
        or getattr(inner, "chunk_left", 0) is not None
        or not callable(getattr(body, "read1", None))
        or response.headers.get("content-encoding", "identity").lower() != "identity"
    ):
        return None
    return body


class ResourceStream(threading.Thread):
    """One stream thread: list, then watch, forever, for one resource.

    ``stop`` (called from the main thread) signals; it never closes or releases a
    response. A watch can block in a read for up to ``read_seconds``, so ``stop`` also
    interrupts it, and touches exactly one thing for that: ``shutdown(SHUT_RD)`` on the
    socket of the watch response in flight (urllib3's ``HTTPResponse.shutdown``). That
    call does not close the descriptor (so it cannot be reused under the reader) and only
    makes the pending read return; the stream thread then sees ``stop`` and closes the
    response itself. ``_interrupt_lock`` makes the hand-over exact: the stream thread
    publishes the response under it before reading and withdraws it under it before
    letting go of the connection, so ``stop`` never touches a connection that is back in
    the pool or closed.
    """

    def __init__(
        self,
        resource: Resource,
        deliver: Callable[[StreamEvent], None],
        on_restart: Callable[[str, str], None],
        timeouts: WatchTimeouts = WatchTimeouts(),
        gather: Callable[[], float] = lambda: GATHER,
    ) -> None:
        super().__init__(name=f"stream-{resource.name}", daemon=True)
        self.resource = resource
        self._deliver = deliver
        self._on_restart = on_restart
        self._timeouts, self._gather = timeouts, gather  # see raw_reads
        self._stopping = threading.Event()
        self._interrupt_lock = threading.Lock()
        # The watch response being read, set and cleared by the stream thread only.
        self._reading: Any = None

    def stop(self) -> None:
        """Signal the thread to end and wake a read blocked on the watch (see the class)."""
        self._stopping.set()
        with self._interrupt_lock:
            response = self._reading
            shutdown = getattr(response, "shutdown", None)
            if shutdown is not None:
                # Raises only if the socket is already gone: the read then ends on its own.
                with contextlib.suppress(OSError, ValueError, RuntimeError):
                    shutdown()

    def run(self) -> None:
        resource_version: str | None = None
        failures = 0
        while not self._stopping.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch(resource_version)
                failures = 0
            except Gone:
                log.info("kube.watch_expired", resource=self.resource.name, reason="410 Gone")
                self._on_restart(self.resource.name, "expired")
                resource_version = None
            except ApiException as error:
                if error.status == 410:
                    self._on_restart(self.resource.name, "expired")
                    resource_version = None
                    continue
                failures += 1
                self._failed(f"http-{error.status}", str(error.reason), failures)
            except Exception as error:  # network errors come in many urllib3 shapes
                if self._stopping.is_set():
                    return
                failures += 1
                self._failed(_error_kind(error), repr(error)[:300], failures)

    def _failed(self, kind: str, detail: str, failures: int) -> None:
        self._on_restart(self.resource.name, kind)
        delay = min(self._timeouts.max_backoff, 0.2 * 2 ** min(failures, 10))
        delay *= random.uniform(0.5, 1.0)  # jitter: 80 nodes must not retry in lockstep
        log.warning(
            "kube.stream_error",
            resource=self.resource.name,
            error=detail,
            kind=kind,
            retry_in=round(delay, 2),
        )
        self._stopping.wait(delay)

    def _request_timeout(self) -> tuple[float, float]:
        return (self._timeouts.connect_seconds, self._timeouts.read_seconds)

    def _list(self) -> str:
        """List in pages of ``LIST_PAGE_SIZE``, following ``metadata.continue``; deliver once.

        Why pages: a whole list in one response becomes dicts all alive at once, between
        the long-lived parsed objects, and the allocator cannot give that peak back. One
        page at a time keeps at most ``LIST_PAGE_SIZE`` raw objects alive.

        The pages are one consistent snapshot; the resourceVersion to watch from is the
        last page's (the API server sends the snapshot's on each). A 410 on a continue
        token (the snapshot was compacted away) propagates as ``ApiException``, and
        ``run`` relists from scratch: mixing pages of two snapshots could miss changes.
        """
        objects: list[KubeObject] = []
        token = ""
        version = ""
        pages = 0
        while True:
            query = [("limit", str(LIST_PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            try:
                response = self.resource.get(query, self._request_timeout())
            except ApiException as error:
                if error.status == 410 and token:
                    log.info(
                        "kube.list_expired",
                        resource=self.resource.name,
                        pages=pages,
                        reason="continue token expired: relisting from scratch",
                    )
                raise
            try:
                body = jsonbody.loads(response.data)
            finally:
                response.release_conn()
            pages += 1
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion") or "")
            token = str(meta.get("continue") or "")
            items = body.get("items") or []
            objects.extend(self.resource.parse(item) for item in items if isinstance(item, dict))
            del body, items  # the next page is not parsed while this one is still alive
            if not token:
                break
        log.info(
            "kube.listed",
            resource=self.resource.name,
            count=len(objects),
            pages=pages,
            resource_version=version,
        )
        self._deliver(Listed(self.resource.name, tuple(objects), version))
        return version

    def _watch(self, resource_version: str) -> str:
        response = self.resource.get(
            (
                ("watch", "true"),
                ("resourceVersion", resource_version),
                ("allowWatchBookmarks", "true"),
                ("timeoutSeconds", str(self._timeouts.watch_seconds)),
            ),
            self._request_timeout(),
        )
        with self._interrupt_lock:
            self._reading = response
        body = raw_body(response)
        clean = False
        try:
            if self._stopping.is_set():  # stop came before the response was published
                return resource_version
            stop, gather = self._stopping.wait, self._gather
            reads = (
                chunk_reads(response)
                if body is None
                else raw_reads(body.read1, stop, gather=gather, waiting=readable(body))
            )
            for lines in reads:
                for line in lines:
                    resource_version = self._event(line, resource_version)
                if self._stopping.is_set():
                    break
            else:
                clean = not self._stopping.is_set()
        finally:
            with self._interrupt_lock:
                self._reading = None
            # A watch read to its end leaves a reusable connection; after an error or an
            # interrupted read it does not (the socket may be shut down): close it. A
            # body read here is one ``http.client`` does not know has ended: closing its
            # response (not the socket) lets the connection take the next request.
            if clean:
                if body is not None:
                    response._fp.close()
                response.release_conn()
            else:
                response.close()
        return resource_version

    def _event(self, line: bytes, resource_version: str) -> str:
        """Deliver one watch event; the resourceVersion to resume from after it."""
        event = jsonbody.loads(line)
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
        new_version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._deliver(Changed(self.resource.name, kind, self.resource.parse(obj)))
        return str(new_version) if new_version else resource_version


def _error_kind(error: Exception) -> str:
    text = type(error).__name__
    if "Timeout" in text or "timed out" in str(error):
        return "timeout"
    if isinstance(error, ValueError):
        return "malformed"
    return "connection"
