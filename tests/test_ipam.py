"""The allocator as a pure function of (pools, Services): tables, then properties."""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvip_bgp.domain.ipam import (
    EVENT_ALLOCATED,
    EVENT_CLEARED,
    EVENT_FAILED,
    AddressRange,
    Claim,
    Pool,
    parse_range,
    plan,
)
from kvip_bgp.domain.model import IPAddress
from kvip_bgp.domain.objects import ObjectKey


def ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text)


def pool(name: str, *ranges: str, **kw: Any) -> Pool:
    return Pool(name, tuple(parse_range(r) for r in ranges), **kw)


def claim(name: str, created: str = "2026-01-01T00:00:00Z", **kw: Any) -> Claim:
    namespace = kw.pop("namespace", "default")
    return Claim(ObjectKey(namespace, name), created, **kw)


def ips_of(result: Any, name: str, namespace: str = "default") -> tuple[str, ...]:
    assignment = result.assigned.get(ObjectKey(namespace, name))
    return tuple(map(str, assignment.ips)) if assignment else ()


# ------------------------------------------------------------------------------ ranges


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("198.51.100.64/30", "198.51.100.64", "198.51.100.67"),
        ("198.51.100.200-198.51.100.210", "198.51.100.200", "198.51.100.210"),
        (" 198.51.100.5 - 198.51.100.5 ", "198.51.100.5", "198.51.100.5"),
        ("2001:db8:100::/112", "2001:db8:100::", "2001:db8:100::ffff"),
    ],
)
def test_ranges_parse(text: str, first: str, last: str) -> None:
    assert parse_range(text) == AddressRange(ip(first), ip(last))


@pytest.mark.parametrize(
    "text",
    ["198.51.100.64/24", "198.51.100.9-198.51.100.1", "198.51.100.1-2001:db8::1", "x", "1.2.3"],
)
def test_bad_ranges_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_range(text)


# ------------------------------------------------------------------------------ choice


def test_first_free_address_of_the_first_admitting_pool_deterministically() -> None:
    pools = [pool("public", "198.51.100.64/30")]
    result = plan(pools, [claim("a"), claim("b", "2026-01-02T00:00:00Z")])
    assert ips_of(result, "a") == ("198.51.100.64",)
    assert ips_of(result, "b") == ("198.51.100.65",)
    assert [e.reason for e in result.events] == [EVENT_ALLOCATED, EVENT_ALLOCATED]


def test_avoid_buggy_ips_skips_dot_zero_and_dot_255() -> None:
    pools = [pool("p", "198.51.100.255-198.51.101.1", avoid_buggy_ips=True)]
    result = plan(pools, [claim("a"), claim("b", "2026-01-02T00:00:00Z")])
    assert ips_of(result, "a") == ("198.51.101.1",)
    assert result.pending[ObjectKey("default", "b")].startswith("no free address")


def test_pools_by_priority_then_zero_last_ties_by_name() -> None:
    pools = [
        pool("z-default", "198.51.100.10/32"),
        pool("b-second", "198.51.100.20/32", priority=2),
        pool("a-first", "198.51.100.30/32", priority=1),
        pool("c-also-second", "198.51.100.40/32", priority=2),
    ]
    names = [f"s{i}" for i in range(4)]
    result = plan(pools, [claim(n, f"2026-01-0{i + 1}T00:00:00Z") for i, n in enumerate(names)])
    assert [ips_of(result, n) for n in names] == [
        ("198.51.100.30",),
        ("198.51.100.20",),
        ("198.51.100.40",),
        ("198.51.100.10",),
    ]


def test_namespaces_and_selector_restrict_a_pool_and_auto_assign_false_serves_requests() -> None:
    pools = [
        pool("team-a", "198.51.100.10/32", namespaces=frozenset({"team-a"}), priority=1),
        pool("gold", "198.51.100.20/32", service_selector=(("tier", "gold"),), priority=2),
        pool("manual", "198.51.100.30/31", auto_assign=False, priority=3),
    ]
    result = plan(
        pools,
        [
            claim("x", namespace="team-a"),
            claim("y", labels={"tier": "gold"}),
            claim("z"),  # admitted only by "manual", which is request-only
            claim("w", requested_ips=(ip("198.51.100.31"),)),
            claim("v", requested_pool="manual"),
        ],
    )
    assert ips_of(result, "x", "team-a") == ("198.51.100.10",)
    assert ips_of(result, "y") == ("198.51.100.20",)
    assert "no pool admits" in result.pending[ObjectKey("default", "z")]
    assert ips_of(result, "w") == ("198.51.100.31",)
    assert ips_of(result, "v") == ("198.51.100.30",)


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"requested_pool": "nope"}, "address-pool 'nope' does not exist"),
        ({"requested_pool": "team-a"}, "pool 'team-a' does not admit this Service"),
        ({"requested_ips": (ip("203.0.113.1"),)}, "not in a pool that admits it"),
        ({"requested_ips": (ip("198.51.100.10"),)}, "not in a pool that admits it"),
    ],
)
def test_bad_requests_fail_with_a_reason(kw: dict[str, Any], why: str) -> None:
    pools = [
        pool("team-a", "198.51.100.10/32", namespaces=frozenset({"team-a"})),
        pool("public", "198.51.100.64/30"),
    ]
    result = plan(pools, [claim("s", **kw)])
    assert why in result.pending[ObjectKey("default", "s")]
    assert [(e.reason, e.warning) for e in result.events] == [(EVENT_FAILED, True)]


