"""The daemon's side of the BFD process: start, read, restart, stop (``child.py`` runs BFD).

The main thread alone starts, restarts and stops the process (``BfdSupervisor.tick``).
A reader thread per process parses its JSON lines strictly into ``BfdState`` messages
for the reconciler and counts state changes and dropped packets; a second one forwards
its log lines. Nothing the child prints reaches a message unparsed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from kvip_bgp.domain.config import Peer
from kvip_bgp.runtime.messages import BfdState
from kvip_bgp.runtime.metrics import Metrics

log = structlog.get_logger("kvip_bgp.bfd")

STATES: Final = frozenset({"admin-down", "down", "init", "up"})
DROP_REASONS: Final = frozenset(
    {
        "short",
        "version",
        "authentication",
        "length",
        "multiplier",
        "multipoint",
        "discriminator",
        "flags",
        "ttl",
        "source",
        "unknown-peer",
    }
)
RESTART_BACKOFF: Final = (1.0, 30.0)
LINGER: Final = 1.0


def bfd_peers(peers: tuple[Peer, ...]) -> list[dict[str, Any]]:
    """The child's ``--peers`` document for the peers that have ``bfd``."""
    return [
        {
            "peer": str(peer.address),
            "local": str(peer.local_address),
            "min_tx": peer.bfd.min_tx,
            "min_rx": peer.bfd.min_rx,
            "multiplier": peer.bfd.multiplier,
        }
        for peer in peers
        if peer.bfd is not None and peer.local_address is not None
    ]


@dataclass(frozen=True)
class DropTotals:
    """Packets the child dropped since it started, per reason (unknown reasons: other)."""

    totals: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class TxGaps:
    """The longest time between two packets the child sent while Up, per peer."""

    seconds: tuple[tuple[str, float], ...]


def parse_line(line: str) -> BfdState | DropTotals | TxGaps | None:
    """One line of the child: a state change, drop totals, gaps, or None (anything else)."""
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    state = document.get("state")
    if isinstance(state, dict):
        try:
            peer = str(ipaddress.ip_address(state["peer"]))
            name, diagnostic, at = state["state"], state["diagnostic"], state["at"]
        except (KeyError, TypeError, ValueError):
            return None
        if name not in STATES or not isinstance(diagnostic, int) or not 0 <= diagnostic <= 31:
            return None
        if not isinstance(at, int | float) or isinstance(at, bool):
            return None
        return BfdState(peer, name, diagnostic, float(at))
    dropped = document.get("dropped")
    if isinstance(dropped, dict):
        totals: dict[str, int] = {}
        for reason, count in dropped.items():
            if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
                key = reason if reason in DROP_REASONS else "other"
                totals[key] = totals.get(key, 0) + count
        return DropTotals(tuple(sorted(totals.items())))
    gaps = document.get("max_tx_gap")
    if isinstance(gaps, dict):
        seconds = []
        for peer, value in gaps.items():
            try:
                address = str(ipaddress.ip_address(peer))
            except ValueError:
                continue
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                seconds.append((address, float(value)))
        return TxGaps(tuple(sorted(seconds)))
    return None


class BfdReader(threading.Thread):
    """Reads one child's stdout until it closes; posts each state change."""

    def __init__(self, stream: Any, publish: Callable[[BfdState], None], metrics: Metrics) -> None:
        super().__init__(name="bfd-reader", daemon=True)
        self._stream = stream
        self._publish = publish
        self._metrics = metrics

    def run(self) -> None:
        counted: dict[str, int] = {}
        for raw in self._stream:
            item = parse_line(raw.decode("utf-8", "replace"))
            if isinstance(item, BfdState):
                self._metrics.bfd_session_up.labels(item.peer).set(1 if item.state == "up" else 0)
                self._metrics.bfd_state_changes.labels(item.peer, item.state).inc()
                self._publish(item)
            elif isinstance(item, DropTotals):
                # The child reports running totals per process: count the increase.
                for reason, total in item.totals:
                    if total > counted.get(reason, 0):
                        self._metrics.bfd_dropped.labels(reason).inc(total - counted.get(reason, 0))
                        counted[reason] = total
            elif isinstance(item, TxGaps):
                for peer, seconds in item.seconds:
                    self._metrics.bfd_max_tx_gap.labels(peer).set(seconds)
        self._stream.close()


