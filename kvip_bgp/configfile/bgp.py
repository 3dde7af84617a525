"""The ``bgp`` section (the sessions and their peers) and route attributes (``advertise``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kvip_bgp.configfile.reader import Reader
from kvip_bgp.domain.config import BfdTimers, BgpConfig, Peer
from kvip_bgp.domain.model import Community, IPAddress, LargeCommunity, RouteAttributes


def parse_bgp(r: Reader, value: Any, require_peers: bool) -> BgpConfig | None:
    if value is None:
        r.fail("bgp", "required")
        return None
    if not isinstance(value, Mapping):
        r.mapping(value, "bgp", ())  # records "must be a mapping"; nothing else to check
        return None
    m = r.section(value, "bgp")
    if m.get("asn") is None:
        r.fail("bgp.asn", "required")
    asn = r.opt_int_key(m, "bgp", "asn")
    hold_time = r.int_key(m, "bgp", "hold_time")
    if 0 < hold_time < 3:
        r.fail("bgp.hold_time", "must be 0 or 3..65535 (RFC 4271)")
    graceful_restart = r.int_key(m, "bgp", "graceful_restart")
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
        hold_time=hold_time,
        graceful_restart=graceful_restart,
        peers=peers,
    )


def _parse_peer(r: Reader, value: Any, path: str) -> Peer | None:
    m = r.section(value, path)
    if not m:
        if value is None or isinstance(value, Mapping):
            r.fail(path, "empty peer")
        return None
    for required in ("address", "asn"):
        if m.get(required) is None:
            r.fail(f"{path}.{required}", "required")
    address = r.address(m.get("address"), f"{path}.address")
    asn = r.opt_int_key(m, path, "asn")
    port = r.int_key(m, path, "port")
    local_address = r.address(m.get("local_address"), f"{path}.local_address")
    if address and local_address and address.version != local_address.version:
        r.fail(f"{path}.local_address", "must be of the same IP version as address")
    ttl = r.int_key(m, path, "ttl")

    password_file: Path | None = None
    password: str | None = None
    raw_pw = r.str_key(m, path, "password_file")
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

    selector = r.labels(m.get("node_selector"), f"{path}.node_selector")

    next_hop_v6 = r.address_of(m.get("next_hop_v6"), f"{path}.next_hop_v6", ipaddress.IPv6Address)
    next_hop_v4 = r.address_of(m.get("next_hop_v4"), f"{path}.next_hop_v4", ipaddress.IPv4Address)

    bfd = _parse_bfd(r, m.get("bfd"), f"{path}.bfd", ttl, local_address)

    if address is None or asn is None:
        return None
    return Peer(
        address=address,
        asn=asn,
        port=port,
        local_address=local_address,
        password_file=password_file,
        password=password,
        ttl=ttl,
        node_selector=selector,
        next_hop_v6=next_hop_v6,
        next_hop_v4=next_hop_v4,
        bfd=bfd,
    )


def _parse_bfd(
    r: Reader, value: Any, path: str, ttl: int, local_address: IPAddress | None
) -> BfdTimers | None:
    """Single-hop BFD (RFC 5881): one hop away, from a known local address."""
    if value is None:
        return None
    m = r.section(value, path)
    if not isinstance(value, Mapping):
        return None
    # FRR accepts 10..60000 ms; below 10 ms no Python process keeps the rhythm.
    min_rx = r.int_key(m, path, "min_rx")
    min_tx = r.int_key(m, path, "min_tx")
    multiplier = r.int_key(m, path, "multiplier")
    if ttl > 1:
        r.fail(path, "BFD is single-hop only (RFC 5881): not with ttl > 1")
    if local_address is None:
        r.fail(path, "needs local_address: BFD binds its UDP sockets to it")
    return BfdTimers(min_rx=min_rx, min_tx=min_tx, multiplier=multiplier)


def parse_attributes(r: Reader, value: Any, path: str) -> RouteAttributes | None:
    m = r.section(value, path)
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
    local_pref = r.opt_int_key(m, path, "local_preference")
    med = r.opt_int_key(m, path, "med")
    return RouteAttributes(
        communities=tuple(communities),
        large_communities=tuple(large),
        local_preference=local_pref,
        med=med,
    )
