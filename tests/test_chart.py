"""The Helm chart, rendered by real Helm and checked against the Kubernetes schemas.

Helm comes from the PyPI wheel ``helm-python-sdk`` (Helm's Go SDK as a C library, called
through ctypes: ``helm template`` without a ``helm`` binary). Every rendered object is
validated with ``kubernetes-validate``, which ships the Kubernetes JSON schemas and works
offline. The ServiceMonitor is a CRD with no shipped schema; its shape is asserted here.

Neither package is installed by this test: ``make install`` does that. A missing one skips
the test on a laptop and fails it under ``CI=true``, like ``conftest.require_lab``.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kvip_bgp.configfile import load as config_module
from kvip_bgp.runtime.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "kvip-bgp"
RELEASE = "kvip"
NAMESPACE = "lb-system"
FULLNAME = "kvip-kvip-bgp"
NODE_IP = "192.0.2.10"

# The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest whose
# schemas kubernetes-validate ships are both checked.
KUBE_VERSIONS = ("1.26.0", "latest")

MINIMAL: dict[str, Any] = {
    "bgp": {"peers": [{"address": "192.0.2.1", "asn": 64500}]},
    "vips": {"allowed": ["198.51.100.0/24"]},
}

# Everything switched on: per-rack peers with MD5 from a created Secret, a 4-byte ASN,
# listening on 179, ServiceMonitor, dashboard, control-plane nodes.
FULL: dict[str, Any] = {
    "bgp": {
        "asn": 4200000000,
        "listen": True,
        "peers": [
            {
                "address": "192.0.2.1",
                "asn": 64500,
                "node_selector": {"topology.kubernetes.io/zone": "rack1"},
                "passwordSecretKey": "tor-rack1",
            },
            {
                "address": "192.0.2.129",
                "asn": 64501,
                "port": 1179,
                "ttl": 2,
                "node_selector": {"topology.kubernetes.io/zone": "rack2"},
                "passwordSecretKey": "tor-rack2",
                "next_hop_v6": "2001:db8:ffff::1",
            },
        ],
        "passwords": {"values": {"tor-rack1": "rack1-secret", "tor-rack2": "rack2-secret"}},
    },
    "advertise": {"communities": ["64512:100"], "local_preference": 200, "med": 10},
    "vips": {
        "allowed": [
            "198.51.100.0/24",
            {"cidr": "2001:db8:100::/64", "namespaces": ["team-a"]},
        ]
    },
    "ipam": {
        "pools": [
            {"name": "public", "addresses": ["198.51.100.64/27", "2001:db8:100::/112"]},
            {
                "name": "team-a",
                "addresses": ["198.51.100.128-198.51.100.159"],
                "namespaces": ["team-a"],
                "service_selector": {"tier": "web"},
                "auto_assign": False,
                "avoid_buggy_ips": True,
                "priority": 10,
            },
        ]
    },
    "kubernetes": {"withdrawWhenCordoned": True},
    "shutdownTimeout": 25,
    "serviceMonitor": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "tolerateControlPlane": True,
    "resources": {
        "requests": {"cpu": "20m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "200Mi"},
    },
}


def _need_module(name: str, package: str) -> ModuleType:
    """Import ``name``; skip without it, but fail under CI=true (as require_lab does)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        message = f"chart test needs the PyPI package {package} (module {name})"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: a missing part is a failure, not a skip)")
        pytest.skip(message)


@pytest.fixture(scope="module")
def helm() -> ModuleType:
    return _need_module("helm_python", "helm-python-sdk")


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return _need_module("kubernetes_validate", "kubernetes-validate")


