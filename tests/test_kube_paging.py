"""Paged initial lists: the fake API's ``limit``/``continue`` and the stream threads' use of it.

Pure tests (no network namespaces): the fake API on 127.0.0.1 and the real ``kubernetes``
client. The stream must read a list in pages of ``LIST_PAGE_SIZE``, deliver it once,
resume watching from the last page's resourceVersion, and relist from scratch when a
continue token has expired (410), never mixing pages of two snapshots.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from kubernetes import client

from kvip_bgp.domain.objects import ServiceInfo, parse_service
from kvip_bgp.kube.client import LIST_PAGE_SIZE, load_api_client
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.kube.watch import Resource, ResourceStream, resources
from kvip_bgp.kube.writer import ClusterWriter
from kvip_bgp.runtime import messages as kube
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.objects import service


def names(count: int) -> list[str]:
    return [f"svc-{index:04d}" for index in range(count)]


@pytest.fixture
def api_client(kubeconfig: Path) -> client.ApiClient:
    return load_api_client(kubeconfig)


def get(api: FakeKubeAPI, path: str, **query: str) -> tuple[int, dict[str, Any]]:
    url = f"{api.url}{path}" + (f"?{urlencode(query)}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def pages(api: FakeKubeAPI, limit: int, path: str = "/api/v1/services") -> list[dict[str, Any]]:
    """Every page of a list, following ``metadata.continue``."""
    result: list[dict[str, Any]] = []
    token = ""
    while True:
        query = {"limit": str(limit)}
        if token:
            query["continue"] = token
        status, body = get(api, path, **query)
        assert status == 200, body
        result.append(body)
        token = body["metadata"].get("continue", "")
        if not token:
            return result


def item_names(page: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in page["items"]]


# --------------------------------------------------------------- the fake API's pages


@pytest.mark.parametrize(
    ("count", "limit", "expected_sizes"),
    [
        (0, 2, [0]),
        (1, 2, [1]),
        (4, 2, [2, 2]),
        (5, 2, [2, 2, 1]),
        (5, 0, [5]),  # limit 0 (or none): everything at once
        (5, 10, [5]),
    ],
)
def test_fake_serves_a_list_in_pages_of_one_snapshot(
    api: FakeKubeAPI, count: int, limit: int, expected_sizes: list[int]
) -> None:
    api.put_many(service(name) for name in names(count))
    rv = str(api.resource_version)
    got = pages(api, limit)
    assert [len(page["items"]) for page in got] == expected_sizes
    assert [name for page in got for name in item_names(page)] == names(count)
    assert {page["metadata"]["resourceVersion"] for page in got} == {rv}
    remaining = [page["metadata"].get("remainingItemCount") for page in got]
    assert remaining == [count - sum(expected_sizes[: i + 1]) or None for i in range(len(got))]


def test_later_pages_do_not_see_writes_after_the_first(api: FakeKubeAPI) -> None:
    api.put_many(service(name) for name in names(4))
    rv = str(api.resource_version)
    status, first = get(api, "/api/v1/services", limit="2")
    assert status == 200
    api.put(service("svc-9999"))  # sorts last: would land on the second page
    api.delete("Service", "svc-0003", "default")
    status, second = get(
        api, "/api/v1/services", limit="2", **{"continue": first["metadata"]["continue"]}
    )
    assert status == 200
    assert item_names(second) == ["svc-0002", "svc-0003"]
    assert second["metadata"]["resourceVersion"] == rv
    assert "continue" not in second["metadata"]


def test_selectors_apply_before_paging(api: FakeKubeAPI) -> None:
    api.put_many(
        service(name, namespace=namespace) for name in names(3) for namespace in ("a", "b")
    )
    got = pages(api, 2, "/api/v1/namespaces/b/services")
    assert [len(page["items"]) for page in got] == [2, 1]
    assert {item["metadata"]["namespace"] for page in got for item in page["items"]} == {"b"}


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("expired-history", 410, "Expired"),
        ("pushed-out", 410, "Expired"),
        ("garbage", 400, "BadRequest"),
        ("other-query", 400, "BadRequest"),
    ],
)
def test_unusable_continue_tokens(api: FakeKubeAPI, case: str, status: int, reason: str) -> None:
    api.put_many(service(name) for name in names(4))
    _, first = get(api, "/api/v1/services", limit="2")
    token = first["metadata"]["continue"]
    path = "/api/v1/services"
    if case == "expired-history":
        api.expire_history()  # what compaction does to a real server's snapshots
    elif case == "pushed-out":
        for _ in range(40):  # more paged lists than the fake keeps snapshots of
            get(api, "/api/v1/services", limit="1")
    elif case == "garbage":
        token = "not-a-token"
    elif case == "other-query":
        path = "/api/v1/namespaces/other/services"
    got_status, body = get(api, path, limit="2", **{"continue": token})
    assert (got_status, body["reason"], body["code"]) == (status, reason, status)


# --------------------------------------------------------------- the stream's list


@dataclass
class FakeResponse:
    data: bytes
    released: bool = False

    def release_conn(self) -> None:
        self.released = True


@dataclass(frozen=True)
class CannedResource(Resource):
    """Answers list requests from ``replies`` in order and records each query."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)
    responses: list[FakeResponse] = field(default_factory=list)

    def get(self, query: Sequence[tuple[str, str]], timeout: tuple[float, float]) -> Any:
        self.queries.append(dict(query))
        response = FakeResponse(json.dumps(self.replies[len(self.queries) - 1]).encode())
        self.responses.append(response)
        return response


