"""An ExaBGP API helper that writes phases of commands: each phase in one write, a pause
between them. For reproducing what ExaBGP does with commands that arrive together.

Usage (as ExaBGP's ``run``): ``python -m kvip_bgp.testing.exabgp_phases PHASES.json
PAUSE``; the file holds a list of phases, each a list of command lines. It starts once
the neighbor is up and keeps reading its stdin (unread acks would block ExaBGP).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    path = Path(sys.argv[1])
    phases: list[list[str]] = json.loads(path.read_text())
    pause = float(sys.argv[2])
    up = threading.Event()

    def drain() -> None:
        for line in sys.stdin:
            if '"up"' not in line:
                continue
            try:
                state = json.loads(line)
            except ValueError:
                continue
            if state.get("type") == "state" and state["neighbor"].get("state") == "up":
                up.set()
        os._exit(0)  # ExaBGP went away

    threading.Thread(target=drain, daemon=True).start()
    up.wait()
    time.sleep(pause)
    for phase in phases:
        sys.stdout.write("".join(line + "\n" for line in phase))
        sys.stdout.flush()
        time.sleep(pause)
    path.with_name(path.name + ".done").touch()
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main()
