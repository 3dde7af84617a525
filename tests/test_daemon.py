"""The daemon's wiring: who may touch what across threads, and one daemon per runtime dir.

The in-process tests run ``Daemon.run`` in pytest's main thread (it installs the signal
handlers) with ExaBGP, the reconciler or the netlink tables replaced by recorders, and
end it with a real SIGTERM. The others start real ``kvip-bgp run`` processes.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from kvip_bgp import app, rundir
from kvip_bgp.bgp import process as exabgp_process
from kvip_bgp.configfile.load import load
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import BindResult, IPAddress
from kvip_bgp.testing.netlab import wait_until

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config_text(port: int | None, interface: str | None = None) -> str:
    """A static-only bare-metal daemon: one peer, one unchecked static VIP."""
    listen = f'"127.0.0.1:{port}"' if port is not None else "null"
    return textwrap.dedent(
        f"""\
        node_name: node-1
        bgp:
          asn: 64512
          router_id: 192.0.2.1
          peers: [{{address: 192.0.2.2, asn: 64500}}]
        vips:
          allowed: ["198.51.100.0/24"]
          interface: {interface or "null"}
        kubernetes: {{enabled: false}}
        static: [{{address: 198.51.100.53}}]
        http: {{listen: {listen}}}
        shutdown_timeout: 1
        """
    )


def write_config(tmp_path: Path, port: int | None, interface: str | None = None) -> Path:
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(config_text(port, interface))
    return path


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture
def process_state() -> Iterator[None]:
    """``Daemon.run`` sets process-global state (signals, gc, umask, thread names): put it back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    thresholds = gc.get_threshold()
    umask = os.umask(0o022)
    os.umask(umask)
    profile = threading.getprofile()
    yield
    threading.setprofile(profile)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    gc.set_threshold(*thresholds)
    os.umask(umask)


def run_daemon(config: Config, runtime_dir: Path, drive: Callable[[], None]) -> int:
    """``Daemon.run`` in this (main) thread; ``drive`` runs beside it, then SIGTERM ends it."""
    failures: list[BaseException] = []

    def driver() -> None:
        try:
            drive()
        except BaseException as error:  # re-raised in the test's thread below
            failures.append(error)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=driver, name="test-driver")
    thread.start()
    try:
        code = app.Daemon(config, runtime_dir).run()
    finally:
        thread.join(10)
    if failures:
        raise failures[0]
    return code


class RecordingProcess:
    """Stands in for ``ExabgpProcess`` and records which thread calls each method."""

    def __init__(self, calls: list[tuple[str, str]]) -> None:
        self.calls = calls
        self.started_at = 0.0
        self._alive = False

    def _record(self, what: str) -> None:
        self.calls.append((what, threading.current_thread().name))

    def start(self) -> None:
        self._record("start")
        self.started_at = time.monotonic()
        self._alive = True

    def poll(self) -> int | None:
        self._record("poll")
        return None if self._alive else 0

    def running(self) -> bool:
        self._record("running")
        return self._alive

    def stop(self, timeout: float = 5.0) -> None:
        self._record("stop")
        self._alive = False


def test_only_the_main_thread_touches_the_exabgp_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    """/healthz reads the state the supervisor published, never the (replaceable) Popen."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(exabgp_process, "ExabgpProcess", lambda path, env: RecordingProcess(calls))
    port = free_port()
    config = load(write_config(tmp_path, port))

    def drive() -> None:
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, 10, what="/healthz 200")
        for _ in range(20):
            assert http_get(port, "/healthz") == (200, "ok\n")

    assert run_daemon(config, tmp_path / "run", drive) == 0
    assert calls, "the daemon never used its ExaBGP process"
    assert {thread for _what, thread in calls} == {"MainThread"}, calls


def test_the_daemons_threads_carry_their_names_in_the_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_state: None
) -> None:
    """``top -H`` and /proc/PID/task/TID/comm show ``reconciler``, ``http``, not ``python3``."""
    monkeypatch.setattr(exabgp_process, "ExabgpProcess", lambda path, env: RecordingProcess([]))
    port = free_port()
    config = load(write_config(tmp_path, port))
    names = {"reconciler", "http", "exabgp-reader"}
    seen: dict[str, str] = {}

    def drive() -> None:
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, 10, what="/healthz 200")
        for thread in threading.enumerate():
            if thread.name in names:
                comm = Path(f"/proc/self/task/{thread.native_id}/comm")
                seen[thread.name] = comm.read_text().rstrip("\n")

    assert run_daemon(config, tmp_path / "run", drive) == 0
    assert seen == {name: name for name in names}


class StubbornReconciler:
    """A reconciler that does not stop in time; it ends only when the test lets it."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def run(self) -> None:
        self.release.wait(30)


