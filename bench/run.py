"""``make bench``: convergence, single-change latency, memory and CPU of kvip-bgp (issue 7).

Everything runs in the namespace lab, with the real parts:

    kvb-node: kvip-bgp (+ its ExaBGP), the fake Kubernetes API process, VIPs on lo
        | 192.0.2.1 <-> 192.0.2.2            | 203.0.113.1 <-> 203.0.113.2
    kvb-tor:  FRR bgpd, AS 64500            kvb-rcv: passive ExaBGP, AS 64600, whose
                                                     helper timestamps every UPDATE

The fake API (``kvip_bgp.testing.fakeapi``) runs in its own process in the node's
namespace, as a real API server is another process; the bench writes to it over HTTP
(``kvip_bgp.testing.fakeapi_remote``): every write that is measured is one REST request
(a create is a POST, a change a PUT), while seeding a cold start's objects and clearing
them between phases use the fake's ``/fake/objects`` bulk path, outside the timed part.
``--api in-process`` runs it in the bench's process with in-memory writes instead, as
before (for comparison; its CPU then hides in the bench's). ``--credentials in-cluster``
starts the daemon as a DaemonSet's pod starts: no kubeconfig, the in-cluster env and
service-account files (bound for the daemon only, ``kvip_bgp.testing.incluster``), and
the fake serving HTTPS only, to the bench's writer too.

For each N (Services, each with an EndpointSlice, VIPs 100.64.0.1 upwards, which exist
only inside these namespaces):

- baseline: ExaBGP alone, same config and FRR, fed the N prefixes by ``bench/feeder.py``
  in ``announce attributes ... nlri`` batches. "cold" = from starting ExaBGP to N
  prefixes at FRR; "warm" = from the first command line (session already up) to N.
- cold start: the API holds N Services; from ``kvip-bgp run`` to N prefixes at FRR.
  Then resident memory and idle CPU (utime+stime from /proc) of kvip-bgp, ExaBGP and the
  relay, over ``--idle-seconds`` without changes.
- burst: the daemon is up and synced with 0 Services; N Services + slices are written to
  the API one by one as fast as it takes them; from the first write to N at FRR.
- single-change latency (at the largest N): the receiver is a second peer of the
  daemon; ``--changes`` endpoint readiness flips, one at a time (ready -> not ready:
  withdraw; back: announce); latency = receiver's arrival time - the time the bench
  started the write (with the fake in its own process that includes the PUT's round
  trip, ~0.3-0.6 ms here, as it would with a real API server).

"N at FRR" is FRR's ``pfxRcd`` for the node, polled every 50 ms (a vtysh call), so
convergence times carry up to ~60 ms of observation delay; the baseline carries the same.
"exec → first route" (cold start) is from starting ``kvip-bgp run`` to the first poll
that shows one prefix at FRR: the same observation delay (up to 50 ms plus one vtysh
call), always late, never early.

CPU-seconds (utime+stime from /proc) per process: kvip-bgp's main process, the ExaBGP it
runs, ExaBGP's relay helper, the BFD process (with ``--bfd``) and the fake API process.
Cold start: from exec to the poll that sees N at FRR, read at that moment (while they
run: the processes are long-lived, /proc has nothing for them once reaped; the CPU of
children started and reaped meanwhile is ``cold_cpu_reaped_s`` in the JSON). Burst: the
difference between just before the first write and the poll that sees N. The CPU ratio
is kvip-bgp's CPU-seconds over those of its own ExaBGP child in the same phase (the
issue's "kvip-bgp CPU-seconds <= half of ExaBGP's"); the baseline's ExaBGP and feeder
(same N, same run) are shown beside it: cold from their exec, warm from the poll that
sees the session Established (the feeder then waits 1 s before its first line, so
that part of the warm figure is ExaBGP idling) to N at FRR. kvip-bgp's CPU per thread
(user and system apart) and its wake-ups are read at the same moments
(``bench.threads``), also over each churn row.
Results go to ``bench-results/`` as CSV and JSON; ``--profile`` additionally samples the
daemon and its children with py-spy (not used for the timing table: it slows them),
only the thread holding the GIL (``--gil``): without it py-spy also counts threads
waiting for the GIL or in a socket read, which put netlink first in a burst whose
binding costs nothing measurable (``--bind-interface none``: 4.71 against 4.75 CPU-s).

``--repeat K`` runs every phase K times per N, with the baseline again in every
repetition, and prints each figure's median and range; ``--compare REV`` also runs the
daemon of git revision REV (a temporary worktree, this venv), alternating with this
checkout's phase by phase (see ``bench.stats``), and prints the ratio of the medians.
The JSON keeps every sample. Every table is printed under a header with the date,
commit, machine, mode and command (``bench.report.header``).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import threads as per_thread
from bench.report import (
    churn_metrics,
    churn_table,
    cpu_table,
    flat_rows,
    fmt,
    header,
    machine,
    median_result,
    table,
    verdicts,
    write_results,
)
from bench.results import BASELINE_FIELDS, ChurnResult, Result, Version
from bench.stats import PHASE_METRICS, repeat_table, schedule
from bench.writers import Write, connections, write_all
from kvip_bgp.bgp.config import exabgp_environment
from kvip_bgp.testing.fakeapi_remote import FakeApiProcess, InMemoryStore, KubeStore
from kvip_bgp.testing.frr import FrrPeer
from kvip_bgp.testing.incluster import InCluster, fake_api_in_cluster
from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.procfs import (
    children,
    cmdline,
    cpu_seconds,
    process_roles,
    process_sample,
    reaped_children_cpu_seconds,
    thread_cpu,
)
from kvip_bgp.testing.scenario import NODE_ASN, TOR_ASN, Scenario, daemon_config

PREFIX = "kvb-"
BENCH_DIR = Path(__file__).resolve().parent
VIP_FIRST = ipaddress.ip_address("100.64.0.1")
VIP_ALLOWED = "100.64.0.0/18"  # 16,382 usable /32s; shared address space, lab-only
IPAM_POOL = "bench"  # --ipam: one pool, all of VIP_ALLOWED
RCV_LOCAL = "203.0.113.1"  # the node's end of the link to the receiver
RCV_PEER = "203.0.113.2"
RCV_ASN = 64600
POLL = 0.05


def vip(index: int) -> str:
    return str(VIP_FIRST + index)


def service_objects(count: int, allocated: bool = False) -> Iterator[dict[str, Any]]:
    """Service then its EndpointSlice (one ready endpoint on this node), for each index.

    ``allocated``: each Service also holds its VIP as the allocator leaves it (status and
    pool annotation), as a restarted Lease holder finds the cluster."""
    for index in range(count):
        name = f"svc-{index:05d}"
        if allocated:
            yield service(
                name,
                vip(index),
                ingress=[vip(index)],
                annotations={"kvip-bgp.io/ip-allocated-from-pool": IPAM_POOL},
            )
        else:
            yield service(name, vip(index))
        yield endpoint_slice(name, [NODE_NAME])


# ------------------------------------------------------------------------- /proc


def rss_mb(pid: int) -> float:
    sample = process_sample(pid)
    return sample.rss_kib / 1024.0 if sample is not None and sample.rss_kib else float("nan")


# ------------------------------------------------------------------------- FRR


def frr_prefixes(frr: FrrPeer, neighbor: str = Lab.NODE_V4) -> int:
    data = frr.vtysh_json("show bgp ipv4 unicast summary json")
    peers = data.get("peers") or (data.get("ipv4Unicast") or {}).get("peers") or {}
    entry = peers.get(neighbor) or {}
    return int(entry.get("pfxRcd", 0)) if entry.get("state") == "Established" else -1


def wait_prefixes(
    frr: FrrPeer,
    count: int,
    timeout: float,
    alive: Callable[[], None] = lambda: None,
) -> float:
    """Poll FRR until it holds ``count`` prefixes from the node; return when it did."""
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        last = frr_prefixes(frr)
        now = time.monotonic()
        if last >= count:
            return now
        alive()
        if now > deadline:
            raise TimeoutError(f"FRR has {last} of {count} prefixes after {timeout:g}s")
        time.sleep(POLL)


@dataclass(frozen=True)
class Arrival:
    """What one wait for N prefixes at FRR saw, in ``time.monotonic()`` seconds: the
    session Established (0 prefixes counted), the first prefix, N prefixes. Each is the
    end of the first vtysh call that showed it: up to ``POLL`` plus one call late."""

    established: float
    first: float
    done: float


def watch_prefixes(
    frr: FrrPeer,
    count: int,
    timeout: float,
    alive: Callable[[], None] = lambda: None,
    on_established: Callable[[], None] = lambda: None,
) -> Arrival:
    """``wait_prefixes`` that also notes the session's and the first prefix's arrival;
    ``on_established`` runs once, at the first poll that sees the session up."""
    deadline = time.monotonic() + timeout
    established = first = float("nan")
    while True:
        last = frr_prefixes(frr)
        now = time.monotonic()
        if last >= 0 and established != established:
            established = now
            on_established()
        if last >= 1 and first != first:
            first = now
        if last >= count:
            return Arrival(established, first, now)
        alive()
        if now > deadline:
            raise TimeoutError(f"FRR has {last} of {count} prefixes after {timeout:g}s")
        time.sleep(POLL)


def cpu_of(roles: dict[str, int]) -> dict[str, float]:
    """utime+stime so far of each role's process (read while it runs: /proc forgets a
    process's own CPU once it has exited and been reaped)."""
    return {role: cpu_seconds(pid) for role, pid in roles.items()}


