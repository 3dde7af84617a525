"""``kube.client`` and ``netif.netlink`` load the parts of ``kubernetes`` and ``pyroute2``
they use, not the whole packages: each package's ``__init__`` imports every subpackage
it has (``kubernetes``: ``dynamic`` with jsonschema, ``watch``, ``stream``...;
``pyroute2``: IPDB, NDB, nftables, WireGuard...), ~50 ms and ~4 MB, ~40 ms and ~6 MB on
the way to the first route (docs/performance.md). Each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: secret-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def run(script: str, netns: str | None = None) -> dict[str, object]:
    """``script`` in a fresh interpreter (in namespace ``netns``): its last line's JSON."""
    inside = ["ip", "netns", "exec", netns] if netns is not None else []
    result = subprocess.run(
        [*inside, sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


@pytest.mark.parametrize("first", ["", "import kubernetes"])
def test_the_client_loads_without_the_packages_other_subpackages(
    tmp_path: Path, first: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    report = run(
        f"""\
        import json, sys
        {first}
        from kvip_bgp.kube.client import load_configuration, new_api_client
        tops = ("kubernetes", "kubernetes_validate")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in tops)
        configuration = load_configuration({str(kubeconfig)!r})
        with new_api_client(configuration) as api:
            token = api.configuration.api_key
        import kubernetes.watch  # a subpackage we skipped still imports on demand
        watch = hasattr(kubernetes.watch, "Watch")
        # Any other attribute of the package completes it, as if nothing had been skipped.
        version = kubernetes.__version__
        print(json.dumps({{
            "dynamic": "kubernetes.dynamic" in loaded,
            "validate": "kubernetes_validate" in loaded,
            "host": configuration.host,
            "token": token,
            "watch": watch,
            "version": version,
            "completed": "kubernetes.dynamic" in sys.modules,
        }}))
        """
    )
    assert report["host"] == "https://127.0.0.1:6443"
    assert "Bearer secret-token" in json.dumps(report["token"])
    assert report["watch"] is True
    assert report["version"] and report["completed"] is True
    # Already imported in full (a test, a tool embedding us): used as it is.
    assert report["dynamic"] is bool(first)
    assert report["validate"] is bool(first)


@pytest.mark.parametrize("first", ["", "import pyroute2"])
def test_netlink_loads_without_pyroute2s_other_socket_families(first: str) -> None:
    """Nor ``pyroute2.iproute`` (IPRoute), which imports nearly all the rest: the address
    tables dump with pyroute2's message classes; IPRoute is imported when one is opened."""
    report = run(
        f"""\
        import json, socket, sys
        {first}
        from kvip_bgp.netif.netlink import NetlinkBatch, NetlinkError, open_iproute
        iproute = "pyroute2.iproute" in sys.modules
        batch = NetlinkBatch()  # a dump works: the message classes decode it
        lo = [m.get("IFA_ADDRESS") for m in batch.addresses(socket.if_nametoindex("lo"))]
        batch.close()
        dumped = "pyroute2.iproute" in sys.modules
        loaded = {{m for m in sys.modules if m.split(".")[0] == "pyroute2"}}
        with open_iproute() as ipr:  # the socket and its parser are complete
            links = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        import pyroute2.ndb.main  # a subpackage we skipped still imports on demand
        # A name the package's __init__ re-exports completes it (tools, tests).
        from pyroute2 import IPRoute as Again, NDB
        print(json.dumps({{
            "iproute": [iproute, dumped],
            "ndb": "pyroute2.ndb.main" in loaded,
            "ipdb": "pyroute2.ipdb" in loaded,
            "127.0.0.1": "127.0.0.1" in lo,
            "lo": "lo" in links,
            "error": issubclass(NetlinkError, Exception),
            "same": type(ipr) is Again,
            "completed": "pyroute2.ipdb" in sys.modules and NDB is not None,
        }}))
        """
    )
    assert report["127.0.0.1"] is True
    assert report["lo"] is True and report["error"] is True
    assert report["same"] is True and report["completed"] is True
    assert report["iproute"] == [bool(first), bool(first)]
    assert report["ndb"] is bool(first)
    assert report["ipdb"] is bool(first)


def test_in_cluster_credentials_load_without_the_kubeconfig_loader(tmp_path: Path) -> None:
    """The DaemonSet's path: ``kube_config`` (oauthlib, requests) is for kubeconfig files,
    and the library's ``ApiClient`` (pydantic, dateutil) for its models."""
    token = tmp_path / "token"
    token.write_text("in-cluster-token")
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")  # read by TLS only at connect time
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    report = run(
        f"""\
        import json, os, sys
        os.environ["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
        os.environ["KUBERNETES_SERVICE_PORT"] = "443"
        from kvip_bgp.kube.client import load_configuration, new_api_client
        from kubernetes.config import incluster_config
        incluster_config.SERVICE_TOKEN_FILENAME = {str(token)!r}
        incluster_config.SERVICE_CERT_FILENAME = {str(ca)!r}
        configuration = load_configuration(None)
        with new_api_client(configuration) as api:
            token = api.configuration.api_key
        heavy = sorted(
            m for m in ("kubernetes.config.kube_config", "oauthlib", "requests",
                        "kubernetes.client.api_client", "pydantic", "dateutil")
            if m in sys.modules
        )
        # A kubeconfig afterwards still loads (its loader is imported then).
        other = load_configuration({str(kubeconfig)!r})
        print(json.dumps({{
            "host": configuration.host,
            "token": token,
            "heavy": heavy,
            "other": other.host,
        }}))
        """
    )
    assert report["host"] == "https://10.96.0.1:443"
    assert "bearer in-cluster-token" in json.dumps(report["token"]).lower()
    assert report["heavy"] == []
    assert report["other"] == "https://127.0.0.1:6443"


def test_a_kubeconfig_loads_without_the_librarys_api_client(tmp_path: Path) -> None:
    """``kube_config`` imports ``kubernetes.client.ApiClient`` (pydantic, its response
    models, dateutil, a thread pool) to refresh OIDC tokens: it gets a stand-in that
    builds the library's own when called, and nobody else sees the stand-in."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    report = run(
        f"""\
        import json, sys
        from kvip_bgp.kube.client import load_configuration
        configuration = load_configuration({str(kubeconfig)!r})
        heavy = sorted(
            m for m in ("kubernetes.client.api_client", "pydantic", "dateutil",
                        "multiprocessing.pool")
            if m in sys.modules
        )
        again = load_configuration({str(kubeconfig)!r})
        from kubernetes.config import kube_config
        built = kube_config.ApiClient(configuration=configuration)
        import kubernetes.client
        from kubernetes.client.api_client import ApiClient
        print(json.dumps({{
            "host": configuration.host,
            "again": again.host,
            "heavy": heavy,
            "built": type(built) is ApiClient,
            "library": kubernetes.client.ApiClient is ApiClient,
        }}))
        """
    )
    assert report == {
        "host": "https://127.0.0.1:6443",
        "again": "https://127.0.0.1:6443",
        "heavy": [],
        "built": True,
        "library": True,
    }


def test_the_manifest_help_names_the_control_planes_default_ca() -> None:
    """``commands`` names the kubeadm CA without importing ``controlplane`` for it."""
    from kvip_bgp.configfile import commands, controlplane

    assert commands.KUBEADM_CA == controlplane.KUBEADM_CA
