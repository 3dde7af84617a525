"""The reconciler thread on its own: a socketpair stands in for the relay to ExaBGP."""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.app import peers_for_node
from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.bgp.api import ApiReader, count_session, listen_api_socket
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.runtime.messages import (
    ApiDisconnected,
    ApiMessage,
    Inbox,
    PeerState,
    SourceSynced,
    Stop,
    VipDesired,
    post,
)
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import (
    BIND_CHUNK,
    CHEAP_STATUS,
    RESYNC_INTERVAL,
    STATUS_INTERVAL,
    Reconciler,
    ReconcilerStatus,
)
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakes import CONFIG, FakeAddresses, FakeExabgp


class Harness:
    def __init__(self, sources: tuple[str, ...], owned: set[IPAddress]) -> None:
        self.config = config_module.parse(CONFIG)
        self.inbox: Inbox = CoalescingQueue()
        self.addresses = FakeAddresses(owned)
        self.status: Snapshot[ReconcilerStatus] = Snapshot(ReconcilerStatus())
        self.announcer = ExabgpAnnouncer(self.config, Metrics())
        self.reconciler = Reconciler(
            self.inbox, self.addresses, self.announcer, Metrics(), self.status, sources
        )
        self.thread = threading.Thread(target=self.reconciler.run, daemon=True)
        self.fake = FakeExabgp(self.inbox)

    @property
    def exabgp(self) -> socket.socket | None:
        return self.fake.sock

    @property
    def generation(self) -> int:
        return self.fake.generation

    def connect(self) -> None:
        self.fake.connect()

    def lines(self, wait: float = 0.3) -> list[str]:
        """Every command line ExaBGP received until ``wait`` seconds of quiet (5 s at most)."""
        return self.fake.lines(wait)

    def ack(self, count: int, ok: bool = True) -> None:
        self.fake.ack(count, ok)

    def pump(self, now: float) -> bool:
        """One pass of the reconciler at ``now`` over what is queued (no thread running)."""
        return self.reconciler.step([m for _k, m in self.inbox.drain(0)], now)


def advert(ip: str, *communities: str) -> Advertisement:
    from kvip_bgp.domain.model import Community

    vip = ipaddress.ip_address(ip)
    attrs = RouteAttributes(communities=tuple(Community.parse(c) for c in communities))
    return Advertisement(vip, attrs, ("test",))


# The fixtures' stop: the fake ExaBGP acknowledges nothing unless a test says so, so the
# reconciler waits out a stop's deadline for the withdrawals' acks; no test reads them.
TEARDOWN_STOP = 0.2


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness(("kubernetes", "static:x"), owned={ipaddress.ip_address("198.51.100.99")})
    h.thread.start()
    h.connect()
    yield h
    post(h.inbox, Stop(deadline=time.monotonic() + TEARDOWN_STOP))
    h.thread.join(5)


@pytest.fixture
def held_harness() -> Iterator[Harness]:
    """A harness whose reconciler waits until ``addresses.released`` is set."""
    h = Harness(("kubernetes", "static:x"), owned=set())
    h.addresses.released.clear()
    h.thread.start()
    h.connect()
    yield h
    h.addresses.released.set()
    post(h.inbox, Stop(deadline=time.monotonic() + TEARDOWN_STOP))
    h.thread.join(5)


def test_nothing_withdrawn_or_unbound_before_every_source_synced(harness: Harness) -> None:
    post(
        harness.inbox, VipDesired("kubernetes", advert("198.51.100.1").vip, advert("198.51.100.1"))
    )
    post(harness.inbox, SourceSynced("kubernetes"))
    lines = harness.lines()
    assert lines == ["announce attributes next-hop self nlri 198.51.100.1/32"]
    harness.ack(1)
    # 198.51.100.99 was bound by an earlier run; "static:x" has not reported yet.
    assert ipaddress.ip_address("198.51.100.99") in harness.addresses.bound
    post(harness.inbox, SourceSynced("static:x"))
    harness.lines()
    deadline = time.monotonic() + 2
    while ipaddress.ip_address("198.51.100.99") in harness.addresses.bound:
        assert time.monotonic() < deadline, "orphaned address never unbound after sync"
        time.sleep(0.02)


