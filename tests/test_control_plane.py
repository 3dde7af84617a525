"""``kvip-bgp manifest control-plane``: the static Pod, its config, and that config run
in the lab against an HTTPS endpoint standing in for the API server's /readyz."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvip_bgp import cli
from kvip_bgp.configfile.controlplane import embedded_config
from kvip_bgp.testing.netlab import Lab, listen_socket_in_netns
from kvip_bgp.testing.scenario import NODE_ASN, TOR_ASN, Scenario
from kvip_bgp.testing.tls import HttpsEndpoint, make_certs

VIP = "198.51.100.90"
ARGS = ["manifest", "control-plane", "--vip", VIP, "--asn", str(NODE_ASN)]


def render(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    peer = ["--peer", f"{Lab.TOR_V4}:{TOR_ASN}", "--router-id", Lab.NODE_V4]
    assert cli.main([*ARGS, *peer, *extra]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


def test_the_embedded_config_passes_check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = embedded_config(render(capsys))
    assert config["kubernetes"] == {"enabled": False}
    assert config["static"] == [
        {
            "address": VIP,
            "check": {
                "http": "https://127.0.0.1:6443/readyz",
                "ca_file": "/etc/kubernetes/pki/ca.crt",
                "server_name": "kubernetes",
                "interval": 1,
                "timeout": 1,
                "rise": 2,
                "fall": 3,
            },
        }
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["check-config", "--config", str(path)]) == 0
    assert "ok (1 peer(s), 1 allowed range(s), 1 static VIP(s))" in capsys.readouterr().out


def test_the_pod_matches_the_kubernetes_schema(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import kubernetes_validate
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("needs kubernetes-validate (CI=true: a failure, not a skip)")
        pytest.skip("needs kubernetes-validate")
    pod: dict[str, Any] = yaml.safe_load(render(capsys))
    kubernetes_validate.validate(pod, kubernetes_validate.latest_version(), strict=True)
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert pod["metadata"]["namespace"] == "kube-system"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["ca"]["hostPath"] == {"path": "/etc/kubernetes/pki/ca.crt", "type": "File"}
    container = spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    # Nothing that needs the API server: no ServiceAccount token, ConfigMap or Secret.
    assert not any("configMap" in v or "secret" in v for v in spec["volumes"])


def test_insecure_and_bad_flags(capsys: pytest.CaptureFixture[str]) -> None:
    config = embedded_config(render(capsys, "--insecure"))
    check = config["static"][0]["check"]
    assert check["insecure"] is True and "ca_file" not in check
    assert "ca" not in {
        v["name"] for v in yaml.safe_load(render(capsys, "--insecure"))["spec"]["volumes"]
    }
    assert cli.main([*ARGS, "--peer", "192.0.2.1", "--router-id", "192.0.2.9"]) == 2
    assert "--peer '192.0.2.1': expected ADDR:ASN" in capsys.readouterr().err
    outside = [*ARGS, "--peer", "192.0.2.1:64500", "--router-id", "2001:db8::1"]
    assert cli.main(outside) == 2
    assert "--router-id" in capsys.readouterr().err


@pytest.mark.lab
def test_the_manifest_config_announces_while_the_api_server_is_ready(
    lab_required: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with Scenario(kubernetes=False) as scenario:
        certs = make_certs(scenario.lab.workdir / "pki")  # for DNS:kubernetes only
        sock = listen_socket_in_netns(scenario.lab.node.name, "127.0.0.1", 0)
        readyz = HttpsEndpoint(sock, certs)
        scenario.lab.on_exit(readyz.close)
        url = f"https://127.0.0.1:{readyz.port}/readyz"
        config = embedded_config(render(capsys, "--apiserver-url", url, "--ca-file", str(certs.ca)))
        scenario.start_daemon(config)
        scenario.wait_routes(lambda r: f"{VIP}/32" in r, "the control-plane VIP")
        assert VIP in scenario.bound()

        readyz.status = 500  # the API server is not ready: this node withdraws
        scenario.wait_routes(lambda r: f"{VIP}/32" not in r, "withdrawn", timeout=15)
        readyz.status = 200
        scenario.wait_routes(lambda r: f"{VIP}/32" in r, "announced again", timeout=15)
        assert readyz.requests >= 5
