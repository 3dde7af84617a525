"""The crash that motivated the project, as a test: 150 Services x 80 nodes under churn.

At least 10,000 random events (create, delete, endpoints moving between nodes,
readiness flips, traffic-policy flips, annotation edits, class flips) are pushed through
the fake API as fast as it takes them while the daemon runs. Afterwards no thread died,
nothing unhandled was logged, and the prefixes and attributes at FRR equal the set that
``scenario.Churn`` computes from the final objects, independently of ``policy.py``.
Throughout the churn FRR's table is sampled: no prefix may stay there more than
``WITHDRAW_BOUND`` seconds after the oracle stopped expecting it (the bound ExaBGP's
outgoing RIB broke, see ``kvip_bgp/bgp/exabgp.py``).
"""

from __future__ import annotations

import threading
import time

import pytest

from kvip_bgp.testing.scenario import Churn, Scenario

pytestmark = pytest.mark.lab

SERVICES = 150
NODES = 80
EVENTS = 10_000
WITHDRAW_BOUND = 2.0


class WithdrawWatch:
    """When each prefix stopped being expected; FRR's samples checked against it."""

    def __init__(self, churn: Churn, scenario: Scenario) -> None:
        self.scenario = scenario
        self.expected = set(churn.expected())
        self.unexpected_since: dict[str, float] = {}
        self.violations: list[tuple[str, float]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="withdraw-watch")

    def changed(self, prefix: str, expected: bool, now: float) -> None:
        if expected:
            self.expected.add(prefix)
            self.unexpected_since.pop(prefix, None)
        elif prefix in self.expected or prefix not in self.unexpected_since:
            self.expected.discard(prefix)
            self.unexpected_since.setdefault(prefix, now)

    def _sample(self) -> None:
        while not self._stop.is_set():
            read_at = time.monotonic()
            table = set(self.scenario.routes())
            self.samples += 1
            for prefix in table:
                since = self.unexpected_since.get(prefix)
                if since is not None and read_at - since > WITHDRAW_BOUND:
                    self.violations.append((prefix, read_at - since))
            self._stop.wait(0.05)

    def __enter__(self) -> WithdrawWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_150_services_80_nodes_10000_events(lab_required: None) -> None:
    with Scenario() as scenario:
        churn = Churn(scenario.api, services=SERVICES, nodes=NODES, name_prefix="svc")
        churn.seed_objects()
        scenario.start_daemon()
        scenario.wait_routes(lambda r: len(r) > 50, "initial routes", timeout=60)

        with WithdrawWatch(churn, scenario) as watch:
            while churn.events < EVENTS:
                model = churn.step()
                assert model is not None
                expected = model.expected()
                watch.changed(f"{model.vip}/32", expected is not None, time.monotonic())
            time.sleep(WITHDRAW_BOUND + 0.5)  # the last withdrawals' bound ends in the watch
        assert watch.samples > 10, "FRR's table was sampled throughout"
        assert not watch.violations, f"withdrawn routes stayed at FRR: {watch.violations[:10]}"

        expected = churn.expected()
        routes = scenario.wait_routes(churn.matches, "FRR equals the oracle", timeout=90)
        assert len(routes) == len(expected)
        assert 20 < len(expected) < SERVICES, "the scenario should leave a real mix"
        scenario.assert_daemon_alive()
        code, body = scenario.http("/healthz")
        assert code == 200, body
        problems = [
            line
            for line in scenario.log_lines()
            if line.get("level") in ("error", "critical")
            or "Traceback" in str(line)
            or line.get("event") == "unparsed"
        ]
        assert problems == [], problems[:5]
