"""``python -m bench.instructions``: exact counts, so a difference between two versions is
the code's and not the machine's (docs/performance.md#instructions)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.instructions import THIS_CHECKOUT, WORKLOADS, count, main


def need_valgrind() -> None:
    if shutil.which("valgrind") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("valgrind is missing (make system-deps installs it)")
        pytest.skip("needs valgrind")


def test_a_count_is_the_same_every_run_and_grows_with_the_work() -> None:
    need_valgrind()
    cold = next(w for w in WORKLOADS if w.name == "cluster cold")
    once = count(THIS_CHECKOUT, cold, 40, 1)
    # Not to the instruction (temporary file names, the environment), but to within a
    # few hundred in over a billion: far below one Service's.
    assert abs(count(THIS_CHECKOUT, cold, 40, 1) - once) < 1_000
    # 40 Services more decided: well over a thousand instructions each, in Python.
    assert count(THIS_CHECKOUT, cold, 40, 2) - once > 40 * 1_000


def test_the_table_names_each_workload(capsys: pytest.CaptureFixture[str]) -> None:
    need_valgrind()
    assert main(["-n", "20", "--workload", "cluster echo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "instructions per Service, n=20"
    name, figure = lines[2].rsplit(maxsplit=1)
    assert name == "cluster echo" and int(figure.replace(",", "")) > 1_000
