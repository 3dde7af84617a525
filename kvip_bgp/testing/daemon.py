"""A routing daemon in a lab namespace: the part FRR, BIRD and GoBGP peers have in common.

Each peer writes and checks its config, launches its binary in the namespace, waits until
its control channel answers and stops it again; only those four steps differ, so the
pid bookkeeping, the SIGTERM-then-SIGKILL stop and the log tail in a failed start's
error live here once.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from kvip_bgp.testing.netlab import Netns, send_signal, wait_until
from kvip_bgp.testing.procfs import pid_alive

__all__ = ["LabDaemon", "ReceivedRoute", "end_process", "log_tail", "read_pid_file"]

_UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the NUL


@dataclass(frozen=True)
class ReceivedRoute:
    """What every lab peer reports of the path it prefers for a prefix it received."""

    prefix: str
    next_hop: str
    communities: tuple[str, ...]
    large_communities: tuple[str, ...]
    med: int | None
    local_pref: int | None
    as_path: tuple[int, ...]


def read_pid_file(path: Path) -> int | None:
    """The live pid written in ``path``, or ``None`` (no file, junk, or gone)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def end_process(pid: int, timeout: float = 5.0, *, graceful: bool = True, what: str = "") -> None:
    """SIGTERM (``graceful=False``: SIGKILL) ``pid``; SIGKILL it if it outlives ``timeout``."""
    name = what or f"pid {pid}"
    send_signal(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    try:
        wait_until(lambda: not pid_alive(pid), timeout, 0.05, what=f"{name} to exit")
    except TimeoutError:
        send_signal(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 5.0, 0.05, what=f"{name} to die")


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        return f"(no log: {error})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


class LabDaemon(ABC):
    """A daemon inside ``ns`` with its config, log (and pid file) in ``workdir``.

    ``start()`` writes ``render_config()``, lets ``check_config()`` refuse it, calls
    ``launch()`` and waits until ``answers()``; a start that times out names the log's
    last lines. ``stop()`` ends the pid (from ``pid_name``'s file for a daemon that
    forks away, else the launched process) and reaps what it launched.
    """

    program: ClassVar[str]
    """The daemon's name in messages and the stem of its work files."""
    config_suffix: ClassVar[str] = ".conf"
    pid_name: ClassVar[str | None] = None
    """A pid file in ``workdir`` the daemon writes itself (``None``: the launched process)."""
    start_timeout: ClassVar[float] = 10.0
    error: ClassVar[type[Exception]] = RuntimeError
    """What ``start()`` raises for a daemon that already runs (each peer's own error)."""

    def __init__(self, ns: Netns | str, workdir: Path) -> None:
        self.ns = ns if isinstance(ns, Netns) else Netns(ns)
        self.workdir = Path(workdir)
        self._process: subprocess.Popen[Any] | None = None
        self._log: IO[bytes] | None = None

    # -- what each daemon says for itself -----------------------------------------------

    @abstractmethod
    def render_config(self) -> str:
        """The config file's text."""

    @abstractmethod
    def check_config(self) -> None:
        """Raise the daemon's own error if it refuses ``config_path`` (a dry run)."""

    @abstractmethod
    def launch(self) -> None:
        """Start the binary in ``ns``: set ``_process`` (and ``_log``), or let it fork
        away and write ``pid_path``."""

    @abstractmethod
    def answers(self) -> bool:
        """True once its control channel (vty, control socket, API) serves requests."""

    # -- files --------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / f"{self.program}{self.config_suffix}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.program}.log"

    @property
    def pid_path(self) -> Path:
        return self.workdir / f"{self.pid_name or self.program + '.pid'}"

    def _check_socket_path(self, path: Path) -> None:
        if len(str(path)) > _UNIX_PATH_MAX:
            raise ValueError(f"workdir too long for a unix socket path ({path}); use a shorter one")

    # -- process ------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The daemon's pid while it runs, else ``None``."""
        if self.pid_name is not None:
            return read_pid_file(self.pid_path)
        process = self._process
        return process.pid if process is not None and pid_alive(process.pid) else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, timeout: float | None = None) -> None:
        """Write and check the config, launch, wait until the daemon answers."""
        if (pid := self.pid()) is not None:
            raise self.error(f"{self.program} already running in {self.ns.name} (pid {pid})")
        limit = self.start_timeout if timeout is None else timeout
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.render_config())
        self.check_config()
        if self.pid_name is not None:
            self.pid_path.unlink(missing_ok=True)
        self.launch()
        try:
            wait_until(
                lambda: self.running() and self.answers(),
                limit,
                what=f"{self.program} in {self.ns.name} to answer (log: {self.log_path})",
            )
        except TimeoutError as error:
            raise TimeoutError(
                f"{error}\n--- {self.log_path}:\n{log_tail(self.log_path)}"
            ) from None

    def stop(self, timeout: float = 5.0, *, graceful: bool = True) -> None:
        """End the daemon and wait until it is gone; a no-op if it is not running.

        ``graceful=False`` sends SIGKILL: no NOTIFICATION reaches the peers, like a
        crashed router (what the other side's graceful-restart handling is tested with).
        """
        pid = self.pid()
        if pid is not None:
            end_process(pid, timeout, graceful=graceful, what=f"{self.program} {pid}")
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def restart(self, timeout: float | None = None, *, graceful: bool = True) -> None:
        self.stop(graceful=graceful)
        self.start(timeout)
