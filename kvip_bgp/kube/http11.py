"""A lean HTTP/1.1 exchange on one kept-alive connection, for the status writer's PATCHes.

Why our own: the Lease holder writes one status PATCH per Service (10,000 in a burst of
10,000), and through urllib3 and ``http.client`` each cost ~300 µs of the writer
thread's CPU against the fake API, of which sending the request and reading the reply
on the socket are ~26 µs; the rest is their layers (URL and header parsing, the
``email`` header parser, retries, wrappers), measured per PATCH in one process. This
module frames the request and parses the reply itself, strictly, and nothing else: the
connection is opened by urllib3 (``Http11Connection.open``), so TLS, the CA, client
certificates and hostname checks are exactly the client's; a proxy is not supported
here (the writer then stays on urllib3). Any error closes the connection: the next
request opens a new one, and nothing half-read is ever reused.
"""

from __future__ import annotations

import re
import select
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kvip_bgp.kube.chunked import ChunkedBody

MAX_HEADER_BYTES: Final = 65536  # the whole status line and header section
MAX_BODY_BYTES: Final = 16 << 20  # a reply we read and discard; a Service is far smaller
READ_SIZE: Final = 1 << 16
_STATUS: Final = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: ([^\r\n]*))?")
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110)
_TARGET: Final = re.compile(r"/[!-~]*")  # an origin-form request target, no spaces
_OURS: Final = frozenset(  # framing headers only request_bytes writes
    ("host", "accept-encoding", "content-length", "transfer-encoding", "connection")
)


class Http11Error(ConnectionError):
    """The reply is not valid HTTP/1.1 or the connection ended inside it."""


