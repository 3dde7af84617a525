"""The crash that motivated the project, as a test: 150 Services x 80 nodes under churn.

At least 10,000 random events (create, delete, endpoints moving between nodes,
readiness flips, traffic-policy flips, annotation edits, class flips) are pushed through
the fake API as fast as it takes them while the daemon runs. Afterwards no thread died,
nothing unhandled was logged, and the prefixes and attributes at FRR equal the set
computed here, independently of ``policy.py``, from the final objects.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from kvip_bgp.testing.scenario import NODE_NAME, Scenario, endpoint_slice, node, service

pytestmark = pytest.mark.lab

SERVICES = 150
NODES = [NODE_NAME] + [f"node-{n}" for n in range(2, 81)]
EVENTS = 10_000
OUR_CLASS = "kvip-bgp.io/bgp"


@dataclass
class Model:
    """What the test itself believes each Service looks like (drives the oracle)."""

    name: str
    vip: str
    exists: bool = True
    local: bool = False
    lb_class: str | None = None
    communities: tuple[str, ...] = ()
    med: int | None = None
    invalid: bool = False
    slices: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)

    def service_object(self) -> dict[str, Any]:
        notes: dict[str, str] = {}
        if self.communities:
            notes["kvip-bgp.io/communities"] = ",".join(self.communities)
        if self.invalid:
            notes["kvip-bgp.io/med"] = "not-a-number"
        elif self.med is not None:
            notes["kvip-bgp.io/med"] = str(self.med)
        return service(
            self.name,
            self.vip,
            annotations=notes,
            traffic_policy="Local" if self.local else "Cluster",
            lb_class=self.lb_class,
        )

    def expected(self) -> tuple[str, frozenset[str], int | None] | None:
        """The oracle: the route this node should announce, or None."""
        if not self.exists or self.invalid:
            return None
        if self.lb_class not in (None, OUR_CLASS):
            return None
        if ipaddress.ip_address(self.vip) not in ipaddress.ip_network("198.51.100.0/24"):
            return None
        ready = [n for eps in self.slices.values() for n, ok in eps if ok]
        if (self.local and NODE_NAME not in ready) or not ready:
            return None
        return f"{self.vip}/32", frozenset({"64512:100", *self.communities}), self.med


def _vip(index: int) -> str:
    # Every tenth Service asks for a VIP outside the allowed ranges.
    return f"203.0.113.{index}" if index % 10 == 9 else f"198.51.100.{index + 1}"


def test_150_services_80_nodes_10000_events(lab_required: None) -> None:
    rng = random.Random(20261124)
    with Scenario() as scenario:
        api = scenario.api
        api.put_many([node(n) for n in NODES])
        models = [Model(f"svc-{i}", _vip(i)) for i in range(SERVICES)]
        for model in models:
            model.slices["a"] = [(rng.choice(NODES), True) for _ in range(3)]
            api.put(model.service_object())
            api.put(endpoint_slice(model.name, model.slices["a"]))
        scenario.start_daemon()
        scenario.wait_routes(lambda r: len(r) > 50, "initial routes", timeout=60)

        done = 0
        while done < EVENTS:
            model = rng.choice(models)
            action = rng.randrange(9)
            if not model.exists:
                model.exists = True
                api.put(model.service_object())
            elif action == 0:
                model.exists = False
                api.delete("Service", model.name, "default")
            elif action in (1, 2):  # endpoints move between nodes
                suffix = rng.choice("ab")
                model.slices[suffix] = [
                    (rng.choice(NODES), rng.random() < 0.8) for _ in range(rng.randint(0, 4))
                ]
                api.put(endpoint_slice(model.name, model.slices[suffix], suffix=suffix))
            elif action == 3:  # readiness flip of the first endpoint
                eps = model.slices.get("a") or [(NODE_NAME, True)]
                eps[0] = (eps[0][0], not eps[0][1])
                model.slices["a"] = eps
                api.put(endpoint_slice(model.name, eps))
            elif action == 4:
                model.local = not model.local
                api.put(model.service_object())
            elif action == 5:
                model.communities = tuple(
                    f"64512:{rng.randint(1, 999)}" for _ in range(rng.randint(0, 3))
                )
                model.med = rng.choice([None, rng.randint(0, 1000)])
                api.put(model.service_object())
            elif action == 6:
                model.invalid = rng.random() < 0.3
                api.put(model.service_object())
            elif action == 7:
                model.lb_class = rng.choice([None, OUR_CLASS, "example.com/other"])
                api.put(model.service_object())
            else:  # a no-op rewrite still produces MODIFIED events
                api.put(model.service_object())
            done += 1

        expected = {e[0]: e for m in models if (e := m.expected()) is not None}

        def matches(routes: dict[str, Any]) -> bool:
            if set(routes) != set(expected):
                return False
            return all(
                frozenset(routes[p].communities) == expected[p][1]
                and routes[p].med == expected[p][2]
                for p in expected
            )

        routes = scenario.wait_routes(matches, "FRR equals the oracle", timeout=90)
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
