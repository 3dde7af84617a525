"""The allocator's state and claims, without an API: what it writes, in which order, once."""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvip_bgp.configfile.load import parse
from kvip_bgp.domain.claims import POOL_ANNOTATION, InvalidRequest, claim_of
from kvip_bgp.domain.config import Config
from kvip_bgp.domain.ipam import EVENT_ALLOCATED, EVENT_CLEARED, EVENT_FAILED, Pool, parse_range
from kvip_bgp.domain.objects import ObjectKey, ServiceInfo, parse_service
from kvip_bgp.domain.policy import decide
from kvip_bgp.runtime.allocation import Allocations, pool_size, usage
from kvip_bgp.testing import fakes
from kvip_bgp.testing.objects import endpoint, service

POOL = Pool("public", (parse_range("198.51.100.64/30"),))


def with_pools(*pools: Pool) -> Config:
    return dataclasses.replace(parse(fakes.CONFIG), ipam=pools)


CONFIG = with_pools(POOL)


def svc(name: str, rv: int = 1, created: str = "2026-01-01T00:00:00Z", **kw: Any) -> ServiceInfo:
    obj = service(name, resource_version=str(rv), **kw)
    obj["metadata"]["creationTimestamp"] = created
    return parse_service(obj)


def key(name: str) -> ObjectKey:
    return ObjectKey("default", name)


def ips(write: Any) -> list[str]:
    return [str(ip) for ip in write.ips]


def test_a_new_service_gets_the_first_address_and_both_writes() -> None:
    state = Allocations(CONFIG)
    state.listed_all([svc("web")], "10")
    writes, failures = state.next_writes()
    (write,) = writes
    assert ips(write) == ["198.51.100.64"] and write.pool == "public"
    assert write.status and write.annotation
    assert [e.reason for e in write.events] == [EVENT_ALLOCATED]
    assert failures == []


def test_an_allocation_in_place_writes_nothing() -> None:
    state = Allocations(CONFIG)
    held = svc("web", annotations={POOL_ANNOTATION: "public"}, ingress=["198.51.100.66"])
    state.listed_all([held], "10")
    assert state.next_writes() == ([], [])
    # Adopted without the annotation (another IPAM wrote the status): only the annotation.
    state = Allocations(CONFIG)
    state.listed_all([svc("web", ingress=["198.51.100.66"])], "10")
    (write,) = state.next_writes()[0]
    assert ips(write) == ["198.51.100.66"] and write.annotation and not write.status
    assert write.events == ()


def test_a_stale_event_never_replaces_a_newer_version() -> None:
    state = Allocations(CONFIG)
    held = svc("web", rv=7, annotations={POOL_ANNOTATION: "public"}, ingress=["198.51.100.64"])
    state.listed_all([held], "10")
    state.next_writes()
    # A watch event from before our write (rv 5 < 7): the address must not look free.
    state.seen(svc("web", rv=5))
    assert not state.changed
    state.seen(svc("other", rv=11))
    (write,) = state.next_writes()[0]
    assert write.service.key == key("other") and ips(write) == ["198.51.100.65"]
    # An event older than the list, for a Service the list did not show: gone since.
    state.seen(svc("ghost", rv=9))
    assert state.next_writes()[0][0].service.key == key("other")  # no ghost claim


def test_exhaustion_fails_once_then_a_release_serves_the_pending_service() -> None:
    tiny = with_pools(*(Pool("one", (parse_range("198.51.100.64/32"),)),))
    state = Allocations(tiny)
    first = svc("a", annotations={POOL_ANNOTATION: "one"}, ingress=["198.51.100.64"])
    state.listed_all([first, svc("b", created="2026-01-02T00:00:00Z")], "10")
    writes, failures = state.next_writes()
    assert writes == [] and [(e.service, e.reason) for e in failures] == [(key("b"), EVENT_FAILED)]
    state.seen(svc("c", rv=11, created="2026-01-03T00:00:00Z"))
    writes, failures = state.next_writes()
    assert [e.service for e in failures] == [key("c")]  # b is not told again
    state.seen(dataclasses.replace(first, resource_version="12"), deleted=True)
    (write,) = state.next_writes()[0]
    assert write.service.key == key("b") and ips(write) == ["198.51.100.64"]


