"""The runtime directory: its paths, the lock that makes it one daemon's, private files.

The directory holds ExaBGP's generated config (with the MD5 passwords) and the API socket
ExaBGP's relay connects to. A second daemon started on the same directory would delete
the first one's socket and silently take ExaBGP's API over, so the directory belongs to
the process holding ``daemon.lock`` (``flock``), for the whole life of that process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_RUNTIME_DIR: Final = Path("/run/kvip-bgp")


class RuntimeDirBusy(Exception):
    """Another process holds the runtime directory's lock; the message names its pid."""


@dataclass(frozen=True)
class RuntimePaths:
    directory: Path

    @property
    def exabgp_config(self) -> Path:
        return self.directory / "exabgp.conf"

    @property
    def api_socket(self) -> Path:
        return self.directory / "exabgp-api.sock"

    @property
    def lock_file(self) -> Path:
        return self.directory / "daemon.lock"

    def create(self) -> None:
        """The directory, private to root (0700) even if it existed with another mode."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)


class DirectoryLock:
    """An exclusive ``flock`` on ``daemon.lock``, holding this process's pid.

    The kernel drops the lock when the process exits, however it exits (SIGKILL too), so
    a stale file never blocks a restart. The descriptor is not inherited by ExaBGP
    (Python opens it close-on-exec), so the lock ends with this process.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, paths: RuntimePaths) -> DirectoryLock:
        """Take the lock or raise ``RuntimeDirBusy`` naming the pid that holds it."""
        paths.create()
        fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "another process"
            raise RuntimeDirBusy(
                f"{paths.directory} is in use by {who} (it holds {paths.lock_file.name}): "
                "another kvip-bgp runs on this host with the same --runtime-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, paths.lock_file)

    def release(self) -> None:
        """Give the directory up (at the end of ``Daemon.run``); idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    """The holder's pid, or None if it has not written it yet (or the file is foreign)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def write_private(path: Path, text: str) -> None:
    """Write a file only root can read, atomically: ExaBGP's config holds the MD5 passwords."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
