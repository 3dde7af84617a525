"""What one bench run measured: one ``Result`` per (N, repetition, daemon version)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

ThreadTimes = dict[str, dict[str, float]]
"""CPU-seconds and wake-ups per thread name over one phase:
``{name: {"user_s": .., "sys_s": .., "wakeups": ..}}`` (``bench.threads``)."""


@dataclass(frozen=True)
class Version:
    """A daemon to measure: its label in the tables and the checkout it runs from."""

    label: str
    source: Path


@dataclass
class ChurnResult:
    """One sustained-churn run: ``rate`` EndpointSlice writes/s for ``seconds``."""

    rate: float
    seconds: float
    writes: int = 0
    connections: int = 1  # the bench's writer connections (bench/writers.py)
    achieved_rate: float = float("nan")
    flips: int = 0
    cpu_kvip_pct: float = float("nan")
    cpu_exabgp_pct: float = float("nan")
    cpu_api_pct: float = float("nan")  # the fake API's process, when it has its own
    machine_busy_pct: float = float("nan")  # all CPUs, % of the machine (/proc/stat)
    flip_p50_ms: float = float("nan")
    flip_p99_ms: float = float("nan")
    flip_max_ms: float = float("nan")
    # The same flips as they reached the receiver's interface (bench/wire.py), before the
    # receiver's own ExaBGP parsed them.
    wire_p50_ms: float = float("nan")
    wire_p99_ms: float = float("nan")
    wire_max_ms: float = float("nan")
    flips_missed: int = 0
    max_queue_depth: float = float("nan")
    frr_exact: bool = False
    frr_wrong: int = 0


@dataclass
class Result:
    n: int
    version: str = ""  # the daemon's checkout (git describe); --compare runs two
    rep: int = 0  # which repetition of --repeat
    baseline_cold_s: float = float("nan")
    baseline_warm_s: float = float("nan")
    cold_s: float = float("nan")
    burst_s: float = float("nan")
    burst_api_s: float = float("nan")
    burst_tail_s: float = float("nan")  # from the last write to N at FRR
    cold_ratio: float = float("nan")
    burst_ratio: float = float("nan")
    rss_kvip_mb: float = float("nan")
    rss_exabgp_mb: float = float("nan")
    rss_relay_mb: float = float("nan")
    idle_cpu_kvip_pct: float = float("nan")
    idle_cpu_exabgp_pct: float = float("nan")
    idle_cpu_relay_pct: float = float("nan")
    idle_seconds: float = float("nan")
    changes: int = 0
    latency_p50_ms: float = float("nan")
    latency_p99_ms: float = float("nan")
    latency_max_ms: float = float("nan")
    withdraw_p50_ms: float = float("nan")
    announce_p50_ms: float = float("nan")
    stop_s: float = float("nan")
    first_route_s: float = float("nan")
    session_s: float = float("nan")  # exec -> FRR shows the session Established
    baseline_cold_cpu_exabgp_s: float = float("nan")
    baseline_cold_cpu_feeder_s: float = float("nan")
    baseline_warm_cpu_exabgp_s: float = float("nan")
    baseline_warm_cpu_feeder_s: float = float("nan")
    baseline_api_s: float = float("nan")  # the burst's creates, no daemon watching
    baseline_api_cpu_s: float = float("nan")
    cold_cpu_kvip_s: float = float("nan")
    cold_cpu_exabgp_s: float = float("nan")
    cold_cpu_relay_s: float = float("nan")
    cold_cpu_bfd_s: float = float("nan")
    cold_cpu_api_s: float = float("nan")
    cold_cpu_ratio: float = float("nan")
    # CPU of short-lived children kvip-bgp and its processes started and reaped during
    # the cold start (cutime+cstime at N): 0 says the per-process figures miss nothing.
    cold_cpu_reaped_s: float = float("nan")
    burst_cpu_kvip_s: float = float("nan")
    burst_cpu_exabgp_s: float = float("nan")
    burst_cpu_relay_s: float = float("nan")
    burst_cpu_bfd_s: float = float("nan")
    burst_cpu_api_s: float = float("nan")
    burst_cpu_ratio: float = float("nan")
    bfd_max_tx_gap_ms: float = float("nan")
    bfd_downs: int = 0
    ipam_list_s: float = float("nan")
    ipam_plan_s: float = float("nan")
    churn: list[ChurnResult] = field(default_factory=list)
    # kvip-bgp's CPU per thread, per phase: cold, burst, churn-<rate> (bench.threads).
    threads: dict[str, ThreadTimes] = field(default_factory=dict)


BASELINE_FIELDS = tuple(f.name for f in fields(Result) if f.name.startswith("baseline_"))