def test_an_invalid_request_releases_and_fails_and_keeps_its_address_out_of_reach() -> None:
    state = Allocations(CONFIG)
    bad = svc(
        "bad",
        annotations={
            POOL_ANNOTATION: "public",
            "kvip-bgp.io/loadbalancerIPs": "198.51.100.64",
            "metallb.io/loadBalancerIPs": "198.51.100.65",
        },
        ingress=["198.51.100.64"],
    )
    state.listed_all([bad, svc("new", created="2026-01-02T00:00:00Z")], "10")
    writes, failures = state.next_writes()
    by_key = {w.service.key: w for w in writes}
    assert ips(by_key[key("bad")]) == [] and by_key[key("bad")].pool is None
    assert [e.reason for e in by_key[key("bad")].events] == [EVENT_CLEARED]
    assert ips(by_key[key("new")]) == ["198.51.100.65"]  # .64 waits for its release
    assert writes[0].service.key == key("bad")  # the release goes first
    assert [e.reason for e in failures] == [EVENT_FAILED]
    assert "metallb.io/loadBalancerIPs" in failures[0].message


def test_a_take_of_a_released_address_waits_for_the_release() -> None:
    narrow = with_pools(Pool("p", (parse_range("198.51.100.64/31"),), namespaces=frozenset({"a"})))
    moved = parse_service(
        service(
            "x",
            namespace="b",
            resource_version="3",
            ingress=["198.51.100.64"],
            annotations={POOL_ANNOTATION: "p"},
        )
    )
    newcomer = parse_service(service("y", namespace="a", resource_version="4"))
    state = Allocations(narrow)
    state.listed_all([moved, newcomer], "10")
    writes, _ = state.next_writes()
    assert [w.service.key.name for w in writes] == ["x", "y"]
    assert ips(writes[1]) == ["198.51.100.64"] and writes[1].after == {moved.key}


def test_a_service_that_stops_being_ours_is_released() -> None:
    state = Allocations(CONFIG)
    held = svc("web", annotations={POOL_ANNOTATION: "public"}, ingress=["198.51.100.64"])
    state.listed_all([held], "10")
    assert state.next_writes() == ([], [])
    state.seen(
        svc(
            "web",
            rv=11,
            lb_class="someone-else",
            annotations={POOL_ANNOTATION: "public"},
            ingress=["198.51.100.64"],
        )
    )
    (write,) = state.next_writes()[0]
    assert write.ips == () and write.pool is None and write.status and write.annotation


def test_new_pools_replan_and_a_pending_service_gets_an_address() -> None:
    full = with_pools(*(Pool("one", (parse_range("198.51.100.64/32"),)),))
    state = Allocations(full)
    first = svc("a", annotations={POOL_ANNOTATION: "one"}, ingress=["198.51.100.64"])
    state.listed_all([first, svc("b", created="2026-01-02T00:00:00Z")], "10")
    assert state.next_writes()[0] == []
    state.set_config(with_pools(*(Pool("one", (parse_range("198.51.100.64/31"),)),)))
    assert state.dirty
    (write,) = state.next_writes()[0]
    assert write.service.key == key("b") and ips(write) == ["198.51.100.65"]


def test_status_tells_pool_allocation_and_why_pending() -> None:
    tiny = with_pools(*(Pool("one", (parse_range("198.51.100.64/32"),)),))
    state = Allocations(tiny)
    first = svc("a", annotations={POOL_ANNOTATION: "one"}, ingress=["198.51.100.64"])
    state.listed_all([first, svc("b", created="2026-01-02T00:00:00Z")], "10")
    state.next_writes()
    status = state.status(True)
    assert status.steps(key("a")) == ("allocation: pool one -> 198.51.100.64",)
    assert status.steps(key("b"))[0].startswith("allocation: PENDING: no free address")
    assert [(u.pool, u.family, u.assigned, u.available) for u in status.usage] == [("one", 4, 1, 0)]
    doc = status.document()
    assert doc["pending"] == [{"service": "default/b", "reason": status.pending[key("b")]}]
    assert state.status(False).steps(key("a"))[0].startswith("allocation: made by the Lease holder")


