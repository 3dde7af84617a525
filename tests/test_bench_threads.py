"""``make bench``'s CPU per thread (bench.threads): folding, the rows the medians come
from, and the /proc reader."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import report
from bench import threads as per_thread
from bench.results import Result
from bench.stats import repeat_table
from kvip_bgp.testing.procfs import ThreadCpu, thread_cpu

PID = 100


def cpu(name: str, user: float, system: float = 0.0, wakeups: int = 0) -> ThreadCpu:
    return ThreadCpu(name, user, system, wakeups)


def times(user: float, system: float = 0.0, wakeups: int = 0) -> dict[str, float]:
    return {"user_s": user, "sys_s": system, "wakeups": wakeups}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            {},
            {PID: cpu("kvip-bgp", 0.5, 0.1, 7), 101: cpu("reconciler", 2.0, 1.5, 300)},
            {"reconciler": times(2.0, 1.5, 300), "main": times(0.5, 0.1, 7)},
            id="named-largest-first-main-by-tid",
        ),
        pytest.param(
            {},
            {
                PID: cpu("kvip-bgp", 0.5),
                101: cpu("kvip-bgp", 1.0, 0, 4),
                102: cpu("kvip-bgp", 0.25),
            },
            {"unnamed": times(1.25, 0.0, 4), "main": times(0.5)},
            id="old-revision-threads-are-unnamed",
        ),
        pytest.param(
            {},
            {
                PID: cpu("kvip-bgp", 0.3),
                101: cpu("health-198.51.1", 0.2, 0.0, 30),
                102: cpu("health-198.51.1", 0.1, 0.0, 12),
            },
            {"health-198.51.1": times(0.3, 0.0, 42), "main": times(0.3)},
            id="same-name-summed",
        ),
        pytest.param(
            {},
            {
                PID: cpu("kvip-bgp", 0.3, 0.0, 2),
                101: cpu("http", 0.0, 0.005, 100),
                102: cpu("bfd-log", 0.004, 0.0, 5),
            },
            {"main": times(0.3, 0.0, 2), "other": times(0.0, 0.01, 105)},
            id="small-ones-folded-into-other",
        ),
        pytest.param(
            {PID: cpu("kvip-bgp", 1.0), 101: cpu("ticker", 0.5, 0.0, 10)},
            {PID: cpu("kvip-bgp", 1.0), 101: cpu("ticker", 0.5, 0.0, 60)},
            {"other": times(0.0, 0.0, 50)},
            id="wakeups-alone-keep-other",
        ),
        pytest.param(
            {PID: cpu("kvip-bgp", 1.0, 0.0, 5), 101: cpu("reconciler", 1.0, 0.5, 10)},
            {
                PID: cpu("kvip-bgp", 1.2, 0.0, 9),
                101: cpu("reconciler", 3.0, 1.0, 250),
                103: cpu("http", 0.5, 0.0, 40),
            },
            {
                "reconciler": times(2.0, 0.5, 240),
                "http": times(0.5, 0.0, 40),
                "main": times(0.2, 0.0, 4),
            },
            id="difference-and-new-thread-from-zero",
        ),
        pytest.param(
            {PID: cpu("kvip-bgp", 1.0), 101: cpu("stream-services", 5.0, 0.0, 900)},
            {PID: cpu("kvip-bgp", 1.0), 101: cpu("cluster-writer", 0.5, 0.0, 7)},
            {"cluster-writer": times(0.5, 0.0, 7)},
            id="reused-thread-id-counts-from-zero",
        ),
        pytest.param(
            {PID: cpu("kvip-bgp", 1.0, 0.0, 3), 101: cpu("reconciler", 1.0, 0.0, 8)},
            {PID: cpu("kvip-bgp", 1.0, 0.0, 3), 101: cpu("reconciler", 1.0, 0.0, 8)},
            {},
            id="idle-nothing",
        ),
    ],
)
def test_used_per_thread_name(
    before: dict[int, ThreadCpu], after: dict[int, ThreadCpu], expected: per_thread.ThreadTimes
) -> None:
    got = per_thread.used(PID, before, after)
    assert got == expected
    assert list(got) == list(expected)  # the order the table prints


def run(version: str, rep: int, reconciler: float, writer: float | None) -> Result:
    result = Result(150, version=version, rep=rep)
    burst = {"reconciler": times(reconciler, reconciler / 2, int(reconciler * 100))}
    if writer is not None:
        burst["cluster-writer"] = times(writer, 0.0, 1000)
    else:
        burst["unnamed"] = times(2.0, 0.1, 30)
    result.threads["burst"] = burst
    return result


def test_repeat_table_gives_each_threads_median_and_old_revisions_unnamed() -> None:
    results = [run("A", 0, 1.0, 0.4), run("B", 0, 3.0, None), run("A", 1, 2.0, 0.6)]
    results.append(run("B", 1, 5.0, None))
    rows = report.flat_rows(results)
    assert rows[0][per_thread.flat_key("burst", "reconciler", "sys_s")] == 0.5
    assert rows[0][per_thread.flat_key("burst", "reconciler", "wakeups")] == 100
    metrics = {"burst": per_thread.metrics(results, "burst")}
    text = repeat_table(rows, ["A", "B"], [150], ["burst"], metrics)
    assert (
        "| 150 | burst | thread reconciler: user CPU-s | 1.50 (1.00-2.00) | "
        "4.00 (3.00-5.00) | 0.38 |" in text
    )
    assert "| thread cluster-writer: user CPU-s | 0.50 (0.40-0.60) | - | - |" in text
    assert "| thread reconciler: wake-ups | 150 (100-200) | 400 (300-500) | 0.38 |" in text
    assert "| thread cluster-writer: wake-ups | 1000 (1000-1000) | - | - |" in text
    assert "| thread unnamed: user CPU-s | - | 2.00 (2.00-2.00) | - |" in text
    # the thread with the most CPU in any run first
    assert (
        text.index("thread reconciler")
        < text.index("thread unnamed")
        < text.index("cluster-writer")
    )


def test_table_has_a_row_per_thread_and_the_sum() -> None:
    text = per_thread.table([run("A", 0, 1.0, 0.4)])
    assert "| 150 | burst | reconciler | 1.00 | 0.50 | 100 |" in text
    assert "| 150 | burst | cluster-writer | 0.40 | 0.00 | 1,000 |" in text
    assert "| 150 | burst | all threads | 1.40 | 0.50 | 1,100 |" in text


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_thread_cpu_reads_every_thread_of_a_process() -> None:
    spun = threading.Event()
    release = threading.Event()
    seen: list[int] = []

    def spin() -> None:
        seen.append(threading.get_native_id())
        Path(f"/proc/self/task/{seen[0]}/comm").write_text("bench-spin")
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass
        spun.set()
        release.wait(10)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        assert spun.wait(10)
        threads = thread_cpu(os.getpid())
        assert os.getpid() in threads
        mine = threads[seen[0]]
        assert mine.name == "bench-spin"
        assert mine.user_s + mine.system_s >= 0.05
    finally:
        release.set()
        thread.join(10)
    assert thread_cpu(2**22 + 1) == {}  # no such process


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_thread_cpu_counts_a_wakeup_per_sleep() -> None:
    sleeps = 20
    go, slept, release = threading.Event(), threading.Event(), threading.Event()
    seen: list[int] = []

    def sleeper() -> None:
        seen.append(threading.get_native_id())
        go.wait(10)
        for _ in range(sleeps):
            time.sleep(0.001)
        slept.set()
        release.wait(10)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    try:
        while not seen:
            time.sleep(0.001)
        before = thread_cpu(os.getpid())[seen[0]]
        go.set()
        assert slept.wait(10)
        after = thread_cpu(os.getpid())[seen[0]]
        assert after.wakeups - before.wakeups >= sleeps, (before, after)
    finally:
        go.set()
        release.set()
        thread.join(10)


@pytest.mark.parametrize("seconds", [0.01, 0.0])
def test_wake_cpu_is_thread_cpu_per_sleep(seconds: float) -> None:
    started = time.monotonic()
    spent = report.wake_cpu_us(seconds, iterations=10)
    assert 0 < spent < 10_000, spent  # microseconds: more than nothing, less than 10 ms
    assert time.monotonic() - started < 1


def test_churn_rows_name_their_rate() -> None:
    result = Result(10_000, version="A", rep=0)
    for rate in ("500", "2000"):
        result.threads[f"churn-{rate}"] = {"reconciler": times(1.0, 0.1, 20)}
    labels = [
        label
        for rate in ("500", "2000")
        for _key, label, _digits in per_thread.metrics([result], f"churn-{rate}")
    ]
    assert labels == [
        "500/s: thread reconciler: user CPU-s",
        "500/s: thread reconciler: sys CPU-s",
        "500/s: thread reconciler: wake-ups",
        "2000/s: thread reconciler: user CPU-s",
        "2000/s: thread reconciler: sys CPU-s",
        "2000/s: thread reconciler: wake-ups",
    ]
    assert per_thread.metrics([result], "burst") == []