def page(rv: str, token: str, *service_names: str) -> dict[str, Any]:
    meta = {"resourceVersion": rv, **({"continue": token} if token else {})}
    return {"metadata": meta, "items": [service(name) for name in service_names]}


@pytest.mark.parametrize(
    ("replies", "expected_names", "expected_rv"),
    [
        ([page("7", "", "a", "b")], ["a", "b"], "7"),
        (
            [
                page(
                    "7",
                    "",
                )
            ],
            [],
            "7",
        ),
        ([page("7", "t1", "a"), page("7", "t2", "b"), page("7", "", "c")], ["a", "b", "c"], "7"),
        # The resourceVersion to watch from is the last page's.
        ([page("7", "t1", "a"), page("9", "", "b")], ["a", "b"], "9"),
        (
            [
                page("7", "t1", "a", "b"),
                page(
                    "8",
                    "",
                ),
            ],
            ["a", "b"],
            "8",
        ),
    ],
)
def test_stream_lists_every_page_and_delivers_once(
    replies: list[dict[str, Any]], expected_names: list[str], expected_rv: str
) -> None:
    resource = CannedResource("services", None, "/api/v1/services", parse_service, (), replies)
    delivered: list[kube.StreamEvent] = []
    stream = ResourceStream(resource, delivered.append, lambda res, why: None)
    assert stream._list() == expected_rv
    assert len(delivered) == 1
    listed = delivered[0]
    assert isinstance(listed, kube.Listed)
    assert listed.resource_version == expected_rv
    assert [o.key.name for o in listed.objects if isinstance(o, ServiceInfo)] == expected_names
    # limit on every page; each page continues from the token of the one before.
    limit = str(LIST_PAGE_SIZE)
    tokens = [r["metadata"].get("continue") for r in replies[:-1]]
    assert resource.queries == [
        {"limit": limit},
        *({"limit": limit, "continue": token} for token in tokens),
    ]
    assert all(response.released for response in resource.responses)


def drain_until_listed(events: queue.Queue[kube.StreamEvent]) -> kube.Listed:
    while True:
        event = events.get(timeout=10)
        if isinstance(event, kube.Listed):
            return event


