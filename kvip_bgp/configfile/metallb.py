"""``kvip-bgp import metallb FILE...``: MetalLB resources to a kvip-bgp config.

Every field of every resource is either carried over or named in the report, with the
reason: a migration that silently drops a community or a node selector announces
something else than before. Covered: IPAddressPool, BGPPeer (v1beta1 and v1beta2),
BGPAdvertisement, Community, BFDProfile; L2Advertisement and anything else is reported.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from kvip_bgp.configfile import keys
from kvip_bgp.configfile.metallb_peers import Conversion, labels, name_of, peers, rest
from kvip_bgp.configfile.reader import type_name

GROUP: Final = "metallb.io/"


def convert(objects: Sequence[Mapping[str, Any]], router_id: str | None = None) -> Conversion:
    out = Conversion()
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    seen: set[tuple[str, str, str]] = set()
    for obj in objects:
        kind, api = str(obj.get("kind")), str(obj.get("apiVersion", ""))
        name = (obj.get("metadata") or {}).get("name", "?")
        if not api.startswith(GROUP) or kind not in _KINDS:
            out.lose(f"{kind}/{name}", f"{api or 'no apiVersion'} {kind} is not converted")
            continue
        identity = (kind, str((obj.get("metadata") or {}).get("namespace", "")), str(name))
        if identity in seen:  # the same object in two files: one pool, not two
            out.lose(f"{kind}/{name}", "listed more than once in the inputs: kept the first")
            continue
        seen.add(identity)
        by_kind.setdefault(kind, []).append(obj)
    communities = _communities(by_kind.get("Community", []), out)
    bfd = {name_of(p): p.get("spec") or {} for p in by_kind.get("BFDProfile", [])}
    peers(by_kind.get("BGPPeer", []), bfd, router_id, out)
    pools = _pools(by_kind.get("IPAddressPool", []), out)
    _advertisements(by_kind.get("BGPAdvertisement", []), pools, communities, out)
    for l2 in by_kind.get("L2Advertisement", []):
        out.lose(f"L2Advertisement/{name_of(l2)}", "kvip-bgp announces over BGP only (no ARP/NDP)")
    return out


def _communities(objects: Sequence[Mapping[str, Any]], out: Conversion) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for obj in objects:
        where = f"Community/{name_of(obj)}.spec"
        spec = obj.get("spec") or {}
        rest(spec, ("communities",), where, out)
        for entry in spec.get("communities") or []:
            aliases[str(entry.get("name"))] = str(entry.get("value"))
    return aliases


_POOL_FIELDS: Final = {"addresses", "autoAssign", "avoidBuggyIPs", "serviceAllocation"}


def _pools(objects: Sequence[Mapping[str, Any]], out: Conversion) -> list[str]:
    pools: list[dict[str, Any]] = []
    allowed: list[str] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        where = f"IPAddressPool/{name_of(obj)}.spec"
        rest(spec, _POOL_FIELDS, where, out)
        addresses = [str(a).replace(" ", "") for a in spec.get("addresses") or []]
        pool: dict[str, Any] = {"name": name_of(obj), "addresses": addresses}
        if spec.get("autoAssign") is False:
            pool["auto_assign"] = False
        if spec.get("avoidBuggyIPs"):
            pool["avoid_buggy_ips"] = True
        allocation = spec.get("serviceAllocation") or {}
        for key in allocation:
            if key not in ("priority", "namespaces", "namespaceSelectors", "serviceSelectors"):
                out.lose(f"{where}.serviceAllocation.{key}", "not carried over")
        if allocation.get("priority"):
            pool["priority"] = allocation["priority"]
        if allocation.get("namespaces"):
            pool["namespaces"] = list(allocation["namespaces"])
        if allocation.get("namespaceSelectors"):
            out.lose(
                f"{where}.serviceAllocation.namespaceSelectors",
                "kvip-bgp selects namespaces by name only (namespaces)",
            )
        selector = labels(
            allocation.get("serviceSelectors"), f"{where}.serviceAllocation.serviceSelectors", out
        )
        if selector:
            pool["service_selector"] = selector
        for address in addresses:
            allowed.extend(_cidrs(address, f"{where}.addresses", out))
        pools.append(pool)
    if pools:
        out.config["vips"] = {"allowed": list(dict.fromkeys(allowed))}
        out.config["ipam"] = {"pools": pools}
    else:
        out.lose("vips.allowed", "no IPAddressPool among the inputs: list the VIP ranges")
    return [p["name"] for p in pools]


def _cidrs(text: str, where: str, out: Conversion) -> list[str]:
    """The smallest CIDR holding a pool's entry: a pool range must lie inside one range
    of vips.allowed (with pools, Service VIPs come from the pools only anyway)."""
    try:
        if "-" in text:
            first, last = (ipaddress.ip_address(p) for p in text.split("-", 1))
            if first.version != last.version or int(first) > int(last):
                raise ValueError("not a first-last range")
            network = ipaddress.ip_network(first)
            while last not in network:
                network = network.supernet()
            return [str(network)]
        return [str(ipaddress.ip_network(text, strict=False))]
    except ValueError as error:
        out.lose(where, f"{text!r}: {error}")
        return []


_ADV_FIELDS: Final = {
    "communities", "localPref", "ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors",
    "peers", "aggregationLength", "aggregationLengthV6",
}  # fmt: skip


def _advertisements(
    objects: Sequence[Mapping[str, Any]],
    pools: Sequence[str],
    aliases: Mapping[str, str],
    out: Conversion,
) -> None:
    if not objects:
        if pools:
            out.lose(
                "BGPAdvertisement",
                "none among the inputs: MetalLB announced no pool "
                "over BGP; kvip-bgp announces every Service VIP it serves",
            )
        return
    advertise: dict[str, Any] = {}
    for index, obj in enumerate(objects):
        spec, where = obj.get("spec") or {}, f"BGPAdvertisement/{name_of(obj)}.spec"
        rest(spec, _ADV_FIELDS, where, out)
        attributes = _attributes(spec, aliases, where, out)
        if index == 0:
            advertise = attributes
        elif attributes and attributes != advertise:
            out.lose(
                f"{where}",
                f"route attributes {attributes} besides the first "
                "advertisement's: kvip-bgp has one set (advertise); per-Service "
                "annotations (kvip-bgp.io/communities, local-preference) set others",
            )
        _advertisement_scope(spec, pools, where, out)
    if advertise:
        out.config["advertise"] = advertise


def _attributes(
    spec: Mapping[str, Any], aliases: Mapping[str, str], where: str, out: Conversion
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    standard, large = [], []
    for i, raw in enumerate(spec.get("communities") or []):
        value = aliases.get(str(raw), str(raw))
        if value.startswith("large:"):
            large.append(value.removeprefix("large:"))
        elif re.fullmatch(r"\d+:\d+", value):
            standard.append(value)
        else:
            out.lose(f"{where}.communities[{i}]", f"{raw!r} is no community nor a known alias")
    if standard:
        attributes["communities"] = standard
    if large:
        attributes["large_communities"] = large
    if spec.get("localPref") is not None:
        attributes["local_preference"] = spec["localPref"]
    return attributes


def _advertisement_scope(
    spec: Mapping[str, Any], pools: Sequence[str], where: str, out: Conversion
) -> None:
    for key, host in (("aggregationLength", 32), ("aggregationLengthV6", 128)):
        if spec.get(key) not in (None, host):
            out.lose(f"{where}.{key}", f"kvip-bgp announces host routes (/{host}) only")
    if spec.get("ipAddressPools") and set(spec["ipAddressPools"]) != set(pools):
        out.lose(
            f"{where}.ipAddressPools",
            "kvip-bgp announces every pool: the advertisement "
            f"named {sorted(spec['ipAddressPools'])} of {sorted(pools)}",
        )
    for key, why in (
        ("ipAddressPoolSelectors", "kvip-bgp announces every pool"),
        (
            "nodeSelectors",
            "every node with a ready endpoint announces (or every node, "
            "externalTrafficPolicy: Cluster); peers' node_selector chooses sessions",
        ),
        ("peers", "every VIP goes to every session of the node"),
    ):
        if spec.get(key):
            out.lose(f"{where}.{key}", why)


_KINDS: Final = {
    "IPAddressPool", "BGPPeer", "BGPAdvertisement", "Community", "BFDProfile", "L2Advertisement",
}  # fmt: skip


def read(paths: Sequence[Path]) -> list[Mapping[str, Any]]:
    objects: list[Mapping[str, Any]] = []
    for path in paths:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is None:
                continue
            if not isinstance(document, Mapping):
                raise ValueError(f"{path}: a document is a {type_name(document)}, not an object")
            items = (
                document.get("items") if str(document.get("kind", "")).endswith("List") else None
            )
            objects.extend(items if isinstance(items, list) else [document])
    return objects


def render(conversion: Conversion) -> str:
    lines = ["# Converted by `kvip-bgp import metallb`."]
    if conversion.lost:
        lines.append("# Not carried over (each needs a decision):")
        lines += [f"#   {item}" for item in conversion.lost]
    order = {name: i for i, name in enumerate(keys.names(""))}
    ordered = dict(sorted(conversion.config.items(), key=lambda item: order[item[0]]))
    return "\n".join(lines) + "\n" + yaml.safe_dump(ordered, sort_keys=False)


def main(paths: Sequence[Path], router_id: str | None = None) -> int:
    try:
        conversion = convert(read(paths), router_id)
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"kvip-bgp import metallb: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(render(conversion))
    for item in conversion.lost:
        print(f"not carried over: {item}", file=sys.stderr)
    return 0
