"""Table-driven tests of config parsing: every problem named by its key path, all at once."""

from __future__ import annotations

import copy
import ipaddress
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.configfile import load as config
from kvip_bgp.configfile.reader import ConfigError
from kvip_bgp.domain.config import AllowedRange, BfdTimers, HealthCheck, KernelTable, LogConfig

REPO = Path(__file__).resolve().parent.parent
DELETE = object()


def base() -> dict[str, Any]:
    """The smallest valid document; each case edits a fresh copy."""
    return copy.deepcopy(
        {
            "node_name": "worker-1",
            "bgp": {
                "asn": 64512,
                "peers": [{"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"}],
            },
            "vips": {"allowed": ["198.51.100.0/24", "2001:db8:100::/64"]},
        }
    )


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def edit(document: dict[str, Any], path: str, value: Any) -> None:
    """Set (or with ``DELETE`` remove) ``a.b[0].c`` in ``document``, creating mappings."""
    steps: list[str | int] = [name if name else int(index) for name, index in _STEP.findall(path)]
    node: Any = document
    for step in steps[:-1]:
        node = node[step] if isinstance(step, int) else node.setdefault(step, {})
    last = steps[-1]
    if value is DELETE:
        del node[last]
    elif isinstance(last, int) and last == len(node):
        node.append(value)
    else:
        node[last] = value


def build(edits: dict[str, Any]) -> dict[str, Any]:
    document = base()
    for path, value in edits.items():
        edit(document, path, value)
    return document


def assert_problems(problems: Sequence[str], expected: Sequence[str]) -> None:
    """Each expected substring matches exactly one problem, and no problem is unexpected."""
    unmatched = list(problems)
    for substring in expected:
        hits = [p for p in unmatched if substring in p]
        assert hits, f"no problem contains {substring!r}; got {list(problems)}"
        unmatched.remove(hits[0])
    assert not unmatched, f"unexpected problems {unmatched}; expected only {list(expected)}"