# ------------------------------------------------------------------------------ stability


def test_holdings_are_adopted_before_anything_new_even_out_of_order() -> None:
    pools = [pool("p", "198.51.100.64/30")]
    held = claim("old", held=(ip("198.51.100.66"),), created="2026-01-05T00:00:00Z")
    new = claim("new", created="2026-01-01T00:00:00Z")  # older, but holds nothing
    result = plan(pools, [new, held])
    assert ips_of(result, "old") == ("198.51.100.66",)
    assert ips_of(result, "new") == ("198.51.100.64",)
    assert [e.service.name for e in result.events] == ["new"]  # adoption posts nothing


def test_on_a_conflict_the_older_service_keeps_the_address() -> None:
    pools = [pool("p", "198.51.100.64/30")]
    older = claim("older", "2026-01-01T00:00:00Z", held=(ip("198.51.100.65"),))
    younger = claim("younger", "2026-01-02T00:00:00Z", held=(ip("198.51.100.65"),))
    result = plan(pools, [younger, older])
    assert ips_of(result, "older") == ("198.51.100.65",)
    assert ips_of(result, "younger") == ("198.51.100.64",)
    assert [(e.service.name, e.reason) for e in result.events] == [
        ("younger", EVENT_CLEARED),
        ("younger", EVENT_ALLOCATED),
    ]


def test_an_address_its_pool_lost_is_cleared_and_redone() -> None:
    before = [pool("p", "198.51.100.64/30")]
    after = [pool("p", "198.51.100.64/31")]  # .66 left the pool
    first = plan(before, [claim("s", held=(ip("198.51.100.66"),))])
    assert ips_of(first, "s") == ("198.51.100.66",)
    second = plan(after, [claim("s", held=(ip("198.51.100.66"),))])
    assert ips_of(second, "s") == ("198.51.100.64",)
    assert [e.reason for e in second.events] == [EVENT_CLEARED, EVENT_ALLOCATED]


def test_a_changed_request_releases_the_old_address() -> None:
    pools = [pool("p", "198.51.100.64/30")]
    result = plan(
        pools, [claim("s", held=(ip("198.51.100.64"),), requested_ips=(ip("198.51.100.67"),))]
    )
    assert ips_of(result, "s") == ("198.51.100.67",)


# ------------------------------------------------------------------------------ sharing


@pytest.mark.parametrize(
    ("second", "shares"),
    [
        ({"sharing_key": "k", "ports": frozenset({("TCP", 443)})}, True),
        ({"sharing_key": "k", "ports": frozenset({("TCP", 80)})}, False),  # port overlap
        ({"sharing_key": "other", "ports": frozenset({("TCP", 443)})}, False),
        ({"sharing_key": None, "ports": frozenset({("TCP", 443)})}, False),
        ({"sharing_key": "k", "ports": frozenset({("UDP", 80)})}, True),  # other protocol
        ({"sharing_key": "k", "local_selector": "app=web", "ports": frozenset()}, False),
        ({"sharing_key": "k", "namespace": "elsewhere", "ports": frozenset()}, False),
    ],
)
def test_two_services_share_an_ip_only_when_every_rule_allows(
    second: dict[str, Any], shares: bool
) -> None:
    pools = [pool("p", "198.51.100.64/30")]
    first = claim("a", sharing_key="k", ports=frozenset({("TCP", 80)}))
    other = claim("b", "2026-01-02T00:00:00Z", **second)
    result = plan(pools, [first, other])
    a = ips_of(result, "a")
    b = ips_of(result, "b", second.get("namespace", "default"))
    assert a == ("198.51.100.64",)
    assert (a == b) is shares


# ------------------------------------------------------------------------------ families


@pytest.mark.parametrize(
    ("policy", "families", "expected"),
    [
        ("SingleStack", (4,), ("198.51.100.64",)),
        ("SingleStack", (6,), ("2001:db8:100::",)),
        ("PreferDualStack", (4, 6), ("198.51.100.64", "2001:db8:100::")),
        ("RequireDualStack", (6, 4), ("2001:db8:100::", "198.51.100.64")),
    ],
)
def test_dual_stack_follows_the_family_policy(
    policy: str, families: tuple[int, ...], expected: tuple[str, ...]
) -> None:
    pools = [pool("dual", "198.51.100.64/30", "2001:db8:100::/112")]
    result = plan(pools, [claim("s", family_policy=policy, families=families)])
    assert ips_of(result, "s") == expected


