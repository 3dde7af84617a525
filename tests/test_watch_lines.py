"""Reading a watch: chunked coding decoded by us, lines, and reads gathered under load.

The API server sends one event per chunk, but nothing guarantees it: several events in
one chunk (a replay), one event over several (a large object), blank keep-alive lines,
and TCP cuts the bytes anywhere. Whatever the cuts, the lines are the body's non-blank
lines, and bad framing is an error, never a guess.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.chunked import BodyEnded, ChunkedBody, ChunkedError, Lines
from kvip_bgp.kube.watch import READ_SIZE, chunk_reads, raw_reads, readable
from kvip_bgp.testing.tls import client_context, make_certs, server_context


class _Chunks:
    """Stands in for urllib3's response: ``stream`` yields the given chunks."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = chunks

    def stream(self, amt: int, decode_content: bool) -> Iterator[bytes]:
        assert decode_content
        yield from self.chunks


def _expected(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line.strip()]


def _cut(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b'{"a":1}\n'], [b'{"a":1}']),
        ([b'{"a":1}\n{"b":2}\n{"c":3}\n'], [b'{"a":1}', b'{"b":2}', b'{"c":3}']),
        ([b'{"a"', b":1", b"}\n"], [b'{"a":1}']),
        ([b'{"a":1}\n{"b"', b":2}\n"], [b'{"a":1}', b'{"b":2}']),
        ([b"\n", b"  \n", b'{"a":1}\r\n', b"\n"], [b'{"a":1}\r']),
        ([b'{"a":1}\n{"b":2}'], [b'{"a":1}', b'{"b":2}']),  # no final newline
        ([b"", b'{"a":1}', b"", b"\n"], [b'{"a":1}']),
        ([], []),
    ],
)
def test_lines_table(chunks: list[bytes], lines: list[bytes]) -> None:
    assert [line for batch in chunk_reads(_Chunks(chunks)) for line in batch] == lines


LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))


@given(
    lines=st.lists(st.one_of(LINE, st.sampled_from([b"", b" ", b"\r"])), max_size=30),
    newline_at_end=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=40),
)
def test_any_cut_of_the_body_gives_its_lines(
    lines: list[bytes], newline_at_end: bool, cuts: list[int]
) -> None:
    body = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    splitter = Lines()
    got = [line for piece in _cut(body, cuts) for line in splitter.feed(piece)]
    assert got + splitter.rest() == _expected(body)


def _encode(pieces: Sequence[bytes], extension: bytes = b"", trailer: bytes = b"") -> bytes:
    chunks = b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces if p)
    return chunks + b"0%s\r\n%s\r\n" % (extension, trailer)


@given(
    pieces=st.lists(st.binary(max_size=70), max_size=12),
    extension=st.sampled_from([b"", b";name=value", b" ; x"]),
    trailer=st.sampled_from([b"", b"X-Trailer: 1\r\n", b"A: b\r\nC: d\r\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=40),
)
def test_any_cut_of_a_chunked_body_decodes_to_the_body(
    pieces: list[bytes], extension: bytes, trailer: bytes, cuts: list[int]
) -> None:
    encoded = _encode(pieces, extension, trailer)
    body = ChunkedBody()
    decoded = b"".join(body.feed(part) for part in _cut(encoded, cuts))
    assert decoded == b"".join(pieces)
    assert body.done
    # One byte less and the body has not ended.
    short = ChunkedBody()
    short.feed(encoded[:-1])
    assert not short.done


@pytest.mark.parametrize(
    ("encoded", "error"),
    [
        (b"zz\r\n", "bad chunk size"),
        (b"1_0\r\n", "bad chunk size"),  # int(..., 16) would take it
        (b"+5\r\n", "bad chunk size"),
        (b"\r\n", "bad chunk size"),
        (b"3\r\nabcXY", "not followed by CRLF"),
        (b"1" * 5000, "longer than"),
        (b"0\r\n\r\nHTTP/1.1", "after the last chunk"),
    ],
)
def test_bad_framing_is_an_error_not_a_guess(encoded: bytes, error: str) -> None:
    with pytest.raises(ChunkedError, match=error):
        ChunkedBody().feed(encoded)


class _Socket:
    """A scripted socket file and clock: each read returns the next piece."""

    def __init__(self, pieces: Sequence[bytes], stop_after: int = -1) -> None:
        self.pieces = list(pieces)
        self.now = 100.0
        self.log: list[str] = []
        self.stop_after = stop_after  # the wait that answers "stop"

    def read(self, size: int) -> bytes:
        assert 0 < size <= READ_SIZE
        self.now += 0.001  # a read takes a millisecond
        self.log.append("read")
        if not self.pieces:
            return b""
        piece = self.pieces.pop(0)
        if len(piece) > size:  # what does not fit stays for the next read
            self.pieces.insert(0, piece[size:])
        return piece[:size]

    def wait(self, seconds: float) -> bool:
        self.log.append(f"wait {seconds * 1000:.0f}")
        self.now += seconds
        return sum(entry.startswith("wait") for entry in self.log) == self.stop_after

    def clock(self) -> float:
        return self.now


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_read_with_whole_lines_waits_out_the_gather_window() -> None:
    sock = _Socket([_chunk(b"a\n"), _chunk(b"b\n") + _chunk(b"c\n"), b"0\r\n\r\n"])
    reads = list(raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: 0.02))
    assert reads == [[b"a"], [b"b", b"c"], [], []]
    # Each wait is the window less what passed since the read returned (nothing here);
    # none after the last chunk.
    assert sock.log == ["read", "wait 20", "read", "wait 20", "read"]


def test_each_pause_takes_the_gather_window_of_its_moment() -> None:
    """The cluster thread lengthens the window while it takes bulk changes
    (``kube.threads``): a stream reads it at every pause, not once per watch."""
    sock = _Socket([_chunk(b"a\n"), _chunk(b"b\n"), _chunk(b"c\n"), b"0\r\n\r\n"])
    windows = iter([0.01, 0.04, 0.01])
    assert len(list(raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: next(windows)))) == 5
    assert sock.log == ["read", "wait 10", "read", "wait 40", "read", "wait 10", "read"]


