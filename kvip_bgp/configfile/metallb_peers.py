"""BGPPeer and BFDProfile to ``bgp``; the bookkeeping shared by the MetalLB importer."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
SECRETS_DIR: Final = "/etc/kvip-bgp/secrets"


@dataclass
class Conversion:
    """The config being built and what could not be carried over (``where: why``)."""

    config: dict[str, Any] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)

    def lose(self, where: str, why: str) -> None:
        self.lost.append(f"{where}: {why}")


def duration(text: Any) -> float:
    """A Go/metav1 duration (``9m0s``, ``90s``, ``1h``) in seconds."""
    if not isinstance(text, str) or not text or _DURATION.sub("", text) != "":
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _UNIT[u] for n, u in _DURATION.findall(text))


def labels(selectors: Any, where: str, out: Conversion) -> dict[str, str] | None:
    """One ``matchLabels``-only selector maps to a kvip-bgp selector; the rest is lost."""
    if not selectors:
        return {}
    if not isinstance(selectors, list) or len(selectors) != 1:
        out.lose(where, "several selectors (OR): kvip-bgp takes one set of labels")
        return None
    selector = selectors[0] or {}
    if selector.get("matchExpressions"):
        out.lose(f"{where}[0].matchExpressions", "kvip-bgp selectors are matchLabels only")
        return None
    return {str(k): str(v) for k, v in (selector.get("matchLabels") or {}).items()}


def rest(spec: Mapping[str, Any], handled: Iterable[str], where: str, out: Conversion) -> None:
    for name in spec:
        if name not in handled:
            out.lose(f"{where}.{name}", "not a field this importer knows; not carried over")


def same(values: Sequence[Any], where: str, what: str, out: Conversion) -> Any:
    """The one value all objects agree on (kvip-bgp has it once, MetalLB per object)."""
    distinct = sorted({repr(v): v for v in values}.items())
    if len(distinct) > 1:
        out.lose(
            where,
            f"differs between objects ({', '.join(d for d, _ in distinct)}); "
            f"kvip-bgp has one {what}: took the first",
        )
    return values[0] if values else None


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


_PEER_FIELDS: Final = {
    "myASN", "peerASN", "peerAddress", "peerPort", "sourceAddress", "holdTime", "routerID",
    "nodeSelectors", "password", "passwordSecret", "bfdProfile", "enableGracefulRestart",
    "ebgpMultiHop",
}  # fmt: skip
_PEER_LOST: Final = {
    "keepaliveTime": "ExaBGP sends keepalives at a third of the hold time",
    "connectTime": "ExaBGP's connect retry is not configurable",
    "vrf": "kvip-bgp peers in the default VRF only",
    "interface": "unnumbered BGP (peering over an interface) is not supported",
    "dynamicASN": "the peer's ASN must be given (peerASN)",
    "localASN": "one local ASN for every session (bgp.asn)",
    "disableMP": "kvip-bgp sends each family its own NLRI already (IPv4 and IPv6)",
    "dualStackAddressFamily": "IPv4 and IPv6 VIPs go to every peer with a next hop",
}


def peers(
    objects: Sequence[Mapping[str, Any]],
    bfd: Mapping[str, Mapping[str, Any]],
    router_id: str | None,
    out: Conversion,
) -> None:
    peers: list[dict[str, Any]] = []
    my_asns, hold_times, restart, router_ids = [], [], [], []
    for obj in objects:
        spec = obj.get("spec") or {}
        name, where = name_of(obj), f"BGPPeer/{name_of(obj)}.spec"
        for key, why in _PEER_LOST.items():
            if spec.get(key) not in (None, "", False):
                out.lose(f"{where}.{key}", why)
        rest(spec, _PEER_FIELDS | set(_PEER_LOST), where, out)
        peer: dict[str, Any] = {"address": spec.get("peerAddress"), "asn": spec.get("peerASN")}
        if spec.get("peerPort") not in (None, 179):
            peer["port"] = spec["peerPort"]
        if spec.get("sourceAddress"):
            peer["local_address"] = spec["sourceAddress"]
        if spec.get("ebgpMultiHop"):
            peer["ttl"] = 255
        if spec.get("password") or spec.get("passwordSecret"):
            peer["password_file"] = f"{SECRETS_DIR}/{name}"
            source = "spec.password" if spec.get("password") else "the Secret in passwordSecret"
            out.lose(
                f"{where}.{'password' if spec.get('password') else 'passwordSecret'}",
                f"write {source} into {SECRETS_DIR}/{name} (the chart: bgp.passwords and "
                "the peer's passwordSecretKey)",
            )
        selector = labels(spec.get("nodeSelectors"), f"{where}.nodeSelectors", out)
        if selector:
            peer["node_selector"] = selector
        if spec.get("bfdProfile"):
            peer["bfd"] = _bfd(spec["bfdProfile"], bfd, spec, where, out)
        twin = next((p for p in peers if (p["address"], p.get("port")) == (
            peer["address"], peer.get("port"))), None)  # fmt: skip
        if twin is not None:
            out.lose(
                where,
                f"a second session to {peer['address']}: kvip-bgp has one per "
                "address and port (node_selector picks the nodes); kept the first",
            )
        else:
            peers.append(peer)
        if spec.get("myASN") is not None:
            my_asns.append(spec["myASN"])
        if spec.get("holdTime"):
            try:
                hold_times.append(round(duration(spec["holdTime"])))
            except ValueError as error:
                out.lose(f"{where}.holdTime", str(error))
        restart.append(bool(spec.get("enableGracefulRestart")))
        if spec.get("routerID"):
            router_ids.append(spec["routerID"])
    bgp: dict[str, Any] = {"asn": same(my_asns, "BGPPeer.spec.myASN", "local ASN", out)}
    rid = router_id or same(router_ids, "BGPPeer.spec.routerID", "router_id", out)
    if rid:
        bgp["router_id"] = rid
    else:
        out.lose(
            "bgp.router_id",
            "MetalLB takes each node's address: set it per node (the "
            "chart does, from status.hostIP), or pass --router-id",
        )
    if hold_times:
        bgp["hold_time"] = same(hold_times, "BGPPeer.spec.holdTime", "hold time", out)
    # MetalLB's default is no graceful restart; kvip-bgp's is 120 s.
    bgp["graceful_restart"] = (
        120 if same(restart, "BGPPeer.spec.enableGracefulRestart", "setting", out) else 0
    )
    bgp["peers"] = peers
    out.config["bgp"] = bgp


def _bfd(
    profile: str,
    profiles: Mapping[str, Mapping[str, Any]],
    peer: Mapping[str, Any],
    where: str,
    out: Conversion,
) -> dict[str, Any]:
    if profile not in profiles:
        out.lose(
            f"{where}.bfdProfile",
            f"BFDProfile {profile!r} is not among the inputs: its defaults (300/300/3) are used",
        )
        spec: Mapping[str, Any] = {}
    else:
        spec = profiles[profile]
    if not peer.get("sourceAddress"):
        out.lose(
            f"{where}.bfdProfile",
            "kvip-bgp's BFD binds to local_address: set bgp.peers[].local_address per node",
        )
    timers = {"min_rx": "receiveInterval", "min_tx": "transmitInterval",
              "multiplier": "detectMultiplier"}  # fmt: skip
    result = {ours: spec[theirs] for ours, theirs in timers.items() if theirs in spec}
    for name in spec:
        if name not in timers.values():
            out.lose(
                f"BFDProfile/{profile}.spec.{name}",
                "kvip-bgp runs single-hop async BFD without echo, passive mode or TTL checks",
            )
    return result
