"""Stream threads: list, then watch, one resource each, and push parsed objects.

They own no cluster state: all they remember is the ``resourceVersion`` to resume from.
Each owns its API client (see ``client.new_api_client``) and every response it reads:
only the stream thread releases or closes them.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from kvip_bgp.domain.objects import (
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
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


def _lines(response: Any) -> Iterator[bytes]:
    """The watch's lines, one JSON event each; blank lines left out.

    Each chunk is split once, and a line that spans chunks is joined once: a chunk that
    holds many events (a replay after a reconnect, events written while we were busy)
    costs one pass, not a copy of its rest per line as splitting off one line at a time
    from a growing buffer did.
    """
    pending: list[bytes] = []  # the start of a line that has not ended yet
    for chunk in response.stream(1 << 16, decode_content=True):
        if b"\n" not in chunk:
            pending.append(chunk)
            continue
        if pending:
            pending.append(chunk)
            chunk = b"".join(pending)
            pending.clear()
        *lines, tail = chunk.split(b"\n")
        if tail:
            pending.append(tail)
        for line in lines:
            if line.strip():
                yield line
    rest = b"".join(pending)
    if rest.strip():
        yield rest


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
    ) -> None:
        super().__init__(name=f"stream-{resource.name}", daemon=True)
        self.resource = resource
        self._deliver = deliver
        self._on_restart = on_restart
        self._timeouts = timeouts
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
                body = json.loads(response.data)
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
        clean = False
        try:
            if self._stopping.is_set():  # stop came before the response was published
                return resource_version
            for line in _lines(response):
                if self._stopping.is_set():
                    break
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
                new_version = (obj.get("metadata") or {}).get("resourceVersion")
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(Changed(self.resource.name, kind, self.resource.parse(obj)))
                if new_version:
                    resource_version = str(new_version)
            else:
                clean = not self._stopping.is_set()
        finally:
            with self._interrupt_lock:
                self._reading = None
            # A watch read to its end leaves a reusable connection; after an error or an
            # interrupted read it does not (the socket may be shut down): close it.
            if clean:
                response.release_conn()
            else:
                response.close()
        return resource_version


def _error_kind(error: Exception) -> str:
    text = type(error).__name__
    if "Timeout" in text or "timed out" in str(error):
        return "timeout"
    if isinstance(error, ValueError):
        return "malformed"
    return "connection"
