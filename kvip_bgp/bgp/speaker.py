"""ExaBGP and the thread reading its API socket, started together for ``output: exabgp``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvip_bgp.bgp import process as exabgp
from kvip_bgp.bgp.api import ApiReader, listen_api_socket
from kvip_bgp.bgp.config import exabgp_environment
from kvip_bgp.runtime.messages import ApiMessage
from kvip_bgp.runtime.snapshot import Snapshot


@dataclass(frozen=True)
class Speaker:
    """ExaBGP and the thread reading its API socket, for ``output: exabgp``."""

    supervisor: exabgp.ExabgpSupervisor
    reader: ApiReader
    socket_path: Path

    def stop(self, timeout: float) -> None:
        self.supervisor.stop(timeout)
        self.reader.stop()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()


def start_speaker(
    exabgp_config: Path,
    api_socket: Path,
    post: Callable[[ApiMessage], None],
    running: Snapshot[bool],
    came_up_since: Callable[[float], bool],
    on_restart: Callable[[], None],
) -> Speaker:
    """The API socket, its reader thread, and ExaBGP on its (already written) config."""
    listener = listen_api_socket(api_socket)
    reader = ApiReader(listener, post)
    reader.start()
    supervisor = exabgp.ExabgpSupervisor(
        exabgp.ExabgpProcess(exabgp_config, exabgp_environment()),
        running,
        came_up_since,
        on_restart,
    )
    supervisor.start()
    return Speaker(supervisor, reader, api_socket)