def test_changes_are_diffs_grouped_by_attributes(held_harness: Harness) -> None:
    harness = held_harness  # one pass sees both VIPs
    for ip in ("198.51.100.1", "198.51.100.2"):
        post(
            harness.inbox, VipDesired("kubernetes", ipaddress.ip_address(ip), advert(ip, "64512:1"))
        )
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    harness.addresses.released.set()
    lines = harness.lines()
    assert (
        "announce attributes next-hop self community [64512:1] nlri 198.51.100.1/32 198.51.100.2/32"
        in lines
    )
    harness.ack(len(lines))
    # Same desired value again: nothing sent. A change of one: only that one.
    post(
        harness.inbox,
        VipDesired(
            "kubernetes", ipaddress.ip_address("198.51.100.1"), advert("198.51.100.1", "64512:1")
        ),
    )
    assert harness.lines() == []
    post(harness.inbox, VipDesired("kubernetes", ipaddress.ip_address("198.51.100.2"), None))
    assert harness.lines() == ["withdraw attributes next-hop self nlri 198.51.100.2/32"]


def test_error_ack_is_retried_with_backoff(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.5"), advert("198.51.100.5")),
    )
    first = harness.lines()
    assert first == ["announce attributes next-hop self nlri 198.51.100.5/32"]
    harness.ack(1, ok=False)
    retried = harness.lines(wait=1.5)
    assert retried == first
    assert any("exabgp error" in e for e in harness.status.read().last_errors)


def test_reconnect_resends_everything_then_end_of_rib(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.7"), advert("198.51.100.7")),
    )
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.8"), advert("198.51.100.8")),
    )
    harness.ack(len(harness.lines()))
    # ExaBGP goes away; while it is gone .8 stops being wanted; then it is back.
    post(harness.inbox, ApiDisconnected(harness.generation))
    post(harness.inbox, VipDesired("kubernetes", ipaddress.ip_address("198.51.100.8"), None))
    harness.connect()
    post(harness.inbox, PeerState("192.0.2.2", "up", None, time.time()))
    lines = harness.lines()
    assert "withdraw attributes next-hop self nlri 198.51.100.8/32" in lines
    assert "announce attributes next-hop self nlri 198.51.100.7/32" in lines
    assert lines[-2:] == [
        "neighbor 192.0.2.2 announce eor ipv4 unicast",
        "neighbor 192.0.2.2 announce eor ipv6 unicast",
    ]


def test_stop_withdraws_waits_for_acks_and_unbinds(harness: Harness) -> None:
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    post(
        harness.inbox,
        VipDesired("kubernetes", ipaddress.ip_address("198.51.100.9"), advert("198.51.100.9")),
    )
    harness.ack(len(harness.lines()))
    post(harness.inbox, Stop(deadline=time.monotonic() + 3))
    assert harness.lines() == ["withdraw attributes next-hop self nlri 198.51.100.9/32"]
    assert harness.thread.is_alive(), "must wait for ExaBGP's answer"
    harness.ack(1)
    harness.thread.join(3)
    assert not harness.thread.is_alive()
    assert harness.addresses.bound == set()
    assert harness.status.read().stopped


