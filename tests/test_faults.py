"""Faults with churn going on: ExaBGP, kvip-bgp, FRR and the API server misbehave.

Every test runs the real chain (fake API over HTTP → kvip-bgp → ExaBGP → FRR) in its own
namespace lab (prefix ``kvf-``) and checks convergence against the churn's independent
oracle (``scenario.Churn``, which does not use ``policy.py``): after each fault the table
at FRR equals the expected set, attributes included, with no stale route left.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from kvip_bgp.configfile import load as config_module
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.procfs import cmdline, exabgp_pid
from kvip_bgp.testing.scenario import Churn, RouteSampler, Scenario, daemon_config

pytestmark = pytest.mark.lab

PREFIX = "kvf-"


def _converge(scenario: Scenario, churn: Churn, what: str, timeout: float = 30.0) -> None:
    """Pause the churn and wait until FRR equals the oracle (then resume)."""
    with churn.paused():
        try:
            scenario.wait_routes(churn.matches, what, timeout=timeout)
        except TimeoutError as error:
            raise AssertionError(f"{what}: {_diff(scenario, churn)}\n{error}") from None


def _diff(scenario: Scenario, churn: Churn) -> str:
    """What differs between FRR and the oracle, and what the daemon believes it sent."""
    expected, routes = churn.expected(), scenario.routes()
    wrong = {
        p: (routes[p], expected[p])
        for p in set(expected) & set(routes)
        if frozenset(routes[p].communities) != expected[p][1]
        or routes[p].med != expected[p][2]
        or routes[p].stale
    }
    try:
        announced = {a["prefix"] for a in scenario.status()["announced"]}
    except Exception as error:  # the daemon may be down: say so, do not hide the diff
        announced = {f"(no /status: {error})"}
    return (
        f"missing at FRR {sorted(set(expected) - set(routes))}; "
        f"extra at FRR {sorted(set(routes) - set(expected))}; wrong attributes {wrong}; "
        f"daemon believes announced-but-not-at-FRR {sorted(announced - set(routes))}, "
        f"at-FRR-but-not-announced {sorted(set(routes) - announced)}"
    )


def _problems(scenario: Scenario) -> list[str]:
    """Tracebacks and unparsable lines in the daemon log (errors are expected here).

    A traceback is returned whole (the lines that follow it, up to the next event that
    is not a forwarded ExaBGP line), so that a failure names the exception, not just
    "Traceback (most recent call last):".
    """
    found: list[str] = []
    lines = scenario.log_lines()
    for index, line in enumerate(lines):
        if line.get("event") == "unparsed":
            found.append(str(line))
        elif "Traceback" in str(line):
            block = [str(line.get("line", line))]
            for after in lines[index + 1 : index + 40]:
                if after.get("event") != "exabgp.log":
                    break
                block.append(str(after.get("line", "")))
            found.append("\n".join(block))
    return found


@pytest.fixture
def churning(lab_required: None) -> Iterator[tuple[Scenario, Churn]]:
    with Scenario(prefix=PREFIX) as scenario:
        churn = Churn(scenario.api, services=30, nodes=10)
        churn.seed_objects()
        try:
            yield scenario, churn
        finally:
            churn.stop()


# ------------------------------------------------------------------------------ ExaBGP


def test_exabgp_sigkilled_ten_times_during_churn(churning: tuple[Scenario, Churn]) -> None:
    scenario, churn = churning
    daemon = scenario.start_daemon()
    _converge(scenario, churn, "initial routes", timeout=40)
    churn.start(rate=50)
    timings = []
    for kill in range(10):
        wait_until(lambda: exabgp_pid(daemon.pid) is not None, 10, what="ExaBGP running")
        victim = exabgp_pid(daemon.pid)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        killed_at, killed_wall = time.monotonic(), time.time()
        time.sleep(0.5)  # churn goes on while ExaBGP is down
        wait_until(
            lambda v=victim, t=killed_wall: (
                exabgp_pid(daemon.pid) not in (None, v) and _session_up_since(scenario, t)
            ),
            20,
            interval=0.1,
            what=f"ExaBGP back with its session up after kill {kill + 1} "
            f"(seconds each took so far: {timings})",
        )
        timings.append(round(time.monotonic() - killed_at, 1))
        _converge(scenario, churn, f"FRR equals the oracle after kill {kill + 1}", timeout=30)
    churn.pause()
    assert churn.events > 200, "churn should have run throughout"
    scenario.assert_daemon_alive()
    restarts = [e for e in scenario.log_lines() if e.get("event") == "app.exabgp_exited"]
    assert len(restarts) == 10
    assert _problems(scenario) == []


def _session_up_since(scenario: Scenario, since: float) -> bool:
    """The daemon saw a BGP session come up after ``since`` (wall clock)."""
    try:
        peers = scenario.status()["peers"]
    except (OSError, AssertionError):
        return False
    return any(p["state"] == "up" and p["since"] > since for p in peers)


# ----------------------------------------------------------------------------- kvip-bgp


def test_daemon_sigkilled_and_restarted_during_churn(churning: tuple[Scenario, Churn]) -> None:
    scenario, churn = churning
    # Foreign addresses: one in the allowed range, one outside it, one that is a VIP the
    # churn may want (announced when wanted, never removed: it is not ours).
    foreign = {"198.51.100.251", "203.0.113.251", churn.models[2].vip}
    for address in foreign:
        scenario.lab.node.run("ip", "addr", "add", f"{address}/32", "dev", "lo")
    first = scenario.start_daemon()
    _converge(scenario, churn, "initial routes", timeout=40)
    churn.start(rate=50)
    time.sleep(2)
    first.send_signal(signal.SIGKILL)
    first.wait(5)
    time.sleep(2)  # churn goes on with no daemon; FRR keeps the routes (graceful restart)

    second = scenario.start_daemon()
    time.sleep(3)
    with churn.paused():
        scenario.wait_routes(churn.matches, "FRR equals the oracle after the restart", 40)
        wanted = churn.expected_vips()
        wait_until(
            lambda: scenario.bound() == wanted | foreign,
            15,
            what=f"addresses = oracle {sorted(wanted)} + foreign {sorted(foreign)}",
        )
    # ExaBGP of the killed daemon went with it (PR_SET_PDEATHSIG): only one is left.
    runtime = str(scenario.lab.workdir / "run")
    exabgps = [
        pid
        for pid in scenario.lab.node.pids()
        if any(a.endswith("exabgp") for a in cmdline(pid))
        and any(runtime in a for a in cmdline(pid))
    ]
    assert exabgps == [exabgp_pid(second.pid)], exabgps
    assert foreign <= scenario.bound()
    assert _problems(scenario) == []


# ---------------------------------------------------------------------------------- FRR


def test_frr_restarted_gets_the_full_table_again(churning: tuple[Scenario, Churn]) -> None:
    scenario, churn = churning
    assert scenario.frr is not None
    scenario.start_daemon()
    _converge(scenario, churn, "initial routes", timeout=40)
    churn.start(rate=50)
    for graceful in (True, False):
        time.sleep(1)
        scenario.frr.restart(graceful=graceful)
        scenario.frr.wait_established("192.0.2.1", timeout=30)
        _converge(
            scenario, churn, f"full table after FRR restart (graceful={graceful})", timeout=30
        )
        with churn.paused():
            expected = churn.expected()
            assert scenario.frr.prefixes_received("192.0.2.1", "ipv4") == len(expected)
    assert _problems(scenario) == []


# --------------------------------------------------------------------------- fake API


def _p(ip: str) -> str:
    return f"{ip}/32"


STABLE = [f"198.51.100.{n}" for n in range(1, 11)]
BURST = [f"198.51.100.{n}" for n in range(101, 121)]


def test_api_server_misbehaves_daemon_recovers_and_withdraws_nothing(
    lab_required: None,
) -> None:
    with Scenario(prefix=PREFIX) as scenario:
        api = scenario.api
        api.put(node())
        for index, vip in enumerate(STABLE):
            api.put(service(f"stable-{index}", vip))
            api.put(endpoint_slice(f"stable-{index}", [NODE_NAME]))
        scenario.start_daemon()
        stable = {_p(v) for v in STABLE}
        scenario.wait_routes(lambda r: set(r) == stable, "stable Services", timeout=30)
        assert api.wait_for_watchers(3, timeout=10)
        everything = stable | {_p(v) for v in BURST}

        def wait_table(expected: set[str], what: str, timeout: float = 20) -> None:
            scenario.wait_routes(lambda r: set(r) == expected, what, timeout=timeout)

        with RouteSampler(scenario) as poller:
            # 1. Watch streams dropped in the middle of a burst of events.
            for index, vip in enumerate(BURST):
                api.put(service(f"burst-{index}", vip))
                api.put(endpoint_slice(f"burst-{index}", [NODE_NAME]))
                if index == 7:
                    api.close_watches(abrupt=True)
            api.close_watches(abrupt=True)
            table = stable | {_p(v) for v in BURST}
            wait_table(table, "burst delivered despite dropped streams")

            # 2. 410 Gone: history expired while the streams were down; relist.
            api.expire_history()
            api.close_watches(abrupt=True)
            api.delete("Service", "burst-0", "default")
            table -= {_p(BURST[0])}
            wait_table(table, "change after 410 Gone")

            # 3. 500 for a while: every request fails for 4 s, then the API is back.
            api.fail_requests(10**9, 500)
            api.close_watches(abrupt=True)
            api.delete("Service", "burst-1", "default")
            time.sleep(4)
            assert _p(BURST[1]) in scenario.routes(), "nothing can change while the API fails"
            api.fail_requests(0)
            table -= {_p(BURST[1])}
            wait_table(table, "recovered after 500s", timeout=40)

            # 4. Stall: connections open, no bytes, for 4 s (shorter than the read timeout).
            api.stall_watches(4)
            api.delete("Service", "burst-2", "default")
            table -= {_p(BURST[2])}
            wait_table(table, "change made during a stall", timeout=20)

            # 5. A malformed line on every stream.
            api.inject_malformed_line()
            api.delete("Service", "burst-3", "default")
            table -= {_p(BURST[3])}
            wait_table(table, "after a malformed line", timeout=20)

            # 6. API server restart with a newer resourceVersion (history gone).
            api.restart(rv_jump=5000)
            api.delete("Service", "burst-4", "default")
            table -= {_p(BURST[4])}
            wait_table(table, "after an API server restart", timeout=30)

            # Nothing changes by itself afterwards.
            time.sleep(2)
            assert set(scenario.routes()) == table

        assert len(poller.samples) > 50
        for at, sample in poller.samples:
            assert stable <= sample, f"a stable route was withdrawn at {at}: {stable - sample}"
            assert sample <= everything, f"unexpected routes: {sample - everything}"
        # Routes of the burst disappear only after their Service was deleted, never
        # come back, and none of the untouched burst VIPs ever went away once there.
        untouched = {_p(v) for v in BURST[5:]}
        first_full = next(i for i, (_, s) in enumerate(poller.samples) if untouched <= s)
        for _, sample in poller.samples[first_full:]:
            assert untouched <= sample

        events = scenario.log_lines()
        kinds = {e.get("kind") for e in events if e.get("event") == "kube.stream_error"}
        assert {"http-500", "malformed"} <= kinds, kinds
        assert any(e.get("event") == "kube.watch_expired" for e in events)
        withdrawn = {e.get("vip") for e in events if e.get("event") == "reconciler.withdraw"}
        assert withdrawn <= set(BURST[:5]), withdrawn
        scenario.assert_daemon_alive()
        assert _problems(scenario) == []


def test_stalled_watch_is_noticed_by_the_read_timeout(lab_required: None) -> None:
    """A stream that stays open and silent must be given up after the read timeout.

    The default read timeout is 120 s (``kube.WatchTimeouts``); this test needs it short,
    through ``kubernetes.watch_read_timeout`` (seconds).
    """
    with Scenario(prefix=PREFIX) as scenario:
        api = scenario.api
        api.put(node())
        api.put(service("web", STABLE[0]))
        api.put(endpoint_slice("web", [NODE_NAME]))
        config = daemon_config(scenario.kubeconfig)
        config["kubernetes"]["watch_read_timeout"] = 3
        config_module.parse(config, environ={})  # fails at once while the knob is missing
        scenario.start_daemon(config)
        scenario.wait_routes(lambda r: _p(STABLE[0]) in r, "web announced", timeout=30)
        assert api.wait_for_watchers(3, timeout=10)
        api.stall_watches(9)
        api.put(service("late", STABLE[1]))
        api.put(endpoint_slice("late", [NODE_NAME]))
        wait_until(
            lambda: any(
                e.get("event") == "kube.stream_error" and e.get("kind") == "timeout"
                for e in scenario.log_lines()
            ),
            8,
            what="the stalled stream noticed by the read timeout",
        )
        assert _p(STABLE[0]) in scenario.routes(), "a stall must not withdraw anything"
        scenario.wait_routes(
            lambda r: {_p(STABLE[0]), _p(STABLE[1])} <= set(r), "change after the stall", 20
        )


# ------------------------------------------------------------------ peer late at start


def test_peer_unreachable_at_start_then_appears(lab_required: None) -> None:
    with Scenario(prefix=PREFIX) as scenario:
        assert scenario.frr is not None
        scenario.frr.stop()
        scenario.api.put(node())
        scenario.api.put(service("web", STABLE[0]))
        scenario.api.put(endpoint_slice("web", [NODE_NAME]))
        scenario.start_daemon()
        wait_until(lambda: _http_ok(scenario, "/healthz"), 20, what="daemon serving /healthz")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            code, body = scenario.http("/readyz")
            assert code == 503, body
            assert b"no BGP peer is up" in body
            scenario.assert_daemon_alive()
            time.sleep(0.5)
        status = scenario.status()
        assert status["synced"] is True
        assert not any(p["state"] == "up" for p in status["peers"])

        scenario.frr.start()
        scenario.wait_routes(lambda r: _p(STABLE[0]) in r, "routes once the peer appears", 40)
        wait_until(lambda: _http_ok(scenario, "/readyz"), 10, what="/readyz 200")
        assert _problems(scenario) == []


def _http_ok(scenario: Scenario, path: str) -> bool:
    try:
        code, _ = scenario.http(path)
    except OSError:
        return False
    return code == 200