def test_require_dual_stack_needs_one_pool_with_both_families() -> None:
    pools = [pool("v4", "198.51.100.64/30"), pool("v6", "2001:db8:100::/112")]
    result = plan(pools, [claim("s", family_policy="RequireDualStack", families=(4, 6))])
    assert "no free address" in result.pending[ObjectKey("default", "s")]
    prefer = plan(pools, [claim("s", family_policy="PreferDualStack", families=(4, 6))])
    assert ips_of(prefer, "s") == ("198.51.100.64",)


def test_a_huge_pool_costs_what_is_allocated_not_its_size() -> None:
    pools = [pool("v6", "2001:db8:100::/64")]
    claims = [
        claim(f"s{i:04}", families=(6,), held=(ip(f"2001:db8:100::{i:x}"),)) for i in range(500)
    ]
    started = time.perf_counter()
    result = plan(pools, [*claims, claim("new", "2026-02-01T00:00:00Z", families=(6,))])
    assert time.perf_counter() - started < 2.0  # a walk over 2**64 would never end
    assert ips_of(result, "new") == ("2001:db8:100::1f4",)


# ------------------------------------------------------------------------------ properties

NAMES = [f"svc-{i}" for i in range(8)]
CLAIMS = st.builds(
    lambda name, day, key, port, held, local: claim(
        name,
        f"2026-01-{day:02}T00:00:00Z",
        sharing_key=key,
        ports=frozenset({("TCP", port)}),
        held=held,
        local_selector=local,
    ),
    st.sampled_from(NAMES),
    st.integers(1, 28),
    st.sampled_from([None, "k1", "k2"]),
    st.sampled_from([80, 443]),
    st.one_of(
        st.just(()),
        st.builds(lambda n: (ip(f"198.51.100.{n}"),), st.integers(60, 70)),
    ),
    st.sampled_from([None, "app=a"]),
)
POOLS = st.lists(
    st.builds(
        lambda first, size, prio, buggy: pool(
            f"p{first}",
            f"198.51.100.{first}-198.51.100.{first + size}",
            priority=prio,
            avoid_buggy_ips=buggy,
        ),
        st.integers(60, 66),
        st.integers(0, 4),
        st.integers(0, 2),
        st.booleans(),
    ),
    min_size=1,
    max_size=2,
    unique_by=lambda p: p.name,
)


def _unique(claims: list[Claim]) -> list[Claim]:
    seen: dict[str, Claim] = {}
    for c in claims:
        seen.setdefault(c.key.name, c)
    return list(seen.values())


@settings(max_examples=300, deadline=None)
@given(POOLS, st.lists(CLAIMS, max_size=8))
def test_no_address_is_ever_held_by_two_incompatible_services(
    pools: list[Pool], raw: list[Claim]
) -> None:
    claims = _unique(raw)
    by_key = {c.key: c for c in claims}
    result = plan(pools, claims)
    holders: dict[IPAddress, list[Claim]] = {}
    for key, assignment in result.assigned.items():
        assert any(
            p.name == assignment.pool and all(p.usable(a) for a in assignment.ips) for p in pools
        )
        for address in assignment.ips:
            holders.setdefault(address, []).append(by_key[key])
    for sharing in holders.values():
        for i, a in enumerate(sharing):
            for b in sharing[i + 1 :]:
                assert a.sharing_key is not None and a.sharing_key == b.sharing_key
                assert a.local_selector == b.local_selector and not (a.ports & b.ports)
    assert set(result.assigned) | set(result.pending) == set(by_key)


@settings(max_examples=300, deadline=None)
@given(POOLS, st.lists(CLAIMS, max_size=8), st.data())
def test_a_valid_allocation_survives_a_restart_and_others_coming_and_going(
    pools: list[Pool], raw: list[Claim], data: st.DataObject
) -> None:
    """Feed each plan back as the Services' holdings (a restart): nothing moves; then
    delete some Services: the survivors keep their addresses."""
    claims = _unique(raw)
    first = plan(pools, claims)
    held = [
        dataclasses.replace(c, held=first.assigned[c.key].ips)
        if c.key in first.assigned
        else dataclasses.replace(c, held=())
        for c in claims
    ]
    again = plan(pools, held)
    assert again.assigned == first.assigned
    assert not [e for e in again.events if e.reason == EVENT_CLEARED]
    survivors = (
        data.draw(st.lists(st.sampled_from(held), unique_by=lambda c: c.key)) if held else []
    )
    after = plan(pools, survivors)
    for c in survivors:
        if c.key in first.assigned:
            assert after.assigned[c.key] == first.assigned[c.key]


def test_a_holding_in_a_pool_that_no_longer_admits_the_service_is_redone() -> None:
    pools = [
        pool("team-a", "198.51.100.64/30", namespaces=frozenset({"team-a"})),
        pool("public", "198.51.100.80/30"),
    ]
    result = plan(pools, [claim("s", held=(ip("198.51.100.65"),))])
    assert ips_of(result, "s") == ("198.51.100.80",)
    assert [e.reason for e in result.events] == [EVENT_CLEARED, EVENT_ALLOCATED]
