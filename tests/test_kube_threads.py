"""The Kubernetes threads own what they use: their API client, their responses, replies.

Against the fake API server: a stream thread closes its own watch response (``stop`` only
signals and wakes the read); every thread refreshes the token in a configuration of its
own; an explain answer crosses back in a one-shot box.
"""

from __future__ import annotations

import queue
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.configfile.load import load
from kvip_bgp.domain.explain import Explanation
from kvip_bgp.domain.objects import ObjectKey, parse_service
from kvip_bgp.kube import watch
from kvip_bgp.kube.client import Configuration, load_api_client, load_configuration
from kvip_bgp.kube.threads import start_kubernetes
from kvip_bgp.kube.watch import Resource, ResourceStream, WatchTimeouts
from kvip_bgp.runtime.cluster import ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import ClusterStop, ExplainRequest, Listed, ReplyBox
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.scenario import service


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI() as fake:
        yield fake


@dataclass(frozen=True)
class RecordingResource(Resource):
    """Hands out real responses and records which thread closes, releases or shuts each."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def get(self, query: Sequence[tuple[str, str]], timeout: tuple[float, float]) -> Any:
        response = super().get(query, timeout)
        kind = "watch" if dict(query).get("watch") else "list"
        for name in ("close", "release_conn", "shutdown"):
            original = getattr(response, name)
            setattr(response, name, self._recorder(kind, name, original))
        return response

    def _recorder(self, kind: str, name: str, original: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            self.calls.append((kind, name, threading.current_thread().name))
            return original()

        return call


def test_stop_wakes_the_watch_and_the_stream_closes_its_own_response(
    api: FakeKubeAPI, tmp_path: Path
) -> None:
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    resource = RecordingResource(
        "services", load_api_client(kubeconfig), "/api/v1/services", parse_service
    )
    # No event comes, and the read timeout is far away: only stop() can end the read.
    stream = ResourceStream(
        resource, lambda event: None, lambda res, why: None, WatchTimeouts(read_seconds=60)
    )
    stream.start()
    assert api.wait_for_watchers(1, "Service")
    stream.stop()
    stream.join(5)
    assert not stream.is_alive(), "stop did not end the blocked watch read"
    watch = [(name, thread) for kind, name, thread in resource.calls if kind == "watch"]
    # The stopping thread only woke the read; the stream thread closed its response.
    assert {name for name, thread in watch if thread != stream.name} <= {"shutdown"}, watch
    # Its last word on it: closed, not handed back to the pool as if it were reusable.
    assert watch[-1] == ("close", stream.name), watch


def test_the_stream_decodes_the_watch_itself_and_its_connection_serves_the_next(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real watch response is read by ``raw_reads`` (urllib3's decoding is never
    used), and after a watch ends cleanly its connection takes the next request: the
    list and both watches run on one connection, with no stream error."""

    def through_urllib3(response: Any) -> Any:
        raise AssertionError("the watch was decoded by urllib3, not by raw_reads")

    monkeypatch.setattr(watch, "chunk_reads", through_urllib3)
    client = load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
    resource = RecordingResource("services", client, "/api/v1/services", parse_service)
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    restarts: list[str] = []
    stream = ResourceStream(
        resource,
        events.put,
        lambda res, why: restarts.append(why),
        WatchTimeouts(read_seconds=60),
    )
    stream.start()
    try:
        assert isinstance(events.get(timeout=5), Listed)
        assert api.wait_for_watchers(1, "Service")
        api.put(service("a", "198.51.100.1"))
        assert events.get(timeout=5).object.key.name == "a"
        assert api.close_watches(abrupt=False) == 1  # as after timeoutSeconds
        wait_until(lambda: ("watch", "release_conn", stream.name) in resource.calls, 5)
        api.put(service("b", "198.51.100.2"))
        assert events.get(timeout=5).object.key.name == "b"
    finally:
        stream.stop()
        stream.join(5)
    assert restarts == []
    pool = client.rest_client.pool_manager.connection_from_url(client.configuration.host)
    assert pool.num_connections == 1


def kube_config(tmp_path: Path, kubeconfig: Path) -> Any:
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            node_name: node-1
            bgp:
              asn: 64512
              router_id: 192.0.2.1
              peers: [{{address: 192.0.2.2, asn: 64500}}]
            vips: {{allowed: ["198.51.100.0/24"], interface: null}}
            kubernetes: {{enabled: true, kubeconfig: {str(kubeconfig)!r}}}
            """
        )
    )
    return load(path)


def test_each_kube_thread_refreshes_the_token_in_its_own_configuration(
    api: FakeKubeAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token refresh writes the configuration: a shared one is written by four threads.

    Every request reads its token through ``get_api_key_with_prefix``, which runs the
    refresh hook on that configuration; recorded here per configuration and thread.
    """
    api.put(service("web", "198.51.100.10"))
    kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig")
    configuration = load_configuration(kubeconfig)
    assert configuration.refresh_api_key_hook is not None, "the fake's kubeconfig has a token"
    seen: dict[int, set[str]] = {}
    lock = threading.Lock()
    read_key = Configuration.get_api_key_with_prefix

    def recording(target: Configuration, identifier: str, alias: str | None = None) -> Any:
        with lock:
            seen.setdefault(id(target), set()).add(threading.current_thread().name)
        return read_key(target, identifier, alias)

    monkeypatch.setattr(Configuration, "get_api_key_with_prefix", recording)
    synced = threading.Event()
    threads = start_kubernetes(
        kube_config(tmp_path, kubeconfig),
        configuration,
        lambda vip, advert: None,
        synced.set,
        Metrics(),
        Snapshot(ClusterStatus()),
        lambda: False,
    )
    try:
        assert synced.wait(10), "the cluster thread never synced"
        wait_until(
            lambda: api.get("Lease", "kvip-bgp-status-writer", "kube-system") is not None,
            5,
            what="the writer took the lease",
        )
    finally:
        threads.stop()
    with lock:
        users = {key: set(names) for key, names in seen.items()}
    assert id(configuration) not in users, "a thread used the loaded configuration itself"
    assert all(len(names) == 1 for names in users.values()), users
    assert {name for names in users.values() for name in names} == {
        "stream-services",
        "stream-endpointslices",
        "stream-nodes",
        "cluster-writer",
    }


# -- explain: the reply box -------------------------------------------------------------


def test_reply_box_is_written_once_and_read_once() -> None:
    box: ReplyBox[str] = ReplyBox()
    assert box.get(0.05) is None  # nothing yet: the asker gives up after its timeout
    box.put("answer")
    assert box.get(0.05) == "answer"
    with pytest.raises(RuntimeError, match="written twice"):
        box.put("another")


def test_the_cluster_thread_answers_an_explain_request(tmp_path: Path) -> None:
    config = kube_config(tmp_path, tmp_path / "unused-kubeconfig")
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    cluster = ClusterState(
        config, events, lambda vip, advert: None, lambda: None, Metrics(), Snapshot(ClusterStatus())
    )
    thread = threading.Thread(target=cluster.run, name="cluster-state", daemon=True)
    thread.start()
    try:
        box: ReplyBox[Explanation] = ReplyBox()
        events.put(ExplainRequest(ObjectKey("default", "web"), box))
        answer = box.get(5)
        assert isinstance(answer, Explanation)
    finally:
        events.put(ClusterStop())
        thread.join(5)