def test_stream_pages_through_the_fake_then_watches_from_its_version(
    api: FakeKubeAPI, api_client: client.ApiClient
) -> None:
    count = LIST_PAGE_SIZE * 2 + 7
    api.put_many(service(name) for name in names(count))
    rv = str(api.resource_version)
    services = resources(api_client.configuration, "node-1")[0]
    events: queue.Queue[kube.StreamEvent] = queue.Queue()
    stream = ResourceStream(services, events.put, lambda res, why: None)
    stream.start()
    try:
        listed = drain_until_listed(events)
        assert listed.resource_version == rv
        assert sorted(o.key.name for o in listed.objects if isinstance(o, ServiceInfo)) == names(
            count
        )
        assert api.wait_for_watchers(1, "Service")
        watch = [r.query for r in api.request_log if "watch=true" in r.query]
        assert f"resourceVersion={rv}" in watch[0]
        list_pages = [r for r in api.request_log if r.path == "/api/v1/services"]
        assert len(list_pages) == 3 + len(watch)
        api.put(service("late"))
        changed = events.get(timeout=10)
        assert isinstance(changed, kube.Changed) and changed.kind == "ADDED"
        assert isinstance(changed.object, ServiceInfo) and changed.object.key.name == "late"
    finally:
        stream.stop()
        stream.join(5)


@dataclass(frozen=True)
class ExpiringResource(Resource):
    """Compacts the fake's history once, right after the first page was served."""

    fake: FakeKubeAPI | None = None
    served: list[int] = field(default_factory=list)

    def get(self, query: Sequence[tuple[str, str]], timeout: tuple[float, float]) -> Any:
        response = super().get(query, timeout)
        if dict(query).get("limit") and not self.served and self.fake is not None:
            self.served.append(1)
            self.fake.put(service("zz-created-mid-list"))
            self.fake.expire_history()
        return response


def test_expired_continue_token_relists_from_scratch(
    api: FakeKubeAPI, api_client: client.ApiClient
) -> None:
    count = LIST_PAGE_SIZE + 3  # two pages
    api.put_many(service(name) for name in names(count))
    resource = ExpiringResource("services", api_client, "/api/v1/services", parse_service, (), api)
    events: queue.Queue[kube.StreamEvent] = queue.Queue()
    restarts: list[tuple[str, str]] = []
    lock = threading.Lock()

    def restarted(res: str, why: str) -> None:
        with lock:
            restarts.append((res, why))

    stream = ResourceStream(resource, events.put, restarted)
    stream.start()
    try:
        listed = drain_until_listed(events)
        # One delivery, from the fresh list: it has the object created mid-list and the
        # version after it, not a mix of the first page and a newer second page.
        time.sleep(0.3)
        while not events.empty():
            assert not isinstance(events.get_nowait(), kube.Listed)
        got = sorted(o.key.name for o in listed.objects if isinstance(o, ServiceInfo))
        assert got == [*names(count), "zz-created-mid-list"]
        assert listed.resource_version == str(api.resource_version)
        with lock:
            assert restarts == [("services", "expired")]
        firsts = [
            r
            for r in api.request_log
            if r.path == "/api/v1/services" and "limit=" in r.query and "continue=" not in r.query
        ]
        assert len(firsts) == 2  # the list started over
    finally:
        stream.stop()
        stream.join(5)


# --------------------------------------------------------------- writes, raw requests


def test_writer_posts_an_event_then_counts_repeats(
    api: FakeKubeAPI, api_client: client.ApiClient
) -> None:
    api.put(service("web"))
    leader = threading.Event()
    requests: CoalescingQueue[tuple[str, ...], kube.WriteRequest] = CoalescingQueue()
    writer = ClusterWriter(
        api_client,
        "node-a",
        LeaseSettings(namespace="kube-system", renew_every=0.2),
        requests,
        lambda is_leader: leader.set() if is_leader else None,
    )
    writer.start()
    try:
        assert leader.wait(5)
        event = kube.ServiceEvent("default/web", "uid-1", "VIPRefused", "VIP 192.0.2.1 refused")
        for expected_count in (1, 2):
            requests.put(ClusterWriter.key(event), event)
            for _ in range(100):
                posted = api.events()
                if posted and posted[0]["count"] == expected_count:
                    break
                time.sleep(0.05)
            assert len(posted) == 1
            assert posted[0]["count"] == expected_count
            assert posted[0]["involvedObject"]["name"] == "web"
            assert posted[0]["reason"] == "VIPRefused"
    finally:
        writer.stop()
        writer.join(5)