def problems_of(document: Any, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        config.parse(document, environ=environ or {})
    assert caught.value.problems, "a ConfigError must name at least one problem"
    return caught.value.problems


# --------------------------------------------------------------------------- bad documents

BAD_DOCUMENTS = [
    # unknown keys, at every level
    ("unknown-top", {"graceful_restrat": 1}, ["graceful_restrat: unknown key"]),
    ("unknown-bgp", {"bgp.graceful_restrat": 1}, ["bgp.graceful_restrat: unknown key"]),
    ("unknown-peer", {"bgp.peers[0].passwd": "x"}, ["bgp.peers[0].passwd: unknown key"]),
    ("unknown-advertise", {"advertise.community": []}, ["advertise.community: unknown key"]),
    ("unknown-vips", {"vips.ranges": []}, ["vips.ranges: unknown key"]),
    (
        "unknown-allowed-entry",
        {"vips.allowed[0]": {"cidr": "198.51.100.0/24", "ns": ["a"]}},
        ["vips.allowed[0].ns: unknown key"],
    ),
    ("unknown-kubernetes", {"kubernetes.class": "x"}, ["kubernetes.class: unknown key"]),
    ("unknown-kernel-table", {"kernel_table.tabel": 5}, ["kernel_table.tabel: unknown key"]),
    (
        "unknown-static",
        {"static": [{"address": "198.51.100.53", "med": 5}]},
        ["static[0].med: unknown key"],
    ),
    (
        "unknown-check",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": "127.0.0.1:53", "port": 1}}]},
        ["static[0].check.port: unknown key"],
    ),
    ("unknown-http", {"http.port": 80}, ["http.port: unknown key"]),
    ("unknown-log", {"log.colour": True}, ["log.colour: unknown key"]),
    # wrong types
    (
        "top-is-list",
        None,
        ["(top level): must be a mapping, got list", "vips: required", "bgp: required"],
    ),
    ("bgp-is-string", {"bgp": "64512"}, ["bgp: must be a mapping, got str"]),
    ("asn-is-string", {"bgp.asn": "64512"}, ["bgp.asn: must be an integer 1..4294967295"]),
    ("asn-is-bool", {"bgp.asn": True}, ["bgp.asn: must be an integer 1..4294967295, got bool"]),
    ("asn-missing", {"bgp.asn": DELETE}, ["bgp.asn: required"]),
    ("asn-null", {"bgp.asn": None}, ["bgp.asn: required"]),
    ("peers-is-mapping", {"bgp.peers": {"address": "192.0.2.2"}}, ["bgp.peers: must be a list"]),
    ("peer-is-string", {"bgp.peers[0]": "192.0.2.2"}, ["bgp.peers[0]: must be a mapping"]),
    ("peer-is-null", {"bgp.peers[0]": None}, ["bgp.peers[0]: empty peer"]),
    ("peer-address-missing", {"bgp.peers[0].address": DELETE}, ["bgp.peers[0].address: required"]),
    ("peer-address-null", {"bgp.peers[0].address": None}, ["bgp.peers[0].address: required"]),
    ("peer-asn-missing", {"bgp.peers[0].asn": DELETE}, ["bgp.peers[0].asn: required"]),
    ("peer-address-garbage", {"bgp.peers[0].address": "tor1"}, ["bgp.peers[0].address: must be"]),
    (
        "peer-address-with-zone",
        {"bgp.peers[0].address": "fe80::1%eth0", "bgp.peers[0].local_address": "fe80::2"},
        ["bgp.peers[0].address: must not carry a %zone"],
    ),
    (
        "peer-mixed-versions",
        {"bgp.peers[0].local_address": "2001:db8::1", "bgp.router_id": "192.0.2.1"},
        ["bgp.peers[0].local_address: must be of the same IP version"],
    ),
    (
        "peer-next-hop-v6-is-v4",
        {"bgp.peers[0].next_hop_v6": "192.0.2.1"},
        ["bgp.peers[0].next_hop_v6: must be an IPv6 address"],
    ),
    (
        "peer-node-selector-list",
        {"bgp.peers[0].node_selector": ["rack=a"]},
        ["bgp.peers[0].node_selector: must be a mapping, got list"],
    ),
    (
        "peer-node-selector-int-value",
        {"bgp.peers[0].node_selector": {"rack": 1}},
        ["bgp.peers[0].node_selector.rack: label keys and values must be strings"],
    ),
    ("enabled-is-string", {"kubernetes.enabled": "yes"}, ["kubernetes.enabled: must be true"]),
    ("node-name-empty", {"node_name": ""}, ["node_name: must be a non-empty string"]),
    ("node-name-int", {"node_name": 7}, ["node_name: must be a non-empty string, got int"]),
    ("output-unknown", {"output": "bird"}, ["output: must be one of exabgp, kernel-table"]),
    ("log-format", {"log.format": "text"}, ["log.format: must be one of json, console"]),
    ("log-level", {"log.level": "trace"}, ["log.level: must be one of debug, info"]),
    (
        "communities-is-string",
        {"advertise.communities": "64512:100"},
        ["advertise.communities: must be a list, got str"],
    ),
    (
        "community-is-int",
        {"advertise.communities": [64512]},
        ["advertise.communities[0]: must be a string, got int"],
    ),
    (
        "community-garbage",
        {"advertise.communities": ["64512:100", "nope"]},
        ["advertise.communities[1]: community 'nope' is not ASN:VALUE"],
    ),
    (
        "community-half-too-big",
        {"advertise.communities": ["65536:1"]},
        ["advertise.communities[0]: community '65536:1': both halves must be 0..65535"],
    ),
    (
        "large-community-short",
        {"advertise.large_communities": ["1:2"]},
        ["advertise.large_communities[0]: large community '1:2' is not GLOBAL:LOCAL1:LOCAL2"],
    ),
    (
        "large-community-too-big",
        {"advertise.large_communities": ["4294967296:1:1"]},
        ["advertise.large_communities[0]: large community '4294967296:1:1': each part"],
    ),
    ("med-string", {"advertise.med": "10"}, ["advertise.med: must be an integer 0..4294967295"]),
    # out-of-range integers
    ("asn-zero", {"bgp.asn": 0}, ["bgp.asn: must be 1..4294967295, got 0"]),
    ("asn-too-big", {"bgp.asn": 2**32}, ["bgp.asn: must be 1..4294967295, got 4294967296"]),
    ("peer-asn-zero", {"bgp.peers[0].asn": 0}, ["bgp.peers[0].asn: must be 1..4294967295"]),
    ("peer-port-zero", {"bgp.peers[0].port": 0}, ["bgp.peers[0].port: must be 1..65535, got 0"]),
    ("peer-port-big", {"bgp.peers[0].port": 65536}, ["bgp.peers[0].port: must be 1..65535"]),
    ("peer-ttl-zero", {"bgp.peers[0].ttl": 0}, ["bgp.peers[0].ttl: must be 1..255, got 0"]),
    ("peer-ttl-256", {"bgp.peers[0].ttl": 256}, ["bgp.peers[0].ttl: must be 1..255, got 256"]),
    ("hold-time-2", {"bgp.hold_time": 2}, ["bgp.hold_time: must be 0 or 3..65535 (RFC 4271)"]),
    ("hold-time-big", {"bgp.hold_time": 65536}, ["bgp.hold_time: must be 0..65535"]),
    ("gr-big", {"bgp.graceful_restart": 4096}, ["bgp.graceful_restart: must be 0..4095"]),
    ("gr-negative", {"bgp.graceful_restart": -1}, ["bgp.graceful_restart: must be 0..4095"]),
    ("local-pref-negative", {"advertise.local_preference": -1}, ["local_preference: must be 0"]),
    ("med-too-big", {"advertise.med": 2**32}, ["advertise.med: must be 0..4294967295"]),
    ("kernel-table-main", {"kernel_table.table": 254}, ["kernel_table.table: 253/254/255"]),
    ("kernel-table-zero", {"kernel_table.table": 0}, ["kernel_table.table: must be 1..4294967295"]),
    ("kernel-protocol", {"kernel_table.protocol": 256}, ["kernel_table.protocol: must be 1..255"]),
    ("shutdown-zero", {"shutdown_timeout": 0}, ["shutdown_timeout: must be 1..600, got 0"]),
    ("shutdown-string", {"shutdown_timeout": "10s"}, ["shutdown_timeout: must be a number"]),
    # CIDRs and allowed ranges
    ("vips-missing", {"vips": DELETE}, ["vips: required"]),
    ("vips-is-list", {"vips": ["198.51.100.0/24"]}, ["vips: must be a mapping, got list"]),
    ("allowed-missing", {"vips.allowed": DELETE}, ["vips.allowed: required"]),
    ("allowed-null", {"vips.allowed": None}, ["vips.allowed: required"]),
    ("allowed-empty", {"vips.allowed": []}, ["vips.allowed: must list at least one range"]),
    ("allowed-string", {"vips.allowed": "198.51.100.0/24"}, ["vips.allowed: must be a list"]),
    (
        "cidr-host-bits",
        {"vips.allowed[0]": "198.51.100.1/24"},
        ["vips.allowed[0]: not a valid CIDR: 198.51.100.1/24 has host bits set"],
    ),
    ("cidr-garbage", {"vips.allowed[1]": "2001:db8:zz::/64"}, ["vips.allowed[1]: not a valid"]),
    ("cidr-int", {"vips.allowed[0]": 10}, ["vips.allowed[0]: must be a CIDR string, got int"]),
    ("cidr-everything", {"vips.allowed[1]": "::/0"}, ["vips.allowed[1]: ::/0 admits every"]),
    (
        # The index names the entry as written, not its position among the valid ones.
        "cidr-everything-after-bad-entry",
        {"vips.allowed": ["bad", "198.51.100.0/24", "0.0.0.0/0"]},
        ["vips.allowed[0]: not a valid CIDR", "vips.allowed[2]: 0.0.0.0/0 admits every"],
    ),
    (
        "allowed-entry-namespaces-string",
        {"vips.allowed[0]": {"cidr": "198.51.100.0/24", "namespaces": "team-a"}},
        ["vips.allowed[0].namespaces: must be a list, got str"],
    ),
    (
        "allowed-entry-namespace-empty",
        {"vips.allowed[0]": {"cidr": "198.51.100.0/24", "namespaces": ["team-a", ""]}},
        ["vips.allowed[0].namespaces[1]: must be a non-empty string"],
    ),
    (
        "allowed-entry-no-cidr",
        {"vips.allowed[0]": {"namespaces": ["team-a"]}},
        ["vips.allowed[0].cidr: must be a CIDR string, got nothing"],
    ),
    ("interface-empty", {"vips.interface": ""}, ["vips.interface: must be a non-empty string"]),
    (
        "bind-unknown",
        {"vips.bind": "route"},
        ["vips.bind: must be one of by-family, address, local-route, got 'route'"],
    ),
    (
        "bind-local-route-without-interface",
        {"vips.bind": "local-route", "vips.interface": None},
        ["vips.bind: local-route needs vips.interface"],
    ),
    # peers and router_id
    (
        "duplicate-peer",
        {"bgp.peers[1]": {"address": "192.0.2.2", "asn": 64501}},
        ["bgp.peers[1].address: 192.0.2.2 is listed twice"],
    ),
    (
        # The index names the duplicate as written, even after a peer that did not parse.
        "duplicate-peer-after-bad-peer",
        {
            "bgp.peers": [
                {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
                {"address": "nope", "asn": 64501},
                {"address": "192.0.2.2", "asn": 64502},
            ]
        },
        ["bgp.peers[1].address: must be", "bgp.peers[2].address: 192.0.2.2 is listed twice"],
    ),
    (
        "router-id-ipv6",
        {"bgp.router_id": "2001:db8::1"},
        ["bgp.router_id: must be an IPv4 address"],
    ),
    ("router-id-garbage", {"bgp.router_id": "r1"}, ["bgp.router_id: must be an IPv4 or IPv6"]),
    (
        "router-id-no-ipv4-local-address",
        {"bgp.peers[0]": {"address": "2001:db8::2", "asn": 64500, "local_address": "2001:db8::1"}},
        ["bgp.router_id: required: no peer has an IPv4 local_address"],
    ),
    (
        "router-id-no-local-address",
        {"bgp.peers[0].local_address": DELETE},
        ["bgp.router_id: required: no peer has an IPv4 local_address"],
    ),
    (
        "no-peers-exabgp",
        {"bgp.peers": [], "bgp.router_id": "192.0.2.1"},
        ["bgp.peers: at least one peer is required with output: exabgp"],
    ),
    (
        "no-peers-no-router-id",
        {"bgp.peers": DELETE},
        ["bgp.peers: at least one peer is required", "bgp.router_id: required"],
    ),
    (
        "no-peers-kernel-table-no-router-id",
        {"bgp.peers": DELETE, "output": "kernel-table"},
        ["bgp.router_id: required"],
    ),
    ("bgp-missing", {"bgp": DELETE}, ["bgp: required"]),
    # static VIPs
    (
        "static-outside-allowed",
        {"static": [{"address": "203.0.113.5"}]},
        ["static[0].address: 203.0.113.5 is outside vips.allowed"],
    ),
    (
        # A namespace-restricted range is for Services of those namespaces only.
        "static-in-namespaced-range",
        {
            "vips.allowed[1]": {"cidr": "203.0.113.0/24", "namespaces": ["team-a"]},
            "static": [{"address": "203.0.113.5"}],
        },
        ["static[0].address: 203.0.113.5 is outside vips.allowed"],
    ),
    (
        "static-duplicate",
        {"static": [{"address": "198.51.100.53"}, {"address": "198.51.100.53"}]},
        ["static[1].address: 198.51.100.53 is listed twice"],
    ),
    ("static-no-address", {"static": [{"down_med": 5}]}, ["static[0].address: required"]),
    ("static-null-address", {"static": [{"address": None}]}, ["static[0].address: required"]),
    ("static-bad-address", {"static": [{"address": "dns"}]}, ["static[0].address: must be"]),
    (
        "static-zoned-address",
        {"static": [{"address": "2001:db8:100::5%lo"}]},
        ["static[0].address: must not carry a %zone"],
    ),
    (
        "static-down-med-negative",
        {"static": [{"address": "198.51.100.53", "down_med": -1}]},
        ["static[0].down_med: must be 0..4294967295"],
    ),
    (
        "nothing-to-announce",
        {"kubernetes.enabled": False},
        ["static: nothing to announce: kubernetes.enabled is false and static is empty"],
    ),
    # health check shapes
    (
        "check-no-kind",
        {"static": [{"address": "198.51.100.53", "check": {"interval": 5}}]},
        ["static[0].check: needs exactly one of tcp, http, exec"],
    ),
    (
        "check-two-kinds",
        {
            "static": [
                {"address": "198.51.100.53", "check": {"tcp": "127.0.0.1:53", "http": "http://x/"}}
            ]
        },
        ["static[0].check: needs exactly one of tcp, http, exec"],
    ),
    (
        "check-tcp-no-port",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": "127.0.0.1"}}]},
        ["static[0].check.tcp: must be 'HOST:PORT'"],
    ),
    (
        "check-tcp-port-range",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": "127.0.0.1:70000"}}]},
        ["static[0].check.tcp: port must be 0..65535"],
    ),
    (
        "check-tcp-int",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": 53}}]},
        ["static[0].check.tcp: must be 'HOST:PORT', got 53"],
    ),
    (
        "check-http-not-url",
        {"static": [{"address": "198.51.100.53", "check": {"http": "127.0.0.1/healthz"}}]},
        ["static[0].check.http: must be an http:// or https:// URL"],
    ),
    (
        "check-http-expect",
        {"static": [{"address": "198.51.100.53", "check": {"http": "http://x/", "expect": 700}}]},
        ["static[0].check.expect: must be 100..599, got 700"],
    ),
    (
        "check-exec-empty",
        {"static": [{"address": "198.51.100.53", "check": {"exec": []}}]},
        ["static[0].check.exec: must be a non-empty list of strings (argv)"],
    ),
    (
        "check-exec-not-strings",
        {"static": [{"address": "198.51.100.53", "check": {"exec": ["/bin/check", 3]}}]},
        ["static[0].check.exec: must be a non-empty list of strings (argv)"],
    ),
    (
        "check-timeout-over-interval",
        {
            "static": [
                {
                    "address": "198.51.100.53",
                    "check": {"tcp": "127.0.0.1:53", "interval": 1, "timeout": 2},
                }
            ]
        },
        ["static[0].check.timeout: must not exceed interval (1.0)"],
    ),
    (
        "check-rise-fall",
        {
            "static": [
                {
                    "address": "198.51.100.53",
                    "check": {"tcp": "127.0.0.1:53", "rise": 0, "fall": 101},
                }
            ]
        },
        ["static[0].check.rise: must be 1..100, got 0", "static[0].check.fall: must be 1..100"],
    ),
    (
        "check-interval-too-small",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": "127.0.0.1:53", "interval": 0}}]},
        ["static[0].check.interval: must be 0.1..3600"],
    ),
    # http.listen
    ("listen-no-port", {"http.listen": "127.0.0.1"}, ["http.listen: must be 'HOST:PORT'"]),
    ("listen-bad-port", {"http.listen": "127.0.0.1:http"}, ["http.listen: port must be 0..65535"]),
    ("listen-port-range", {"http.listen": "127.0.0.1:65536"}, ["http.listen: port must be"]),
    ("listen-empty-host", {"http.listen": ":9472"}, ["http.listen: host is empty"]),
    ("listen-int", {"http.listen": 9472}, ["http.listen: must be 'HOST:PORT', got 9472"]),
    # IPAM pools: DNS-label names, unique; CIDRs or ranges inside vips.allowed; no overlap
    ("ipam-unknown-key", {"ipam.pool": []}, ["ipam.pool: unknown key"]),
    (
        "ipam-pool-unknown-key",
        {"ipam.pools": [{"name": "a", "addresses": ["198.51.100.0/28"], "autoassign": True}]},
        ["ipam.pools[0].autoassign: unknown key"],
    ),
    (
        "ipam-bad-name-and-missing-addresses",
        {"ipam.pools": [{"name": "Public_1"}]},
        [
            "ipam.pools[0].name: 'Public_1' is not a DNS label",
            "ipam.pools[0].addresses: required",
        ],
    ),
    (
        "ipam-outside-allowed",
        {"ipam.pools": [{"name": "a", "addresses": ["203.0.113.0/28"]}]},
        ["ipam.pools[0].addresses[0]: 203.0.113.0/28 is not inside one range of vips.allowed"],
    ),
    (
        "ipam-bad-range",
        {"ipam.pools": [{"name": "a", "addresses": ["198.51.100.9-198.51.100.1", 5]}]},
        [
            "ipam.pools[0].addresses[0]: 198.51.100.9-198.51.100.1: the last address is below",
            "ipam.pools[0].addresses[1]: must be a CIDR or first-last range, got int",
        ],
    ),
    (
        "ipam-overlap-and-duplicate-name",
        {
            "ipam.pools": [
                {"name": "a", "addresses": ["198.51.100.0/28"]},
                {"name": "a", "addresses": ["198.51.100.10-198.51.100.20"]},
            ]
        },
        [
            "ipam.pools[1].name: 'a' is also pools[0]",
            "ipam.pools[1].addresses: 198.51.100.10-198.51.100.20 overlaps 198.51.100.0-",
        ],
    ),
    (
        "ipam-bad-fields",
        {
            "ipam.pools": [
                {
                    "name": "a",
                    "addresses": ["198.51.100.0/28"],
                    "auto_assign": "yes",
                    "namespaces": ["Team A"],
                    "service_selector": ["tier"],
                    "priority": -1,
                }
            ]
        },
        [
            "ipam.pools[0].auto_assign: must be true or false",
            "ipam.pools[0].namespaces[0]: must be a namespace name",
            "ipam.pools[0].service_selector: must be a mapping",
            "ipam.pools[0].priority: must be 0..1000000, got -1",
        ],
    ),
    # BFD: single-hop, from a known local address, with ExaBGP, within FRR's ranges
    (
        "bfd-unknown-key",
        {"bgp.peers[0].bfd": {"interval": 3}},
        ["bgp.peers[0].bfd.interval: unknown key"],
    ),
    ("bfd-not-mapping", {"bgp.peers[0].bfd": 300}, ["bgp.peers[0].bfd: must be a mapping"]),
    (
        "bfd-rx-low",
        {"bgp.peers[0].bfd": {"min_rx": 5}},
        ["bgp.peers[0].bfd.min_rx: must be 10..60000, got 5"],
    ),
    (
        "bfd-multiplier-zero",
        {"bgp.peers[0].bfd": {"multiplier": 0}},
        ["bgp.peers[0].bfd.multiplier: must be 1..255, got 0"],
    ),
    (
        "bfd-multihop",
        {"bgp.peers[0].ttl": 3, "bgp.peers[0].bfd": {}},
        ["bgp.peers[0].bfd: BFD is single-hop only (RFC 5881): not with ttl > 1"],
    ),
    (
        "bfd-no-local-address",
        {
            "bgp.peers[0].local_address": DELETE,
            "bgp.router_id": "192.0.2.1",
            "bgp.peers[0].bfd": {},
        },
        ["bgp.peers[0].bfd: needs local_address: BFD binds its UDP sockets to it"],
    ),
    (
        "bfd-kernel-table",
        {"output": "kernel-table", "bgp.peers[0].bfd": {}},
        ["bgp.peers[0].bfd: needs output: exabgp"],
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [pytest.param(e, x, id=i) for i, e, x in BAD_DOCUMENTS],
)
def test_bad_document_names_every_problem_by_key_path(
    edits: dict[str, Any] | None, expected: list[str]
) -> None:
    document: Any = ["not", "a", "mapping"] if edits is None else build(edits)
    assert_problems(problems_of(document), expected)


def test_every_problem_of_a_multi_error_file_is_reported_at_once() -> None:
    document = build(
        {
            "graceful_restrat": 1,
            "bgp.asn": 0,
            "bgp.hold_time": 1,
            "bgp.peers[0].port": 70000,
            "bgp.peers[1]": {"address": "192.0.2.2", "asn": 64501},
            "advertise.communities": ["64512:100", "70000:1"],
            "vips.allowed[1]": "2001:db8:100::1/64",
            "kubernetes.withdraw_when_cordoned": "yes",
            "static": [{"address": "203.0.113.9", "check": {"tcp": "x"}}],
            "http.listen": "nowhere",
            "log.level": "loud",
        }
    )
    assert_problems(
        problems_of(document),
        [
            "graceful_restrat: unknown key",
            "bgp.asn: must be 1..4294967295, got 0",
            "bgp.hold_time: must be 0 or 3..65535",
            "bgp.peers[0].port: must be 1..65535, got 70000",
            "bgp.peers[1].address: 192.0.2.2 is listed twice",
            "advertise.communities[1]: community '70000:1': both halves",
            "vips.allowed[1]: not a valid CIDR",
            "kubernetes.withdraw_when_cordoned: must be true or false",
            "static[0].address: 203.0.113.9 is outside vips.allowed",
            "static[0].check.tcp: must be 'HOST:PORT'",
            "http.listen: must be 'HOST:PORT'",
            "log.level: must be one of",
        ],
    )


def test_config_error_message_lists_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        config.parse(build({"bgp.asn": 0, "log.level": "loud"}), environ={})
    text = str(caught.value)
    assert "bgp.asn: must be 1..4294967295" in text
    assert "log.level: must be one of" in text


# --------------------------------------------------------------------------- good documents

GOOD_DOCUMENTS = [
    ("minimal", {}, lambda c: c.bgp.router_id == ipaddress.IPv4Address("192.0.2.1")),
    ("no-bfd-by-default", {}, lambda c: c.bgp.peers[0].bfd is None),
    ("no-pools-by-default", {}, lambda c: c.ipam == ()),
    (
        "ipam-pools",
        {
            "ipam.pools": [
                {
                    "name": "public",
                    "addresses": ["198.51.100.64/27", "198.51.100.200-198.51.100.210"],
                    "avoid_buggy_ips": True,
                    "namespaces": ["team-a"],
                    "service_selector": {"tier": "gold"},
                    "priority": 2,
                },
                {"name": "v6", "addresses": ["2001:db8:100::/64"], "auto_assign": False},
            ]
        },
        lambda c: (
            [p.name for p in c.ipam] == ["public", "v6"]
            and [str(r) for r in c.ipam[0].ranges]
            == ["198.51.100.64-198.51.100.95", "198.51.100.200-198.51.100.210"]
            and c.ipam[0].avoid_buggy_ips
            and c.ipam[0].namespaces == frozenset({"team-a"})
            and c.ipam[0].service_selector == (("tier", "gold"),)
            and c.ipam[0].priority == 2
            and c.ipam[1].auto_assign is False
            and c.ipam[1].ranges[0].family == 6
        ),
    ),
    (
        "bfd-defaults",
        {"bgp.peers[0].bfd": {}},
        lambda c: c.bgp.peers[0].bfd == BfdTimers(min_rx=300, min_tx=300, multiplier=3),
    ),
    (
        "bfd-set",
        {"bgp.peers[0].bfd": {"min_rx": 100, "min_tx": 200, "multiplier": 5}},
        lambda c: c.bgp.peers[0].bfd == BfdTimers(min_rx=100, min_tx=200, multiplier=5),
    ),
    (
        "router-id-from-first-ipv4-local-address",
        {
            "bgp.peers": [
                {"address": "2001:db8::2", "asn": 64500, "local_address": "2001:db8::1"},
                {"address": "192.0.2.6", "asn": 64500},
                {"address": "192.0.2.10", "asn": 64500, "local_address": "192.0.2.9"},
                {"address": "192.0.2.14", "asn": 64500, "local_address": "192.0.2.13"},
            ]
        },
        lambda c: c.bgp.router_id == ipaddress.IPv4Address("192.0.2.9"),
    ),
    (
        "explicit-router-id-wins",
        {"bgp.router_id": "10.255.0.1"},
        lambda c: c.bgp.router_id == ipaddress.IPv4Address("10.255.0.1"),
    ),
    (
        "kernel-table-without-peers",
        {"bgp.peers": DELETE, "bgp.router_id": "10.255.0.1", "output": "kernel-table"},
        lambda c: c.output == "kernel-table" and c.bgp.peers == (),
    ),
    (
        "defaults",
        {},
        lambda c: (
            c.bgp.hold_time == 30
            and c.bgp.graceful_restart == 120
            and c.bgp.peers[0].port == 179
            and c.bgp.peers[0].ttl == 1
            and c.vips.interface == "lo"
            and c.kubernetes.load_balancer_class == "kvip-bgp.io/bgp"
            and c.kubernetes.legacy_class_handling
            and not c.kubernetes.withdraw_when_cordoned
            and c.output == "exabgp"
            and c.kernel_table == KernelTable(198, 248)
            and c.shutdown_timeout == 10.0
            and c.http.listen == ("127.0.0.1", 9472)
            and c.log == LogConfig("json", "info")
        ),
    ),
    ("hold-time-zero", {"bgp.hold_time": 0}, lambda c: c.bgp.hold_time == 0),
    ("graceful-restart-off", {"bgp.graceful_restart": 0}, lambda c: c.bgp.graceful_restart == 0),
    ("interface-null", {"vips.interface": None}, lambda c: c.vips.interface is None),
    ("bind-default", {}, lambda c: c.vips.bind == "by-family"),
    ("bind-address", {"vips.bind": "address"}, lambda c: c.vips.bind == "address"),
    (
        "bind-by-family-without-interface",  # the default must not need an interface
        {"vips.interface": None},
        lambda c: c.vips.bind == "by-family" and c.vips.interface is None,
    ),
    ("bind-local-route", {"vips.bind": "local-route"}, lambda c: c.vips.bind == "local-route"),
    (
        "same-address-other-port-is-not-a-duplicate",
        {"bgp.peers[1]": {"address": "192.0.2.2", "asn": 64500, "port": 1179}},
        lambda c: [p.port for p in c.bgp.peers] == [179, 1179],
    ),
    (
        "peer-options",
        {
            "bgp.peers[0].ttl": 2,
            "bgp.peers[0].node_selector": {"topology.kubernetes.io/rack": "r1", "a": "b"},
            "bgp.peers[0].next_hop_v6": "2001:db8::1",
        },
        lambda c: (
            c.bgp.peers[0].ttl > 1
            and c.bgp.peers[0].node_selector == (("a", "b"), ("topology.kubernetes.io/rack", "r1"))
            and c.bgp.peers[0].next_hop_v6 == ipaddress.IPv6Address("2001:db8::1")
        ),
    ),
    (
        "allowed-with-namespaces",
        {"vips.allowed[1]": {"cidr": "203.0.113.0/28", "namespaces": ["team-a", "team-b"]}},
        lambda c: (
            c.vips.allowed[1]
            == AllowedRange(ipaddress.ip_network("203.0.113.0/28"), ("team-a", "team-b"))
            and c.vips.admits(ipaddress.ip_address("203.0.113.5"), "team-b")
            and not c.vips.admits(ipaddress.ip_address("203.0.113.5"), "team-c")
            and not c.vips.admits(ipaddress.ip_address("203.0.113.5"))
            and c.vips.admits(ipaddress.ip_address("198.51.100.5"), "team-c")
            and not c.vips.admits(ipaddress.ip_address("203.0.113.16"), "team-a")
        ),
    ),
    (
        "advertise-attributes",
        {
            "advertise": {
                "communities": ["64512:100", "no-export", "64512:100"],
                "large_communities": ["64512:1:2"],
                "local_preference": 200,
                "med": 0,
            }
        },
        lambda c: (
            [str(x) for x in c.advertise.communities] == ["64512:100", "65535:65281"]
            and [str(x) for x in c.advertise.large_communities] == ["64512:1:2"]
            and c.advertise.local_preference == 200
            and c.advertise.med == 0
        ),
    ),
    ("listen-null", {"http.listen": None}, lambda c: c.http.listen is None),
    (
        "listen-host-port",
        {"http.listen": "0.0.0.0:9100"},
        lambda c: c.http.listen == ("0.0.0.0", 9100),
    ),
    ("listen-ipv6", {"http.listen": "[::1]:9472"}, lambda c: c.http.listen == ("::1", 9472)),
    (
        "listen-hostname",
        {"http.listen": "localhost:9472"},
        lambda c: c.http.listen == ("localhost", 9472),
    ),
    (
        "check-tcp",
        {"static": [{"address": "198.51.100.53", "check": {"tcp": "127.0.0.1:53"}}]},
        lambda c: c.static[0].check == HealthCheck(tcp=("127.0.0.1", 53)),
    ),
    (
        "check-http",
        {
            "static": [
                {
                    "address": "2001:db8:100::53",
                    "check": {
                        "http": "https://[::1]/ready",
                        "expect": 204,
                        "interval": 0.5,
                        "timeout": 0.5,
                        "rise": 1,
                        "fall": 1,
                    },
                    "down_med": 1000,
                    "maintenance_file": "/etc/kvip-bgp/drain",
                }
            ]
        },
        lambda c: (
            c.static[0].check
            == HealthCheck(
                http="https://[::1]/ready", expect=204, interval=0.5, timeout=0.5, rise=1, fall=1
            )
            and c.static[0].down_med == 1000
            and c.static[0].maintenance_file == Path("/etc/kvip-bgp/drain")
        ),
    ),
    (
        "check-exec",
        {"static": [{"address": "198.51.100.53", "check": {"exec": ["/bin/check", "-q"]}}]},
        lambda c: c.static[0].check == HealthCheck(exec_argv=("/bin/check", "-q")),
    ),
    (
        "static-only",
        {"kubernetes.enabled": False, "static": [{"address": "198.51.100.53"}]},
        lambda c: not c.kubernetes.enabled and c.static[0].check is None,
    ),
    (
        "log-console",
        {"log": {"format": "console", "level": "debug"}},
        lambda c: c.log == LogConfig("console", "debug"),
    ),
]


@pytest.mark.parametrize(
    ("edits", "check"),
    [pytest.param(e, c, id=i) for i, e, c in GOOD_DOCUMENTS],
)
def test_good_document(edits: dict[str, Any], check: Any) -> None:
    parsed = config.parse(build(edits), environ={})
    assert check(parsed), parsed


# --------------------------------------------------------------------------- node_name


@pytest.mark.parametrize(
    ("in_file", "environ", "expected"),
    [
        pytest.param("from-file", {"NODE_NAME": "from-env"}, "from-file", id="file-wins"),
        pytest.param(DELETE, {"NODE_NAME": "from-env"}, "from-env", id="env-when-absent"),
        pytest.param(None, {"NODE_NAME": "from-env"}, "from-env", id="env-when-null"),
        pytest.param(DELETE, {}, "from-hostname", id="hostname-without-env"),
        pytest.param(DELETE, {"NODE_NAME": ""}, "from-hostname", id="hostname-when-env-empty"),
    ],
)
def test_node_name_sources(
    monkeypatch: pytest.MonkeyPatch, in_file: Any, environ: dict[str, str], expected: str
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "from-hostname")
    parsed = config.parse(build({"node_name": in_file}), environ=environ)
    assert parsed.node_name == expected


# --------------------------------------------------------------------------- password_file

PASSWORD = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(None, "cannot read", id="missing"),
        pytest.param(b"", "is empty", id="empty"),
        pytest.param(b"  \n", "is empty", id="only-whitespace"),
        pytest.param(b"\xff\xfe" + PASSWORD.encode(), "is not UTF-8 text", id="not-utf8"),
        pytest.param(f'{PASSWORD}"x'.encode(), "without quotes", id="quote"),
        pytest.param(f"{PASSWORD}\\x".encode(), "backslashes", id="backslash"),
        pytest.param(f"{PASSWORD}\nsecond".encode(), "line breaks", id="two-lines"),
        pytest.param((PASSWORD * 10).encode(), "1..80 characters", id="too-long"),
        pytest.param("directory", "cannot read", id="directory"),
    ],
)
def test_bad_password_file(tmp_path: Path, content: bytes | str | None, expected: str) -> None:
    secret = tmp_path / "tor1.md5"
    if content == "directory":
        secret.mkdir()
    elif isinstance(content, bytes):
        secret.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        config.parse(build({"bgp.peers[0].password_file": str(secret)}), environ={})
    assert_problems(caught.value.problems, ["bgp.peers[0].password_file: "])
    assert str(secret) in caught.value.problems[0]
    assert expected in caught.value.problems[0]
    assert PASSWORD not in str(caught.value)
    assert all(PASSWORD not in problem for problem in caught.value.problems)


def test_password_file_is_read_stripped_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "tor1.md5"
    secret.write_text(f"  {PASSWORD}\n", encoding="utf-8")
    parsed = config.parse(build({"bgp.peers[0].password_file": str(secret)}), environ={})
    peer = parsed.bgp.peers[0]
    assert peer.password == PASSWORD
    assert peer.password_file == secret
    assert PASSWORD not in repr(peer)
    assert PASSWORD not in repr(parsed)


def test_password_file_must_be_a_string() -> None:
    assert_problems(
        problems_of(build({"bgp.peers[0].password_file": 5})),
        ["bgp.peers[0].password_file: must be a non-empty string"],
    )


# --------------------------------------------------------------------------- load()


def test_example_node_config_loads() -> None:
    loaded = config.load(REPO / "exabgp-conf" / "example-node.yaml", environ={})
    assert loaded.node_name == "worker-1"
    assert loaded.bgp.asn == 64512
    assert loaded.bgp.router_id == ipaddress.IPv4Address("192.0.2.1")
    assert [str(p.address) for p in loaded.bgp.peers] == ["192.0.2.2"]
    assert [str(r.cidr) for r in loaded.vips.allowed] == ["198.51.100.0/24", "2001:db8:100::/64"]
    assert [str(c) for c in loaded.advertise.communities] == ["64512:100"]
    assert loaded.source == REPO / "exabgp-conf" / "example-node.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, ["cannot read"], id="missing-file"),
        pytest.param("bgp: [\n", ["not valid YAML"], id="bad-yaml"),
        pytest.param(
            "",
            ["(top level): the file is empty", "vips: required", "bgp: required"],
            id="empty-file",
        ),
        pytest.param("# only a comment\n", ["the file is empty", "vips:", "bgp:"], id="comment"),
        pytest.param(
            "- a\n- b\n", ["(top level): must be a mapping, got list", "vips:", "bgp:"], id="list"
        ),
        pytest.param(
            "just text\n", ["(top level): must be a mapping, got str", "vips:", "bgp:"], id="scalar"
        ),
    ],
)
def test_load_problems(tmp_path: Path, text: str | None, expected: list[str]) -> None:
    path = tmp_path / "kvip-bgp.yaml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        config.load(path, environ={})
    assert_problems(caught.value.problems, expected)


