"""Live reload through a real ``kvip-bgp run`` process: SIGHUP, a changed file, refusals.

One daemon (static VIPs only, ExaBGP running with an unreachable peer) goes through the
steps in order; each step checks what /status and /metrics say and that the process is
still the same one.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.testing.netlab import wait_until

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(port: int, statics: list[str], asn: int = 64512, community: str = "64512:1") -> str:
    static = ", ".join(f"{{address: {vip}}}" for vip in statics)
    return textwrap.dedent(
        f"""\
        node_name: node-1
        bgp:
          asn: {asn}
          router_id: 192.0.2.1
          peers: [{{address: 192.0.2.2, asn: 64500}}]
        advertise: {{communities: ["{community}"]}}
        vips:
          allowed: ["198.51.100.0/24"]
          interface: null
        kubernetes: {{enabled: false}}
        static: [{static}]
        http: {{listen: "127.0.0.1:{port}"}}
        shutdown_timeout: 1
        """
    )


def get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return str(reply.read().decode())
    except urllib.error.HTTPError as error:
        return str(error.read().decode())


def status(port: int) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(get(port, "/status"))
    return document


def announced(port: int) -> dict[str, list[str]]:
    return {a["vip"]: a["communities"] for a in status(port)["announced"]}


def reloads(port: int, result: str) -> float:
    for line in get(port, "/metrics").splitlines():
        if line.startswith(f'kvip_bgp_config_reloads_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return -1.0


class Daemon:
    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.tmp = tmp_path
        self.config = tmp_path / "kvip-bgp.yaml"
        self.err = (tmp_path / "stderr").open("w+")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["run", "--config", str(self.config), "--runtime-dir", str(self.tmp / "run")]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kvip_bgp.cli", *argv],
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def log_events(self) -> list[dict[str, Any]]:
        self.err.flush()
        events = []
        for line in (self.tmp / "stderr").read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.err.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    yield d
    d.stop()


def test_sighup_and_file_changes_reload_without_a_restart(daemon: Daemon) -> None:
    port = daemon.port
    daemon.config.write_text(config_text(port, ["198.51.100.53"]))
    daemon.start()
    wait_until(lambda: "198.51.100.53" in announced(port), 30, what="the first static VIP")
    first_hash = status(port)["config"]["hash"]
    assert first_hash == hashlib.sha256(daemon.config.read_bytes()).hexdigest()
    pid = daemon.process.pid if daemon.process else 0

    # 1. SIGHUP: before the handler existed, this ended the daemon without a log line.
    daemon.config.write_text(
        config_text(port, ["198.51.100.53", "198.51.100.54"], community="64512:2")
    )
    daemon.signal(signal.SIGHUP)
    wait_until(
        lambda: (
            announced(port).get("198.51.100.54") == ["64512:2"]
            and announced(port).get("198.51.100.53") == ["64512:2"]
        ),
        10,
        what="the reload applied: a new static VIP, new communities on both",
    )
    assert daemon.alive()
    assert reloads(port, "ok") == 1
    assert status(port)["config"]["hash"] != first_hash

    # 2. An invalid file changes nothing and says every problem.
    daemon.config.write_text(
        config_text(port, ["198.51.100.53"]).replace("asn: 64500", "asn: 0") + "bogus: 1\n"
    )
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: reloads(port, "failed") == 1, 10, what="the failed reload counted")
    error = status(port)["config"]["last_reload_error"]
    assert any("bgp.peers[0].asn" in problem for problem in error), error
    assert any("bogus" in problem for problem in error), error
    assert set(announced(port)) == {"198.51.100.53", "198.51.100.54"}
    failed = [e for e in daemon.log_events() if e.get("event") == "config.reload_failed"]
    assert failed and len(failed[-1]["problems"]) == 2

    # 3. A key that needs a restart fails the whole reload, naming it.
    daemon.config.write_text(config_text(port, ["198.51.100.53"], asn=64999))
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: reloads(port, "failed") == 2, 10, what="the refused reload counted")
    assert "bgp.asn" in status(port)["config"]["last_reload_error"][0]
    assert set(announced(port)) == {"198.51.100.53", "198.51.100.54"}

    # 4. A ConfigMap-style symlink swap, no signal: applied within 10 s.
    data = daemon.tmp / "..2026_01_01_00_00_00.1"
    data.mkdir()
    (data / "kvip-bgp.yaml").write_text(config_text(port, ["198.51.100.54"], community="64512:3"))
    (daemon.tmp / "..data").symlink_to(data.name)
    link = daemon.tmp / "kvip-bgp.yaml.link"
    link.symlink_to("..data/kvip-bgp.yaml")
    started = time.monotonic()
    link.replace(daemon.config)  # the config path itself becomes the symlink, atomically
    wait_until(
        lambda: announced(port) == {"198.51.100.54": ["64512:3"]},
        10,
        what="the swapped file applied without a signal",
    )
    print(f"symlink swap applied after {time.monotonic() - started:.1f} s")
    assert status(port)["config"]["last_reload_error"] == []
    assert reloads(port, "ok") == 2
    assert daemon.alive() and daemon.process is not None and daemon.process.pid == pid

    # 5. The kubelet's own swap: a new timestamped directory, ``..data`` renamed over.
    data2 = daemon.tmp / "..2026_01_01_00_01_00.2"
    data2.mkdir()
    # With log.level: error, which applies in place too: the reload's own info line goes.
    quiet = config_text(port, ["198.51.100.55"], community="64512:3") + "log: {level: error}\n"
    (data2 / "kvip-bgp.yaml").write_text(quiet)
    reloaded = [e for e in daemon.log_events() if e.get("event") == "config.reloaded"]
    (daemon.tmp / "..data_tmp").symlink_to(data2.name)
    (daemon.tmp / "..data_tmp").replace(daemon.tmp / "..data")
    wait_until(
        lambda: announced(port) == {"198.51.100.55": ["64512:3"]},
        10,
        what="the ..data swap applied without a signal",
    )
    assert reloads(port, "ok") == 3
    assert daemon.alive()
    time.sleep(0.5)
    after = [e for e in daemon.log_events() if e.get("event") == "config.reloaded"]
    assert after == reloaded, "an info line was logged at log.level error"
