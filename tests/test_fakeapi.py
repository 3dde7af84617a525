"""The fake API server, exercised through the real ``kubernetes`` client.

These tests pin the semantics the speaker's watch code relies on (resourceVersion
resumption, 410 Expired, bookmarks, status subresource, optimistic concurrency) and
check that every injected fault looks to the client like the real failure would.
"""

# The kubernetes client's models type every field as Optional and its watch/config helpers
# are untyped; asserting on them line by line is the point of these tests.
# mypy: disable-error-code="union-attr, no-untyped-call, index, arg-type, type-var"

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kvip_bgp.testing import objects
from kvip_bgp.testing.fakeapi import FakeKubeAPI

REPO = Path(__file__).resolve().parent.parent


def service(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return objects.service(name, namespace=namespace, labels=labels, lb_class="kvip-bgp.io/bgp")


@pytest.fixture
def kube(kubeconfig: Path) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        yield api_client


def raw_watch(
    kube: client.ApiClient, timeout: tuple[float, float] = (2, 5), **kwargs: Any
) -> urllib3.HTTPResponse:
    resp: Any = client.CoreV1Api(kube).list_namespaced_service(
        "default", watch=True, _preload_content=False, _request_timeout=timeout, **kwargs
    )
    assert isinstance(resp, urllib3.HTTPResponse)
    return resp


def no_watchers_left(api: FakeKubeAPI, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while api.watcher_count() and time.monotonic() < deadline:
        time.sleep(0.02)
    return api.watcher_count() == 0


def test_list_returns_items_and_resource_version(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("a", app="web"))
    api.put(service("b", namespace="team"))
    api.put(objects.node("worker-1", {"rack": "r1"}))
    api.put(objects.endpoint_slice("a", ["worker-1"], suffix="x1"))
    core = client.CoreV1Api(kube)
    every = core.list_service_for_all_namespaces()
    assert sorted(s.metadata.name for s in every.items) == ["a", "b"]
    assert every.metadata.resource_version == str(api.resource_version)
    assert [s.metadata.name for s in core.list_namespaced_service("team").items] == ["b"]
    selected = core.list_service_for_all_namespaces(label_selector="app=web")
    assert [s.metadata.name for s in selected.items] == ["a"]
    assert core.read_namespaced_service("a", "default").spec.load_balancer_class == (
        "kvip-bgp.io/bgp"
    )
    assert core.read_node("worker-1").metadata.labels == {"rack": "r1"}
    assert [n.metadata.name for n in core.list_node().items] == ["worker-1"]
    slices = client.DiscoveryV1Api(kube).list_endpoint_slice_for_all_namespaces()
    assert slices.items[0].endpoints[0].node_name == "worker-1"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_service("missing", "default")
    assert err.value.status == 404
    assert json.loads(err.value.body)["kind"] == "Status"


def test_unknown_path_is_404_status(api: FakeKubeAPI) -> None:
    http = urllib3.PoolManager()
    resp = http.request("GET", f"{api.url}/apis/example.com/v1/widgets")
    assert resp.status == 404
    assert json.loads(resp.data)["reason"] == "NotFound"
    assert json.loads(http.request("GET", f"{api.url}/version").data)["major"] == "1"


def test_watch_from_rv_sees_changes_in_order(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("old"))
    core = client.CoreV1Api(kube)
    rv = core.list_namespaced_service("default").metadata.resource_version
    api.put(service("a"))
    modified = api.put({**service("a"), "spec": {"type": "ClusterIP"}})
    api.delete("Service", "a")
    seen = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_service, "default", resource_version=rv, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert int(modified["metadata"]["resourceVersion"]) > int(rv)


def test_watch_without_rv_starts_with_synthetic_added_then_live(
    api: FakeKubeAPI, kube: client.ApiClient
) -> None:
    api.put_many([service("a"), service("b"), service("c", namespace="other")])
    resp = raw_watch(kube)
    lines = iter_resp_lines(resp)
    first = [json.loads(next(lines)) for _ in range(2)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in first] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    api.put(service("d"))
    live = json.loads(next(lines))
    assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "d")
    assert live["object"]["kind"] == "Service"
    resp.close()


def test_too_old_rv_after_expire_history_is_410(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("a"))
    old_rv = str(api.resource_version)
    api.put(service("b"))
    api.expire_history()
    core = client.CoreV1Api(kube)
    resp = raw_watch(kube, resource_version=old_rv)
    events = [json.loads(line) for line in iter_resp_lines(resp)]  # stream ends by itself
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_service, "default", resource_version=old_rv, timeout_seconds=5
        ):
            pass
    assert err.value.status == 410
    # Resuming from the current rv is still fine.
    fresh = raw_watch(kube, resource_version=str(api.resource_version))
    api.put(service("c"))
    assert json.loads(next(iter_resp_lines(fresh)))["object"]["metadata"]["name"] == "c"
    fresh.close()


