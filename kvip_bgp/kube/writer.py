"""The cluster writer thread: Service status and Events, while it holds the status-writer Lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import structlog

from kvip_bgp.kube.allocator import Allocator
from kvip_bgp.kube.client import (
    STRATEGIC_MERGE_PATCH,
    ApiClient,
    ApiException,
    api_path,
    request_json,
)
from kvip_bgp.kube.lease import Lease, LeaseSettings, now_micro
from kvip_bgp.kube.writes import NotAnswered, Writer
from kvip_bgp.runtime.messages import (
    AllocatorConfig,
    ServiceEvent,
    ServiceSeen,
    ServicesListed,
    StatusWanted,
    WriteRequest,
)

log = structlog.get_logger("kvip_bgp.kube")


STATUS_WRITES_PER_SECOND: Final = 200
# ... paced in batches: a pause after every PATCH cost more CPU than the PATCH itself (the
# thread wakes 200 times a second with cold caches; see _flush_status).
STATUS_WRITE_BATCH: Final = 40
RECENT_WRITE: Final = 30.0  # seconds a written status is trusted over a stale watch
# Status writes wait while the reconciler still has routes to bind and announce, but
# never longer than this in a row: a status must not stay unwritten under constant churn.
STATUS_YIELD_MAX: Final = 10.0
# Meanwhile the routes are looked at again this often, not at every request that comes
# in nor every 10 ms (182 looks in a second of a request every 5 ms): each wake-up costs
# CPU of its own (docs/performance.md#wake-ups).
YIELD_POLL: Final = 0.1
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
        api: ApiClient,
        identity: str,
        lease: LeaseSettings,
        requests: Any,  # CoalescingQueue[tuple[str, ...], WriteRequest]
        on_leader_change: Callable[[bool], None] | None = None,
        routes_busy: Callable[[], bool] | None = None,
        allocator: Allocator | None = None,
    ) -> None:
        super().__init__(name="cluster-writer", daemon=True)
        self._api = api
        self._writes = Writer(api)  # status PATCHes
        self._identity = identity
        self._lease = Lease(api, identity, lease)
        self._requests = requests
        self._on_leader_change = on_leader_change
        self._routes_busy = routes_busy
        self._allocator = allocator  # address management, only while we hold the Lease
        self._renewed_at = 0.0  # monotonic time of the last successful renewal
        # Since when status writes have yielded to the route pipeline (None: they do not).
        self._yielding_since: float | None = None
        self._batch = 0  # status PATCHes since the last pause (see _flush_status)
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
        if isinstance(request, ServiceSeen):
            return ("service", str(request.service.key))
        if isinstance(request, ServicesListed):
            return ("services",)
        if isinstance(request, AllocatorConfig):
            return ("allocator-config",)
        return ("event", request.service, request.reason, request.message)

    def run(self) -> None:
        next_renew = 0.0
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= next_renew:
                self._elect()
                self._forget_old_writes()
                next_renew = now + self._lease.settings.renew_every
            # While statuses are pending, come back at once after the flush below.
            busy = self._pending_status or (self._allocator is not None and self._allocator.busy)
            wait = 0.01 if self._leader and busy else next_renew - time.monotonic()
            for key, request in self._requests.drain(max(0.01, wait)):
                try:
                    self._handle(request)
                except Exception as error:  # an API error must not kill the writer
                    log.warning("kube.write_failed", key=key, error=str(error)[:300])
            if self._leader:
                self._allocate()
                if self._flush_status():  # yielded to the routes: requests wait queued
                    self._stopping.wait(YIELD_POLL)

    # -- leader election ----------------------------------------------------------

    def _elect(self) -> None:
        try:
            leader = self._lease.try_acquire()
        except Exception as error:
            log.warning("kube.lease_error", error=str(error)[:300])
            leader = False
        if leader:
            self._renewed_at = time.monotonic()
        if leader != self._leader:
            self._leader = leader
            if self._allocator is not None:
                self._allocator.leadership(leader, list_first=self._lease.taken_over)
            log.info("kube.status_writer", leader=leader, identity=self._identity)
            if self._on_leader_change is not None:
                self._on_leader_change(leader)

    # -- requests -------------------------------------------------------------------

    def _allocate(self) -> None:
        """An allocation turn of at most ~1 s, only while the Lease is surely ours.

        "Surely": renewed less than (duration - renew_every) ago, so a holder cut off
        from the API stops writing before another node can take the Lease over.
        """
        settings = self._lease.settings
        if self._allocator is None:
            return
        if time.monotonic() - self._renewed_at > settings.duration - settings.renew_every:
            return
        try:
            self._allocator.step(time.monotonic() + 1.0, self._post_quietly, self._stopping.is_set)
        except Exception as error:  # the API failed: the next turn starts over
            log.warning("ipam.pass_failed", error=str(error)[:300])
            self._allocator.failed()

    def _handle(self, request: WriteRequest) -> None:
        if isinstance(request, ServiceSeen | ServicesListed | AllocatorConfig):
            if self._allocator is not None:
                self._allocator.take(request)
            return
        if isinstance(request, StatusWanted):
            if request.ips is None:
                self._pending_status.pop(request.service, None)
            else:
                self._pending_status[request.service] = request.ips
            return
        if self._leader:
            self._post_event(request)

    def _flush_status(self) -> bool:
        """Write pending statuses, at most STATUS_WRITES_PER_SECOND, for at most ~1 s;
        True if it stopped to let the routes go first.

        At startup with many Services the leader would otherwise fire a PATCH per Service
        at once, competing with convergence; and the loop must return in time to renew
        the Lease. The pause comes after every STATUS_WRITE_BATCH PATCHes, not after each:
        with a 5 ms sleep per PATCH the writer's thread cost ~670 µs of CPU per PATCH,
        with 40 back to back and then 200 ms ~480 (measured against the fake API: woken
        200 times a second, the interpreter runs on cold caches). The rate is the same.

        Routes come first: while the routes are not out yet (``routes_busy``; the app
        says so until the cluster's first full state reached the reconciler and while
        addresses are left to bind), no status is written, for at most STATUS_YIELD_MAX
        seconds in a row: on a small node the PATCHes (ours and the API server's side)
        take CPU from ExaBGP and the reconciler (docs/performance.md). A status also
        reads better once the route it promises is out.
        """
        deadline = time.monotonic() + 1.0
        todo = iter(list(self._pending_status.items()))
        while True:
            batch, stop = self._status_batch(todo, deadline)
            if batch and not self._write_statuses(batch):
                return False  # kept pending; retried on the next pass
            if stop is not None:
                return stop
            if self._batch >= STATUS_WRITE_BATCH:
                self._batch = 0
                self._stopping.wait(STATUS_WRITE_BATCH / STATUS_WRITES_PER_SECOND)

    def _status_batch(
        self, todo: Iterator[tuple[str, tuple[str, ...]]], deadline: float
    ) -> tuple[list[tuple[str, tuple[str, ...]]], bool | None]:
        """The next statuses to write, up to the pause; and whether the pass ends there
        (None: go on after the pause; True: it yielded to the routes)."""
        batch: list[tuple[str, tuple[str, ...]]] = []
        for service, ips in todo:
            if time.monotonic() >= deadline or self._stopping.is_set():
                return batch, False
            if self._yield_to_routes():
                return batch, True
            last = self._written.get(service)
            if last is not None and last[0] == ips and time.monotonic() - last[1] < RECENT_WRITE:
                # Written moments ago; the watch just has not shown it yet.
                del self._pending_status[service]
                continue
            batch.append((service, ips))
            if self._batch + len(batch) >= STATUS_WRITE_BATCH:
                return batch, None
        return batch, False

    def _write_statuses(self, batch: list[tuple[str, tuple[str, ...]]]) -> bool:
        """PATCH the statuses of ``batch`` at once (``Writer.write_many``: a status may
        be written twice); False if any failed but for a Service gone (404)."""
        writes = []
        for service, ips in batch:
            namespace, name = service.split("/", 1)
            body = {"status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}
            path = api_path("/api/v1/namespaces/{}/services/{}/status", namespace, name)
            writes.append((path, body))
        failures: list[tuple[str, Exception]] = []
        results = self._writes.write_many("PATCH", writes, STRATEGIC_MERGE_PATCH)
        for (service, ips), result in zip(batch, results, strict=True):
            if result is None:
                del self._pending_status[service]
                self._written[service] = (ips, time.monotonic())
                log.debug("kube.status_written", service=service, vip=list(ips))
                self._batch += 1
            elif isinstance(result, ApiException) and result.status == 404:
                del self._pending_status[service]  # the Service is gone
            else:
                failures.append((service, result))
        if not failures:
            return True
        # The first cause, not the writes left unanswered after it.
        service, error = next(
            (f for f in failures if not isinstance(f[1], NotAnswered)), failures[0]
        )
        text = str(error.reason) if isinstance(error, ApiException) else repr(error)[:300]
        log.warning("kube.status_patch_failed", service=service, error=text, failed=len(failures))
        return False

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

    def _post_quietly(self, event: ServiceEvent) -> None:
        """An allocation's Event: a failure to post it must not undo the allocation pass."""
        try:
            self._post_event(event)
        except Exception as error:
            log.warning("kube.event_failed", service=event.service, error=str(error)[:300])

    def _post_event(self, event: ServiceEvent) -> None:
        namespace, name = event.service.split("/", 1)
        key = (event.service, event.reason, event.message)
        now = now_micro()
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
