"""``kube.client`` and ``netif.netlink`` load the parts of ``kubernetes`` and ``pyroute2``
they use, not the whole packages: each package's ``__init__`` imports every subpackage
it has (``kubernetes``: ``dynamic`` with jsonschema, ``watch``, ``stream``...;
``pyroute2``: IPDB, NDB, nftables, WireGuard...), ~50 ms and ~4 MB, ~40 ms and ~6 MB on
the way to the first route (docs/performance.md). Each case runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import require_lab

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.netlab import Netns, cleanup, listen_socket_in_netns
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import daemon_config

REPO = Path(__file__).resolve().parent.parent
NETNS_PREFIX = "kvli-"  # a prefix of its own: cleanup removes every namespace of a prefix

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


# Modules of other modes and commands, which ``kvip-bgp run`` in the DaemonSet's usual
# mode (kubernetes.enabled, no static VIP, no IPAM pool, no BFD) must not import on its
# way to the first route: each one here was once imported at start for nothing.
NOT_ON_THE_KUBERNETES_START_PATH = (
    "kvip_bgp.runtime.static",  # static VIP watchers and their checks
    "kvip_bgp.runtime.checks",
    "kvip_bgp.runtime.https",
    "kvip_bgp.configfile.controlplane",  # kvip-bgp manifest control-plane
    "kvip_bgp.configfile.metallb",  # kvip-bgp import metallb
    "kvip_bgp.configfile.reference",  # the reference docs' tables
    "kvip_bgp.ops.report",  # kvip-bgp status / explain
    "kvip_bgp.bgp.bfd.supervisor",  # a peer with bfd
    "pyroute2.iproute",  # output: kernel-table, or a VIP interface to create
)


@pytest.fixture
def cluster_config(tmp_path: Path) -> Iterator[Path]:
    """A Kubernetes-mode config against the fake API (one Service with a ready endpoint on
    this node), no interface to bind on: the daemon runs unprivileged."""
    api = FakeKubeAPI()
    url = api.start()
    try:
        api.put(node())
        api.put(service("web", "198.51.100.10"))
        api.put(endpoint_slice("web", [NODE_NAME]))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", url)
        config = daemon_config(kubeconfig, http={"listen": f"127.0.0.1:{free_port()}"})
        config["vips"]["interface"] = None
        path = tmp_path / "kvip-bgp.yaml"
        path.write_text(yaml.safe_dump(config))
        yield path
    finally:
        api.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_kubernetes_mode_starts_without_other_modes_modules_and_with_the_gc_paused(
    tmp_path: Path, cluster_config: Path
) -> None:
    """``kvip-bgp run`` until the Service's route is decided: what is imported by then,
    whether the cyclic collector was paused while the daemon imported, started and took
    the cluster's first sync, and what that built frozen when it resumed."""
    config = yaml.safe_load(cluster_config.read_text())
    report = run(
        f"""\
        import gc, json, os, signal, sys, threading, time, urllib.request
        from kvip_bgp import cli, process

        seen = {{}}
        real_resume = process.resume_gc

        url = "http://{config["http"]["listen"]}/status"

        def synced_now():
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return "kubernetes" in json.load(reply).get("synced_sources", [])
            except OSError:
                return False

        def resume():  # the start's end: what was the collector doing until then?
            seen.setdefault("paused_during_start", not gc.isenabled())
            seen.setdefault("synced_at_resume", synced_now())
            real_resume()
            seen.setdefault("frozen", gc.get_freeze_count())

        process.resume_gc = resume

        def probe():
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(url, timeout=5) as reply:
                        status = json.load(reply)
                    if "kubernetes" in status.get("synced_sources", []):
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            seen["synced"] = "kubernetes" in status.get("synced_sources", [])
            seen["loaded"] = sorted(m for m in {list(NOT_ON_THE_KUBERNETES_START_PATH)!r}
                                    if m in sys.modules)
            while not gc.isenabled() and time.monotonic() < deadline:
                time.sleep(0.05)  # the main thread looks every 0.25 s
            seen["gc_running"] = gc.isenabled()
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=probe, daemon=True).start()
        code = cli.main(["run", "--config", {str(cluster_config)!r},
                         "--runtime-dir", {str(tmp_path / "run")!r}])
        print(json.dumps({{**seen, "code": code, "gc_after": gc.isenabled()}}))
        """
    )
    assert report["synced"] is True and report["code"] == 0
    assert report["loaded"] == []
    assert report["paused_during_start"] is True
    assert report["synced_at_resume"] is True  # paused through the first sync
    assert isinstance(report["frozen"], int) and report["frozen"] > 10_000  # the modules
    assert report["gc_running"] is True and report["gc_after"] is True


