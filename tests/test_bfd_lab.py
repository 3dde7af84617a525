"""kvip-bgp's BFD thread against FRR's bfdd, one veth apart, with real packets.

FRR's bfdd plays the ToR. The thread runs in its own process inside the node namespace
(``kvip_bgp.bgp.bfd.child``, as the daemon runs it), its stdin a pipe from the test
standing in for the daemon: closing it is the daemon's crash.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_lab

from kvip_bgp.bgp.bfd.packet import ControlPacket, Diagnostic, State, encode
from kvip_bgp.testing.bfdd import BFDD, Bfdd
from kvip_bgp.testing.netlab import Lab, in_netns, wait_until

pytestmark = pytest.mark.lab

PREFIX = "kvbfd-"


class Probe:
    """Our BFD thread in its own process in the node namespace; its JSON lines in a queue."""

    def __init__(self, lab: Lab) -> None:
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        peers = [
            {"peer": Lab.TOR_V4, "local": Lab.NODE_V4}
            | {"min_tx": 300, "min_rx": 300, "multiplier": 3}
        ]
        self.process = lab.popen(
            lab.node,
            [sys.executable, "-m", "kvip_bgp.bgp.bfd.child", "--peers", json.dumps(peers)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda d: d.get("started") is True, 10)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            document = json.loads(line)
            self.lines.put(document.get("state", document))

    def wait_for(self, match: Any, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                document = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no matching line from the probe in {timeout}s") from None
            if match(document):
                return document


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_lab(BFDD, "vtysh")
    if shutil.which("tc") is None:
        pytest.fail("tc (iproute2) is needed for the silent-link test")
    with Lab(PREFIX) as built:
        yield built


def _time_until(predicate: Any, timeout: float) -> float:
    start = time.monotonic()
    wait_until(predicate, timeout, 0.02, what="the BFD state change")
    return time.monotonic() - start


def test_session_comes_up_with_frr_and_a_daemon_crash_is_seen_in_a_detection_time(
    lab: Lab,
) -> None:
    bfdd = Bfdd(lab)
    probe = Probe(lab)
    probe.wait_for(lambda d: d.get("state") == "up", 10)
    wait_until(lambda: bfdd.status() == "up", 5, what="bfdd to see the session up")
    peer = bfdd.peer()
    assert peer is not None
    assert peer["remote-receive-interval"] == 300 and peer["remote-transmit-interval"] == 300
    # Stable: no flap over a few seconds at 300 ms x 3.
    time.sleep(3)
    assert bfdd.status() == "up"
    assert all(d.get("state") != "down" for d in list(probe.lines.queue))
    # The child reports its longest gap between packets while Up: at an idle 300 ms
    # rate it is the jittered interval (225-300 ms) plus scheduling, far below 900.
    gaps = probe.wait_for(lambda d: "max_tx_gap" in d, 3)["max_tx_gap"]
    assert 0.2 < gaps[Lab.TOR_V4] < 0.45, gaps

    assert probe.process.stdin is not None
    probe.process.stdin.close()  # the daemon is gone
    took = _time_until(lambda: bfdd.status() == "down", 5)
    # 0.9 s detection time, plus the polling of vtysh.
    assert took < 1.5, f"bfdd saw the crash after {took:.2f} s"
    assert bfdd.peer()["diagnostic"] == "control detection time expired"  # type: ignore[index]


def test_sigterm_sends_admin_down_so_the_peer_knows_it_was_on_purpose(lab: Lab) -> None:
    bfdd = Bfdd(lab)
    probe = Probe(lab)
    probe.wait_for(lambda d: d.get("state") == "up", 10)
    wait_until(lambda: bfdd.status() == "up", 5, what="bfdd to see the session up")
    probe.process.send_signal(signal.SIGTERM)
    admin = probe.wait_for(lambda d: "state" in d, 5)
    assert (
        admin["state"] == "admin-down" and admin["diagnostic"] == Diagnostic.ADMINISTRATIVELY_DOWN
    )
    wait_until(lambda: bfdd.status() == "down", 3, what="bfdd to take the session down")
    assert bfdd.peer()["remote-diagnostic"] == "administratively down"  # type: ignore[index]
    assert probe.process.wait(5) == 0


def test_a_silent_link_takes_our_session_down_in_under_a_second(lab: Lab) -> None:
    bfdd = Bfdd(lab)
    probe = Probe(lab)
    probe.wait_for(lambda d: d.get("state") == "up", 10)
    wait_until(lambda: bfdd.status() == "up", 5, what="bfdd to see the session up")
    # Both sides leave the slow (1 s) rate by Poll sequences once Up; let them finish.
    time.sleep(1.5)
    # Drop every packet while the link stays up (no netem in this kernel).
    for ns, ifname in ((lab.tor, Lab.TOR_IF), (lab.node, Lab.NODE_IF)):
        ns.run("tc", "qdisc", "replace", "dev", ifname, "root", "pfifo", "limit", "0")
    start = time.monotonic()
    down = probe.wait_for(lambda d: "state" in d, 5)
    took = time.monotonic() - start
    assert down["state"] == "down" and down["diagnostic"] == Diagnostic.DETECTION_TIME_EXPIRED
    assert took < 1.2, f"our session noticed the silence after {took:.2f} s"


def test_packets_with_a_ttl_below_255_or_garbage_are_dropped_and_counted(lab: Lab) -> None:
    bfdd = Bfdd(lab)
    probe = Probe(lab)
    probe.wait_for(lambda d: d.get("state") == "up", 10)
    forged = encode(
        ControlPacket(
            state=State.ADMIN_DOWN,
            diagnostic=Diagnostic.ADMINISTRATIVELY_DOWN,
            detect_multiplier=3,
            my_discriminator=1,
            your_discriminator=0,
            desired_min_tx=1_000_000,
            required_min_rx=1_000_000,
        )
    )
    with in_netns(lab.tor.name), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((Lab.TOR_V4, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 254)
        sock.sendto(forged, (Lab.NODE_V4, 3784))
        assert probe.wait_for(lambda d: "dropped" in d, 5)["dropped"] == {"ttl": 1}
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        for garbage in (b"\x00" * 24, b"\xff" * 3, forged[:20]):
            sock.sendto(garbage, (Lab.NODE_V4, 3784))
        # A flood of forged AdminDowns from a wrong source port and discriminator.
        for _ in range(2000):
            sock.sendto(forged, (Lab.NODE_V4, 3784))
    # The kernel may drop part of the flood itself (a full socket buffer); what reaches
    # the thread is counted. Totals come at most once a second: wait until they settle.
    totals: dict[str, int] = {}
    while True:
        try:
            totals = probe.wait_for(lambda d: "dropped" in d, 2.5)["dropped"]
        except TimeoutError:
            break
    assert {k: totals.get(k) for k in ("ttl", "version", "short")} == {
        "ttl": 1,
        "version": 1,
        "short": 2,
    }
    assert 1 <= totals.get("discriminator", 0) <= 2000, totals
    assert bfdd.status() == "up"
    assert all(d.get("state") != "down" for d in list(probe.lines.queue))
    assert probe.process.poll() is None
