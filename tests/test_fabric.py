"""Hitless operations measured in the data plane: the fabric lab with real traffic.

Three nodes run ``kvip-bgp run`` behind one FRR ToR that installs ECMP routes in its
kernel FIB; a client opens new TCP connections at 50/s to a VIP throughout each step and
every failed request is counted (``kvip_bgp.testing.traffic`` says what counts as
failed). One fabric serves the whole module; each test leaves it as it found it.

Node 3 runs BFD with the ToR (300 ms x 3), nodes 1 and 2 rely on the hold time (9 s),
so the silent-death step is measured both ways in the same fabric.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from conftest import require_lab

from kvip_bgp.testing.bfdd import BFDD
from kvip_bgp.testing.fabric import TOR_ANSWER, Fabric
from kvip_bgp.testing.netlab import send_signal, wait_until
from kvip_bgp.testing.objects import node, service
from kvip_bgp.testing.pods import Pods
from kvip_bgp.testing.traffic import Traffic, TrafficReport

pytestmark = pytest.mark.lab

WEB = "198.51.100.10"  # Cluster, a pod on every node
LOCAL = "198.51.100.20"  # Local, a pod on node-1
ALL = {"node-1", "node-2", "node-3"}


class Lab:
    def __init__(self, fabric: Fabric, pods: Pods) -> None:
        self.fabric = fabric
        self.pods = pods

    def traffic(self, vip: str) -> Traffic:
        return Traffic(self.fabric, vip)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab("/usr/lib/frr/bgpd", "vtysh", "/usr/lib/frr/zebra", BFDD)
    with Fabric(bfd_nodes=(3,)) as fabric:
        pods = Pods(fabric)
        fabric.api.put(service("web", WEB))
        fabric.api.put(service("local", LOCAL, traffic_policy="Local"))
        pods.start("web", WEB, *sorted(ALL))
        pods.start("local", LOCAL, "node-1")
        fabric.start_nodes()
        fabric.wait_fib(WEB, ALL)
        fabric.wait_fib(LOCAL, {"node-1"})
        yield Lab(fabric, pods)


@pytest.fixture(autouse=True)
def baseline(lab: Lab) -> Iterator[None]:
    """Every test starts from (and must leave) every node up and announcing."""
    yield
    for fabric_node in lab.fabric.nodes.values():
        assert fabric_node.running(), fabric_node.log_tail()
    lab.fabric.wait_fib(WEB, ALL)
    lab.fabric.wait_fib(LOCAL, lab.pods.nodes("local"))


def assert_no_failures(report: TrafficReport, what: str) -> None:
    """No request lost. Established flows that a change of the ToR's next-hop set moved to
    another node (hash-threshold ECMP; RST or silence mid-request, see ``traffic.py``)
    are reported, not failed: the speaker cannot prevent them, and every new connection
    in the same moment is checked."""
    print(f"{what}: {report.summary()}")
    assert not report.lost(), f"{what}: {report.summary()}: {report.lost()[:5]}"


# ------------------------------------------------------------------- make lab's promises


def test_kubectl_on_the_host_sees_what_the_speakers_wrote(lab: Lab) -> None:
    """Through the loopback forwarder, as ``make lab``'s ``export KUBECONFIG`` says."""
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.fail("kubectl is missing (make system-deps installs kubernetes-client)")
    fabric = lab.fabric
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(fabric.lab.workdir),
        "KUBECONFIG": str(fabric.host_kubeconfig),
    }

    def kubectl(*args: str) -> str:
        proc = subprocess.run(
            [binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    wait_until(lambda: WEB in kubectl("get", "svc", "web", "-o", "wide"), 20, what="web's ingress")
    fabric.api.put(service("refused", "203.0.113.10"))  # outside vips.allowed
    wait_until(lambda: "VIPRefused" in kubectl("describe", "svc", "refused"), 20, what="its Event")
    fabric.api.delete("Service", "refused", "default")
    assert "local-a" in kubectl("get", "endpointslices")


# ------------------------------------------------------------------- 1, 2: steady state


def test_a_cluster_service_is_answered_by_every_node(lab: Lab) -> None:
    with lab.traffic(WEB) as traffic:
        traffic.wait_answers(ALL)
        time.sleep(2)
    report = traffic.stop()
    assert_no_failures(report, "Cluster, 3 nodes")
    assert TOR_ANSWER not in report.answers()
    assert set(report.answers()) == ALL, "ECMP spreads new connections over every node"


def test_a_local_service_is_answered_only_where_a_pod_runs(lab: Lab) -> None:
    fabric, pods = lab.fabric, lab.pods
    with lab.traffic(LOCAL) as traffic:
        time.sleep(1.5)
        pods.start("local", LOCAL, "node-2")
        fabric.wait_fib(LOCAL, {"node-1", "node-2"})
        traffic.wait_answers({"node-1", "node-2"})
        time.sleep(1.0)
        pods.remove("local", "node-2")  # back to the baseline
        fabric.wait_fib(LOCAL, {"node-1"})
        time.sleep(1.5)
        pods.stop("local", "node-2")
    report = traffic.stop()
    assert_no_failures(report, "Local, pods on node-1 (+ node-2)")
    assert "node-3" not in report.answers(), "node-3 runs no pod of the Local Service"


# ------------------------------------------------------------------- 3, 4: planned changes


def test_a_rolling_update_of_a_local_service_loses_nothing(lab: Lab) -> None:
    """The new pod is ready elsewhere, the old one terminates (still serving), leaves the
    slice, and its server stops seconds later: node-1's withdrawal must reach the ToR
    before node-1 stops accepting the VIP."""
    fabric, pods = lab.fabric, lab.pods
    with lab.traffic(LOCAL) as traffic:
        for old, new in (("node-1", "node-2"), ("node-2", "node-1")):  # and back
            pods.start("local", LOCAL, new)
            fabric.wait_fib(LOCAL, {old, new})
            traffic.wait_answers({new})
            pods.terminate("local", old)
            time.sleep(0.5)
            assert fabric.nodes_in_fib(LOCAL) == {old, new}, "a serving endpoint still counts"
            pods.remove("local", old)
            fabric.wait_fib(LOCAL, {new})
            time.sleep(2.0)
            pods.stop("local", old)
            time.sleep(0.5)
    report = traffic.stop()
    assert_no_failures(report, "rolling update (Local), twice")


def test_a_drained_node_leaves_the_tor_without_a_lost_request(lab: Lab) -> None:
    """``withdraw_when_cordoned``: a cordon withdraws every VIP of that node."""
    fabric = lab.fabric
    spec = fabric.node("node-2").spec
    with lab.traffic(WEB) as traffic:
        time.sleep(1.0)
        fabric.api.put(node("node-2", addresses=(spec.address,), unschedulable=True))
        fabric.wait_fib(WEB, ALL - {"node-2"})
        time.sleep(1.5)
        fabric.api.put(node("node-2", addresses=(spec.address,)))
        fabric.wait_fib(WEB, ALL)
        traffic.wait_answers({"node-2"})
    assert_no_failures(traffic.stop(), "cordon and uncordon of node-2")


# ------------------------------------------------------------------- 5, 6: the speaker itself


def test_a_planned_restart_of_kvip_bgp_loses_nothing(lab: Lab) -> None:
    fabric = lab.fabric
    node1 = fabric.node("node-1")
    with lab.traffic(WEB) as traffic:
        time.sleep(1.0)
        assert node1.stop(signal.SIGTERM) == 0
        assert "node-1" not in fabric.nodes_in_fib(WEB)
        time.sleep(1.0)
        node1.start()
        fabric.wait_established(node1)
        fabric.wait_fib(WEB, ALL)
        traffic.wait_answers({"node-1"})
    assert_no_failures(traffic.stop(), "SIGTERM and start of kvip-bgp on node-1")


def test_exabgp_killed_loses_nothing(lab: Lab) -> None:
    """Graceful restart: the ToR keeps node-1's routes (stale) until the new ExaBGP has
    re-announced them; the VIPs stay bound all along."""
    fabric = lab.fabric
    node1 = fabric.node("node-1")
    old = node1.exabgp_pid()
    assert old is not None
    with lab.traffic(WEB) as traffic:
        time.sleep(1.0)
        send_signal(old, signal.SIGKILL)
        wait_until(lambda: node1.exabgp_pid() not in (None, old), 20, what="ExaBGP to be restarted")
        fabric.wait_established(node1)
        assert fabric.tor is not None
        wait_until(
            lambda: not fabric.tor.routes()[f"{WEB}/32"].stale,  # type: ignore[union-attr]
            20,
            what="node-1's routes fresh again",
        )
        time.sleep(1.0)
    report = traffic.stop()
    assert_no_failures(report, "ExaBGP SIGKILL on node-1")
    assert "node-1" in report.answers()


# ------------------------------------------------------------------- 7: withdraw before unbind


def withdrawal(lab: Lab, vip: str, change: str) -> tuple[TrafficReport, float]:
    """Run traffic to ``vip`` while ``change`` withdraws it everywhere; return the report
    and when the route left the ToR's FIB."""
    fabric, pods = lab.fabric, lab.pods
    with lab.traffic(vip) as traffic:
        time.sleep(1.0)
        if change == "delete":
            fabric.api.delete("Service", "gone", "default")
        else:
            pods.terminate("gone", *sorted(ALL))
            time.sleep(0.5)
            pods.remove("gone", *sorted(ALL))
        wait_until(lambda: not fabric.next_hops(vip), 10, 0.02, what=f"{vip} out of the FIB")
        gone_at = time.monotonic()
        time.sleep(1.5)
        pods.stop("gone", *sorted(ALL))
    return traffic.stop(), gone_at


@pytest.mark.parametrize("change", ["delete", "endpoints-gone"])
def test_a_withdrawn_vip_stays_bound_until_the_tor_dropped_it(lab: Lab, change: str) -> None:
    """Service deleted (its pods keep running, as in Kubernetes) or its endpoints gone
    (pods terminating, removed, stopped later): every request is answered, by a node
    until the ToR has dropped the route, by the ToR's "no route" answer after."""
    vip = "198.51.100.30"
    fabric, pods = lab.fabric, lab.pods
    fabric.api.put(service("gone", vip))
    pods.start("gone", vip, *sorted(ALL))
    fabric.wait_fib(vip, ALL)
    report, gone_at = withdrawal(lab, vip, change)
    relative = [(round(a.at - gone_at, 3), a.error) for a in report.failures]
    assert_no_failures(report, f"{change}, withdrawn from 3 nodes (vs FIB empty: {relative})")
    early = [a for a in report.attempts if a.node == TOR_ANSWER and a.at < gone_at - 0.2]
    assert not early, f"the ToR had no route before it left the FIB? {early[:3]}"
    for fabric_node in fabric.nodes.values():
        wait_until(lambda n=fabric_node: vip not in n.bound(), 10, what="the VIP unbound")  # type: ignore[misc]
    fabric.api.delete("Service", "gone", "default")
    fabric.api.delete("EndpointSlice", "gone-a", "default")


# ------------------------------------------------------------------- 8, 9: failures


def silence_diagnostics(lab: Lab, victim: str) -> str:
    """The ToR's view of the silenced node, whole: the caller looks in it for FRR's
    "NSF peer closed the session" (an earlier cut at 1,500 characters split that phrase
    in one CI run and failed the graceful-restart path it documents)."""
    fabric = lab.fabric
    assert fabric.tor is not None
    spec = fabric.node(victim).spec
    qdiscs = [
        ns.run("tc", "qdisc", "show", "dev", ifname).stdout
        for ns, ifname in ((fabric.tor_ns, spec.tor_if), (fabric.node(victim).ns, spec.node_if))
    ]
    return (
        f"ToR's session: {fabric.tor.peer_state(spec.address)}; route: "
        f"{fabric.tor.routes().get(f'{WEB}/32')}; qdiscs: {qdiscs}\n"
        f"{fabric.tor.vtysh(f'show bgp neighbor {spec.address}')}"
    )


@pytest.mark.parametrize(("victim", "detection"), [("node-2", "hold time 9 s"), ("node-3", "BFD")])
def test_a_silently_dead_node_is_measured(lab: Lab, victim: str, detection: str) -> None:
    """The node's link drops every packet (link up): requests hashed to it fail until the
    ToR notices, by the hold time or by BFD. Measured and reported; bounded loosely."""
    fabric = lab.fabric
    victim_node = fabric.node(victim)
    with lab.traffic(WEB) as traffic:
        time.sleep(1.0)
        start = time.monotonic()
        graceful = False
        with fabric.silenced(victim):
            try:
                fabric.wait_fib(WEB, ALL - {victim}, timeout=15)
            except TimeoutError as error:
                # FRR sometimes ends the dead session on a TCP error before its hold timer
                # (no NOTIFICATION sent) and then helps a graceful restart: the routes stay
                # stale for the node's restart time (30 s here). Measured and reported as
                # that path; anything else fails.
                diagnostics = silence_diagnostics(lab, victim)
                if detection == "BFD" or "NSF peer closed the session" not in diagnostics:
                    raise AssertionError(f"{error}\n{diagnostics}") from None
                graceful = True
                fabric.wait_fib(WEB, ALL - {victim}, timeout=40)
            left_fib = time.monotonic() - start
            time.sleep(1.0)
        fabric.wait_established(victim_node, 30)
        fabric.wait_fib(WEB, ALL, timeout=30)
        back = time.monotonic() - start
        time.sleep(1.0)
    report = traffic.stop().since(start)
    path = " (FRR took it for a graceful restart: stale until the restart time)" * graceful
    print(
        f"silent {victim} ({detection}){path}: left the ToR's FIB after {left_fib:.2f} s; "
        f"requests failed for {report.outage():.2f} s ({len(report.failures)} of "
        f"{len(report.attempts)}: {report.errors()}); back in the FIB "
        f"{back - left_fib - 1.0:.2f} s after the link came back"
    )
    # Flows in flight that the ToR's ECMP moves when the node comes back are broken, not
    # lost (report.broken()): counted apart, as in every other step.
    failed_late = [a for a in report.lost() if a.at > start + left_fib + 0.5]
    assert not failed_late, f"failures after the ToR dropped {victim}: {failed_late[:5]}"
    limit = 1.5 if detection == "BFD" else 9 + 30 + 2.5 if graceful else 10.5
    assert left_fib < limit, f"{victim} left the FIB after {left_fib:.2f} s ({detection})"


def test_the_tor_restarting_frr_is_measured(lab: Lab) -> None:
    """zebra, bgpd and bfdd restarted on the ToR: every route goes and comes back."""
    fabric = lab.fabric
    assert fabric.tor is not None
    with lab.traffic(WEB) as traffic:
        time.sleep(1.0)
        start = time.monotonic()
        fabric.tor.stop()
        stopped = time.monotonic()
        fabric.tor.start()
        started = time.monotonic()
        fabric.wait_fib(WEB, ALL, timeout=60)
        full = time.monotonic()
        traffic.wait_answers(ALL)
        time.sleep(1.0)
    report = traffic.stop().since(start)
    missed = report.missed(ALL)
    print(
        f"FRR restart on the ToR: stop {stopped - start:.2f} s, start {started - stopped:.2f} s; "
        f"all three next hops back {full - started:.2f} s after FRR started; "
        f"{len(missed)} requests not answered by a node over {report.outage(ALL):.2f} s "
        f"({report.errors()} failed, the rest answered 'no route' by the ToR)"
    )
    assert full - started < 30