def test_usage_is_computed_never_enumerated() -> None:
    big = Pool(
        "v6",
        (parse_range("2001:db8:100::/64"), parse_range("198.51.100.0/24")),
        avoid_buggy_ips=True,
    )
    assert pool_size(big, 6) == 2**64
    assert pool_size(big, 4) == 254
    wide = Pool("w", (parse_range("10.0.0.0/16"),), avoid_buggy_ips=True)
    assert pool_size(wide, 4) == 65536 - 2 * 256
    rows = usage([big], [ipaddress.ip_address("2001:db8:100::5")])
    assert [(r.family, r.assigned, r.available) for r in rows] == [(4, 0, 254), (6, 1, 2**64 - 1)]


@pytest.mark.parametrize(
    ("annotations", "spec_ip", "expected"),
    [
        ({"kvip-bgp.io/loadbalancerIPs": "198.51.100.70"}, None, ("198.51.100.70",)),
        ({"metallb.io/loadBalancerIPs": "198.51.100.70"}, "198.51.100.70", ("198.51.100.70",)),
        ({"kvip-bgp.io/loadbalancerIPs": "198.51.100.70"}, "198.51.100.71", "spec.loadBalancerIP"),
        ({"kvip-bgp.io/address-pool": "a", "metallb.io/address-pool": "b"}, None, "address-pool"),
        ({"kvip-bgp.io/allow-shared-ip": "k", "metallb.io/allow-shared-ip": "j"}, None, "allow"),
        ({"kvip-bgp.io/loadbalancerIPs": "nope"}, None, "not an IP address"),
    ],
)
def test_requests_are_read_under_both_prefixes_and_must_agree(
    annotations: dict[str, str], spec_ip: str | None, expected: Any
) -> None:
    claim = claim_of(
        parse_service(service("web", annotations=annotations, spec_ip=spec_ip)), CONFIG
    )
    if isinstance(expected, tuple):
        assert not isinstance(claim, InvalidRequest) and claim is not None
        assert tuple(map(str, claim.requested_ips)) == expected
    else:
        assert isinstance(claim, InvalidRequest) and expected in claim.message


def test_a_claim_carries_families_sharing_ports_and_local_selector() -> None:
    obj = service("web", traffic_policy="Local", annotations={"metallb.io/allow-shared-ip": "k"})
    obj["spec"]["ipFamilies"] = ["IPv6", "IPv4"]
    obj["spec"]["ipFamilyPolicy"] = "PreferDualStack"
    claim = claim_of(parse_service(obj), CONFIG)
    assert claim is not None and not isinstance(claim, InvalidRequest)
    assert claim.families == (6, 4) and claim.family_policy == "PreferDualStack"
    assert claim.sharing_key == "k" and claim.local_selector == "app=web"
    assert claim.ports == frozenset({("TCP", 80)})
    assert claim_of(parse_service(service("c", type="ClusterIP")), CONFIG) is None


def test_with_pools_the_policy_announces_the_allocation_not_the_request() -> None:
    requested = parse_service(service("web", "198.51.100.70"))
    here = [endpoint("kvl-node")]
    node_config = dataclasses.replace(CONFIG, node_name="kvl-node")
    assert decide(requested, here, None, node_config).vip_source is None
    allocated = parse_service(service("web", "198.51.100.70", ingress=["198.51.100.70"]))
    assert decide(allocated, here, None, node_config).vip_source == "status.loadBalancer.ingress"


