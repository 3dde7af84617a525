"""The daemon started as a DaemonSet's pod starts it, in the lab: in-cluster env and
service-account files, the fake API in its own process over HTTPS only, accepting only
the projected token. A route at FRR proves the daemon loaded those credentials (there
is no kubeconfig, and any other token gets 401); the mount is the daemon's alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvip_bgp.testing.incluster import SERVICEACCOUNT, fake_api_in_cluster
from kvip_bgp.testing.netlab import wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab


def mounted_on(mountinfo: Path, path: Path) -> bool:
    """Whether ``path`` is a mount point in that /proc/PID/mountinfo (field 5)."""
    targets = {line.split()[4] for line in mountinfo.read_text().splitlines()}
    return str(path) in targets or str(path.resolve()) in targets


def test_in_cluster_daemon_over_tls_announces(lab_required: None) -> None:
    with Scenario(kubernetes=False, prefix="kvic-") as scenario:
        fake, in_cluster = fake_api_in_cluster(scenario.lab, scenario.lab.workdir)
        assert fake.kubeconfig is None and fake.url.startswith("https://127.0.0.1:")
        fake.client.put_many(
            [node(), service("web", "198.51.100.10"), endpoint_slice("web", [NODE_NAME])]
        )
        config = daemon_config(None)
        config["kubernetes"] = {"enabled": True}  # no kubeconfig: in-cluster credentials
        proc = scenario.start_daemon(config, in_cluster=in_cluster)
        scenario.wait_routes(lambda r: "198.51.100.10/32" in r, "the VIP at FRR", timeout=20)
        # the pid Popen returned is the daemon itself (every step exec'd)
        command = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"run" in command and command[command.index(b"run") - 1].endswith(b"/kvip-bgp")
        assert not any(word in command for word in (b"unshare", b"sh", b"mount")), command
        assert mounted_on(Path(f"/proc/{proc.pid}/mountinfo"), SERVICEACCOUNT)
        assert not mounted_on(Path("/proc/self/mountinfo"), SERVICEACCOUNT)
        # the status writer (the Lease holder) writes over TLS with the token too
        wait_until(
            lambda: (
                [
                    (s.get("status") or {}).get("loadBalancer", {}).get("ingress")
                    for s in fake.client.items("Service")
                ]
                == [[{"ip": "198.51.100.10"}]]
            ),
            15,
            what="status.loadBalancer written",
        )
        scenario.stop_daemon()
        assert proc.returncode == 0, scenario.log_tail()
    assert not mounted_on(Path("/proc/self/mountinfo"), SERVICEACCOUNT)
    assert not SERVICEACCOUNT.exists() or not any(SERVICEACCOUNT.iterdir())  # empty
