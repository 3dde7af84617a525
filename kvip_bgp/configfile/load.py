"""Load and validate the configuration file into frozen values.

A bad config must stop startup with *every* problem listed, each named by its key path
(``bgp.peers[1].asn: must be 1..4294967295``), so an operator fixes the file in one go.
Unknown keys are errors: a misspelt ``graceful_restrat`` silently ignored would hide a
mistake until the day it matters.

Parsing goes through a small ``Reader`` that walks the YAML tree, records problems with
their paths and returns a placeholder so that checking continues past the first error.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from kvip_bgp.configfile.reader import ConfigError, Reader, type_name
from kvip_bgp.domain.config import (
    LOG_LEVELS,
    AllowedRange,
    BgpConfig,
    Config,
    HealthCheck,
    HttpConfig,
    KernelTable,
    KubernetesConfig,
    LogConfig,
    Peer,
    StaticVip,
    VipConfig,
)
from kvip_bgp.domain.model import (
    MAX_U32,
    Community,
    IPAddress,
    IPNetwork,
    LargeCommunity,
    RouteAttributes,
)

_TOP_KEYS: Final = (
    "node_name",
    "bgp",
    "advertise",
    "vips",
    "kubernetes",
    "output",
    "kernel_table",
    "shutdown_timeout",
    "static",
    "http",
    "log",
)
_PEER_KEYS: Final = (
    "address",
    "asn",
    "port",
    "local_address",
    "password_file",
    "ttl",
    "node_selector",
    "next_hop_v6",
    "next_hop_v4",
)


def load(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ``ConfigError`` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError([f"{path}: not valid YAML: {error}"]) from error
    return parse(document, environ=environ, source=path)


def parse(
    document: Any, environ: Mapping[str, str] | None = None, source: Path | None = None
) -> Config:
    """Validate an already-parsed YAML document (a dict) into a ``Config``."""
    env = os.environ if environ is None else environ
    r = Reader()
    top = r.mapping(document, "", _TOP_KEYS)
    if document is None:
        r.fail("(top level)", "the file is empty")

    node_name = r.string(top.get("node_name"), "node_name")
    if node_name is None:
        node_name = env.get("NODE_NAME") or socket.gethostname()

    vips = _parse_vips(r, top.get("vips"))
    output = r.choice(top.get("output"), "output", ("exabgp", "kernel-table"), "exabgp")
    bgp = _parse_bgp(r, top.get("bgp"), require_peers=output == "exabgp")
    advertise = _parse_attributes(r, top.get("advertise"), "advertise")
    kubernetes = _parse_kubernetes(r, top.get("kubernetes"))

    kt = r.mapping(top.get("kernel_table"), "kernel_table", ("table", "protocol"))
    kernel_table = KernelTable(
        table=r.integer(kt.get("table"), "kernel_table.table", 1, 2**32 - 1, 198) or 198,
        protocol=r.integer(kt.get("protocol"), "kernel_table.protocol", 1, 255, 248) or 248,
    )
    if kernel_table.table in (253, 254, 255):
        r.fail("kernel_table.table", "253/254/255 are the kernel's default/main/local tables")

    shutdown_timeout = r.number(top.get("shutdown_timeout"), "shutdown_timeout", 1, 600, 10.0)
    static = _parse_static(r, top.get("static"), vips)

    http_map = r.mapping(top.get("http"), "http", ("listen",))
    listen: tuple[str, int] | None = ("127.0.0.1", 9472)
    if "listen" in http_map:
        raw_listen = http_map["listen"]
        listen = None if raw_listen is None else r.host_port(raw_listen, "http.listen")

    log_map = r.mapping(top.get("log"), "log", ("format", "level"))
    log = LogConfig(
        format="console"
        if r.choice(log_map.get("format"), "log.format", ("json", "console"), "json") == "console"
        else "json",
        level=r.choice(log_map.get("level"), "log.level", LOG_LEVELS, "info"),
    )

    if not kubernetes.enabled and not static:
        r.fail("static", "nothing to announce: kubernetes.enabled is false and static is empty")

    if r.problems or bgp is None or vips is None or advertise is None:
        raise ConfigError(r.problems)
    return Config(
        node_name=node_name,
        bgp=bgp,
        advertise=advertise,
        vips=vips,
        kubernetes=kubernetes,
        output="kernel-table" if output == "kernel-table" else "exabgp",
        kernel_table=kernel_table,
        shutdown_timeout=shutdown_timeout,
        static=static,
        http=HttpConfig(listen=listen),
        log=log,
        source=source,
    )


def _parse_bgp(r: Reader, value: Any, require_peers: bool) -> BgpConfig | None:
    if value is None:
        r.fail("bgp", "required")
        return None
    if not isinstance(value, Mapping):
        r.mapping(value, "bgp", ())  # records "must be a mapping"; nothing else to check
        return None
    m = r.mapping(value, "bgp", ("asn", "router_id", "hold_time", "graceful_restart", "peers"))
    if m.get("asn") is None:
        r.fail("bgp.asn", "required")
    asn = r.integer(m.get("asn"), "bgp.asn", 1, MAX_U32)
    hold_time = r.integer(m.get("hold_time"), "bgp.hold_time", 0, 65535, 30)
    if hold_time is not None and 0 < hold_time < 3:
        r.fail("bgp.hold_time", "must be 0 or 3..65535 (RFC 4271)")
    graceful_restart = r.integer(m.get("graceful_restart"), "bgp.graceful_restart", 0, 4095, 120)
    raw_peers = m.get("peers")
    peer_items = r.listing(raw_peers, "bgp.peers")
    peers_listed = raw_peers is None or len(peer_items) > 0 or raw_peers == []
    if require_peers and not peer_items and peers_listed:
        r.fail("bgp.peers", "at least one peer is required with output: exabgp")
    # Keep each peer's index as written, so problems name the right entry.
    indexed = [
        (index, peer)
        for index, item in enumerate(peer_items)
        if (peer := _parse_peer(r, item, f"bgp.peers[{index}]")) is not None
    ]
    peers = tuple(peer for _, peer in indexed)
    seen: set[tuple[IPAddress, int]] = set()
    for index, peer in indexed:
        if (peer.address, peer.port) in seen:
            r.fail(f"bgp.peers[{index}].address", f"{peer.address} is listed twice")
        seen.add((peer.address, peer.port))

    router_id: ipaddress.IPv4Address | None = None
    if m.get("router_id") is not None:
        parsed = r.address(m.get("router_id"), "bgp.router_id")
        if parsed is not None and not isinstance(parsed, ipaddress.IPv4Address):
            r.fail("bgp.router_id", "must be an IPv4 address (BGP identifiers are 32-bit)")
        elif isinstance(parsed, ipaddress.IPv4Address):
            router_id = parsed
    else:
        router_id = next(
            (p.local_address for p in peers if isinstance(p.local_address, ipaddress.IPv4Address)),
            None,
        )
        # A peer that did not parse has its own problem, which may be the reason.
        if router_id is None and peers_listed and len(peers) == len(peer_items):
            r.fail(
                "bgp.router_id",
                "required: no peer has an IPv4 local_address to default it from",
            )
    if asn is None or router_id is None:
        return None
    return BgpConfig(
        asn=asn,
        router_id=router_id,
        hold_time=hold_time if hold_time is not None else 30,
        graceful_restart=graceful_restart if graceful_restart is not None else 120,
        peers=peers,
    )


def _parse_peer(r: Reader, value: Any, path: str) -> Peer | None:
    m = r.mapping(value, path, _PEER_KEYS)
    if not m:
        if value is None or isinstance(value, Mapping):
            r.fail(path, "empty peer")
        return None
    for required in ("address", "asn"):
        if m.get(required) is None:
            r.fail(f"{path}.{required}", "required")
    address = r.address(m.get("address"), f"{path}.address")
    asn = r.integer(m.get("asn"), f"{path}.asn", 1, MAX_U32)
    port = r.integer(m.get("port"), f"{path}.port", 1, 65535, 179)
    local_address = r.address(m.get("local_address"), f"{path}.local_address")
    if address and local_address and address.version != local_address.version:
        r.fail(f"{path}.local_address", "must be of the same IP version as address")
    ttl = r.integer(m.get("ttl"), f"{path}.ttl", 1, 255, 1)

    password_file: Path | None = None
    password: str | None = None
    raw_pw = r.string(m.get("password_file"), f"{path}.password_file")
    if raw_pw is not None:
        password_file = Path(raw_pw)
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            r.fail(f"{path}.password_file", f"cannot read {password_file}: {error.strerror}")
        except UnicodeDecodeError:
            r.fail(f"{path}.password_file", f"{password_file} is not UTF-8 text")
        except ValueError:  # a NUL byte in the path: open() refuses it
            r.fail(f"{path}.password_file", f"{raw_pw!r} is not a valid path")
        else:
            if not password:
                r.fail(f"{path}.password_file", f"{password_file} is empty")
            elif len(password.encode()) > 80 or any(c in password for c in "\"'\n\r\\"):
                # Checked without echoing the password: it goes into ExaBGP's config file.
                r.fail(
                    f"{path}.password_file",
                    f"{password_file}: password must be 1..80 characters without quotes, "
                    "backslashes or line breaks",
                )
                password = None

    selector: list[tuple[str, str]] = []
    sel = m.get("node_selector")
    if sel is not None:
        if not isinstance(sel, Mapping):
            r.fail(f"{path}.node_selector", f"must be a mapping, got {type_name(sel)}")
        else:
            for key, val in sel.items():
                if not isinstance(key, str) or not isinstance(val, str):
                    r.fail(f"{path}.node_selector.{key}", "label keys and values must be strings")
                else:
                    selector.append((key, val))

    next_hop_v6 = r.address_of(m.get("next_hop_v6"), f"{path}.next_hop_v6", ipaddress.IPv6Address)
    next_hop_v4 = r.address_of(m.get("next_hop_v4"), f"{path}.next_hop_v4", ipaddress.IPv4Address)

    if address is None or asn is None:
        return None
    return Peer(
        address=address,
        asn=asn,
        port=port or 179,
        local_address=local_address,
        password_file=password_file,
        password=password,
        ttl=ttl or 1,
        node_selector=tuple(sorted(selector)),
        next_hop_v6=next_hop_v6,
        next_hop_v4=next_hop_v4,
    )


def _parse_attributes(r: Reader, value: Any, path: str) -> RouteAttributes | None:
    m = r.mapping(value, path, ("communities", "large_communities", "local_preference", "med"))
    communities = [
        c
        for i, item in enumerate(r.listing(m.get("communities"), f"{path}.communities"))
        if (c := r.parsed(item, f"{path}.communities[{i}]", Community.parse)) is not None
    ]
    large = [
        lc
        for i, item in enumerate(r.listing(m.get("large_communities"), f"{path}.large_communities"))
        if (lc := r.parsed(item, f"{path}.large_communities[{i}]", LargeCommunity.parse))
        is not None
    ]
    local_pref = r.integer(m.get("local_preference"), f"{path}.local_preference", 0, MAX_U32)
    med = r.integer(m.get("med"), f"{path}.med", 0, MAX_U32)
    return RouteAttributes(
        communities=tuple(communities),
        large_communities=tuple(large),
        local_preference=local_pref,
        med=med,
    )


def _parse_network(r: Reader, value: Any, path: str) -> IPNetwork | None:
    if not isinstance(value, str):
        r.fail(path, f"must be a CIDR string, got {type_name(value)}")
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        r.fail(path, f"not a valid CIDR: {error}")
        return None


def _parse_vips(r: Reader, value: Any) -> VipConfig | None:
    if value is None:
        r.fail("vips", "required (vips.allowed lists the ranges VIPs may come from)")
        return None
    if not isinstance(value, Mapping):
        r.mapping(value, "vips", ())  # records "must be a mapping"; nothing else to check
        return None
    m = r.mapping(value, "vips", ("allowed", "interface", "bind"))
    raw_allowed = m.get("allowed")
    if raw_allowed is None:
        r.fail("vips.allowed", "required: list the ranges VIPs may come from")
    items = r.listing(raw_allowed, "vips.allowed")
    if raw_allowed == []:
        r.fail("vips.allowed", "must list at least one range")
    ranges: list[AllowedRange] = []
    for i, item in enumerate(items):
        path = f"vips.allowed[{i}]"
        if isinstance(item, Mapping):
            entry = r.mapping(item, path, ("cidr", "namespaces"))
            cidr = _parse_network(r, entry.get("cidr"), f"{path}.cidr")
            namespaces: list[str] = []
            for j, ns in enumerate(r.listing(entry.get("namespaces"), f"{path}.namespaces")):
                name = r.string(ns, f"{path}.namespaces[{j}]")
                if name is not None:
                    namespaces.append(name)
        else:
            cidr = _parse_network(r, item, path)
            namespaces = []
        if cidr is None:
            continue
        if cidr.prefixlen == 0:
            r.fail(path, f"{cidr} admits every address; name real ranges")
        ranges.append(AllowedRange(cidr, tuple(namespaces)))
    interface: str | None = "lo"
    if "interface" in m:
        interface = None if m["interface"] is None else r.string(m["interface"], "vips.interface")
    bind = r.choice(m.get("bind"), "vips.bind", ("address", "local-route"), "address")
    if bind == "local-route" and interface is None:
        r.fail("vips.bind", "local-route needs vips.interface (the device of the local routes)")
    return VipConfig(
        allowed=tuple(ranges),
        interface=interface,
        bind="local-route" if bind == "local-route" else "address",
    )


def _parse_kubernetes(r: Reader, value: Any) -> KubernetesConfig:
    m = r.mapping(
        value,
        "kubernetes",
        (
            "enabled",
            "kubeconfig",
            "load_balancer_class",
            "legacy_class_handling",
            "withdraw_when_cordoned",
            "watch_read_timeout",
        ),
    )
    kubeconfig = r.string(m.get("kubeconfig"), "kubernetes.kubeconfig")
    return KubernetesConfig(
        enabled=r.boolean(m.get("enabled"), "kubernetes.enabled", True),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        load_balancer_class=r.string(
            m.get("load_balancer_class"), "kubernetes.load_balancer_class", "kvip-bgp.io/bgp"
        )
        or "kvip-bgp.io/bgp",
        legacy_class_handling=r.boolean(
            m.get("legacy_class_handling"), "kubernetes.legacy_class_handling", True
        ),
        withdraw_when_cordoned=r.boolean(
            m.get("withdraw_when_cordoned"), "kubernetes.withdraw_when_cordoned", False
        ),
        watch_read_timeout=r.number(
            m.get("watch_read_timeout"), "kubernetes.watch_read_timeout", 1, 3600, 120.0
        ),
    )


def _parse_check(r: Reader, value: Any, path: str) -> HealthCheck | None:
    m = r.mapping(
        value, path, ("tcp", "http", "expect", "exec", "interval", "timeout", "rise", "fall")
    )
    kinds = [k for k in ("tcp", "http", "exec") if m.get(k) is not None]
    if len(kinds) != 1:
        r.fail(path, "needs exactly one of tcp, http, exec")
        return None
    tcp = r.host_port(m["tcp"], f"{path}.tcp") if "tcp" in kinds else None
    http = r.string(m.get("http"), f"{path}.http")
    if http is not None and not http.startswith(("http://", "https://")):
        r.fail(f"{path}.http", f"must be an http:// or https:// URL, got {http!r}")
    exec_argv: tuple[str, ...] | None = None
    if "exec" in kinds:
        argv = r.listing(m["exec"], f"{path}.exec")
        if not argv or not all(isinstance(a, str) for a in argv):
            r.fail(f"{path}.exec", "must be a non-empty list of strings (argv)")
        else:
            exec_argv = tuple(argv)
    interval = r.number(m.get("interval"), f"{path}.interval", 0.1, 3600, 2.0)
    timeout = r.number(m.get("timeout"), f"{path}.timeout", 0.1, 3600, 1.0)
    if timeout > interval:
        r.fail(f"{path}.timeout", f"must not exceed interval ({interval})")
    return HealthCheck(
        tcp=tcp,
        http=http,
        expect=r.integer(m.get("expect"), f"{path}.expect", 100, 599, 200) or 200,
        exec_argv=exec_argv,
        interval=interval,
        timeout=timeout,
        rise=r.integer(m.get("rise"), f"{path}.rise", 1, 100, 2) or 2,
        fall=r.integer(m.get("fall"), f"{path}.fall", 1, 100, 3) or 3,
    )


def _parse_static(r: Reader, value: Any, vips: VipConfig | None) -> tuple[StaticVip, ...]:
    result: list[StaticVip] = []
    seen: set[IPAddress] = set()
    for i, item in enumerate(r.listing(value, "static")):
        path = f"static[{i}]"
        m = r.mapping(item, path, ("address", "check", "down_med", "maintenance_file"))
        if m.get("address") is None:
            r.fail(f"{path}.address", "required")
            continue
        address = r.address(m.get("address"), f"{path}.address")
        if address is None:
            continue
        if vips is not None and not vips.admits(address):
            r.fail(f"{path}.address", f"{address} is outside vips.allowed")
        if address in seen:
            r.fail(f"{path}.address", f"{address} is listed twice")
        seen.add(address)
        check = _parse_check(r, m["check"], f"{path}.check") if m.get("check") else None
        maintenance = r.string(m.get("maintenance_file"), f"{path}.maintenance_file")
        result.append(
            StaticVip(
                address=address,
                check=check,
                down_med=r.integer(m.get("down_med"), f"{path}.down_med", 0, MAX_U32),
                maintenance_file=Path(maintenance) if maintenance else None,
            )
        )
    return tuple(result)
