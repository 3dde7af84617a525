"""The retry backoff: a frozen value driven by the caller's clock."""

from __future__ import annotations

from kvip_bgp.runtime.backoff import Backoff


def test_each_failure_doubles_the_wait_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=3.0, delay=0.5)
    assert backoff.ready(0.0)
    waits = []
    now = 100.0
    for _ in range(5):
        backoff = backoff.failed(now)
        waits.append(backoff.until - now)
        assert not backoff.ready(now)
        assert not backoff.ready(backoff.until - 0.01)
        assert backoff.ready(backoff.until)
        now = backoff.until
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_a_success_resets_the_delay_but_not_a_pending_wait() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, delay=0.5).failed(10.0).failed(10.5)
    assert (backoff.until, backoff.delay) == (11.5, 2.0)
    reset = backoff.succeeded()
    assert (reset.until, reset.delay) == (11.5, 0.5)
    assert reset.failed(20.0).until == 20.5


def test_cleared_retries_at_once_and_keeps_the_delay() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, delay=0.5).failed(10.0).cleared()
    assert backoff.ready(0.0)
    assert backoff.delay == 1.0