class RecordingTable:
    """Stands in for the netlink address table: records whether the reconciler still ran."""

    def __init__(self, closed_while: list[bool]) -> None:
        self.closed_while = closed_while

    def owned(self) -> set[IPAddress]:
        return set()

    def bind_many(self, vips: Iterable[IPAddress]) -> BindResult:
        return BindResult(frozenset(vips), frozenset(), ())

    def unbind_many(self, vips: set[IPAddress]) -> dict[IPAddress, OSError]:
        return {}

    def close(self) -> None:
        self.closed_while.append(reconciler_alive())


def reconciler_alive() -> bool:
    return any(t.name == "reconciler" and t.is_alive() for t in threading.enumerate())


@pytest.mark.parametrize("stops", [True, False])
def test_netlink_tables_are_closed_only_after_the_reconciler_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_state: None, stops: bool
) -> None:
    """The tables are the reconciler's: closing them under a live reconciler races it."""
    import kvip_bgp.netif.addresses as addresses

    calls: list[tuple[str, str]] = []
    closed_while: list[bool] = []
    release = threading.Event()
    monkeypatch.setattr(exabgp_process, "ExabgpProcess", lambda path, env: RecordingProcess(calls))
    monkeypatch.setattr(addresses, "FamilyTable", lambda name: RecordingTable(closed_while))
    if not stops:
        monkeypatch.setattr(app, "Reconciler", lambda *a, **k: StubbornReconciler(release))
    config = load(write_config(tmp_path, None, interface="lo"))
    try:
        code = run_daemon(config, tmp_path / "run", lambda: time.sleep(0.5))
    finally:
        release.set()
    if stops:
        assert code == 0
        assert closed_while == [False]
    else:
        assert code == 1
        assert closed_while == []


# -- real processes ------------------------------------------------------------------------


