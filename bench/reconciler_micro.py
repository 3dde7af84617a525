"""CPU of the reconciler thread per route: a cold start's chunks, and a burst of creates.

Drives the real ``Reconciler.step`` with the real ``ExabgpAnnouncer`` and the default
binding (``FamilyTable``) on ``lo`` of a fresh network namespace (one per run, named
``rc-micro-*``). ExaBGP is a child process at the far end of the real API socket that
answers every command line with ``done``; the real ``ApiReader`` (the exabgp-reader
thread) reads the acks and posts them to the inbox, as in the daemon. The config is
``bench/run.py``'s: two eBGP peers (FRR and the receiver), one community for every VIP,
graceful restart.

- cold: both peers up, then N VIPs in chunks of 1,000 (as the cluster thread's first pass
  publishes them) and the source's sync; passes follow back to back while addresses are
  left to bind (as ``Reconciler.run`` does), then until every ack is taken.
- burst: synced with no VIPs, then N new VIPs in batches of ``--batch`` (the reconciler
  takes a burst every 60 ms: ~60 VIPs at ~1,000 creates a second), each pass with the
  acks of the pass before.

Timed: the reconciler's thread CPU inside ``step`` (``time.thread_time``: each pass's own
work; the pauses between passes and their wake-ups are left out), and the exabgp-reader
thread's CPU over the run (``/proc``'s schedstat). Also printed: a sha256 of everything
written to ExaBGP, so that two versions can be checked to send the same bytes.

Needs root (namespaces). Run from a worktree with ``PYTHONPATH=$PWD python -m
bench.reconciler_micro``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import ipaddress
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.bgp.api import ApiReader, listen_api_socket
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import Advertisement
from kvip_bgp.live import node_config, sources_of
from kvip_bgp.netif.addresses import FamilyTable
from kvip_bgp.process import tune_gc
from kvip_bgp.runtime.cluster import SOURCE
from kvip_bgp.runtime.messages import Inbox, Message, SourceSynced, VipDesired, post
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.netlab import Netns, cleanup, in_netns
from kvip_bgp.testing.scenario import daemon_config

from .cluster_micro import quiet_json_logs
from .run import RCV_ASN, RCV_LOCAL, RCV_PEER, VIP_ALLOWED, vip

PREFIX = "rc-micro-"
COLD_CHUNK = 1000
QUIET = 0.003  # seconds without a new ack: the acks of a pass are all in


def bench_config() -> Config:
    """``bench/run.py``'s daemon config with the receiver: the burst's two peers."""
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text("unused")
        raw = daemon_config(kubeconfig)
        raw["vips"] = {"allowed": [VIP_ALLOWED], "interface": "lo"}
        raw["bgp"]["peers"].append(
            {"address": RCV_PEER, "asn": RCV_ASN, "local_address": RCV_LOCAL}
        )
        return config_module.parse(raw)


def adverts(config: Config, count: int) -> list[VipDesired]:
    """What the cluster thread publishes for ``bench/run.py``'s Services: one shared
    attributes value (the config's default), one Service per VIP."""
    attributes = config.advertise
    messages = []
    for index in range(count):
        address = ipaddress.ip_address(vip(index))
        advert = Advertisement(address, attributes, (f"default/svc-{index:05d}",))
        messages.append(VipDesired(SOURCE, address, advert))
    return messages


def fake_exabgp(path: str, peers: Sequence[str]) -> None:
    """The child: connect, report every peer up, answer each line ``done``; on SIGTERM
    print how many lines came and their sha256."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    digest = hashlib.sha256()
    lines = 0

    def report(_signum: int, _frame: object) -> None:
        print(lines, digest.hexdigest(), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    for peer in peers:
        state = {"type": "state", "neighbor": {"address": {"peer": peer}, "state": "up"}}
        sock.sendall(json.dumps(state).encode() + b"\n")
    buffer = b""
    while data := sock.recv(1 << 16):
        digest.update(data)
        *done, buffer = (buffer + data).split(b"\n")
        if done:
            lines += len(done)
            sock.sendall(b"done\n" * len(done))


def thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process, from schedstat (nanoseconds)."""
    with open(f"/proc/self/task/{native_id}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


@dataclass
class Result:
    reconciler: float  # CPU seconds inside step
    reader: float  # CPU seconds of the exabgp-reader thread
    passes: int
    lines: int
    digest: str


class Harness:
    """One run: a namespace, the reconciler's parts, the API socket and its fake ExaBGP."""

    def __init__(self, config: Config, name: str, tmp: Path) -> None:
        self.netns = Netns.create(name)
        with in_netns(name):  # the netlink sockets keep the namespace they open in
            self.table = FamilyTable("lo", create=False)
        self.inbox: Inbox = CoalescingQueue()
        self.status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        metrics = Metrics()
        peers = config.bgp.peers
        announcer = ExabgpAnnouncer(node_config(config, peers), metrics)
        self.reconciler = Reconciler(
            self.inbox, self.table, announcer, metrics, self.status, sources_of(config, SOURCE)
        )
        path = tmp / f"{name}.sock"
        self.reader = ApiReader(listen_api_socket(path), lambda m: post(self.inbox, m))
        self.reader.start()
        command = [sys.executable, "-m", "bench.reconciler_micro", "--fake-exabgp", str(path)]
        command += [str(p.address) for p in peers]
        self.exabgp = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.cpu = 0.0
        self.passes = 0
        self.reconciler.start(time.monotonic())

    def step(self, messages: list[Message]) -> None:
        started = time.thread_time()
        self.reconciler.step(messages, time.monotonic())
        self.cpu += time.thread_time() - started
        self.passes += 1

    def acks(self, want: int = 1) -> list[Message]:
        """What the inbox holds once at least ``want`` messages came and it was quiet."""
        deadline = time.monotonic() + 5.0
        while self.inbox.depth() < want and time.monotonic() < deadline:
            time.sleep(0.0005)
        depth = -1
        while depth != self.inbox.depth() and time.monotonic() < deadline:
            depth = self.inbox.depth()
            time.sleep(QUIET)
        return [message for _key, message in self.inbox.drain(0)]

    def backlog(self) -> int:
        return self.status.read().bind_backlog

    def finish(self) -> tuple[float, int, str]:
        """Stop the fake ExaBGP: the reader's CPU, and the lines and digest it got."""
        reader = thread_cpu(self.reader.native_id or 0)
        self.exabgp.send_signal(signal.SIGTERM)
        out, _ = self.exabgp.communicate(timeout=10)
        self.reader.stop()
        self.reader.join(5)
        self.table.close()
        self.netns.delete()
        lines, digest = out.split()
        return reader, int(lines), digest


def run_once(config: Config, scenario: str, count: int, batch: int, name: str) -> Result:
    messages = adverts(config, count)
    with tempfile.TemporaryDirectory() as tmp:
        h = Harness(config, name, Path(tmp))
        h.step(h.acks(want=1 + len(config.bgp.peers)))  # connected, peers up: untimed
        if scenario == "burst":
            h.step([SourceSynced(SOURCE), *h.acks(0)])  # the first sync: End-of-RIB
        h.cpu, h.passes = 0.0, 0
        reader = thread_cpu(h.reader.native_id or 0)
        gc.collect()
        if scenario == "cold":
            for start in range(0, count, COLD_CHUNK):
                chunk: list[Message] = list(messages[start : start + COLD_CHUNK])
                h.step(chunk + [m for _k, m in h.inbox.drain(0)])
                while h.backlog():
                    h.step([m for _k, m in h.inbox.drain(0)])
            h.step([SourceSynced(SOURCE), *[m for _k, m in h.inbox.drain(0)]])
        else:
            for start in range(0, count, batch):
                h.step([*messages[start : start + batch], *h.acks()])
        while taken := h.acks():  # the last acks (none left after a quiet wait)
            h.step(taken)
        reader_end, lines, digest = h.finish()
    return Result(h.cpu, reader_end - reader, h.passes, lines, digest)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="VIPs (default 10,000)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batch", type=int, default=60, help="burst: new VIPs per pass")
    parser.add_argument("--scenario", choices=("cold", "burst"), action="append")
    parser.add_argument("--fake-exabgp", nargs="+", metavar="ARG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fake_exabgp:
        fake_exabgp(args.fake_exabgp[0], args.fake_exabgp[1:])
        return
    quiet_json_logs()
    tune_gc()  # the daemon's thresholds
    config = bench_config()
    cleanup(PREFIX)
    for scenario in args.scenario or ["cold", "burst"]:
        results = [
            run_once(config, scenario, args.n, args.batch, f"{PREFIX}{os.getpid()}-{i}")
            for i in range(args.repeat)
        ]
        per_route = [r.reconciler / args.n * 1e6 for r in results]
        reader = [r.reader / args.n * 1e6 for r in results]
        last = results[-1]
        digests = {r.digest for r in results}
        print(
            f"{scenario}: reconciler {statistics.median(per_route):.2f} us/route "
            f"(range {min(per_route):.2f}-{max(per_route):.2f}), exabgp-reader "
            f"{statistics.median(reader):.2f} us/route (range {min(reader):.2f}-"
            f"{max(reader):.2f}); {args.repeat} runs, {last.passes} passes, {last.lines} "
            f"lines, sha256 {last.digest[:16]}{'' if len(digests) == 1 else ' (runs differ)'}"
        )


if __name__ == "__main__":
    main()
