"""Health-checked static VIPs: the rise/fall table, then real checks on 127.0.0.1.

The watcher tests run real threads against real listeners, HTTP servers and commands,
with short intervals. They never sleep and hope: every expectation is a wait for a
condition with a deadline.
"""

from __future__ import annotations

import http.server
import ipaddress
import itertools
import shutil
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog

from kvip_bgp.domain.config import HealthCheck, StaticVip
from kvip_bgp.domain.model import Advertisement, Community, IPAddress, RouteAttributes
from kvip_bgp.runtime.checks import (
    CheckResult,
    check_exec,
    check_http,
    check_tcp,
    run_check,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.static import (
    CheckState,
    StaticVipWatcher,
    desired_route,
    static_watchers,
)
from kvip_bgp.testing.procfs import pid_alive

VIP = ipaddress.ip_address("198.51.100.53")
DEFAULTS = RouteAttributes(communities=(Community.parse("64512:100"),), med=10)
WAIT = 5.0  # generous deadline for any one expected state; normally reached in < 0.5 s
TEST = shutil.which("test") or "/usr/bin/test"

Logs = list[MutableMapping[str, Any]]


# -- the rise/fall transition function --------------------------------------------------


def run_sequence(rise: int, fall: int, results: str) -> str:
    """Feed ``results`` ('P' pass, 'F' fail) and return the state after each ('U'/'D')."""
    state = CheckState(rise=rise, fall=fall)
    seen = []
    for r in results:
        state = state.record(r == "P")
        seen.append("U" if state.up else "D")
    return "".join(seen)


@pytest.mark.parametrize(
    ("rise", "fall", "results", "expected"),
    [
        (1, 1, "P", "U"),
        (1, 1, "F", "D"),
        (1, 1, "PFPF", "UDUD"),
        (2, 3, "P", "D"),
        (2, 3, "PP", "DU"),
        (2, 3, "PFP", "DDD"),  # passes must be consecutive
        (2, 3, "PFPP", "DDDU"),
        (2, 3, "PPF", "DUU"),
        (2, 3, "PPFF", "DUUU"),
        (2, 3, "PPFFF", "DUUUD"),
        (2, 3, "PPFFPFF", "DUUUUUU"),  # a pass while up resets the failure count
        (2, 3, "PPFFPFFF", "DUUUUUUD"),
        (2, 3, "PPFFFP", "DUUUDD"),  # after going down, rise starts from zero
        (2, 3, "PPFFFPP", "DUUUDDU"),
        (3, 1, "PPPF", "DDUD"),
        (1, 5, "PFFFFF", "UUUUUD"),
        (2, 2, "FFFFPP", "DDDDDU"),  # failures while down do not count towards anything
    ],
)
def test_rise_fall_table(rise: int, fall: int, results: str, expected: str) -> None:
    assert run_sequence(rise, fall, results) == expected


@pytest.mark.parametrize(
    ("start", "passed", "after"),
    [
        (CheckState(2, 3), True, CheckState(2, 3, up=False, passes=1)),
        (CheckState(2, 3, passes=1), True, CheckState(2, 3, up=True)),
        (CheckState(2, 3, passes=1), False, CheckState(2, 3)),
        (CheckState(2, 3, up=True), False, CheckState(2, 3, up=True, failures=1)),
        (CheckState(2, 3, up=True, failures=2), False, CheckState(2, 3)),
        (CheckState(2, 3, up=True, failures=2), True, CheckState(2, 3, up=True)),
    ],
)
def test_record_counters(start: CheckState, passed: bool, after: CheckState) -> None:
    assert start.record(passed) == after
    assert start == replace(start)  # record returned a new value; the old one is unchanged


def test_check_state_refuses_zero_rise_or_fall() -> None:
    with pytest.raises(ValueError):
        CheckState(rise=0, fall=1)
    with pytest.raises(ValueError):
        CheckState(rise=1, fall=0)


# -- desired route ----------------------------------------------------------------------


def advert(attributes: RouteAttributes = DEFAULTS) -> Advertisement:
    return Advertisement(VIP, attributes, (f"static:{VIP}",))


@pytest.mark.parametrize(
    ("down_med", "up", "maintenance", "expected"),
    [
        (None, True, False, advert()),
        (None, False, False, None),
        (None, True, True, None),
        (None, False, True, None),
        (500, True, False, advert()),
        (500, False, False, advert(replace(DEFAULTS, med=500))),
        (500, True, True, None),  # drain wins over down_med
        (500, False, True, None),
    ],
)
def test_desired_route(
    down_med: int | None, up: bool, maintenance: bool, expected: Advertisement | None
) -> None:
    vip = StaticVip(VIP, down_med=down_med)
    assert desired_route(vip, DEFAULTS, up, maintenance) == expected


# -- harness ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    vip: IPAddress
    advert: Advertisement | None


class Recorder:
    """The ``publish``/``first_result`` callbacks: append under a condition, wait on it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.published: list[Published] = []
        self.first: list[tuple[IPAddress, int]] = []  # (vip, publishes seen at that time)

    def publish(self, vip: IPAddress, advert: Advertisement | None) -> None:
        with self._cond:
            self.published.append(Published(vip, advert))
            self._cond.notify_all()

    def first_result(self, vip: IPAddress) -> None:
        with self._cond:
            self.first.append((vip, len(self.published)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Published]], bool], what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.published), timeout=WAIT):
                pytest.fail(f"timed out waiting for {what}; published: {self.published}")

    def wait_latest(self, expected: Advertisement | None, what: str) -> int:
        """Wait until the latest publish equals ``expected``; return how many there were."""
        self.wait_for(lambda p: bool(p) and p[-1].advert == expected, what)
        with self._cond:
            return len(self.published)

    def snapshot(self) -> list[Published]:
        with self._cond:
            return list(self.published)


@dataclass
class Harness:
    recorder: Recorder
    metrics: Metrics
    stop: threading.Event
    watchers: list[StaticVipWatcher]

    def start(
        self, vip: StaticVip, defaults: RouteAttributes = DEFAULTS, **kwargs: Any
    ) -> StaticVipWatcher:
        watcher = StaticVipWatcher(
            vip,
            defaults,
            self.recorder.publish,
            self.metrics,
            self.stop,
            self.recorder.first_result,
            **kwargs,
        )
        self.watchers.append(watcher)
        watcher.start()
        return watcher

    def health_up(self, vip: IPAddress = VIP) -> float | None:
        return self.metrics.registry.get_sample_value("kvip_bgp_health_check_up", {"vip": str(vip)})


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(Recorder(), Metrics(), threading.Event(), [])
    yield h
    h.stop.set()
    for watcher in h.watchers:
        watcher.join(timeout=2.0)
        assert not watcher.is_alive(), f"{watcher.name} did not stop"


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: Logs, name: str) -> list[MutableMapping[str, Any]]:
    return [e for e in list(logs) if e["event"] == name]


def fast(**kwargs: Any) -> HealthCheck:
    settings: dict[str, Any] = {"interval": 0.05, "timeout": 0.05, "rise": 2, "fall": 2}
    settings.update(kwargs)
    return HealthCheck(**settings)


# -- TCP --------------------------------------------------------------------------------


class _Accept(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass  # accept and close: a connect is all the check needs


class TcpService:
    """A real listener on 127.0.0.1 that can be closed and reopened on the same port."""

    def __init__(self) -> None:
        self.server: socketserver.ThreadingTCPServer | None = None
        self.port = 0
        self.open()

    def open(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _Accept)
        server.daemon_threads = True
        self.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.server = server

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture
def tcp_service() -> Iterator[TcpService]:
    service = TcpService()
    yield service
    service.close()


def test_tcp_check_follows_listener(harness: Harness, tcp_service: TcpService, logs: Logs) -> None:
    vip = StaticVip(VIP, check=fast(tcp=("127.0.0.1", tcp_service.port), rise=2, fall=3))
    harness.start(vip)

    harness.recorder.wait_latest(advert(), "tcp up")
    first = harness.recorder.snapshot()
    assert first[0] == Published(VIP, None), "initial DOWN is reported before rise passes"
    assert harness.recorder.first == [(VIP, 1)], "first_result once, after the first publish"
    assert harness.health_up() == 1

    tcp_service.close()
    count = harness.recorder.wait_latest(None, "tcp down after fall failures")
    assert harness.health_up() == 0
    down = events(logs, "health.down")
    assert len(down) == 1
    assert down[0]["vip"] == str(VIP)
    assert down[0]["reason"] == "connection refused"
    assert down[0]["check"] == f"tcp 127.0.0.1:{tcp_service.port}"

    tcp_service.open()
    harness.recorder.wait_for(lambda p: len(p) > count and p[-1].advert == advert(), "tcp up")
    published = [p.advert for p in harness.recorder.snapshot()]
    assert published == [None, advert(), None, advert()], "publish only on change"
    assert len(events(logs, "health.up")) == 2
    assert harness.recorder.first == [(VIP, 1)]


def test_tcp_check_direct(tcp_service: TcpService) -> None:
    assert check_tcp("127.0.0.1", tcp_service.port, 0.5) == CheckResult(True, "connected")
    tcp_service.close()
    assert check_tcp("127.0.0.1", tcp_service.port, 0.5) == CheckResult(False, "connection refused")


# -- HTTP -------------------------------------------------------------------------------


class HttpService:
    """http.server in a thread; the test sets the status it answers with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = 200
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = service.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"

    @property
    def status(self) -> int:
        with self._lock:
            return self._status

    @status.setter
    def status(self, value: int) -> None:
        with self._lock:
            self._status = value

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_service() -> Iterator[HttpService]:
    service = HttpService()
    yield service
    service.close()


def test_http_check_200_503_200(harness: Harness, http_service: HttpService, logs: Logs) -> None:
    vip = StaticVip(VIP, check=fast(http=http_service.url, timeout=0.5, rise=2, fall=2))
    harness.start(vip)
    harness.recorder.wait_latest(advert(), "http up on 200")

    http_service.status = 503
    count = harness.recorder.wait_latest(None, "http down on 503")
    (down,) = events(logs, "health.down")
    assert down["reason"] == "HTTP 503"
    assert down["check"] == f"http {http_service.url}"

    http_service.status = 200
    harness.recorder.wait_for(lambda p: len(p) > count and p[-1].advert == advert(), "http up")
    assert [p.advert for p in harness.recorder.snapshot()] == [None, advert(), None, advert()]


def test_http_check_expect_and_hanging_server(http_service: HttpService) -> None:
    http_service.status = 204
    assert check_http(http_service.url, 204, 1.0) == CheckResult(True, "HTTP 204")
    assert check_http(http_service.url, 200, 1.0) == CheckResult(False, "HTTP 204")

    # A server that accepts (in the kernel backlog) and never answers.
    with socket.socket() as hanging:
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(8)
        url = f"http://127.0.0.1:{hanging.getsockname()[1]}/"
        started = time.monotonic()
        assert check_http(url, 200, 0.3) == CheckResult(False, "timeout")
        assert time.monotonic() - started < 1.0


def test_http_check_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = check_http(f"http://127.0.0.1:{port}/", 200, 0.5)
    assert result == CheckResult(False, "connection refused")


# -- exec -------------------------------------------------------------------------------


def test_exec_check_results() -> None:
    assert check_exec(["/bin/true"], 1.0) == CheckResult(True, "exit 0")
    assert check_exec(["/bin/false"], 1.0) == CheckResult(False, "exit 1")
    assert check_exec(["sh", "-c", "exit 7"], 1.0) == CheckResult(False, "exit 7")
    missing = check_exec(["/nonexistent/kvip-check"], 1.0)
    assert not missing.passed
    assert "cannot run" in missing.reason


def test_exec_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    # The shell starts a grandchild; on timeout both must go, not only the shell.
    result = check_exec(["sh", "-c", f"sleep 5 & echo $! > {pidfile}; wait"], 0.3)
    elapsed = time.monotonic() - started
    assert result == CheckResult(False, "timeout")
    assert elapsed < 1.5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + WAIT
    while pid_alive(child):
        assert time.monotonic() < deadline, f"grandchild {child} survived the timeout"
        time.sleep(0.02)


def test_exec_watcher_true_false_and_timeout(harness: Harness, logs: Logs) -> None:
    ok = StaticVip(ipaddress.ip_address("198.51.100.1"), check=fast(exec_argv=("/bin/true",)))
    bad = StaticVip(ipaddress.ip_address("198.51.100.2"), check=fast(exec_argv=("/bin/false",)))
    slow = StaticVip(
        ipaddress.ip_address("198.51.100.3"),
        check=fast(exec_argv=("sleep", "5"), interval=0.4, timeout=0.3, rise=1, fall=1),
    )
    started = time.monotonic()
    for vip in (ok, bad, slow):
        harness.start(vip)

    def latest(vip: IPAddress) -> Callable[[list[Published]], Advertisement | str | None]:
        def pick(published: list[Published]) -> Advertisement | str | None:
            mine = [p.advert for p in published if p.vip == vip]
            return mine[-1] if mine else "nothing"

        return pick

    ok_advert = Advertisement(ok.address, DEFAULTS, (f"static:{ok.address}",))
    harness.recorder.wait_for(lambda p: latest(ok.address)(p) == ok_advert, "/bin/true up")
    harness.recorder.wait_for(lambda p: latest(bad.address)(p) is None, "/bin/false reported")
    harness.recorder.wait_for(lambda p: latest(slow.address)(p) is None, "sleep reported")
    # The slow VIP's initial DOWN comes right after its first (timed-out) check.
    assert time.monotonic() - started < 2.0

    downs = {e["vip"]: e["reason"] for e in events(logs, "health.down")}
    assert downs == {str(bad.address): "exit 1", str(slow.address): "timeout"}
    assert harness.health_up(ok.address) == 1
    assert harness.health_up(bad.address) == 0
    assert sorted(v for v, _ in harness.recorder.first) == [ok.address, bad.address, slow.address]

    harness.stop.set()
    stop_started = time.monotonic()
    for watcher in harness.watchers:
        watcher.join(timeout=2.0)
    assert time.monotonic() - stop_started < 1.0, "a stopping watcher waits at most a check"


# -- maintenance, down_med, no check ----------------------------------------------------


def test_maintenance_file_drains_and_returns(harness: Harness, tmp_path: Path, logs: Logs) -> None:
    drain = tmp_path / "drain"
    vip = StaticVip(VIP, check=fast(exec_argv=("/bin/true",), rise=1), maintenance_file=drain)
    harness.start(vip)
    harness.recorder.wait_latest(advert(), "up")

    drain.touch()
    harness.recorder.wait_latest(None, "drained")
    assert events(logs, "health.maintenance_on") == [
        {"event": "health.maintenance_on", "vip": str(VIP), "file": str(drain), "log_level": "info"}
    ]
    assert harness.health_up() == 1, "draining is not a failing check"

    drain.unlink()
    harness.recorder.wait_latest(advert(), "back after drain")
    assert len(events(logs, "health.maintenance_off")) == 1
    assert [p.advert for p in harness.recorder.snapshot()] == [advert(), None, advert()]


def test_maintenance_file_present_at_start(harness: Harness, tmp_path: Path) -> None:
    drain = tmp_path / "drain"
    drain.touch()
    harness.start(StaticVip(VIP, maintenance_file=drain), poll_interval=0.05)
    harness.recorder.wait_for(bool, "first publish")
    assert harness.recorder.snapshot()[0] == Published(VIP, None)
    drain.unlink()
    harness.recorder.wait_latest(advert(), "announced once the drain file is gone")


def test_down_med_keeps_announcing_with_worse_med(harness: Harness, tmp_path: Path) -> None:
    healthy = tmp_path / "healthy"  # the check passes while this file exists
    vip = StaticVip(VIP, check=fast(exec_argv=(TEST, "-e", str(healthy))), down_med=500)
    degraded = advert(replace(DEFAULTS, med=500))
    harness.start(vip)

    harness.recorder.wait_for(bool, "initial state")
    assert harness.recorder.snapshot()[0] == Published(VIP, degraded), "initial DOWN: worse MED"

    healthy.touch()
    harness.recorder.wait_latest(advert(), "up with the default MED")
    healthy.unlink()
    harness.recorder.wait_latest(degraded, "down: still announced, MED 500")
    assert [p.advert for p in harness.recorder.snapshot()] == [degraded, advert(), degraded]


def test_no_check_announced_immediately(harness: Harness) -> None:
    started = time.monotonic()
    harness.start(StaticVip(VIP))
    harness.recorder.wait_latest(advert(), "announced")
    assert time.monotonic() - started < 1.0
    assert harness.recorder.first == [(VIP, 1)]
    assert harness.health_up() == 1


def test_interval_is_start_to_start(harness: Harness, tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    script = f"date +%s.%N >> {stamps}; sleep 0.1"
    check = HealthCheck(exec_argv=("sh", "-c", script), interval=0.2, timeout=0.15)
    harness.start(StaticVip(VIP, check=check))
    deadline = time.monotonic() + WAIT
    while not stamps.exists() or len(stamps.read_text().split()) < 6:
        assert time.monotonic() < deadline, "checks did not run"
        harness.stop.wait(0.05)
    times = [float(t) for t in stamps.read_text().split()]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    median = gaps[len(gaps) // 2]
    # Start to start: ~0.2 s. A drifting loop would give ~0.3 s (0.1 check + 0.2 sleep).
    assert 0.15 < median < 0.26, gaps


def test_static_watchers_builds_one_unstarted_thread_per_vip() -> None:
    statics = [StaticVip(ipaddress.ip_address(f"198.51.100.{i}")) for i in (1, 2)]
    recorder = Recorder()
    watchers = static_watchers(
        statics, DEFAULTS, recorder.publish, Metrics(), threading.Event(), recorder.first_result
    )
    assert [w.vip for w in watchers] == statics
    assert not any(w.is_alive() for w in watchers)
    assert all(w.daemon for w in watchers)


def test_run_check_turns_exceptions_into_failures() -> None:
    # A NUL byte in argv makes Popen raise ValueError, not OSError: still only a failure.
    result = run_check(HealthCheck(exec_argv=("/bin/true\0",), timeout=0.2))
    assert not result.passed
    assert result.reason.startswith("check error: ValueError")


def test_http_check_ignores_proxy_environment(
    http_service: HttpService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9/")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")
    assert check_http(http_service.url, 200, 1.0) == CheckResult(True, "HTTP 200")
