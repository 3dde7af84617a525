"""``kvip-bgp run`` in the DaemonSet's usual mode, each start in a fresh interpreter: what
it imports on its way to the first route (not the modules of other modes, not
pyroute2's ``IPRoute``), and the cyclic collector's pause through the cluster's first
sync (docs/performance.md).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import require_lab
from test_lean_imports import run

from kvip_bgp.testing.fakeapi import FakeKubeAPI
from kvip_bgp.testing.netlab import Netns, add_vip_link, fresh_netns, listen_socket_in_netns
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.scenario import daemon_config

NETNS_PREFIX = "kvsp-"  # a prefix of its own: cleanup removes every namespace of a prefix

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
    with fresh_netns(NETNS_PREFIX) as ns:
        add_vip_link(ns)
        yield ns


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
