"""Kernel-level thread names: what ``top -H`` and /proc/PID/task/TID/comm show."""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp import process
from kvip_bgp.runtime import threadname
from kvip_bgp.runtime.threadname import MAX_BYTES, os_name


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        pytest.param("reconciler", b"reconciler", id="short"),
        pytest.param("cluster-writer", b"cluster-writer", id="14-bytes"),
        pytest.param("stream-services", b"stream-services", id="15-bytes-exactly"),
        pytest.param("stream-endpointslices", b"stream-endpoint", id="cut-at-15"),
        pytest.param("health-198.51.100.53", b"health-198.51.1", id="static-vip"),
        pytest.param("stream-é-services", "stream-é-servi".encode(), id="two-byte-char"),
        pytest.param("stream-noeuds-é", b"stream-noeuds-", id="no-half-character"),
        pytest.param("", b"", id="empty"),
    ],
)
def test_os_name_is_what_the_kernel_keeps(name: str, kept: bytes) -> None:
    assert os_name(name) == kept


@given(st.text())
def test_os_name_is_a_whole_character_prefix_of_at_most_15_bytes(name: str) -> None:
    kept = os_name(name)
    assert len(kept) <= MAX_BYTES
    assert name.encode("utf-8", "replace").startswith(kept)
    if len(name.encode("utf-8", "replace")) <= MAX_BYTES:
        assert kept == name.encode("utf-8", "replace")
    kept.decode("utf-8")  # never half a character


@pytest.fixture
def profile_hook() -> Iterator[None]:
    """``install`` sets the process's thread profile hook, ``configure`` gc and umask too."""
    previous = threading.getprofile()
    thresholds = gc.get_threshold()
    umask = os.umask(0o022)
    os.umask(umask)
    yield
    threading.setprofile(previous)
    gc.set_threshold(*thresholds)
    os.umask(umask)


def comm_of(thread: threading.Thread) -> str:
    return Path(f"/proc/self/task/{thread.native_id}/comm").read_text().rstrip("\n")


def started(name: str, inside: threading.Event, release: threading.Event) -> threading.Thread:
    def body() -> None:
        inside.set()
        release.wait(10)

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    assert inside.wait(10)
    return thread


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_threads_started_after_configure_carry_their_name_in_the_kernel(
    profile_hook: None,
) -> None:
    """``process.configure`` (the daemon's first step) is the one place that installs it."""
    release = threading.Event()
    before = started("before-configure", threading.Event(), release)
    process.configure()
    after = started("stream-endpointslices", threading.Event(), release)
    try:
        assert comm_of(after) == "stream-endpoint"
        assert comm_of(before) != "before-configure"
    finally:
        release.set()
        before.join(10)
        after.join(10)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_a_profile_hook_installed_before_still_runs_in_new_threads(profile_hook: None) -> None:
    """The namer removes itself and puts back what was there: py-spy is not the only profiler."""
    seen: list[str] = []

    def earlier(frame: FrameType, event: str, arg: Any) -> None:
        seen.append(event)

    threading.setprofile(earlier)
    assert threadname.install()
    hooks: list[object] = []
    thread = threading.Thread(target=lambda: hooks.append(sys.getprofile()), name="chained")
    thread.start()
    thread.join(10)
    assert hooks == [earlier]
    assert seen, "the earlier hook never ran in the new thread"
