"""Real traffic for the fabric lab: new TCP connections to a VIP at a steady rate.

A separate process in the client's namespace (``python -m kvip_bgp.testing.traffic``)
opens a new connection every ``1/rate`` seconds, sends one HTTP GET and records who
answered or how it failed, one JSON line per attempt. A process of its own keeps its
timing away from the test's threads (the fake API serves from the test process).

A request failed when any of its packets was lost, even if a retransmission then
succeeded: the kernel's ``tcpi_total_retrans`` says so (a dropped SYN is retried only
after 1 s, a delay users notice). The kernel counts it, so a stall of this process on a
busy machine is not mistaken for a loss, as a short timeout would be. What a failure
looks like: ``retransmit`` (answered, but a packet was lost on the way), ``refused``
(RST to the SYN: the VIP is bound but nothing listens), ``timeout`` (no answer within
``timeout``), ``reset`` (RST after the handshake: the flow moved to another node
mid-request), ``http`` (a bad answer), or the errno's name (``EHOSTUNREACH``: the SYN
looped until its TTL ran out).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kvip_bgp.testing.fabric import Fabric
from kvip_bgp.testing.netlab import wait_until

__all__ = ["Attempt", "Traffic", "TrafficReport"]

RETRANSMIT_AFTER = 1.0
"""Linux retransmits a SYN after 1 s: a longer handshake lost its first SYN."""


@dataclass(frozen=True)
class Attempt:
    """One request: when it started (CLOCK_MONOTONIC, shared by every process), how long
    it took, and the node that answered or the error."""

    at: float
    took: float
    node: str | None
    error: str | None
    connected: float | None = None
    """Seconds the handshake took (1 s or more: the first SYN was lost)."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TrafficReport:
    """Every attempt of one run, in start order."""

    attempts: tuple[Attempt, ...]

    @property
    def failures(self) -> tuple[Attempt, ...]:
        return tuple(a for a in self.attempts if not a.ok)

    def answers(self) -> dict[str, int]:
        """How many requests each node answered (without a lost packet)."""
        return dict(collections.Counter(a.node for a in self.attempts if a.ok and a.node))

    def errors(self) -> dict[str, int]:
        return dict(collections.Counter(a.error for a in self.attempts if a.error is not None))

    def since(self, start: float) -> TrafficReport:
        return TrafficReport(tuple(a for a in self.attempts if a.at >= start))

    def broken(self) -> tuple[Attempt, ...]:
        """Established flows that then failed (``reset``, ``timeout``): what the ToR's
        hash-threshold ECMP does to a connection in flight when the next-hop set changes
        (it may move the flow to another node), counted apart from the requests a
        speaker loses."""
        return tuple(
            a
            for a in self.failures
            if a.error in ("reset", "timeout")
            and a.connected is not None
            and a.connected < RETRANSMIT_AFTER
        )

    def lost(self) -> tuple[Attempt, ...]:
        """Failed requests other than ``broken`` flows."""
        broken = set(self.broken())
        return tuple(a for a in self.failures if a not in broken)

    def missed(self, answering: Collection[str]) -> tuple[Attempt, ...]:
        """Requests that failed or that someone outside ``answering`` answered."""
        return tuple(a for a in self.attempts if not a.ok or a.node not in answering)

    def outage(self, answering: Collection[str] | None = None) -> float:
        """Seconds from the first failed (or ``missed``) request's start to the last
        one's start; 0 when there was none."""
        failed = self.failures if answering is None else self.missed(answering)
        if not failed:
            return 0.0
        return failed[-1].at - failed[0].at

    def summary(self) -> str:
        failed = self.failures
        text = f"{len(self.attempts)} requests, answers {self.answers()}, {len(failed)} failed"
        if failed:
            text += f" {self.errors()} over {self.outage():.2f} s"
            text += f" ({len(self.broken())} established flows broken)"
        return text


