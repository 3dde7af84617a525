"""The announcer's incremental difference equals the full one, on every pass.

Two ExabgpAnnouncers get the same messages and desired sets; one is told on every pass
which VIPs changed (as the reconciler does), the other is told nothing (``changed`` None:
the full difference). Whatever they write to ExaBGP, and what they consider announced
and withdrawing, must be the same after every pass: a missing ``everything()`` after a
reconnect, an error ack, a peer coming up, a resync, a reload or the first sync shows up
here as a pass where the incremental one sends less.
"""

from __future__ import annotations

import ipaddress
import socket

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.bgp.difference import PendingVips
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.runtime.messages import ApiConnected, ApiDisconnected, CommandAck, PeerState
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.testing.fakes import CONFIG

VIPS: list[IPAddress] = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 7)] + [
    ipaddress.ip_address("2001:db8:100::1")
]
ATTRIBUTES = [RouteAttributes(), RouteAttributes(med=10), RouteAttributes(med=20)]
PEER = "192.0.2.2"
# A reload may give the peer an IPv6 next hop: every route goes out again.
CONFIGS = [
    config_module.parse(CONFIG),
    config_module.parse(
        {
            **CONFIG,
            "bgp": {
                **CONFIG["bgp"],
                "peers": [{**CONFIG["bgp"]["peers"][0], "next_hop_v6": "2001:db8::1"}],
            },
        }
    ),
]

vip_index = st.integers(0, len(VIPS) - 1)
op = st.one_of(
    st.tuples(st.just("want"), vip_index, st.none() | st.integers(0, len(ATTRIBUTES) - 1)),
    st.tuples(st.just("hold"), st.frozensets(vip_index, max_size=3)),
    st.tuples(st.just("synced"), st.booleans()),
    st.tuples(st.just("connect")),
    st.tuples(st.just("disconnect")),
    st.tuples(st.just("break")),
    st.tuples(st.just("ack"), st.booleans()),
    st.tuples(st.just("peer"), st.sampled_from(["up", "down"])),
    st.tuples(st.just("resync")),
    st.tuples(st.just("reload"), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([0.1, 1.0, 40.0])),
)
# Each op, then (or not yet) a pass: messages also arrive several to a pass.
ops = st.lists(st.tuples(op, st.booleans()), max_size=60)


class Side:
    """One announcer and ExaBGP's end of its current connection."""

    def __init__(self) -> None:
        self.config = config_module.parse(CONFIG)
        self.announcer = ExabgpAnnouncer(self.config, Metrics(), sleep=lambda _s: None)
        self.far: socket.socket | None = None
        self.changes_seen = -1
        self.announced_seen: dict[IPAddress, Advertisement] = {}
        self.announcer.start()

    def connect(self, generation: int) -> None:
        ours, theirs = socket.socketpair()
        theirs.setblocking(False)
        if self.far is not None:
            self.far.close()
        self.far = theirs
        self.announcer.handle(ApiConnected(generation, ours.detach()), 0.0)

    def written(self) -> list[str]:
        data = b""
        while self.far is not None:
            try:
                chunk = self.far.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        return data.decode().splitlines()

    def close(self) -> None:
        if self.far is not None:
            self.far.close()
            self.far = None


def state(side: Side) -> tuple[object, ...]:
    a = side.announcer
    return (dict(a.announced()), set(a.withdrawing()), a.connected(), a.wake_at())


# Each trigger of a full difference, once for certain (random runs find them only
# sometimes): the step after which only a full difference sends the right thing.
P, N = True, False  # a pass after the op, or not yet
CONNECT, SYNCED = (("connect",), N), (("synced", True), N)
ANNOUNCED = [CONNECT, SYNCED, (("want", 0, 0), P), (("ack", True), N)]
TRIGGERS = {
    "reconnect": [*ANNOUNCED, (("connect",), P)],
    "error ack": [CONNECT, (("want", 0, 0), P), (("ack", False), N), (("tick", 1.0), P)],
    "peer up": [*ANNOUNCED, (("want", 0, None), P), (("peer", "up"), P)],
    "resync": [*ANNOUNCED, (("want", 0, None), P), (("resync",), P)],
    "reload, new next hop": [*ANNOUNCED, (("want", 6, 0), P), (("reload", True), P)],
    "first sync": [
        *[CONNECT, (("want", 0, 0), P), (("ack", True), N), (("connect",), N)],
        *[(("want", 0, None), P), (("synced", True), P)],
    ],
    "nothing to send": [CONNECT, (("want", 6, 0), P), (("want", 0, 0), N)],
    "held": [
        *ANNOUNCED,
        (("hold", frozenset([1])), N),
        (("want", 1, 1), P),
        (("hold", frozenset()), P),
    ],
}


