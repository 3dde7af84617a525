"""Health-checked static VIPs: bare-metal anycast that follows the local service.

A static VIP (``static:`` in the config) is announced from every host that runs the
service behind it. When the service on one host breaks, that host must stop attracting
traffic (withdraw), or keep announcing with a worse MED (``down_med``) so routers prefer
the healthy hosts but still have a path if every host is down. An operator drains a host
by creating the VIP's ``maintenance_file``.

Threading follows the project rule: one ``StaticVipWatcher`` thread per VIP owns that
VIP's check counters and nothing else; it hands the reconciler only immutable values
(``Advertisement`` or ``None``) through the ``publish`` callback, and only when the
desired value changes. The decisions themselves (``CheckState.record``,
``desired_route``) are pure functions so they can be tested without threads or sockets.

The checks themselves are in ``runtime.checks``.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, assert_never

import structlog

from kvip_bgp.domain.config import HealthCheck, StaticVip
from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes
from kvip_bgp.domain.sources import VipSource
from kvip_bgp.runtime.checks import describe, exists, run_check
from kvip_bgp.runtime.messages import StaticChanged, StaticRetired, StaticUpdate
from kvip_bgp.runtime.metrics import Metrics

log = structlog.get_logger("kvip_bgp.health")

MAINTENANCE_POLL: Final = 1.0
"""Seconds between looks at the maintenance file of a VIP that has no health check."""
UPDATE_POLL: Final = 0.5
"""Seconds between looks at the watcher's queue of reload updates while it sleeps."""

Publish = Callable[[IPAddress, Advertisement | None], None]


# -- pure decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class CheckState:
    """Where a VIP stands in its rise/fall hysteresis.

    Hysteresis keeps one lost packet from withdrawing a route (and one lucky connect from
    announcing a broken host): ``rise`` consecutive passes are needed to go up, ``fall``
    consecutive failures to go down. A new state starts DOWN: a host must prove it is
    healthy before it attracts traffic.
    """

    rise: int = 2
    fall: int = 3
    up: bool = False
    passes: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise and fall must be >= 1, got rise={self.rise} fall={self.fall}")

    @classmethod
    def for_check(cls, check: HealthCheck) -> CheckState:
        return cls(rise=check.rise, fall=check.fall)

    def record(self, passed: bool) -> CheckState:
        """The state after one more check result; counters only count consecutive runs."""
        if passed:
            if self.up:
                return dataclasses.replace(self, passes=0, failures=0)
            passes = self.passes + 1
            if passes >= self.rise:
                return dataclasses.replace(self, up=True, passes=0, failures=0)
            return dataclasses.replace(self, passes=passes, failures=0)
        if not self.up:
            return dataclasses.replace(self, passes=0, failures=0)
        failures = self.failures + 1
        if failures >= self.fall:
            return dataclasses.replace(self, up=False, passes=0, failures=0)
        return dataclasses.replace(self, passes=0, failures=failures)


def desired_route(
    vip: StaticVip, defaults: RouteAttributes, up: bool, maintenance: bool
) -> Advertisement | None:
    """What the reconciler should announce for ``vip``; ``None`` means withdraw.

    Maintenance wins over everything (an operator's drain must drain). A DOWN VIP is
    withdrawn unless ``down_med`` asks to keep it announced with a worse MED.
    """
    if maintenance:
        return None
    sources = (VipSource.static(vip.address).wire,)
    if up:
        return Advertisement(vip.address, defaults, sources)
    if vip.down_med is not None:
        return Advertisement(vip.address, dataclasses.replace(defaults, med=vip.down_med), sources)
    return None


# -- the watcher thread -----------------------------------------------------------------


