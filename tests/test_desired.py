"""The reconciler's incremental bookkeeping equals the full recomputation it replaces."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from kvip_bgp.domain.model import Advertisement, Community, IPAddress, RouteAttributes
from kvip_bgp.domain.policy import merge_sources
from kvip_bgp.netif.announcer import KernelTableAnnouncer
from kvip_bgp.runtime.desired import DesiredRoutes
from kvip_bgp.runtime.messages import Inbox, Message, SourceSynced, VipDesired
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import RESYNC_INTERVAL, Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakes import FakeAddresses, FakeRoutes

SOURCES = ("kubernetes", "static:a", "static:b")
VIPS = tuple(ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 9))


def advert(vip: IPAddress, community: int, source: str) -> Advertisement:
    attrs = RouteAttributes(communities=(Community.parse(f"64512:{community}"),))
    return Advertisement(vip, attrs, (source,))


# (source, vip, community or None for "nothing")
puts = st.tuples(st.sampled_from(SOURCES), st.sampled_from(VIPS), st.none() | st.integers(1, 3))
ops = st.lists(
    st.one_of(
        puts.map(lambda p: ("put", p)),
        st.sampled_from(SOURCES).map(lambda s: ("drop", s)),
        st.just(("rebuild", None)),
        st.just(("take", None)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_desired_routes_equal_merge_sources_and_report_every_change(
    sequence: list[tuple[str, object]],
) -> None:
    routes = DesiredRoutes()
    model: dict[str, dict[IPAddress, Advertisement]] = {}
    taken: dict[IPAddress, Advertisement] = {}  # the merged value at the last take
    for kind, arg in sequence:
        if kind == "put":
            assert isinstance(arg, tuple)
            source, vip, community = arg
            value = None if community is None else advert(vip, community, source)
            routes.put(source, vip, value)
            if value is None:
                model.get(source, {}).pop(vip, None)
            else:
                model.setdefault(source, {})[vip] = value
        elif kind == "drop":
            assert isinstance(arg, str)
            routes.drop_source(arg)
            model.pop(arg, None)
        elif kind == "rebuild":
            routes.rebuild()
        else:
            expected = merge_sources(model)
            changed = routes.take_changed()
            differ = {v for v in expected.keys() | taken.keys() if expected.get(v) != taken.get(v)}
            assert differ <= changed
            taken = expected
        assert dict(routes.effective) == merge_sources(model)


# (source, [(vip, community or None)]): one put_many, or the same puts one by one
runs = st.tuples(
    st.sampled_from(SOURCES),
    st.lists(st.tuples(st.sampled_from(VIPS), st.none() | st.integers(1, 3)), max_size=8),
)
batch_ops = st.lists(
    st.one_of(
        runs.map(lambda r: ("run", r)),
        st.sampled_from(SOURCES).map(lambda s: ("drop", s)),
        st.just(("rebuild", None)),
        st.just(("take", None)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(batch_ops)
def test_put_many_is_each_put_in_turn(sequence: list[tuple[str, object]]) -> None:
    """The same tables in the same order, the same changes reported, the same rebuild."""
    many, each = DesiredRoutes(), DesiredRoutes()
    for kind, arg in sequence:
        if kind == "run":
            assert isinstance(arg, tuple)
            source, pairs = arg
            claims = [(vip, None if c is None else advert(vip, c, source)) for vip, c in pairs]
            many.put_many(source, claims)
            for vip, value in claims:
                each.put(source, vip, value)
        elif kind == "drop":
            assert isinstance(arg, str)
            many.drop_source(arg)
            each.drop_source(arg)
        elif kind == "rebuild":
            assert many.rebuild() == each.rebuild()
        else:
            assert many.take_changed() == each.take_changed()
        assert list(many.effective.items()) == list(each.effective.items())
        assert list(many.sources()) == list(each.sources())


class Node:
    """A reconciler over fake addresses and a kernel-table announcer, stepped by hand."""

    def __init__(self) -> None:
        self.inbox: Inbox = CoalescingQueue()
        self.addresses = FakeAddresses(set())
        self.routes = FakeRoutes()
        self.announcer = KernelTableAnnouncer(self.routes)
        self.reconciler = Reconciler(
            self.inbox,
            self.addresses,
            self.announcer,
            Metrics(),
            Snapshot(ReconcilerStatus()),
            SOURCES,
        )
        self.reconciler.start(0.0)

    def step(self, messages: list[Message], now: float) -> None:
        assert self.reconciler.step(messages, now)


messages = st.lists(
    st.lists(
        st.one_of(
            puts.map(
                lambda p: VipDesired(p[0], p[1], None if p[2] is None else advert(p[1], p[2], p[0]))
            ),
            st.sampled_from(SOURCES).map(SourceSynced),
        ),
        max_size=6,
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(messages, st.sets(st.sampled_from(VIPS), max_size=2))
def test_incremental_passes_bind_announce_and_unbind_as_full_passes_do(
    batches: list[list[Message]], broken: set[IPAddress]
) -> None:
    """One node resyncs only at its start (every later pass is incremental), the other
    resyncs on every pass; after each batch both hold the same addresses and routes."""
    incremental, full = Node(), Node()
    for node in (incremental, full):
        node.addresses.broken = set(broken)
    model: dict[str, dict[IPAddress, Advertisement]] = {}  # the messages one by one
    for index, batch in enumerate(batches):
        incremental.step(batch, 0.001 * index)
        full.step(batch, RESYNC_INTERVAL * index)
        for message in batch:
            if isinstance(message, VipDesired):
                table = model.setdefault(message.source, {})
                if message.advert is None:
                    table.pop(message.vip, None)
                else:
                    table[message.vip] = message.advert
        assert dict(incremental.announcer.announced()) == merge_sources(model)
        assert incremental.addresses.bound == full.addresses.bound
        assert dict(incremental.announcer.announced()) == dict(full.announcer.announced())
        assert incremental.routes.ours == full.routes.ours
