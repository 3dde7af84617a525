"""ExaBGP 5.0.15's outgoing RIB reorders changes to one prefix that arrive together, and
``kvip_bgp.bgp.exabgp`` (what kvip-bgp runs as ExaBGP) does not.

Raw ExaBGP and FRR, no kvip-bgp: a helper writes each phase of commands in one write, a
second apart, so each phase lands in one of ExaBGP's update cycles. The third case is
the anomaly the stress test saw (a withdrawn route that stayed at FRR); the other two
are its mirror images (a desired route missing, stale attributes).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.scenario import TOR_ASN, Scenario

pytestmark = pytest.mark.lab

P1, P2, P3, Q, R, S = (f"198.51.100.{60 + i}/32" for i in range(6))


def announce(prefix: str, community: str) -> str:
    return f"announce attributes next-hop self community [{community}] nlri {prefix}"


def withdraw(prefix: str) -> str:
    return f"withdraw attributes next-hop self nlri {prefix}"


PHASES = [
    # P1: announced twice, then withdrawn; a withdrawal (Q) opened its bucket first.
    [
        withdraw(Q),
        announce(P1, "64512:1"),
        announce(P2, "64512:1"),
        announce(P1, "64512:2"),
        withdraw(P1),
    ],
    # P2 (sent above): withdrawn, then announced with attributes whose bucket (R) was first.
    [announce(R, "64512:9"), withdraw(P2), announce(P2, "64512:9")],
    # P3: new attributes, whose bucket (S) was opened before the old ones'.
    [announce(S, "64512:2"), announce(P3, "64512:1"), announce(P3, "64512:2")],
]
EXPECTED = {P2: ("64512:9",), P3: ("64512:2",), R: ("64512:9",), S: ("64512:2",)}
WRONG = {P1: ("64512:2",), P3: ("64512:1",), R: ("64512:9",), S: ("64512:2",)}


def neighbor_config(process: str) -> list[str]:
    from kvip_bgp.testing.objects import NODE_V4

    return [
        f"neighbor {Lab.TOR_V4} {{",
        f"    router-id {NODE_V4};",
        f"    local-address {NODE_V4};",
        "    local-as 64512;",
        f"    peer-as {TOR_ASN};",
        "    hold-time 9;",
        "    family { ipv4 unicast; }",
        "    capability { graceful-restart 30; }",
        "    adj-rib-in false;",
        f"    api {{ processes [ {process} ]; neighbor-changes; }}",
        "}",
    ]


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    from conftest import require_lab

    require_lab("/usr/lib/frr/bgpd", "vtysh")
    with Scenario(kubernetes=False, prefix="kvrib-") as running:
        yield running


def final_table(scenario: Scenario, module: str) -> dict[str, tuple[str, ...]]:
    assert scenario.frr is not None
    scenario.frr.restart()  # nothing left from the run before
    workdir = scenario.lab.workdir / module
    workdir.mkdir()
    phases = workdir / "phases.json"
    phases.write_text(json.dumps(PHASES))
    conf = workdir / "exabgp.conf"
    helper = f"{sys.executable} -m kvip_bgp.testing.exabgp_phases {phases} 1.0"
    conf.write_text(
        "\n".join(["process phases {", f"    run {helper};", "    encoder json;", "}"])
        + "\n"
        + "\n".join(neighbor_config("phases"))
        + "\n"
    )
    env = {
        "exabgp.daemon.user": "root",
        "exabgp.api.cli": "false",
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ":".join(sys.path),
    }
    with open(workdir / "exabgp.log", "wb") as log:
        proc = scenario.lab.popen(
            scenario.lab.node,
            [sys.executable, "-m", module, "server", str(conf)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            done = workdir / "phases.json.done"
            wait_until(done.exists, 30, what=f"the phases through {module}")
            time.sleep(1.0)  # the last phase's cycle reached FRR
            table = {p: r.communities for p, r in scenario.routes().items()}
        finally:
            proc.terminate()
            proc.wait(10)
    return table


def test_kvip_bgps_exabgp_sends_the_newest_change_of_each_prefix(scenario: Scenario) -> None:
    assert final_table(scenario, "kvip_bgp.bgp.exabgp") == EXPECTED


def test_unpatched_exabgp_still_reorders(scenario: Scenario) -> None:
    """Pins why the fix exists: when this fails, ExaBGP got fixed and the patch can go."""
    assert final_table(scenario, "exabgp") == WRONG
