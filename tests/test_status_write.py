"""``kube.writes.Writer``: the lean path of the status PATCHes, against a recording server.

It skips the client's serialisation layers and the reply's JSON, so what must not change
is checked against ``request_json`` itself: the same request on the wire (headers, token,
body), the same ``ApiException`` for a refusal, and a token that follows the refresh hook
(run at most once per ``REFRESH_EVERY``). The writer on top of it: a 2xx is written
whatever its body, a 404 is a Service gone, another refusal stays pending.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.kube import client as kube
from kvip_bgp.kube.lease import LeaseSettings
from kvip_bgp.kube.writer import STATUS_WRITE_BATCH, STATUS_WRITES_PER_SECOND, ClusterWriter
from kvip_bgp.kube.writes import Writer
from kvip_bgp.runtime.messages import WriteRequest
from kvip_bgp.runtime.workqueue import CoalescingQueue

PATH = "/api/v1/namespaces/default/services/web/status"
BODY = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}


class Recorder(ThreadingHTTPServer):
    """Answers every request with ``status`` and ``reply`` (a path in ``moved``: a 307 to
    the location given there); keeps what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 200
        self.reply = b"{}"
        self.moved: dict[str, str] = {}
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
        if self.path in self.server.moved:
            self.send_response(307)
            self.send_header("Location", self.server.moved[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
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


class Clock:
    """``time.monotonic`` for the refresh throttle, moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _client(
    server: Recorder, tokens: list[str] | None = None, clock: Clock | None = None
) -> kube.ApiClient:
    configuration = kube.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.api_key = {"authorization": "first"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    if tokens is not None:  # an exec plugin / in-cluster loader: a new token per read

        def refresh(target: kube.Configuration) -> None:
            target.api_key["authorization"] = tokens.pop(0)
            # As both of the client's loaders do: the hook installs itself again.
            target.refresh_api_key_hook = refresh

        configuration.refresh_api_key_hook = refresh
    if clock is None:
        return kube.new_api_client(configuration)
    return kube.new_api_client(configuration, clock=clock)


def test_the_request_on_the_wire_is_the_clients_own(server: Recorder) -> None:
    api = _client(server)
    kube.request_json(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    Writer(api).write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    (_m1, p1, h1, b1), (_m2, p2, h2, b2) = server.seen
    assert (p2, json.loads(b2)) == (p1, json.loads(b1)) == (PATH, BODY)
    for name in ("accept", "content-type", "user-agent", "authorization"):
        assert h2.get(name) == h1.get(name), name
    assert h2["authorization"] == "Bearer first"
    assert h2["content-type"] == kube.STRATEGIC_MERGE_PATCH


@pytest.mark.parametrize(
    ("times", "tokens"),
    [
        # Within REFRESH_EVERY of the last refresh the token read then is sent again.
        ([0.0, 0.5, 0.99], ["one", "one", "one"]),
        ([0.0, 1.0, 1.5, 2.0], ["one", "two", "two", "three"]),
        # Due is counted from the refresh, not from the request before it.
        ([0.0, 0.9, 1.8, 2.1], ["one", "one", "two", "two"]),
        ([5.0, 100.0, 100.2], ["one", "two", "two"]),
    ],
)
def test_the_refresh_hook_runs_at_most_once_per_interval(
    server: Recorder, times: list[float], tokens: list[str]
) -> None:
    assert kube.REFRESH_EVERY == 1.0  # the times above are in its units
    clock = Clock()
    writes = Writer(_client(server, tokens=["one", "two", "three"], clock=clock))
    for now in times:
        clock.now = now
        writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert [h["authorization"] for _m, _p, h, _b in server.seen] == [
        f"Bearer {token}" for token in tokens
    ]


def test_a_refresh_hook_that_fails_runs_again_on_the_next_request(server: Recorder) -> None:
    """As without the throttle: a failed refresh is no refresh, the next request retries."""
    calls: list[float] = []
    clock = Clock()

    def refresh(target: kube.Configuration) -> None:
        calls.append(clock.now)
        if len(calls) == 1:
            raise OSError("token file unreadable")
        target.api_key["authorization"] = "fresh"

    configuration = kube.Configuration()
    configuration.host = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.api_key = {"authorization": "stale"}
    configuration.refresh_api_key_hook = refresh
    writes = Writer(kube.new_api_client(configuration, clock=clock))
    with pytest.raises(OSError):
        writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    clock.now = 0.1
    writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert calls == [0.0, 0.1]
    assert [h["authorization"] for _m, _p, h, _b in server.seen] == ["fresh"]


def test_the_kubeconfig_loaders_hook_stays_throttled(server: Recorder, tmp_path: Path) -> None:
    """The loader's hook installs a fresh closure of itself on each call: the throttle
    must take that one over and stay installed, or every later request pays again."""
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": url}}],
                "users": [{"name": "u", "user": {"token": "kc-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    clock = Clock()
    api = kube.new_api_client(kube.load_configuration(kubeconfig), clock=clock)
    writes = Writer(api)
    for now in (0.0, 0.5, 1.5):
        clock.now = now
        writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
        assert isinstance(api.configuration.refresh_api_key_hook, kube.RefreshAtMostEvery)
    assert [h["authorization"] for _m, _p, h, _b in server.seen] == ["Bearer kc-token"] * 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 500, 503])
def test_a_refusal_raises_what_request_json_raises(server: Recorder, status: int) -> None:
    api = _client(server)
    server.status = status
    server.reply = b'{"kind":"Status","code":%d}' % status
    with pytest.raises(kube.ApiException) as expected:
        kube.request_json(api, "PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    writes = Writer(api)
    with pytest.raises(kube.ApiException) as raised:
        writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert type(raised.value) is type(expected.value)
    assert (raised.value.status, raised.value.body) == (status, server.reply.decode())
    server.status = 200  # the connection went back to the pool in a usable state
    writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)


def _wire(server: Recorder, path: str, host: str = "", proxy: str | None = None) -> list[Any]:
    """What ``request_json`` and then ``Writer.write`` put on the wire for one PATCH."""
    configuration = kube.Configuration()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    configuration.host = host.format(url=url) or url
    if proxy is not None:
        configuration.proxy = proxy.format(url=url)
    configuration.api_key = {"authorization": "Bearer t"}
    api = kube.new_api_client(configuration)
    kube.request_json(api, "PATCH", path, BODY, kube.STRATEGIC_MERGE_PATCH)
    Writer(api).write("PATCH", path, BODY, kube.STRATEGIC_MERGE_PATCH)
    return server.seen


@pytest.mark.parametrize(
    ("path", "host", "proxy"),
    [
        (PATH, "", None),  # the pool taken once
        # parse_url rewrites these: the manager sends them, as before.
        ("/api/v1/namespaces/default/services/a%20b/status", "", None),
        ("/api/v1/namespaces/default/services/../status", "", None),
        ("/api/v1/namespaces/default/services/web/status?x=1", "", None),
        # A server URL with a path (as behind Rancher's proxy), one with a query.
        (PATH, "{url}/k8s/clusters/c-1", None),
        (PATH, "{url}/?q", None),
        # Through an HTTP proxy: an absolute URL in the request line.
        (PATH, "http://kube.invalid:6443", "{url}"),
    ],
)
def test_a_write_sends_the_request_the_pool_manager_sends(
    server: Recorder, path: str, host: str, proxy: str | None
) -> None:
    (_m1, p1, h1, b1), (_m2, p2, h2, b2) = _wire(server, path, host, proxy)
    assert (p2, json.loads(b2)) == (p1, json.loads(b1))
    assert h2 == h1


def test_a_redirect_is_followed_as_the_pool_manager_follows_it(server: Recorder) -> None:
    """The pool path does not follow it: the manager is asked, which sends the PATCH to
    the old location once more (API servers do not redirect writes)."""
    server.moved = {PATH: "/moved"}
    seen = _wire(server, PATH)
    assert [p for _m, p, _h, _b in seen] == [PATH, "/moved", PATH, PATH, "/moved"]
    (_m1, _p1, h1, b1), (_m2, _p2, h2, b2) = seen[1], seen[4]
    assert (h2, b2) == (h1, b1)


def test_a_pool_closed_under_the_writer_is_taken_again(server: Recorder) -> None:
    """urllib3 2.8 drops pools without closing them (``ApiClient.close`` clears the
    manager); one that closed them must not stop the writer: its connection is its own,
    never handed back to the pool, and every write still lands once."""
    api = _client(server)
    writes = Writer(api)
    writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    manager = api.rest_client.pool_manager
    kept = manager.connection_from_url(f"http://127.0.0.1:{server.server_address[1]}")
    manager.clear()
    kept.close()
    writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    writes.write("PATCH", PATH, BODY, kube.STRATEGIC_MERGE_PATCH)
    assert [p for _m, p, _h, _b in server.seen] == [PATH] * 3


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
