"""Withdraw before unbind: a withdrawn VIP keeps its address until ExaBGP has acked the
withdrawal and ``vips.unbind_delay`` has passed, while the peers still send it here.

Driven by ``Reconciler.step(messages, now)`` with a made-up clock, so the timing is
exact and nothing sleeps (``FakeExabgp`` is ExaBGP's end of the pipe).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest

from kvip_bgp.bgp.announcer import ExabgpAnnouncer
from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.config import UNBIND_DELAY
from kvip_bgp.domain.model import Advertisement, RouteAttributes
from kvip_bgp.netif.announcer import KernelTableAnnouncer
from kvip_bgp.runtime.announcer import Announcer
from kvip_bgp.runtime.messages import Inbox, SourceSynced, Stop, VipDesired, post
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import Reconciler, ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.runtime.workqueue import CoalescingQueue
from kvip_bgp.testing.fakes import CONFIG, FakeAddresses, FakeExabgp, FakeRoutes

VIP = ipaddress.ip_address("198.51.100.40")
WITHDRAW = "withdraw attributes next-hop self nlri 198.51.100.40/32"
DELAY = 1.5


class Rig:
    def __init__(self, delay: float = DELAY, announcer: Announcer | None = None) -> None:
        self.inbox: Inbox = CoalescingQueue()
        self.addresses = FakeAddresses(set())
        self.fake = FakeExabgp(self.inbox)
        self.announcer = announcer or ExabgpAnnouncer(config_module.parse(CONFIG), Metrics())
        self.reconciler = Reconciler(
            self.inbox,
            self.addresses,
            self.announcer,
            Metrics(),
            Snapshot(ReconcilerStatus()),
            ("kubernetes",),
            unbind_delay=delay,
        )

    def pump(self, now: float) -> None:
        assert self.reconciler.step([m for _k, m in self.inbox.drain(0)], now)

    def lines(self) -> list[str]:
        return self.fake.lines(wait=0.05)

    def want(self, wanted: bool) -> None:
        advert = Advertisement(VIP, RouteAttributes(), ("default/web",))
        post(self.inbox, VipDesired("kubernetes", VIP, advert if wanted else None))

    @property
    def bound(self) -> bool:
        return VIP in self.addresses.bound


@pytest.fixture
def rig() -> Iterator[Rig]:
    """VIP bound and announced at t=0 (acked), ExaBGP connected."""
    rig = Rig()
    rig.fake.connect()
    rig.reconciler.start(0.0)
    post(rig.inbox, SourceSynced("kubernetes"))
    rig.want(True)
    rig.pump(0.0)
    rig.fake.ack(len(rig.lines()))
    rig.pump(0.0)
    assert rig.bound
    yield rig
    assert not rig.reconciler.step([Stop(deadline=time.monotonic() + 2)], 1000.0)


def test_unbound_only_once_the_withdrawal_is_acked_and_the_delay_passed(rig: Rig) -> None:
    rig.want(False)
    rig.pump(10.0)
    assert rig.lines() == [WITHDRAW]
    assert rig.bound, "unbound in the pass that wrote the withdrawal"
    rig.pump(20.0)  # however long ExaBGP takes to answer
    assert rig.bound, "unbound before ExaBGP acked the withdrawal"
    rig.fake.ack(1)
    rig.pump(25.0)  # the delay starts here
    assert rig.bound
    assert rig.reconciler.timeout(25.0) == pytest.approx(DELAY)
    rig.pump(25.0 + DELAY - 0.01)
    assert rig.bound
    rig.pump(25.0 + DELAY)
    assert not rig.bound
    assert rig.addresses.log[-1] == f"unbind {VIP}"


def test_a_vip_desired_again_during_the_delay_keeps_its_address(rig: Rig) -> None:
    rig.want(False)
    rig.pump(10.0)
    rig.fake.ack(len(rig.lines()))
    rig.pump(10.1)
    rig.want(True)  # back before the delay ran out
    rig.pump(10.5)
    rig.fake.ack(len(rig.lines()))
    rig.pump(10.1 + DELAY + 5)
    assert rig.bound
    assert rig.addresses.log.count(f"unbind {VIP}") == 0
    # Withdrawn once more: a new delay from the new ack, not the old one's deadline.
    rig.want(False)
    rig.pump(20.0)
    rig.fake.ack(len(rig.lines()))
    rig.pump(20.2)
    rig.pump(20.2 + DELAY - 0.1)
    assert rig.bound
    rig.pump(20.2 + DELAY)
    assert not rig.bound


def test_a_zero_delay_still_waits_for_the_ack() -> None:
    rig = Rig(delay=0.0)
    rig.fake.connect()
    rig.reconciler.start(0.0)
    post(rig.inbox, SourceSynced("kubernetes"))
    rig.want(True)
    rig.pump(0.0)
    rig.fake.ack(len(rig.lines()))
    rig.want(False)
    rig.pump(1.0)
    assert rig.lines() == [WITHDRAW]
    assert rig.bound
    rig.fake.ack(1)
    rig.pump(1.0)
    assert not rig.bound


def test_the_kernel_table_output_waits_the_delay_from_the_removal() -> None:
    routes = FakeRoutes()
    rig = Rig(announcer=KernelTableAnnouncer(routes))
    rig.reconciler.start(0.0)
    post(rig.inbox, SourceSynced("kubernetes"))
    rig.want(True)
    rig.pump(0.0)
    assert VIP in routes.ours and rig.bound
    rig.want(False)
    rig.pump(5.0)
    assert VIP not in routes.ours and rig.bound
    rig.pump(5.0 + DELAY)
    assert not rig.bound


def test_shutdown_is_not_held_by_the_delay(rig: Rig) -> None:
    """SIGTERM has its own wait (acks plus a flush grace, bounded by shutdown_timeout)."""
    rig.want(False)
    rig.pump(10.0)
    rig.fake.ack(len(rig.lines()))
    rig.pump(10.0)
    assert not rig.reconciler.step([Stop(deadline=time.monotonic() + 0.5)], 10.1)
    assert not rig.bound
    rig.reconciler = Reconciler(  # the fixture's Stop needs a live reconciler
        rig.inbox,
        rig.addresses,
        ExabgpAnnouncer(config_module.parse(CONFIG), Metrics()),
        Metrics(),
        Snapshot(ReconcilerStatus()),
        ("kubernetes",),
    )


# ------------------------------------------------------------------- the config key


def config_with(vips: dict[str, object]) -> dict[str, object]:
    return {**CONFIG, "vips": {**CONFIG["vips"], **vips}}


def test_the_key_defaults_and_is_validated_by_its_path() -> None:
    assert config_module.parse(CONFIG).vips.unbind_delay == UNBIND_DELAY
    assert config_module.parse(config_with({"unbind_delay": 0})).vips.unbind_delay == 0.0
    assert config_module.parse(config_with({"unbind_delay": 2.5})).vips.unbind_delay == 2.5
    for bad, message in (
        (-1, "vips.unbind_delay: must be 0..60, got -1"),
        ("1s", "vips.unbind_delay: must be a number 0..60, got str"),
        (True, "vips.unbind_delay: must be a number 0..60"),
    ):
        with pytest.raises(config_module.ConfigError) as error:
            config_module.parse(config_with({"unbind_delay": bad}))
        assert message in str(error.value)
