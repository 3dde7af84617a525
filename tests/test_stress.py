"""The crash that motivated the project, as a test: 150 Services x 80 nodes under churn.

At least 10,000 random events (create, delete, endpoints moving between nodes,
readiness flips, traffic-policy flips, annotation edits, class flips) are pushed through
the fake API as fast as it takes them while the daemon runs. Afterwards no thread died,
nothing unhandled was logged, and the prefixes and attributes at FRR equal the set that
``scenario.Churn`` computes from the final objects, independently of ``policy.py``.
"""

from __future__ import annotations

import pytest

from kvip_bgp.testing.scenario import Churn, Scenario

pytestmark = pytest.mark.lab

SERVICES = 150
NODES = 80
EVENTS = 10_000


def test_150_services_80_nodes_10000_events(lab_required: None) -> None:
    with Scenario() as scenario:
        churn = Churn(scenario.api, services=SERVICES, nodes=NODES, name_prefix="svc")
        churn.seed_objects()
        scenario.start_daemon()
        scenario.wait_routes(lambda r: len(r) > 50, "initial routes", timeout=60)

        while churn.events < EVENTS:
            churn.step()

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
