"""The churn phase's parallel writers (bench/writers.py): every write once, on time."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from bench.writers import Write, connections, write_all
from kvip_bgp.testing.fakeapi_remote import JSONObject, KubeStore


class Recorder:
    """A store that records which connection wrote what, and can fail."""

    def __init__(self, log: list[tuple[int, int]], ident: int, fail_at: int = -1) -> None:
        self.log, self.ident, self.fail_at = log, ident, fail_at
        self.lock = threading.Lock()

    def put(self, obj: Mapping[str, Any]) -> object:
        if obj["k"] == self.fail_at:
            raise RuntimeError("HTTP 500")
        self.log.append((self.ident, obj["k"]))
        return None

    def put_many(self, objs: Iterable[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def create(self, obj: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def delete(self, kind: str, name: str, namespace: str | None = None) -> object:
        raise NotImplementedError

    def delete_all(self, kind: str) -> None:
        raise NotImplementedError

    def items(self, kind: str) -> list[JSONObject]:
        raise NotImplementedError

    def another(self) -> KubeStore:
        return Recorder(self.log, self.ident + 1, self.fail_at)

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("rate", "expected"), [(1, 1), (500, 1), (1000, 1), (1001, 2), (2000, 2), (5000, 5)]
)
def test_connections_for_a_rate(rate: float, expected: int) -> None:
    assert connections(rate) == expected


def test_every_write_once_split_over_the_connections_in_order() -> None:
    log: list[tuple[int, int]] = []
    first = Recorder(log, 0)
    stores: list[KubeStore] = [first, first.another(), first.another().another()]
    writes = [Write(k, ("node-1",)) for k in range(300)]
    sent, elapsed = write_all(stores, writes, 1000.0, lambda w: {"k": w.index})
    assert sorted(k for _store, k in log) == list(range(300))
    for ident in range(3):  # write k by connection k % 3, in schedule order
        mine = [k for store, k in log if store == ident]
        assert mine == list(range(ident, 300, 3))
    # The schedule is k / rate: nothing went out before its time, and it took ~0.3 s.
    start = min(sent)
    assert all(at - start >= k / 1000.0 - 0.002 for k, at in enumerate(sent))
    assert 0.29 <= elapsed < 5.0


def test_a_failed_write_is_raised_not_lost_in_a_thread() -> None:
    log: list[tuple[int, int]] = []
    first = Recorder(log, 0, fail_at=7)
    writes = [Write(k, ()) for k in range(20)]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="HTTP 500"):
        write_all([first, first.another()], writes, 1000.0, lambda w: {"k": w.index})
    assert time.monotonic() - started < 5.0
