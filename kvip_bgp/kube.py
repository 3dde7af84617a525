"""The only module that talks to the Kubernetes API (the only ``kubernetes`` import).

Stream threads list and then watch one resource each and push frozen, parsed objects to
the cluster-state thread. They own no cluster state: all they remember is the
``resourceVersion`` to resume from.

Requests go through the client's own ``ApiClient`` (kubeconfig and in-cluster loading,
auth and token refresh, TLS, urllib3, ``ApiException``) but not through its generated
``CoreV1Api``-style classes (see ``request``). Payloads are read as raw JSON and parsed by
``resources.py``: the client's model deserialisation costs seconds for a list of 10,000
Services, and we need a dozen fields of each. Initial lists are read in pages
(``LIST_PAGE_SIZE``) so that the whole list never exists as JSON dicts at once.

Robustness against real API servers: watches resume from the last ``resourceVersion``
(bookmarks keep it fresh); ``410 Gone`` triggers a relist; a read timeout longer than the
server-side watch timeout notices a silently dead stream; errors back off exponentially
with jitter. A relist replaces the whole cache for that resource, so nothing that changed
during an outage is missed; nothing is ever withdrawn because the API is unreachable.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import structlog
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kvip_bgp.resources import (
    EndpointSliceInfo,
    NodeInfo,
    ServiceInfo,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)

log = structlog.get_logger("kvip_bgp.kube")

KubeObject = ServiceInfo | EndpointSliceInfo | NodeInfo


class KubeConfigError(Exception):
    """No usable cluster credentials; the message lists what was tried."""


@dataclass(frozen=True)
class Listed:
    """A complete list of ``resource``: the cluster thread replaces its cache with it."""

    resource: str
    objects: tuple[KubeObject, ...]
    resource_version: str


@dataclass(frozen=True)
class Changed:
    """One watch event (``ADDED``, ``MODIFIED`` or ``DELETED``)."""

    resource: str
    kind: str
    object: KubeObject


StreamEvent = Listed | Changed


@dataclass(frozen=True)
class WatchTimeouts:
    """Server-side watch length, client read timeout (must exceed the bookmark interval)."""

    watch_seconds: int = 300
    read_seconds: float = 120.0
    connect_seconds: float = 10.0
    max_backoff: float = 30.0


class KubeError(Exception):
    """A request the daemon cannot start without failed; the message says which."""


LIST_PAGE_SIZE: Final = 500
JSON: Final = "application/json"
# What the generated client sends for a dict body to PATCH on built-in kinds.
STRATEGIC_MERGE_PATCH: Final = "application/strategic-merge-patch+json"


def api_path(template: str, *names: str) -> str:
    """``template`` with each ``{}`` replaced by one name, percent-encoded as a path segment."""
    return template.format(*(quote(name, safe="") for name in names))


def request(
    api: k8s.ApiClient,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    body: Any = None,
    content_type: str = JSON,
    timeout: tuple[float, float] = (5.0, 10.0),
) -> Any:
    """One API call; the streaming urllib3 response, or ``ApiException`` for non-2xx.

    Why not ``CoreV1Api`` and friends: in this client the first use of a generated API
    class imports the pydantic models of its whole group and builds their validators,
    about 24 MB resident for the three classes we need, to check parameters we build
    ourselves. ``ApiClient.param_serialize``/``call_api`` are the layer those classes call,
    so auth (bearer token, exec plugins, refresh), TLS and the host come from the same
    configuration, and errors raise the same ``ApiException`` subclasses as the generated
    methods do with ``_preload_content=False``. The caller must read the response and
    ``release_conn()`` it (``request_json`` does both).
    """
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = content_type
    serialized = api.param_serialize(
        method,
        path,
        query_params=list(query),
        header_params=headers,
        body=body,
        auth_settings=["BearerToken"],
    )
    response: Any = api.call_api(*serialized, _request_timeout=timeout)
    if not 200 <= response.status <= 299:
        response.read()
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return response.response


def request_json(
    api: k8s.ApiClient,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = JSON,
    timeout: tuple[float, float] = (5.0, 10.0),
) -> Any:
    """``request``, with the reply body parsed and the connection back in the pool."""
    response = request(api, method, path, body=body, content_type=content_type, timeout=timeout)
    try:
        return json.loads(response.data)
    finally:
        response.release_conn()


def node_labels(api: k8s.ApiClient, node_name: str) -> dict[str, str]:
    """This node's labels (for per-rack peer selection at startup)."""
    try:
        body = request_json(api, "GET", api_path("/api/v1/nodes/{}", node_name), timeout=(10, 30))
    except ApiException as error:
        raise KubeError(
            f"cannot read Node {node_name!r}: HTTP {error.status} {error.reason}"
        ) from error
    except Exception as error:
        raise KubeError(f"cannot read Node {node_name!r}: {error}") from error
    labels = (body.get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and isinstance(v, str)}


