"""Instructions per Service of the micro-benchmarks, counted by valgrind: nearly the same
count every run, where their timings on a noisy machine are not.

On the EPYC of 2026-12-06 two alternating runs of ``bench.cluster_micro`` differed by up
to 2x, and the machine has no hardware counters for ``perf``. ``valgrind --tool=callgrind``
counts the instructions a process executes; with ``PYTHONHASHSEED=0`` two counts of a
single-threaded workload differ by tens of instructions in a billion (temporary file
names, the environment). Each workload runs once and twice in
one process (``--repeat 1`` and ``--repeat 2``), so that the difference is one run
without the interpreter's start, imports and setup, divided by the Services it handled.

Instructions are not time (no cache misses, no waits for the GIL or the kernel), so this
compares versions of the same Python code; the CPU figures of ``make bench`` stay the
ones that count. ``--compare REV`` counts REV too (a temporary worktree, as ``bench.run``
makes one) and prints the ratio. Needs ``valgrind`` (Debian's package); ~25 s per count
at 2,000 Services.

    python -m bench.instructions --compare HEAD~1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

THIS_CHECKOUT = Path(__file__).resolve().parent.parent
COLLECTED = re.compile(rb"Collected : (\d+)")


@dataclass(frozen=True)
class Workload:
    """A benchmark module whose ``--repeat`` runs its measured part that many times."""

    name: str
    module: str
    args: tuple[str, ...]
    size: str  # the option that sets how many Services (or objects of each kind) it takes


WORKLOADS = (
    Workload("cluster cold", "bench.cluster_micro", ("--scenario", "cold"), "-n"),
    Workload("cluster burst", "bench.cluster_micro", ("--scenario", "burst"), "-n"),
    Workload("cluster burst-lag", "bench.cluster_micro", ("--scenario", "burst-lag"), "-n"),
    Workload("cluster echo", "bench.cluster_micro", ("--scenario", "echo"), "-n"),
    # Each repeat parses, lists and watches N Services and N EndpointSlices.
    Workload("parsing (all six)", "bench.parsing", (), "--count"),
)


def count(checkout: Path, workload: Workload, n: int, repeat: int) -> int:
    """Instructions of ``workload`` at ``n``, ``repeat`` times, in checkout's tree."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("bench.instructions needs valgrind (apt-get install valgrind)")
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(checkout)}
    argv = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable]
    argv += ["-m", workload.module, *workload.args, workload.size, str(n)]
    argv += ["--repeat", str(repeat)]
    done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, timeout=900)
    found = COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace")[-2000:]
        raise SystemExit(f"{workload.name}: valgrind exited {done.returncode}\n{tail}")
    return int(found.group(1))


def per_service(checkout: Path, workload: Workload, n: int) -> int:
    """One run's instructions per Service: two runs less one, divided by ``n``."""
    return (count(checkout, workload, n, 2) - count(checkout, workload, n, 1)) // n


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """``rev`` checked out in a temporary worktree, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="kvip-instructions-"))
    source = tmp / "src"
    git = ["git", "-C", str(THIS_CHECKOUT)]
    try:
        subprocess.run([*git, "worktree", "add", "--detach", str(source), rev], check=True)
        yield source
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(source)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="Services per run (default 2,000)")
    parser.add_argument("--compare", metavar="REV", help="count REV's tree too")
    names = [w.name for w in WORKLOADS]
    parser.add_argument(
        "--workload", choices=names, action="append", help="one of them (default: all)"
    )
    args = parser.parse_args(argv)
    chosen = [w for w in WORKLOADS if w.name in (args.workload or names)]
    with contextlib.ExitStack() as stack:
        other = stack.enter_context(worktree(args.compare)) if args.compare else None
        head = f"{'workload':20} {'this':>12}"
        if other is not None:
            head += f" {args.compare:>12} {'ratio':>6}"
        print(f"instructions per Service, n={args.n}\n{head}")
        for workload in chosen:
            mine = per_service(THIS_CHECKOUT, workload, args.n)
            line = f"{workload.name:20} {mine:12,}"
            if other is not None:
                theirs = per_service(other, workload, args.n)
                line += f" {theirs:12,} {mine / theirs:6.3f}"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
