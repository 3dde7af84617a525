"""The cluster thread's incremental work ends where deciding everything afresh would.

Hypothesis makes a listing and a stream of Service, EndpointSlice and Node changes, cut
into batches as the thread takes them; the real ``ClusterState.run`` works through them.
At the end its published routes must be ``advertisements`` of ``decide`` for every
Service in the final objects, and its /status decisions those decisions: whatever the
thread keeps between batches (decisions, the VIP index, the Services' prepared parts,
its fast path for a VIP with one claimant) changes the work, never the answer.
"""

from __future__ import annotations

import dataclasses
import queue
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cluster_micro import Batches
from kvip_bgp.configfile import load as config_load
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import (
    EndpointSliceInfo,
    NodeInfo,
    ObjectKey,
    ServiceInfo,
    parse_endpoint_slice,
    parse_node,
    parse_service,
)
from kvip_bgp.domain.policy import advertisements, decide
from kvip_bgp.runtime import cluster
from kvip_bgp.runtime.cache import ClusterCache
from kvip_bgp.runtime.cluster import ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import Changed, ClusterStop, Listed, StatusWanted, WriteRequest
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reports import vip_text
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.testing import objects

CONFIG = config_load.parse(
    {
        "node_name": "node-1",
        "bgp": {
            "asn": 64512,
            "peers": [{"address": "192.0.2.2", "asn": 64500, "local_address": "192.0.2.1"}],
        },
        "vips": {"allowed": ["198.51.100.0/25"]},
        "kubernetes": {"enabled": True},
    },
    environ={},
)
NAMES = ("a", "b", "c")
VIPS = (
    "198.51.100.5",
    "198.51.100.5",
    "198.51.100.6",
    "198.51.100.7",
    "198.51.100.200",
    "127.0.0.1",
)

SERVICE = st.builds(
    lambda name, vip, ns, kind, policy, med, spec_ip: parse_service(
        objects.service(
            name,
            vip,
            namespace=ns,
            type=kind,
            traffic_policy=policy,
            spec_ip=spec_ip,
            annotations={} if med is None else {"kvip-bgp.io/med": med},
        )
    ),
    name=st.sampled_from(NAMES),
    vip=st.one_of(
        st.sampled_from(VIPS[:4]),
        st.sampled_from(VIPS),
        st.none(),
        st.lists(st.sampled_from(VIPS), min_size=1, max_size=3),
    ).map(lambda v: ",".join(v) if isinstance(v, list) else v),
    ns=st.sampled_from(["default", "default", "team"]),
    kind=st.sampled_from(["LoadBalancer"] * 4 + ["ClusterIP"]),
    policy=st.sampled_from(["Cluster", "Cluster", "Local"]),
    med=st.sampled_from([None, None, None, "10", "20", "bad"]),
    spec_ip=st.one_of(st.none(), st.sampled_from(VIPS)),
)
SLICE = st.builds(
    lambda name, ns, suffix, nodes: parse_endpoint_slice(
        objects.endpoint_slice(name, nodes, namespace=ns, suffix=suffix)
    ),
    name=st.sampled_from(NAMES),
    ns=st.sampled_from(["default", "default", "team"]),
    suffix=st.sampled_from(["x", "y"]),
    nodes=st.lists(
        st.tuples(st.sampled_from(["node-1", "node-1", "node-2"]), st.booleans()), max_size=2
    ),
)
NODE = st.builds(
    lambda unschedulable, addresses, name: parse_node(
        objects.node(name, unschedulable=unschedulable, addresses=addresses)
    ),
    unschedulable=st.sampled_from([False, False, True]),
    addresses=st.lists(st.sampled_from(["192.0.2.1", "198.51.100.6"]), max_size=1),
    name=st.sampled_from(["node-1", "node-1", "node-2"]),
)
# A status written to one of the Services there are (the n-th, by key) and nothing else
# changed: what the status writer's PATCH comes back as. Its VIP may come from it.
ECHO = st.tuples(
    st.just("ECHO"),
    st.integers(0, 5),
    st.sampled_from([(), ("198.51.100.5",), ("198.51.100.6", "198.51.100.7")]),
)
CHANGE = st.one_of(
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), SERVICE),
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), SLICE),
    st.tuples(st.sampled_from(["MODIFIED", "DELETED"]), NODE),
    ECHO,
)


