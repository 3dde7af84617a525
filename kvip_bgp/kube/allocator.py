"""The allocator's API calls: a full LIST of Services, and one allocation's two PATCHes.

Called only from the cluster writer thread, while it holds the Lease. Each PATCH carries
the ``resourceVersion`` the plan was made from: if the Service changed since (a user
edit, a write we have not seen yet), the API answers 409 Conflict and nothing is
written; the thread then reads the Service again and plans again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, assert_never

import structlog

from kvip_bgp.domain.claims import POOL_ANNOTATION
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import Event
from kvip_bgp.domain.objects import ObjectKey, ServiceInfo, parse_service
from kvip_bgp.kube.client import LIST_PAGE_SIZE, ApiClient, ApiException, api_path, request_json
from kvip_bgp.runtime.allocation import Allocations, AllocationStatus, AllocationWrite
from kvip_bgp.runtime.messages import (
    AllocatorConfig,
    AllocatorInput,
    ServiceEvent,
    ServiceSeen,
    ServicesListed,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot

log = structlog.get_logger("kvip_bgp.ipam")

MERGE_PATCH: Final = "application/merge-patch+json"
SERVICES: Final = "/api/v1/services"
SERVICE: Final = "/api/v1/namespaces/{}/services/{}"


@dataclass(frozen=True)
class Outcome:
    """What a write came to: ``service`` as the API now has it (None: it is gone)."""

    ok: bool
    service: ServiceInfo | None
    conflict: bool = False


def list_services(api: ApiClient) -> tuple[list[ServiceInfo], str]:
    """Every Service, in pages of one consistent snapshot, and that snapshot's version."""
    services: list[ServiceInfo] = []
    token = ""
    version = ""
    while True:
        path = f"{SERVICES}?limit={LIST_PAGE_SIZE}"
        if token:
            path += f"&continue={token}"
        body = request_json(api, "GET", path, timeout=(10.0, 60.0))
        services += [parse_service(item) for item in body.get("items") or ()]
        meta = body.get("metadata") or {}
        version = str(meta.get("resourceVersion") or version)
        token = str(meta.get("continue") or "")
        if not token:
            return services, version


def apply(api: ApiClient, write: AllocationWrite) -> Outcome:
    """The status first (what every node announces), then the pool annotation."""
    service = write.service
    key = service.key
    version = service.resource_version
    answer: Any = None
    try:
        if write.status:
            ingress = [{"ip": str(ip)} for ip in write.ips] or None
            body = {
                "metadata": {"resourceVersion": version},
                "status": {"loadBalancer": {"ingress": ingress}},
            }
            path = api_path(SERVICE + "/status", key.namespace, key.name)
            answer = request_json(api, "PATCH", path, body, MERGE_PATCH)
            version = str((answer.get("metadata") or {}).get("resourceVersion") or version)
        if write.annotation:
            body = {
                "metadata": {
                    "resourceVersion": version,
                    "annotations": {POOL_ANNOTATION: write.pool},
                }
            }
            path = api_path(SERVICE, key.namespace, key.name)
            answer = request_json(api, "PATCH", path, body, MERGE_PATCH)
    except ApiException as error:
        if error.status == 404:
            return Outcome(False, None)
        if error.status == 409:
            return Outcome(False, read(api, service), conflict=True)
        raise
    return Outcome(True, parse_service(answer) if answer is not None else service)


def read(api: ApiClient, service: ServiceInfo) -> ServiceInfo | None:
    """The Service as the API has it now (None: deleted)."""
    key = service.key
    try:
        return parse_service(request_json(api, "GET", api_path(SERVICE, key.namespace, key.name)))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