def test_a_partial_line_or_a_full_read_is_followed_at_once() -> None:
    big = b"x" * READ_SIZE
    full = _chunk(b"y\n" + big + b"\n")
    sock = _Socket([_chunk(b"par"), _chunk(b"t\n"), full[:READ_SIZE], full[READ_SIZE:], b""])
    reads = raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: 0.02)
    assert next(reads) == []  # part of a line: no wait before the next read
    assert next(reads) == [b"part"]
    assert next(reads) == [b"y"]  # this read filled READ_SIZE: more is waiting
    assert next(reads) == [big]
    with pytest.raises(BodyEnded):  # the connection ended without the last chunk
        next(reads)
    assert sock.log == ["read", "read", "wait 20", "read", "read", "wait 20", "read"]


def test_time_spent_on_the_events_counts_towards_the_window() -> None:
    sock = _Socket([_chunk(b"a\n"), b"0\r\n\r\n"])
    reads = raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: 0.02)
    assert next(reads) == [b"a"]
    sock.now += 0.015  # the caller took 15 ms over the events
    assert next(reads) == []
    assert sock.log == ["read", "wait 5", "read"]


def test_stop_during_the_window_ends_the_reads() -> None:
    sock = _Socket([_chunk(b"a\n"), _chunk(b"b\n")], stop_after=1)
    assert list(raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: 0.02)) == [[b"a"]]
    assert sock.log == ["read", "wait 20"]


def test_reads_go_on_while_more_is_waiting() -> None:
    """Over TLS each read gives one record, one event each from a server that flushes
    every event: while more is waiting they are read at once, gathered into one batch."""
    sock = _Socket([_chunk(b"a\n"), _chunk(b"b\n"), _chunk(b"c\n"), _chunk(b"d\n")])
    waiting = iter([True, True, False])
    reads = raw_reads(
        sock.read, sock.wait, sock.clock, gather=lambda: 0.02, waiting=lambda: next(waiting)
    )
    assert next(reads) == [b"a", b"b", b"c"]
    assert sock.log == ["read", "read", "read"]


def test_reads_that_fill_read_size_stop_there() -> None:
    half = _chunk(b"x" * (READ_SIZE // 2 + 100) + b"\n")  # two exceed READ_SIZE
    sock = _Socket([half, half, half, b"0\r\n\r\n"])
    reads = raw_reads(sock.read, sock.wait, sock.clock, gather=lambda: 0.02, waiting=lambda: True)
    first = next(reads)
    assert len(first) == 1 and sock.log == ["read", "read"]  # one whole, part of the next
    assert sock.pieces[0] == half[READ_SIZE - len(half) :]  # the rest of the second, next


def test_a_watch_over_tls_is_read_in_batches(tmp_path: Path) -> None:
    """A real TLS connection, one record per event: ``readable`` sees them waiting."""
    certs = make_certs(tmp_path, name="localhost")
    listener = socket.create_server(("127.0.0.1", 0))
    server_side = server_context(certs.cert, certs.key).wrap_socket(listener, server_side=True)
    accepted: list[socket.socket] = []
    accepting = threading.Thread(target=lambda: accepted.append(server_side.accept()[0]))
    accepting.start()  # the handshake needs both ends at once
    client = client_context(certs.ca).wrap_socket(
        socket.create_connection(server_side.getsockname(), timeout=10),
        server_hostname="localhost",
    )
    accepting.join(10)
    (conn,) = accepted
    events = [b'{"type":"ADDED","n":%d}\n' % i for i in range(50)]
    for event in events:
        conn.sendall(_chunk(event))  # one TLS record each
    conn.sendall(b"0\r\n\r\n")
    body = client.makefile("rb")
    time.sleep(0.2)  # every record is in the client's socket
    batches = [batch for batch in raw_reads(body.read1, lambda _: False, waiting=readable(body))]
    assert [line + b"\n" for batch in batches for line in batch] == events
    assert len([batch for batch in batches if batch]) == 1, [len(b) for b in batches]
    for closing in (body, client, conn, server_side):
        closing.close()
