"""``kube.http11``: the status writer's own HTTP/1.1 framing, strict both ways.

Requests: a value that could break the framing is refused, never sent. Replies: any cut
of the bytes gives the same reply; whatever is not valid HTTP/1.1 is an error (and the
connection is dropped), never a guess. Against the fake API over HTTP and HTTPS: the
connection urllib3 opened takes request after request.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import urllib3
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.client import STRATEGIC_MERGE_PATCH, load_api_client
from kvip_bgp.kube.http11 import Http11Connection, Http11Error, Reply, ReplyReader, request_bytes
from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.objects import service
from kvip_bgp.testing.tls import make_certs


def test_a_request_is_framed_with_its_length_and_our_host() -> None:
    data = request_bytes(
        "PATCH",
        "/api/v1/namespaces/a/services/b/status",
        "api:6443",
        {"Authorization": "Bearer t", "Content-Length": "999", "Host": "evil", "X": "1"},
        b'{"a":1}',
    )
    assert data == (
        b"PATCH /api/v1/namespaces/a/services/b/status HTTP/1.1\r\nHost: api:6443\r\n"
        b"Accept-Encoding: identity\r\n"
        b"Authorization: Bearer t\r\nX: 1\r\nContent-Length: 7\r\n\r\n"
        b'{"a":1}'
    )


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("PATCH", "/a b", {}),
        ("PATCH", "/a\r\nX: y", {}),
        ("PATCH", "a", {}),  # not origin-form
        ("PA TCH", "/a", {}),
        ("PATCH", "/a", {"Authorization": "Bearer t\r\nX-Injected: 1"}),
        ("PATCH", "/a", {"Bad Name": "v"}),
        ("PATCH", "/a", {"X": "nul\0"}),
    ],
)
def test_a_value_that_could_break_the_framing_is_refused(
    method: str, target: str, headers: dict[str, str]
) -> None:
    with pytest.raises(ValueError, match="refusing"):
        request_bytes(method, target, "api", headers, b"")


class _Pieces:
    """A socket's ``recv`` that returns the given pieces, then end of stream."""

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self.pieces = list(pieces)

    def __call__(self, size: int) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""


def _read(data: bytes, method: str = "PATCH") -> tuple[Reply, bool]:
    return ReplyReader(_Pieces([data])).read(method)


@pytest.mark.parametrize(
    ("data", "status", "body", "keep"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, b"{}", True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            200,
            b"{}",
            True,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            201,
            b"",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
        (
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nno!",
            404,
            b"no!",
            False,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 200, b"", False),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 200, b"until the end", False),
        (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 200, b"", True),  # no reason phrase
    ],
)
def test_replies_table(data: bytes, status: int, body: bytes, keep: bool) -> None:
    reply, kept = _read(data)
    assert (reply.status, reply.body, kept) == (status, body, keep)


def test_a_head_reply_has_no_body_whatever_its_length() -> None:
    reply, keep = _read(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", method="HEAD")
    assert (reply.body, keep) == (b"", True)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"HTTP/2 200 OK\r\n\r\n", "bad status line"),
        (b"ICY 200 OK\r\n\r\n", "bad status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "bad header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", "ended inside a reply"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}", "ended inside"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "bad chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, "header section over"),
        (b"HTTP/1.1 200 OK", "ended inside a reply"),
    ],
)
def test_what_is_not_http11_is_an_error(data: bytes, error: str) -> None:
    with pytest.raises(Http11Error, match=error):
        _read(data)


REPLIES = [
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}',
    b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nT: 1\r\n\r\n",
]


@given(which=st.sampled_from(REPLIES), cuts=st.lists(st.integers(0, 200), max_size=30))
def test_any_cut_of_a_reply_reads_the_same(which: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(which), *(c for c in cuts if c <= len(which))})
    pieces = [which[a:b] for a, b in itertools.pairwise(points)]
    assert ReplyReader(_Pieces(pieces)).read("PATCH") == _read(which)


# ----------------------------------------------------------- against the fake API


def _https(tmp_path: Path) -> tuple[FakeKubeAPI, str, Path]:
    """The fake API over HTTPS with a certificate for ``localhost``; its CA's file."""
    certs = make_certs(tmp_path / "pki", name="localhost")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(certs.cert, certs.key)
    api = FakeKubeAPI()
    return api, api.start(tls=tls), certs.ca


def _connection_to(api: FakeKubeAPI, url: str, tmp_path: Path, ca: Path | None) -> Http11Connection:
    """Our connection on the pool a client of the fake's kubeconfig keeps; over HTTPS
    with ``ca`` as the client's CA."""
    client = load_api_client(api.write_kubeconfig(tmp_path / "kubeconfig"))
    if ca is not None:
        client.configuration.host = url.replace("127.0.0.1", "localhost")
        client.configuration.ssl_ca_cert = str(ca)
        client = type(client)(client.configuration)  # a pool manager with that CA
    host = client.configuration.host
    pool = client.rest_client.pool_manager.connection_from_url(host)
    return Http11Connection(pool, host.split("://", 1)[1])


@pytest.fixture(params=["http", "https"])
def api_and_client(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[FakeKubeAPI, Http11Connection]]:
    if request.param == "https":
        api, url, trusted = _https(tmp_path)
        ca: Path | None = trusted
    else:
        api, ca = FakeKubeAPI(), None
        url = api.start()
    try:
        yield api, _connection_to(api, url, tmp_path, ca)
    finally:
        api.stop()