def render_raw(helm: ModuleType, values: dict[str, Any] | None) -> dict[str, str]:
    chart = helm.Chart.load(str(CHART))
    rendered: dict[str, str] = chart.render(
        copy.deepcopy(values), name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return rendered


def render(helm: ModuleType, values: dict[str, Any] | None) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path, text in sorted(render_raw(helm, values).items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def containers(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["config"]
    assert [c["name"] for c in pod["containers"]] == ["kvip-bgp", "config-sync"]
    return pod["initContainers"][0], pod["containers"][0]


def config_text(objects: list[dict[str, Any]]) -> str:
    text: str = one(objects, "ConfigMap", FULLNAME)["data"]["config.yaml"]
    return text


def rule_set(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    triples = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no resourceNames etc.
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    triples.add((group, resource, verb))
    return triples


# --------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", ["minimal", "full", "existing-secret"])
def test_every_object_matches_the_kubernetes_schema(
    helm: ModuleType, kubernetes_validate: ModuleType, variant: str, kube_version: str
) -> None:
    values = {
        "minimal": MINIMAL,
        "full": FULL,
        "existing-secret": {
            **MINIMAL,
            "bgp": {
                "peers": [{"address": "192.0.2.1", "asn": 64500, "passwordSecretKey": "tor"}],
                "passwords": {"existingSecret": "bgp-md5"},
            },
        },
    }[variant]
    version = kubernetes_validate.latest_version() if kube_version == "latest" else kube_version
    objects = render(helm, values)
    assert objects
    for obj in objects:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD: no shipped schema; see test_service_monitor_only_when_enabled
        kubernetes_validate.validate(obj, version, strict=True)

    base = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    expected = {
        "minimal": base,
        "existing-secret": base,  # the chart must not create a Secret it was told exists
        "full": sorted([*base, "ConfigMap", "Secret", "Service", "ServiceMonitor"]),
    }[variant]
    assert kinds(objects) == expected


def test_helm_lint_is_clean(helm: ModuleType) -> None:
    report = helm.lint(str(CHART), copy.deepcopy(FULL), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert problems == []


def test_missing_required_values_stop_the_render(helm: ModuleType) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"bgp\.peers: list at least one BGP peer"):
        render_raw(helm, None)
    with pytest.raises(helm.HelmRenderError, match=r"vips\.allowed"):
        render_raw(helm, {"bgp": MINIMAL["bgp"]})
    no_secret = copy.deepcopy(MINIMAL)
    no_secret["bgp"]["peers"][0]["passwordSecretKey"] = "tor"
    with pytest.raises(helm.HelmRenderError, match=r"bgp\.peers\[0\]\.passwordSecretKey"):
        render_raw(helm, no_secret)
    wrong_key = copy.deepcopy(no_secret)
    wrong_key["bgp"]["passwords"] = {"values": {"other": "x"}}
    with pytest.raises(helm.HelmRenderError, match=r'"tor" is not a key'):
        render_raw(helm, wrong_key)


# --------------------------------------------------------------------------- RBAC


def test_rbac_is_exactly_least_privilege(helm: ModuleType) -> None:
    for values in (MINIMAL, FULL):
        objects = render(helm, values)
        cluster_role = one(objects, "ClusterRole")
        # Pools (FULL): the allocator also patches the Service's pool annotation.
        allocation = {("", "services", "patch")} if values is FULL else set()
        assert rule_set(cluster_role["rules"]) == allocation | {
            ("", "services", "get"),
            ("", "services", "list"),
            ("", "services", "watch"),
            ("", "nodes", "get"),
            ("", "nodes", "list"),
            ("", "nodes", "watch"),
            ("discovery.k8s.io", "endpointslices", "get"),
            ("discovery.k8s.io", "endpointslices", "list"),
            ("discovery.k8s.io", "endpointslices", "watch"),
            ("", "services/status", "patch"),
            ("", "events", "create"),
            ("", "events", "patch"),
        }
        role = one(objects, "Role")
        assert role["metadata"]["namespace"] == NAMESPACE
        assert rule_set(role["rules"]) == {
            ("coordination.k8s.io", "leases", "get"),
            ("coordination.k8s.io", "leases", "create"),
            ("coordination.k8s.io", "leases", "update"),
        }
        # Exactly these two roles, bound to the speakers' ServiceAccount only.
        assert kinds([o for o in objects if o["kind"].endswith("Role")]) == [
            "ClusterRole",
            "Role",
        ]
        account = one(objects, "ServiceAccount")["metadata"]
        subject = {"kind": "ServiceAccount", "name": account["name"], "namespace": NAMESPACE}
        for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
            binding = one(objects, kind)
            assert binding["subjects"] == [subject]
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": role_kind,
                "name": FULLNAME,
            }
        assert one(objects, "RoleBinding")["metadata"]["namespace"] == NAMESPACE
        pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["name"]


# --------------------------------------------------------------------------- the pod


def test_security_context_is_exact(helm: ModuleType) -> None:
    init, main = containers(render(helm, MINIMAL))
    assert main["securityContext"] == {
        "runAsUser": 0,
        "runAsNonRoot": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]},
    }
    assert init["securityContext"] == {
        "runAsUser": 0,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "ports" not in init and all(p["name"] != "bgp" for p in main["ports"])
    assert all(e["name"] != "exabgp_tcp_bind" for e in main["env"])

    _, listening = containers(render(helm, FULL))  # bgp.listen: true
    assert listening["securityContext"]["capabilities"] == {
        "drop": ["ALL"],
        "add": ["NET_ADMIN", "NET_BIND_SERVICE"],
    }
    assert {"name": "bgp", "containerPort": 179, "protocol": "TCP"} in listening["ports"]
    assert {"name": "exabgp_tcp_bind", "value": "$(NODE_IP)"} in listening["env"]


def test_daemonset_shape(helm: ModuleType) -> None:
    objects = render(helm, MINIMAL)
    daemonset = one(objects, "DaemonSet")
    spec = daemonset["spec"]
    pod = spec["template"]["spec"]
    init, main = containers(objects)

    assert spec["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["terminationGracePeriodSeconds"] == 20  # shutdownTimeout 10 + 10
    assert "tolerations" not in pod

    downward = {
        "NODE_NAME": {"fieldRef": {"fieldPath": "spec.nodeName"}},
        "NODE_IP": {"fieldRef": {"fieldPath": "status.hostIP"}},
    }
    for container in (init, main):
        env = {e["name"]: e.get("valueFrom") for e in container["env"]}
        assert {k: env.get(k) for k in downward} == downward
    # The daemon takes the status-writer Lease in its own namespace (POD_NAMESPACE).
    main_env = {e["name"]: e.get("valueFrom") for e in main["env"]}
    assert main_env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}

    assert main["args"] == [
        "run",
        "--config",
        "/etc/kvip-bgp/config.yaml",
        "--runtime-dir",
        "/run/kvip-bgp",
    ]
    assert main["ports"] == [{"name": "http", "containerPort": 9472, "protocol": "TCP"}]
    # http.listen is 127.0.0.1 (see the ConfigMap test): the kubelet probes from the node.
    assert main["livenessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": "http",
        "host": "127.0.0.1",
    }
    assert main["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "http",
        "host": "127.0.0.1",
    }
    assert main["resources"] == {
        "requests": {"cpu": "50m", "memory": "96Mi"},
        "limits": {"memory": "256Mi"},
    }

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    for path in ("/run/kvip-bgp", "/tmp", "/etc/kvip-bgp"):
        assert volumes[mounts[path]["name"]]["emptyDir"]["medium"] == "Memory", path
    assert mounts["/etc/kvip-bgp"]["readOnly"] is True
    assert volumes["config-template"]["configMap"]["name"] == FULLNAME
    assert "md5-passwords" not in volumes  # no peer has a password


def test_daemonset_options(helm: ModuleType) -> None:
    objects = render(helm, FULL)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    _, main = containers(objects)
    assert pod["terminationGracePeriodSeconds"] == 35  # shutdownTimeout 25 + 10
    assert pod["tolerations"] == [
        {
            "key": "node-role.kubernetes.io/control-plane",
            "operator": "Exists",
            "effect": "NoSchedule",
        }
    ]
    assert main["resources"] == FULL["resources"]
    # The metrics endpoint binds the node's address: the probes use the pod IP, which with
    # hostNetwork is that address.
    assert "host" not in main["livenessProbe"]["httpGet"]
    assert "host" not in main["readinessProbe"]["httpGet"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["md5-passwords"]["secret"] == {
        "secretName": f"{FULLNAME}-md5",
        "defaultMode": 0o400,
    }
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-md5"
    assert secret["stringData"] == FULL["bgp"]["passwords"]["values"]


# --------------------------------------------------------------------------- the config


def run_init_container(
    objects: list[dict[str, Any]], tmp_path: Path, node_ip: str = NODE_IP
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the init container's real script here, its mount points moved under tmp_path.

    The ConfigMap and the Secret are written where the DaemonSet mounts them; the script
    substitutes @NODE_IP@ and runs ``kvip-bgp check-config`` (from this venv).
    """
    init, main = containers(objects)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}

    def local(path: str) -> Path:
        return tmp_path / path.lstrip("/")

    for mount in init["volumeMounts"]:
        directory = local(mount["mountPath"])
        directory.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            configmap = one(objects, "ConfigMap", volume["configMap"]["name"])
            for key, text in configmap["data"].items():
                (directory / key).write_text(text.replace("/etc/", f"{tmp_path}/etc/"))
        elif "secret" in volume:
            name = volume["secret"]["secretName"]
            secret = next(
                (o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == name),
                None,
            )
            assert secret is not None, f"no Secret {name} rendered"
            for key, password in secret["stringData"].items():
                (directory / key).write_text(password)
    # The main container sees the same files at the same paths.
    init_mounts = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
    for mount in main["volumeMounts"]:
        if mount["mountPath"].startswith("/etc/kvip-bgp"):
            assert init_mounts[mount["mountPath"]] == mount["name"]

    assert init["command"] == ["/bin/sh", "-c"]
    script = init["args"][0].replace("/etc/", f"{tmp_path}/etc/")
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "NODE_IP": node_ip,
        "NODE_NAME": "worker-7",
        # The code under test, not whatever the venv's editable install points at.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    return result, local("/etc/kvip-bgp/config.yaml")


def test_configmap_is_a_valid_kvip_bgp_config(helm: ModuleType, tmp_path: Path) -> None:
    objects = render(helm, MINIMAL)
    document = yaml.safe_load(config_text(objects))
    assert "node_name" not in document  # taken from $NODE_NAME
    assert document["bgp"]["router_id"] == "@NODE_IP@"
    assert document["http"] == {"listen": "127.0.0.1:9472"}

    result, rendered = run_init_container(objects, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ok (1 peer(s), 1 allowed range(s), 0 static VIP(s))" in result.stdout

    config = config_module.load(rendered, environ={"NODE_NAME": "worker-7"})
    assert config.node_name == "worker-7"
    assert str(config.bgp.router_id) == NODE_IP
    assert config.bgp.asn == 64512
    assert [str(p.address) for p in config.bgp.peers] == ["192.0.2.1"]
    assert config.http.listen == ("127.0.0.1", 9472)
    assert config.kubernetes.enabled
    assert config.kubernetes.load_balancer_class == "kvip-bgp.io/bgp"
    assert config.vips.interface == "lo"
    assert config.shutdown_timeout == 10


def test_full_config_parses_with_passwords_and_racks(helm: ModuleType, tmp_path: Path) -> None:
    objects = render(helm, FULL)
    text = config_text(objects)
    assert "e+" not in text  # a 4-byte ASN must not come out as a float (4.2e+09)
    assert "Secret" not in text and "secret\n" not in text

    result, rendered = run_init_container(objects, tmp_path)
    assert result.returncode == 0, result.stderr
    config = config_module.load(rendered, environ={"NODE_NAME": "worker-7"})
    assert config.bgp.asn == 4200000000
    rack1, rack2 = config.bgp.peers
    assert rack1.node_selector == (("topology.kubernetes.io/zone", "rack1"),)
    assert rack2.node_selector == (("topology.kubernetes.io/zone", "rack2"),)
    assert (rack2.port, rack2.ttl, str(rack2.next_hop_v6)) == (1179, 2, "2001:db8:ffff::1")
    assert rack1.password == "rack1-secret" and rack2.password == "rack2-secret"
    assert rack1.password_file == tmp_path / "etc/kvip-bgp/secrets/tor-rack1"
    assert config.advertise.local_preference == 200 and config.advertise.med == 10
    assert [str(c) for c in config.advertise.communities] == ["64512:100"]
    assert config.vips.allowed[1].namespaces == ("team-a",)
    assert config.kubernetes.withdraw_when_cordoned is True
    assert config.shutdown_timeout == 25
    public, team = config.ipam
    assert [str(r) for r in public.ranges] == [
        "198.51.100.64-198.51.100.95",
        "2001:db8:100::-2001:db8:100::ffff",
    ]
    assert (team.priority, team.auto_assign, team.avoid_buggy_ips) == (10, False, True)
    assert team.namespaces == {"team-a"} and team.service_selector == (("tier", "web"),)
    # serviceMonitor.enabled: the server binds the node's address so it can be scraped.
    assert config.http.listen == (NODE_IP, 9472)


def test_router_id_follows_the_node_unless_set(helm: ModuleType, tmp_path: Path) -> None:
    explicit = copy.deepcopy(MINIMAL)
    explicit["bgp"]["routerId"] = "203.0.113.9"
    objects = render(helm, explicit)
    assert "@NODE_IP@" not in config_text(objects)
    result, rendered = run_init_container(objects, tmp_path / "explicit")
    assert result.returncode == 0, result.stderr
    assert str(config_module.load(rendered).bgp.router_id) == "203.0.113.9"

    # On an IPv6-only node there is no IPv4 address to take: the init container stops the
    # pod and says which key to set.
    result, _ = run_init_container(render(helm, MINIMAL), tmp_path / "v6", node_ip="fd00::7")
    assert result.returncode == 1
    assert "bgp.router_id: must be an IPv4 address" in result.stderr


def test_vips_interface_null_means_do_not_bind(helm: ModuleType, tmp_path: Path) -> None:
    values = copy.deepcopy(MINIMAL)
    values["vips"]["interface"] = None
    result, rendered = run_init_container(render(helm, values), tmp_path)
    assert result.returncode == 0, result.stderr
    assert config_module.load(rendered).vips.interface is None


@pytest.mark.parametrize("bind", ["by-family", "address", "local-route"])
def test_vips_bind_reaches_the_config(helm: ModuleType, tmp_path: Path, bind: str) -> None:
    values = copy.deepcopy(MINIMAL)
    values["vips"]["bind"] = bind
    result, rendered = run_init_container(render(helm, values), tmp_path)
    assert result.returncode == 0, result.stderr
    assert config_module.load(rendered).vips.bind == bind


# --------------------------------------------------------------------------- monitoring


def test_service_monitor_only_when_enabled(helm: ModuleType) -> None:
    objects = render(helm, MINIMAL)
    assert not [o for o in objects if o["kind"] in ("ServiceMonitor", "Service")]

    objects = render(helm, FULL)
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9472, "targetPort": "http", "protocol": "TCP"}
    ]
    pod_labels = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    # A ServiceMonitor cannot scrape a server bound to the node's loopback.
    loopback = copy.deepcopy(FULL)
    loopback["http"] = {"bindAddress": "127.0.0.1"}
    with pytest.raises(helm.HelmRenderError, match=r"serviceMonitor\.enabled"):
        render_raw(helm, loopback)


def _exported_sample_names() -> set[str]:
    """Every sample name kvip-bgp's /metrics can expose, from the real registry."""
    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    names = set()
    for family in Metrics().registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def test_grafana_dashboard(helm: ModuleType) -> None:
    assert not [o for o in render(helm, MINIMAL) if o["metadata"]["name"].endswith("-dashboard")]

    configmap = one(render(helm, FULL), "ConfigMap", f"{FULLNAME}-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (CHART / "dashboards" / "kvip-bgp.json").read_text()
    assert json.loads(configmap["data"]["kvip-bgp.json"]) == json.loads(shipped)

    dashboard = json.loads(shipped)
    assert dashboard["uid"] == "kvip-bgp"
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    queries = " ".join(expressions) + " " + json.dumps(dashboard["templating"])
    used = set(re.findall(r"\bkvip_bgp_[a-z_]+", queries))
    required = {
        "kvip_bgp_session_up",
        "kvip_bgp_prefixes_announced",
        "kvip_bgp_updates_sent_total",
        "kvip_bgp_exabgp_command_errors_total",
        "kvip_bgp_exabgp_restarts_total",
        "kvip_bgp_reconcile_duration_seconds_bucket",
        "kvip_bgp_queue_depth",
        "kvip_bgp_watch_restarts_total",
        "kvip_bgp_services_refused",
        "kvip_bgp_addresses_bound",
        "kvip_bgp_health_check_up",
    }
    assert required <= used
    # Every metric the dashboard queries is one the daemon really exports.
    assert used <= _exported_sample_names()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------------ live reload


def restart_checksum(helm: ModuleType, values: dict[str, Any]) -> str:
    annotations = one(render(helm, values), "DaemonSet")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert set(annotations) == {"checksum/restart-only"}
    return str(annotations["checksum/restart-only"])


@pytest.mark.parametrize(
    ("edit", "rolls"),
    [
        ({"advertise": {"communities": ["64512:7"]}}, False),
        ({"vips": {"allowed": ["198.51.100.0/25"]}}, False),
        ({"bgp": {"peers": [{"address": "192.0.2.9", "asn": 64501}]}}, False),
        ({"bgp": {"passwords": {"values": {"tor": "x"}}}}, False),
        ({"log": {"level": "debug"}}, False),
        ({"bgp": {"asn": 64999}}, True),
        ({"bgp": {"routerId": "192.0.2.77"}}, True),
        ({"vips": {"interface": "eth9"}}, True),
        ({"log": {"format": "console"}}, True),
    ],
)
def test_only_restart_only_keys_roll_the_daemonset(
    helm: ModuleType, edit: dict[str, Any], rolls: bool
) -> None:
    """Everything else is reloaded live; a checksum over it would restart every node."""
    edited = copy.deepcopy(MINIMAL)
    for section, values in edit.items():
        edited.setdefault(section, {}).update(values)
    assert (restart_checksum(helm, edited) != restart_checksum(helm, MINIMAL)) == rolls


def test_config_sync_rewrites_the_copy_atomically_only_when_it_changed(
    helm: ModuleType, tmp_path: Path
) -> None:
    objects = render(helm, MINIMAL)
    pod = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    sync = next(c for c in pod["containers"] if c["name"] == "config-sync")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        for mount in container["volumeMounts"]:
            assert "subPath" not in mount, "a subPath mount never sees a ConfigMap edit"
    mounts = {m["mountPath"]: m["name"] for m in sync["volumeMounts"]}
    assert "configMap" in volumes[mounts["/etc/kvip-bgp-template"]]
    (tmp_path / "etc/kvip-bgp-template").mkdir(parents=True)
    (tmp_path / "etc/kvip-bgp").mkdir(parents=True)
    template = tmp_path / "etc/kvip-bgp-template/config.yaml"
    copy_ = tmp_path / "etc/kvip-bgp/config.yaml"
    # One turn of the loop: the script with its sleep turned into an exit.
    script = sync["args"][0].replace("/etc/", f"{tmp_path}/etc/").replace("sleep 5", "exit 0")
    assert script != sync["args"][0]

    def turn() -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NODE_IP": NODE_IP}
        subprocess.run(["/bin/sh", "-c", script], env=env, check=True, timeout=10)

    template.write_text(config_text(objects))
    turn()
    assert "@NODE_IP@" not in copy_.read_text() and NODE_IP in copy_.read_text()
    inode = copy_.stat().st_ino
    turn()
    assert copy_.stat().st_ino == inode, "an unchanged file was rewritten"
    template.write_text(config_text(objects).replace("198.51.100.0/24", "198.51.100.0/25"))
    turn()
    assert "198.51.100.0/25" in copy_.read_text()
    assert copy_.stat().st_ino != inode, "changed in place, not replaced"
    assert sorted(p.name for p in copy_.parent.iterdir()) == ["config.yaml"]
