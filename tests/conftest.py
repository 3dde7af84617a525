"""Shared pytest plumbing.

Tests that need root, network namespaces or FRR call ``require_lab()``. On a developer
laptop a missing part skips the test; under ``CI=true`` a missing part is a failure, so CI
can never go green by skipping the real-part tests.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_lab(*binaries: str) -> None:
    """Skip (or, under CI, fail) unless we are root and every named binary exists."""
    missing: list[str] = []
    if os.geteuid() != 0:
        missing.append("root")
    for binary in ("ip", *binaries):
        if shutil.which(binary) is None and not os.path.exists(binary):
            missing.append(binary)
    if missing:
        message = "lab test needs: " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a missing part is a failure, not a skip)")
        pytest.skip(message)


@pytest.fixture
def lab_required() -> None:
    require_lab("/usr/lib/frr/bgpd", "vtysh")
