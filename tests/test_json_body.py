"""A body from the API decodes to what ``json.loads`` makes of it, or fails as it fails.

``jsonbody.loads`` decodes by orjson where orjson gives the same; whatever the bytes (a
real watch event, one cut short, one with junk after it, another encoding, numbers
beyond 64 bits or a double, random bytes), the value or the error must be ``json``'s.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.kube.jsonbody import loads
from kvip_bgp.testing.objects import endpoint_slice, service

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**70), 2**70)  # both sides of 64 bits, which orjson makes floats
    | st.floats()
    | st.text(max_size=8),
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
    fast = _outcome(loads, line)
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
        b'{"a":"\\ud800"}',  # an escaped lone surrogate: json takes it, orjson does not
        b'{"a":1e400}',  # infinity: json's, orjson refuses it
        b'{"a":NaN,"b":-Infinity}',
        b'{"a":9223372036854775807,"b":-9223372036854775808}',  # 64 bits: both ints
        b'{"a":18446744073709551616}',  # 2**64: orjson gives a float
        b'{"a":123456789012345678901234567890}',
        b'{"a":"1234567890123456789012"}',  # a long run of digits in a string: json's too
        b'{"a":0.1234567890123456789,"b":5e-324,"c":1e-400,"d":-0.0}',
        b'{"a":1,"a":2}',  # duplicate keys: the last one
        b'{"a":"x\ny"}',  # a raw control character in a string: an error for both
        b'{"a":"\\u0000\\ud83d\\ude00"}',  # escapes: NUL, a surrogate pair
        b"[" * 2000 + b"]" * 2000,  # deeper than either decoder goes
        b"",
        b"  ",
    ],
)
def test_lines_at_the_edges(line: bytes) -> None:
    assert _outcome(loads, line) == _outcome(json.loads, line)


def test_a_list_page_decodes_whole() -> None:
    items = [service(f"web-{i}", f"192.0.2.{i}") for i in range(50)]
    page = json.dumps({"kind": "ServiceList", "metadata": {}, "items": items}).encode()
    assert loads(page) == json.loads(page)
