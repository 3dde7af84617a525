"""``kube.watch._lines``: a watch body cut into chunks anywhere gives back its lines.

The API server sends one event per chunk, but nothing guarantees it: several events in
one chunk (a replay), one event over several (a large object, urllib3's 64 KiB reads),
blank keep-alive lines. Whatever the cuts, the lines are the body's non-blank lines.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.watch import _lines


class _Chunks:
    """Stands in for urllib3's response: ``stream`` yields the given chunks."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.chunks = chunks

    def stream(self, amt: int, decode_content: bool) -> Iterator[bytes]:
        assert decode_content
        yield from self.chunks


def _expected(body: bytes) -> list[bytes]:
    return [line for line in body.split(b"\n") if line.strip()]


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
    assert list(_lines(_Chunks(chunks))) == lines


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
    points = sorted({0, len(body), *(c for c in cuts if c <= len(body))})
    chunks = [body[a:b] for a, b in itertools.pairwise(points)]
    assert list(_lines(_Chunks(chunks))) == _expected(body)