_TAKE_ECHOES = ClusterCache.take_echoes


def _per_service(writes: list[WriteRequest]) -> dict[str, list[WriteRequest]]:
    """The writes for each Service, in the order they were asked for."""
    grouped: dict[str, list[WriteRequest]] = {}
    for write in writes:
        grouped.setdefault(str(getattr(write, "service", "")), []).append(write)
    return grouped


def _no_echoes(cache: ClusterCache) -> set[ObjectKey]:
    """``take_echoes`` as if no change were status alone: every Service decided again."""
    _TAKE_ECHOES(cache)
    return set()


def _resource(obj: Any) -> str:
    if isinstance(obj, ServiceInfo):
        return "services"
    return "endpointslices" if isinstance(obj, EndpointSliceInfo) else "nodes"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    listed_services=st.lists(SERVICE, min_size=1, max_size=4),
    listed_slices=st.lists(SLICE, max_size=2),
    listed_node=st.one_of(st.just(parse_node(objects.node())), st.none(), NODE),
    changes=st.lists(CHANGE, max_size=25),
    cuts=st.lists(st.integers(1, 6), min_size=30, max_size=30),
    revisit=st.lists(st.integers(0, 24), max_size=4),
)
def test_incremental_routes_and_decisions_are_those_decided_afresh(
    listed_services: list[ServiceInfo],
    listed_slices: list[EndpointSliceInfo],
    listed_node: NodeInfo | None,
    changes: list[tuple[Any, ...]],
    cuts: list[int],
    revisit: list[int],
) -> None:
    # The same object again, unchanged (a watch's resent event; the slice of a
    # Service that did not change): the thread may reuse what it kept for it.
    changes = changes + [changes[i] for i in revisit if i < len(changes)]
    services = {s.key: s for s in listed_services}
    # Listed Services with a ready endpoint here, as most are (but "c": none yet).
    ready = [
        objects.endpoint_slice(k.name, ["node-1"], namespace=k.namespace)
        for k in services
        if k.name != "c"
    ]
    slices = {s.key: s for s in [*map(parse_endpoint_slice, ready), *listed_slices]}
    node = listed_node if listed_node is not None and listed_node.name == "node-1" else None
    events: list[Any] = [
        Listed("nodes", () if listed_node is None else (listed_node,), "1"),
        Listed("services", tuple(services.values()), "1"),
        Listed("endpointslices", tuple(slices.values()), "1"),
    ]
    for version, (kind, obj, *ingress) in enumerate(changes):
        if kind == "ECHO":
            if not services:
                continue
            current = services[sorted(services)[obj % len(services)]]
            kind = "MODIFIED"
            obj = dataclasses.replace(
                current, ingress_ips=ingress[0], resource_version=f"e{version}"
            )
        events.append(Changed(_resource(obj), kind, obj))
        deleted = kind == "DELETED"
        if isinstance(obj, ServiceInfo):
            if deleted:
                services.pop(obj.key, None)
            else:
                services[obj.key] = obj
        elif isinstance(obj, EndpointSliceInfo):
            if deleted:
                slices.pop(obj.key, None)
            else:
                slices[obj.key] = obj
        elif obj.name == "node-1":
            node = None if deleted else obj
    batches: list[list[Any]] = []
    start = 0
    for cut in cuts:
        if start >= len(events):
            break
        batches.append(events[start : start + cut])
        start += cut
    if events[start:]:
        batches.append(events[start:])
    published: dict[IPAddress, Advertisement] = {}

    def publish(vip: IPAddress, advert: Advertisement | None) -> None:
        if advert is None:
            del published[vip]  # only what was published is withdrawn
        else:
            published[vip] = advert

    writes: list[WriteRequest] = []
    status = Snapshot(ClusterStatus())
    events_queue: queue.SimpleQueue[Any] = Batches([*batches, [ClusterStop()]])
    _state(events_queue, publish, status, writes.append).run()
    # Keeping the decision of a Service whose status alone changed asks for what
    # deciding it again asks for: the same statuses and Events, for each Service in the
    # same order (the order across Services within a batch is a set's either way).
    afresh: list[WriteRequest] = []
    with mock.patch.object(ClusterCache, "take_echoes", _no_echoes):
        _state(
            Batches([*batches, [ClusterStop()]]),
            lambda vip, advert: None,
            Snapshot(ClusterStatus()),
            afresh.append,
        ).run()
    assert _per_service(writes) == _per_service(afresh)
    # The status wanted, asked of the prepared decision and not looked at again for the
    # same objects, is what asking of a decision made afresh every time asks for.
    fresh: list[WriteRequest] = []
    with mock.patch.object(cluster, "want_status", _reference_want_status({})):
        _state(
            Batches([*batches, [ClusterStop()]]),
            lambda vip, advert: None,
            Snapshot(ClusterStatus()),
            fresh.append,
        ).run()
    assert writes == fresh

    def endpoints(key: ObjectKey) -> list[Any]:
        mine = sorted((s for s in slices.values() if s.service == key), key=lambda s: str(s.key))
        return [ep for s in mine for ep in s.endpoints]

    expected = {key: decide(svc, endpoints(key), node, CONFIG) for key, svc in services.items()}
    assert published == advertisements(expected.values())[0]

    assert {d.service: d for d in status.read().decisions} == expected


