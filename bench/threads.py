"""kvip-bgp's CPU-seconds and wake-ups per thread over a phase: which thread spends it
(issue 19), and how often it was woken to do so.

Read from /proc/<daemon>/task/*/stat (each thread's kernel name and its utime and
stime) and task/*/status (its ``voluntary_ctxt_switches``: one each time it blocked and
was woken again) at the moments the per-process CPU is read. User and system time stay
apart: system time is the kernel's work on the thread's behalf (netlink, socket reads
and writes). Wake-ups are counted because each one costs CPU before any Python runs
(``bench.report.wake_cpu_us`` measures how much on the machine, the header prints it):
a thread's wake-ups times that figure is the platform's share of its CPU.

A thread is known by its kernel name, which the daemon sets from its Python name
(``kvip_bgp.runtime.threadname``): the main thread is ``main`` whatever its name, and a
thread that still carries the process's name (a daemon from before thread names, under
``--compare``) is ``unnamed``, all of them summed. Threads of one name are summed too,
and threads below ``FOLD_BELOW`` CPU-seconds are ``other``, wake-ups and all. A thread
that ended during the phase is not counted (the process's figure still has it).

In a ``Result`` the figures are ``threads[phase][name] = {"user_s": .., "sys_s": ..,
"wakeups": ..}`` with phase ``cold``, ``burst`` or ``churn-<rate>``; ``flat_key`` names
them in the rows ``bench.stats`` aggregates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.results import Result, ThreadTimes
from bench.stats import Metric
from kvip_bgp.testing.procfs import ThreadCpu

FOLD_BELOW = 0.01
"""CPU-seconds (user + system) under which a thread is folded into ``other``."""
MAIN = "main"
UNNAMED = "unnamed"
OTHER = "other"


def used(pid: int, before: Mapping[int, ThreadCpu], after: Mapping[int, ThreadCpu]) -> ThreadTimes:
    """CPU and wake-ups per thread name between two ``procfs.thread_cpu(pid)`` readings
    (a thread that started in between counts from 0), folded as the module says."""
    main_name = after[pid].name if pid in after else None
    sums: dict[str, list[float]] = {}
    for tid, now in after.items():
        was = before.get(tid)
        if was is None or was.name != now.name:  # new since, or its id was reused
            was = ThreadCpu(now.name, 0.0, 0.0, 0)
        if tid == pid:
            name = MAIN
        elif now.name == main_name:
            name = UNNAMED
        else:
            name = now.name
        total = sums.setdefault(name, [0.0, 0.0, 0])
        total[0] += max(0.0, now.user_s - was.user_s)
        total[1] += max(0.0, now.system_s - was.system_s)
        total[2] += max(0, now.wakeups - was.wakeups)
    return fold(sums)


def fold(sums: Mapping[str, Sequence[float]]) -> ThreadTimes:
    """``{name: (user_s, sys_s, wakeups)}`` as ``ThreadTimes``, largest CPU first; under
    ``FOLD_BELOW`` CPU-seconds into ``other`` (last, only if it has any CPU or wake-ups)."""
    kept: ThreadTimes = {}
    other = [0.0, 0.0, 0]
    for name, (user, system, wakeups) in sorted(sums.items(), key=lambda kv: -kv[1][0] - kv[1][1]):
        if user + system < FOLD_BELOW or name == OTHER:
            other[0] += user
            other[1] += system
            other[2] += wakeups
        else:
            kept[name] = _times(user, system, wakeups)
    if any(other):
        kept[OTHER] = _times(*other)
    return kept


def _times(user: float, system: float, wakeups: float) -> dict[str, float]:
    return {"user_s": round(user, 2), "sys_s": round(system, 2), "wakeups": int(wakeups)}


def flat_key(phase: str, name: str, key: str) -> str:
    """The column of one figure in ``report.flat_rows``: ``threads_<phase>_<name>_<key>``."""
    return f"threads_{phase}_{name}_{key}"


def names(results: Sequence[Result], phase: str) -> list[str]:
    """Every thread name measured in ``phase``, the one with the most CPU in any run
    first, ``other`` last."""
    most: dict[str, float] = {}
    for result in results:
        for name, times in result.threads.get(phase, {}).items():
            most[name] = max(most.get(name, 0.0), times["user_s"] + times["sys_s"])
    ordered = sorted((n for n in most if n != OTHER), key=lambda n: -most[n])
    return [*ordered, *([OTHER] if OTHER in most else [])]


def metrics(results: Sequence[Result], phase: str) -> list[Metric]:
    """The rows of ``stats.repeat_table`` for the threads of ``phase``."""
    rows: list[Metric] = []
    # The churn rows share one phase column: their rate goes in the label.
    prefix = f"{phase.removeprefix('churn-')}/s: " if phase.startswith("churn-") else ""
    for name in names(results, phase):
        rows.append((flat_key(phase, name, "user_s"), f"{prefix}thread {name}: user CPU-s", 2))
        rows.append((flat_key(phase, name, "sys_s"), f"{prefix}thread {name}: sys CPU-s", 2))
        rows.append((flat_key(phase, name, "wakeups"), f"{prefix}thread {name}: wake-ups", 0))
    return rows


def table(results: Sequence[Result]) -> str:
    """One row per (N, phase, thread) of each run, then the sum of the phase's threads
    (the process's figure in the CPU table also holds threads that ended)."""
    rows = ["| N | phase | thread | user s | sys s | wake-ups |", "|---|---|---|---|---|---|"]
    for result in results:
        for phase, threads in result.threads.items():
            for name, times in threads.items():
                rows.append(
                    f"| {result.n:,} | {phase} | {name} | {times['user_s']:.2f} | "
                    f"{times['sys_s']:.2f} | {times['wakeups']:,.0f} |"
                )
            user = sum(t["user_s"] for t in threads.values())
            system = sum(t["sys_s"] for t in threads.values())
            wakeups = sum(t["wakeups"] for t in threads.values())
            rows.append(
                f"| {result.n:,} | {phase} | all threads | {user:.2f} | {system:.2f} | "
                f"{wakeups:,.0f} |"
            )
    return "\n".join(rows)
