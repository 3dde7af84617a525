"""A chunk that is whole in one read is taken at once; the result is the same as in steps.

``ChunkedBody.feed`` takes a chunk whose data and CRLF are all in the bytes it holds in
one step (the common case in a watch: one event per chunk, many in one read). Fed one
byte at a time it never can, and goes through every state instead: so for any bytes,
valid or not, the two must agree on the body, on whether it ended, and on the error.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.chunked import ChunkedBody, ChunkedError


def _decode(pieces: list[bytes]) -> tuple[bytes, bool, str | None]:
    """(body so far, done, error message) after feeding ``pieces`` in order."""
    body = ChunkedBody()
    out: list[bytes] = []
    try:
        for piece in pieces:
            out.append(body.feed(piece))
    except ChunkedError as error:
        # How many bytes follow the last chunk depends on how many were fed: not compared.
        return b"", False, re.sub(r"^\d+ bytes after", "bytes after", str(error))
    return b"".join(out), body.done, None


def _chunked(pieces: list[bytes], crlf: bytes) -> bytes:
    return b"".join(b"%x\r\n%s%s" % (len(p), p, crlf) for p in pieces if p) + b"0\r\n\r\n"


CHUNKED = st.builds(
    _chunked,
    st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r", b"\rX", b"XY", b""]),
)
MUTATED = st.tuples(CHUNKED, st.integers(0, 400), st.binary(max_size=3)).map(
    lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + len(t[2]) :]
)


@given(encoded=st.one_of(CHUNKED, MUTATED, st.binary(max_size=60)))
def test_whole_and_byte_by_byte_agree(encoded: bytes) -> None:
    whole = _decode([encoded])
    stepped = _decode([encoded[i : i + 1] for i in range(len(encoded))])
    if whole[2] is None and stepped[2] is None:
        assert whole == stepped
    else:
        assert whole[2] == stepped[2]


def test_a_whole_chunk_with_bad_crlf_is_an_error() -> None:
    for encoded in (b"3\r\nabcX\n", b"3\r\nabc\n\r", b"3\r\nabc\r\r0\r\n\r\n"):
        assert _decode([encoded])[2] == "chunk data not followed by CRLF"
