"""Shared pytest plumbing.

Tests that need root, network namespaces or FRR call ``require_lab()``. On a developer
laptop a missing part skips the test; under ``CI=true`` a missing part is a failure, so CI
can never go green by skipping the real-part tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.testing.fakeapi import FakeKubeAPI


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


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    """A fake API server on 127.0.0.1 with fast bookmarks, stopped after the test."""
    with FakeKubeAPI(bookmark_interval=0.1) as fake:
        yield fake


@pytest.fixture
def kubeconfig(api: FakeKubeAPI, tmp_path: Path) -> Path:
    """A kubeconfig that points at ``api``."""
    return api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for ``lab_required`` is a lab test, marked or not, so ``-m "not
    lab"`` (``make unit``) never builds namespaces outside the lab lock."""
    for item in items:
        if "lab_required" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