@settings(max_examples=1000, deadline=None)
@given(ops)
@example(TRIGGERS["reconnect"])
@example(TRIGGERS["error ack"])
@example(TRIGGERS["peer up"])
@example(TRIGGERS["resync"])
@example(TRIGGERS["reload, new next hop"])
@example(TRIGGERS["first sync"])
@example(TRIGGERS["nothing to send"])
@example(TRIGGERS["held"])
def test_incremental_announcing_equals_the_full_difference_on_every_pass(
    steps: list[tuple[tuple[object, ...], bool]],
) -> None:
    full, incremental = Side(), Side()
    sides = (full, incremental)
    desired: dict[IPAddress, Advertisement] = {}
    held: frozenset[IPAddress] = frozenset()
    synced = False
    changed: set[IPAddress] = set()
    generation, in_flight, session, now = 0, 0, 0, 100.0
    try:
        for (kind, *args), then_pass in [*steps, (("tick", 0.0), True)]:
            if kind == "want":
                vip = VIPS[int(args[0])]  # type: ignore[call-overload]
                if args[1] is None:
                    desired.pop(vip, None)
                else:
                    desired[vip] = Advertisement(vip, ATTRIBUTES[int(args[1])], ("k",))  # type: ignore[call-overload]
                changed.add(vip)
            elif kind == "hold":
                held = frozenset(VIPS[int(i)] for i in args[0])  # type: ignore[attr-defined,call-overload]
            elif kind == "synced":
                synced = bool(args[0])
            elif kind == "connect":
                generation += 1
                in_flight = 0
                for side in sides:
                    side.connect(generation)
            elif kind == "disconnect":
                for side in sides:
                    side.announcer.handle(ApiDisconnected(generation), now)
            elif kind == "break":
                for side in sides:
                    side.close()  # the next write fails: the announcer drops the writer
            elif kind == "ack" and in_flight:
                in_flight -= 1
                for side in sides:
                    side.announcer.handle(CommandAck(generation, 0, bool(args[0])), now)
            elif kind == "peer":
                session += 1
                for side in sides:
                    side.announcer.handle(PeerState(PEER, str(args[0]), None, now, session), now)
            elif kind == "resync":
                for side in sides:
                    side.announcer.resync()
            elif kind == "reload":
                for side in sides:
                    side.announcer.reconfigure(CONFIGS[int(args[0])])  # type: ignore[call-overload]
            elif kind == "tick":
                now += float(args[0])  # type: ignore[arg-type]
            if not then_pass:
                continue
            hold = held & desired.keys()
            full.announcer.set(desired, hold, synced, now)
            incremental.announcer.set(desired, hold, synced, now, set(changed))
            changed.clear()
            for side in sides:  # the status copies announced() only when changes() moved
                assert side.changes_seen != side.announcer.changes() or (
                    dict(side.announcer.announced()) == side.announced_seen
                )
                side.changes_seen = side.announcer.changes()
                side.announced_seen = dict(side.announcer.announced())
            lines = [side.written() for side in sides]
            assert lines[1] == lines[0]
            assert state(incremental) == state(full)
            if full.announcer.connected():
                in_flight += len(lines[0])
    finally:
        for side in sides:
            side.close()


def test_pending_vips_compare_only_what_changed_and_what_was_held() -> None:
    a, b, c = VIPS[:3]
    advert = {v: Advertisement(v, RouteAttributes(), ("k",)) for v in (a, b, c)}
    pending = PendingVips()
    # The first pass is a full one.
    assert pending.take(advert, {}, set(), {c}, True) == ([advert[a], advert[b]], set())
    applied = {a: advert[a], b: advert[b]}
    # Then only the changed VIPs and the held one: b's stale value elsewhere is not seen.
    pending.add({a})
    assert pending.take(advert, applied, set(), set(), True) == ([advert[c]], set())
    pending.add({b})
    assert pending.take({a: advert[a]}, applied, set(), set(), True) == ([], {b})
    pending.add(None)
    assert pending.full
