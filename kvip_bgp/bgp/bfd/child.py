"""The BFD process: ``python -m kvip_bgp.bgp.bfd.child --peers JSON``, started by the daemon.

BFD runs in a process of its own because a thread of the daemon cannot keep a 300 ms
rhythm: during a cold start the other threads parse lists, decide Services and collect
garbage, and one C call (a ``json.loads`` of a page, a full collection) holds the GIL
for as long as it runs (docs/architecture.md has the measurement).

Protocol with the daemon, one JSON object per line on stdout: ``{"state": ...}`` for
every state change (``BfdPeerState``), and at most once a second when they changed
``{"dropped": {reason: total}}`` and ``{"max_tx_gap": {peer: seconds}}`` (the longest
time between two packets sent while Up: how late this process ever was). The daemon's
log lines go to stderr.

A line on stdin is a new ``--peers`` document (a reload): sessions of new peers start,
those of removed or changed peers end, the others run on untouched. A line that does
not parse is logged and ignored.

Ending: SIGTERM (a planned stop, after the daemon's withdrawals) sends AdminDown for
``--linger`` seconds, so the peers know it was on purpose. End of stdin means the daemon
is gone (a crash): exit at once *without* AdminDown, so that the peers see the failure
within their detection time and drop this node's routes. Linux's parent-death signal
covers a daemon killed before it could close the pipe.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import ipaddress
import json
import os
import signal
import sys
import threading
from collections import Counter
from types import FrameType
from typing import Any, Final

import structlog

from kvip_bgp.bgp.bfd.session import Timers
from kvip_bgp.bgp.bfd.thread import BfdPeer, BfdPeerState, BfdThread, IPAddress
from kvip_bgp.runtime import threadname

DROP_REPORT_INTERVAL: Final = 1.0
_PR_SET_PDEATHSIG: Final = 1


def parse_peers(text: str) -> tuple[BfdPeer, ...]:
    """``[{"peer", "local", "min_tx", "min_rx", "multiplier"}]`` (milliseconds) -> peers."""
    document = json.loads(text)
    if not isinstance(document, list) or not document:
        raise ValueError("--peers must be a non-empty JSON list")
    peers = []
    for index, item in enumerate(document):
        if not isinstance(item, dict) or set(item) != {
            "peer",
            "local",
            "min_tx",
            "min_rx",
            "multiplier",
        }:
            raise ValueError(
                f"--peers[{index}]: needs exactly peer, local, min_tx, min_rx, multiplier"
            )
        peer = ipaddress.ip_address(item["peer"])
        local = ipaddress.ip_address(item["local"])
        if peer.version != local.version:
            raise ValueError(f"--peers[{index}]: peer and local differ in IP version")
        numbers = [item["min_tx"], item["min_rx"], item["multiplier"]]
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise ValueError(f"--peers[{index}]: intervals and multiplier must be integers")
        min_tx, min_rx, multiplier = numbers
        if not (1 <= min_tx <= 60_000 and 1 <= min_rx <= 60_000 and 1 <= multiplier <= 255):
            raise ValueError(f"--peers[{index}]: intervals 1..60000 ms, multiplier 1..255")
        peers.append(BfdPeer(peer, local, Timers(min_tx * 1000, min_rx * 1000, multiplier)))
    return tuple(peers)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class _Output:
    """stdout, shared by the BFD thread (state changes) and the main thread (drop totals)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dropped: Counter[str] = Counter()
        self._reported: dict[str, int] = {}
        self._gaps: dict[str, float] = {}
        self._gaps_reported: dict[str, float] = {}

    def write(self, document: dict[str, Any]) -> None:
        with self._lock:
            sys.stdout.write(json.dumps(document) + "\n")
            sys.stdout.flush()

    def state(self, change: BfdPeerState) -> None:
        self.write({"state": dataclasses.asdict(change)})

    def dropped(self, reason: str) -> None:
        with self._lock:
            self._dropped[reason] += 1

    def gap(self, peer: IPAddress, seconds: float) -> None:
        with self._lock:
            key = str(peer)
            self._gaps[key] = max(seconds, self._gaps.get(key, 0.0))

    def report(self) -> None:
        """Drop totals and the longest gaps between packets, when they changed."""
        with self._lock:
            totals = dict(self._dropped)
            gaps = dict(self._gaps)
        if totals != self._reported:
            self._reported = totals
            self.write({"dropped": totals})
        if gaps != self._gaps_reported:
            self._gaps_reported = gaps
            self.write({"max_tx_gap": {peer: round(value, 4) for peer, value in gaps.items()}})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvip_bgp.bgp.bfd.child")
    parser.add_argument("--peers", required=True, help="JSON list of sessions (see parse_peers)")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds of AdminDown on SIGTERM")
    args = parser.parse_args(argv)
    try:
        peers = parse_peers(args.peers)
    except (ValueError, TypeError) as error:
        print(f"kvip-bgp bfd: {error}", file=sys.stderr)
        return 2
    _die_with_parent()
    threadname.install()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    out = _Output()
    thread = BfdThread(peers, out.state, out.dropped, gap=out.gap)
    planned = threading.Event()
    gone = threading.Event()
    wake = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        planned.set()
        wake.set()

    def watch_stdin() -> None:
        with contextlib.suppress(OSError), os.fdopen(sys.stdin.fileno(), "rb", 0) as stdin:
            for line in iter(stdin.readline, b""):
                try:
                    thread.update(parse_peers(line.decode()))
                except (ValueError, TypeError, UnicodeDecodeError) as error:
                    print(f"kvip-bgp bfd: peers update ignored: {error}", file=sys.stderr)
        gone.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=watch_stdin, name="stdin", daemon=True).start()
    thread.start()
    out.write({"started": True})
    while not wake.wait(DROP_REPORT_INTERVAL):
        if not thread.is_alive():
            return 1
        out.report()
    if not planned.is_set():
        # The daemon is gone: no AdminDown (the BFD thread dies with the process), so
        # the peers see a failure within their detection time.
        return 1
    thread.stop(args.linger)
    thread.join(args.linger + 2.0)
    out.report()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
