"""``make lab`` as a newcomer runs it: the README's tour, end to end.

The lab process itself (``python -m kvip_bgp.testing.fabric_lab``, what ``make lab``
runs) is started; the test reads the ``export KUBECONFIG=...`` line it prints, applies
a Service without a VIP with the real ``kubectl``, waits for the pool to give it an
address, curls that address from the client namespace, then stops the lab with Ctrl-C
(SIGINT) and checks that no namespace of it is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kvip_bgp.testing.fabric import PREFIX

pytestmark = pytest.mark.lab

SHOP = """\
apiVersion: v1
kind: Service
metadata: {name: shop, namespace: default}
spec:
  type: LoadBalancer
  loadBalancerClass: kvip-bgp.io/bgp
  selector: {app: shop}
  ports: [{port: 80, protocol: TCP}]
"""


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def test_make_lab_tour_allocates_a_vip_that_answers(lab_required: None, tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is missing (make system-deps installs it)")
    assert not _namespaces(), f"a lab is already running: {_namespaces()}"
    lab = subprocess.Popen(
        [sys.executable, "-m", "kvip_bgp.testing.fabric_lab"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:
        assert lab.stdout is not None
        for line in lab.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("lab: running"):
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(120), "the lab did not come up:\n" + "\n".join(lines)
        output = "\n".join(lines)
        exports = [line for line in lines if line.startswith("export KUBECONFIG=")]
        assert exports, output
        assert "node-" in output, f"the printed curl got no node's answer:\n{output}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp_path),
            "KUBECONFIG": exports[0].split("=", 1)[1],
        }

        def run(*args: str, stdin: str | None = None) -> str:
            proc = subprocess.run(
                [kubectl, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
            return proc.stdout

        run("apply", "-f", "-", stdin=SHOP)
        vip = ""
        deadline = time.monotonic() + 30
        while not vip and time.monotonic() < deadline:
            vip = run("get", "svc", "shop", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
            time.sleep(0.5)
        assert vip.startswith("198.51.100."), f"no VIP allocated to shop: {vip!r}"
        answer = ""
        deadline = time.monotonic() + 30
        while not answer.startswith("node-") and time.monotonic() < deadline:
            answer = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    f"{PREFIX}client",
                    "curl",
                    "-s",
                    "-m",
                    "2",
                    f"http://{vip}/",
                ],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            time.sleep(0.3)
        assert answer.startswith("node-"), f"curl {vip}: {answer!r}\n" + "\n".join(lines)
        described = run("describe", "svc", "shop")
        assert "IPAllocated" in described, described
        explain = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                f"{PREFIX}n1",
                sys.executable,
                "-m",
                "kvip_bgp.cli",
                "explain",
                "default/shop",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert explain.returncode == 0, explain.stdout + explain.stderr  # 0: announced
        assert vip in explain.stdout, explain.stdout
    finally:
        lab.send_signal(signal.SIGINT)
        try:
            lab.wait(60)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()
        reader.join(5)
    assert lab.returncode == 0, "\n".join(lines)
    assert not _namespaces(), f"Ctrl-C left namespaces: {_namespaces()}"
