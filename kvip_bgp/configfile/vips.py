"""The ``vips`` section (where VIPs may come from, how they are bound) and ``static`` VIPs."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvip_bgp.configfile import keys
from kvip_bgp.configfile.reader import Reader, type_name
from kvip_bgp.domain.config import AllowedRange, HealthCheck, StaticVip, VipConfig
from kvip_bgp.domain.model import IPAddress, IPNetwork


def _parse_network(r: Reader, value: Any, path: str) -> IPNetwork | None:
    if not isinstance(value, str):
        r.fail(path, f"must be a CIDR string, got {type_name(value)}")
        return None
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as error:
        r.fail(path, f"not a valid CIDR: {error}")
        return None


def parse_vips(r: Reader, value: Any) -> VipConfig | None:
    if value is None:
        r.fail("vips", "required (vips.allowed lists the ranges VIPs may come from)")
        return None
    if not isinstance(value, Mapping):
        r.mapping(value, "vips", ())  # records "must be a mapping"; nothing else to check
        return None
    m = r.section(value, "vips")
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
            entry = r.section(item, path)
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
    interface: str | None = keys.default("vips.interface")
    if "interface" in m:  # null is a value: "do not bind"
        interface = None if m["interface"] is None else r.string(m["interface"], "vips.interface")
    bind = r.choice_key(m, "vips", "bind")
    if bind == "local-route" and interface is None:
        r.fail("vips.bind", "local-route needs vips.interface (the device of the local routes)")
    return VipConfig(
        allowed=tuple(ranges),
        interface=interface,
        bind="address"
        if bind == "address"
        else "local-route"
        if bind == "local-route"
        else "by-family",
        unbind_delay=r.number_key(m, "vips", "unbind_delay"),
    )


def _parse_check(r: Reader, value: Any, path: str) -> HealthCheck | None:
    m = r.section(value, path)
    kinds = [k for k in ("tcp", "http", "exec") if m.get(k) is not None]
    if len(kinds) != 1:
        r.fail(path, "needs exactly one of tcp, http, exec")
        return None
    tcp = r.host_port(m["tcp"], f"{path}.tcp") if "tcp" in kinds else None
    http = r.str_key(m, path, "http")
    if http is not None and not http.startswith(("http://", "https://")):
        r.fail(f"{path}.http", f"must be an http:// or https:// URL, got {http!r}")
    exec_argv: tuple[str, ...] | None = None
    if "exec" in kinds:
        argv = r.listing(m["exec"], f"{path}.exec")
        if not argv or not all(isinstance(a, str) for a in argv):
            r.fail(f"{path}.exec", "must be a non-empty list of strings (argv)")
        else:
            exec_argv = tuple(argv)
    ca_file = r.str_key(m, path, "ca_file")
    server_name = r.str_key(m, path, "server_name")
    insecure = r.bool_key(m, path, "insecure")
    for name in ("ca_file", "server_name", "insecure"):
        if m.get(name) is not None and not (http or "").startswith("https://"):
            r.fail(f"{path}.{name}", "only with an https:// URL in http")
    if insecure and (ca_file or server_name):
        r.fail(f"{path}.insecure", "contradicts ca_file/server_name (they verify)")
    interval = r.number_key(m, path, "interval")
    timeout = r.number_key(m, path, "timeout")
    if timeout > interval:
        r.fail(f"{path}.timeout", f"must not exceed interval ({interval})")
    return HealthCheck(
        tcp=tcp,
        http=http,
        expect=r.int_key(m, path, "expect"),
        exec_argv=exec_argv,
        interval=interval,
        timeout=timeout,
        rise=r.int_key(m, path, "rise"),
        fall=r.int_key(m, path, "fall"),
        ca_file=Path(ca_file) if ca_file else None,
        server_name=server_name,
        insecure=insecure,
    )


def parse_static(r: Reader, value: Any, vips: VipConfig | None) -> tuple[StaticVip, ...]:
    result: list[StaticVip] = []
    seen: set[IPAddress] = set()
    for i, item in enumerate(r.listing(value, "static")):
        path = f"static[{i}]"
        m = r.section(item, path)
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
        maintenance = r.str_key(m, path, "maintenance_file")
        result.append(
            StaticVip(
                address=address,
                check=check,
                down_med=r.opt_int_key(m, path, "down_med"),
                maintenance_file=Path(maintenance) if maintenance else None,
            )
        )
    return tuple(result)
