"""The policy's fast paths give what the code before them gave (479fb69).

Each reference below is the function as it was, copied verbatim but for names; the
fast paths (a plain IPv4 VIP list, the peers as a set, a label by scan, a decision's
announced VIPs without a generator, the status wanted of a prepared decision) must
agree with it on every input, hostile ones included.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_decide_split import ALL_CONFIGS, INPUTS, _endpoints
from test_properties import HOSTILE_TEXT, NODE, SETTINGS, VIPS

from kvip_bgp.domain.addresses import address_key, forbidden_class
from kvip_bgp.domain.annotations import (
    MAX_VIPS_PER_SERVICE,
    AnnotationError,
    _split,
    parse_vip_list,
)
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.model import IPAddress, parse_ip
from kvip_bgp.domain.objects import NodeInfo, ObjectKey, parse_node, parse_service
from kvip_bgp.domain.policy import (
    NO_READY_ENDPOINT,
    ServiceDecision,
    VipVerdict,
    address_refusal,
    conclude,
    prepare,
)
from kvip_bgp.domain.reasons import Reason, Refusal
from kvip_bgp.runtime.reports import status_ips, vip_text


def reference_parse_vip_list(annotation: str, value: str) -> tuple[IPAddress, ...]:
    """``annotations.parse_vip_list`` at 479fb69."""
    items = _split(annotation, value)
    if len(items) > MAX_VIPS_PER_SERVICE:
        raise AnnotationError(annotation, f"more than {MAX_VIPS_PER_SERVICE} addresses")
    result: list[IPAddress] = []
    for item in items:
        try:
            vip = parse_ip(item)
        except ValueError as error:
            raise AnnotationError(annotation, f"{item!r} is not an IP address") from error
        if isinstance(vip, ipaddress.IPv6Address) and vip.scope_id is not None:
            raise AnnotationError(annotation, f"{item!r} carries a %zone")
        if vip not in result:
            result.append(vip)
    return tuple(result)


def reference_address_refusal(
    vip: IPAddress, namespace: str | None, config: Config, node: NodeInfo | None
) -> Refusal | None:
    """``policy.address_refusal`` at 479fb69."""
    if (forbidden := forbidden_class(vip)) is not None:
        return Refusal(Reason.FORBIDDEN_ADDRESS, forbidden)
    if node is not None and vip in node.ips:
        return Refusal(Reason.FORBIDDEN_ADDRESS, "node-address")
    if any(vip == peer.address or vip == peer.local_address for peer in config.bgp.peers):
        return Refusal(Reason.FORBIDDEN_ADDRESS, "peer-address")
    if not config.vips.admits(vip, namespace):
        return Refusal(Reason.OUTSIDE_ALLOWED)
    return None


def _outcome(value: str) -> tuple[IPAddress, ...] | str:
    try:
        return parse_vip_list("kvip-bgp.io/loadbalancerIPs", value)
    except AnnotationError as error:
        return f"error: {error}"


def _reference_outcome(value: str) -> tuple[IPAddress, ...] | str:
    try:
        return reference_parse_vip_list("kvip-bgp.io/loadbalancerIPs", value)
    except AnnotationError as error:
        return f"error: {error}"


OCTET = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["00", "01", "007", "256", "999", "0x1", "", " 1", "1 ", "+1", "-0", "\u0661"]),
)
QUAD_LIKE = st.lists(OCTET, min_size=1, max_size=5).map(".".join)
VIP_TEXT = st.one_of(
    VIPS,
    QUAD_LIKE,
    HOSTILE_TEXT,
    st.text(max_size=20),
    st.builds(lambda v, pad: pad + v + pad, VIPS, st.sampled_from([" ", "\t", "\n", "\x00"])),
    st.lists(st.one_of(VIPS, QUAD_LIKE), min_size=1, max_size=4).map(",".join),
    st.sampled_from(["fe80::1%eth0", "1.2.3.4%x", "1.2.3.4\x00", "1.2.3.4" * 300]),
)


@SETTINGS
@given(value=VIP_TEXT)
def test_a_vip_list_parses_as_before(value: str) -> None:
    assert _outcome(value) == _reference_outcome(value)


@SETTINGS
@given(
    vip=VIPS.map(ipaddress.ip_address),
    namespace=st.sampled_from([None, "default", "team-a"]),
    which=st.sampled_from(range(len(ALL_CONFIGS))),
    node=st.one_of(st.none(), NODE),
)
def test_an_address_is_refused_as_before(
    vip: IPAddress, namespace: str | None, which: int, node: dict[str, Any] | None
) -> None:
    config = ALL_CONFIGS[which]
    node_info = None if node is None else parse_node(node)
    expected = reference_address_refusal(vip, namespace, config, node_info)
    assert address_refusal(vip, namespace, config, node_info) == expected


ANY_ADDRESS = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    # IPv6 addresses whose integer is an IPv4 address's: ``::a.b.c.d`` and ``::``.
    st.integers(0, 2**32 - 1).map(ipaddress.IPv6Address),
    st.integers(0, 2**32 - 1).map(lambda i: ipaddress.IPv6Address(0xFFFF00000000 | i)),
)


@SETTINGS
@given(a=ANY_ADDRESS, b=ANY_ADDRESS)
def test_two_addresses_have_one_key_only_if_they_are_one_address(
    a: IPAddress, b: IPAddress
) -> None:
    assert (address_key(a) == address_key(b)) == (a == b)
    assert address_key(a) == address_key(ipaddress.ip_address(str(a)))


@pytest.mark.parametrize(
    ("vip", "node_address", "refused"),
    [
        ("198.51.100.5", "198.51.100.5", True),
        ("::198.51.100.5", "198.51.100.5", False),  # the same integer, another address
        ("198.51.100.5", "::c633:6405", False),
        ("::ffff:198.51.100.5", "198.51.100.5", False),
        ("2001:db8:100::5", "2001:db8:100::5", True),
    ],
)
def test_a_node_address_is_refused_and_no_other_family_s(
    vip: str, node_address: str, refused: bool
) -> None:
    node = parse_node(
        {"metadata": {"name": "n"}, "status": {"addresses": [{"address": node_address}]}}
    )
    config = ALL_CONFIGS[0]
    address = ipaddress.ip_address(vip)
    expected = reference_address_refusal(address, None, config, node)
    got = address_refusal(address, None, config, node)
    assert got == expected
    assert (got == Refusal(Reason.FORBIDDEN_ADDRESS, "node-address")) is refused


@pytest.mark.parametrize(
    ("labels", "name"),
    [
        ((), "a"),
        ((("a", "1"),), "a"),
        ((("a", "1"),), "b"),
        ((("a", "1"), ("b", "2")), "b"),
        ((("a", "1"), ("a", "2")), "a"),  # by hand only (parsing gives a dict): the last
        ((("a", ""),), "a"),
    ],
)
def test_a_node_label_is_the_dicts(labels: tuple[tuple[str, str], ...], name: str) -> None:
    node = NodeInfo("node-1", labels, False, False, ())
    assert node.label(name) == dict(labels).get(name)


VERDICT = st.builds(
    VipVerdict,
    VIPS.map(ipaddress.ip_address),
    st.booleans(),
    st.sampled_from([None, NO_READY_ENDPOINT]),
)


@SETTINGS
@given(verdicts=st.lists(VERDICT, max_size=4).map(tuple))
def test_a_decisions_announced_vips_are_its_announced_verdicts(
    verdicts: tuple[VipVerdict, ...],
) -> None:
    decision = ServiceDecision(ObjectKey("default", "web"), None, verdicts)
    assert decision.announced == tuple(v.vip for v in verdicts if v.announce)


def reference_status_ips(decision: ServiceDecision) -> tuple[str, ...]:
    """What ``reports.want_status`` at 479fb69 asked for, () for nothing."""
    if decision.vip_source != "status.loadBalancer.ingress" and decision.attributes:
        return tuple(
            vip_text(v.vip)
            for v in decision.verdicts
            if not (v.reason is not None and v.reason.of_address)
        )
    return ()


@SETTINGS
@given(**INPUTS)
def test_a_prepared_decision_wants_the_status_its_conclusions_want(
    service: dict[str, Any],
    slices: list[list[dict[str, Any]]],
    node: dict[str, Any] | None,
    which: int,
) -> None:
    """What lets the cluster thread ask for a status from the prepared decision, once."""
    config = ALL_CONFIGS[which]
    svc = parse_service(service)
    prepared = prepare(svc, None if node is None else parse_node(node), config)
    assert status_ips(prepared) == reference_status_ips(prepared)
    for endpoint_slices in [[], *slices]:
        decision = conclude(prepared, svc, _endpoints(endpoint_slices), config)
        assert status_ips(decision) == status_ips(prepared)
