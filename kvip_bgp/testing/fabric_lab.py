"""``make lab``: the fabric lab, running, with two Services, a working curl and kubectl.

Builds the fabric (``fabric.py``), creates a Cluster Service with a pod on every node
and a Local Service with a pod on node-1, prints the ToR's table with its ECMP next
hops, the ``export KUBECONFIG=...`` line for the real ``kubectl`` and a ``curl`` from the
client namespace that answers, then keeps running until Ctrl-C, which removes it all.

While it runs, a Service of ours that appears through ``kubectl apply`` gets "pods"
too (every node for Cluster, node-1 for Local), so its VIP answers a curl.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from kvip_bgp.testing.fabric import CLIENT_V4, PREFIX, Fabric
from kvip_bgp.testing.objects import VIP_ANNOTATION, service
from kvip_bgp.testing.pods import Pods

SERVICES = (("web", "198.51.100.10", "Cluster"), ("local", "198.51.100.20", "Local"))
LAB_IPAM: dict[str, Any] = {
    "pools": [{"name": "lab", "addresses": ["198.51.100.0/24"], "avoid_buggy_ips": True}]
}
"""The lab's address pool: a Service applied without a VIP gets one (docs/ipam.md); the
example Services' requested VIPs lie inside it. A ``--config`` with ``ipam`` replaces it."""


def _vip(obj: dict[str, Any]) -> str | None:
    notes = (obj.get("metadata") or {}).get("annotations") or {}
    vip = notes.get(VIP_ANNOTATION) or (obj.get("spec") or {}).get("loadBalancerIP")
    if not vip:  # allocated from the pool: the Lease holder wrote it into the status
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        vip = next((i.get("ip") for i in ingress if isinstance(i, dict) and i.get("ip")), None)
    return str(vip).split(",")[0].strip() if vip else None


def _follow(fabric: Fabric, pods: Pods, known: set[str]) -> None:
    """Give pods to Services created meanwhile (``kubectl apply``); forget deleted ones."""
    current = {}
    for obj in fabric.api.items("Service"):
        name = obj["metadata"]["name"]
        if obj["metadata"].get("namespace", "default") != "default":
            continue
        current[name] = obj
    for name in sorted(set(current) - known):
        vip = _vip(current[name])
        if vip is None or (current[name].get("spec") or {}).get("type") != "LoadBalancer":
            continue
        if not fabric.admits(vip):
            known.add(name)  # refused by the speakers: no pods
            continue
        local = (current[name].get("spec") or {}).get("externalTrafficPolicy") == "Local"
        nodes = ["node-1"] if local else sorted(fabric.nodes)
        pods.start(name, vip, *nodes)
        known.add(name)
        print(f"lab: pods for {name} ({vip}) on {', '.join(nodes)}", flush=True)
    for name in sorted(known - set(current)):
        pods.stop(name, *sorted(fabric.nodes))
        known.discard(name)


def curl_argv(vip: str) -> list[str]:
    return ["ip", "netns", "exec", f"{PREFIX}client", "curl", "-s", "-m", "3", f"http://{vip}/"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make lab",
        description="The fabric lab: an FRR ToR with ECMP, three kvip-bgp nodes, a client "
        "and the fake Kubernetes API; Ctrl-C removes everything.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML merged into every node's kvip-bgp config (section by section)",
    )
    parser.add_argument("--once", action="store_true", help="exit after the first curl")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make lab needs root (network namespaces)", file=sys.stderr)
        return 1
    overrides: dict[str, Any] = {}
    if args.config is not None:
        overrides = yaml.safe_load(args.config.read_text()) or {}
    overrides.setdefault("ipam", LAB_IPAM)
    with Fabric(bfd_nodes=(3,), keep_workdir=False) as fabric:
        pods = Pods(fabric)
        for fabric_node in fabric.nodes.values():
            fabric_node.overrides = dict(overrides)
        for name, vip, policy in SERVICES:
            fabric.api.put(service(name, vip, traffic_policy=policy))
        # Outside vips.allowed and the pool: refused, with a Warning Event for describe.
        fabric.api.put(service("refused", "203.0.113.10"))
        known: set[str] = set()
        _follow(fabric, pods, known)
        fabric.start_nodes()
        try:
            fabric.wait_fib(SERVICES[0][1], set(fabric.nodes), timeout=30)
            fabric.wait_fib(SERVICES[1][1], {"node-1"}, timeout=30)
        except TimeoutError as error:
            print(f"lab: {error}", file=sys.stderr)
            return 1
        print(fabric.tor_table(), flush=True)
        print(f"lab: node logs in {fabric.lab.workdir}/nN/kvip-bgp.log; client {CLIENT_V4}")
        print(f"export KUBECONFIG={fabric.host_kubeconfig}")
        print("kubectl get svc -o wide; kubectl get endpointslices; kubectl describe svc refused")
        for _name, vip, _policy in SERVICES:
            argv_ = curl_argv(vip)
            answer = subprocess.run(argv_, capture_output=True, text=True, check=False).stdout
            print(f"$ {shlex.join(argv_)}\n{answer.strip() or '(no answer)'}", flush=True)
        if args.once:
            return 0
        print("lab: running; Ctrl-C stops and removes the lab", flush=True)
        try:
            while all(n.running() for n in fabric.nodes.values()):
                _follow(fabric, pods, known)
                time.sleep(1.0)
            print("lab: a kvip-bgp exited; see its log", file=sys.stderr)
        except KeyboardInterrupt:
            print("\nlab: stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
