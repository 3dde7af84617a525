"""ExaBGP config rendering, command lines and API output parsing (pure parts).

One real-part check is cheap enough to live here: ExaBGP's own ``validate`` accepts the
configuration files we render.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvip_bgp.bgp import commands as command_lines
from kvip_bgp.bgp import config as exabgp
from kvip_bgp.bgp.api import parse_api_line
from kvip_bgp.bgp.commands import (
    MAX_LINE_BYTES,
    MAX_PREFIXES_PER_LINE,
    Command,
    NextHopPolicy,
    announce_commands,
    end_of_rib_commands,
    render_attributes,
    withdraw_commands,
)
from kvip_bgp.bgp.config import render_config
from kvip_bgp.configfile.load import parse
from kvip_bgp.domain import config
from kvip_bgp.domain.config import Peer
from kvip_bgp.domain.model import (
    Advertisement,
    Community,
    LargeCommunity,
    RouteAttributes,
    address_order,
)
from kvip_bgp.runtime.messages import CommandAck, ExabgpShutdown, PeerState

API_SOCKET = Path("/run/kvip-bgp/api.sock")
PASSWORD = "s3cret-Md5_pw"
EXABGP = Path(sys.executable).parent / "exabgp"

BASE: dict[str, Any] = {
    "node_name": "worker-1",
    "bgp": {
        "asn": 64512,
        "peers": [{"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"}],
    },
    "vips": {"allowed": ["198.51.100.0/24", "2001:db8:100::/64"]},
}


def make_config(tmp_path: Path, bgp: dict[str, Any] | None = None, **peer: Any) -> config.Config:
    """BASE with ``bgp`` keys and first-peer keys replaced; ``password=True`` adds a file."""
    document = copy.deepcopy(BASE)
    document["bgp"].update(bgp or {})
    if peer.pop("password", False):
        secret = tmp_path / "tor1.md5"
        secret.write_text(PASSWORD + "\n", encoding="utf-8")
        peer["password_file"] = str(secret)
    document["bgp"]["peers"][0].update(peer)
    return parse(document, environ={})


def neighbor_block(text: str, address: str) -> str:
    start = text.index(f"neighbor {address} {{")
    return text[start : text.index("\n}", start)]


# --------------------------------------------------------------------------- render_config

RENDER_CASES = [
    (
        "defaults",
        {},
        {},
        False,
        [
            "process kvip-bgp {",
            f"run {sys.executable} -m kvip_bgp.bgp.relay {API_SOCKET};",
            "encoder json;",
            "neighbor 192.0.2.2 {",
            "router-id 192.0.2.1;",
            "local-address 192.0.2.1;",
            "local-as 64512;",
            "peer-as 64500;",
            "hold-time 30;",
            "outgoing-ttl 1;",
            "family { ipv4 unicast; ipv6 unicast; }",
            "capability { graceful-restart 120; }",
            "manual-eor true;",
            "api { processes [ kvip-bgp ]; neighbor-changes; }",
        ],
        ["md5-password", "connect"],
    ),
    (
        "md5-redacted-by-default",
        {},
        {"password": True},
        False,
        ['md5-password "<redacted: read from '],
        [PASSWORD],
    ),
    (
        "md5-shown-with-secrets",
        {},
        {"password": True},
        True,
        [f'md5-password "{PASSWORD}";'],
        ["redacted"],
    ),
    # eBGP with ttl 1 is single hop: say so, or ExaBGP sends with the kernel's default TTL.
    ("ebgp-ttl-1-single-hop", {}, {"ttl": 1}, False, ["outgoing-ttl 1;"], []),
    ("ebgp-ttl-2-multihop", {}, {"ttl": 2}, False, ["outgoing-ttl 2;"], []),
    ("ebgp-ttl-255-multihop", {}, {"ttl": 255}, False, ["outgoing-ttl 255;"], []),
    # iBGP is multihop by nature: only an explicit ttl > 1 limits it.
    ("ibgp-ttl-1-unlimited", {}, {"asn": 64512, "ttl": 1}, False, [], ["outgoing-ttl"]),
    ("ibgp-ttl-3-limited", {}, {"asn": 64512, "ttl": 3}, False, ["outgoing-ttl 3;"], []),
    ("port-179-no-connect", {}, {"port": 179}, False, [], ["connect"]),
    ("port-1179-connect", {}, {"port": 1179}, False, ["connect 1179;"], []),
    (
        "graceful-restart-off",
        {"graceful_restart": 0},
        {},
        False,
        [],
        ["graceful-restart", "manual-eor"],
    ),
    (
        "graceful-restart-on",
        {"graceful_restart": 300},
        {},
        False,
        ["capability { graceful-restart 300; }", "manual-eor true;"],
        [],
    ),
    (
        "router-id-and-hold-time",
        {"router_id": "10.255.0.7", "hold_time": 9},
        {},
        False,
        ["router-id 10.255.0.7;", "hold-time 9;"],
        [],
    ),
    (
        "no-local-address",
        {"router_id": "10.0.0.1"},
        {"local_address": None},
        False,
        [],
        ["local-address"],
    ),
]


@pytest.mark.parametrize(
    ("bgp", "peer", "show_secrets", "present", "absent"),
    [pytest.param(b, p, s, pr, ab, id=i) for i, b, p, s, pr, ab in RENDER_CASES],
)
def test_render_config(
    tmp_path: Path,
    bgp: dict[str, Any],
    peer: dict[str, Any],
    show_secrets: bool,
    present: list[str],
    absent: list[str],
) -> None:
    cfg = make_config(tmp_path, bgp, **peer)
    text = render_config(cfg, API_SOCKET, show_secrets=show_secrets)
    for needle in present:
        assert needle in text, needle
    for needle in absent:
        assert needle not in text, needle
    assert PASSWORD not in text or show_secrets


def test_render_config_redaction_names_the_file(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, password=True)
    text = render_config(cfg, API_SOCKET)
    assert f'md5-password "<redacted: read from {tmp_path / "tor1.md5"}>";' in text


def test_render_config_narrows_peers(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "peers": [
                {"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"},
                {"address": "192.0.2.6", "asn": 64501, "local_address": "192.0.2.5"},
            ]
        },
    )
    everyone = render_config(cfg, API_SOCKET)
    assert "neighbor 192.0.2.2 {" in everyone and "neighbor 192.0.2.6 {" in everyone
    only_second = render_config(cfg, API_SOCKET, peers=cfg.bgp.peers[1:], python="/usr/bin/py")
    assert "neighbor 192.0.2.2 {" not in only_second
    assert "neighbor 192.0.2.6 {" in only_second
    assert "run /usr/bin/py -m kvip_bgp.bgp.relay" in only_second


VALIDATE_CASES = [
    ("ipv4-peer-with-md5", {}, {"password": True}),
    ("multihop-other-port", {}, {"ttl": 5, "port": 1179, "password": True}),
    ("graceful-restart-off", {"graceful_restart": 0, "hold_time": 0}, {}),
    (
        "dual-stack-peers",
        {
            "peers": [
                {
                    "address": "192.0.2.2",
                    "asn": 64500,
                    "local_address": "192.0.2.1",
                    "next_hop_v6": "2001:db8::1",
                },
                {"address": "2001:db8::2", "asn": 4200000000, "local_address": "2001:db8::1"},
                {"address": "198.18.0.1", "asn": 64512, "ttl": 3},
            ]
        },
        {},
    ),
]


@pytest.mark.skipif(not EXABGP.exists(), reason="exabgp is not installed in this venv")
@pytest.mark.parametrize(("bgp", "peer"), [pytest.param(b, p, id=i) for i, b, p in VALIDATE_CASES])
def test_exabgp_validates_rendered_config(
    tmp_path: Path, bgp: dict[str, Any], peer: dict[str, Any]
) -> None:
    cfg = make_config(tmp_path, bgp, **peer)
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(cfg, tmp_path / "api.sock", show_secrets=True), encoding="utf-8")
    result = subprocess.run(
        [str(EXABGP), "validate", "-n", "-r", str(conf)],
        cwd=tmp_path,
        env=exabgp.exabgp_environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- attributes


def attrs(
    communities: tuple[str, ...] = (),
    large: tuple[str, ...] = (),
    local_preference: int | None = None,
    med: int | None = None,
    as_path_prepend: int = 0,
) -> RouteAttributes:
    return RouteAttributes(
        communities=tuple(Community.parse(c) for c in communities),
        large_communities=tuple(LargeCommunity.parse(c) for c in large),
        local_preference=local_preference,
        med=med,
        as_path_prepend=as_path_prepend,
    )


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        pytest.param(attrs(), "", id="empty"),
        pytest.param(
            attrs(("64512:200", "64512:100", "64512:100")),
            "community [64512:100 64512:200]",
            id="communities-sorted-unique",
        ),
        pytest.param(attrs(("no-export",)), "community [65535:65281]", id="well-known"),
        pytest.param(
            attrs(large=("64512:2:3", "64512:1:2")),
            "large-community [64512:1:2 64512:2:3]",
            id="large-communities",
        ),
        pytest.param(attrs(local_preference=0), "local-preference 0", id="local-pref-zero"),
        pytest.param(attrs(med=0), "med 0", id="med-zero"),
    ],
)
@pytest.mark.parametrize("ebgp", [True, False], ids=["ebgp", "ibgp"])
def test_render_attributes(attributes: RouteAttributes, expected: str, ebgp: bool) -> None:
    """Without a prepend the session type changes nothing."""
    assert render_attributes(attributes, 64512, ebgp) == expected


@pytest.mark.parametrize(
    ("prepend", "ebgp", "expected"),
    [
        # ExaBGP sends an explicit AS path verbatim, so on eBGP it carries our own AS too.
        pytest.param(1, True, "as-path [ 64512 64512 ]", id="prepend-1-ebgp"),
        # On iBGP our own AS in the path is a loop to every router of the AS: no prepend.
        pytest.param(1, False, "", id="prepend-1-ibgp"),
        pytest.param(3, True, "as-path [ 64512 64512 64512 64512 ]", id="prepend-3-ebgp"),
        pytest.param(3, False, "", id="prepend-3-ibgp"),
        pytest.param(10, True, "as-path [ " + "64512 " * 11 + "]", id="prepend-10-ebgp"),
    ],
)
def test_render_attributes_prepend_repeats_the_local_asn(
    prepend: int, ebgp: bool, expected: str
) -> None:
    assert render_attributes(attrs(as_path_prepend=prepend), 64512, ebgp) == expected


def test_render_attributes_everything_in_order() -> None:
    assert render_attributes(attrs(("1:1",), ("1:2:3",), 200, 50, 2), 4200000000) == (
        "community [1:1] large-community [1:2:3] local-preference 200 med 50 "
        "as-path [ 4200000000 4200000000 4200000000 ]"
    )


# --------------------------------------------------------------------------- commands


def peer(
    address: str, next_hop_v6: str | None = None, asn: int = 64500, next_hop_v4: str | None = None
) -> Peer:
    return Peer(
        address=ipaddress.ip_address(address),
        asn=asn,
        next_hop_v6=ipaddress.IPv6Address(next_hop_v6) if next_hop_v6 else None,
        next_hop_v4=ipaddress.IPv4Address(next_hop_v4) if next_hop_v4 else None,
    )


def adv(vip: str, attributes: RouteAttributes | None = None) -> Advertisement:
    return Advertisement(ipaddress.ip_address(vip), attributes or attrs())


V4_ONLY = NextHopPolicy((peer("192.0.2.2"),))
V6_ONLY = NextHopPolicy((peer("2001:db8::2"), peer("2001:db8::3")))
V4_WITH_NH = NextHopPolicy((peer("192.0.2.2", "2001:db8::1"),))
V6_WITH_NH4 = NextHopPolicy((peer("2001:db8::2", next_hop_v4="192.0.2.1"),))
MIXED = NextHopPolicy((peer("2001:db8::2"), peer("192.0.2.2", "2001:db8::1"), peer("192.0.2.6")))
TWO_V4_ONE_NH = NextHopPolicy((peer("192.0.2.2", "2001:db8::1"), peer("192.0.2.6")))
TWO_V4_SAME_NH = NextHopPolicy((peer("192.0.2.2", "2001:db8::1"), peer("192.0.2.6", "2001:db8::1")))
TWO_V4_OTHER_NH = NextHopPolicy(
    (peer("192.0.2.2", "2001:db8::1"), peer("192.0.2.6", "2001:db8::5"))
)
EBGP_AND_IBGP = NextHopPolicy((peer("192.0.2.2"), peer("192.0.2.6", asn=64512)))
IBGP_ONLY = NextHopPolicy((peer("192.0.2.2", asn=64512), peer("192.0.2.6", asn=64512)))
COMM = attrs(("64512:100",))

ANNOUNCE_CASES = [
    ("nothing", [], V4_ONLY, []),
    (
        "one-v4-no-attributes",
        [adv("198.51.100.1")],
        V4_ONLY,
        ["announce attributes next-hop self nlri 198.51.100.1/32"],
    ),
    (
        "groups-identical-attributes",
        [adv("198.51.100.2", COMM), adv("198.51.100.9"), adv("198.51.100.1", COMM)],
        V4_ONLY,
        [
            "announce attributes next-hop self community [64512:100] "
            "nlri 198.51.100.1/32 198.51.100.2/32",
            "announce attributes next-hop self nlri 198.51.100.9/32",
        ],
    ),
    (
        "equal-attributes-built-separately-group",
        [adv("198.51.100.1", attrs(("1:1", "2:2"))), adv("198.51.100.2", attrs(("2:2", "1:1")))],
        V4_ONLY,
        [
            "announce attributes next-hop self community [1:1 2:2] nlri 198.51.100.1/32 "
            "198.51.100.2/32"
        ],
    ),
    (
        # ExaBGP's "self" would be the router-id there, not necessarily our address.
        "v4-vip-on-v6-only-peers-without-next-hop-v4",
        [adv("198.51.100.1")],
        V6_ONLY,
        [],
    ),
    (
        "v4-vip-on-v6-session-with-next-hop-v4",
        [adv("198.51.100.1")],
        V6_WITH_NH4,
        ["announce attributes next-hop 192.0.2.1 nlri 198.51.100.1/32"],
    ),
    (
        "v6-over-v6-sessions-self",
        [adv("2001:db8:100::1", COMM)],
        V6_ONLY,
        ["announce attributes next-hop self community [64512:100] nlri 2001:db8:100::1/128"],
    ),
    (
        # One peer: a command for "every neighbor" is the same as naming it.
        "v6-over-only-v4-session-with-next-hop",
        [adv("2001:db8:100::1")],
        V4_WITH_NH,
        ["announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128"],
    ),
    ("v6-over-v4-session-without-next-hop", [adv("2001:db8:100::1")], V4_ONLY, []),
    (
        "v6-over-two-v4-sessions-one-without-next-hop",
        [adv("2001:db8:100::1"), adv("198.51.100.1")],
        TWO_V4_ONE_NH,
        [
            "announce attributes next-hop self nlri 198.51.100.1/32",
            "neighbor 192.0.2.2 announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128",
        ],
    ),
    (
        "v6-over-two-v4-sessions-same-next-hop",
        [adv("2001:db8:100::1")],
        TWO_V4_SAME_NH,
        ["announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128"],
    ),
    (
        "v6-over-two-v4-sessions-other-next-hops",
        [adv("2001:db8:100::1")],
        TWO_V4_OTHER_NH,
        [
            "neighbor 192.0.2.2 announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128",
            "neighbor 192.0.2.6 announce attributes next-hop 2001:db8::5 nlri 2001:db8:100::1/128",
        ],
    ),
    (
        "no-prepend-ebgp-and-ibgp-share-one-line",
        [adv("198.51.100.1", COMM)],
        EBGP_AND_IBGP,
        ["announce attributes next-hop self community [64512:100] nlri 198.51.100.1/32"],
    ),
    (
        "prepend-split-by-session-type",
        [adv("198.51.100.1", attrs(as_path_prepend=1)), adv("198.51.100.2")],
        EBGP_AND_IBGP,
        [
            "neighbor 192.0.2.2 announce attributes next-hop self as-path [ 64512 64512 ] "
            "nlri 198.51.100.1/32",
            "neighbor 192.0.2.6 announce attributes next-hop self nlri 198.51.100.1/32",
            "announce attributes next-hop self nlri 198.51.100.2/32",
        ],
    ),
    (
        "prepend-ibgp-only-one-line-without-as-path",
        [adv("198.51.100.1", attrs(as_path_prepend=2))],
        IBGP_ONLY,
        ["announce attributes next-hop self nlri 198.51.100.1/32"],
    ),
    (
        "mixed-peers",
        [adv("2001:db8:100::1"), adv("198.51.100.1")],
        MIXED,
        [
            "neighbor 192.0.2.2 announce attributes next-hop self nlri 198.51.100.1/32",
            "neighbor 192.0.2.6 announce attributes next-hop self nlri 198.51.100.1/32",
            "neighbor 2001:db8::2 announce attributes next-hop self nlri 2001:db8:100::1/128",
            "neighbor 192.0.2.2 announce attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128",
        ],
    ),
    (
        "prepend-and-med",
        [adv("198.51.100.1", attrs(med=5, as_path_prepend=2))],
        V4_ONLY,
        [
            "announce attributes next-hop self med 5 as-path [ 64512 64512 64512 ] "
            "nlri 198.51.100.1/32"
        ],
    ),
]


@pytest.mark.parametrize(
    ("adverts", "next_hops", "expected"),
    [pytest.param(a, n, e, id=i) for i, a, n, e in ANNOUNCE_CASES],
)
def test_announce_commands(
    adverts: list[Advertisement], next_hops: NextHopPolicy, expected: list[str]
) -> None:
    commands = announce_commands(adverts, 64512, next_hops)
    assert [c.text for c in commands] == expected
    for command in commands:
        assert command.withdrawn == ()
        nlri = command.text.split(" nlri ", 1)[1].split()
        assert [str(a.prefix) for a in command.announced] == nlri


WITHDRAW_CASES = [
    ("nothing", [], V4_ONLY, []),
    (
        "v4",
        ["198.51.100.2/32", "198.51.100.1/32"],
        V4_ONLY,
        ["withdraw attributes next-hop self nlri 198.51.100.1/32 198.51.100.2/32"],
    ),
    (
        "v6-over-v6",
        ["2001:db8:100::1/128"],
        V6_ONLY,
        ["withdraw attributes next-hop self nlri 2001:db8:100::1/128"],
    ),
    (
        "v6-over-v4-with-next-hop",
        ["2001:db8:100::1/128"],
        V4_WITH_NH,
        ["withdraw attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128"],
    ),
    (
        "v6-over-two-v4-one-without-next-hop",
        ["2001:db8:100::1/128"],
        TWO_V4_ONE_NH,
        ["neighbor 192.0.2.2 withdraw attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128"],
    ),
    (
        # Withdrawals carry no AS path: one line whatever the session types.
        "ebgp-and-ibgp",
        ["198.51.100.1/32"],
        EBGP_AND_IBGP,
        ["withdraw attributes next-hop self nlri 198.51.100.1/32"],
    ),
    ("v6-over-v4-without-next-hop", ["2001:db8:100::1/128"], V4_ONLY, []),
    (
        "mixed",
        ["2001:db8:100::1/128", "198.51.100.1/32"],
        MIXED,
        [
            "neighbor 192.0.2.2 withdraw attributes next-hop self nlri 198.51.100.1/32",
            "neighbor 192.0.2.6 withdraw attributes next-hop self nlri 198.51.100.1/32",
            "neighbor 2001:db8::2 withdraw attributes next-hop self nlri 2001:db8:100::1/128",
            "neighbor 192.0.2.2 withdraw attributes next-hop 2001:db8::1 nlri 2001:db8:100::1/128",
        ],
    ),
]


def _announce_commands_by_sorting(
    adverts: list[Advertisement], local_asn: int, next_hops: NextHopPolicy, size: int
) -> list[Command]:
    """``announce_commands`` as it was up to 5511fbc: sorted by address, then grouped."""
    groups: dict[tuple[int, RouteAttributes], list[Advertisement]] = {}
    for advert in sorted(adverts, key=lambda a: address_order(a.vip)):
        groups.setdefault((advert.vip.version, advert.attributes), []).append(advert)
    commands: list[Command] = []
    for (version, attributes), members in groups.items():
        split = local_asn if attributes.as_path_prepend else None
        for neighbor, next_hop, ebgp in next_hops.targets(version, split):
            prefix = f"neighbor {neighbor} " if neighbor else ""
            rendered = render_attributes(attributes, local_asn, ebgp)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                nlri = " ".join(str(a.prefix) for a in chunk)
                attrs_text = f" {rendered}" if rendered else ""
                commands.append(
                    Command(
                        f"{prefix}announce attributes next-hop {next_hop}{attrs_text} nlri {nlri}",
                        announced=tuple(chunk),
                    )
                )
    return commands


POLICIES = [V4_ONLY, V6_ONLY, V4_WITH_NH, MIXED, TWO_V4_OTHER_NH, EBGP_AND_IBGP, IBGP_ONLY]
# A few attribute values, each also as an equal copy (another object)
ATTRIBUTES = [attrs(), COMM, attrs(as_path_prepend=1), attrs(("64512:100",), med=5)]
VIP_POOL = [f"198.51.100.{i}" for i in range(1, 12)] + [f"2001:db8:100::{i}" for i in range(1, 8)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(VIP_POOL), st.integers(0, 3), st.booleans()),
        unique_by=lambda t: t[0],
        max_size=14,
    ),
    st.sampled_from(POLICIES),
    st.integers(1, 4),
)
def test_announce_commands_are_what_sorting_then_grouping_gives(
    routes: list[tuple[str, int, bool]], next_hops: NextHopPolicy, size: int
) -> None:
    adverts = [
        adv(vip, copy.copy(ATTRIBUTES[kind]) if fresh else ATTRIBUTES[kind])
        for vip, kind, fresh in routes
    ]
    expected = _announce_commands_by_sorting(adverts, 64512, next_hops, size)
    with mock.patch.object(command_lines, "MAX_PREFIXES_PER_LINE", size):
        assert announce_commands(adverts, 64512, next_hops) == expected


@pytest.mark.parametrize(
    ("prefixes", "next_hops", "expected"),
    [pytest.param(p, n, e, id=i) for i, p, n, e in WITHDRAW_CASES],
)
def test_withdraw_commands(
    prefixes: list[str], next_hops: NextHopPolicy, expected: list[str]
) -> None:
    commands = withdraw_commands([ipaddress.ip_network(p) for p in prefixes], next_hops)
    assert [c.text for c in commands] == expected
    for command in commands:
        assert command.announced == ()
        assert [str(p) for p in command.withdrawn] == command.text.split(" nlri ", 1)[1].split()


@pytest.mark.parametrize(
    ("count", "sizes"),
    [
        pytest.param(MAX_PREFIXES_PER_LINE, [MAX_PREFIXES_PER_LINE], id="exactly-one-line"),
        pytest.param(MAX_PREFIXES_PER_LINE + 1, [MAX_PREFIXES_PER_LINE, 1], id="one-over"),
        pytest.param(
            2 * MAX_PREFIXES_PER_LINE + 5,
            [MAX_PREFIXES_PER_LINE, MAX_PREFIXES_PER_LINE, 5],
            id="two-and-a-bit",
        ),
    ],
)
def test_commands_are_chunked(count: int, sizes: list[int]) -> None:
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    vips = [ipaddress.IPv4Address(base + i) for i in range(count)]
    announced = announce_commands([Advertisement(v, COMM) for v in vips], 64512, V4_ONLY)
    withdrawn = withdraw_commands([ipaddress.ip_network(f"{v}/32") for v in vips], V4_ONLY)
    assert [len(c.announced) for c in announced] == sizes
    assert [len(c.withdrawn) for c in withdrawn] == sizes
    assert [a.vip for c in announced for a in c.announced] == vips
    assert all(len(c.text.encode()) < MAX_LINE_BYTES for c in announced + withdrawn)


def test_next_hop_policy_reports_unreachable_peers() -> None:
    assert MIXED.unreachable() == ((peer("2001:db8::2"), 4), (peer("192.0.2.6"), 6))
    assert V6_WITH_NH4.unreachable() == ()
    assert MIXED.targets(4) == (("192.0.2.2", "self", True), ("192.0.2.6", "self", True))
    assert MIXED.targets(6) == (("2001:db8::2", "self", True), ("192.0.2.2", "2001:db8::1", True))
    assert EBGP_AND_IBGP.targets(4, 64512) == (
        ("192.0.2.2", "self", True),
        ("192.0.2.6", "self", False),
    )
    assert EBGP_AND_IBGP.targets(4) == ((None, "self", True),)


def test_end_of_rib_commands() -> None:
    assert [c.text for c in end_of_rib_commands("2001:DB8::2")] == [
        "neighbor 2001:db8::2 announce eor ipv4 unicast",
        "neighbor 2001:db8::2 announce eor ipv6 unicast",
    ]
    with pytest.raises(ValueError):
        end_of_rib_commands("192.0.2.2\nannounce route 0.0.0.0/0 next-hop self")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("announce route 1.2.3.4/32 next-hop self\nshutdown", id="newline"),
        pytest.param("withdraw route 1.2.3.4/32\r", id="carriage-return"),
        pytest.param("\n", id="only-newline"),
        pytest.param("x" * MAX_LINE_BYTES, id="one-mebibyte"),
    ],
)
def test_command_refuses_more_than_one_line(text: str) -> None:
    with pytest.raises(ValueError):
        Command(text)


def test_command_accepts_one_line_below_the_limit() -> None:
    assert Command("x" * (MAX_LINE_BYTES - 1)).text.startswith("x")


# --------------------------------------------------------------------------- API output


def state(peer_address: Any, state_name: Any, reason: Any = None) -> str:
    neighbor: dict[str, Any] = {
        "address": {"local": "192.0.2.1", "peer": peer_address},
        "asn": {"local": 64512, "peer": 64500},
        "state": state_name,
    }
    if reason is not None:
        neighbor["reason"] = reason
    return json.dumps(
        {
            "exabgp": "5.0.0",
            "time": 1700000000.0,
            "host": "worker-1",
            "pid": 42,
            "ppid": 1,
            "counter": 3,
            "type": "state",
            "neighbor": neighbor,
        }
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param("done", CommandAck(7, 4, True), id="done"),
        pytest.param("error", CommandAck(7, 4, False), id="error"),
        pytest.param("  done \n", CommandAck(7, 4, True), id="done-with-whitespace"),
        pytest.param("error\r\n", CommandAck(7, 4, False), id="error-crlf"),
        pytest.param(
            json.dumps({"exabgp": "5.0.0", "type": "notification", "notification": "shutdown"}),
            ExabgpShutdown(7),
            id="shutdown",
        ),
        pytest.param(
            json.dumps({"type": "notification", "notification": "something-else"}),
            None,
            id="other-notification",
        ),
        pytest.param(json.dumps({"type": "update", "neighbor": {}}), None, id="update"),
        pytest.param(state("192.0.2.2", 5), None, id="state-not-a-string"),
        pytest.param(state(None, "up"), None, id="state-without-peer"),
        pytest.param('{"type": "state", "neighbor": "192.0.2.2"}', None, id="state-bad-neighbor"),
        pytest.param(
            '{"type": "state", "neighbor": {"address": "x", "state": "up"}}',
            None,
            id="state-bad-address",
        ),
        pytest.param("", None, id="empty"),
        pytest.param("garbage", None, id="garbage"),
        pytest.param("donee", None, id="almost-done"),
        pytest.param("{not json", None, id="broken-json"),
        pytest.param("[1, 2]", None, id="json-list"),
        pytest.param('{"type": 5}', None, id="json-odd-type"),
        pytest.param("\x00\xff", None, id="binary"),
    ],
)
def test_parse_api_line(line: str, expected: object) -> None:
    assert parse_api_line(line, 7, 3) == expected


@pytest.mark.parametrize(
    ("line", "peer_address", "state_name", "reason"),
    [
        pytest.param(state("192.0.2.2", "up"), "192.0.2.2", "up", None, id="up"),
        pytest.param(
            state("192.0.2.2", "connected"), "192.0.2.2", "connected", None, id="connected"
        ),
        pytest.param(
            state("2001:db8::2", "down", "peer reset the session"),
            "2001:db8::2",
            "down",
            "peer reset the session",
            id="down-with-reason",
        ),
        pytest.param(
            state("192.0.2.2", "down", 5), "192.0.2.2", "down", None, id="down-odd-reason"
        ),
    ],
)
def test_parse_api_line_peer_state(
    line: str, peer_address: str, state_name: str, reason: str | None
) -> None:
    message = parse_api_line(line, 1, 0)
    assert isinstance(message, PeerState)
    assert (message.peer, message.state, message.reason) == (peer_address, state_name, reason)
    assert message.at > 0


def test_ack_indexes_count_from_the_previous_ack() -> None:
    acks = 0
    seen = []
    for line in ["done", "garbage", state("192.0.2.2", "up"), "error", "done"]:
        message = parse_api_line(line, 2, acks)
        if isinstance(message, CommandAck):
            acks = message.index
            seen.append((message.index, message.ok))
    assert seen == [(1, True), (2, False), (3, True)]


# --------------------------------------------------------------------------- ExaBGP's parser

# Runs in a child process: ExaBGP's logger and environment are process-wide globals.
_PARSE_WITH_EXABGP = """
import json, sys
from exabgp.environment import getenv
from exabgp.logger import log
from exabgp.reactor.api import API
from exabgp.reactor.api.command.limit import extract_neighbors
log.init(getenv())
api = API(None)
for line in sys.stdin.read().splitlines():
    neighbors, command = extract_neighbors(line)
    try:
        changes = api.api_attributes(command, [])
    except (ValueError, IndexError):
        changes = []
    print(json.dumps({"neighbors": neighbors, "routes": [c.extensive() for c in changes]}))