def test_binding_is_pipelined_with_announcing_and_end_of_rib_waits_for_the_last_chunk(
    held_harness: Harness,
) -> None:
    harness = held_harness  # every VIP and both syncs reach its first pass together
    count = 2 * BIND_CHUNK + 500
    first = ipaddress.ip_address("10.20.0.1")
    vips = [first + i for i in range(count)]
    harness.addresses.delay = 0.2  # a slow kernel: the reader sees each chunk go out
    events = harness.addresses.events
    reader_done = threading.Event()

    def read() -> None:
        # Lines land in the same list as the fake's bind calls, in arrival order.
        assert harness.exabgp is not None
        harness.exabgp.settimeout(5)
        buffer = b""
        while not reader_done.is_set():
            try:
                data = harness.exabgp.recv(1 << 20)
            except TimeoutError:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                text = line.decode()
                if " nlri " in text:
                    events.append(("announce", len(text.split(" nlri ")[1].split())))
                elif "eor" in text:
                    events.append(("eor", 0))
                    if text.endswith("ipv6 unicast"):
                        return

    backlogs: set[int] = set()  # what the status writer would have seen, sampled

    def sample() -> None:
        while not reader_done.is_set():
            backlogs.add(harness.status.read().bind_backlog)
            time.sleep(0.01)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    post(harness.inbox, PeerState("192.0.2.2", "up", None, time.time()))
    for vip in vips:
        post(harness.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    harness.addresses.released.set()
    reader.join(10)
    time.sleep(0.1)  # the pass that sent End-of-RIB publishes its status right after
    reader_done.set()
    sampler.join(5)
    # The backlog the status writer yields to: published while chunks remain, then 0.
    assert {count - BIND_CHUNK, count - 2 * BIND_CHUNK} <= backlogs, backlogs
    assert harness.status.read().bind_backlog == 0
    kinds = [kind for kind, _ in events]
    assert [n for kind, n in events if kind == "bind"] == [BIND_CHUNK, BIND_CHUNK, 500]
    assert sum(n for kind, n in events if kind == "announce") == count
    # Nothing announced beyond what was bound at that moment.
    bound = announced = 0
    for kind, n in events:
        bound += n if kind == "bind" else 0
        announced += n if kind == "announce" else 0
        assert announced <= bound, events
    # Pipelined: the first routes left before the last chunk was bound.
    assert kinds.index("announce") < len(kinds) - 1 - kinds[::-1].index("bind"), kinds
    # End-of-RIB only after the last announce (a GR peer flushes stale routes on it).
    assert kinds[-2:] == ["eor", "eor"], kinds
    assert "announce" not in kinds[kinds.index("eor") :], kinds


def test_a_source_is_announced_before_its_sync_but_stale_state_waits_for_every_sync(
    harness: Harness,
) -> None:
    # The cluster's first pass publishes final values before its sync: they go out at
    # once. The address an earlier run left (198.51.100.99) and End-of-RIB wait.
    vips = [ipaddress.ip_address("10.30.0.1") + i for i in range(BIND_CHUNK + 10)]
    post(harness.inbox, PeerState("192.0.2.2", "up", None, time.time()))
    for vip in vips:
        post(harness.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
    lines = harness.lines()
    announced = {p for line in lines if " nlri " in line for p in line.split(" nlri ")[1].split()}
    assert announced == {f"{vip}/32" for vip in vips}
    assert not any("eor" in line for line in lines), lines
    assert set(vips) <= harness.addresses.bound
    harness.ack(len(lines))
    post(harness.inbox, SourceSynced("kubernetes"))
    assert not any("eor" in line for line in harness.lines()), "End-of-RIB before every sync"
    assert ipaddress.ip_address("198.51.100.99") in harness.addresses.bound
    post(harness.inbox, SourceSynced("static:x"))
    assert [line for line in harness.lines() if "eor" in line]
    deadline = time.monotonic() + 2
    while ipaddress.ip_address("198.51.100.99") in harness.addresses.bound:
        assert time.monotonic() < deadline, "orphaned address never unbound after every sync"
        time.sleep(0.02)


def test_failed_and_foreign_binds_are_announced_anyway_and_not_retried_every_pass(
    harness: Harness,
) -> None:
    broken, foreign, fine = (ipaddress.ip_address(f"198.51.100.{i}") for i in (11, 12, 13))
    harness.addresses.broken.add(broken)
    harness.addresses.foreign.add(foreign)
    for source in ("kubernetes", "static:x"):
        post(harness.inbox, SourceSynced(source))
    for vip in (broken, foreign, fine):
        post(harness.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
    lines = harness.lines()
    announced = {p for line in lines for p in line.split(" nlri ")[1].split()}
    assert announced == {"198.51.100.11/32", "198.51.100.12/32", "198.51.100.13/32"}
    harness.ack(len(lines))
    assert any("bind 198.51.100.11" in e for e in harness.status.read().last_errors)
    # Another pass (a new VIP): the broken one waits for the resync, not every pass.
    calls = len(harness.addresses.events)
    post(harness.inbox, VipDesired("kubernetes", first := fine + 1, advert(str(first))))
    harness.ack(len(harness.lines()))
    assert harness.addresses.events[calls:] == [("bind", 1)]


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (None, ["192.0.2.2"]),
        ({"rack": "a"}, ["192.0.2.2", "192.0.2.3"]),
        ({"rack": "b"}, ["192.0.2.2", "192.0.2.4"]),
        ({"rack": "c"}, ["192.0.2.2"]),
    ],
    ids=["no-labels", "rack-a", "rack-b", "other-rack"],
)
def test_peers_for_node_by_selector(labels: dict[str, str] | None, expected: list[str]) -> None:
    doc = dict(CONFIG)
    doc["bgp"] = {
        **CONFIG["bgp"],  # type: ignore[dict-item]
        "peers": [
            {"address": "192.0.2.2", "asn": 64500},
            {"address": "192.0.2.3", "asn": 64501, "node_selector": {"rack": "a"}},
            {"address": "192.0.2.4", "asn": 64502, "node_selector": {"rack": "b"}},
        ],
    }
    cfg = config_module.parse(doc)
    assert [str(p.address) for p in peers_for_node(cfg, labels)] == expected


def test_a_withdraw_is_repeated_once_at_the_next_resync() -> None:
    h = Harness(("kubernetes",), owned=set())  # driven by step(): no thread, no sleeping
    h.connect()
    h.reconciler.start(0.0)
    try:
        vip = ipaddress.ip_address("198.51.100.21")
        post(h.inbox, SourceSynced("kubernetes"))
        post(h.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
        h.pump(0.0)  # the first pass is a resync
        h.ack(len(h.lines(wait=0.05)))
        post(h.inbox, VipDesired("kubernetes", vip, None))
        h.pump(1.0)
        withdraw = "withdraw attributes next-hop self nlri 198.51.100.21/32"
        assert h.lines(wait=0.05) == [withdraw]
        h.ack(1)
        h.pump(RESYNC_INTERVAL - 0.5)
        assert h.lines(wait=0.05) == []
        # The safety net: once more at the next resync, then never again.
        h.pump(RESYNC_INTERVAL)
        assert h.lines(wait=0.05) == [withdraw]
        h.ack(1)
        h.pump(RESYNC_INTERVAL + 1)
        h.pump(2 * RESYNC_INTERVAL)  # two more resyncs
        h.pump(3 * RESYNC_INTERVAL)
        assert h.lines(wait=0.3) == []
    finally:
        assert not h.reconciler.step([Stop(deadline=time.monotonic() + 2)], 4 * RESYNC_INTERVAL)


def test_the_resync_withdraws_once_more_a_chunk_a_pass() -> None:
    """Under churn a resync has ~1,000 VIPs to withdraw again; in one pass that held every
    flip behind them in ExaBGP for ~200 ms. A chunk a pass, after the pass's own changes,
    the next one a gap later even if nothing else wakes the reconciler."""
    from kvip_bgp.bgp.rewithdraw import CHUNK, GAP

    h = Harness(("kubernetes",), owned=set())
    h.connect()
    h.reconciler.start(0.0)
    try:
        vips = [ipaddress.ip_address("198.51.100.0") + i for i in range(2 * CHUNK + 10)]
        post(h.inbox, SourceSynced("kubernetes"))
        for vip in vips:
            post(h.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
        h.pump(0.0)
        h.ack(len(h.lines(wait=0.05)))
        for vip in vips:
            post(h.inbox, VipDesired("kubernetes", vip, None))
        h.pump(1.0)
        h.ack(len(h.lines(wait=0.05)))
        back, lone = vips[CHUNK + 3], ipaddress.ip_address("198.51.100.250")
        post(h.inbox, VipDesired("kubernetes", back, advert(str(back))))  # desired again
        h.pump(2.0)
        h.ack(len(h.lines(wait=0.05)))
        gone = set(map(str, vips)) - {str(back)}

        def withdrawn_again(lines: list[str]) -> list[str]:
            withdrawals = [line for line in lines if line.startswith("withdraw")]
            return [
                p.split("/")[0] for line in withdrawals for p in line.split(" nlri ")[1].split()
            ]

        now = RESYNC_INTERVAL + 1.0
        post(h.inbox, VipDesired("kubernetes", lone, advert(str(lone))))  # the pass's change
        h.pump(now)
        lines = h.lines(wait=0.05)
        assert lines[0] == "announce attributes next-hop self nlri 198.51.100.250/32"
        chunks = [withdrawn_again(lines[1:])]
        assert len(chunks[0]) == CHUNK
        assert h.reconciler.timeout(now) == pytest.approx(GAP)
        h.ack(len(lines))
        h.pump(now + GAP / 2)  # too soon: nothing
        assert h.lines(wait=0.05) == []
        while h.reconciler.timeout(now) < 1.0:
            now += GAP
            h.pump(now)
            lines = h.lines(wait=0.05)
            h.ack(len(lines))
            chunks.append(withdrawn_again(lines))
        assert [len(c) for c in chunks] == [CHUNK, CHUNK, 9]
        assert sorted(v for c in chunks for v in c) == sorted(gone)  # each once, not the one back
        h.pump(2 * RESYNC_INTERVAL + 2)  # the next resync: nothing withdrawn since
        assert h.lines(wait=0.1) == []
    finally:
        assert not h.reconciler.step([Stop(deadline=time.monotonic() + 2)], 4 * RESYNC_INTERVAL)


def test_message_key_refuses_a_type_it_does_not_know() -> None:
    # A new message type must not silently coalesce with Stop (or anything else).
    from kvip_bgp.runtime.messages import message_key

    class Unknown:
        pass

    with pytest.raises(AssertionError):
        message_key(Unknown())  # type: ignore[arg-type]
    assert message_key(Stop(deadline=1.0)) == ("stop",)
    assert message_key(Stop(deadline=2.0)) == message_key(Stop(deadline=1.0))


def _state_line(peer: str, state: str) -> bytes:
    neighbor = {"address": {"local": "192.0.2.1", "peer": peer}, "state": state}
    return (json.dumps({"type": "state", "neighbor": neighbor}) + "\n").encode()


def test_a_session_flap_between_two_passes_gets_its_end_of_rib(tmp_path: Path) -> None:
    # ExaBGP's lines go through the real reader thread into the coalescing inbox; the
    # reconciler is stepped by hand so that a down and an up land in one drain.
    harness = Harness(("kubernetes",), owned=set())
    listener = listen_api_socket(tmp_path / "api.sock")
    seen: list[ApiMessage] = []

    def deliver(message: ApiMessage) -> None:
        seen.append(message)
        post(harness.inbox, message)

    reader = ApiReader(listener, deliver)
    reader.start()
    relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    relay.connect(str(tmp_path / "api.sock"))
    harness.fake.sock = relay  # read what the reconciler writes, as ExaBGP would

    def delivered(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(seen) < count:
            assert time.monotonic() < deadline, f"the reader delivered only {seen}"
            time.sleep(0.01)

    eor = [
        "neighbor 192.0.2.2 announce eor ipv4 unicast",
        "neighbor 192.0.2.2 announce eor ipv6 unicast",
    ]
    try:
        harness.reconciler.start(0.0)
        post(harness.inbox, SourceSynced("kubernetes"))
        vip = ipaddress.ip_address("198.51.100.31")
        post(harness.inbox, VipDesired("kubernetes", vip, advert(str(vip))))
        relay.sendall(_state_line("192.0.2.2", "up"))
        delivered(2)  # connected, up
        harness.pump(0.0)
        lines = harness.lines(wait=0.1)
        assert lines == ["announce attributes next-hop self nlri 198.51.100.31/32", *eor]
        relay.sendall(b"done\n" * len(lines))
        delivered(2 + len(lines))
        harness.pump(1.0)
        # The session flaps: ExaBGP re-sends its RIB to the new session, we owe End-of-RIB.
        relay.sendall(_state_line("192.0.2.2", "down") + _state_line("192.0.2.2", "up"))
        delivered(4 + len(lines))
        assert harness.inbox.depth() == 1, "down and up coalesce into one message"
        harness.pump(2.0)
        assert harness.lines(wait=0.1) == eor
    finally:
        relay.close()
        reader.stop()
        reader.join(5)
        harness.reconciler.step([Stop(deadline=time.monotonic() + 0.2)], 3.0)


def test_the_reader_numbers_each_peers_sessions_by_its_ups() -> None:
    sessions: dict[str, int] = {}
    states = [("a", "connected"), ("a", "up"), ("b", "up"), ("a", "down"), ("a", "up")]
    numbered = [
        count_session(PeerState(peer, state, None, 0.0), sessions).session for peer, state in states
    ]
    assert numbered == [0, 1, 1, 1, 2]


@pytest.mark.parametrize("count", [CHEAP_STATUS - 20, CHEAP_STATUS])
def test_status_copies_many_vips_at_most_every_interval_and_never_loses_the_last(
    count: int,
) -> None:
    h = Harness(("kubernetes",), owned=set())
    first = ipaddress.ip_address("10.30.0.1")
    for i in range(count):
        post(h.inbox, VipDesired("kubernetes", first + i, advert(str(first + i))))
    post(h.inbox, SourceSynced("kubernetes"))
    assert h.pump(100.0)
    assert len(h.status.read().bound) == count  # the first copy is made at once
    for i in range(count, count + 10):
        post(h.inbox, VipDesired("kubernetes", first + i, advert(str(first + i))))
    assert h.pump(100.1)
    status = h.status.read()
    assert status.bind_backlog == 0  # the small fields are fresh after every pass
    if count < CHEAP_STATUS:
        assert len(status.bound) == count + 10  # few VIPs: copied on every change
        return
    assert len(status.bound) == count  # many: the copy waits for the interval...
    assert h.reconciler.timeout(100.1) <= STATUS_INTERVAL - 0.1 + 1e-9  # ...a pass is due
    assert h.pump(100.1 + STATUS_INTERVAL)
    assert len(h.status.read().bound) == count + 10


def test_only_a_pass_that_took_messages_makes_the_next_one_wait_for_a_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a timer's pass (a resync, the status's copies) a lone change goes at once;
    after a pass that took messages the next waits up to PASS_GAP for more to gather."""
    import kvip_bgp.runtime.reconciler as module

    h = Harness(("kubernetes",), owned=set())
    vip = ipaddress.ip_address("10.30.0.1")
    script: list[list[Any]] = [
        [],  # a pass woken by a timer
        [VipDesired("kubernetes", vip, advert(str(vip)))],  # a lone change
        [Stop(deadline=time.monotonic() + 1)],
    ]
    trace: list[str] = []

    def drain(timeout: float | None = None) -> list[tuple[Any, Any]]:
        messages = script.pop(0) if script else []
        trace.append(f"drain {len(messages)}")
        return [(None, m) for m in messages]

    monkeypatch.setattr(h.inbox, "drain", drain)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: trace.append("sleep"))
    h.reconciler.run()
    assert trace[:4] == ["drain 0", "drain 1", "sleep", "drain 1"], trace


def test_after_a_pass_of_bulk_route_changes_the_next_gathers_longer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass that took route changes at ``BULK_RATE`` or faster lets the next gather for
    ``BULK_GAP``; acks alone, or a few changes, keep ``PASS_GAP`` (runtime.pace)."""
    import types

    import kvip_bgp.runtime.reconciler as module
    from kvip_bgp.runtime.pace import BULK_GAP
    from kvip_bgp.runtime.reconciler import PASS_GAP

    h = Harness(("kubernetes",), owned=set())
    clock = [1000.0]  # the reconciler's own clock: it moves when the thread sleeps
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(round(seconds, 6))
        clock[0] += seconds

    fake = types.SimpleNamespace(
        monotonic=lambda: clock[0], sleep=sleep, perf_counter=time.perf_counter, time=time.time
    )
    vips = [ipaddress.ip_address(f"10.30.0.{i}") for i in range(1, 101)]

    def changes(vips: list[IPAddress]) -> list[Any]:
        return [VipDesired("kubernetes", vip, advert(str(vip))) for vip in vips]

    script: list[list[Any]] = [
        changes(vips[:2]),  # a lone change or two: nothing before it to rate
        changes(vips[2:40]),  # 38 in the next 20 ms: bulk
        changes(vips[40:100]),  # 60 in 60 ms: still bulk
        changes(vips[:1]),  # one in 60 ms: churn again
        [],  # a timer's pass
        [Stop(deadline=clock[0] + 1)],
    ]

    def drain(timeout: float | None = None) -> list[tuple[Any, Any]]:
        return [(None, m) for m in (script.pop(0) if script else [])]

    monkeypatch.setattr(module, "time", fake)
    monkeypatch.setattr(h.inbox, "drain", drain)
    h.reconciler.run()
    assert sleeps == [PASS_GAP, BULK_GAP, BULK_GAP, PASS_GAP], sleeps
    assert [event for event in h.addresses.events if event[0] == "bind"] == [
        ("bind", 2),
        ("bind", 38),
        ("bind", 60),
    ]
