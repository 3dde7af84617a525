"""The bench's HTTP writer against an in-process fake: what it writes is what the
in-memory writes would have stored (the daemon sees the same objects either way)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.fakeapi_remote import (
    ApiError,
    FakeApiClient,
    InMemoryStore,
    collection_path,
    object_path,
)
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


@pytest.fixture
def client(api: FakeKubeAPI) -> Iterator[FakeApiClient]:
    assert api.url is not None
    writer = FakeApiClient(api.url)
    yield writer
    writer.close()


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """An object without what the server assigns (resourceVersion, uid, timestamps)."""
    meta = {
        k: v
        for k, v in obj["metadata"].items()
        if k not in ("resourceVersion", "uid", "creationTimestamp", "generation")
    }
    return {**obj, "metadata": meta}


def sample_objects() -> list[dict[str, Any]]:
    return [
        node(),
        service("a", "100.64.0.1"),
        endpoint_slice("a", [NODE_NAME]),
        service("b", "100.64.0.2", ingress=["100.64.0.2"], traffic_policy="Local"),
        endpoint_slice("b", [(NODE_NAME, False), ("node-2", True)]),
    ]


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "collection", "path"),
    [
        ("Service", "web", None, "/api/v1/services", "/api/v1/namespaces/default/services/web"),
        (
            "Service",
            "web",
            "x",
            "/api/v1/namespaces/x/services",
            "/api/v1/namespaces/x/services/web",
        ),
        ("Node", "n1", None, "/api/v1/nodes", "/api/v1/nodes/n1"),
        (
            "EndpointSlice",
            "web-a",
            "default",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-a",
        ),
        (
            "Lease",
            "l",
            "kube-system",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases",
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l",
        ),
    ],
)
def test_paths(kind: str, name: str, namespace: str | None, collection: str, path: str) -> None:
    assert collection_path(kind, namespace) == collection
    assert object_path(kind, name, namespace) == path


@pytest.mark.parametrize("how", ["create", "put", "put_many"])
def test_http_writes_store_what_in_memory_writes_store(client: FakeApiClient, how: str) -> None:
    objs = sample_objects()
    reference = FakeKubeAPI()
    InMemoryStore(reference).put_many(objs)
    if how == "put_many":
        client.put_many(objs)
    else:
        for obj in objs:
            getattr(client, how)(obj)
    for kind in ("Node", "Service", "EndpointSlice"):
        want = sorted((comparable(o) for o in reference.items(kind)), key=str)
        got = sorted((comparable(o) for o in client.items(kind)), key=str)
        assert got == want, kind
        assert want


def test_creates_are_single_rest_requests(api: FakeKubeAPI, client: FakeApiClient) -> None:
    api.clear_requests()
    for obj in sample_objects():
        client.create(obj)
    assert api.requests == [
        ("POST", "/api/v1/nodes"),
        ("POST", "/api/v1/namespaces/default/services"),
        ("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
        ("POST", "/api/v1/namespaces/default/services"),
        ("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"),
    ]
    with pytest.raises(ApiError) as error:
        client.create(node())
    assert error.value.status == 409


def test_put_replaces_and_emits_one_event(api: FakeKubeAPI, client: FakeApiClient) -> None:
    client.put(endpoint_slice("a", [NODE_NAME]))
    before = api.resource_version
    client.put(endpoint_slice("a", [(NODE_NAME, False)]))
    assert api.resource_version == before + 1
    (stored,) = api.items("EndpointSlice")
    assert stored["endpoints"][0]["conditions"]["ready"] is False


def test_delete_and_delete_all(api: FakeKubeAPI, client: FakeApiClient) -> None:
    client.put_many(sample_objects())
    client.delete("Service", "a")
    assert [s["metadata"]["name"] for s in api.items("Service")] == ["b"]
    client.delete("Service", "gone")  # absent: not an error
    client.delete_all("EndpointSlice")
    assert api.items("EndpointSlice") == []
    assert len(api.items("Service")) == 1
    with pytest.raises(ApiError):
        client.delete_all("Pod")


def test_the_fake_runs_as_its_own_process(tmp_path: Any) -> None:
    """``python -m kvip_bgp.testing.fakeapi`` serves what the writer sends."""
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvip_bgp.testing.fakeapi", "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert kubeconfig.exists()
        writer = FakeApiClient(url)
        writer.put_many(sample_objects()[:3])
        writer.create(service("c", "100.64.0.3"))
        assert sorted(s["metadata"]["name"] for s in writer.items("Service")) == ["a", "c"]
        writer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