def test_the_collectors_pause_ends_at_its_limit_when_the_cluster_never_syncs(
    tmp_path: Path,
) -> None:
    """An API that never answers (a listener that accepts and says nothing) must not leave
    the daemon without a collector: the pause ends ``GC_PAUSE_LIMIT`` after the start
    (1 s here), not synced."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        kubeconfig = FakeKubeAPI().write_kubeconfig(
            tmp_path / "kubeconfig", f"http://127.0.0.1:{silent.getsockname()[1]}"
        )
        config = daemon_config(kubeconfig, http={"listen": f"127.0.0.1:{free_port()}"})
        config["vips"]["interface"] = None
        path = tmp_path / "kvip-bgp.yaml"
        path.write_text(yaml.safe_dump(config))
        report = run(
            f"""\
            import gc, json, os, signal, threading, time
            from kvip_bgp import cli, process

            process.GC_PAUSE_LIMIT = 1.0
            seen = {{}}

            def probe():
                started = time.monotonic()
                while time.monotonic() - started < 0.5:
                    time.sleep(0.05)
                seen["paused_at_half"] = not gc.isenabled()
                while not gc.isenabled() and time.monotonic() - started < 20:
                    time.sleep(0.05)
                seen["resumed_after"] = time.monotonic() - started
                seen["gc_running"] = gc.isenabled()
                os.kill(os.getpid(), signal.SIGTERM)

            threading.Thread(target=probe, daemon=True).start()
            code = cli.main(["run", "--config", {str(path)!r},
                             "--runtime-dir", {str(tmp_path / "run")!r}])
            print(json.dumps({{**seen, "code": code}}))
            """
        )
    assert report["paused_at_half"] is True
    assert report["gc_running"] is True
    assert 0.5 < float(str(report["resumed_after"])) < 5.0


@pytest.fixture
def vip_netns() -> Iterator[Netns]:
    """A namespace with ``vip0`` (a veth end: this kernel may lack the dummy driver)."""
    require_lab()
    cleanup(NETNS_PREFIX)
    ns = Netns.create(f"{NETNS_PREFIX}{os.getpid()}")
    try:
        ns.run("ip", "link", "add", "vip0", "type", "veth", "peer", "name", "vip1")
        ns.run("ip", "link", "set", "vip0", "up")
        yield ns
    finally:
        ns.delete()


@pytest.mark.lab
def test_the_default_binding_starts_without_iproute(tmp_path: Path, vip_netns: Netns) -> None:
    """``vips.bind: by-family`` (the default) on an interface, in a namespace: the daemon
    finds the interface, dumps what is there, binds an IPv4 VIP as a local route and an
    IPv6 one as an address, and has not imported ``pyroute2.iproute`` by then."""
    api = FakeKubeAPI()
    url = api.start(sock=listen_socket_in_netns(vip_netns.name, "127.0.0.1"))
    try:
        api.put(node())
        api.put(service("web", "198.51.100.10,2001:db8:100::10"))
        api.put(endpoint_slice("web", [NODE_NAME]))
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig", url)
        listen = "127.0.0.1:9472"  # the namespace's own
        config = daemon_config(kubeconfig, http={"listen": listen})
        config["vips"]["interface"] = "vip0"
        path = tmp_path / "kvip-bgp.yaml"
        path.write_text(yaml.safe_dump(config))
        report = run(
            f"""\
            import json, os, signal, subprocess, sys, threading, time, urllib.request
            from kvip_bgp import cli

            seen = {{}}
            wanted = ["198.51.100.10", "2001:db8:100::10"]

            def probe():
                deadline = time.monotonic() + 30
                bound = []
                while time.monotonic() < deadline and bound != wanted:
                    try:
                        with urllib.request.urlopen("http://{listen}/status", timeout=5) as r:
                            bound = json.load(r).get("bound", [])
                    except OSError:
                        pass
                    time.sleep(0.05)
                seen["bound"] = bound
                seen["iproute"] = "pyroute2.iproute" in sys.modules
                show = lambda *a: subprocess.run(a, capture_output=True, text=True).stdout
                seen["routes"] = show("ip", "route", "show", "table", "local", "dev", "vip0")
                seen["addresses"] = show("ip", "addr", "show", "dev", "vip0")
                os.kill(os.getpid(), signal.SIGTERM)

            threading.Thread(target=probe, daemon=True).start()
            code = cli.main(["run", "--config", {str(path)!r},
                             "--runtime-dir", {str(tmp_path / "run")!r}])
            print(json.dumps({{**seen, "code": code}}))
            """,
            netns=vip_netns.name,
        )
    finally:
        api.stop()
    assert report["bound"] == ["198.51.100.10", "2001:db8:100::10"], report
    assert report["code"] == 0
    assert "local 198.51.100.10 proto 248 scope host" in str(report["routes"]), report
    assert "2001:db8:100::10/128" in str(report["addresses"]), report
    assert report["iproute"] is False


@pytest.mark.lab
def test_creating_a_missing_interface_imports_iproute_then(vip_netns: Netns) -> None:
    """The rare path keeps IPRoute: a missing ``vips.interface`` is created as a dummy
    link (or, on a kernel without the dummy driver, refused with what to do)."""
    report = run(
        """\
        import json, sys
        from kvip_bgp.netif.addresses import FamilyTable
        from kvip_bgp.netif.netlink import InterfaceError
        before = "pyroute2.iproute" in sys.modules
        try:
            FamilyTable("vip0", create=True).close()  # there: nothing to create
            present = "pyroute2.iproute" in sys.modules
            table = FamilyTable("kvd0", create=True)
            error = None
            created = table.owned() == set()
            table.close()
        except InterfaceError as exc:
            error, created = str(exc), False
        print(json.dumps({"iproute": [before, present, "pyroute2.iproute" in sys.modules],
                          "error": error, "created": created}))
        """,
        netns=vip_netns.name,
    )
    assert report["iproute"] == [False, False, True]
    links = vip_netns.run("ip", "-o", "link", "show").stdout
    if report["error"] is None:
        assert report["created"] is True
        assert "kvd0" in links and "state UNKNOWN" in links, links
    else:
        assert "could not be created as a dummy link" in str(report["error"])
        assert "kvd0" not in links


def test_a_bad_config_is_reported_whole_and_leaves_the_gc_running(tmp_path: Path) -> None:
    """The lazily imported loader reports every problem as before; the pause ends too."""
    path = tmp_path / "bad.yaml"
    path.write_text("node_name: n\nbgp: {asn: 0, peers: []}\ngraceful_restrat: 1\n")
    report = run(
        f"""\
        import contextlib, gc, io, json
        from kvip_bgp import cli
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = cli.main(["run", "--config", {str(path)!r},
                             "--runtime-dir", {str(tmp_path / "run")!r}])
        print(json.dumps({{"code": code, "err": err.getvalue(), "gc": gc.isenabled()}}))
        """
    )
    assert report["code"] == 1 and report["gc"] is True
    err = str(report["err"])
    assert "problem(s):" in err
    assert "graceful_restrat" in err and "bgp.asn" in err


def test_the_manifest_help_names_the_control_planes_default_ca() -> None:
    """``commands`` names the kubeadm CA without importing ``controlplane`` for it."""
    from kvip_bgp.configfile import commands, controlplane

    assert commands.KUBEADM_CA == controlplane.KUBEADM_CA
