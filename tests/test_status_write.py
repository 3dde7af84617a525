"""``kube.client.write``: the lean path of the status PATCHes, against a recording server.

It skips the client's serialisation layers and the reply's JSON, so what must not change
is checked against ``request_json`` itself: the same request on the wire (headers, token,
body), the same ``ApiException`` for a refusal, and a token that follows the refresh hook
on every call. The writer on top of it: a 2xx is written whatever its body, a 404 is a
Service gone, another refusal stays pending.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kvip_bgp.kube import client as kube
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.kube.writer import STATUS_WRITE_BATCH, STATUS_WRITES_PER_SECOND, ClusterWriter
from kvip_bgp.runtime.messages import WriteRequest
from kvip_bgp.runtime.workqueue import CoalescingQueue

PATH = "/api/v1/namespaces/default/services/web/status"
BODY = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}


class Recorder(ThreadingHTTPServer):
    """Answers every request with ``status`` and ``reply``; keeps what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 200
        self.reply = b"{}"
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # the reply in one send: no Nagle/delayed-ACK stall between its parts
    server: Recorder

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_PATCH(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.seen.append((self.command, self.path, headers, body))
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.server.reply)))
        self.end_headers()
        self.wfile.write(self.server.reply)


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        recorder.shutdown()
        recorder.server_close()


def _client(server: Recorder, tokens: list[str] | None = None) -> kube.ApiClient:
    configuration = kube.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.api_key = {"authorization": "first"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    if tokens is not None:  # an exec plugin / in-cluster loader: a new token per read

        def refresh(target: kube.Configuration) -> None:
            target.api_key["authorization"] = tokens.pop(0)

        configuration.refresh_api_key_hook = refresh
    return kube.new_api_client(configuration)


def test_the_request_on_the_wire_is_the_clients_own(server: Recorder) -> None:
    api = _client(server)
    kube.request_json(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    kube.write(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    (_m1, p1, h1, b1), (_m2, p2, h2, b2) = server.seen
    assert (p2, json.loads(b2)) == (p1, json.loads(b1)) == (PATH, BODY)
    for name in ("accept", "content-type", "user-agent", "authorization"):
        assert h2.get(name) == h1.get(name), name
    assert h2["authorization"] == "Bearer first"
    assert h2["content-type"] == kube.STRATEGIC_MERGE_PATCH


def test_the_token_is_read_through_the_refresh_hook_on_every_write(server: Recorder) -> None:
    api = _client(server, tokens=["one", "two", "three"])
    for _ in range(3):
        kube.write(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert [h["authorization"] for _m, _p, h, _b in server.seen] == [
        "Bearer one",
        "Bearer two",
        "Bearer three",
    ]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500, 503])
def test_a_refusal_raises_what_request_json_raises(server: Recorder, status: int) -> None:
    api = _client(server)
    server.status = status
    server.reply = b'{"kind":"Status","code":%d}' % status
    with pytest.raises(kube.ApiException) as expected:
        kube.request_json(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    with pytest.raises(kube.ApiException) as raised:
        kube.write(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert type(raised.value) is type(expected.value)
    assert (raised.value.status, raised.value.body) == (status, server.reply.decode())
    server.status = 200  # the connection went back to the pool in a usable state
    kube.write(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)


def _writer(server: Recorder) -> ClusterWriter:
    queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    writer = ClusterWriter(_client(server), "node-a", LeaseSettings("kube-system"), queue)
    writer._pending_status = {"default/web": ("198.51.100.1",)}
    return writer


@pytest.mark.parametrize(
    ("status", "reply", "pending", "written"),
    [
        (200, b"{}", False, True),
        # The reply is not read as JSON: a body the client cannot parse is no failure.
        (200, b"not json", False, True),
        (404, b"{}", False, False),  # the Service is gone: nothing left to write
        (500, b"{}", True, False),  # kept, retried on the next pass
        (409, b"{}", True, False),
    ],
)
def test_the_writer_reads_only_the_status_code(
    server: Recorder, status: int, reply: bytes, pending: bool, written: bool
) -> None:
    writer = _writer(server)
    server.status, server.reply = status, reply
    writer._flush_status()
    assert ("default/web" in writer._pending_status) is pending
    assert ("default/web" in writer._written) is written
    assert len(server.seen) == 1


def test_an_unreachable_api_keeps_the_status_pending_and_the_writer_alive() -> None:
    """A connection error is no ApiException: it used to escape ``_flush_status`` and end
    the writer thread (no more statuses, Events or Lease renewals until a restart)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    configuration = kube.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = 0
    queue: CoalescingQueue[tuple[str, ...], WriteRequest] = CoalescingQueue()
    api = kube.new_api_client(configuration)
    writer = ClusterWriter(api, "node-a", LeaseSettings("kube-system"), queue)
    writer._pending_status = {"default/web": ("198.51.100.1",)}
    writer._flush_status()
    assert writer._pending_status == {"default/web": ("198.51.100.1",)}
    assert writer._written == {}


def test_status_writes_pause_per_batch_and_keep_the_rate(
    server: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pause per STATUS_WRITE_BATCH PATCHes (a wake-up per PATCH cost more CPU than
    the PATCH), long enough that the rate stays STATUS_WRITES_PER_SECOND."""
    writer = _writer(server)
    count = 3 * STATUS_WRITE_BATCH + 5
    writer._pending_status = {f"default/svc-{i}": ("198.51.100.1",) for i in range(count)}
    pauses: list[float] = []
    monkeypatch.setattr(writer._stopping, "wait", lambda timeout: pauses.append(timeout))
    writer._flush_status()
    assert len(server.seen) == count and not writer._pending_status
    assert pauses == [STATUS_WRITE_BATCH / STATUS_WRITES_PER_SECOND] * 3
