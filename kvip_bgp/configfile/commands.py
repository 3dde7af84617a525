"""The commands that write configuration: ``manifest control-plane``, ``import metallb``.

They live beside the loader because they produce (and validate) config files; cli.py
only hands them its subparsers. Building the parsers imports nothing more: ``kvip-bgp
run`` builds them too, and the manifest's and the importer's modules are for these
commands only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Final

COMMANDS: Final = ("manifest", "import")
# ``controlplane.KUBEADM_CA``, named in --ca-file's help (a test checks they agree).
KUBEADM_CA: Final = "/etc/kubernetes/pki/ca.crt"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    manifest = sub.add_parser(
        "manifest", help="print a deployment manifest", description="print a deployment manifest"
    )
    kinds = manifest.add_subparsers(dest="kind", required=True, metavar="KIND")
    text = (
        "a static Pod for /etc/kubernetes/manifests/ announcing the API server's VIP, "
        "health-checked against the local API server (kubernetes.enabled: false)"
    )
    cp = kinds.add_parser("control-plane", help=text, description=text)
    cp.add_argument("--vip", required=True, help="the API server's VIP")
    cp.add_argument("--asn", required=True, type=int, help="this node's AS number")
    cp.add_argument(
        "--peer", required=True, action="append", metavar="ADDR:ASN", help="a BGP peer (repeat)"
    )
    cp.add_argument(
        "--router-id", required=True, help="this node's BGP identifier (IPv4; one per node)"
    )
    cp.add_argument("--interface", help="where the VIP is bound (default: lo)")
    cp.add_argument(
        "--apiserver-url", help="health check URL (default: https://127.0.0.1:6443/readyz)"
    )
    cp.add_argument("--ca-file", help=f"CA of the API server's certificate (default: {KUBEADM_CA})")
    cp.add_argument(
        "--server-name", help="name in the API server's certificate (default: kubernetes)"
    )
    cp.add_argument("--insecure", action="store_true", help="do not verify the certificate")
    cp.add_argument("--image", help="the kvip-bgp image (default: kvip-bgp:0.1.0)")
    cp.add_argument("--http-port", type=int, help="/metrics /healthz port on 127.0.0.1 (9473)")

    importer = sub.add_parser(
        "import",
        help="convert another load balancer's configuration",
        description="convert another load balancer's configuration",
    )
    sources = importer.add_subparsers(dest="source", required=True, metavar="SOURCE")
    text = (
        "print a kvip-bgp config equivalent to MetalLB resources (IPAddressPool, BGPPeer, "
        "BGPAdvertisement, Community...), and on stderr every field it cannot carry over"
    )
    metallb = sources.add_parser("metallb", help=text, description=text)
    metallb.add_argument("files", nargs="+", type=Path, metavar="FILE")
    metallb.add_argument("--router-id", help="bgp.router_id for the config (MetalLB has none)")


def main(args: argparse.Namespace) -> int:
    if args.command == "manifest":
        return _control_plane(args)
    from kvip_bgp.configfile import metallb

    return metallb.main(args.files, args.router_id)


def _control_plane(args: argparse.Namespace) -> int:
    from kvip_bgp.configfile import controlplane
    from kvip_bgp.configfile.load import parse
    from kvip_bgp.configfile.reader import ConfigError

    try:
        spec = controlplane.spec_from_args(
            args.vip,
            args.asn,
            args.peer,
            args.router_id,
            interface=args.interface,
            apiserver_url=args.apiserver_url,
            ca_file=args.ca_file,
            server_name=args.server_name,
            insecure=args.insecure or None,
            image=args.image,
            http_port=args.http_port,
        )
    except ValueError as error:
        print(f"kvip-bgp manifest control-plane: {error}", file=sys.stderr)
        return 2
    try:  # the same validation as check-config: the Pod must not fail at start
        parse(controlplane.config(spec), environ={})
    except ConfigError as error:
        print("kvip-bgp manifest control-plane: the config would be invalid:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    sys.stdout.write(controlplane.manifest_text(spec))
    return 0
