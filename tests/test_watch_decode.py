"""A watch line decodes to what ``json.loads`` makes of it, or fails as it fails.

``watch.event_json`` skips ``json.loads``' encoding guess and whitespace matching for
lines that open with ``{``; whatever the line (a real event, one cut short, one with
junk after it, another encoding, random bytes), the value or the error must be the same.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.watch import event_json
from kvip_bgp.testing.objects import endpoint_slice, service

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
EVENT = st.builds(
    # Not ASCII only, as the API server writes them; st.text() has lone surrogates too.
    lambda kind, obj: json.dumps(
        {"type": kind, "object": obj}, separators=(",", ":"), ensure_ascii=False
    ),
    st.sampled_from(["ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"]),
    st.one_of(JSON, st.just(service("web", "192.0.2.10")), st.just(endpoint_slice("web"))),
)
ENCODED = st.tuples(EVENT, st.sampled_from(["utf-8", "utf-8-sig", "utf-16-le", "utf-32"])).map(
    lambda t: t[0].encode(t[1], "surrogatepass")
)
TAIL = st.sampled_from([b"", b" ", b"\r", b"\t\r", b"x", b"}", b"{}", b"\xff", b"\xed\xa0\x80"])
LINE = st.one_of(
    st.tuples(ENCODED, TAIL).map(lambda t: t[0] + t[1]),
    st.tuples(ENCODED, st.integers(0, 300)).map(lambda t: t[0][: t[1]]),  # cut short
    st.tuples(TAIL, ENCODED).map(lambda t: t[0] + t[1]),
    st.binary(max_size=30).map(lambda b: b"{" + b),
    st.binary(max_size=30),
)


def _outcome(decode: Any, line: bytes) -> tuple[str, Any]:
    try:
        return "value", decode(line)
    except Exception as error:
        return type(error).__name__, str(error)


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (``float('nan') != float('nan')``)."""
    return json.dumps(a) == json.dumps(b)


@given(line=LINE)
def test_a_line_decodes_as_json_loads_decodes_it(line: bytes) -> None:
    raw_decode = json.JSONDecoder().raw_decode
    fast = _outcome(lambda b: event_json(b, raw_decode), line)
    slow = _outcome(json.loads, line)
    assert fast[0] == slow[0]
    assert _same(fast[1], slow[1])


@pytest.mark.parametrize(
    "line",
    [
        b'{"type":"ADDED","object":{}}',
        b'{"type":"ADDED","object":{}}\r',
        b'{"type":"ADDED","object":{}} {"type":"ADDED"}',
        b'{"type":"ADDED","object":{"a":"\xed\xa0\x80"}}',  # a lone surrogate: json takes it
        b'{"type":"ADDED","object":{"a":"\xff"}}',
        b'{"type":"ADDED"',
        b"{\x00\x00\x00",
        '{"type":"ADDED"}'.encode("utf-16-le"),
        '{"type":"ADDÉ"}'.encode("utf-16-le"),  # not UTF-8 either
        b"\xef\xbb\xbf" + b'{"type":"ADDED"}',
        b" " + b'{"type":"ADDED"}',
        b"[1]",
    ],
)
def test_lines_at_the_edges(line: bytes) -> None:
    raw_decode = json.JSONDecoder().raw_decode
    assert _outcome(lambda b: event_json(b, raw_decode), line) == _outcome(json.loads, line)