class StaticVipWatcher(threading.Thread):
    """One thread per static VIP: owns that VIP's check counters; publishes its desired route.

    ``publish(vip, advert_or_none)`` is called at the first evaluation (so the
    reconciler learns the initial state without waiting ``rise`` intervals) and then only
    when the desired route changes. ``first_result(vip)`` is called once, right after that
    first publish: the app marks the ``static`` source synced once every watcher has
    reported. Both callbacks must only enqueue; they run on this thread.

    ``poll_interval`` overrides how often a VIP without a check looks at its
    maintenance file (tests use a short one); a checked VIP evaluates every
    ``check.interval``.

    A reload reaches the thread through ``update`` (its own queue, looked at every
    ``UPDATE_POLL`` while it sleeps): a changed entry is evaluated at once, keeping
    whether the VIP is up, so a new check or new attributes do not flap the route.
    """

    def __init__(
        self,
        vip: StaticVip,
        defaults: RouteAttributes,
        publish: Publish,
        metrics: Metrics,
        stop: threading.Event,
        first_result: Callable[[IPAddress], None] | None = None,
        *,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__(name=f"health-{vip.address}", daemon=True)
        self.vip = vip
        self.defaults = defaults
        self._publish = publish
        self._metrics = metrics
        self._stop_event = stop
        self._first_result = first_result
        self._poll_interval = poll_interval
        self.period = self._period()
        self._updates: queue.SimpleQueue[StaticUpdate] = queue.SimpleQueue()
        # Owned by this thread alone once it runs.
        self._state = CheckState.for_check(vip.check) if vip.check is not None else None
        self._maintenance = False
        self._reported = False
        self._published: Advertisement | None = None
        self._retired = False

    def _period(self) -> float:
        if self._poll_interval is not None:
            return self._poll_interval
        return self.vip.check.interval if self.vip.check is not None else MAINTENANCE_POLL

    def update(self, message: StaticUpdate) -> None:
        """Hand the thread a reload's change (any thread; only enqueues)."""
        self._updates.put(message)

    def run(self) -> None:
        """Evaluate every ``period`` seconds, start to start, until ``stop`` is set."""
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            self._evaluate()
            next_at += self.period
            now = time.monotonic()
            if next_at < now:
                # A check overran its slot (its kill and reap took time): skip the missed
                # slots rather than firing a burst of catch-up checks.
                missed = (now - next_at) // self.period + 1
                next_at += missed * self.period
            if self._wait(next_at):
                break

    def _wait(self, until: float) -> bool:
        """Sleep until ``until``; an update cuts it short. True: the thread must end."""
        while (remaining := until - time.monotonic()) > 0:
            if self._stop_event.wait(min(remaining, UPDATE_POLL)):
                return True
            if self._take_updates():
                return self._retired
        return False

    def _take_updates(self) -> bool:
        """Apply waiting updates; whether there were any."""
        taken = False
        while True:
            try:
                message = self._updates.get_nowait()
            except queue.Empty:
                return taken
            taken = True
            match message:
                case StaticRetired():
                    self._retired = True
                case StaticChanged():
                    if message.vip.check != self.vip.check:
                        up = self._state.up if self._state is not None else True
                        check = message.vip.check
                        self._state = (
                            None
                            if check is None
                            else dataclasses.replace(CheckState.for_check(check), up=up)
                        )
                    self.vip, self.defaults = message.vip, message.defaults
                    self.period = self._period()
                    log.info("health.reconfigured", vip=str(self.vip.address))
                case _:
                    assert_never(message)

    def _evaluate(self) -> None:
        first = not self._reported
        address = str(self.vip.address)
        check = self.vip.check
        up = True
        if check is not None and self._state is not None:
            result = run_check(check)
            if self._stop_event.is_set():
                return  # shutting down: a check cut short says nothing about the service
            before = self._state
            self._state = before.record(result.passed)
            up = self._state.up
            if up and not before.up:
                log.info("health.up", vip=address, check=describe(check), reason=result.reason)
            elif not up and (before.up or (first and not result.passed)):
                log.warning("health.down", vip=address, check=describe(check), reason=result.reason)
            if first or up != before.up:
                self._metrics.health_check_up.labels(address).set(1 if up else 0)
        elif first:
            self._metrics.health_check_up.labels(address).set(1)

        maintenance_file = self.vip.maintenance_file
        if maintenance_file is not None:
            maintenance = exists(maintenance_file)
            if maintenance and not self._maintenance:
                log.info("health.maintenance_on", vip=address, file=str(maintenance_file))
            elif self._maintenance and not maintenance:
                log.info("health.maintenance_off", vip=address, file=str(maintenance_file))
            self._maintenance = maintenance

        desired = desired_route(self.vip, self.defaults, up, self._maintenance)
        if self._retired:
            return
        if first or desired != self._published:
            self._reported = True
            self._published = desired
            self._publish(self.vip.address, desired)
            if first and self._first_result is not None:
                self._first_result(self.vip.address)


def static_watchers(
    statics: Iterable[StaticVip],
    defaults: RouteAttributes,
    publish: Publish,
    metrics: Metrics,
    stop: threading.Event,
    first_result: Callable[[IPAddress], None] | None = None,
) -> list[StaticVipWatcher]:
    """One (not yet started) watcher per static VIP; the caller starts and joins them."""
    return [
        StaticVipWatcher(vip, defaults, publish, metrics, stop, first_result) for vip in statics
    ]
