"""ExaBGP's API socket: the reader thread and the reconciler's writer.

- ``ApiReader`` is the *exabgp reader thread*. It accepts the relay's connection on the
  daemon's Unix socket and reads ExaBGP's output continuously (a full pipe would freeze
  ExaBGP and every BGP session). It turns lines into frozen messages for the reconciler.
  On each new connection it duplicates the socket's file descriptor and hands the copy,
  an ``int``, to the reconciler, which from then on is the only writer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from kvip_bgp.bgp.commands import Command
from kvip_bgp.runtime.messages import (
    ApiConnected,
    ApiDisconnected,
    ApiMessage,
    CommandAck,
    ExabgpShutdown,
    PeerState,
)

log = structlog.get_logger("kvip_bgp.exabgp")


def parse_api_line(line: str, generation: int, acks_so_far: int) -> ApiMessage | None:
    """Turn one line of ExaBGP output into a message (None for lines we do not use)."""
    text = line.strip()
    if text in ("done", "error"):
        return CommandAck(generation, acks_so_far + 1, text == "done")
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    kind = data.get("type")
    if kind == "notification" and data.get("notification") == "shutdown":
        return ExabgpShutdown(generation)
    if kind == "state":
        neighbor = data.get("neighbor")
        if not isinstance(neighbor, dict):
            return None
        address = neighbor.get("address")
        peer = address.get("peer") if isinstance(address, dict) else None
        state = neighbor.get("state")
        reason = neighbor.get("reason")
        if isinstance(peer, str) and isinstance(state, str):
            return PeerState(peer, state, reason if isinstance(reason, str) else None, time.time())
    return None


def count_session(message: PeerState, sessions: dict[str, int]) -> PeerState:
    """Number ``message`` with its peer's session: each "up" starts the next one."""
    if message.state == "up":
        sessions[message.peer] = sessions.get(message.peer, 0) + 1
    return dataclasses.replace(message, session=sessions.get(message.peer, 0))


class ApiReader(threading.Thread):
    """The exabgp reader thread: accepts relay connections and reads them to the end."""

    def __init__(self, listener: socket.socket, deliver: Callable[[ApiMessage], None]) -> None:
        super().__init__(name="exabgp-reader", daemon=True)
        self._listener = listener
        self._deliver = deliver
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def run(self) -> None:
        generation = 0
        sessions: dict[str, int] = {}  # per peer, over every connection
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                time.sleep(0.1)
                continue
            generation += 1
            log.info("exabgp.api_connected", generation=generation)
            self._deliver(ApiConnected(generation, os.dup(conn.fileno())))
            self._read(conn, generation, sessions)
            conn.close()
            log.info("exabgp.api_disconnected", generation=generation)
            self._deliver(ApiDisconnected(generation))

    def _read(self, conn: socket.socket, generation: int, sessions: dict[str, int]) -> None:
        acks = 0
        buffer = b""
        # The writer's duplicate shares this file description and sets O_NONBLOCK on it
        # (socket timeouts work that way), so read with a timeout too: Python then polls
        # before each recv instead of failing with EAGAIN.
        conn.settimeout(5.0)
        while True:
            try:
                data = conn.recv(1 << 16)
            except TimeoutError:
                if self._stopping.is_set():
                    return
                continue
            except OSError:
                return
            if not data:
                return
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                message = parse_api_line(raw.decode("utf-8", "replace"), generation, acks)
                if isinstance(message, CommandAck):
                    acks = message.index
                elif isinstance(message, PeerState):
                    message = count_session(message, sessions)
                if message is not None:
                    self._deliver(message)


class ApiWriter:
    """The reconciler's end of the pipe: writes command lines to the current connection."""

    def __init__(self, fd: int, generation: int, timeout: float = 30.0) -> None:
        self.generation = generation
        self._sock = socket.socket(fileno=fd)
        self._sock.settimeout(timeout)

    def send(self, commands: Sequence[Command]) -> None:
        """Raises OSError when the connection is gone or stuck for ``timeout``."""
        if commands:
            payload = "".join(c.text + "\n" for c in commands).encode("ascii")
            self._sock.sendall(payload)

    def close(self) -> None:
        self._sock.close()


def listen_api_socket(path: Path) -> socket.socket:
    """The Unix socket the relay connects to; private to root (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() or path.is_symlink():
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # No umask dance (the umask is the whole process's, shared by every thread): the
    # directory is 0700 and the daemon's umask 0077 (process.py), so the socket is
    # private from the moment it exists; the chmod only makes it 0600 exactly.
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(4)
    return sock