def _reference_want_status(
    wanted_before: dict[ObjectKey, tuple[ServiceInfo, tuple[str, ...]]],
) -> Callable[[ClusterCache, Any, ServiceInfo, Any], None]:
    """``reports.want_status`` at 479fb69, of the Service's decision made afresh."""

    def want(c: ClusterCache, write: Any, service: ServiceInfo, _decision: Any) -> None:
        decision = decide(service, c.endpoints(service.key), c.node, CONFIG)
        if write is None or decision.vip_source is None:
            return
        wanted: tuple[str, ...] | None = None
        if decision.vip_source != "status.loadBalancer.ingress" and decision.attributes:
            ips = tuple(
                vip_text(v.vip)
                for v in decision.verdicts
                if not (v.reason is not None and v.reason.of_address)
            )
            if ips and ips != service.ingress_ips:
                wanted = ips
        if wanted is not None:
            last = wanted_before.get(service.key)
            if last is None or last[0] is not service or last[1] != wanted:
                wanted_before[service.key] = (service, wanted)
                write(StatusWanted(str(service.key), wanted))
        elif wanted_before.pop(service.key, None) is not None:
            write(StatusWanted(str(service.key), None))

    return want


def _run(
    batches: list[list[Any]], writes: list[WriteRequest] | None = None
) -> dict[IPAddress, Advertisement]:
    published: dict[IPAddress, Advertisement] = {}

    def publish(vip: IPAddress, advert: Advertisement | None) -> None:
        if advert is None:
            del published[vip]
        else:
            published[vip] = advert

    events_queue: queue.SimpleQueue[Any] = Batches([*batches, [ClusterStop()]])
    status = Snapshot(ClusterStatus())
    _state(events_queue, publish, status, None if writes is None else writes.append).run()
    return published


def _state(
    events: queue.SimpleQueue[Any],
    publish: Callable[[IPAddress, Advertisement | None], None],
    status: Snapshot[ClusterStatus],
    write: Callable[[WriteRequest], None] | None,
) -> ClusterState:
    """The thread's state over scripted batches, taken back to back (no gathering)."""
    return ClusterState(
        CONFIG, events, publish, lambda: None, Metrics(), status, write, gather=0, bulk_gather=0
    )


def test_a_service_changed_while_waiting_for_endpoints_is_prepared_again() -> None:
    """Its prepared decision, kept while it had no endpoint, is of the old object."""
    old = parse_service(objects.service("a", "198.51.100.5"))
    new = parse_service(objects.service("a", "198.51.100.6"))
    slice_ = parse_endpoint_slice(objects.endpoint_slice("a", ["node-1"]))
    listed = [
        Listed("nodes", (parse_node(objects.node()),), "1"),
        Listed("services", (old,), "1"),
        Listed("endpointslices", (), "1"),
    ]
    published = _run(
        [
            listed,
            [Changed("services", "MODIFIED", new)],
            [Changed("endpointslices", "ADDED", slice_)],
        ]
    )
    assert [str(vip) for vip in published] == ["198.51.100.6"]
    # And the same Service object again: its kept decision is the one to use.
    published = _run([listed, [Changed("endpointslices", "ADDED", slice_)]])
    assert [str(vip) for vip in published] == ["198.51.100.5"]


