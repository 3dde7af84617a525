"""The cluster thread's incremental work ends where deciding everything afresh would.

Hypothesis makes a listing and a stream of Service, EndpointSlice and Node changes, cut
into batches as the thread takes them; the real ``ClusterState.run`` works through them.
At the end its published routes must be ``advertisements`` of ``decide`` for every
Service in the final objects, and its /status decisions those decisions: whatever the
thread keeps between batches (decisions, the VIP index, the Services' prepared parts,
its fast path for a VIP with one claimant) changes the work, never the answer.
"""

from __future__ import annotations

import queue
from typing import Any

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
from kvip_bgp.runtime.cluster import ClusterState, ClusterStatus
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
CHANGE = st.one_of(
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), SERVICE),
    st.tuples(st.sampled_from(["ADDED", "MODIFIED", "DELETED"]), SLICE),
    st.tuples(st.sampled_from(["MODIFIED", "DELETED"]), NODE),
)


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
    changes: list[tuple[str, Any]],
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
    for kind, obj in changes:
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
    state = ClusterState(
        CONFIG, events_queue, publish, lambda: None, Metrics(), status, writes.append, gather=0
    )
    state.run()

    def endpoints(key: ObjectKey) -> list[Any]:
        mine = sorted((s for s in slices.values() if s.service == key), key=lambda s: str(s.key))
        return [ep for s in mine for ep in s.endpoints]

    expected = {key: decide(svc, endpoints(key), node, CONFIG) for key, svc in services.items()}
    assert published == advertisements(expected.values())[0]

    assert {d.service: d for d in status.read().decisions} == expected


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
    ClusterState(
        CONFIG,
        events_queue,
        publish,
        lambda: None,
        Metrics(),
        status,
        None if writes is None else writes.append,
        gather=0,
    ).run()
    return published


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
