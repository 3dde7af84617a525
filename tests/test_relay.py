"""The relay process on its own: a real ``python -m kvip_bgp.bgp.relay`` between pipes and a socket.

The relay's stderr is ExaBGP's stderr, which the daemon forwards into its own log as
``exabgp.log`` lines. So whichever side goes away first, the relay must leave quietly: a
traceback there reads to an operator like an ExaBGP crash. (A CI run found one: ExaBGP was
SIGKILLed while the daemon was sending, and the relay's writer thread died on EPIPE.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EXIT_TIMEOUT = 10.0


@dataclass
class Relay:
    """A running relay: ``exabgp_in``/``exabgp_out`` are ExaBGP's ends of its pipes."""

    process: subprocess.Popen[bytes]
    daemon: socket.socket
    exabgp_in: int
    """Where ExaBGP writes (the relay's stdin)."""
    exabgp_out: int
    """Where ExaBGP reads (the relay's stdout)."""

    def finish(self) -> tuple[int, str]:
        """Wait for the relay to exit: its exit code and everything it wrote to stderr."""
        _, stderr = self.process.communicate(timeout=EXIT_TIMEOUT)
        return self.process.returncode, stderr.decode(errors="replace")


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    path = tmp_path / "api.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    stdin_r, stdin_w = os.pipe()
    stdout_r, stdout_w = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "kvip_bgp.bgp.relay", str(path)],
        stdin=stdin_r,
        stdout=stdout_w,
        stderr=subprocess.PIPE,
    )
    os.close(stdin_r)
    os.close(stdout_w)
    listener.settimeout(EXIT_TIMEOUT)
    daemon, _ = listener.accept()
    listener.close()
    running = Relay(process, daemon, stdin_w, stdout_r)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        daemon.close()
        for fd in (stdin_w, stdout_r):
            # The test may have closed it already: that was the point of the test.
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_exactly(fd: int, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = os.read(fd, count - len(data))
        assert chunk, f"EOF after {len(data)} of {count} bytes"
        data += chunk
    return data


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    sock.settimeout(EXIT_TIMEOUT)
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"EOF after {len(data)} of {count} bytes"
        data += chunk
    return data


def test_bytes_pass_both_ways(relay: Relay) -> None:
    command = b"announce route 198.51.100.1/32 next-hop self\n" * 2000
    relay.daemon.sendall(command)
    assert _read_exactly(relay.exabgp_out, len(command)) == command
    answer = b"done\n" * 1000
    os.write(relay.exabgp_in, answer)
    assert _recv_exactly(relay.daemon, len(answer)) == answer


def test_exabgp_dies_while_the_daemon_sends(relay: Relay) -> None:
    """ExaBGP SIGKILLed: both its pipe ends close while commands are still flowing."""
    os.close(relay.exabgp_out)
    os.close(relay.exabgp_in)
    line = b"announce route 198.51.100.1/32 next-hop self\n"
    deadline = time.monotonic() + EXIT_TIMEOUT
    try:
        while relay.process.poll() is None and time.monotonic() < deadline:
            relay.daemon.sendall(line * 100)
    except OSError:
        pass  # the relay closed the socket: what it should do
    code, stderr = relay.finish()
    assert (code, stderr) == (0, "")


def test_exabgp_closes_only_the_command_pipe(relay: Relay) -> None:
    """ExaBGP stops reading commands first (its read end closes before stdin's write end)."""
    os.close(relay.exabgp_out)
    with contextlib.suppress(OSError):  # the relay may already have closed the socket
        relay.daemon.sendall(b"announce route 198.51.100.1/32 next-hop self\n" * 100)
    code, stderr = relay.finish()
    assert (code, stderr) == (0, "")


def test_exabgp_closes_its_output(relay: Relay) -> None:
    """EOF on the relay's stdin: it exits and the daemon sees the connection close."""
    os.close(relay.exabgp_in)
    code, stderr = relay.finish()
    assert (code, stderr) == (0, "")
    relay.daemon.settimeout(EXIT_TIMEOUT)
    assert relay.daemon.recv(1) == b""


def test_daemon_goes_away(relay: Relay) -> None:
    """The daemon closes its end: the relay exits so ExaBGP respawns it for the next one."""
    relay.daemon.close()
    code, stderr = relay.finish()
    assert (code, stderr) == (0, "")
