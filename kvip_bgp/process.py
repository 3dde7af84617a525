"""Process-global settings: the only module that changes state shared by every thread.

Each setting here affects the whole process (and ExaBGP, which inherits the umask), so
each is made once, by the main thread, before any other thread exists, and nowhere else:
the cyclic garbage collector's thresholds, the umask, the hook that gives each thread
its kernel-level name, the signal handlers, and the C heap trim after the first sync.
The collector's pause while the daemon imports, starts and takes the cluster's first
sync is the one exception: it ends once the routes are out (``resume_gc``, from the main
thread's supervision loop), freezing what the start built.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Final

# Young-generation threshold of the cyclic garbage collector (Python's default: 700).
GC_THRESHOLDS: Final = (10_000, 10, 10)
# Every file the daemon creates is private to root, as the systemd unit's UMask=0077
# already makes it there: ExaBGP's config holds the MD5 passwords.
UMASK: Final = 0o077
# The collector's pause ends this long after the start at the latest, routes out or not
# (an API that never answers must not leave the daemon without a collector).
GC_PAUSE_LIMIT: Final = 30.0


def tune_gc() -> None:
    """Collect cyclic garbage less often: the daemon's objects are nearly all acyclic.

    Memory is still freed by reference counting; only cycles wait a little longer. The
    cold-start figures behind the threshold are in docs/performance.md.
    """
    gc.set_threshold(*GC_THRESHOLDS)


def pause_gc() -> None:
    """No cyclic collection while ``kvip-bgp run`` imports, starts and takes its first sync.

    Imports build ~70,000 objects that live as long as the process (modules, classes,
    functions) and the first LIST of a cluster tens of thousands more that live as long
    as their objects (the cache, the decisions, the routes), and hardly any garbage: in
    a cold start of 10,000 Services the ~30 collections until the first sync found 144
    objects in all and took 40-68 ms of the CPU (docs/performance.md), walking what the
    cache had grown to each time. ``resume_gc`` freezes it all instead, so no collection
    ever walks it (``gc.freeze``); each object is still freed by reference counting when
    its Service goes. The main thread resumes once the routes are out (``resume_gc_once``),
    or the threads are started when the daemon has no cluster, and on every way out of
    ``run``. The price: the cycles that became garbage meanwhile are never collected.
    """
    gc.disable()


def resume_gc_once(routes_busy: Callable[[], bool], resume_by: float) -> None:
    """``resume_gc`` if the collector is still paused and the start is over: the routes
    are out (``routes_busy()`` is False) or it is ``resume_by`` (the start's time plus
    ``GC_PAUSE_LIMIT``). Called by the main thread at every turn of its loop."""
    if not gc.isenabled() and (time.monotonic() >= resume_by or not routes_busy()):
        resume_gc()


def resume_gc() -> None:
    """After ``pause_gc``: what the start built goes to the permanent generation, and the
    collector runs again as tuned. Nothing happens when the collector was not paused
    (``Daemon.run`` called without the cli, as tests do)."""
    if gc.isenabled():
        return
    gc.freeze()
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