class Allocator:
    """The allocator as the writer thread runs it: input, leadership, passes and writes.

    Why in the writer thread: it holds the Lease, so "only the holder allocates" is one
    check in one thread, never a message about leadership that could arrive late; and the
    holder's writes (statuses, Events, allocations) go out in one ordered stream.
    Nothing is planned before a full list of Services. Taking the Lease over from another
    node, it lists every Service itself: a write the previous holder made just before it
    stopped may not have reached this node's watch yet, and planning without it could
    hand the same address out twice. Creating the Lease, or renewing its own (a restart of
    this node), it plans from the cluster thread's list: the writes of its own earlier
    run were done before this process's watch listed.
    """

    def __init__(
        self,
        api: ApiClient,
        config: Config,
        status: Snapshot[AllocationStatus] | None = None,
        metrics: Metrics | None = None,
        writes_per_second: float = 200.0,
        routes_busy: Callable[[], bool] | None = None,
        yield_max: float = 10.0,
    ) -> None:
        self._api = api
        self.state = Allocations(config)
        self._status = status
        self._metrics = metrics
        self._gap = 1.0 / writes_per_second
        self._leading = False
        self._must_list = False
        self._writes: list[AllocationWrite] = []
        self._done: set[ObjectKey] = set()
        self._published: AllocationStatus | None = None
        self._resume_at = 0.0
        self._first_plan = False
        self._routes_busy = routes_busy
        self._yield_max = yield_max
        self._yielding_since: float | None = None

    def take(self, request: AllocatorInput) -> None:
        match request:
            case ServiceSeen():
                self.state.seen(request.service, request.deleted)
            case ServicesListed():
                self.state.listed_all(request.services, request.resource_version)
            case AllocatorConfig():
                had = bool(self.state.pools)
                self.state.set_config(request.config)
                self._must_list = self._must_list or not had
            case _:
                assert_never(request)

    @property
    def busy(self) -> bool:
        """Work is waiting for the next turn (the writer comes back at once, not at the
        next renewal)."""
        return (
            self._leading
            and bool(self.state.pools)
            and time.monotonic() >= self._resume_at
            and (
                bool(self._writes) or self._must_list or (self.state.changed and self.state.listed)
            )
        )

    def failed(self, retry_in: float = 1.0) -> None:
        """The API failed mid-turn: start over (list, plan) after ``retry_in`` seconds."""
        self._writes = []
        self._must_list = True
        self._resume_at = time.monotonic() + retry_in

    def leadership(self, leading: bool, list_first: bool = True) -> None:
        if leading and not self._leading:
            self._must_list = list_first
            self._first_plan = True  # logged at info
        if not leading and self._leading:
            self._writes = []
            if self._metrics is not None:
                self._metrics.ipam_addresses.clear()
                self._metrics.ipam_pending.set(0)
            self._publish(False)
        self._leading = leading

    def step(
        self, deadline: float, post: Callable[[ServiceEvent], None], stopping: Callable[[], bool]
    ) -> None:
        """One turn while holding the Lease: list if needed, plan if anything changed,
        then write until ``deadline`` (the rest waits for the next turn)."""
        if not self._leading or not self.state.pools or time.monotonic() < self._resume_at:
            return
        if not self._must_list and not self.state.listed:
            return  # waits for the cluster thread's first list
        if self._first_plan and self._yield_to_routes():
            return
        if self._must_list:
            started = time.monotonic()
            services, version = list_services(self._api)
            self.state.listed_all(services, version)
            self._must_list = False
            log.info(
                "ipam.listed", services=len(services), seconds=round(time.monotonic() - started, 3)
            )
        if self.state.changed and self.state.refresh():
            started = time.monotonic()
            self._writes, failures = self.state.next_writes()
            self._done = set()
            for event in failures:
                post(_service_event(event, self.state))
            log.log(
                20 if self._writes or failures or self._first_plan else 10,
                "ipam.planned",
                writes=len(self._writes),
                failed=len(failures),
                seconds=round(time.monotonic() - started, 3),
            )
            self._first_plan = False
            self._publish(True)
        while self._writes and time.monotonic() < deadline and not stopping():
            write = self._writes[0]
            if not write.after <= self._done:  # waits for a release that did not happen
                self.state.dirty = True
                self._writes = []
                break
            outcome = apply(self._api, write)
            self._writes.pop(0)
            if outcome.service is None:
                self.state.gone(write.service.key)
            else:
                self.state.seen(outcome.service)
            if not outcome.ok:
                log.info("ipam.write_conflict", service=str(write.service.key))
                self.state.dirty = True  # plan again from what the API has now
                self._writes = []
                break
            self._done.add(write.service.key)
            for event in write.events:
                post(_service_event(event, self.state))
            log.info(
                "ipam.written",
                service=str(write.service.key),
                ips=[str(ip) for ip in write.ips],
                pool=write.pool,
            )
            time.sleep(self._gap)
        if not self._writes and self._published is not None and self._published.outstanding:
            self._publish(True)

    def _yield_to_routes(self) -> bool:
        """The first plan waits while the routes of a cold start go out (at most
        ``yield_max`` seconds): the addresses Services already hold are announced from
        their status without it, and on 2 cores its CPU would delay them."""
        if self._routes_busy is None or not self._routes_busy():
            self._yielding_since = None
            return False
        now = time.monotonic()
        if self._yielding_since is None:
            self._yielding_since = now
            log.info("ipam.waits_for_routes")
        return now - self._yielding_since < self._yield_max

    def _publish(self, leading: bool) -> None:
        status = self.state.status(leading and not self._must_list, len(self._writes))
        self._published = status
        if self._status is not None:
            self._status.publish(status)
        if self._metrics is not None and status.allocating:
            for u in status.usage:
                family = f"ipv{u.family}"
                self._metrics.ipam_addresses.labels(u.pool, family, "assigned").set(u.assigned)
                self._metrics.ipam_addresses.labels(u.pool, family, "available").set(u.available)
            self._metrics.ipam_pending.set(len(status.pending))


def _service_event(event: Event, state: Allocations) -> ServiceEvent:
    return ServiceEvent(
        str(event.service),
        state.uid(event.service),
        event.reason,
        event.message,
        type="Warning" if event.warning else "Normal",
    )
