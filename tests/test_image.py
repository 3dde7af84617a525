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

from kvip_bgp import cli
from kvip_bgp.testing.netlab import Lab, listen_socket_in_netns
from kvip_bgp.testing.scenario import NODE_ASN, TOR_ASN, Scenario, daemon_config
from kvip_bgp.testing.tls import HttpsEndpoint, make_certs

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
]
# The chart's emptyDirs.
TMPFS = ["--tmpfs", "/run/kvip-bgp:mode=0700", "--tmpfs", "/tmp"]


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


def start(scenario: Scenario, *options: str) -> tuple[str, subprocess.Popen[bytes]]:
    """``podman run OPTIONS... IMAGE ARGS...`` in the lab node's network namespace.

    podman runs here: under ``ip netns exec`` /sys is the namespace's own, without the
    cgroup mounts runc needs. Returns the container's name and the podman process."""
    name = f"kvip-test-{uuid.uuid4().hex[:8]}"
    log = open(scenario.lab.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed on exit)
    scenario.lab.on_exit(log.close)
    scenario.lab.on_exit(lambda: subprocess.run(["podman", "rm", "-f", name], capture_output=True))
    netns = f"ns:/run/netns/{scenario.lab.node.name}"
    argv = [*RUN, "--network", netns, "--name", name, *options]
    container = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    scenario.lab.on_exit(lambda: container.poll() is not None or container.kill())
    return name, container


def wait_route(
    scenario: Scenario, name: str, container: subprocess.Popen[bytes], present: bool
) -> None:
    log = scenario.lab.workdir / f"{name}.log"

    def seen(routes: dict[str, object]) -> bool:
        if container.poll() is not None:
            raise AssertionError(log.read_text())
        return (f"{VIP}/32" in routes) == present

    try:
        scenario.wait_routes(seen, f"route {'present' if present else 'gone'}", timeout=40)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{log.read_text()}") from None


def test_the_image_announces_a_static_vip(image: str) -> None:
    with Scenario(kubernetes=False) as scenario:
        config = daemon_config(None, static=[{"address": VIP}])
        config["http"] = {"listen": "127.0.0.1:9481"}
        path = scenario.lab.workdir / "image-config.yaml"
        path.write_text(yaml.safe_dump(config))
        name, container = start(
            scenario, *TMPFS, "-v", f"{path}:/etc/kvip-bgp/config.yaml:ro", image
        )
        wait_route(scenario, name, container, present=True)
        assert VIP in scenario.bound()  # bound by the container, in the node's namespace

        subprocess.run(["podman", "stop", "-t", "20", name], check=True, capture_output=True)
        assert container.wait(30) == 0
        assert f"{VIP}/32" not in scenario.routes()  # SIGTERM withdrew it
        assert VIP not in scenario.bound()


def test_the_control_plane_pod_runs_in_the_image(
    image: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The static Pod's own command, environment and volumes, as the kubelet would run
    them (emptyDirs as tmpfs, the CA as a read-only file), against an HTTPS /readyz."""
    with Scenario(kubernetes=False) as scenario:
        certs = make_certs(scenario.lab.workdir / "pki")
        sock = listen_socket_in_netns(scenario.lab.node.name, "127.0.0.1", 0)
        readyz = HttpsEndpoint(sock, certs)
        scenario.lab.on_exit(readyz.close)
        flags = ["--vip", VIP, "--asn", str(NODE_ASN), "--peer", f"{Lab.TOR_V4}:{TOR_ASN}"]
        flags += ["--router-id", Lab.NODE_V4, "--ca-file", str(certs.ca), "--image", image]
        flags += ["--apiserver-url", f"https://127.0.0.1:{readyz.port}/readyz"]
        assert cli.main(["manifest", "control-plane", *flags]) == 0
        pod = yaml.safe_load(capsys.readouterr().out)
        spec = pod["spec"]
        (box,) = spec["containers"]
        options = ["--entrypoint", box["command"][0]]
        for env in box["env"]:
            options += ["--env", f"{env['name']}={env['value']}"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in box["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                mode = "0700" if mount["mountPath"] == "/run/kvip-bgp" else "0755"
                options += ["--tmpfs", f"{mount['mountPath']}:mode={mode}"]
            else:
                options += ["-v", f"{volume['hostPath']['path']}:{mount['mountPath']}:ro"]
        name, container = start(scenario, *options, box["image"], *box["command"][1:], *box["args"])
        wait_route(scenario, name, container, present=True)
        readyz.status = 500  # the API server is not ready: withdrawn
        wait_route(scenario, name, container, present=False)
        readyz.status = 200
        wait_route(scenario, name, container, present=True)