def test_status_patches_go_out_one_after_another_on_one_connection(
    api_and_client: tuple[FakeKubeAPI, Http11Connection],
) -> None:
    api, connection = api_and_client
    for name in ("a", "b"):
        api.put(service(name, "198.51.100.1"))
    replies = []
    for name in ("a", "b", "missing"):
        body = {"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}}
        replies.append(
            connection.exchange(
                "PATCH",
                f"/api/v1/namespaces/default/services/{name}/status",
                {"Accept": "application/json", "Content-Type": STRATEGIC_MERGE_PATCH},
                json.dumps(body).encode(),
                (5.0, 10.0),
            )
        )
    assert [r.status for r in replies] == [200, 200, 404]
    stored = api.get("Service", "b")
    assert stored is not None and stored["status"]["loadBalancer"]["ingress"] == [
        {"ip": "198.51.100.1"}
    ]
    assert api.connections_accepted() == 1, "every exchange used the same connection"


def test_pipelined_replies_are_read_with_a_few_pauses_not_one_each(
    api_and_client: tuple[FakeKubeAPI, Http11Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake, like an API server, flushes each reply: over TLS each is a record of its
    own, and a read gives one record. The reader reads on while the socket holds more,
    so 40 replies take a few of the 5 ms pauses before a read, not 40."""
    api, connection = api_and_client
    for i in range(40):
        api.put(service(f"s{i}", "198.51.100.1"))
    pauses: list[float] = []
    real_sleep = time.sleep

    def counted(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("kvip_bgp.kube.http11.time.sleep", counted)
    body = json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}})
    headers = {"Accept": "application/json", "Content-Type": STRATEGIC_MERGE_PATCH}
    requests = [
        (f"/api/v1/namespaces/default/services/s{i}/status", headers, body.encode())
        for i in range(40)
    ]
    connection.exchange("GET", "/api/v1/services", {}, b"", (5.0, 10.0))  # connected
    pauses.clear()
    replies = connection.exchange_many("PATCH", requests, (5.0, 10.0), gather=0.005)
    assert [r.status if r else None for r in replies] == [200] * 40
    assert 1 <= len(pauses) <= 8, pauses


def test_a_server_whose_certificate_the_client_does_not_trust_gets_no_request(
    tmp_path: Path,
) -> None:
    """The handshake is urllib3's, with the client's CA: a certificate from another CA
    fails it, and nothing is sent."""
    other = make_certs(tmp_path / "other", name="localhost")
    api, url, _ = _https(tmp_path)
    try:
        connection = _connection_to(api, url, tmp_path, other.ca)
        with pytest.raises(ssl.SSLCertVerificationError):
            connection.exchange("GET", "/api/v1/services", {}, b"", (5.0, 5.0))
        assert api.requests == []
    finally:
        api.stop()


CLOSING = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"


class _Script:
    """A TCP server whose n-th connection follows the n-th script: for each request,
    ``reply`` answers it (kept alive), ``close`` answers it with ``Connection: close``
    and closes, ``drop`` reads it and closes without a word; after the last step the
    connection is closed (as an idle timeout would)."""

    def __init__(self, scripts: Sequence[Sequence[str]]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.scripts = list(scripts)
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request line)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        for number, script in enumerate(self.scripts):
            conn, _ = self.listener.accept()
            with conn:
                reader = conn.makefile("rb")
                for step in script:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        head += reader.readline()
                    length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    reader.read(length)
                    self.requests.append((number, head.split(b"\r\n")[0]))
                    if step == "reply":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    else:
                        if step == "close":
                            conn.sendall(CLOSING)
                        break
                reader.close()


def _connection(server: _Script) -> Http11Connection:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", int(server.host.rsplit(":", 1)[1]))
    return Http11Connection(pool, server.host)


def _patch(connection: Http11Connection, name: str) -> int:
    return connection.exchange("PATCH", f"/{name}", {}, b"{}", (2.0, 2.0)).status


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    server = _Script([["reply"], ["reply"]])
    connection = _connection(server)
    assert _patch(connection, "a") == 200
    time.sleep(0.2)  # the server closes its end meanwhile
    assert _patch(connection, "b") == 200
    assert server.requests == [(0, b"PATCH /a HTTP/1.1"), (1, b"PATCH /b HTTP/1.1")]


def test_a_reused_connection_closed_under_a_request_sends_it_once_more() -> None:
    server = _Script([["reply", "drop"], ["reply"]])
    connection = _connection(server)
    assert _patch(connection, "a") == 200
    assert _patch(connection, "b") == 200  # dropped unanswered on 0, answered on 1
    assert server.requests == [
        (0, b"PATCH /a HTTP/1.1"),
        (0, b"PATCH /b HTTP/1.1"),
        (1, b"PATCH /b HTTP/1.1"),
    ]


def test_a_new_connection_closed_unanswered_is_an_error_not_a_retry() -> None:
    server = _Script([["drop"], ["reply"]])
    connection = _connection(server)
    with pytest.raises(Http11Error, match="ended inside a reply"):
        _patch(connection, "a")
    assert server.requests == [(0, b"PATCH /a HTTP/1.1")]