def test_bounded_history_expires_old_rvs() -> None:
    fake = FakeKubeAPI(history=3)
    fake.put(objects.node("n"))  # other kinds keep their own history
    rv_before = fake.resource_version
    for i in range(5):
        fake.put(service(f"s{i}"))
    with fake:
        http = urllib3.PoolManager()
        url = f"{fake.url}/api/v1/namespaces/default/services?watch=true&resourceVersion="
        gone = http.request("GET", url + str(rv_before), timeout=5)
        assert json.loads(gone.data)["object"]["code"] == 410
        ok = http.request("GET", url + str(fake.resource_version - 3) + "&timeoutSeconds=1")
        names = [json.loads(line)["object"]["metadata"]["name"] for line in ok.data.splitlines()]
        assert names == ["s2", "s3", "s4"]


def test_bookmarks_arrive(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("a"))
    core = client.CoreV1Api(kube)
    w = watch.Watch()
    types = []
    for event in w.stream(
        core.list_namespaced_service,
        "default",
        resource_version=str(api.resource_version),
        allow_watch_bookmarks=True,
        timeout_seconds=5,
    ):
        types.append(event["type"])
        if event["type"] == "BOOKMARK":
            assert event["raw_object"]["metadata"]["resourceVersion"] == str(api.resource_version)
            w.stop()
    assert types == ["BOOKMARK"]
    assert w.resource_version == str(api.resource_version)