def kvip_run(config: Path, runtime_dir: Path) -> subprocess.Popen[str]:
    argv = ["run", "--config", str(config), "--runtime-dir", str(runtime_dir)]
    return subprocess.Popen(
        [sys.executable, "-m", "kvip_bgp.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_a_second_daemon_on_the_same_runtime_dir_refuses_to_start(tmp_path: Path) -> None:
    """Without the lock the second one deleted the first's API socket and took over."""
    port = free_port()
    runtime_dir = tmp_path / "run"
    first = kvip_run(write_config(tmp_path, port), runtime_dir)
    try:
        wait_until(
            lambda: first.poll() is None and http_get(port, "/healthz")[0] == 200,
            30,
            what="the first daemon is up",
        )
        socket_inode = (runtime_dir / "exabgp-api.sock").stat().st_ino
        second_config = tmp_path / "second.yaml"
        second_config.write_text(config_text(free_port()))
        second = kvip_run(second_config, runtime_dir)
        try:
            code = second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stop(second)
            pytest.fail("the second daemon started beside the first")
        _out, err = second.communicate()
        assert code == 1
        assert f"is in use by pid {first.pid}" in err, err
        # The first daemon keeps its socket and its health.
        assert (runtime_dir / "exabgp-api.sock").stat().st_ino == socket_inode
        assert first.poll() is None
        assert http_get(port, "/healthz")[0] == 200
    finally:
        _out, err = stop(first)
    assert first.returncode == 0, err
    # Once the first has exited the directory is free again.
    rundir.DirectoryLock.acquire(rundir.RuntimePaths(runtime_dir)).release()


def test_static_only_daemon_never_imports_kubernetes(tmp_path: Path) -> None:
    """kubernetes.enabled: false runs the whole static path without the kubernetes client."""
    port = free_port()
    config = write_config(tmp_path, port)
    script = textwrap.dedent(
        f"""\
        import json, os, signal, sys, threading, time, urllib.request
        from pathlib import Path
        from kvip_bgp.app import Daemon
        from kvip_bgp.configfile.load import load

        daemon = Daemon(load(Path({str(config)!r})), Path({str(tmp_path / "run")!r}))
        seen = {{}}

        def probe():
            # The HTTP server starts after the sources: ask until it answers. Stop the
            # daemon whatever happened, so that a failure is reported, not a hang.
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    status = daemon.reconciler_status.read()
                    if status.all_synced and status.synced_sources:
                        break
                    time.sleep(0.05)
                while "status" not in seen:
                    try:
                        url = "http://127.0.0.1:{port}/status"
                        with urllib.request.urlopen(url, timeout=5) as r:
                            seen["status"] = json.load(r)
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                seen["running"] = "kubernetes" in sys.modules
            finally:
                os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=probe).start()
        code = Daemon.run(daemon)
        print(json.dumps({{
            "code": code,
            "running": seen.get("running"),
            "after": "kubernetes" in sys.modules,
            "synced_sources": seen.get("status", {{}}).get("synced_sources"),
        }}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(
        next(line for line in reversed(result.stdout.splitlines()) if line.startswith('{"code"'))
    )
    assert report["code"] == 0
    assert report["synced_sources"] == ["static:198.51.100.53"], "the static path did not run"
    assert report["running"] is False
    assert report["after"] is False


def test_the_lock_names_its_holder_and_is_free_again_once_released(tmp_path: Path) -> None:
    paths = rundir.RuntimePaths(tmp_path / "run")
    held = rundir.DirectoryLock.acquire(paths)
    try:
        assert paths.lock_file.read_text() == f"{os.getpid()}\n"
        assert (paths.directory.stat().st_mode & 0o777) == 0o700
        with pytest.raises(rundir.RuntimeDirBusy, match=f"in use by pid {os.getpid()} "):
            rundir.DirectoryLock.acquire(paths)
    finally:
        held.release()
    rundir.DirectoryLock.acquire(paths).release()


def test_a_reloaded_shutdown_timeout_is_the_one_sigterm_uses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    process_state: None,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Shutdown read the timeout of the config it started with, not the running one."""
    import structlog

    monkeypatch.setattr(exabgp_process, "ExabgpProcess", lambda path, env: RecordingProcess([]))
    port = free_port()
    path = write_config(tmp_path, port)
    config = load(path)
    assert config.shutdown_timeout == 1

    def drive() -> None:
        wait_until(lambda: http_get(port, "/healthz")[0] == 200, 10, what="/healthz 200")
        path.write_text(config_text(port).replace("shutdown_timeout: 1", "shutdown_timeout: 3"))
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(
            lambda: json.loads(http_get(port, "/status")[1])["config"]["hash"] != "",
            10,
            what="the reload",
        )

    try:
        assert run_daemon(config, tmp_path / "run", drive) == 0
    finally:
        structlog.reset_defaults()  # the reload configured logging for the whole process
    events = []
    for line in capfd.readouterr().err.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    reloaded = [e for e in events if e.get("event") == "config.reloaded"]
    assert reloaded and reloaded[-1]["changed"] == ["shutdown_timeout"]
    assert [e["timeout"] for e in events if e.get("event") == "app.stopping"] == [3.0]


@pytest.mark.parametrize("node_selector", [False, True])
def test_exabgp_starts_before_the_kubernetes_client_unless_peers_need_node_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, process_state: None, node_selector: bool
) -> None:
    """ExaBGP's start and the sessions overlap with the ``kubernetes`` import (exec to the
    first route, docs/performance.md); with a node_selector the peers are known only from
    the Node's labels, so the credentials come first. A kube start-up failure after ExaBGP
    started stops it again."""
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(exabgp_process, "ExabgpProcess", lambda path, env: RecordingProcess(calls))

    def no_credentials(self: app.Daemon) -> None:
        calls.append(("kube_configuration", threading.current_thread().name))
        raise app.StartupError("no credentials (test)")

    monkeypatch.setattr(app.Daemon, "_kube_configuration", no_credentials)
    text = config_text(None).replace("kubernetes: {enabled: false}", "kubernetes: {enabled: true}")
    if node_selector:
        text = text.replace("asn: 64500}", "asn: 64500, node_selector: {rack: r1}}")
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(text)
    config = load(path)
    assert config.kubernetes.enabled and bool(config.bgp.peers[0].node_selector) is node_selector

    with pytest.raises(app.StartupError, match="no credentials"):
        app.Daemon(config, tmp_path / "run").run()
    steps = [what for what, _thread in calls if what in ("start", "kube_configuration", "stop")]
    if node_selector:
        assert steps == ["kube_configuration"]
    else:
        assert steps == ["start", "kube_configuration", "stop"]