class Traffic:
    """The client process against ``vip``; a context manager (``report()`` any time)."""

    def __init__(
        self, fabric: Fabric, vip: str, *, rate: float = 50.0, timeout: float = 3.0, port: int = 80
    ) -> None:
        self.fabric = fabric
        self.vip = vip
        self.rate = rate
        self.timeout = timeout
        self.port = port
        self.path = fabric.lab.workdir / f"traffic-{vip}-{time.monotonic_ns()}.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Traffic:
        argv = [
            sys.executable,
            "-m",
            "kvip_bgp.testing.traffic",
            self.vip,
            "--port",
            str(self.port),
            "--rate",
            str(self.rate),
            "--timeout",
            str(self.timeout),
            "--out",
            str(self.path),
        ]
        self.started_at = time.monotonic()
        self._proc = self.fabric.lab.popen(self.fabric.client_ns, argv)
        wait_until(lambda: bool(self.report().attempts), 10, what="the first request")
        return self

    def report(self) -> TrafficReport:
        """Every attempt recorded so far."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return TrafficReport(())
        attempts = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError, KeyError):  # a line being written
                raw = json.loads(line)
                attempts.append(
                    Attempt(raw["at"], raw["took"], raw["node"], raw["error"], raw.get("connected"))
                )
        return TrafficReport(tuple(sorted(attempts, key=lambda a: a.at)))

    def wait_answers(self, nodes: Iterable[str], timeout: float = 15.0) -> None:
        """Wait until each of ``nodes`` has answered a request started from now on."""
        start = time.monotonic()
        wanted = set(nodes)
        wait_until(
            lambda: wanted <= set(self.report().since(start).answers()),
            timeout,
            what=f"answers from {sorted(wanted)}",
        )

    def stop(self) -> TrafficReport:
        """End the client (it finishes the requests in flight) and report."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(self.timeout + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return self.report()

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------- the client

# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, then u32s; tcpi_total_retrans is
# the 24th u32.
_TOTAL_RETRANS = 100
_TCP_INFO_LEN = 104


def _request(vip: str, port: int, timeout: float) -> tuple[str | None, str | None, float | None]:
    """``(node, None, handshake)`` for an answer, ``(node or None, error, ...)`` else."""
    start = time.monotonic()
    deadline = start + timeout
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect((vip, port))
        except ConnectionRefusedError:
            return None, "refused", None
        except TimeoutError:
            return None, "timeout", None
        except OSError as error:
            return None, errno.errorcode.get(error.errno or 0, str(error)), None
        connected = time.monotonic() - start
        data = b""
        try:
            sock.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            while True:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            return None, "timeout", connected
        except ConnectionResetError:
            return None, "reset", connected
        except OSError as error:
            return None, errno.errorcode.get(error.errno or 0, str(error)), connected
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.0 200") or not body.strip():
            return None, "http", connected
        node = body.strip().decode(errors="replace")
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        if int.from_bytes(info[_TOTAL_RETRANS : _TOTAL_RETRANS + 4], sys.byteorder):
            return node, "retransmit", connected
        return node, None, connected
    finally:
        sock.close()


def _run(vip: str, port: int, rate: float, timeout: float, out: IO[str]) -> None:
    stop = threading.Event()
    lock = threading.Lock()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    threads: list[threading.Thread] = []

    def attempt(at: float) -> None:
        node, error, connected = _request(vip, port, timeout)
        took = time.monotonic() - at
        line = json.dumps(
            {"at": at, "took": took, "node": node, "error": error, "connected": connected}
        )
        with lock:
            out.write(line + "\n")
            out.flush()

    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        thread = threading.Thread(target=attempt, args=(time.monotonic(),), daemon=True)
        thread.start()
        threads = [t for t in threads if t.is_alive()]
        threads.append(thread)
        next_at += interval
        stop.wait(max(0.0, next_at - time.monotonic()))
    for thread in threads:
        thread.join(timeout + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="new TCP connections to a VIP at a rate")
    parser.add_argument("vip")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with args.out.open("a") as out:
        _run(args.vip, args.port, args.rate, args.timeout, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
