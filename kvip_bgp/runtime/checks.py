"""Health checks of static VIPs: TCP connect, HTTP status, a command's exit code.

Checks honour their timeout: a server that accepts and never answers, or a command that
never exits, costs at most ``timeout`` (commands are killed with their whole process
group), so one slow check never stalls the next.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kvip_bgp.domain.config import HealthCheck
from kvip_bgp.runtime.https import Tls, https_connection, tls_settings


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; ``reason`` is what an operator reads in ``health.down``."""

    passed: bool
    reason: str


def describe(check: HealthCheck) -> str:
    """A short, stable description of a check for logs (``tcp 127.0.0.1:53``)."""
    if check.tcp is not None:
        host, port = check.tcp
        return f"tcp {_join_host_port(host, port)}"
    if check.http is not None:
        return f"http {check.http}"
    if check.exec_argv is not None:
        return "exec " + " ".join(check.exec_argv)
    return "none"


def run_check(check: HealthCheck) -> CheckResult:
    """Run one check of whichever kind is configured, bounded by ``check.timeout``.

    An unexpected exception counts as a failure instead of killing the watcher thread:
    a VIP whose check cannot run must not stay announced because its watcher died.
    """
    try:
        if check.tcp is not None:
            return check_tcp(check.tcp[0], check.tcp[1], check.timeout)
        if check.http is not None:
            return check_http(check.http, check.expect, check.timeout, tls_settings(check))
        if check.exec_argv is not None:
            return check_exec(check.exec_argv, check.timeout)
    except Exception as error:  # a bug or an exotic OS error: fail the check, keep going
        return CheckResult(False, f"check error: {type(error).__name__}: {error}")
    return CheckResult(False, "no check configured")


def check_tcp(host: str, port: int, timeout: float) -> CheckResult:
    """Pass when a TCP connection to ``host:port`` is established within ``timeout``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return CheckResult(True, "connected")
    except OSError as error:
        return CheckResult(False, _os_error_reason(error))


def check_http(url: str, expect: int, timeout: float, tls: Tls | None = None) -> CheckResult:
    """Pass when ``GET url`` answers with status ``expect`` within ``timeout``.

    ``http.client`` rather than ``urllib``: redirects are not followed (a 301 is an
    answer, and ``expect: 301`` must be checkable) and ``http_proxy`` from the environment
    is not used (a health check of a local service must not go through a proxy).
    Only the status line and headers are read, never the body.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return CheckResult(False, f"bad URL {url!r}")
    deadline = time.monotonic() + timeout
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = https_connection(parts.hostname, parts.port, timeout, tls)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    try:
        connection.connect()
        if connection.sock is not None:
            # The budget is for the whole check, not per socket operation.
            connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        connection.request("GET", path, headers={"User-Agent": "kvip-bgp-health"})
        response = connection.getresponse()
        status = response.status
    except ssl.SSLCertVerificationError as error:  # a ValueError too: before that
        return CheckResult(False, f"certificate not trusted: {error.verify_message}")
    except (http.client.HTTPException, ValueError) as error:
        return CheckResult(False, f"bad response: {type(error).__name__}")
    except OSError as error:
        return CheckResult(False, _os_error_reason(error))
    finally:
        connection.close()
    return CheckResult(status == expect, f"HTTP {status}")


def check_exec(argv: Iterable[str], timeout: float) -> CheckResult:
    """Pass when ``argv`` exits 0 within ``timeout``; otherwise kill it and fail.

    The command runs in its own session and the whole process group is killed on
    timeout, so a hung shell script's children (``sh -c 'curl ...'``) do not outlive it
    and pile up one per interval. Output is discarded: nothing reads it, and a pipe nobody
    drains could block the command.
    """
    argv = tuple(argv)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as error:
        return CheckResult(False, f"cannot run {argv[0]!r}: {_os_error_reason(error)}")
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        return CheckResult(False, "timeout")
    if code == 0:
        return CheckResult(True, "exit 0")
    if code < 0:
        return CheckResult(False, f"killed by {_signal_name(-code)}")
    return CheckResult(False, f"exit {code}")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's process group, then reap the command.

    Only called while the command is still unreaped: its pid (the group id) cannot have
    been reused, so this never signals an unrelated process.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _os_error_reason(error: OSError) -> str:
    """Short, stable reasons for the common cases; the OS message for the rest."""
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve host: {error.strerror or error}"
    if error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


def _join_host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def exists(path: Path) -> bool:
    """Whether the maintenance file exists; an unreadable directory counts as absent."""
    try:
        return path.exists()
    except OSError:
        return False