def test_a_status_is_asked_for_once_per_service_object() -> None:
    """Decided before and after its slice, a Service asks once; changed, it asks again."""
    svc = parse_service(objects.service("a", "198.51.100.5"))
    again = parse_service(objects.service("a", "198.51.100.5", resource_version="2"))
    written = parse_service(objects.service("a", "198.51.100.5", ingress=["198.51.100.5"]))
    slice_ = parse_endpoint_slice(objects.endpoint_slice("a", ["node-1"]))
    writes: list[WriteRequest] = []
    _run(
        [
            [
                Listed("nodes", (parse_node(objects.node()),), "1"),
                Listed("services", (), "1"),
                Listed("endpointslices", (), "1"),
            ],
            [Changed("services", "ADDED", svc)],
            [Changed("endpointslices", "ADDED", slice_)],  # the same object, decided again
            [Changed("services", "MODIFIED", again)],  # a new object: asked again
            [Changed("services", "MODIFIED", written)],  # the status is there: cancelled
            [Changed("endpointslices", "MODIFIED", slice_)],
        ],
        writes,
    )
    assert [w for w in writes if isinstance(w, StatusWanted)] == [
        StatusWanted("default/a", ("198.51.100.5",)),
        StatusWanted("default/a", ("198.51.100.5",)),
        StatusWanted("default/a", None),
    ]


@settings(max_examples=500)
@given(vip=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_vip_text_is_str(vip: IPAddress) -> None:
    """The status the thread asks for lists each VIP as ``str`` writes it."""
    assert vip_text(vip) == str(vip)


def _counting_prepare() -> tuple[list[ObjectKey], Any]:
    calls: list[ObjectKey] = []
    real = cluster.prepare

    def counted(service: ServiceInfo, *args: Any) -> Any:
        calls.append(service.key)
        return real(service, *args)

    return calls, counted


LISTED = [
    Listed("nodes", (parse_node(objects.node()),), "1"),
    Listed("services", (), "1"),
    Listed("endpointslices", (), "1"),
]


@pytest.mark.parametrize(
    ("vip", "then", "decided_again"),
    [
        # Its VIP from the annotation: the status written back changes nothing.
        ("198.51.100.5", [], False),
        # Its VIP from the status (an IPAM's): the status is its VIP, decided again.
        (None, [], True),
        # The status and, in the same batch, its slice: the endpoints may have changed.
        ("198.51.100.5", ["slice"], True),
    ],
)
def test_a_status_written_back_is_decided_again_only_where_it_can_matter(
    vip: str | None, then: list[str], decided_again: bool
) -> None:
    ingress = None if vip is not None else ["198.51.100.6"]
    svc = parse_service(objects.service("a", vip, ingress=ingress))
    slice_ = parse_endpoint_slice(objects.endpoint_slice("a", ["node-1"]))
    back = dataclasses.replace(svc, ingress_ips=("198.51.100.5",), resource_version="9")
    if vip is None:
        back = dataclasses.replace(back, ingress_ips=("198.51.100.7",))
    echo: list[Any] = [Changed("services", "MODIFIED", back)]
    if "slice" in then:
        echo.append(Changed("endpointslices", "MODIFIED", slice_))
    calls, counted = _counting_prepare()
    writes: list[WriteRequest] = []
    with mock.patch.object(cluster, "prepare", counted):
        published = _run(
            [
                LISTED,
                [Changed("services", "ADDED", svc), Changed("endpointslices", "ADDED", slice_)],
                echo,
            ],
            writes,
        )
    assert len(calls) == (2 if decided_again else 1)
    assert [str(v) for v in published] == (["198.51.100.7"] if vip is None else [vip])
    wants = [w for w in writes if isinstance(w, StatusWanted)]
    if vip is not None:  # asked for, then cancelled once the watch shows it written
        assert wants == [
            StatusWanted("default/a", ("198.51.100.5",)),
            StatusWanted("default/a", None),
        ]