def test_kvip_bgp_status_prints_pools_allocations_and_pending() -> None:
    from kvip_bgp.ops.report import render_status

    tiny = with_pools(Pool("one", (parse_range("198.51.100.64/32"),)))
    state = Allocations(tiny)
    first = svc("a", annotations={POOL_ANNOTATION: "one"}, ingress=["198.51.100.64"])
    state.listed_all([first, svc("b", created="2026-01-02T00:00:00Z")], "10")
    state.next_writes()
    out = render_status({"ipam": state.status(True).document()})
    assert "IPAM POOLS" in out and "one   IPv4    1         0" in out
    assert "default/a  one   198.51.100.64" in out
    assert "PENDING ALLOCATION" in out and "default/b  no free address" in out
    follower = render_status({"ipam": state.status(False).document()})
    assert "allocation is made by the Lease holder" in follower
    assert "IPAM" not in render_status({})


# ------------------------------------------------------------- property: the whole loop

POOL8 = with_pools(Pool("p", (parse_range("198.51.100.64/29"),)))
CREATE = st.tuples(st.just("create"), st.integers(0, 9), st.sampled_from([None, None, 64, 71]))
STEP = st.tuples(st.just("step"), st.integers(1, 4), st.none())
OPS = st.lists(
    st.one_of(
        CREATE,
        CREATE,
        STEP,
        STEP,
        st.tuples(st.just("delete"), st.integers(0, 9), st.none()),
        st.tuples(st.just("restart"), st.none(), st.none()),
        st.tuples(st.just("stale"), st.integers(0, 9), st.none()),
    ),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_writes_never_give_an_address_to_two_services_nor_move_a_valid_one(
    ops: list[tuple[str, int | None, int | None]],
) -> None:
    """A simulated API (versions, 409s) in front of the real Allocations: after every
    write no address is held twice, and a held address only goes with its Service."""
    store: dict[str, ServiceInfo] = {}
    history: dict[str, list[ServiceInfo]] = {}
    version = [100]
    state = Allocations(POOL8)
    state.listed_all([], "100")

    def put(info: ServiceInfo) -> ServiceInfo:
        version[0] += 1
        info = dataclasses.replace(info, resource_version=str(version[0]))
        store[info.key.name] = info
        history.setdefault(info.key.name, []).append(info)
        return info

    def check(before: dict[str, tuple[str, ...]]) -> None:
        held = [ip for s in store.values() for ip in s.ingress_ips]
        assert len(held) == len(set(held)), store
        for name, ips in before.items():
            if ips and name in store:
                assert store[name].ingress_ips == ips, (name, ips, store[name].ingress_ips)

    for op, arg, extra in ops:
        if op == "create" and arg is not None and f"s{arg}" not in store:
            notes = {"kvip-bgp.io/loadbalancerIPs": f"198.51.100.{extra}"} if extra else None
            created = f"2026-01-01T00:00:{version[0] % 60:02d}Z"
            state.seen(put(svc(f"s{arg}", created=created, annotations=notes)))
        elif op == "delete" and f"s{arg}" in store:
            gone = store.pop(f"s{arg}")
            version[0] += 1
            state.seen(dataclasses.replace(gone, resource_version=str(version[0])), deleted=True)
        elif op == "stale" and history.get(f"s{arg}"):
            state.seen(history[f"s{arg}"][0])  # a late watch event: must change nothing
        elif op == "restart":
            state = Allocations(POOL8)
            state.listed_all(list(store.values()), str(version[0]))
        elif op == "step" and arg is not None:
            writes, _ = state.next_writes()
            done: set[ObjectKey] = set()
            for write in writes[:arg]:
                if not write.after <= done:
                    break
                current = store.get(write.service.key.name)
                if current is None or current.resource_version != write.service.resource_version:
                    if current is not None:
                        state.seen(current)  # 409: read again
                    break
                # Requests never change here, so a holding is never moved or dropped.
                if current.ingress_ips:
                    assert tuple(map(str, write.ips)) == current.ingress_ips, write
                before = {n: s.ingress_ips for n, s in store.items() if n != current.key.name}
                notes = dict(current.annotations)
                notes.pop(POOL_ANNOTATION, None)
                if write.pool is not None:
                    notes[POOL_ANNOTATION] = write.pool
                written = put(
                    dataclasses.replace(
                        current,
                        ingress_ips=tuple(map(str, write.ips)),
                        annotations=tuple(sorted(notes.items())),
                    )
                )
                check(before)
                state.seen(written)
                done.add(write.service.key)
