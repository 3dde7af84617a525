"""The pure parts of ``make bench --repeat K --compare REV``: run order, medians and
ranges, the comparison table, the header above it."""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import report
from bench.results import ChurnResult, Result, Version
from bench.stats import Step, Summary, ratio, repeat_table, schedule, summarize


def test_schedule_alternates_versions_per_phase_with_a_baseline_per_repetition() -> None:
    steps = list(schedule([150, 1000], ["baseline", "cold", "burst", "latency"], 2, ["A", "B"]))
    assert [(s.n, s.rep, s.phase, s.version) for s in steps[:7]] == [
        (150, 0, "baseline", None),
        (150, 0, "cold", "A"),
        (150, 0, "cold", "B"),
        (150, 0, "burst", "A"),
        (150, 0, "burst", "B"),
        (150, 1, "baseline", None),
        (150, 1, "cold", "A"),
    ]
    # latency only at the largest N
    assert {s.n for s in steps if s.phase == "latency"} == {1000}
    assert steps[-2:] == [Step(1000, 1, "latency", "A"), Step(1000, 1, "latency", "B")]


@given(
    sizes=st.lists(st.integers(1, 20_000), min_size=1, max_size=4, unique=True),
    phases=st.lists(
        st.sampled_from(["baseline", "cold", "burst", "latency", "churn"]), unique=True
    ),
    repeat=st.integers(1, 4),
    versions=st.lists(st.sampled_from(["A", "B", "C"]), min_size=1, max_size=3, unique=True),
)
def test_schedule_properties(
    sizes: list[int], phases: list[str], repeat: int, versions: list[str]
) -> None:
    steps = list(schedule(sizes, phases, repeat, versions))
    largest = max(sizes)
    for phase in phases:
        for n in sizes:
            runs = [s for s in steps if s.phase == phase and s.n == n]
            if phase in ("latency", "churn") and n != largest:
                assert runs == []
            elif phase == "baseline":
                assert [s.rep for s in runs] == list(range(repeat))
            else:
                # every version once per repetition, in the given order, back to back
                assert [(s.rep, s.version) for s in runs] == [
                    (rep, v) for rep in range(repeat) for v in versions
                ]
                for rep in range(repeat):
                    at = [
                        i
                        for i, s in enumerate(steps)
                        if s.phase == phase and s.n == n and s.rep == rep
                    ]
                    assert at == list(range(at[0], at[0] + len(versions)))
    # the baseline of a repetition comes before that repetition's daemon phases
    for i, step in enumerate(steps):
        if step.version is not None and "baseline" in phases:
            assert any(
                s.phase == "baseline" and s.n == step.n and s.rep == step.rep for s in steps[:i]
            )


@given(st.lists(st.floats(0, 1e6) | st.just(float("nan")), max_size=12))
def test_summary_is_median_and_range_of_the_finite_samples(samples: list[float]) -> None:
    summary = Summary.of(samples)
    finite = [x for x in samples if not math.isnan(x)]
    assert summary.count == len(finite)
    if finite:
        assert summary.median == statistics.median(finite)
        assert (summary.low, summary.high) == (min(finite), max(finite))
        assert summary.low <= summary.median <= summary.high
    else:
        assert math.isnan(summary.median)


@pytest.mark.parametrize(
    ("samples", "text"),
    [
        ([], "-"),
        ([float("nan")], "-"),
        ([1.234], "1.23"),
        ([3.0, 1.0, 2.0], "2.00 (1.00-3.00)"),
        ([4.0, 1.0], "2.50 (1.00-4.00)"),
    ],
)
def test_summary_text(samples: list[float], text: str) -> None:
    assert Summary.of(samples).text() == text


def test_ratio_of_medians() -> None:
    assert ratio(Summary.of([2.0, 4.0, 100.0]), Summary.of([1.0, 2.0, 2.0])) == 2.0
    assert math.isnan(ratio(Summary.of([]), Summary.of([1.0])))
    assert math.isnan(ratio(Summary.of([1.0]), Summary.of([0.0])))


ROWS = [
    {"version": "A", "n": 150, "cold_s": 1.0, "burst_s": float("nan")},
    {"version": "B", "n": 150, "cold_s": 2.0, "burst_s": float("nan")},
    {"version": "A", "n": 150, "cold_s": 3.0, "burst_s": float("nan")},
    {"version": "B", "n": 150, "cold_s": 4.0, "burst_s": float("nan")},
    {"version": "A", "n": 1000, "cold_s": 5.0},
]


