"""``python -m bench.reconciler_micro`` runs end to end, and sends the same bytes each run.

It drives the real reconciler, announcer, netlink binder and API socket in a namespace
of its own; a change in any of them that the micro-benchmark no longer fits breaks it
here, not the day someone measures with it (docs/performance.md quotes its figures)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_reconciler_bench_measures_both_scenarios(lab_required: None) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.reconciler_micro", "-n", "300", "--repeat", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["cold", "burst"]
    for line in lines:
        assert re.search(r"reconciler \d+\.\d+ us/route", line), line
        assert "2 runs" in line and "(runs differ)" not in line, line
        assert int(re.search(r"(\d+) lines", line).group(1)) > 0, line  # type: ignore[union-attr]