def fresh_frr(frr: FrrPeer) -> None:
    """A restarted bgpd: no stale routes from the previous phase (graceful restart)."""
    frr.restart()


# ------------------------------------------------------------------------- ExaBGP alone


def exabgp_neighbor(peer: str, local: str, peer_asn: int, process: str) -> list[str]:
    """The same neighbor block kvip-bgp renders for the lab node (see exabgp.render_config)."""
    return [
        f"neighbor {peer} {{",
        f"    router-id {Lab.NODE_V4};",
        f"    local-address {local};",
        f"    local-as {NODE_ASN};",
        f"    peer-as {peer_asn};",
        "    hold-time 9;",
        "    outgoing-ttl 1;",
        "    family { ipv4 unicast; ipv6 unicast; }",
        "    capability { graceful-restart 30; }",
        "    manual-eor true;",
        "    adj-rib-in false;",
        f"    api {{ processes [ {process} ]; neighbor-changes; }}",
        "}",
    ]


@dataclass(frozen=True)
class BaselineRun:
    """One run of ExaBGP alone: seconds from starting ExaBGP (``cold_s``) and from the
    feeder's first command (``warm_s``) to N at FRR, and the CPU-seconds ExaBGP and the
    feeder used: from their exec (``cold``) or from the moment FRR saw the session
    Established, while the feeder still waits ``delay`` before its first line
    (``warm``), to N at FRR."""

    cold_s: float
    warm_s: float
    cpu_exabgp_s: float
    cpu_feeder_s: float


def run_baseline(
    scenario: Scenario, count: int, batch: int, delay: float, timeout: float
) -> BaselineRun:
    """ExaBGP alone fed ``count`` prefixes; see ``BaselineRun``."""
    lab, frr = scenario.lab, scenario.frr
    assert frr is not None
    fresh_frr(frr)
    workdir = lab.workdir / "baseline"
    workdir.mkdir(exist_ok=True)
    stamp = workdir / "first-write"
    stamp.unlink(missing_ok=True)
    script = BENCH_DIR / "feeder.py"
    feeder = f"{sys.executable} {script} {count} {VIP_FIRST} {batch} {delay} {stamp}"
    conf = workdir / "exabgp.conf"
    conf.write_text(
        "\n".join(
            [
                "process feeder {",
                f"    run {feeder};",
                "    encoder json;",
                "}",
                "",
                *exabgp_neighbor(Lab.TOR_V4, Lab.NODE_V4, TOR_ASN, "feeder"),
            ]
        )
        + "\n"
    )
    with open(workdir / "exabgp.log", "ab") as logfile:
        started = time.monotonic()
        proc = lab.popen(
            lab.node,
            [sys.executable, "-m", "exabgp", "server", str(conf)],
            env=exabgp_environment(),
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )

        def alive() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"baseline ExaBGP exited {proc.returncode}; see {workdir}")

        def roles() -> dict[str, int]:
            feeders = [c for c in children(proc.pid) if "feeder.py" in " ".join(cmdline(c))]
            return {"exabgp": proc.pid, **({"feeder": feeders[0]} if feeders else {})}

        at_session: dict[str, float] = {}
        try:
            arrival = watch_prefixes(
                frr,
                count,
                timeout,
                alive,
                on_established=lambda: at_session.update(cpu_of(roles())),
            )
            cpu = cpu_of(roles())
            first = float(stamp.read_text())
        finally:
            proc.terminate()
            proc.wait(10)
    if delay > 0:  # warm: count from the session's Established
        cpu = {role: used - at_session.get(role, 0.0) for role, used in cpu.items()}
    return BaselineRun(
        arrival.done - started,
        arrival.done - first,
        cpu.get("exabgp", float("nan")),
        cpu.get("feeder", float("nan")),
    )


# ------------------------------------------------------------------------- receiver


