"""The churn phase's writes: a schedule made up front, written over parallel connections.

Why parallel: a writer waits for each reply, so one connection of the bench tops out
at about 1,700 writes/s against the fake API on this machine, below the 2,000/s that
issue 19 asks for. Why a schedule made up front: which Service each write touches and
what it sets are decided by one thread, in write order, so the writers share no
mutable state and the final state (FRR's table is checked against it) is known.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kvip_bgp.testing.fakeapi_remote import KubeStore

WRITES_PER_CONNECTION = 1000  # per second; one connection reaches ~1,700 here


@dataclass(frozen=True)
class Write:
    """One EndpointSlice write of the churn: ``nodes`` of Service ``index``."""

    index: int
    nodes: tuple[str | tuple[str, bool], ...]
    flip: str | None = None  # "A" or "W": a Local Service's only endpoint comes or goes


def connections(rate: float) -> int:
    """How many writer connections offer ``rate`` writes/s."""
    return max(1, math.ceil(rate / WRITES_PER_CONNECTION))


def write_all(
    stores: Sequence[KubeStore],
    writes: Sequence[Write],
    rate: float,
    build: Callable[[Write], Mapping[str, Any]],
) -> tuple[list[float], float]:
    """Write ``writes`` at ``rate`` on the schedule ``k / rate``, write ``k`` by store
    ``k % len(stores)``; the time each write was sent, and the elapsed time."""
    sent = [math.nan] * len(writes)
    errors: list[BaseException] = []
    started = time.monotonic()

    def writer(offset: int, store: KubeStore) -> None:
        try:
            for k in range(offset, len(writes), len(stores)):
                pause = started + k / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                obj = build(writes[k])
                sent[k] = time.monotonic()
                store.put(obj)
        except BaseException as error:  # reported by the caller, not lost in a thread
            errors.append(error)

    threads = [
        threading.Thread(target=writer, args=(j, s), name=f"churn-writer-{j}", daemon=True)
        for j, s in enumerate(stores)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sent, time.monotonic() - started
