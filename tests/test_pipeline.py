"""Pipelined status PATCHes: ``Http11Connection.exchange_many`` and ``Writer.write_many``.

Replies are matched to requests by order; what the server did not answer is None (the
writer keeps it pending) unless it said so before reading it (``Connection: close``:
the rest go again on a new connection); a kept-alive connection the server closed
while idle sends the whole batch once more; a new connection that fails is an error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import urllib3

from kvip_bgp.kube import client as kube
from kvip_bgp.kube.client import STRATEGIC_MERGE_PATCH
from kvip_bgp.kube.http11 import Http11Connection, Http11Error
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.kube.writer import ClusterWriter
from kvip_bgp.kube.writes import NotAnswered, Writer
from kvip_bgp.runtime.messages import WriteRequest
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.objects import service
from tests.test_http11 import _connection, _connection_to, _https, _Script

BODY = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}})
HEADERS = {"Accept": "application/json", "Content-Type": STRATEGIC_MERGE_PATCH}


def _requests(*names: str) -> list[tuple[str, dict[str, str], bytes]]:
    return [(f"/{name}", HEADERS, BODY.encode()) for name in names]


def _statuses(connection: Http11Connection, *names: str) -> list[int | None]:
    replies = connection.exchange_many("PATCH", _requests(*names), (2.0, 2.0), gather=0.005)
    return [None if reply is None else reply.status for reply in replies]


def test_pipelined_patches_are_answered_in_order_on_one_connection(tmp_path: Path) -> None:
    for scheme in ("http", "https"):
        (tmp_path / scheme).mkdir()
        if scheme == "https":
            api, url, ca = _https(tmp_path / scheme)
        else:
            api, ca = FakeKubeAPI(), None
            url = api.start()
        try:
            connection = _connection_to(api, url, tmp_path / scheme, ca)
            for name in ("a", "b", "c"):
                api.put(service(name, "198.51.100.9"))
            names = ("a", "missing", "b", "c")
            requests = [
                (f"/api/v1/namespaces/default/services/{name}/status", HEADERS, BODY.encode())
                for name in names
            ]
            replies = connection.exchange_many("PATCH", requests, (5.0, 10.0), gather=0.005)
            assert [r.status if r else None for r in replies] == [200, 404, 200, 200], scheme
            for name in ("a", "b", "c"):
                stored = api.get("Service", name)
                assert stored is not None
                assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.1"}]
            assert api.connections_accepted() == 1, scheme
        finally:
            api.stop()


def test_what_follows_a_closing_reply_goes_again_on_a_new_connection() -> None:
    server = _Script([["reply", "close"], ["reply", "reply"]])
    assert _statuses(_connection(server), "a", "b", "c", "d") == [200, 200, 200, 200]
    assert server.requests == [
        (0, b"PATCH /a HTTP/1.1"),
        (0, b"PATCH /b HTTP/1.1"),
        (1, b"PATCH /c HTTP/1.1"),
        (1, b"PATCH /d HTTP/1.1"),
    ]


def test_a_connection_dropped_after_a_reply_leaves_the_rest_unanswered() -> None:
    """No retry: the dropped request may have been applied; the caller sends it again."""
    server = _Script([["reply", "drop"], ["reply"]])
    assert _statuses(_connection(server), "a", "b", "c") == [200, None, None]
    assert server.requests[:2] == [(0, b"PATCH /a HTTP/1.1"), (0, b"PATCH /b HTTP/1.1")]
    assert all(number == 0 for number, _ in server.requests), "nothing on a new connection"


def test_a_batch_on_a_connection_closed_while_idle_goes_once_more() -> None:
    server = _Script([["reply"], ["reply", "reply"]])
    connection = _connection(server)
    assert _statuses(connection, "a") == [200]
    time.sleep(0.2)  # the server closes its end meanwhile
    assert _statuses(connection, "b", "c") == [200, 200]
    assert server.requests == [
        (0, b"PATCH /a HTTP/1.1"),
        (1, b"PATCH /b HTTP/1.1"),
        (1, b"PATCH /c HTTP/1.1"),
    ]


def test_a_new_connection_closed_unanswered_is_an_error() -> None:
    server = _Script([["drop"], ["reply", "reply"]])
    try:
        _statuses(_connection(server), "a", "b")
    except Http11Error as error:
        assert "ended inside a reply" in str(error)
    else:
        raise AssertionError("no error")
    assert [number for number, _ in server.requests] == [0]


def test_write_many_gives_each_write_its_outcome(tmp_path: Path) -> None:
    api = FakeKubeAPI()
    api.start()
    try:
        client = kube.load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
        api.put(service("a", "198.51.100.9"))
        writes = [
            (f"/api/v1/namespaces/default/services/{name}/status", json.loads(BODY))
            for name in ("a", "gone", "a")
        ]
        results = Writer(client).write_many("PATCH", writes, STRATEGIC_MERGE_PATCH)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], kube.ApiException) and results[1].status == 404
        assert api.connections_accepted() == 1
    finally:
        api.stop()


def test_write_many_when_the_api_is_unreachable() -> None:
    """Pipelined, nothing was answered: every write has the error. One by one (a path
    our connection does not take, here with an escape), nothing after the first error
    is sent: the rest are NotAnswered, as the writer stopped its pass at an error."""
    configuration = kube.Configuration()
    configuration.host = "http://127.0.0.1:9"  # discard: nothing listens
    configuration.retries = 0
    writer = Writer(kube.new_api_client(configuration))
    plain = [(f"/api/v1/namespaces/default/services/{n}/status", {}) for n in "abc"]
    first, *rest = writer.write_many("PATCH", plain)
    assert isinstance(first, urllib3.exceptions.NewConnectionError) and rest == [first, first]
    escaped = [(f"/api/v1/namespaces/default/services/{n}%2Dx/status", {}) for n in "abc"]
    first, *rest = writer.write_many("PATCH", escaped)
    assert first is not None and not isinstance(first, NotAnswered)
    assert all(isinstance(result, NotAnswered) for result in rest)


def test_the_status_writer_pipelines_its_batch_and_drops_what_is_gone(tmp_path: Path) -> None:
    api = FakeKubeAPI()
    api.start()
    try:
        client = kube.load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
        for name in ("a", "b"):
            api.put(service(name, "198.51.100.9"))
        queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
        writer = ClusterWriter(client, "node-a", LeaseSettings("kube-system"), queue)
        writer._pending_status = {
            f"default/{name}": ("198.51.100.9",) for name in ("a", "gone", "b")
        }
        assert writer._flush_status() is False
        assert writer._pending_status == {}
        assert sorted(writer._written) == ["default/a", "default/b"]
        for name in ("a", "b"):
            stored = api.get("Service", name)
            assert stored is not None
            assert stored["status"]["loadBalancer"]["ingress"] == [{"ip": "198.51.100.9"}]
        patches = [r for r in api.requests if r[0] == "PATCH"]
        assert len(patches) == 3 and api.connections_accepted() == 1
    finally:
        api.stop()