@dataclass
class ReceiverLog:
    """Tails the receiver helper's output: prefix -> [(time, 'A'|'W')]."""

    path: Path
    events: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    present: set[str] = field(default_factory=set)
    states: list[tuple[float, str]] = field(default_factory=list)
    # The same UPDATEs stamped as they reached the receiver's interface (bench/wire.py).
    wire: ReceiverLog | None = None
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.path.touch()
        threading.Thread(target=self._tail, daemon=True, name="receiver-tail").start()

    def stop(self) -> None:
        self._stop.set()

    def _tail(self) -> None:
        with open(self.path) as handle:
            partial = ""
            while not self._stop.is_set():
                chunk = handle.read()
                if not chunk:
                    time.sleep(0.002)
                    continue
                partial += chunk
                *lines, partial = partial.split("\n")
                with self._cond:
                    for line in lines:
                        stamp, kind, what = line.split(" ", 2)
                        if kind == "S":
                            self.states.append((float(stamp), what))
                            continue
                        self.events.setdefault(what, []).append((float(stamp), kind))
                        if kind == "A":
                            self.present.add(what)
                        else:
                            self.present.discard(what)
                    self._cond.notify_all()

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise TimeoutError(f"receiver: timed out after {timeout:g}s waiting for {what}")

    def arrival(self, prefix: str, kind: str, after: float, timeout: float) -> float:
        """The first ``kind`` event for ``prefix`` timestamped at or after ``after``."""
        found: list[float] = []

        def seen() -> bool:
            for stamp, got in self.events.get(prefix, ()):
                if got == kind and stamp >= after:
                    found.append(stamp)
                    return True
            return False

        self.wait(seen, timeout, f"{kind} {prefix}")
        return found[0]


def add_receiver_link(lab: Lab) -> None:
    rcv = lab.add_netns("rcv")
    lab.add_link(lab.node, "rcv0", rcv, "rcv1", (f"{RCV_LOCAL}/30",), (f"{RCV_PEER}/30",))


def receiver_of(scenario: Scenario, args: argparse.Namespace) -> ReceiverLog:
    """The lab's one receiver (it listens on the link's port 179), started on first use."""
    if args.receiver is None:
        args.receiver = start_receiver(scenario)
    receiver: ReceiverLog = args.receiver
    return receiver


