"""``python -m bench.parsing``, the stream threads' microbenchmark, runs end to end.

It drives the real ``ResourceStream`` over scripted responses, so a change in what the
stream thread asks of a response (the descriptor it polls since the reads over TLS go
on while more waits) breaks it; docs/performance.md quotes its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_parsing_bench_measures_every_path() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.parsing", "--count", "40", "--repeat", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.splitlines()]
    assert rows == [
        [kind, what]
        for kind in ("services", "endpointslices")
        for what in ("parse", "list", "watch")
    ]
    assert all("2 runs" in line for line in done.stdout.splitlines())
