"""The ExaBGP process, used by the main thread only: start, supervise, restart, stop.

Other threads learn whether ExaBGP runs from the ``Snapshot`` the supervisor publishes,
never from the ``Popen`` (which a restart replaces).
"""

from __future__ import annotations

import ctypes
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import structlog

from kvip_bgp.runtime.snapshot import Snapshot

log = structlog.get_logger("kvip_bgp.exabgp")


_PR_SET_PDEATHSIG: Final = 1
MAX_BACKOFF: Final = 30.0
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")
# ExaBGP's own words for how a reload (SIGUSR1) went; a reload it skipped says nothing.
_RELOADED: Final = "loaded new configuration successfully"
_RELOAD_FAILED: Final = "could not load/reload configuration"
RELOAD_CONFIRM: Final = 3.0
"""Seconds to wait for ExaBGP to confirm a reload before asking again."""
RELOAD_TRIES: Final = 5


def _die_with_parent() -> None:
    """Run in the child before exec: if kvip-bgp is SIGKILLed, ExaBGP gets SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def exabgp_argv(config_file: Path) -> list[str]:
    """Run ExaBGP from the same environment as kvip-bgp (no PATH lookup surprises),
    with its outgoing RIB fixed (``bgp/exabgp.py``)."""
    return [sys.executable, "-m", "kvip_bgp.bgp.exabgp", "server", str(config_file)]


class ExabgpProcess:
    """Start, watch and stop ExaBGP. Used by the main thread only."""

    def __init__(self, config_file: Path, env: Mapping[str, str]) -> None:
        self._config_file = config_file
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log_thread: threading.Thread | None = None
        # Filled by the log thread, read by the main thread: True/False per reload.
        self._reload_outcomes: queue.SimpleQueue[bool] = queue.SimpleQueue()

    def start(self) -> None:
        self._process = subprocess.Popen(
            exabgp_argv(self._config_file),
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self._log_thread = threading.Thread(
            target=_forward_log,
            args=(self._process, self._reload_outcomes),
            name="exabgp-log",
            daemon=True,
        )
        self._log_thread.start()
        log.info("exabgp.started", pid=self._process.pid, config=str(self._config_file))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def poll(self) -> int | None:
        """The exit code if ExaBGP has exited, else None."""
        return None if self._process is None else self._process.poll()

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def signal_reload(self) -> None:
        """SIGUSR1: ExaBGP re-reads its file (never SIGUSR2: that restarts every peer)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGUSR1)

    def reload_outcome(self) -> bool | None:
        """The latest reload result ExaBGP logged since the last call, if any."""
        outcome = None
        while True:
            try:
                outcome = self._reload_outcomes.get_nowait()
            except queue.Empty:
                return outcome

    def stop(self, timeout: float = 5.0) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("exabgp.kill", pid=process.pid, reason="did not exit on SIGTERM")
            process.kill()
            process.wait(5)
        if self._log_thread is not None:
            self._log_thread.join(2)


class ExabgpSupervisor:
    """Restart ExaBGP when it exits: at once after a healthy life, with backoff in a loop.

    Driven by the main thread's ``tick``; the sole user of ``process``. ``running`` is
    where it publishes whether ExaBGP runs, for the HTTP thread. ``came_up_since(t)``
    says whether a BGP session came up after wall-clock time ``t``.
    """

    def __init__(
        self,
        process: ExabgpProcess,
        running: Snapshot[bool],
        came_up_since: Callable[[float], bool],
        on_restart: Callable[[], None],
    ) -> None:
        self.process = process
        self._running = running
        self._came_up_since = came_up_since
        self._on_restart = on_restart
        self._backoff = 1.0
        self._restart_at: float | None = None
        self._reload_tries = 0  # 0: no reload pending
        self._reload_sent_at: float | None = None

    def request_reload(self) -> None:
        """Have ExaBGP re-read its (already validated and written) file, and confirm it.

        ExaBGP may skip a reload while updates are queued, saying nothing: then it is
        asked again. A reload it could not load leaves its API processes dead and every
        later reload refused, so then it is restarted (it reads the new file at start).
        """
        self._reload_tries = 1
        self._reload_sent_at = None
        self.process.reload_outcome()  # drop results of earlier reloads

    def _tick_reload(self, now: float) -> None:
        if not self._reload_tries:
            return
        if not self.process.running():
            self._reload_tries = 0  # the restart reads the new file
            return
        if self._reload_sent_at is not None:
            outcome = self.process.reload_outcome()
            if outcome is True:
                log.info("exabgp.reloaded", tries=self._reload_tries)
                self._reload_tries = 0
                return
            if outcome is None and now - self._reload_sent_at < RELOAD_CONFIRM:
                return
            if outcome is False or self._reload_tries >= RELOAD_TRIES:
                log.error(
                    "exabgp.reload_failed",
                    reason="ExaBGP could not load its new file"
                    if outcome is False
                    else f"no confirmation after {self._reload_tries} tries",
                    action="restarting ExaBGP, which reads the new file",
                )
                self._reload_tries = 0
                self.process.stop(timeout=5.0)
                self._on_restart()
                self.start()
                return
            self._reload_tries += 1
            log.warning("exabgp.reload_unconfirmed", retry=self._reload_tries)
        self.process.signal_reload()
        self._reload_sent_at = now

    def start(self) -> None:
        self.process.start()
        self._running.publish(True)

    def tick(self, now: float) -> None:
        """Notice an exit and schedule the restart; restart once it is due."""
        code = self.process.poll()
        self._running.publish(code is None)
        if code is not None and self._restart_at is None:
            lived = now - self.process.started_at
            # A process that brought a BGP session up was healthy: restart it at once.
            # Backoff is for a crash loop (bad config, port taken), where none comes up.
            healthy = lived > 60 or self._came_up_since(time.time() - lived)
            self._backoff = 1.0 if healthy else min(MAX_BACKOFF, self._backoff * 2)
            self._restart_at = now + (0.2 if healthy else self._backoff)
            log.error(
                "app.exabgp_exited",
                exit_code=code,
                lived=round(lived, 1),
                restart_in=round(self._restart_at - now, 1),
            )
        if self._restart_at is not None and now >= self._restart_at:
            self._restart_at = None
            self._on_restart()
            self.start()
        self._tick_reload(now)

    def stop(self, timeout: float) -> None:
        self.process.stop(timeout=timeout)
        self._running.publish(False)


def _forward_log(process: subprocess.Popen[bytes], reloads: queue.SimpleQueue[bool]) -> None:
    """ExaBGP's own log lines, re-emitted through our logger so one format is grep-able;
    the outcome of each reload goes to ``reloads`` for the supervisor."""
    assert process.stdout is not None
    for raw in process.stdout:
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).strip()
        if line:
            log.info("exabgp.log", line=line)
            if _RELOADED in line:
                reloads.put(True)
            elif _RELOAD_FAILED in line:
                reloads.put(False)
    process.stdout.close()