class Gone(Exception):
    """The resourceVersion we resume from is too old (410): relist."""


def _client_from_kubeconfig(path: str | None) -> k8s.ApiClient:
    api: k8s.ApiClient = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=path
    )
    return api


def load_api_client(kubeconfig: Path | None) -> k8s.ApiClient:
    """In-cluster credentials, then ``kubernetes.kubeconfig``, then ``$KUBECONFIG``."""
    tried: list[str] = []
    if kubeconfig is not None:
        try:
            return _client_from_kubeconfig(str(kubeconfig))
        except Exception as error:  # the loader raises several unrelated types
            raise KubeConfigError(f"kubernetes.kubeconfig {kubeconfig}: {error}") from error
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
        return k8s.ApiClient()
    except k8s_config.ConfigException as error:
        tried.append(f"in-cluster: {error}")
    try:
        return _client_from_kubeconfig(None)
    except Exception as error:
        tried.append(f"$KUBECONFIG/~/.kube/config: {error}")
    raise KubeConfigError("no Kubernetes credentials found; tried " + "; ".join(tried))


@dataclass(frozen=True)
class Resource:
    """How to list/watch one resource kind (``path``: its collection) and parse its objects."""

    name: str
    api: k8s.ApiClient
    path: str
    parse: Callable[[Mapping[str, Any]], KubeObject]
    params: tuple[tuple[str, str], ...] = ()

    def get(self, query: Sequence[tuple[str, str]], timeout: tuple[float, float]) -> Any:
        """A list or watch request; the streaming response (see ``request``)."""
        return request(self.api, "GET", self.path, (*self.params, *query), timeout=timeout)


def resources(api: k8s.ApiClient, node_name: str) -> tuple[Resource, ...]:
    return (
        Resource("services", api, "/api/v1/services", parse_service),
        Resource(
            "endpointslices", api, "/apis/discovery.k8s.io/v1/endpointslices", parse_endpoint_slice
        ),
        # Only our own Node matters; the selector saves watching all 80 of them.
        Resource(
            "nodes",
            api,
            "/api/v1/nodes",
            parse_node,
            (("fieldSelector", f"metadata.name={node_name}"),),
        ),
    )


def _lines(response: Any) -> Iterator[bytes]:
    buffer = b""
    for chunk in response.stream(1 << 16, decode_content=True):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line
    if buffer.strip():
        yield buffer


