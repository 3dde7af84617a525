"""``kvip-bgp manifest control-plane``: a static Pod that announces the API server's VIP.

A VIP for the Kubernetes API must be up before the cluster is: the kubelet starts static
Pods from ``/etc/kubernetes/manifests/`` without an API server, so the Pod carries its
whole configuration (no ConfigMap, no Secret, no ServiceAccount) and runs with
``kubernetes.enabled: false``. Its one static VIP is health-checked against the local
API server's ``/readyz``: a control-plane node whose API server is not ready withdraws
the VIP, the others keep it (BGP ECMP or best path at the routers).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

from kvip_bgp.domain.model import IPAddress

CONFIG_ENV: Final = "KVIP_BGP_CONFIG"
CONFIG_PATH: Final = "/etc/kvip-bgp/config.yaml"
KUBEADM_CA: Final = "/etc/kubernetes/pki/ca.crt"


@dataclass(frozen=True)
class ControlPlaneVip:
    vip: IPAddress
    asn: int
    peers: tuple[tuple[IPAddress, int], ...]
    router_id: ipaddress.IPv4Address
    interface: str = "lo"
    apiserver_url: str = "https://127.0.0.1:6443/readyz"
    ca_file: str | None = KUBEADM_CA
    server_name: str | None = "kubernetes"
    insecure: bool = False
    image: str = "kvip-bgp:0.1.0"
    http_port: int = 9473
    """Not the DaemonSet's 9472: both may run on one node (both use the host network)."""


def parse_peer(text: str) -> tuple[IPAddress, int]:
    """``ADDR:ASN``; an IPv6 address in brackets or bare (``[2001:db8::1]:64500``)."""
    address, sep, asn = text.rpartition(":")
    if not sep or not asn.isdigit():
        raise ValueError(f"--peer {text!r}: expected ADDR:ASN")
    try:
        return ipaddress.ip_address(address.strip("[]")), int(asn)
    except ValueError as error:
        raise ValueError(f"--peer {text!r}: {error}") from None


def config(spec: ControlPlaneVip) -> dict[str, Any]:
    """The daemon's configuration: one health-checked static VIP, no Kubernetes."""
    check: dict[str, Any] = {"http": spec.apiserver_url}
    if spec.apiserver_url.startswith("https://"):
        if spec.insecure:
            check["insecure"] = True
        else:
            if spec.ca_file:
                check["ca_file"] = spec.ca_file
            if spec.server_name:
                check["server_name"] = spec.server_name
    # Withdraw within ~3 s of the API server failing /readyz, come back after 2 passes.
    check.update({"interval": 1, "timeout": 1, "rise": 2, "fall": 3})
    prefix = 32 if spec.vip.version == 4 else 128
    return {
        "bgp": {
            "asn": spec.asn,
            "router_id": str(spec.router_id),
            "peers": [{"address": str(address), "asn": asn} for address, asn in spec.peers],
        },
        "vips": {"allowed": [f"{spec.vip}/{prefix}"], "interface": spec.interface},
        "kubernetes": {"enabled": False},
        "static": [{"address": str(spec.vip), "check": check}],
        "http": {"listen": f"127.0.0.1:{spec.http_port}"},
        "log": {"format": "json", "level": "info"},
    }


_SCRIPT: Final = f"""\
set -eu
printf '%s\\n' "${CONFIG_ENV}" > {CONFIG_PATH}
kvip-bgp check-config --config {CONFIG_PATH}
exec kvip-bgp run --config {CONFIG_PATH} --runtime-dir /run/kvip-bgp
"""


def manifest(spec: ControlPlaneVip) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": "/etc/kvip-bgp"},
        {"name": "run", "mountPath": "/run/kvip-bgp"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": name, "emptyDir": {"medium": "Memory"}} for name in ("config", "run", "tmp")
    ]
    if spec.ca_file and not spec.insecure and spec.apiserver_url.startswith("https://"):
        mounts.append({"name": "ca", "mountPath": spec.ca_file, "readOnly": True})
        volumes.append({"name": "ca", "hostPath": {"path": spec.ca_file, "type": "File"}})
    probe = {"host": "127.0.0.1", "port": spec.http_port}
    container = {
        "name": "kvip-bgp",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c"],
        "args": [_SCRIPT],
        "env": [{"name": CONFIG_ENV, "value": yaml.safe_dump(config(spec), sort_keys=False)}],
        "securityContext": {
            "runAsUser": 0,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
        },
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "20m", "memory": "64Mi"}},
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "kvip-bgp-control-plane",
            "namespace": "kube-system",
            "labels": {"app.kubernetes.io/name": "kvip-bgp", "component": "control-plane-vip"},
        },
        "spec": {
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "terminationGracePeriodSeconds": 20,
            "containers": [container],
            "volumes": volumes,
        },
    }


def manifest_text(spec: ControlPlaneVip) -> str:
    header = (
        "# kvip-bgp: the Kubernetes API's VIP, for /etc/kubernetes/manifests/ on each\n"
        f"# control-plane node (router_id {spec.router_id}: one manifest per node).\n"
    )
    return header + yaml.dump(manifest(spec), Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the script, the embedded config) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def embedded_config(text: str) -> dict[str, Any]:
    """The configuration inside a rendered manifest (what the Pod will run)."""
    pod = yaml.safe_load(text)
    env = pod["spec"]["containers"][0]["env"]
    value = next(e["value"] for e in env if e["name"] == CONFIG_ENV)
    found: dict[str, Any] = yaml.safe_load(value)
    return found


def spec_from_args(
    vip: str,
    asn: int,
    peers: Sequence[str],
    router_id: str,
    **options: Any,
) -> ControlPlaneVip:
    """Raises ``ValueError`` naming the flag."""
    try:
        address = ipaddress.ip_address(vip)
    except ValueError as error:
        raise ValueError(f"--vip: {error}") from None
    try:
        rid = ipaddress.IPv4Address(router_id)
    except ValueError as error:
        raise ValueError(f"--router-id: {error} (an IPv4 address, unique per node)") from None
    if not peers:
        raise ValueError("--peer: at least one ADDR:ASN")
    return ControlPlaneVip(
        vip=address,
        asn=asn,
        peers=tuple(parse_peer(p) for p in peers),
        router_id=rid,
        **{k: v for k, v in options.items() if v is not None},
    )
