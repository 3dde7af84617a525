"""Hostile Services end to end, and the MD5 password never leaking.

Real chain (fake API over HTTP → kvip-bgp → ExaBGP → FRR) in a ``kvf-`` namespace lab.
FRR's table is sampled for the whole test, so "FRR never sees it" means never, not just
"not at the end".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kvip_bgp.testing.frr import FrrNeighbor
from kvip_bgp.testing.netlab import Lab, wait_until
from kvip_bgp.testing.objects import NODE_NAME, endpoint_slice, node, service
from kvip_bgp.testing.procfs import exabgp_pid
from kvip_bgp.testing.scenario import NODE_ASN, RouteSampler, Scenario, daemon_config

pytestmark = pytest.mark.lab

PREFIX = "kvf-"
GOOD = "198.51.100.10"
KVIP = "kvip-bgp.io/"


def _event_reasons(scenario: Scenario) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for event in scenario.api.events():
        involved = event.get("involvedObject") or {}
        key = f"{involved.get('namespace')}/{involved.get('name')}"
        result.setdefault(key, set()).add(str(event.get("reason")))
    return result


def _put_with_slice(scenario: Scenario, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    scenario.api.put(obj)
    scenario.api.put(endpoint_slice(meta["name"], [NODE_NAME], namespace=meta["namespace"]))


# ---------------------------------------------------------------------------- injection

INJECTIONS: dict[str, tuple[str | None, dict[str, str]]] = {
    # name: (VIP annotation or None, other annotations)
    "nl-vip": ("198.51.100.11\nannounce route 203.0.113.66/32 next-hop self", {}),
    "crlf-vip": ("198.51.100.11\r\nannounce route 203.0.113.66/32 next-hop self", {}),
    "nl-community": (
        "198.51.100.12",
        {KVIP + "communities": "64512:1\nannounce route 203.0.113.67/32 next-hop self"},
    ),
    "bracket-community": (
        "198.51.100.13",
        {KVIP + "communities": "64512:1] nlri 203.0.113.68/32 ["},
    ),
    "semicolon-large": (
        "198.51.100.14",
        {KVIP + "large-communities": "64512:1:1; announce route 203.0.113.69/32 next-hop self"},
    ),
    "hash-med": ("198.51.100.15", {KVIP + "med": "5 # comment"}),
    "withdraw-lp": (
        "198.51.100.16",
        {KVIP + "local-preference": "100\nwithdraw route 198.51.100.10/32"},
    ),
    "prepend-nlri": ("198.51.100.17", {KVIP + "as-path-prepend": "1 ] nlri 203.0.113.70/32"}),
    "long-community": ("198.51.100.18", {KVIP + "communities": "64512:1," * 20000 + "64512:2"}),
    "long-vip": ("198.51.100.19," * 200 + "198.51.100.20", {}),
    "zone-vip": ("2001:db8:100::5%lo\nannounce route 2001:db8:100::66/128 next-hop self", {}),
    "semicolon-vip": ("198.51.100.21; announce route 203.0.113.71/32 next-hop self", {}),
    "hash-vip": ("198.51.100.22 # 203.0.113.72", {}),
    "bracket-vip": ("[198.51.100.23]", {}),
}


def test_injection_attempts_are_refused_with_events(lab_required: None) -> None:
    with Scenario(prefix=PREFIX) as scenario:
        scenario.api.put(node())
        _put_with_slice(scenario, service("good", GOOD))
        for name, (vip, notes) in INJECTIONS.items():
            _put_with_slice(scenario, service(name, vip, annotations=notes))
        with RouteSampler(scenario, 0.2, ("ipv4", "ipv6")) as sampler:
            scenario.start_daemon()
            scenario.wait_routes(lambda r: f"{GOOD}/32" in r, "the valid Service", timeout=30)
            wanted = {f"default/{name}" for name in INJECTIONS}
            wait_until(
                lambda: all(
                    "InvalidAnnotation" in _event_reasons(scenario).get(key, set())
                    for key in wanted
                ),
                20,
                what="an InvalidAnnotation Event on every injected Service",
            )
            time.sleep(2)
            # Watched long enough to mean something, however fast the daemon started.
            wait_until(lambda: len(sampler.samples) > 10, 10, what="more than 10 route samples")
        assert sampler.seen == {f"{GOOD}/32"}, sampler.seen
        reasons = {s["service"]: s["reason"] for s in scenario.status()["services"]}
        for key in wanted:
            assert str(reasons[key]).startswith("invalid-annotation:"), (key, reasons[key])
        assert GOOD in scenario.bound() and len(scenario.bound()) == 1
        scenario.assert_daemon_alive()


# ------------------------------------------------------------------------------ hijack

HIJACK_ALLOWED = [
    "198.51.100.0/25",
    {"cidr": "198.51.100.128/25", "namespaces": ["team-a"]},
    # Wide ranges on purpose, so each guard below is tested on its own and not just
    # "outside vips.allowed".
    "192.0.2.0/24",
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/4",
    "2001:db8:100::/64",
    "fe80::/10",
    "ff00::/8",
]
NODE_EXTRA = "198.51.100.99"


def _hijack_node() -> dict[str, Any]:
    obj = node()
    obj["status"]["addresses"].append({"type": "ExternalIP", "address": NODE_EXTRA})
    return obj


HIJACKS: dict[str, tuple[str, str, str]] = {
    # name: (namespace, VIP text, expected reason prefix)
    "outside": ("default", "203.0.113.7", "outside-allowed-ranges"),
    "node-own": ("default", "192.0.2.1", "forbidden-address"),
    "peer": ("default", "192.0.2.2", "forbidden-address:peer-address"),
    "node-external": ("default", NODE_EXTRA, "forbidden-address:node-address"),
    "zero": ("default", "0.0.0.0", "forbidden-address:unspecified"),
    "multicast": ("default", "224.0.0.5", "forbidden-address:multicast"),
    "link-local": ("default", "169.254.1.1", "forbidden-address:link-local"),
    "loopback": ("default", "127.0.0.1", "forbidden-address:loopback"),
    "v6-link-local": ("default", "fe80::1", "forbidden-address:link-local"),
    "v6-multicast": ("default", "ff02::1", "forbidden-address:multicast"),
    "prefix": ("default", "198.51.100.0/24", "invalid-annotation"),
    "prefix-32": ("default", "198.51.100.30/32", "invalid-annotation"),
    "tenant-b": ("team-b", "198.51.100.130", "outside-allowed-ranges"),
}


def test_hijack_attempts_are_refused(lab_required: None) -> None:
    with Scenario(prefix=PREFIX) as scenario:
        scenario.api.put(_hijack_node())
        _put_with_slice(scenario, service("good", GOOD))
        _put_with_slice(scenario, service("tenant-a", "198.51.100.131", namespace="team-a"))
        for name, (namespace, vip, _reason) in HIJACKS.items():
            _put_with_slice(scenario, service(name, vip, namespace=namespace))
        # The same prefix through spec.loadBalancerIP, not only the annotation.
        _put_with_slice(scenario, service("spec-prefix", spec_ip="198.51.100.0/25"))
        config = daemon_config(scenario.kubeconfig)
        config["vips"]["allowed"] = HIJACK_ALLOWED
        with RouteSampler(scenario, 0.2, ("ipv4", "ipv6")) as sampler:
            scenario.start_daemon(config)
            legit = {f"{GOOD}/32", "198.51.100.131/32"}
            scenario.wait_routes(lambda r: set(r) == legit, "the legitimate VIPs", timeout=30)
            wanted = {f"{ns}/{name}" for name, (ns, _v, _r) in HIJACKS.items()}
            wait_until(
                lambda: all(
                    _event_reasons(scenario).get(key, set()) & {"VIPRefused", "InvalidAnnotation"}
                    for key in wanted
                ),
                20,
                what="a Warning Event on every hijack attempt",
            )
            time.sleep(2)
        assert sampler.seen == legit, sampler.seen
        reasons = {s["service"]: s["reason"] for s in scenario.status()["services"]}
        for name, (namespace, _vip, reason) in HIJACKS.items():
            key = f"{namespace}/{name}"
            assert str(reasons[key]).startswith(reason), (key, reasons[key])
        assert str(reasons["default/spec-prefix"]).startswith("invalid-annotation")
        assert scenario.bound() == {GOOD, "198.51.100.131"}


def test_namespaced_range_inside_a_wider_range_stays_reserved(lab_required: None) -> None:
    """An operator allows 198.51.100.0/24 to everyone but reserves .128/25 for team-a.

    With ``any()`` over the ranges, the wide entry admits team-b into team-a's range:
    the most specific matching range must decide.
    """
    with Scenario(prefix=PREFIX) as scenario:
        scenario.api.put(node())
        _put_with_slice(scenario, service("good", GOOD, namespace="team-b"))
        _put_with_slice(scenario, service("mine", "198.51.100.131", namespace="team-a"))
        _put_with_slice(scenario, service("steal", "198.51.100.130", namespace="team-b"))
        config = daemon_config(scenario.kubeconfig)
        config["vips"]["allowed"] = [
            "198.51.100.0/24",
            {"cidr": "198.51.100.128/25", "namespaces": ["team-a"]},
        ]
        with RouteSampler(scenario, 0.2, ("ipv4", "ipv6")) as sampler:
            scenario.start_daemon(config)
            scenario.wait_routes(
                lambda r: {f"{GOOD}/32", "198.51.100.131/32"} <= set(r), "legit VIPs", 30
            )
            time.sleep(2)
        reasons = {s["service"]: s["reason"] for s in scenario.status()["services"]}
        assert "198.51.100.130/32" not in sampler.seen, (
            f"team-b took a VIP of team-a's reserved range; reason={reasons['team-b/steal']}"
        )


# ------------------------------------------------------------------------------ secrets

PASSWORD = "kvf-Md5-S3cret-9f2c"


@pytest.fixture
def md5_scenario(lab_required: None) -> Iterator[Scenario]:
    neighbors = [FrrNeighbor(Lab.NODE_V4, NODE_ASN, password=PASSWORD)]
    with Scenario(prefix=PREFIX, tor_neighbors=neighbors) as scenario:
        yield scenario


def _kvip(*args: str) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).parent / "kvip-bgp")
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)


def test_md5_password_never_leaks(md5_scenario: Scenario) -> None:
    scenario = md5_scenario
    workdir = scenario.lab.workdir
    pw_file = workdir / "tor1.md5"
    pw_file.write_text(PASSWORD + "\n")
    pw_file.chmod(0o600)
    scenario.api.put(node())
    _put_with_slice(scenario, service("web", GOOD))
    # A refused Service too, so refusal paths (Events, /status reasons) run.
    _put_with_slice(scenario, service("bad", "203.0.113.7"))
    config = daemon_config(scenario.kubeconfig)
    config["bgp"]["peers"][0]["password_file"] = str(pw_file)
    daemon = scenario.start_daemon(config)
    # The session only comes up with the right password on both sides.
    scenario.wait_routes(lambda r: f"{GOOD}/32" in r, "route over the MD5 session", 40)
    assert scenario.frr is not None
    scenario.frr.wait_established(Lab.NODE_V4)

    leaks: dict[str, str] = {}

    def check(where: str, text: str | bytes) -> None:
        data = text if isinstance(text, str) else text.decode("utf-8", "replace")
        if PASSWORD in data:
            leaks[where] = data[max(0, data.find(PASSWORD) - 120) : data.find(PASSWORD) + 40]

    for path in ("/status", "/metrics", "/healthz", "/readyz", "/explain?service=default/web"):
        code, body = scenario.http(path)
        check(f"GET {path} ({code})", body)
    for event in scenario.api.events():
        check(f"Event {event.get('reason')}", str(event))

    config_file = scenario.config_path
    assert config_file is not None
    rendered = _kvip("render-exabgp", "--config", str(config_file))
    assert rendered.returncode == 0, rendered.stderr
    check("render-exabgp stdout", rendered.stdout)
    check("render-exabgp stderr", rendered.stderr)
    shown = _kvip("render-exabgp", "--show-secrets", "--config", str(config_file))
    assert PASSWORD in shown.stdout, "--show-secrets should show it (sanity check)"
    checked = _kvip("check-config", "--config", str(config_file))
    check("check-config", checked.stdout + checked.stderr)

    # Config errors that concern the peer with the password, and others next to it.
    for name, mutate in {
        "bad-asn": lambda c: c["bgp"]["peers"][0].update(asn=0),
        "unknown-key": lambda c: c["bgp"]["peers"][0].update(password=PASSWORD),
        "bad-vips": lambda c: c["vips"].update(allowed=[PASSWORD]),
    }.items():
        broken = yaml.safe_load(config_file.read_text())
        mutate(broken)
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(broken))
        result = _kvip("check-config", "--config", str(path))
        assert result.returncode == 1
        if name != "bad-vips":  # there the operator pasted it into vips.allowed
            check(f"check-config {name}", result.stdout + result.stderr)
    for bad_password in (PASSWORD + '"', PASSWORD + "\\x", PASSWORD * 5):
        bad_file = workdir / "bad.md5"
        bad_file.write_text(bad_password)
        broken = yaml.safe_load(config_file.read_text())
        broken["bgp"]["peers"][0]["password_file"] = str(bad_file)
        path = workdir / "bad-password.yaml"
        path.write_text(yaml.safe_dump(broken))
        result = _kvip("check-config", "--config", str(path))
        assert result.returncode == 1, "an invalid password must be refused"
        check(f"check-config bad password {bad_password[-3:]!r}", result.stdout + result.stderr)

    # Processes: neither the daemon's nor ExaBGP's command line or environment.
    pid = exabgp_pid(daemon.pid)
    assert pid is not None
    for proc in (daemon.pid, pid):
        for part in ("cmdline", "environ"):
            check(f"/proc/{proc}/{part}", Path(f"/proc/{proc}/{part}").read_bytes())
    # The generated ExaBGP config holds it, readable by root only, in a private dir.
    runtime = workdir / "run"
    assert os.stat(runtime).st_mode & 0o077 == 0
    assert os.stat(runtime / "exabgp.conf").st_mode & 0o077 == 0

    # Stop the daemon (shutdown paths log too), then read the whole log.
    assert scenario.stop_daemon() == 0
    check("daemon log", scenario.log_path.read_bytes())
    assert leaks == {}, leaks