class ResourceStream(threading.Thread):
    """One stream thread: list, then watch, forever, for one resource."""

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
        self._response: Any = None

    def stop(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:
            # Closing a half-dead urllib3 response may raise anything; we are leaving anyway.
            with contextlib.suppress(Exception):
                response.shutdown() if hasattr(response, "shutdown") else response.close()

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

        Why pages: 10,000 Services in one response are ~4 MB of JSON that become ~40 MB
        of dicts all alive at once, between the long-lived parsed objects; the allocator
        cannot give that peak back (measured: the daemon stayed ~20 MB bigger). One page
        at a time keeps at most ``LIST_PAGE_SIZE`` raw objects alive.

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
        self._response = response
        try:
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
        finally:
            self._response = None
            response.release_conn()
        return resource_version


def _error_kind(error: Exception) -> str:
    text = type(error).__name__
    if "Timeout" in text or "timed out" in str(error):
        return "timeout"
    if isinstance(error, ValueError):
        return "malformed"
    return "connection"


RESOURCES: Final = ("services", "endpointslices", "nodes")


# ------------------------------------------------------------------------------ writes


@dataclass(frozen=True)
class ServiceEvent:
    """A Kubernetes Event to put on a Service (only the elected writer posts it)."""

    service: str  # namespace/name
    uid: str
    reason: str  # CamelCase, e.g. InvalidAnnotation
    message: str
    type: str = "Warning"


@dataclass(frozen=True)
class StatusWanted:
    """``status.loadBalancer.ingress`` should list ``ips``; None cancels an earlier want."""

    service: str
    ips: tuple[str, ...] | None


WriteRequest = ServiceEvent | StatusWanted


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "kvip-bgp-status-writer"
    duration: int = 15
    renew_every: float = 5.0


def _now_micro() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None

    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


STATUS_WRITES_PER_SECOND: Final = 200
RECENT_WRITE: Final = 30.0  # seconds a written status is trusted over a stale watch
# Status writes wait while the reconciler still has routes to bind and announce, but
# never longer than this in a row: a status must not stay unwritten under constant churn.
STATUS_YIELD_MAX: Final = 10.0
LEASES: Final = "/apis/coordination.k8s.io/v1/namespaces/{}/leases"
EVENTS: Final = "/api/v1/namespaces/{}/events"


class ClusterWriter(threading.Thread):
    """The one thread that writes to the cluster: Events and Service status.

    80 nodes compute the same refusals and the same status; only the holder of a
    ``coordination.k8s.io`` Lease acts on them, and it patches a status only when it
    differs from what the watch last showed (the cluster thread checks that), so a
    cluster does not see 80 identical PATCHes per Service. Requests arrive through a
    coalescing queue (latest status per Service wins); a non-leader keeps only the
    pending status wants, so a new leader finishes the work of a lost one.
    """

    def __init__(
        self,
        api: k8s.ApiClient,
        identity: str,
        lease: LeaseSettings,
        requests: Any,  # CoalescingQueue[tuple[str, ...], WriteRequest]
        on_leader_change: Callable[[bool], None] | None = None,
        routes_busy: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="cluster-writer", daemon=True)
        self._api = api
        self._identity = identity
        self._lease = lease
        self._requests = requests
        self._on_leader_change = on_leader_change
        self._routes_busy = routes_busy
        # Since when status writes have yielded to the route pipeline (None: they do not).
        self._yielding_since: float | None = None
        self._stopping = threading.Event()
        # Owned by this thread.
        self._leader = False
        self._pending_status: dict[str, tuple[str, ...]] = {}
        self._posted: dict[tuple[str, str, str], tuple[str, int]] = {}
        # Statuses written in the last RECENT_WRITE seconds (pruned at each renewal).
        self._written: dict[str, tuple[tuple[str, ...], float]] = {}

    def stop(self) -> None:
        self._stopping.set()
        self._requests.close()

    @staticmethod
    def key(request: WriteRequest) -> tuple[str, ...]:
        if isinstance(request, StatusWanted):
            return ("status", request.service)
        return ("event", request.service, request.reason, request.message)

    def run(self) -> None:
        next_renew = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self._elect()
                self._forget_old_writes()
                next_renew = now + self._lease.renew_every
            # While statuses are pending, come back at once after the flush below.
            wait = 0.01 if self._leader and self._pending_status else next_renew - time.monotonic()
            for _key, request in self._requests.drain(max(0.01, wait)):
                try:
                    self._handle(request)
                except Exception as error:  # an API error must not kill the writer
                    log.warning(
                        "kube.write_failed", service=request.service, error=str(error)[:300]
                    )
            if self._leader:
                self._flush_status()

    # -- leader election ----------------------------------------------------------

    def _elect(self) -> None:
        try:
            leader = self._try_acquire()
        except Exception as error:
            log.warning("kube.lease_error", error=str(error)[:300])
            leader = False
        if leader != self._leader:
            self._leader = leader
            log.info("kube.status_writer", leader=leader, identity=self._identity)
            if self._on_leader_change is not None:
                self._on_leader_change(leader)

    def _try_acquire(self) -> bool:
        lease = self._lease
        now = _now_micro()
        leases = api_path(LEASES, lease.namespace)
        this_lease = api_path(LEASES + "/{}", lease.namespace, lease.name)
        try:
            current = request_json(self._api, "GET", this_lease)
        except ApiException as error:
            if error.status != 404:
                raise
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": lease.name, "namespace": lease.namespace},
                "spec": {
                    "holderIdentity": self._identity,
                    "leaseDurationSeconds": lease.duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                request_json(self._api, "POST", leases, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False
                raise
            return True
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or lease.duration
        expired = renewed is None or renewed + float(duration) < time.time()
        if holder != self._identity and not expired:
            return False
        spec = dict(spec)
        if holder != self._identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            {
                "holderIdentity": self._identity,
                "renewTime": now,
                "leaseDurationSeconds": lease.duration,
            }
        )
        current["spec"] = spec
        try:
            request_json(self._api, "PUT", this_lease, current)
        except ApiException as error:
            if error.status == 409:  # someone else renewed or took it first
                return False
            raise
        return True

    # -- requests -------------------------------------------------------------------

    def _handle(self, request: WriteRequest) -> None:
        if isinstance(request, StatusWanted):
            if request.ips is None:
                self._pending_status.pop(request.service, None)
            else:
                self._pending_status[request.service] = request.ips
            return
        if self._leader:
            self._post_event(request)

    def _flush_status(self) -> None:
        """Write pending statuses, at most STATUS_WRITES_PER_SECOND, for at most ~1 s.

        At startup with 10,000 Services the leader would otherwise fire 10,000 PATCHes at
        once, competing with convergence (measured: cold start 21 s vs 12 s); and the
        loop must return in time to renew the Lease.

        Routes come first: while the routes are not out yet (``routes_busy``; the app
        says so until the cluster's first full state reached the reconciler and while
        addresses are left to bind), no status is written, for at most STATUS_YIELD_MAX
        seconds in a row. On 2 cores the PATCHes (ours and the API server's side) took
        CPU from ExaBGP and the reconciler: cold start at 10,000 was ~0.3 s slower with
        them than without (bench, leader vs --not-leader). A status also reads better once
        the route it promises is out.
        """
        deadline = time.monotonic() + 1.0
        for service, ips in list(self._pending_status.items()):
            if time.monotonic() >= deadline or self._stopping.is_set() or self._yield_to_routes():
                return
            last = self._written.get(service)
            if last is not None and last[0] == ips and time.monotonic() - last[1] < RECENT_WRITE:
                # Written moments ago; the watch just has not shown it yet.
                del self._pending_status[service]
                continue
            namespace, name = service.split("/", 1)
            body = {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}
            path = api_path("/api/v1/namespaces/{}/services/{}/status", namespace, name)
            try:
                request_json(self._api, "PATCH", path, body, STRATEGIC_MERGE_PATCH)
            except ApiException as error:
                if error.status == 404:
                    del self._pending_status[service]
                    continue
                log.warning("kube.status_patch_failed", service=service, error=str(error.reason))
                return  # keep it pending; retried on the next pass
            del self._pending_status[service]
            self._written[service] = (ips, time.monotonic())
            log.debug("kube.status_written", service=service, vip=list(ips))
            self._stopping.wait(1.0 / STATUS_WRITES_PER_SECOND)

    def _yield_to_routes(self) -> bool:
        if self._routes_busy is None or not self._pending_status or not self._routes_busy():
            if self._yielding_since is not None:
                log.info(
                    "kube.status_writes_resume",
                    waited=round(time.monotonic() - self._yielding_since, 2),
                    pending=len(self._pending_status),
                )
                self._yielding_since = None
            return False
        now = time.monotonic()
        if self._yielding_since is None:
            self._yielding_since = now
            log.info("kube.status_writes_wait", pending=len(self._pending_status))
        # Past STATUS_YIELD_MAX: write (the routes are still checked at every pass).
        return now - self._yielding_since < STATUS_YIELD_MAX

    def _forget_old_writes(self) -> None:
        """Drop writes older than RECENT_WRITE: past that they are never consulted, and
        after a cold start with 10,000 Services they would otherwise stay forever."""
        cutoff = time.monotonic() - RECENT_WRITE
        if any(at < cutoff for _ips, at in self._written.values()):
            self._written = {s: w for s, w in self._written.items() if w[1] >= cutoff}

    def _post_event(self, event: ServiceEvent) -> None:
        namespace, name = event.service.split("/", 1)
        key = (event.service, event.reason, event.message)
        now = _now_micro()
        previous = self._posted.get(key)
        if previous is not None:
            event_name, count = previous
            try:
                request_json(
                    self._api,
                    "PATCH",
                    api_path(EVENTS + "/{}", namespace, event_name),
                    {"count": count + 1, "lastTimestamp": now},
                    STRATEGIC_MERGE_PATCH,
                )
                self._posted[key] = (event_name, count + 1)
                return
            except ApiException:
                pass  # expired or deleted: post a new one
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Service",
                "name": name,
                "namespace": namespace,
                "uid": event.uid,
            },
            "reason": event.reason,
            "message": event.message[:1024],
            "type": event.type,
            "source": {"component": "kvip-bgp", "host": self._identity},
            "reportingComponent": "kvip-bgp",
            "reportingInstance": self._identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        created = request_json(self._api, "POST", api_path(EVENTS, namespace), body)
        if len(self._posted) > 10_000:
            self._posted.clear()
        self._posted[key] = (str((created.get("metadata") or {}).get("name") or ""), 1)
        log.info("kube.event_posted", service=event.service, reason=event.reason)