def test_watch_timeout_seconds_ends_stream(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    started = time.monotonic()
    events = list(
        watch.Watch().stream(
            client.CoreV1Api(kube).list_namespaced_service, "default", timeout_seconds=1
        )
    )
    assert events == []
    assert 0.9 < time.monotonic() - started < 3


def test_patch_service_status_changes_status_only(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    created = api.put(service("a"))
    core = client.CoreV1Api(kube)
    body = {
        "spec": {"type": "ClusterIP"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}},
    }
    result = core.patch_namespaced_service_status("a", "default", body)
    assert result.status.load_balancer.ingress[0].ip == "198.51.100.1"
    stored = api.get("Service", "a")
    assert stored is not None
    assert stored["spec"] == created["spec"]
    assert stored["status"] == body["status"]
    assert int(stored["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert api.count_requests("PATCH", "/services/a/status") == 1
    # A JSON patch, and a no-op patch that must not bump the resourceVersion.
    ops = [{"op": "replace", "path": "/status/loadBalancer/ingress/0/ip", "value": "198.51.100.2"}]
    core.patch_namespaced_service_status("a", "default", ops)
    rv = api.resource_version
    core.patch_namespaced_service_status(
        "a", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.2"}]}}}
    )
    assert api.resource_version == rv
    # A patch of the main resource leaves status alone.
    core.patch_namespaced_service(
        "a", "default", {"metadata": {"labels": {"x": "y"}}, "status": None}
    )
    stored = api.get("Service", "a")
    assert stored is not None
    assert stored["metadata"]["labels"] == {"x": "y"}
    assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.2"}]


def test_merge_patches_with_a_resource_version_are_optimistic_like_the_api_server(
    api: FakeKubeAPI, kube: client.ApiClient
) -> None:
    """What the allocator relies on: a stale resourceVersion is a 409 and writes nothing,
    the status subresource ignores metadata, null removes an annotation."""
    from kvip_bgp.kube.client import request_json

    merge = "application/merge-patch+json"
    status_path = "/api/v1/namespaces/default/services/a/status"
    old = api.put(objects.service("a", annotations={"kvip-bgp.io/ip-allocated-from-pool": "p"}))
    rv = old["metadata"]["resourceVersion"]
    api.put(objects.service("a", labels={"edited": "yes"}))  # someone else writes first
    stale = {"metadata": {"resourceVersion": rv}, "status": {"loadBalancer": {"ingress": []}}}
    for path in (status_path, "/api/v1/namespaces/default/services/a"):
        with pytest.raises(ApiException) as err:
            request_json(kube, "PATCH", path, stale, merge)
        assert err.value.status == 409
        assert json.loads(err.value.body)["reason"] == "Conflict"
    current = api.get("Service", "a")
    assert current is not None
    fresh = current["metadata"]["resourceVersion"]
    body = {
        "metadata": {"resourceVersion": fresh, "annotations": {"ignored": "by /status"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.64"}]}},
    }
    written = request_json(kube, "PATCH", status_path, body, merge)
    assert "ignored" not in written["metadata"]["annotations"]
    assert written["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.64"}]
    release = {
        "metadata": {
            "resourceVersion": written["metadata"]["resourceVersion"],
            "annotations": {"kvip-bgp.io/ip-allocated-from-pool": None},
        }
    }
    path = "/api/v1/namespaces/default/services/a"
    released = request_json(kube, "PATCH", path, release, merge)
    assert "kvip-bgp.io/ip-allocated-from-pool" not in released["metadata"]["annotations"]


def test_create_and_patch_event(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="a.1", namespace="default"),
        involved_object=client.V1ObjectReference(kind="Service", name="a", namespace="default"),
        reason="Announced",
        message="announcing 198.51.100.1",
        type="Normal",
        count=1,
    )
    created = core.create_namespaced_event("default", event)
    assert created.metadata.resource_version
    core.patch_namespaced_event("a.1", "default", {"count": 2})
    [stored] = api.events()
    assert stored["reason"] == "Announced"
    assert stored["count"] == 2
    assert stored["involvedObject"]["name"] == "a"


def test_lease_create_and_conflicting_replace(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(kube)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="kvip-bgp", namespace="kube-system"),
        spec=client.V1LeaseSpec(holder_identity="node-a", lease_duration_seconds=15),
    )
    created = coord.create_namespaced_lease("kube-system", lease)
    with pytest.raises(ApiException) as err:
        coord.create_namespaced_lease("kube-system", lease)
    assert err.value.status == 409
    fetched = coord.read_namespaced_lease("kvip-bgp", "kube-system")
    fetched.spec.holder_identity = "node-b"
    replaced = coord.replace_namespaced_lease("kvip-bgp", "kube-system", fetched)
    assert replaced.spec.holder_identity == "node-b"
    stale = created
    stale.spec.holder_identity = "node-c"
    with pytest.raises(ApiException) as err:
        coord.replace_namespaced_lease("kvip-bgp", "kube-system", stale)
    assert err.value.status == 409
    assert json.loads(err.value.body)["reason"] == "Conflict"
    stored = api.get("Lease", "kvip-bgp", "kube-system")
    assert stored is not None
    assert stored["spec"]["holderIdentity"] == "node-b"


def test_fail_requests(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    api.fail_requests(2, status=500)
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            core.list_node()
        assert err.value.status == 500
    assert core.list_node().items == []


def test_close_watches_ends_the_stream(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    resp = raw_watch(kube)
    assert api.wait_for_watchers(1)
    api.close_watches()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(iter_resp_lines(resp))
    assert time.monotonic() - started < 2
    assert no_watchers_left(api)
    # A graceful close ends the kubernetes Watch loop cleanly when timeout_seconds is set.
    done = threading.Event()

    def consume() -> None:
        list(watch.Watch().stream(client.CoreV1Api(kube).list_node, timeout_seconds=30))
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert api.wait_for_watchers(1, kind="Node")
    api.close_watches(abrupt=False)
    assert done.wait(2)


def test_stall_watches_triggers_read_timeout(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    resp = raw_watch(kube, timeout=(2, 0.3), resource_version=str(api.resource_version))
    api.stall_watches(1.5)
    api.put(service("a"))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        next(iter_resp_lines(resp))
    resp.close()
    # A watch opened during the stall gets nothing, not even headers (urllib3 retries
    # the read timeout a few times, then gives up).
    with pytest.raises(urllib3.exceptions.MaxRetryError) as err:
        raw_watch(kube, timeout=(2, 0.2))
    assert isinstance(err.value.reason, urllib3.exceptions.ReadTimeoutError)
    # Once the stall is over a watch is answered again.
    resp = raw_watch(kube, timeout=(2, 3))
    assert json.loads(next(iter_resp_lines(resp)))["object"]["metadata"]["name"] == "a"
    resp.close()
    # Streams whose client gave up during the stall do not linger as watchers.
    assert no_watchers_left(api)


def test_inject_malformed_line(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    resp = raw_watch(kube, resource_version=str(api.resource_version))
    assert api.wait_for_watchers(1)
    api.inject_malformed_line()
    api.put(service("a"))
    lines = iter_resp_lines(resp)
    assert next(lines) == "{not json"
    assert json.loads(next(lines))["type"] == "ADDED"
    resp.close()


def test_restart_jumps_rv_and_expires_history(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("a"))
    rv = api.resource_version
    resp = raw_watch(kube, resource_version=str(rv))
    assert api.wait_for_watchers(1)
    api.restart(rv_jump=1000)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(iter_resp_lines(resp))
    assert api.resource_version >= rv + 1000
    again = raw_watch(kube, resource_version=str(rv))
    [event] = [json.loads(line) for line in iter_resp_lines(again)]
    assert event["object"]["code"] == 410
    assert client.CoreV1Api(kube).list_namespaced_service("default").items[0].metadata.name == "a"


def test_label_selector_watch_sees_objects_leave(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    api.put(service("a", app="web"))
    resp = raw_watch(kube, label_selector="app=web", resource_version=str(api.resource_version))
    api.put(service("a", app="db"))
    api.put(service("b", app="db"))
    api.put(service("b", app="web"))
    lines = iter_resp_lines(resp)
    got = [json.loads(next(lines)) for _ in range(2)]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in got] == [
        ("DELETED", "a"),
        ("ADDED", "b"),
    ]
    resp.close()


def test_ten_thousand_services_list_fast(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    started = time.monotonic()
    api.put_many(service(f"svc-{i}") for i in range(10_000))
    assert time.monotonic() - started < 2
    http = urllib3.PoolManager()
    started = time.monotonic()
    resp = http.request("GET", f"{api.url}/api/v1/services")
    elapsed = time.monotonic() - started
    body = json.loads(resp.data)
    assert len(body["items"]) == 10_000
    assert body["kind"] == "ServiceList"
    assert elapsed < 0.5


def test_watch_fan_out(api: FakeKubeAPI, kube: client.ApiClient) -> None:
    rv = str(api.resource_version)
    streams = [raw_watch(kube, resource_version=rv) for _ in range(3)]
    assert api.wait_for_watchers(3)
    counts = [0, 0, 0]

    def drain(i: int) -> None:
        for line in iter_resp_lines(streams[i]):
            if line:
                counts[i] += 1
            if counts[i] == 3000:
                return

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    started = time.monotonic()
    for i in range(3000):
        api.put(service(f"s{i}"))
    for t in threads:
        t.join(5)
    assert counts == [3000, 3000, 3000]
    assert time.monotonic() - started < 5
    for s in streams:
        s.close()


def test_stop_closes_watches_promptly(kube: client.ApiClient, api: FakeKubeAPI) -> None:
    resp = raw_watch(kube)
    assert api.wait_for_watchers(1)
    started = time.monotonic()
    api.stop()
    with pytest.raises(urllib3.exceptions.ProtocolError):
        list(iter_resp_lines(resp))
    assert time.monotonic() - started < 2


def test_serves_on_a_given_socket(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    with FakeKubeAPI() as fake:
        pass  # context manager starts and stops on its own
    fake = FakeKubeAPI()
    assert fake.start(sock=sock) == f"http://127.0.0.1:{port}"
    try:
        fake.put(service("a"))
        http = urllib3.PoolManager()
        data = json.loads(http.request("GET", f"{fake.url}/api/v1/services").data)
        assert [i["metadata"]["name"] for i in data["items"]] == ["a"]
    finally:
        fake.stop()


def test_cli_serves_seed_until_sigterm(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(
        "kind: Service\nmetadata: {name: a, namespace: default}\nspec: {type: LoadBalancer}\n"
        "---\nkind: Node\nmetadata: {name: worker-1}\n"
    )
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvip_bgp.testing.fakeapi",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            str(seed),
            "--kubeconfig",
            str(kubeconfig),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        with client.ApiClient(cfg) as kube:
            core = client.CoreV1Api(kube)
            assert [s.metadata.name for s in core.list_service_for_all_namespaces().items] == ["a"]
            assert [n.metadata.name for n in core.list_node().items] == ["worker-1"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