@dataclass(frozen=True)
class Reply:
    """A reply's status line, headers (names lower-cased) and body."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def data(self) -> bytes:
        """The body, by the name ``ApiException`` reads it under."""
        return self.body


def request_bytes(
    method: str, target: str, host: str, headers: Mapping[str, str], body: bytes
) -> bytes:
    """The request's bytes; a value that could break the framing is refused, not sent.

    ``headers`` come from the client's configuration (the token, the User-Agent) and the
    target from ``api_path`` (percent-encoded): neither should ever hold a CR or LF, and
    if one does the request must not go out with a header of someone else's making.
    """
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise ValueError(f"refusing to send {method!r} {target[:80]!r}")
    # The reply is read as it comes: no content coding (http.client says the same).
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept-Encoding: identity"]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"refusing to send header {name[:40]!r}")
        if name.lower() not in _OURS:
            lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class ReplyReader:
    """Reads one reply at a time with ``read1`` (a socket's ``recv``).

    ``waiting`` says whether the socket holds more bytes now: over TLS a read gives one
    record, and a server that flushes each reply sends a record per reply, so a read
    goes on while more waits. Without, each pipelined reply cost a ``pause`` and a
    wake-up of its own: 1,720 of the writer's wake-ups in a burst of 10,000 in-cluster,
    against 336 over HTTP (docs/performance.md).
    """

    def __init__(self, read1: Any, waiting: Callable[[], bool] = lambda: False) -> None:
        self._read1 = read1
        self._waiting = waiting
        self._buffer = b""
        self.received = 0  # bytes of the replies read so far
        # Seconds to sleep before each read, while pipelined replies come in: a read
        # then takes all that came meanwhile, not one reply per wake-up.
        self.pause = 0.0

    def _more(self) -> None:
        if self.pause > 0:
            time.sleep(self.pause)
        data = self._read1(READ_SIZE)
        if not data:
            raise Http11Error("the connection ended inside a reply")
        while (
            len(data) < READ_SIZE
            and self._waiting()
            and (more := self._read1(READ_SIZE - len(data)))
        ):
            data += more  # (an empty read is the end: the next read says so)
        self.received += len(data)
        self._buffer += data

    def read(self, method: str) -> tuple[Reply, bool]:
        """The next final reply and whether the connection may take another request."""
        while True:
            head = self._head()
            match = _STATUS.fullmatch(head[0])
            if match is None:
                raise Http11Error(f"bad status line {head[0][:60]!r}")
            status = int(match.group(2))
            headers = tuple(_header(line) for line in head[1:])
            if status >= 200:
                break  # 1xx: an interim reply (we never ask for one); the real one follows
        fields = dict(headers)
        connection = fields.get("connection", "").lower()
        keep = match.group(1) == b"1" and "close" not in connection
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in fields:
            body = self._exactly(_length(fields["content-length"]))
        else:
            body, keep = self._to_the_end(), False
        reason = (match.group(3) or b"").decode("latin-1")
        return Reply(status, reason, headers, body), keep

    def _head(self) -> list[bytes]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise Http11Error(f"reply header section over {MAX_HEADER_BYTES} bytes")
            self._more()
        if end > MAX_HEADER_BYTES:
            raise Http11Error(f"reply header section over {MAX_HEADER_BYTES} bytes")
        head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
        return head.split(b"\r\n")

    def _exactly(self, length: int) -> bytes:
        while len(self._buffer) < length:
            self._more()
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return body

    def _chunked(self) -> bytes:
        """A chunked body; bytes after its end would be a reply never asked for: an error."""
        decoder = ChunkedBody()
        parts: list[bytes] = []
        size = 0
        data, self._buffer = self._buffer, b""
        while True:
            if data:
                try:
                    piece = decoder.feed(data)
                except ValueError as error:
                    raise Http11Error(str(error)) from error
                parts.append(piece)
                size += len(piece)
                if size > MAX_BODY_BYTES:
                    raise Http11Error(f"reply body over {MAX_BODY_BYTES} bytes")
                if decoder.done:
                    return b"".join(parts)
            data = self._read1(READ_SIZE)
            if not data:
                raise Http11Error("the connection ended inside a chunked reply")
            self.received += len(data)

    def _to_the_end(self) -> bytes:
        parts = [self._buffer]
        self._buffer = b""
        while data := self._read1(READ_SIZE):
            parts.append(data)
            if sum(map(len, parts)) > MAX_BODY_BYTES:
                raise Http11Error(f"reply body over {MAX_BODY_BYTES} bytes")
        return b"".join(parts)


def readable(sock: socket.socket) -> Callable[[], bool]:
    """Whether ``sock`` holds bytes to read now: decrypted ones TLS keeps (``pending``)
    or any in the kernel's buffer (a ``poll`` that does not wait)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    pending = getattr(sock, "pending", None)
    if pending is None:
        return lambda: bool(poller.poll(0))
    return lambda: pending() > 0 or bool(poller.poll(0))


def _header(line: bytes) -> tuple[str, str]:
    name, colon, value = line.partition(b":")
    text = name.decode("latin-1")
    if not colon or not _TOKEN.fullmatch(text):
        raise Http11Error(f"bad header line {line[:60]!r}")
    return text.lower(), value.strip(b" \t").decode("latin-1")


def _length(value: str) -> int:
    if not value.isdigit() or len(value) > 12:
        raise Http11Error(f"bad Content-Length {value[:20]!r}")
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise Http11Error(f"reply body over {MAX_BODY_BYTES} bytes")
    return length


class _Unanswered(Exception):
    """The connection ended before any byte of the reply (``error`` says how)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class Http11Connection:
    """One kept-alive connection of the writer thread, opened by urllib3 when needed.

    ``pool`` is urllib3's connection pool for the API host: its ``_new_conn`` builds a
    connection with the pool's TLS settings, and its ``connect`` does the handshake and
    the certificate checks. We then speak on its socket and never hand it back.

    A kept-alive connection the server closed (API servers and load balancers close
    idle ones after a minute or so, or just as a request goes out) ends before any byte
    of the reply: that request is sent once more, on a new connection. Nothing else is
    retried, and nothing sent on a new connection.
    """

    def __init__(self, pool: Any, host_header: str) -> None:
        self._pool = pool
        self._host = host_header
        self._conn: Any = None
        self._reader: ReplyReader | None = None

    def exchange(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: bytes,
        timeout: tuple[float, float],
    ) -> Reply:
        """Send one request and read its reply; on any error the connection is closed."""
        (reply,) = self.exchange_many(method, [(target, headers, body)], timeout)
        assert reply is not None  # with one request, no reply is an error raised
        return reply

    def exchange_many(
        self,
        method: str,
        requests: Sequence[tuple[str, Mapping[str, str], bytes]],
        timeout: tuple[float, float],
        gather: float = 0.0,
    ) -> list[Reply | None]:
        """Send ``requests`` (target, headers, body) back to back, then read their
        replies in order (HTTP/1.1 pipelining); None for a request left unanswered.

        Why: waiting for each reply before sending the next cost the writer a wake-up per
        request, most of a PATCH's CPU (see docs/performance.md). ``gather`` seconds pass
        before each read of the replies, so that one read takes all that came meanwhile.

        Every request is built before any is sent (a bad one sends none). A reply that
        closes the connection leaves the requests after it unread by the server: they go
        out again on a new connection. A kept-alive connection the server had closed
        (no byte of any reply) sends them all once more on a new one, as ``exchange``
        does. Any other error once a reply was read closes the connection and leaves the
        rest unanswered (None): the caller must only send what it can send again. An
        error before any reply is raised, as by ``exchange``.
        """
        data = [request_bytes(method, t, self._host, h, b) for t, h, b in requests]
        replies: list[Reply | None] = []
        retried = False
        while len(replies) < len(data):
            reused = self._conn is not None
            error: Exception | None = None
            try:
                answered, broken = self._pipeline(method, data[len(replies) :], timeout, gather)
            except _Unanswered as unanswered:
                if reused and not retried:
                    retried = True
                    continue
                answered, broken, error = [], True, unanswered.error
            except Exception as failed:
                answered, broken, error = [], True, failed
            if error is not None and not replies:
                raise error
            replies.extend(answered)
            if broken:
                replies.extend([None] * (len(data) - len(replies)))
        return replies

    def _pipeline(
        self, method: str, data: Sequence[bytes], timeout: tuple[float, float], gather: float
    ) -> tuple[list[Reply | None], bool]:
        """The replies read for ``data`` sent at once; True if the connection broke after
        the first of them (the rest unanswered)."""
        replies: list[Reply | None] = []
        try:
            sock, reader = self._open(timeout)
            sock.settimeout(timeout[1])
            before = reader.received
            try:
                sock.sendall(b"".join(data))
                reader.pause = gather if len(data) > 1 else 0.0
                while len(replies) < len(data):
                    reply, keep = reader.read(method)
                    replies.append(reply)
                    if not keep:
                        self.close()  # the server reads no further: the rest go again
                        break
            except (BrokenPipeError, ConnectionResetError, Http11Error) as error:
                if not replies and reader.received == before:
                    raise _Unanswered(error) from error
                raise
            finally:
                reader.pause = 0.0
        except _Unanswered:
            self.close()
            raise
        except Exception:
            self.close()
            if not replies:
                raise
            return replies, True
        except BaseException:
            self.close()
            raise
        return replies, False

    def _open(self, timeout: tuple[float, float]) -> tuple[socket.socket, ReplyReader]:
        if self._conn is not None and self._reader is not None:
            return self._conn.sock, self._reader
        conn = self._pool._new_conn()
        conn.timeout = timeout[0]
        conn.connect()
        self._conn = conn
        self._reader = ReplyReader(conn.sock.recv, readable(conn.sock))
        return conn.sock, self._reader

    def close(self) -> None:
        conn, self._conn, self._reader = self._conn, None, None
        if conn is not None:
            conn.close()
