"""Run kvip-bgp's BFD thread alone and print what it does as JSON lines (for lab tests).

``python -m kvip_bgp.testing.bfdprobe --peer 192.0.2.2 --local 192.0.2.1`` inside a
namespace: one line per state change (``{"state": "up", ...}``) and per dropped packet
(``{"dropped": "ttl"}``); SIGTERM sends AdminDown for ``--linger`` seconds, then exits.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import signal
import sys
import threading
from types import FrameType

import structlog

from kvip_bgp.bgp.bfd.session import Timers
from kvip_bgp.bgp.bfd.thread import BfdPeer, BfdPeerState, BfdThread


def _print(document: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(document) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kvip_bgp.testing.bfdprobe")
    parser.add_argument("--peer", required=True, type=ipaddress.ip_address)
    parser.add_argument("--local", required=True, type=ipaddress.ip_address)
    parser.add_argument("--min-tx", type=int, default=300, help="milliseconds")
    parser.add_argument("--min-rx", type=int, default=300, help="milliseconds")
    parser.add_argument("--multiplier", type=int, default=3)
    parser.add_argument("--linger", type=float, default=1.0)
    args = parser.parse_args(argv)
    # The daemon's log lines go to stderr: stdout carries only this probe's JSON lines.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    timers = Timers(args.min_tx * 1000, args.min_rx * 1000, args.multiplier)
    lock = threading.Lock()  # stdout is shared by the BFD thread and the main thread

    def published(state: BfdPeerState) -> None:
        with lock:
            _print(dataclasses.asdict(state))

    def dropped(reason: str) -> None:
        with lock:
            _print({"dropped": reason})

    thread = BfdThread((BfdPeer(args.peer, args.local, timers),), published, dropped)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    thread.start()
    with lock:
        _print({"started": True})
    while not stop.wait(0.2):
        if not thread.is_alive():
            return 1
    thread.stop(args.linger)
    thread.join(args.linger + 2.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
