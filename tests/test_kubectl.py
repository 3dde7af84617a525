"""The real ``kubectl`` against the fake API: what ``make lab`` promises its users.

No namespaces needed: the fake serves on the loopback. ``kubectl`` missing skips on a
laptop and fails under CI (``make system-deps`` installs Debian's kubernetes-client).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.objects import endpoint_slice, node, service

SERVICE_YAML = """\
apiVersion: v1
kind: Service
metadata:
  name: demo
  annotations: {kvip-bgp.io/loadbalancerIPs: 198.51.100.40}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: demo}
  ports: [{port: 80, targetPort: 8080}]
"""


@pytest.fixture
def kubectl(tmp_path: Path) -> Iterator[tuple[FakeKubeAPI, list[str], dict[str, str]]]:
    binary = shutil.which("kubectl")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is missing (CI=true: make system-deps installs it)")
        pytest.skip("kubectl is not installed")
    with FakeKubeAPI(bookmark_interval=0.2) as api:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),  # kubectl's discovery cache, not the user's
            "KUBECONFIG": str(api.write_kubeconfig(tmp_path / "kubeconfig")),
        }
        api.put(node("node-1"))
        svc = service("web", "198.51.100.10", ingress=["198.51.100.10"])
        api.put(svc)
        api.put(endpoint_slice("web", ["node-1", "node-2"]))
        yield api, [binary], env


def run(kubectl: tuple[FakeKubeAPI, list[str], dict[str, str]], *args: str) -> str:
    _api, argv, env = kubectl
    proc = subprocess.run(
        [*argv, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def test_get_services_wide_prints_the_server_side_columns(
    kubectl: tuple[FakeKubeAPI, list[str], dict[str, str]],
) -> None:
    out = run(kubectl, "get", "svc", "-o", "wide")
    header, row = out.splitlines()[:2]
    assert header.split() == [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
        "SELECTOR",
    ]
    assert row.split()[:5] == ["web", "LoadBalancer", "<none>", "198.51.100.10", "80/TCP"]
    assert row.split()[-1] == "app=web"


def test_get_endpointslices_and_nodes(
    kubectl: tuple[FakeKubeAPI, list[str], dict[str, str]],
) -> None:
    out = run(kubectl, "get", "endpointslices")
    assert re.search(r"^web-a\s+IPv4\s+8080\s+10\.244\.0\.1,10\.244\.0\.2\s", out, re.M), out
    assert "Ready" in run(kubectl, "get", "no")


def test_apply_creates_then_updates_a_service(
    kubectl: tuple[FakeKubeAPI, list[str], dict[str, str]], tmp_path: Path
) -> None:
    api = kubectl[0]
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(SERVICE_YAML)
    assert "service/demo created" in run(kubectl, "apply", "-f", str(manifest))
    stored = api.get("Service", "demo", "default")
    assert stored is not None
    assert stored["spec"]["externalTrafficPolicy"] == "Local"
    notes = stored["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/last-applied-configuration" in notes
    assert "service/demo unchanged" in run(kubectl, "apply", "-f", str(manifest))
    manifest.write_text(SERVICE_YAML.replace("Local", "Cluster"))
    assert "service/demo configured" in run(kubectl, "apply", "-f", str(manifest))
    updated = api.get("Service", "demo", "default")
    assert updated is not None and updated["spec"]["externalTrafficPolicy"] == "Cluster"


def test_describe_shows_the_services_events(
    kubectl: tuple[FakeKubeAPI, list[str], dict[str, str]],
) -> None:
    api = kubectl[0]
    svc = api.get("Service", "web", "default")
    assert svc is not None
    for name, reason, kind, uid in (
        ("web.1", "AnnouncedVIP", "Service", svc["metadata"]["uid"]),
        ("other.1", "Unrelated", "Service", "another-uid"),
    ):
        api.put(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {
                    "kind": kind,
                    "name": "web",
                    "namespace": "default",
                    "uid": uid,
                    "apiVersion": "v1",
                },
                "reason": reason,
                "message": f"{reason} message",
                "type": "Normal",
                "source": {"component": "kvip-bgp"},
                "count": 1,
                "firstTimestamp": "2026-01-01T00:00:00Z",
                "lastTimestamp": "2026-01-01T00:00:00Z",
            }
        )
    out = run(kubectl, "describe", "svc", "web")
    assert re.search(r"^LoadBalancer Ingress:\s+198\.51\.100\.10", out, re.M), out
    assert re.search(r"^Endpoints:\s+10\.244\.0\.1:8080,10\.244\.0\.2:8080", out, re.M), out
    assert "AnnouncedVIP" in out and "AnnouncedVIP message" in out
    assert "Unrelated" not in out, "the Events of another object (other uid)"
    assert "AnnouncedVIP" in run(kubectl, "get", "events")
