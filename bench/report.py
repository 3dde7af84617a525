"""The bench's output: the issue's targets, the tables, the verdicts, the files.

Every table is printed under ``header``: date, commit, machine (with the CPU a thread's
wake-up costs on it, ``wake_cpu_us``), mode and the exact command, so that it can be
pasted into docs/performance.md as it is.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import platform
import shlex
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bench.results import ChurnResult, Result, Version
from bench.stats import Metric, Summary
from bench.threads import flat_key

BENCH_DIR = Path(__file__).resolve().parent


TARGETS: dict[str, dict[str, Any]] = {
    # Issue 19's targets. ``n``: only at that N; ``rate``: only the churn row at that
    # rate; a key ``churn.X`` is field X of the churn rows.
    "cold_ratio": {"op": "<=", "limit": 1.3, "n": 10_000},
    "burst_ratio": {"op": "<=", "limit": 1.3, "n": 10_000},
    "cold_cpu_ratio": {"op": "<=", "limit": 0.5, "n": 10_000},
    "burst_cpu_ratio": {"op": "<=", "limit": 0.5, "n": 10_000},
    "first_route_s": {"op": "<=", "limit": 0.6, "n": 150},
    "rss_kvip_mb": {"op": "<=", "limit": 95.0, "n": 10_000},
    "latency_p99_ms": {"op": "<", "limit": 100.0},
    "idle_cpu_kvip_pct": {"op": "<", "limit": 1.0},
    "churn.cpu_kvip_pct": {"op": "<=", "limit": 30.0, "rate": 500.0},
    "churn.flip_p99_ms": {"op": "<=", "limit": 100.0},
}


def machine() -> dict[str, Any]:
    def sh(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": sh("nproc"),
        "memory_gib": sh("free", "-g").splitlines()[1].split()[1],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git": sh("git", "-C", str(BENCH_DIR.parent), "describe", "--always", "--dirty"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__(),
        "exabgp": _version("exabgp"),
        "frr": sh("/usr/lib/frr/bgpd", "--version").splitlines()[0]
        if Path("/usr/lib/frr/bgpd").exists()
        else "",
        "wake_cpu_us_10ms": round(wake_cpu_us(0.01), 1),
        "wake_cpu_us_0ms": round(wake_cpu_us(0.0), 1),
    }


def wake_cpu_us(seconds: float, iterations: int = 200) -> float:
    """Thread CPU, in microseconds, of one ``time.sleep(seconds)`` in a bare loop of a
    fresh thread: what a wake-up is charged on this machine before any Python runs
    (a thread's wake-ups in ``bench.threads`` times this is the platform's share).
    ``time.sleep(0)`` is a wake-up too (one voluntary switch each) with no timer."""
    spent: list[float] = []

    def loop() -> None:
        start = time.thread_time()
        for _ in range(iterations):
            time.sleep(seconds)
        spent.append(time.thread_time() - start)

    thread = threading.Thread(target=loop, name="bench-wake")
    thread.start()
    thread.join()
    return spent[0] / iterations * 1e6


def _version(package: str) -> str:
    from importlib.metadata import version

    try:
        return version(package)
    except Exception:
        return "?"


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


def table(results: Sequence[Result]) -> str:
    head = (
        "| N | baseline cold s | cold start s | ratio | baseline warm s | burst s | ratio | "
        "of it API writes s | API alone s | kvip-bgp RSS MB | ExaBGP RSS MB | "
        "idle CPU kvip-bgp % | idle CPU ExaBGP % | change p50/p99/max ms | SIGTERM->exit s |"
    )
    rows = [head, "|" + "---|" * 15]
    for r in results:
        latency = (
            f"{fmt(r.latency_p50_ms, 1)} / {fmt(r.latency_p99_ms, 1)} / {fmt(r.latency_max_ms, 1)}"
            if r.changes
            else "-"
        )
        rows.append(
            f"| {r.n:,} | {fmt(r.baseline_cold_s)} | {fmt(r.cold_s)} | {fmt(r.cold_ratio)} | "
            f"{fmt(r.baseline_warm_s)} | {fmt(r.burst_s)} | {fmt(r.burst_ratio)} | "
            f"{fmt(r.burst_api_s)} | {fmt(r.baseline_api_s)} | {fmt(r.rss_kvip_mb, 1)} | "
            f"{fmt(r.rss_exabgp_mb, 1)} | "
            f"{fmt(r.idle_cpu_kvip_pct)} | {fmt(r.idle_cpu_exabgp_pct)} | {latency} | "
            f"{fmt(r.stop_s, 1)} |"
        )
    return "\n".join(rows)


def cpu_table(results: Sequence[Result]) -> str:
    """CPU-seconds per process: cold start from exec to N at FRR, burst from the first
    write to N at FRR; the ratio is kvip-bgp over its own ExaBGP (same run)."""
    rows = [
        "| N | exec→first route s | cold: kvip-bgp / ExaBGP / relay / BFD / fake API CPU-s "
        "| CPU ratio | baseline cold: ExaBGP / feeder CPU-s | burst: kvip-bgp / ExaBGP / "
        "relay / BFD / fake API CPU-s | CPU ratio | baseline warm: ExaBGP / feeder CPU-s |",
        "|" + "---|" * 8,
    ]

    def cpus(r: Result, phase: str) -> str:
        keys = ("kvip", "exabgp", "relay", "bfd", "api")
        return " / ".join(fmt(getattr(r, f"{phase}_cpu_{key}_s")) for key in keys)

    for r in results:
        rows.append(
            f"| {r.n:,} | {fmt(r.first_route_s)} | {cpus(r, 'cold')} | "
            f"{fmt(r.cold_cpu_ratio)} | {fmt(r.baseline_cold_cpu_exabgp_s)} / "
            f"{fmt(r.baseline_cold_cpu_feeder_s)} | {cpus(r, 'burst')} | "
            f"{fmt(r.burst_cpu_ratio)} | {fmt(r.baseline_warm_cpu_exabgp_s)} / "
            f"{fmt(r.baseline_warm_cpu_feeder_s)} |"
        )
    return "\n".join(rows)


def churn_table(results: Sequence[Result]) -> str:
    rows = [
        "| N | rate /s (achieved, connections) | s | flips | CPU kvip-bgp % | CPU ExaBGP % | "
        "CPU fake API % | machine busy % | flip p50/p99/max ms | on the wire p50/p99/max ms | "
        "missed | max queue depth | FRR exact |",
        "|" + "---|" * 13,
    ]
    for r in results:
        for c in r.churn:
            rows.append(
                f"| {r.n:,} | {c.rate:g} ({c.achieved_rate:.0f}, {c.connections}) | "
                f"{c.seconds:g} | {c.flips} | "
                f"{fmt(c.cpu_kvip_pct, 1)} | {fmt(c.cpu_exabgp_pct, 1)} | "
                f"{fmt(c.cpu_api_pct, 1)} | {fmt(c.machine_busy_pct, 0)} | "
                f"{fmt(c.flip_p50_ms, 1)} / {fmt(c.flip_p99_ms, 1)} / {fmt(c.flip_max_ms, 1)} | "
                f"{fmt(c.wire_p50_ms, 1)} / {fmt(c.wire_p99_ms, 1)} / {fmt(c.wire_max_ms, 1)} | "
                f"{c.flips_missed} | {c.max_queue_depth:g} | "
                f"{'yes' if c.frr_exact else f'no ({c.frr_wrong} wrong)'} |"
            )
    return "\n".join(rows)


def verdicts(result: Result) -> list[str]:
    lines = []
    for key, target in TARGETS.items():
        if target.get("n") not in (None, result.n):
            continue
        op, limit = target["op"], target["limit"]
        if key.startswith("churn."):
            name = key.split(".", 1)[1]
            checked = [
                (f"N={result.n:,} {c.rate:g}/s {name}", getattr(c, name))
                for c in result.churn
                if target.get("rate") in (None, c.rate)
            ]
        else:
            checked = [(f"N={result.n:,} {key}", getattr(result, key))]
        for label, value in checked:
            if value != value:
                continue
            ok = value <= limit if op == "<=" else value < limit
            verdict = "met" if ok else "MISSED"
            lines.append(f"{label} = {value:.2f} (target {op} {limit:g}): {verdict}")
    return lines


def write_results(out: Path, meta: dict[str, Any], results: Sequence[Result]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = [asdict(r) for r in results]
    with open(out / f"bench-{stamp}.csv", "w", newline="") as handle:
        flat = [{k: v for k, v in row.items() if k not in ("churn", "threads")} for row in rows]
        writer = csv.DictWriter(handle, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    document = {"machine": meta, "results": rows, "targets": TARGETS}
    (out / f"bench-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    return out / f"bench-{stamp}.json"


def flat_rows(results: Sequence[Result]) -> list[dict[str, Any]]:
    """``asdict`` of each result with its churn rows flattened to ``churn_<rate>_<field>``
    and its threads to ``threads.flat_key`` (what ``bench.stats`` aggregates)."""
    rows = []
    for result in results:
        row = asdict(result)
        for churn in row.pop("churn"):
            for key, value in churn.items():
                row[f"churn_{churn['rate']:g}_{key}"] = value
        for phase, threads in row.pop("threads").items():
            for name, times in threads.items():
                for key, value in times.items():
                    row[flat_key(phase, name, key)] = value
        rows.append(row)
    return rows


def churn_metrics(rates: Sequence[float]) -> list[Metric]:
    metrics: list[Metric] = []
    for rate in rates:
        prefix = f"churn_{rate:g}"
        metrics += [
            (f"{prefix}_cpu_kvip_pct", f"{rate:g}/s: CPU kvip-bgp %", 1),
            (f"{prefix}_achieved_rate", f"{rate:g}/s: writes/s achieved", 0),
            (f"{prefix}_cpu_exabgp_pct", f"{rate:g}/s: CPU ExaBGP %", 1),
            (f"{prefix}_cpu_api_pct", f"{rate:g}/s: CPU fake API %", 1),
            (f"{prefix}_machine_busy_pct", f"{rate:g}/s: machine busy, % of all cores", 0),
            (f"{prefix}_flip_p99_ms", f"{rate:g}/s: flip p99 ms", 1),
            (f"{prefix}_wire_p99_ms", f"{rate:g}/s: flip p99 on the wire ms", 1),
            (f"{prefix}_max_queue_depth", f"{rate:g}/s: max queue depth", 0),
        ]
    return metrics


def median_result(
    rows: Sequence[dict[str, Any]], version: str, n: int, rates: Sequence[float] = ()
) -> Result:
    """A ``Result`` holding the median of each measured figure (for the verdicts), with
    a ``ChurnResult`` of medians for each of ``rates`` that some row measured."""
    mine = [row for row in rows if row["version"] == version and row["n"] == n]
    result = Result(n, version=version)
    for f in fields(Result):
        if f.type in ("float", float):
            setattr(result, f.name, Summary.of(row[f.name] for row in mine).median)
    for rate in rates:
        prefix = f"churn_{rate:g}_"
        measured = [row for row in mine if prefix + "rate" in row]
        if not measured:
            continue
        churn = ChurnResult(rate, float(measured[0][prefix + "seconds"]))
        for f in fields(ChurnResult):
            if f.type in ("float", float) and f.name not in ("rate", "seconds"):
                median = Summary.of(row[prefix + f.name] for row in measured).median
                setattr(churn, f.name, median)
        result.churn.append(churn)
    return result


# How the daemon reached the fake API, as the header says it (--credentials).
CREDENTIALS = {
    "kubeconfig": "kubeconfig, HTTP",
    "in-cluster": "in-cluster (env + service-account files), HTTPS",
}


def header(meta: dict[str, Any], argv: Sequence[str], versions: Sequence[Version]) -> str:
    """What the tables below were measured on and with, to paste above them."""
    compared = (
        f", compared with `{versions[1].label}` (`--compare {meta['compare']}`)"
        if len(versions) > 1
        else ""
    )
    return "\n".join(
        [
            f"kvip-bgp bench, {meta['date']}, commit `{versions[0].label}`{compared}",
            f"machine: {meta['nproc']} cores, {meta['memory_gib']} GiB, Linux {meta['kernel']},"
            f" Python {meta['python']}, ExaBGP {meta['exabgp']}, {meta['frr']}; load average "
            f"at start {meta['loadavg_at_start']}",
            f"wake-up CPU: {meta['wake_cpu_us_10ms']:.1f} µs of thread CPU per "
            f"time.sleep(0.01), {meta['wake_cpu_us_0ms']:.1f} µs per time.sleep(0) "
            "(a bare loop in a fresh thread)",
            f"mode: VIP binding {meta['binding']}; fake API {meta['api']}; "
            f"credentials {CREDENTIALS[meta.get('credentials', 'kubeconfig')]}",
            f"command: `python -m bench.run {shlex.join(argv)}`",
        ]
    )
