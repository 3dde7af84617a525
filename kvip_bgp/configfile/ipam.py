"""The ``ipam`` section: address pools, each inside ``vips.allowed``, none overlapping."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from kvip_bgp.configfile.reader import Reader, type_name
from kvip_bgp.domain.config import VipConfig
from kvip_bgp.domain.ipam import AddressRange, Pool, parse_range

# A DNS label (RFC 1123), as Kubernetes names pools and annotation values expect.
_DNS_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_ipam(r: Reader, value: Any, vips: VipConfig | None) -> tuple[Pool, ...]:
    """``ipam.pools``; absent or empty: no allocation (VIPs only as requested)."""
    m = r.section(value, "ipam")
    pools: list[tuple[int, Pool]] = []
    for index, item in enumerate(r.listing(m.get("pools"), "ipam.pools")):
        parsed = _parse_pool(r, item, f"ipam.pools[{index}]", vips)
        if parsed is not None:
            pools.append((index, parsed))
    seen: dict[str, int] = {}
    for index, pool in pools:
        if pool.name in seen:
            r.fail(f"ipam.pools[{index}].name", f"{pool.name!r} is also pools[{seen[pool.name]}]")
        seen.setdefault(pool.name, index)
    for i, (index_a, a) in enumerate(pools):
        for index_b, b in pools[i + 1 :]:
            for range_a in a.ranges:
                for range_b in b.ranges:
                    if range_a.overlaps(range_b):
                        r.fail(
                            f"ipam.pools[{index_b}].addresses",
                            f"{range_b} overlaps {range_a} of pools[{index_a}] ({a.name})",
                        )
    return tuple(pool for _, pool in pools)


def _parse_pool(r: Reader, value: Any, path: str, vips: VipConfig | None) -> Pool | None:
    m = r.section(value, path)
    if not m:
        if value is None or isinstance(value, Mapping):
            r.fail(path, "empty pool")
        return None
    name = r.str_key(m, path, "name")
    if name is None:
        r.fail(f"{path}.name", "required")
    elif not _DNS_LABEL.match(name):
        r.fail(f"{path}.name", f"{name!r} is not a DNS label (a-z, 0-9, '-', at most 63)")
    ranges = _parse_addresses(r, m.get("addresses"), f"{path}.addresses", vips)
    namespaces = []
    for i, ns in enumerate(r.listing(m.get("namespaces"), f"{path}.namespaces")):
        if isinstance(ns, str) and _DNS_LABEL.match(ns):
            namespaces.append(ns)
        else:
            r.fail(f"{path}.namespaces[{i}]", f"must be a namespace name, got {ns!r}")
    selector = r.labels(m.get("service_selector"), f"{path}.service_selector")
    auto_assign = r.bool_key(m, path, "auto_assign")
    avoid_buggy = r.bool_key(m, path, "avoid_buggy_ips")
    priority = r.int_key(m, path, "priority")
    if name is None or not ranges:
        return None
    return Pool(
        name=name,
        ranges=ranges,
        auto_assign=auto_assign,
        avoid_buggy_ips=avoid_buggy,
        namespaces=frozenset(namespaces),
        service_selector=selector,
        priority=priority,
    )


def _parse_addresses(
    r: Reader, value: Any, path: str, vips: VipConfig | None
) -> tuple[AddressRange, ...]:
    if value is None:
        r.fail(path, "required: CIDRs or first-last ranges")
        return ()
    ranges = []
    for i, item in enumerate(r.listing(value, path)):
        if not isinstance(item, str):
            r.fail(f"{path}[{i}]", f"must be a CIDR or first-last range, got {type_name(item)}")
            continue
        try:
            parsed = parse_range(item)
        except ValueError as error:
            r.fail(f"{path}[{i}]", str(error))
            continue
        if vips is not None and not any(
            parsed.first in allowed.cidr and parsed.last in allowed.cidr
            for allowed in vips.allowed
            if allowed.cidr.version == parsed.first.version
        ):
            r.fail(f"{path}[{i}]", f"{item} is not inside one range of vips.allowed")
            continue
        ranges.append(parsed)
    if not ranges and value == []:
        r.fail(path, "at least one CIDR or range")
    return tuple(ranges)
