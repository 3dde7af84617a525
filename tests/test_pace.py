"""The gap before a thread's next batch (runtime.pace): short for churn, long for bulk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvip_bgp.runtime.pace import BULK_GAP, Pace


def test_the_first_batch_is_taken_at_once_and_never_counts_as_bulk() -> None:
    pace = Pace(0.02)
    assert pace.wait(0.0) == 0.0
    pace.took(100.0, 10_000)  # a cold start's first pass: nothing before it to rate
    assert pace.wait(100.0) == pytest.approx(0.02)


# (seconds since the batch before, route changes in this batch, the next gap)
CASES = [
    (0.020, 4, 0.02),  # churn: a few Local Services flip every 20 ms (200/s)
    (0.020, 15, 0.02),  # 750/s: still churn
    (0.020, 16, BULK_GAP),  # 800/s: bulk
    (0.020, 24, BULK_GAP),  # a burst of creates as the fake API takes them (1,200/s)
    (0.060, 72, BULK_GAP),  # the same burst once gathering for 60 ms: it stays bulk
    (0.060, 12, 0.02),  # churn that once looked like bulk: back at the next batch
    (0.500, 50, 0.02),  # 50 changes after a quiet half second: 100/s
    (0.000, 0, 0.02),  # acks only, no time between: no route changed
    (0.000, 1, BULK_GAP),  # as fast as it gets (a fake clock)
]


@pytest.mark.parametrize(("since", "changes", "gap"), CASES)
def test_the_gap_follows_the_rate_of_route_changes(since: float, changes: int, gap: float) -> None:
    pace = Pace(0.02)
    pace.took(10.0, 1)  # the batch before
    pace.took(10.0 + since, changes)
    assert pace.bulk is (gap == BULK_GAP)
    assert pace.wait(10.0 + since) == pytest.approx(gap)
    assert pace.wait(10.0 + since + gap / 2) == pytest.approx(gap / 2)  # time counts down
    assert pace.wait(10.0 + since + gap) == 0.0


def test_a_burst_that_ends_takes_the_short_gap_at_the_next_batch() -> None:
    pace = Pace(0.02)
    now = 0.0
    pace.took(now, 1)  # the batch before
    for _ in range(5):  # a burst, gathering 60 ms a batch
        now += BULK_GAP
        pace.took(now, 100)
        assert pace.wait(now) == pytest.approx(BULK_GAP)
    now += BULK_GAP
    pace.took(now, 3)  # its tail
    assert pace.wait(now) == pytest.approx(0.02)


def test_the_bulk_gap_is_never_shorter_than_the_gap() -> None:
    assert Pace(0.02).bulk_gap == BULK_GAP
    assert Pace(0.2).bulk_gap == 0.2  # a test's long gather: bulk gathers as long
    long = Pace(0.2)
    long.took(0.0, 1)
    long.took(0.001, 100)
    assert not long.bulk  # the same gap either way: nothing for the streams to follow
    assert Pace(0.02, bulk_gap=0.3).bulk_gap == 0.3
    assert Pace(0.02, bulk_rate=10).bulk_rate == 10


@given(
    marks=st.lists(
        st.tuples(st.floats(0, 1, allow_nan=False), st.integers(0, 10_000)), max_size=30
    ),
    later=st.lists(st.floats(0, 0.1, allow_nan=False), min_size=1, max_size=5),
)
def test_the_wait_stays_within_the_bulk_gap_and_only_counts_down(
    marks: list[tuple[float, int]], later: list[float]
) -> None:
    pace = Pace(0.02)
    now = 0.0
    for step, changes in marks:
        now += step
        pace.took(now, changes)
        assert pace.wait(now) in (pytest.approx(0.02), pytest.approx(BULK_GAP))
    waits = []
    for step in later:
        now += step
        waits.append(pace.wait(now))
    assert all(0.0 <= wait <= BULK_GAP + 1e-9 for wait in waits)
    assert waits == sorted(waits, reverse=True)
