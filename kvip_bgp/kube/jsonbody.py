"""JSON from the API server: decoded by orjson, with ``json.loads``' values and errors.

Why orjson: the stream threads decode every list page and every watch event, 20,000
objects in a cold start of 10,000 Services and as many events in a burst, and the
standard library's decoder was about a quarter of their CPU (a 500-byte event: 2.6 µs
with the fastest ``json`` path, 1.2 µs by orjson). Real objects are larger than the
bench's (``managedFields``, more spec), and decoding grows with their bytes where
parsing does not.

Why the guards: the result must be exactly what ``json.loads`` makes of the same bytes,
so that a strange object decodes, or fails, as it always did. orjson refuses what
``json`` takes beyond RFC 8259 (NaN, Infinity, a byte order mark, UTF-16 and UTF-32,
lone surrogates, numbers too large for a double): those bytes go to ``json.loads``.
The one value orjson makes differently is an integer beyond 64 bits, which it gives as
a float; any run of 19 or more digits (10**18 is the largest power of ten below 2**63)
sends the document to ``json.loads`` as well, found by mapping every digit to ``0``
and looking for 19 of them (0.4 µs for an event, C code only). tests/test_json_body.py
compares the two over generated lines, malformed ones included.
"""

from __future__ import annotations

import json
from typing import Any, Final

import orjson

_DIGITS: Final = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER: Final = b"0" * 19


def loads(data: bytes) -> Any:
    """``json.loads(data)``, by orjson wherever it gives the same."""
    if _LONG_NUMBER not in data.translate(_DIGITS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