def test_summarize_picks_version_and_n() -> None:
    assert summarize(ROWS, "A", 150, "cold_s") == Summary(2.0, 1.0, 3.0, 2)
    assert summarize(ROWS, "B", 1000, "cold_s").count == 0


def test_repeat_table_two_versions() -> None:
    metrics = {"cold": [("cold_s", "cold start s", 2)], "burst": [("burst_s", "burst s", 2)]}
    text = repeat_table(ROWS, ["A", "B"], [150, 1000], ["cold", "burst"], metrics)
    assert text.splitlines() == [
        "| N | phase | metric | A: median (min-max) | B: median (min-max) | A / B |",
        "|---|---|---|---|---|---|",
        "| 150 | cold | cold start s | 2.00 (1.00-3.00) | 3.00 (2.00-4.00) | 0.67 |",
        "| 1,000 | cold | cold start s | 5.00 | - | - |",
    ]


def test_repeat_table_one_version_has_no_ratio_column() -> None:
    metrics = {"cold": [("cold_s", "cold start s", 1)]}
    text = repeat_table(ROWS, ["A"], [150], ["cold"], metrics)
    assert text.splitlines() == [
        "| N | phase | metric | A: median (min-max) |",
        "|---|---|---|---|",
        "| 150 | cold | cold start s | 2.0 (1.0-3.0) |",
    ]


def test_flat_rows_and_median_result() -> None:
    one = Result(150, version="A", rep=0, cold_s=1.0)
    one.churn.append(ChurnResult(500.0, 60.0, cpu_kvip_pct=20.0))
    two = Result(150, version="A", rep=1, cold_s=3.0)
    two.churn.append(ChurnResult(500.0, 60.0, cpu_kvip_pct=40.0))
    rows = report.flat_rows([one, two])
    assert [row["churn_500_cpu_kvip_pct"] for row in rows] == [20.0, 40.0]
    assert "churn" not in rows[0]
    median = report.median_result(rows, "A", 150, [500.0, 2000.0])
    assert median.cold_s == 2.0 and math.isnan(median.burst_s)
    (churn,) = median.churn  # 2,000/s was not measured
    assert (churn.rate, churn.seconds, churn.cpu_kvip_pct) == (500.0, 60.0, 30.0)
    assert any("500/s cpu_kvip_pct = 30.00" in line for line in report.verdicts(median))


def test_header_names_commit_machine_mode_and_command() -> None:
    meta = {
        "date": "2026-12-02 03:13 UTC",
        "nproc": "2",
        "memory_gib": "23",
        "kernel": "6.18",
        "python": "3.11.7",
        "exabgp": "5.0.15",
        "frr": "bgpd version 8.4.4",
        "loadavg_at_start": "['0.5', '0.4', '0.3']",
        "wake_cpu_us_10ms": 74.26,
        "wake_cpu_us_0ms": 19.5,
        "binding": "address on lo",
        "api": "in its own process",
        "compare": "e10326d",
    }
    versions = [Version("abc-dirty", Path(".")), Version("e10326d", Path("/tmp"))]
    lines = report.header(meta, ["--repeat", "2", "--compare", "e10326d"], versions).splitlines()
    assert lines[0] == (
        "kvip-bgp bench, 2026-12-02 03:13 UTC, commit `abc-dirty`, compared with "
        "`e10326d` (`--compare e10326d`)"
    )
    assert lines[1].startswith("machine: 2 cores, 23 GiB, Linux 6.18, Python 3.11.7")
    assert lines[2] == (
        "wake-up CPU: 74.3 µs of thread CPU per time.sleep(0.01), 19.5 µs per "
        "time.sleep(0) (a bare loop in a fresh thread)"
    )
    assert lines[3] == (
        "mode: VIP binding address on lo; fake API in its own process; "
        "credentials kubeconfig, HTTP"  # a JSON from before --credentials: a kubeconfig
    )
    assert lines[4] == "command: `python -m bench.run --repeat 2 --compare e10326d`"
    single = report.header(meta, [], versions[:1]).splitlines()
    assert single[0] == "kvip-bgp bench, 2026-12-02 03:13 UTC, commit `abc-dirty`"
    in_cluster = report.header({**meta, "credentials": "in-cluster"}, [], versions[:1])
    assert in_cluster.splitlines()[3].endswith(
        "; credentials in-cluster (env + service-account files), HTTPS"
    )