def test_load_reads_yaml_and_keeps_source(tmp_path: Path) -> None:
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(
        "bgp:\n  asn: 64512\n  peers:\n"
        "    - {address: 192.0.2.2, asn: 64500, local_address: 192.0.2.1}\n"
        "vips:\n  allowed: [198.51.100.0/24]\n",
        encoding="utf-8",
    )
    loaded = config.load(str(path), environ={"NODE_NAME": "worker-9"})
    assert loaded.node_name == "worker-9"
    assert loaded.source == path


# --------------------------------------------------------------------------- totality

FULL: dict[str, Any] = {
    "node_name": "worker-1",
    "bgp": {
        "asn": 64512,
        "router_id": "192.0.2.1",
        "hold_time": 30,
        "graceful_restart": 120,
        "peers": [
            {
                "address": "192.0.2.2",
                "asn": 64500,
                "port": 179,
                "local_address": "192.0.2.1",
                "ttl": 1,
                "node_selector": {"rack": "r1"},
                "next_hop_v6": "2001:db8::1",
            }
        ],
    },
    "advertise": {
        "communities": ["64512:100"],
        "large_communities": ["64512:1:1"],
        "local_preference": 100,
        "med": 10,
    },
    "vips": {
        "allowed": ["198.51.100.0/24", {"cidr": "2001:db8:100::/64", "namespaces": ["a"]}],
        "interface": "lo",
    },
    "kubernetes": {
        "enabled": True,
        "kubeconfig": "/etc/kubeconfig",
        "load_balancer_class": "kvip-bgp.io/bgp",
        "legacy_class_handling": True,
        "withdraw_when_cordoned": False,
    },
    "output": "exabgp",
    "kernel_table": {"table": 198, "protocol": 248},
    "shutdown_timeout": 10,
    "static": [
        {
            "address": "198.51.100.53",
            "check": {"tcp": "127.0.0.1:53", "interval": 2, "timeout": 1, "rise": 2, "fall": 3},
            "down_med": 100,
            "maintenance_file": "/etc/kvip-bgp/drain",
        }
    ],
    "http": {"listen": "127.0.0.1:9472"},
    "log": {"format": "json", "level": "info"},
}