def start_receiver(scenario: Scenario) -> ReceiverLog:
    lab = scenario.lab
    workdir = lab.workdir / "receiver"
    workdir.mkdir(exist_ok=True)
    out = workdir / "updates.log"
    out.unlink(missing_ok=True)
    wire = ReceiverLog(workdir / "wire.log")
    wire.start()
    lab.popen(  # before the session opens: the capture needs its SYN
        lab.namespaces["rcv"],
        [sys.executable, str(BENCH_DIR / "wire.py"), "rcv1", RCV_LOCAL, str(wire.path)],
        stderr=subprocess.DEVNULL,
    )
    log = ReceiverLog(out, wire=wire)
    log.start()
    conf = workdir / "exabgp.conf"
    helper = f"{sys.executable} {BENCH_DIR / 'receiver.py'} {out}"
    conf.write_text(
        f"""process receiver {{
    run {helper};
    encoder json;
}}

neighbor {RCV_LOCAL} {{
    router-id {RCV_PEER};
    local-address {RCV_PEER};
    local-as {RCV_ASN};
    peer-as {NODE_ASN};
    hold-time 9;
    passive true;
    listen 179;
    family {{ ipv4 unicast; }}
    api {{ processes [ receiver ]; neighbor-changes; receive {{ parsed; update; }} }}
}}
"""
    )
    logfile = open(workdir / "exabgp.log", "ab")  # noqa: SIM115 (closed with the lab)
    lab.popen(
        lab.namespaces["rcv"],
        [sys.executable, "-m", "exabgp", "server", str(conf)],
        env=exabgp_environment(),
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    lab.on_exit(logfile.close)
    lab.on_exit(log.stop)
    lab.on_exit(wire.stop)
    return log


# ------------------------------------------------------------------------- daemon


def bench_config(
    scenario: Scenario, args: argparse.Namespace, receiver: bool = False
) -> dict[str, Any]:
    config = daemon_config(args.kubeconfig)
    if args.in_cluster is not None:  # no kubeconfig: the in-cluster credentials
        config["kubernetes"] = {"enabled": True}
    config["vips"] = {"allowed": [VIP_ALLOWED], "interface": args.bind_interface}
    if args.bind_interface is not None and args.bind != "default":
        config["vips"]["bind"] = args.bind
    config["shutdown_timeout"] = 30
    if args.ipam:
        config["ipam"] = {"pools": [{"name": IPAM_POOL, "addresses": [VIP_ALLOWED]}]}
    if args.bfd:
        config["bgp"]["peers"][0]["bfd"] = {"min_rx": 300, "min_tx": 300, "multiplier": 3}
    if receiver:
        config["bgp"]["peers"].append(
            {"address": RCV_PEER, "asn": RCV_ASN, "local_address": RCV_LOCAL}
        )
    return config


class Profiler:
    """py-spy on the daemon and its children (ExaBGP, relay) while a phase runs."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.tag = ""  # appended to the file names (repeated runs do not overwrite)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        pyspy = Path(sys.executable).parent / "py-spy"
        self._proc = subprocess.Popen(
            [
                str(pyspy),
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--threads",
                "--gil",  # the thread running Python, not those waiting for it
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(self.directory / f"{name}{self.tag}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(30)
            self._proc = None


def start_daemon(
    scenario: Scenario,
    config: dict[str, Any],
    source: Path | None = None,
    in_cluster: InCluster | None = None,
) -> int:
    """The daemon of checkout ``source`` (``--compare``; None: the bench's own), with
    ``in_cluster`` credentials if given (whichever checkout it is)."""
    if scenario._log_handle is not None:
        scenario._log_handle.close()
    proc = scenario.start_daemon(config, source, in_cluster)
    return proc.pid


def stop_daemon(scenario: Scenario, result: Result | None = None) -> None:
    """SIGTERM and wait; record how long the shutdown took (``stop_s``); SIGKILL after 90 s.

    Then remove whatever VIP addresses are left on the node's lo, so the next phase binds
    from scratch like a fresh node.
    """
    started = time.monotonic()
    try:
        scenario.stop_daemon(timeout=90)
    except subprocess.TimeoutExpired:
        say("kvip-bgp did not stop within 90 s of SIGTERM; killed")
    if result is not None:
        result.stop_s = max(
            result.stop_s if result.stop_s == result.stop_s else 0.0, time.monotonic() - started
        )
    scenario.lab.node.run("ip", "addr", "flush", "dev", "lo", "scope", "global", timeout=120)


def wait_status_writes(store: KubeStore, count: int, timeout: float) -> None:
    """Wait until the daemon (Lease holder) wrote status.loadBalancer of every Service."""
    api = store
    wait_until(
        lambda: (
            sum(
                1
                for s in api.items("Service")
                if (s.get("status") or {}).get("loadBalancer", {}).get("ingress")
            )
            >= count
        ),
        timeout,
        interval=0.5,
        what=f"status.loadBalancer on {count} Services",
    )


def clear_services(store: KubeStore) -> None:
    for kind in ("EndpointSlice", "Service"):
        store.delete_all(kind)


def measure_idle(roles: dict[str, int], seconds: float) -> dict[str, float]:
    before = {role: cpu_seconds(pid) for role, pid in roles.items()}
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {
        role: 100.0 * (cpu_seconds(pid) - before[role]) / elapsed for role, pid in roles.items()
    }


def foreign_lease() -> dict[str, Any]:
    """The status-writer Lease, held by another node until 2099: this node never writes
    status.loadBalancer (like 79 of 80 nodes of a real cluster)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kvip-bgp-status-writer", "namespace": "kube-system"},
        "spec": {
            "holderIdentity": "node-2",
            "leaseDurationSeconds": 15,
            "acquireTime": "2099-01-01T00:00:00.000000Z",
            "renewTime": "2099-01-01T00:00:00.000000Z",
            "leaseTransitions": 0,
        },
    }


# ------------------------------------------------------------------------- phases


def bfd_cold_start_report(scenario: Scenario, result: Result) -> None:
    """With --bfd: the longest gap between BFD packets while Up, and any flap, from
    the daemon's metrics (the BFD process reports its gaps at most once a second)."""
    time.sleep(1.5)
    code, body = scenario.http("/metrics")
    if code != 200:
        return
    for line in body.decode().splitlines():
        if line.startswith("kvip_bgp_bfd_max_tx_gap_seconds{"):
            result.bfd_max_tx_gap_ms = float(line.rsplit(" ", 1)[1]) * 1000
        if line.startswith("kvip_bgp_bfd_state_changes_total{") and 'state="down"' in line:
            result.bfd_downs += int(float(line.rsplit(" ", 1)[1]))
    say(
        f"N={result.n} BFD during the cold start: longest gap between packets "
        f"{result.bfd_max_tx_gap_ms:.0f} ms (300 ms x 3 detects at 900), "
        f"{result.bfd_downs} session downs"
    )


def ipam_cold_start_report(scenario: Scenario, result: Result) -> None:
    """With --ipam: how long the Lease holder's own LIST and first plan took (its log)."""

    def first(event: str) -> dict[str, Any] | None:
        return next((line for line in scenario.log_lines() if line.get("event") == event), None)

    wait_until(lambda: first("ipam.planned") is not None, 30, what="the first allocation plan")
    listed, planned = first("ipam.listed"), first("ipam.planned")
    result.ipam_list_s = float((listed or {}).get("seconds", "nan"))
    result.ipam_plan_s = float((planned or {}).get("seconds", "nan"))
    say(
        f"N={result.n} first allocation pass: LIST {result.ipam_list_s:.3f} s, plan "
        f"{result.ipam_plan_s:.3f} s, {(planned or {}).get('writes')} writes"
    )


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def phase_cold(
    scenario: Scenario, result: Result, args: argparse.Namespace, profiler: Profiler
) -> None:
    n = result.n
    assert scenario.frr is not None
    clear_services(args.store)
    args.store.put_many(service_objects(n, args.allocated or args.ipam))  # not timed
    fresh_frr(scenario.frr)
    api_before = cpu_of(api_role(args))
    started = time.monotonic()
    pid = start_daemon(scenario, bench_config(scenario, args), args.source, args.in_cluster)
    profiler.start(pid, f"cold-{n}")
    try:
        arrival = watch_prefixes(scenario.frr, n, args.timeout, scenario.assert_daemon_alive)
        roles = process_roles(pid)
        cpu = cpu_of(roles)
        threads = thread_cpu(pid)
        cpu.update({r: used - api_before[r] for r, used in cpu_of(api_role(args)).items()})
        reaped = sum(reaped_children_cpu_seconds(p) for p in roles.values())
    finally:
        profiler.stop()
    result.cold_s = arrival.done - started
    result.first_route_s = arrival.first - started
    result.session_s = arrival.established - started
    store_cpu(result, "cold", cpu)
    result.threads["cold"] = per_thread.used(pid, {}, threads)
    result.cold_cpu_reaped_s = reaped
    say(
        f"N={n} cold start: {result.cold_s:.2f} s, session up at FRR after "
        f"{result.session_s:.2f} s, first route after {result.first_route_s:.2f} s; "
        f"{cpu_text(cpu)}"
    )
    if args.bfd:
        bfd_cold_start_report(scenario, result)
    if args.ipam:
        ipam_cold_start_report(scenario, result)
    if args.idle_seconds > 0:
        # Idle means after the Lease holder has written every Service's status (the
        # MODIFIED events those writes cause are part of converging, not of idling).
        if not args.not_leader:
            wait_status_writes(args.store, n, args.timeout)
        time.sleep(2.0)
        roles = process_roles(pid)
        profiler.start(pid, f"idle-{n}")
        try:
            cpu = measure_idle(roles, args.idle_seconds)
        finally:
            profiler.stop()
        result.idle_seconds = args.idle_seconds
        result.rss_kvip_mb = rss_mb(roles["kvip-bgp"])
        result.rss_exabgp_mb = rss_mb(roles["exabgp"])
        result.rss_relay_mb = rss_mb(roles["relay"]) if "relay" in roles else float("nan")
        result.idle_cpu_kvip_pct = cpu["kvip-bgp"]
        result.idle_cpu_exabgp_pct = cpu["exabgp"]
        result.idle_cpu_relay_pct = cpu.get("relay", float("nan"))
        say(
            f"N={n} RSS kvip-bgp {result.rss_kvip_mb:.1f} MB, ExaBGP {result.rss_exabgp_mb:.1f}"
            f" MB; idle CPU kvip-bgp {result.idle_cpu_kvip_pct:.2f}%, ExaBGP "
            f"{result.idle_cpu_exabgp_pct:.2f}% of a core over {args.idle_seconds:g} s"
        )
    stop_daemon(scenario, result)


def store_cpu(result: Result, phase: str, cpu: dict[str, float]) -> None:
    """``<phase>_cpu_<role>_s`` and the ratio kvip-bgp / its own ExaBGP."""
    for role, key in (("kvip-bgp", "kvip"), ("exabgp", "exabgp"), ("relay", "relay")):
        setattr(result, f"{phase}_cpu_{key}_s", cpu.get(role, float("nan")))
    setattr(result, f"{phase}_cpu_bfd_s", cpu.get("bfd", float("nan")))
    setattr(result, f"{phase}_cpu_api_s", cpu.get("fake-api", float("nan")))
    exabgp = cpu.get("exabgp", float("nan"))
    ratio = cpu.get("kvip-bgp", float("nan")) / exabgp if exabgp else float("nan")
    setattr(result, f"{phase}_cpu_ratio", ratio)


def api_role(args: argparse.Namespace) -> dict[str, int]:
    """``{"fake-api": pid}`` of the fake API process; empty when it runs in ours."""
    return {} if args.api_process is None else {"fake-api": args.api_process.pid}


def cpu_text(cpu: dict[str, float]) -> str:
    return "CPU " + ", ".join(f"{role} {used:.2f} s" for role, used in cpu.items())


def phase_burst(
    scenario: Scenario, result: Result, args: argparse.Namespace, profiler: Profiler
) -> None:
    n = result.n
    assert scenario.frr is not None
    clear_services(args.store)
    fresh_frr(scenario.frr)
    pid = start_daemon(scenario, bench_config(scenario, args), args.source, args.in_cluster)
    try:
        wait_until(
            lambda: scenario.http("/readyz")[0] == 200,
            60,
            what="kvip-bgp ready (synced, session up)",
        )
    except TimeoutError as error:
        raise TimeoutError(f"{error}\n{scenario.log_tail()}") from None
    time.sleep(1.0)
    objects = list(service_objects(n))
    api: KubeStore = args.store
    roles = {**process_roles(pid), **api_role(args)}
    profiler.start(pid, f"burst-{n}")
    try:
        before = cpu_of(roles)
        threads = thread_cpu(pid)
        started = time.monotonic()
        for obj in objects:
            api.create(obj)  # one create per call, as a client would send them
        result.burst_api_s = time.monotonic() - started
        done = wait_prefixes(scenario.frr, n, args.timeout, scenario.assert_daemon_alive)
        cpu = {role: used - before[role] for role, used in cpu_of(roles).items()}
        result.threads["burst"] = per_thread.used(pid, threads, thread_cpu(pid))
    finally:
        profiler.stop()
    result.burst_s = done - started
    result.burst_tail_s = result.burst_s - result.burst_api_s
    store_cpu(result, "burst", cpu)
    say(
        f"N={n} burst: {result.burst_s:.2f} s (API took the writes in "
        f"{result.burst_api_s:.2f} s); {cpu_text(cpu)}"
    )
    stop_daemon(scenario, result)


def settled_with_receiver(
    scenario: Scenario, args: argparse.Namespace, n: int, objects: Iterable[dict[str, Any]]
) -> tuple[ReceiverLog, int]:
    """The latency and churn phases' start: ``objects`` in the API, a fresh daemon that
    also peers with the receiver, every prefix at FRR and the receiver, statuses written
    (unless ``--not-leader``), then a moment of quiet. Returns the receiver and the pid."""
    assert scenario.frr is not None
    clear_services(args.store)
    args.store.put_many(objects)
    receiver = receiver_of(scenario, args)
    fresh_frr(scenario.frr)
    pid = start_daemon(
        scenario, bench_config(scenario, args, receiver=True), args.source, args.in_cluster
    )
    wait_prefixes(scenario.frr, n, args.timeout, scenario.assert_daemon_alive)
    receiver.wait(lambda: len(receiver.present) >= n, args.timeout, f"{n} prefixes")
    if not args.not_leader:
        wait_status_writes(args.store, n, args.timeout)
    time.sleep(2.0)
    return receiver, pid


def phase_latency(
    scenario: Scenario, result: Result, args: argparse.Namespace, profiler: Profiler
) -> None:
    n = result.n
    receiver, pid = settled_with_receiver(scenario, args, n, service_objects(n))
    assert scenario.frr is not None
    api: KubeStore = args.store
    samples: list[tuple[str, float]] = []
    profiler.start(pid, f"latency-{n}")
    try:
        for k in range(args.changes):
            index = (k // 2) * max(1, n // max(1, args.changes // 2)) % n
            ready = k % 2 == 1  # first flip: not ready (withdraw), then back (announce)
            name = f"svc-{index:05d}"
            prefix = f"{vip(index)}/32"
            written = time.monotonic()
            api.put(endpoint_slice(name, [(NODE_NAME, ready)]))
            kind = "A" if ready else "W"
            arrived = receiver.arrival(prefix, kind, written, 10.0)
            samples.append((kind, arrived - written))
            scenario.assert_daemon_alive()
            time.sleep(args.gap)
    finally:
        profiler.stop()
    latencies = sorted(s for _, s in samples)
    result.changes = len(samples)
    result.latency_p50_ms = 1000 * percentile(latencies, 50)
    result.latency_p99_ms = 1000 * percentile(latencies, 99)
    result.latency_max_ms = 1000 * latencies[-1]
    result.withdraw_p50_ms = 1000 * statistics.median(s for k, s in samples if k == "W")
    announce = [s for k, s in samples if k == "A"]
    result.announce_p50_ms = 1000 * statistics.median(announce) if announce else float("nan")
    say(
        f"N={n} single-change latency over {len(samples)} changes: p50 "
        f"{result.latency_p50_ms:.1f} ms, p99 {result.latency_p99_ms:.1f} ms, max "
        f"{result.latency_max_ms:.1f} ms"
    )
    stop_daemon(scenario, result)


CHURN_LOCAL_EVERY = 10  # every 10th Service is Local; the flips are ~1 write in 10
OTHER_NODE = "node-other"  # a node that never exists here: its pods count for Cluster


def churn_objects(count: int) -> Iterator[dict[str, Any]]:
    """``service_objects`` with every ``CHURN_LOCAL_EVERY``-th Service Local."""
    for index in range(count):
        name = f"svc-{index:05d}"
        local = index % CHURN_LOCAL_EVERY == 0
        yield service(name, vip(index), traffic_policy="Local" if local else "Cluster")
        yield endpoint_slice(name, [NODE_NAME])


def metric_value(body: bytes, name: str) -> float | None:
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def poll_depth(scenario: Scenario, stop: threading.Event, depth: list[float]) -> None:
    """Keep the largest ``kvip_bgp_queue_depth`` seen on /metrics in ``depth[0]``."""
    while not stop.wait(0.25):
        code, body = scenario.http("/metrics")
        value = metric_value(body, "kvip_bgp_queue_depth") if code == 200 else None
        if value is not None:
            depth[0] = max(depth[0], value)


def phase_churn(
    scenario: Scenario, result: Result, args: argparse.Namespace, profiler: Profiler
) -> None:
    """Sustained churn at each ``--churn-rate``: 9 writes in 10 add or remove a pod on
    another node to a Cluster Service (no announcement changes), 1 in 10 flips the only
    (local) endpoint of a Local Service (withdraw, then announce). Measured: kvip-bgp's
    and ExaBGP's CPU over the phase, the flips' latency at the receiver, the largest
    reconciler queue depth seen on /metrics, and FRR's table against the final state."""
    n = result.n
    receiver, pid = settled_with_receiver(scenario, args, n, churn_objects(n))
    assert scenario.frr is not None
    roles = {**process_roles(pid), **api_role(args)}
    api: KubeStore = args.store
    local = list(range(0, n, CHURN_LOCAL_EVERY))
    cluster = [i for i in range(n) if i % CHURN_LOCAL_EVERY]
    ready = dict.fromkeys(local, True)
    extra = dict.fromkeys(cluster, False)
    for rate in args.churn_rates:
        churn = ChurnResult(rate, args.churn_seconds)
        result.churn.append(churn)
        depth = [0.0]
        stop = threading.Event()
        poller = threading.Thread(
            target=poll_depth, args=(scenario, stop, depth), daemon=True, name="churn-depth"
        )
        poller.start()
        total = int(rate * args.churn_seconds)
        writes: list[Write] = []
        for k in range(total):  # the schedule, decided in write order by this thread
            if k % CHURN_LOCAL_EVERY == 0:
                index = local[(k // CHURN_LOCAL_EVERY) % len(local)]
                ready[index] = not ready[index]
                flip = "A" if ready[index] else "W"
                writes.append(Write(index, ((NODE_NAME, ready[index]),), flip))
            else:
                index = cluster[(k * 7919) % len(cluster)]
                extra[index] = not extra[index]
                nodes = (NODE_NAME, OTHER_NODE) if extra[index] else (NODE_NAME,)
                writes.append(Write(index, nodes))
        stores = [api, *(api.another() for _ in range(connections(rate) - 1))]
        churn.connections = len(stores)
        profiler.start(pid, f"churn-{n}-{rate:g}")
        before = {role: cpu_seconds(p) for role, p in roles.items()}
        threads = thread_cpu(pid)
        busy_before = machine_busy()
        try:
            sent, elapsed = write_all(
                stores,
                writes,
                rate,
                lambda w: endpoint_slice(f"svc-{w.index:05d}", list(w.nodes)),
            )
            after = {role: cpu_seconds(p) for role, p in roles.items()}
            result.threads[f"churn-{rate:g}"] = per_thread.used(pid, threads, thread_cpu(pid))
            busy_after = machine_busy()
        finally:
            profiler.stop()
            stop.set()
            poller.join()
            for extra_store in stores[1:]:
                extra_store.close()
        flips = [
            (f"{vip(w.index)}/32", w.flip, at) for w, at in zip(writes, sent, strict=True) if w.flip
        ]
        if args.keep:  # each flip's write, for whoever follows it through the lab's logs
            kept = scenario.lab.workdir / f"flips-{rate:g}.log"
            kept.write_text("".join(f"{at} {kind} {prefix}\n" for prefix, kind, at in flips))
        churn.machine_busy_pct = busy_share(busy_before, busy_after)
        if "fake-api" in roles:
            churn.cpu_api_pct = 100 * (after["fake-api"] - before["fake-api"]) / elapsed
        churn.writes = total
        churn.achieved_rate = total / elapsed
        churn.cpu_kvip_pct = 100 * (after["kvip-bgp"] - before["kvip-bgp"]) / elapsed
        churn.cpu_exabgp_pct = 100 * (after["exabgp"] - before["exabgp"]) / elapsed
        churn.max_queue_depth = depth[0]
        latencies: list[float] = []
        on_wire: list[float] | None = [] if receiver.wire is not None else None
        for prefix, kind, written in flips:
            try:
                latencies.append(receiver.arrival(prefix, kind, written, 10.0) - written)
            except TimeoutError:
                churn.flips_missed += 1
                continue
            try:  # the receiver had it, so the wire saw it before
                if on_wire is not None and receiver.wire is not None:
                    on_wire.append(receiver.wire.arrival(prefix, kind, written, 1.0) - written)
            except TimeoutError:
                say(f"the wire capture missed {kind} {prefix}: no wire latency for this row")
                on_wire = None
        latencies.sort()
        churn.flips = len(flips)
        if latencies:
            churn.flip_p50_ms = 1000 * percentile(latencies, 50)
            churn.flip_p99_ms = 1000 * percentile(latencies, 99)
            churn.flip_max_ms = 1000 * latencies[-1]
        if on_wire:
            on_wire.sort()
            churn.wire_p50_ms = 1000 * percentile(on_wire, 50)
            churn.wire_p99_ms = 1000 * percentile(on_wire, 99)
            churn.wire_max_ms = 1000 * on_wire[-1]
        expected = {f"{vip(i)}/32" for i in cluster} | {f"{vip(i)}/32" for i in local if ready[i]}
        wait_prefixes(scenario.frr, len(expected), 30.0, scenario.assert_daemon_alive)
        time.sleep(1.0)
        routes = set(scenario.frr.routes())
        churn.frr_wrong = len(routes ^ expected)
        churn.frr_exact = churn.frr_wrong == 0
        say(
            f"N={n} churn {rate:g}/s for {args.churn_seconds:g} s ({churn.achieved_rate:.0f}/s"
            f" achieved, {churn.flips} flips): CPU kvip-bgp {churn.cpu_kvip_pct:.1f}%, ExaBGP "
            f"{churn.cpu_exabgp_pct:.1f}%, fake API {churn.cpu_api_pct:.1f}% of a core, machine "
            f"{churn.machine_busy_pct:.0f}% busy; flips p50/p99/max "
            f"{fmt(churn.flip_p50_ms, 1)}/{fmt(churn.flip_p99_ms, 1)}/"
            f"{fmt(churn.flip_max_ms, 1)} ms ({churn.flips_missed} missed), on the wire "
            f"{fmt(churn.wire_p50_ms, 1)}/{fmt(churn.wire_p99_ms, 1)}/"
            f"{fmt(churn.wire_max_ms, 1)} ms; max queue depth "
            f"{churn.max_queue_depth:g}; FRR exact: {churn.frr_exact} ({churn.frr_wrong} wrong)"
        )
    stop_daemon(scenario, result)


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (idle and iowait are not busy)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How busy the whole machine was between two ``machine_busy`` readings, in % of all
    its cores: near 100 the churn row measures a saturated machine, not only us."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, -(-len(values) * pct // 100))
    return values[int(rank) - 1]


# ------------------------------------------------------------------------- main


def start_api(scenario: Scenario, args: argparse.Namespace) -> None:
    """``args.store``/``kubeconfig``/``api_process``: the fake API the phases write to."""
    if args.api == "in-process":
        args.store, args.kubeconfig, args.api_process = (
            InMemoryStore(scenario.api),
            scenario.kubeconfig,
            None,
        )
        return
    lab = scenario.lab
    if args.credentials == "in-cluster":
        args.api_process, args.in_cluster = fake_api_in_cluster(lab, lab.workdir)
    else:
        args.api_process = FakeApiProcess(lab, lab.node, lab.workdir / "fakeapi")
    args.store, args.kubeconfig = args.api_process.client, args.api_process.kubeconfig
    say(f"fake API: its own process (pid {args.api_process.pid}) at {args.api_process.url}")


PHASE_ORDER = ("baseline", "cold", "burst", "latency", "churn")
THIS_CHECKOUT = BENCH_DIR.parent


def git(*argv: str, cwd: Path = THIS_CHECKOUT) -> str:
    done = subprocess.run(
        ["git", "-C", str(cwd), *argv], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def precompile(checkout: Path) -> None:
    """Byte-compile a version's package before its daemons start, as ``pip install`` does
    for the image: the lab's environment sets PYTHONDONTWRITEBYTECODE, so without this
    every start compiles our modules again (~50 ms of the 150-Service first route)."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(checkout / "kvip_bgp")],
        check=True,
        stdout=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def versions_of(args: argparse.Namespace) -> Iterator[list[Version]]:
    """This checkout and, with ``--compare REV``, REV checked out in a temporary
    ``git worktree`` (removed afterwards). Both daemons run with this venv's interpreter
    and this checkout's fake API, FRR and bench."""
    this = git("describe", "--always", "--dirty")
    precompile(THIS_CHECKOUT)
    if args.compare is None:
        yield [Version(this, THIS_CHECKOUT)]
        return
    tmp = Path(tempfile.mkdtemp(prefix=f"{args.prefix}compare-"))
    source = tmp / "src"
    try:
        git("worktree", "add", "--detach", str(source), args.compare)
        other = git("describe", "--always", cwd=source)
        precompile(source)
        if other == this:
            this, other = f"{this} (A)", f"{other} (B)"
        say(f"comparing {this} (this checkout) with {other} ({args.compare}, in {source})")
        yield [Version(this, THIS_CHECKOUT), Version(other, source)]
    finally:
        subprocess.run(
            ["git", "-C", str(THIS_CHECKOUT), "worktree", "remove", "--force", str(source)],
            check=False,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def run_baselines(scenario: Scenario, result: Result, args: argparse.Namespace) -> None:
    n = result.n
    batch = args.batch or n
    cold = run_baseline(scenario, n, batch, 0.0, args.timeout)
    warm = run_baseline(scenario, n, batch, 1.0, args.timeout)
    result.baseline_cold_s, result.baseline_warm_s = cold.cold_s, warm.warm_s
    result.baseline_cold_cpu_exabgp_s = cold.cpu_exabgp_s
    result.baseline_cold_cpu_feeder_s = cold.cpu_feeder_s
    result.baseline_warm_cpu_exabgp_s = warm.cpu_exabgp_s
    result.baseline_warm_cpu_feeder_s = warm.cpu_feeder_s
    say(
        f"N={n} baseline (ExaBGP alone, {batch} prefixes/line): cold "
        f"{result.baseline_cold_s:.2f} s (CPU ExaBGP {cold.cpu_exabgp_s:.2f} s, "
        f"feeder {cold.cpu_feeder_s:.2f} s), warm {result.baseline_warm_s:.2f} s "
        f"(CPU ExaBGP {warm.cpu_exabgp_s:.2f} s, feeder {warm.cpu_feeder_s:.2f} s)"
    )
    if "burst" in args.phases:
        api_alone(result, args)


def api_alone(result: Result, args: argparse.Namespace) -> None:
    """The burst's 2 x N creates with no daemon running (no watches): how long the API
    itself takes them, to set against the burst's "of it API writes"."""
    clear_services(args.store)
    objects = list(service_objects(result.n))
    before = cpu_of(api_role(args))
    started = time.monotonic()
    for obj in objects:
        args.store.create(obj)
    result.baseline_api_s = time.monotonic() - started
    after = cpu_of(api_role(args))
    result.baseline_api_cpu_s = after.get("fake-api", float("nan")) - before.get(
        "fake-api", float("nan")
    )
    clear_services(args.store)
    say(
        f"N={result.n} API alone: {len(objects)} creates in {result.baseline_api_s:.2f} s "
        f"(fake API CPU {result.baseline_api_cpu_s:.2f} s)"
    )


def phases_of(args: argparse.Namespace) -> list[str]:
    wanted = set(args.phases)
    if args.changes <= 0:
        wanted.discard("latency")
    if not args.churn_rates:
        wanted.discard("churn")
    return [phase for phase in PHASE_ORDER if phase in wanted]


def run(args: argparse.Namespace, versions: Sequence[Version]) -> list[Result]:
    """Every step of ``bench.stats.schedule``: per N and repetition the baseline, then
    each phase once per version, alternating. One ``Result`` per (N, repetition,
    version), holding that repetition's baseline; the ratios are against it."""
    daemon_phases: dict[str, Callable[[Scenario, Result, argparse.Namespace, Profiler], None]]
    daemon_phases = {
        "cold": phase_cold,
        "burst": phase_burst,
        "latency": phase_latency,
        "churn": phase_churn,
    }
    sources = {v.label: v.source for v in versions}
    steps = list(schedule(args.sizes, phases_of(args), args.repeat, list(sources)))
    results: dict[tuple[int, int, str], Result] = {}
    baselines: dict[tuple[int, int], Result] = {}
    profiler = Profiler(args.profile)
    with Scenario(
        kubernetes=args.api == "in-process",
        prefix=args.prefix,
        topology=add_receiver_link,
        keep_workdir=args.keep,
    ) as scenario:
        say(f"lab work directory: {scenario.lab.workdir}")
        start_api(scenario, args)
        args.store.put(node())
        if args.bfd:
            from kvip_bgp.testing.bfdd import Bfdd

            Bfdd(scenario.lab)
        if args.not_leader:
            args.store.put(foreign_lease())
        for step in steps:
            if step.version is None:
                baseline = baselines[(step.n, step.rep)] = Result(step.n, rep=step.rep)
                run_baselines(scenario, baseline, args)
                continue
            key = (step.n, step.rep, step.version)
            result = results.get(key)
            if result is None:
                result = results[key] = Result(step.n, version=step.version, rep=step.rep)
                base = baselines.get((step.n, step.rep))
                for name in BASELINE_FIELDS if base is not None else ():
                    setattr(result, name, getattr(base, name))
            if len(versions) > 1 or args.repeat > 1:
                say(f"-- {step.phase} at N={step.n}, {step.version}, run {step.rep + 1}")
                profiler.tag = f"-{len(results)}"
            args.source = sources[step.version]
            daemon_phases[step.phase](scenario, result, args, profiler)
    for result in results.values():
        result.cold_ratio = result.cold_s / result.baseline_cold_s
        result.burst_ratio = result.burst_s / result.baseline_warm_s
    measured = {(r.n, r.rep) for r in results.values()}
    alone = [b for key, b in baselines.items() if key not in measured]
    return sorted([*results.values(), *alone], key=lambda r: (r.n, r.rep))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[150, 1000, 10000]
    )
    parser.add_argument("--changes", type=int, default=200, help="single changes at the largest N")
    parser.add_argument("--gap", type=float, default=0.05, help="pause between single changes (s)")
    parser.add_argument("--idle-seconds", type=float, default=35.0, help="0: skip RSS/idle CPU")
    parser.add_argument(
        "--batch", type=int, default=2000, help="baseline prefixes per line (0: all in one)"
    )
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--phases",
        type=lambda s: set(s.split(",")),
        default={"baseline", "cold", "burst", "latency", "churn"},
        help="comma-separated subset of baseline,cold,burst,latency,churn",
    )
    parser.add_argument(
        "--churn-rates",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[500.0, 2000.0],
        help="EndpointSlice writes/s of the churn rows (at the largest N)",
    )
    parser.add_argument(
        "--churn-seconds", type=float, default=60.0, help="length of each churn row (s)"
    )
    parser.add_argument(
        "--not-leader",
        action="store_true",
        help="another node holds the status-writer Lease: no status.loadBalancer writes",
    )
    parser.add_argument(
        "--prefix",
        default=PREFIX,
        help=f"namespace prefix of the lab (default {PREFIX}); two benches need two prefixes",
    )
    parser.add_argument(
        "--bind-interface",
        type=lambda s: None if s == "none" else s,
        default="lo",
        help="vips.interface of the daemon (default lo); 'none' binds nothing, to measure "
        "what binding costs",
    )
    parser.add_argument(
        "--bind",
        choices=("default", "by-family", "address", "local-route"),
        default="default",
        help="vips.bind of the daemon; 'default' (the default) leaves the key out, so each "
        "version of --compare runs with its own default",
    )
    parser.add_argument(
        "--bfd",
        action="store_true",
        help="BFD (300 ms x 3) to the ToR's bfdd: report the longest gap between our BFD "
        "packets during the cold start",
    )
    parser.add_argument(
        "--allocated",
        action="store_true",
        help="the cold start's Services already hold their VIP in status (with the pool "
        "annotation): the objects of --ipam without pools, its A/B reference",
    )
    parser.add_argument(
        "--ipam",
        action="store_true",
        help="one pool over the VIP range, Services already allocated (implies "
        "--allocated): what the first allocation pass adds to a leader's cold start; "
        "use with --phases cold",
    )
    parser.add_argument(
        "--api",
        choices=("process", "in-process"),
        default="process",
        help="the fake Kubernetes API in its own process, written to over HTTP (default, "
        "as a real API server would be) or in the bench's process, written to in memory",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run every phase K times (per N; the baseline again each time) and print "
        "medians and ranges",
    )
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also run the daemon of git revision REV (a temporary worktree, same venv), "
        "alternating with this checkout's phase by phase; prints both and the ratio of "
        "the medians",
    )
    parser.add_argument(
        "--credentials",
        choices=("kubeconfig", "in-cluster"),
        default="kubeconfig",
        help="how the daemon finds the fake API: a kubeconfig, over HTTP (default), or "
        "as a DaemonSet's pod: in-cluster env and service-account files, HTTPS only "
        "(needs --api process)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the lab's work directory; the churn rows also leave there each flip's "
        "write time (flips-RATE.log) beside the receiver's updates.log and wire.log",
    )
    parser.add_argument("--profile", type=Path, help="also write py-spy raw profiles here")
    # receiver_of: shared by the latency and churn phases; start_api: the fake API;
    # source: the checkout whose daemon runs (run_versions).
    # in_cluster: start_api's InCluster with --credentials in-cluster.
    parser.set_defaults(
        receiver=None, store=None, kubeconfig=None, api_process=None, source=None, in_cluster=None
    )
    args = parser.parse_args(argv)
    if args.credentials == "in-cluster" and args.api != "process":
        parser.error("--credentials in-cluster needs --api process")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("make bench needs root (network namespaces)", file=sys.stderr)
        return 1
    meta = machine()
    mode = "the daemon's default vips.bind" if args.bind == "default" else args.bind
    meta["binding"] = "none" if args.bind_interface is None else f"{mode} on {args.bind_interface}"
    meta["api"] = "in its own process" if args.api == "process" else "in the bench's process"
    meta["credentials"] = args.credentials
    meta["compare"] = args.compare
    meta["repeat"] = args.repeat
    meta["command"] = ["python", "-m", "bench.run", *argv]
    with versions_of(args) as versions:
        meta["versions"] = {v.label: str(v.source) for v in versions}
        results = run(args, versions)
    path = write_results(args.out, meta, results)
    print()
    print(header(meta, argv, versions))
    print()
    labels = [v.label for v in versions]
    if len(versions) == 1 and args.repeat == 1:
        print(table(results))
        print()
        print(cpu_table(results))
        if any(r.churn for r in results):
            print()
            print(churn_table(results))
        if any(r.threads for r in results):
            print()
            print(per_thread.table(results))
        checked = [r for r in results if r.version]
    else:
        rows = flat_rows(results)
        phases = phases_of(args)
        metrics = {**PHASE_METRICS, "churn": churn_metrics(args.churn_rates)}
        for phase in ("cold", "burst"):
            metrics[phase] = [*metrics[phase], *per_thread.metrics(results, phase)]
        for rate in args.churn_rates:
            metrics["churn"] = [*metrics["churn"], *per_thread.metrics(results, f"churn-{rate:g}")]
        print(f"{args.repeat} runs of each, alternating; median (min-max) of the runs:")
        print(repeat_table(rows, labels, args.sizes, phases, metrics))
        checked = [median_result(rows, labels[0], n, args.churn_rates) for n in args.sizes]
        print(f"\nTargets, against the medians of {labels[0]}:")
    for result in checked:
        for line in verdicts(result):
            print(line)
    print(f"results (every sample): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
