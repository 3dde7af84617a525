"""Kernel-level thread names, so that ``top -H``, ``ps -L`` and /proc tell threads apart.

Python 3.11 leaves the kernel's name of every thread (``comm``, what ``top -H`` shows) at
the process's own, so a core spent by the daemon cannot be pinned on the reconciler, the
cluster-state thread or a stream thread without a profiler. Python 3.14 names them
itself from ``Thread.name`` (gh-59705); until then ``install`` does the same for every
thread started afterwards, with one hook and no change where threads are made.

The hook is ``threading.setprofile``: the function it installs runs in each new thread,
before that thread's ``run()``. It removes itself at once (putting back any profile
function that was installed before it), so the thread runs unprofiled from its first
line, then sets the name with ``prctl(PR_SET_NAME)``. The kernel keeps 15 bytes of a
name, and ``os_name`` cuts longer ones the same way on a character boundary:
``stream-endpointslices`` shows as ``stream-endpoint``, ``health-198.51.100.53`` as
``health-198.51.1``.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from types import FrameType
from typing import Any, Final

import structlog

log = structlog.get_logger("kvip_bgp.threadname")

MAX_BYTES: Final = 15
"""What Linux keeps of a thread's name (TASK_COMM_LEN, 16, less the final NUL)."""
PR_SET_NAME: Final = 15
"""prctl(2) option: set the calling thread's name."""


def os_name(name: str) -> bytes:
    """``name`` as the kernel keeps it: UTF-8, at most 15 bytes, cut between characters."""
    encoded = name.encode("utf-8", "replace")
    if len(encoded) <= MAX_BYTES:
        return encoded
    return encoded[:MAX_BYTES].decode("utf-8", "ignore").encode("utf-8")


class _Namer:
    """The profile hook: names the thread it runs in, once, through libc's ``prctl``."""

    def __init__(self, prctl: Any, previous: Any) -> None:
        self._prctl = prctl
        self._previous = previous

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        sys.setprofile(self._previous)
        name = threading.current_thread().name
        if self._prctl(PR_SET_NAME, os_name(name)) != 0:
            log.debug("threadname.failed", thread=name, errno=ctypes.get_errno())


def install() -> bool:
    """Name every thread started from now on after its ``Thread.name``; True if it will.

    Called once by the main thread before the first other thread (``process.configure``).
    Where libc has no ``prctl`` (not Linux) it does nothing and logs why at debug level.
    """
    if sys.version_info >= (3, 14):
        return True  # threading.Thread.start names the thread itself
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError) as error:
        log.debug("threadname.unavailable", error=str(error))
        return False
    prctl.restype = ctypes.c_int
    threading.setprofile(_Namer(prctl, threading.getprofile()))
    return True
