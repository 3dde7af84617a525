"""The pure parts of ``--repeat K --compare REV``: the order of the runs, the medians
and ranges of repeated samples, and the table that compares two versions.

Why alternate: on a shared 2-core machine the load drifts over minutes (others' tests,
a compile); K runs of one version followed by K of the other would put that drift into
the comparison. Running A, B, A, B... per phase makes both versions see the same drift,
and the baseline (ExaBGP alone) is measured again in every repetition, so each sample's
ratio is against a baseline of the same minute.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    """One phase-run: ``phase`` at ``n`` Services, repetition ``rep``, daemon ``version``
    (None for the baseline, which runs no daemon)."""

    n: int
    rep: int
    phase: str
    version: str | None


def schedule(
    sizes: Sequence[int],
    phases: Sequence[str],
    repeat: int,
    versions: Sequence[str],
    largest_only: Iterable[str] = ("latency", "churn"),
) -> Iterator[Step]:
    """Per N, per repetition: the baseline once (first, whatever the order of
    ``phases``), then each daemon phase once per version, alternating (A, B, A, B...).
    Phases in ``largest_only`` run at the largest N only."""
    only = set(largest_only)
    largest = max(sizes)
    ordered = sorted(phases, key=lambda phase: phase != "baseline")
    for n in sizes:
        for rep in range(repeat):
            for phase in ordered:
                if phase in only and n != largest:
                    continue
                if phase == "baseline":
                    yield Step(n, rep, phase, None)
                    continue
                for version in versions:
                    yield Step(n, rep, phase, version)


@dataclass(frozen=True)
class Summary:
    """Median and range of the finite samples (NaN ones are runs that did not measure it)."""

    median: float
    low: float
    high: float
    count: int

    @staticmethod
    def of(samples: Iterable[float]) -> Summary:
        finite = [x for x in samples if isinstance(x, (int, float)) and math.isfinite(x)]
        if not finite:
            nan = float("nan")
            return Summary(nan, nan, nan, 0)
        return Summary(statistics.median(finite), min(finite), max(finite), len(finite))

    def text(self, digits: int = 2) -> str:
        if self.count == 0:
            return "-"
        if self.count == 1:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}-{self.high:.{digits}f})"


def ratio(a: Summary, b: Summary) -> float:
    """The ratio of the medians, A over B (NaN if either is missing or B is 0)."""
    if a.count == 0 or b.count == 0 or b.median == 0:
        return float("nan")
    return a.median / b.median


Metric = tuple[str, str, int]  # (field, label, digits)

PHASE_METRICS: Mapping[str, Sequence[Metric]] = {
    "baseline": (
        ("baseline_cold_s", "ExaBGP alone, cold s", 2),
        ("baseline_warm_s", "ExaBGP alone, warm s", 2),
        ("baseline_cold_cpu_exabgp_s", "its ExaBGP CPU-s, cold", 2),
        ("baseline_warm_cpu_exabgp_s", "its ExaBGP CPU-s, warm", 2),
    ),
    "cold": (
        ("cold_s", "cold start s", 2),
        ("cold_ratio", "cold / baseline cold", 2),
        ("session_s", "exec → session up at FRR s", 2),
        ("first_route_s", "exec → first route s", 2),
        ("cold_cpu_kvip_s", "kvip-bgp CPU-s", 2),
        ("cold_cpu_exabgp_s", "ExaBGP CPU-s", 2),
        ("cold_cpu_ratio", "CPU kvip-bgp / ExaBGP", 2),
        ("cold_cpu_api_s", "fake API CPU-s", 2),
        ("rss_kvip_mb", "kvip-bgp RSS MB", 1),
        ("idle_cpu_kvip_pct", "idle CPU kvip-bgp %", 2),
    ),
    "burst": (
        ("burst_s", "burst s", 2),
        ("burst_ratio", "burst / baseline warm", 2),
        ("burst_api_s", "of it API writes s", 2),
        ("burst_tail_s", "last write → N at FRR s", 2),
        ("burst_cpu_kvip_s", "kvip-bgp CPU-s", 2),
        ("burst_cpu_exabgp_s", "ExaBGP CPU-s", 2),
        ("burst_cpu_ratio", "CPU kvip-bgp / ExaBGP", 2),
        ("burst_cpu_api_s", "fake API CPU-s", 2),
    ),
    "latency": (
        ("latency_p50_ms", "change p50 ms", 1),
        ("latency_p99_ms", "change p99 ms", 1),
        ("latency_max_ms", "change max ms", 1),
    ),
}


def summarize(rows: Iterable[Mapping[str, object]], version: str, n: int, field: str) -> Summary:
    """The samples of ``field`` among ``rows`` (result dicts) of ``version`` at ``n``."""
    values: list[float] = []
    for row in rows:
        if row.get("version") == version and row.get("n") == n:
            value = row.get(field)
            if isinstance(value, (int, float)):
                values.append(float(value))
    return Summary.of(values)


def repeat_table(
    rows: Sequence[Mapping[str, object]],
    versions: Sequence[str],
    sizes: Sequence[int],
    phases: Sequence[str],
    metrics: Mapping[str, Sequence[Metric]] = PHASE_METRICS,
) -> str:
    """Per N and phase, each metric's median (min-max) for each version and, with two
    versions, the ratio of the medians (first over second). Metrics no run measured
    are left out."""
    head = ["N", "phase", "metric", *(f"{v}: median (min-max)" for v in versions)]
    if len(versions) == 2:
        head.append(f"{versions[0]} / {versions[1]}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sizes:
        for phase in phases:
            for field, label, digits in metrics.get(phase, ()):
                summaries = [summarize(rows, v, n, field) for v in versions]
                if all(s.count == 0 for s in summaries):
                    continue
                cells = [f"{n:,}", phase, label, *(s.text(digits) for s in summaries)]
                if len(versions) == 2:
                    value = ratio(summaries[0], summaries[1])
                    cells.append("-" if math.isnan(value) else f"{value:.2f}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
