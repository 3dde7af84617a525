"""The container image (``make image``): built with buildah, run with podman in the lab
node's namespace, its route seen at FRR.

Containers run on these machines only with runc (crun refuses the host's cgroup v1/v2
hybrid), ``--cgroup-manager cgroupfs`` and rlimits within the hard limits (without
CAP_SYS_RESOURCE podman's default nofile cannot be set), and with podman started outside
the lab's namespaces: ``RUN`` below.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from kvip_bgp.testing.scenario import Scenario, daemon_config

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("IMAGE", "kvip-bgp:0.1.0")
VIP = "198.51.100.95"
RUN = [
    "podman",
    *("--runtime", "runc", "--cgroup-manager", "cgroupfs"),
    "run",
    "--rm",
    *("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"),
    *("--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--read-only"),
    *("--tmpfs", "/run/kvip-bgp:mode=0700", "--tmpfs", "/tmp"),
]


@pytest.fixture
def image(lab_required: None) -> str:
    """The image, built by ``make image``'s script when it is not there yet."""
    missing = [
        tool for tool in ("podman", "buildah", "runc", "debootstrap") if not shutil.which(tool)
    ]
    if missing:
        message = f"needs {', '.join(missing)} (make image-deps installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a failure, not a skip)")
        pytest.skip(message)
    found = subprocess.run(["buildah", "inspect", "--type", "image", IMAGE], capture_output=True)
    if found.returncode != 0:
        subprocess.run(
            ["sh", str(ROOT / "deploy/image/build.sh")],
            check=True,
            env={**os.environ, "IMAGE": IMAGE},
        )
    return IMAGE


def test_the_image_announces_a_static_vip(image: str) -> None:
    with Scenario(kubernetes=False) as scenario:
        config = daemon_config(None, static=[{"address": VIP}])
        config["http"] = {"listen": "127.0.0.1:9481"}
        path = scenario.lab.workdir / "image-config.yaml"
        path.write_text(yaml.safe_dump(config))
        name = f"kvip-test-{uuid.uuid4().hex[:8]}"
        log = open(scenario.lab.workdir / "image.log", "wb")  # noqa: SIM115 (closed below)
        scenario.lab.on_exit(log.close)
        scenario.lab.on_exit(
            lambda: subprocess.run(["podman", "rm", "-f", name], capture_output=True)
        )
        # podman runs here, the container in the node's network namespace: under `ip netns
        # exec` /sys is the namespace's own, without the cgroup mounts runc needs.
        netns = f"ns:/run/netns/{scenario.lab.node.name}"
        argv = [*RUN, "--network", netns, "--name", name]
        argv += ["-v", f"{path}:/etc/kvip-bgp/config.yaml:ro", image]
        container = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        scenario.lab.on_exit(lambda: container.poll() is not None or container.kill())

        def alive() -> None:
            if container.poll() is not None:
                raise AssertionError((scenario.lab.workdir / "image.log").read_text())

        try:
            scenario.wait_routes(
                lambda r: (alive(), f"{VIP}/32" in r)[1], "the image's route", timeout=40
            )
        except TimeoutError as error:
            raise AssertionError(
                f"{error}\n{(scenario.lab.workdir / 'image.log').read_text()}"
            ) from None
        assert VIP in scenario.addresses()  # bound by the container, in the node's namespace

        subprocess.run(["podman", "stop", "-t", "20", name], check=True, capture_output=True)
        assert container.wait(30) == 0
        assert f"{VIP}/32" not in scenario.routes()  # SIGTERM withdrew it
        assert VIP not in scenario.addresses()
