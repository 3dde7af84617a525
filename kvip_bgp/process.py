"""Process-global settings: the only module that changes state shared by every thread.

Each setting here affects the whole process (and ExaBGP, which inherits the umask), so
each is made once, by the main thread, before any other thread exists, and nowhere else:
the cyclic garbage collector's thresholds, the umask, the hook that gives each thread
its kernel-level name, the signal handlers, and the C heap trim after the first sync.
The collector's pause while the daemon imports and starts is the one exception: it ends
once the threads are started (``resume_gc``).
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Final

# Young-generation threshold of the cyclic garbage collector (Python's default: 700).
GC_THRESHOLDS: Final = (10_000, 10, 10)
# Every file the daemon creates is private to root, as the systemd unit's UMask=0077
# already makes it there: ExaBGP's config holds the MD5 passwords.
UMASK: Final = 0o077


def tune_gc() -> None:
    """Collect cyclic garbage less often: the daemon's objects are nearly all acyclic.

    Memory is still freed by reference counting; only cycles wait a little longer. The
    cold-start figures behind the threshold are in docs/performance.md.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def pause_gc() -> None:
    """No cyclic collection while ``kvip-bgp run`` imports its modules and starts.

    Imports build ~55,000 long-lived objects (modules, classes, functions) and hardly
    any garbage: the collections they set off (~120 young, ~10 middle, a full one over
    all of them) find almost nothing and cost ~17 ms of the ~300 ms of imports
    (``python -X importtime``'s modules imported in order, median of 11; with the
    collector off ~0.2 MB of cycles wait for the first collection). The main thread calls
    ``resume_gc`` once the daemon's threads are started, and on every way out of ``run``.
    """
    gc.disable()


def resume_gc() -> None:
    """The collector back on, after ``pause_gc`` (harmless when it was not paused)."""
    gc.enable()


def private_umask() -> None:
    """Files the daemon and ExaBGP create are readable by root only, however started."""
    os.umask(UMASK)


def on_stop_signals(handler: Callable[[int], None]) -> None:
    """SIGTERM and SIGINT call ``handler(signum)`` (in the main thread, between bytecodes)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        handler(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)


def on_reload_signal(handler: Callable[[], None]) -> None:
    """SIGHUP calls ``handler()``: ``systemctl reload`` and ``kill -HUP`` re-read the config.

    Without a handler SIGHUP's default action ends the process at once, with no log line,
    no withdrawal and ExaBGP gone with it.
    """

    def forward(signum: int, frame: FrameType | None) -> None:
        handler()

    signal.signal(signal.SIGHUP, forward)


def configure() -> None:
    """The settings made once at start, before the first thread: gc, umask, thread names."""
    # Imported here: it imports structlog, which the cli imports after ``pause_gc``.
    from kvip_bgp.runtime import threadname

    tune_gc()
    private_umask()
    threadname.install()


def trim_c_heap() -> None:
    """Hand the C heap's free pages back to the kernel, once, after the initial sync.

    The initial lists are read and parsed in bursts whose freed memory glibc keeps for
    reuse; ``malloc_trim`` returns it (figures: docs/performance.md). A
    no-op where the C library has no ``malloc_trim`` (musl, non-Linux).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
