"""The ExaBGP process, used by the main thread only: start, supervise, restart, stop."""

from __future__ import annotations

import ctypes
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger("kvip_bgp.exabgp")


_PR_SET_PDEATHSIG: Final = 1
_ANSI: Final = re.compile(r"\x1b\[[0-9;]*m")


def _die_with_parent() -> None:
    """Run in the child before exec: if kvip-bgp is SIGKILLed, ExaBGP gets SIGTERM."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def exabgp_argv(config_file: Path) -> list[str]:
    """Run ExaBGP from the same environment as kvip-bgp (no PATH lookup surprises)."""
    return [sys.executable, "-m", "exabgp", "server", str(config_file)]


class ExabgpProcess:
    """Start, watch and stop ExaBGP. Used by the main thread only."""

    def __init__(self, config_file: Path, env: Mapping[str, str]) -> None:
        self._config_file = config_file
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.started_at = 0.0
        self._log_thread: threading.Thread | None = None

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
            target=_forward_log, args=(self._process,), name="exabgp-log", daemon=True
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


def _forward_log(process: subprocess.Popen[bytes]) -> None:
    """ExaBGP's own log lines, re-emitted through our logger so one format is grep-able."""
    assert process.stdout is not None
    for raw in process.stdout:
        line = _ANSI.sub("", raw.decode("utf-8", "replace")).strip()
        if line:
            log.info("exabgp.log", line=line)
    process.stdout.close()
