"""Receiver helper process for a passive ExaBGP: timestamps every UPDATE it is shown.

ExaBGP (``api { receive { parsed; update; } }``, JSON encoder) writes one JSON line per
received UPDATE to our stdin. For each prefix in it we append
``MONOTONIC_TIME A|W PREFIX`` to ``OUTFILE`` (``S STATE`` for session changes), taking
the time when the line was read, before any parsing. CLOCK_MONOTONIC is shared by all
network namespaces, so the bench compares it directly with its own API-write times.

Usage: receiver.py OUTFILE
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _prefixes(entries: Any) -> list[str]:
    result = []
    for entry in entries or ():
        if isinstance(entry, dict):
            nlri = entry.get("nlri")
            if isinstance(nlri, str):
                result.append(nlri)
        elif isinstance(entry, str):
            result.append(entry)
    return result


def main() -> int:
    os.set_blocking(0, True)
    out = open(sys.argv[1], "a", buffering=1 << 16)  # noqa: SIM115 (lives as long as we do)
    stdin = sys.stdin.buffer
    while True:
        raw = stdin.readline()
        if not raw:
            return 0
        stamp = time.monotonic()
        try:
            data = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(data, dict):
            continue
        neighbor = data.get("neighbor") or {}
        if data.get("type") == "state":
            out.write(f"{stamp} S {neighbor.get('state')}\n")
        elif data.get("type") == "update":
            update = (neighbor.get("message") or {}).get("update") or {}
            rows = []
            for by_next_hop in (update.get("announce") or {}).values():
                for entries in by_next_hop.values():
                    rows += [f"{stamp} A {p}\n" for p in _prefixes(entries)]
            for entries in (update.get("withdraw") or {}).values():
                rows += [f"{stamp} W {p}\n" for p in _prefixes(entries)]
            out.write("".join(rows))
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