def _leaf_paths(node: Any, prefix: str = "") -> list[str]:
    """Every key path in ``node``, e.g. ``bgp``, ``bgp.peers``, ``bgp.peers[0].asn``."""
    if isinstance(node, dict):
        children = [(f"{prefix}.{k}" if prefix else str(k), v) for k, v in node.items()]
    elif isinstance(node, list):
        children = [(f"{prefix}[{i}]", v) for i, v in enumerate(node)]
    else:
        return []
    paths: list[str] = []
    for path, child in children:
        paths.append(path)
        paths.extend(_leaf_paths(child, path))
    return paths


def test_full_document_is_valid() -> None:
    config.parse(copy.deepcopy(FULL), environ={})


@pytest.mark.parametrize("path", _leaf_paths(FULL))
@pytest.mark.parametrize(
    "value",
    [None, DELETE, [], {}, "", -1, True, "x\n"],
    ids=["null", "deleted", "list", "mapping", "empty-string", "minus-one", "true", "newline"],
)
def test_any_mutation_either_parses_or_names_a_problem(path: str, value: Any) -> None:
    """Totality: no crash, and never a ConfigError without a problem in it."""
    document = copy.deepcopy(FULL)
    edit(document, path, value)
    try:
        config.parse(document, environ={})
    except ConfigError as error:
        assert error.problems


def test_check_config_accepts_valid_pools(tmp_path: Path) -> None:
    """Through the real CLI: a valid ``ipam`` section passes check-config."""
    import subprocess
    import sys

    import yaml

    document = build(
        {
            "kubernetes.enabled": False,
            "static": [{"address": "198.51.100.53"}],
            "ipam.pools": [{"name": "public", "addresses": ["198.51.100.64/28"]}],
        }
    )
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(yaml.safe_dump(document))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kvip_bgp.cli", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("check-config").returncode == 0