"""


def parse_with_exabgp(lines: list[str]) -> list[dict[str, Any]]:
    env = exabgp.exabgp_environment()
    env.update({"exabgp.log.destination": "stderr", "exabgp.log.level": "CRITICAL"})
    result = subprocess.run(
        [sys.executable, "-c", _PARSE_WITH_EXABGP],
        input="\n".join(lines) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_exabgp_parses_every_command_we_render() -> None:
    everything = attrs(("64512:100", "no-export"), ("64512:1:2",), 200, 5, 2)
    commands = [
        *announce_commands(
            [
                adv("198.51.100.1", everything),
                adv("198.51.100.2", everything),
                adv("198.51.100.3"),
                adv("2001:db8:100::1", everything),
                adv("2001:db8:100::2", attrs(as_path_prepend=1)),
            ],
            64512,
            MIXED,
        ),
        *announce_commands([adv("198.51.100.4", attrs(as_path_prepend=3))], 64512, EBGP_AND_IBGP),
        *withdraw_commands(
            [ipaddress.ip_network("198.51.100.1/32"), ipaddress.ip_network("2001:db8:100::1/128")],
            MIXED,
        ),
    ]
    broken = "announce attributes next-hop self community [64512:100 nlri 198.51.100.1/32"
    parsed = parse_with_exabgp([c.text for c in commands] + [broken])
    assert len(parsed) == len(commands) + 1
    assert parsed[-1]["routes"] == [], "the harness must tell a rejected command apart"
    for command, result in zip(commands, parsed[:-1], strict=True):
        prefixes = [str(a.prefix) for a in command.announced] or [str(p) for p in command.withdrawn]
        assert [r.split()[0] for r in result["routes"]] == prefixes, command.text
        if command.text.startswith("neighbor "):
            assert result["neighbors"] == [[" ".join(command.text.split()[:2])]]
        else:
            assert result["neighbors"] == []
    first = parsed[0]["routes"][0]
    for needle in (
        "as-path ( 64512 64512 64512 )",
        "med 5",
        "local-preference 200",
        "community [ 64512:100 no-export ]",
        "large-community 64512:1:2",
    ):
        assert needle in first, first