def _forward_log(stream: Any) -> None:
    for raw in stream:
        line = raw.decode("utf-8", "replace").strip()
        if line:
            log.info("bfd.log", line=line)
    stream.close()


class BfdSupervisor:
    """The BFD process for this node's peers with ``bfd``; used by the main thread only."""

    def __init__(
        self, peers: tuple[Peer, ...], publish: Callable[[BfdState], None], metrics: Metrics
    ) -> None:
        document = bfd_peers(peers)
        self._document = json.dumps(document)
        self._peers = tuple(str(item["peer"]) for item in document)
        self._publish = publish
        self._metrics = metrics
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: BfdReader | None = None
        self._backoff = RESTART_BACKOFF[0]
        self._restart_at: float | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "kvip_bgp.bgp.bfd.child", "--peers", self._document],
            # Our end of stdin stays open for the child's life: its end of file is how
            # the child learns that the daemon is gone (then: no AdminDown).
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._reader = BfdReader(self._process.stdout, self._publish, self._metrics)
        self._reader.start()
        threading.Thread(
            target=_forward_log, args=(self._process.stderr,), name="bfd-log", daemon=True
        ).start()
        log.info("bfd.started", pid=self._process.pid)

    def tick(self, now: float) -> None:
        """Restart the BFD process when it died, with backoff."""
        process = self._process
        if process is None or process.poll() is None:
            return
        if self._restart_at is None:
            self._restart_at = now + self._backoff
            log.error(
                "bfd.exited",
                exit_code=process.returncode,
                restart_in=self._backoff,
                reason="peers see the sessions go down; they come back after the restart",
            )
            self._backoff = min(RESTART_BACKOFF[1], self._backoff * 2)
            # The process reported only changes, so its last word may have been "up":
            # with it gone there is no BFD, and every session counts as down.
            for peer in self._peers:
                self._metrics.bfd_session_up.labels(peer).set(0)
                self._publish(BfdState(peer, "down", 0, time.time()))
        elif now >= self._restart_at:
            self._restart_at = None
            self._close_stdin()
            self.start()

    def set_peers(self, peers: tuple[Peer, ...]) -> None:
        """A reload changed the BFD peers: the child gets the new set on its stdin.

        Not a new child: replacing it ends every session with AdminDown, and FRR's bgpd
        resets a BGP session tied to BFD on that (seen in the reload lab test). The
        child starts and ends only the sessions that differ; a restart later uses the
        new set too.
        """
        document = json.dumps(bfd_peers(peers))
        if document == self._document:
            return
        log.info("bfd.peers_changed", peers=[str(p["peer"]) for p in bfd_peers(peers)])
        self._document = document
        self._peers = tuple(str(item["peer"]) for item in bfd_peers(peers))
        process = self._process
        if not self._peers:  # no BFD peer left: no process (until one comes back)
            self.stop(3.0)
            self._process = None
            return
        if process is None:
            self.start()
            return
        if process is not None and process.stdin is not None and process.poll() is None:
            try:
                process.stdin.write(document.encode() + b"\n")
                process.stdin.flush()
            except OSError as error:
                log.warning("bfd.update_failed", error=str(error), action="restart")
                self.stop(3.0)
                self.start()

    def stop(self, timeout: float) -> None:
        """Planned stop: the child sends AdminDown for ``LINGER`` seconds, then exits."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(max(0.1, timeout))
            except subprocess.TimeoutExpired:
                log.warning("bfd.kill", pid=process.pid, reason="did not exit on SIGTERM")
                process.kill()
                process.wait(5)
        self._close_stdin()
        if self._reader is not None:
            self._reader.join(2)

    def _close_stdin(self) -> None:
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
