"""Baseline helper process for ExaBGP: the same prefixes, no Kubernetes, no kvip-bgp.

ExaBGP runs this as its API process. Once the neighbor is up (and ``DELAY`` seconds
later) it writes every prefix as ``announce attributes ... nlri`` lines of ``BATCH``
prefixes, then End-of-RIB, and records the monotonic time of its first write in
``TSFILE``. It keeps draining stdin for as long as it lives: unread acks would block
ExaBGP (see shared/lab-facts.md).

Usage: feeder.py N FIRST_ADDRESS BATCH DELAY TSFILE
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
import time


def main() -> int:
    count, first, batch, delay, ts_file = sys.argv[1:6]
    n, size = int(count), int(batch)
    os.set_blocking(0, True)
    os.set_blocking(1, True)
    up = threading.Event()

    def drain() -> None:
        for line in sys.stdin:
            if line.startswith("{") and '"up"' in line:
                try:
                    data = json.loads(line)
                except ValueError:
                    continue
                if data.get("type") == "state" and data["neighbor"].get("state") == "up":
                    up.set()
        os._exit(0)  # ExaBGP went away

    threading.Thread(target=drain, daemon=True).start()
    base = ipaddress.ip_address(first)
    prefixes = [f"{base + i}/32" for i in range(n)]
    lines = [
        "announce attributes next-hop self community [64512:100] nlri "
        + " ".join(prefixes[start : start + size])
        + "\n"
        for start in range(0, n, size)
    ]
    up.wait()
    time.sleep(float(delay))
    started = time.monotonic()
    with open(ts_file, "w") as handle:
        handle.write(f"{started}\n")
    out = sys.stdout
    for line in lines:
        out.write(line)
        out.flush()
    out.write("announce eor ipv4 unicast\n")
    out.flush()
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
