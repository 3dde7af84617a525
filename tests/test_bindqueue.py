"""``BindQueue`` takes the same VIPs, in the same order, as a scan of every desired VIP.

The reference is what the reconciler did on every pass before the queue: sort every
desired VIP that is neither bound nor failed, take the first chunk. Random sequences of
what happens between passes (a source wants or drops a VIP, a bind succeeds, finds a
foreign address or fails, an undesired VIP is unbound, a resync) must give the same
chunk and the same number left on every pass.
"""

from __future__ import annotations

import ipaddress

from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvip_bgp.domain.model import Advertisement, IPAddress, RouteAttributes, address_order
from kvip_bgp.runtime.bindqueue import BindQueue

VIPS: list[IPAddress] = [ipaddress.ip_address(f"198.51.100.{i}") for i in range(1, 13)] + [
    ipaddress.ip_address("2001:db8::1"),
    ipaddress.ip_address("2001:db8::2"),
    ipaddress.ip_address("10.0.0.1"),
]
CHUNK = 3

vip_index = st.integers(0, len(VIPS) - 1)
op = st.one_of(
    st.tuples(st.just("want"), vip_index, st.integers(0, 1)),
    st.tuples(st.just("drop"), vip_index),
    st.tuples(st.just("unbind"), vip_index),
    st.tuples(st.just("resync")),
    st.tuples(st.just("pass"), st.lists(st.sampled_from(["bound", "foreign", "failed"]))),
)


def reference(
    effective: dict[IPAddress, Advertisement], bound: set[IPAddress], failed: set[IPAddress]
) -> list[IPAddress]:
    return sorted((v for v in effective if v not in bound and v not in failed), key=address_order)


WANT_FIVE = [("want", i, 0) for i in (4, 0, 13, 2, 7)]


@given(st.lists(op, max_size=40))
# A queued VIP dropped, another wanted, before the next passes.
@example([*WANT_FIVE, ("pass", []), ("drop", 7), ("want", 1, 0), ("pass", []), ("pass", [])])
# A queued VIP changed (still desired), one bound VIP dropped and unbound, then wanted.
@example([*WANT_FIVE, ("pass", []), ("want", 7, 1), ("drop", 0), ("unbind", 0), ("pass", [])])
@example([*WANT_FIVE, ("pass", ["failed"]), ("want", 4, 1), ("resync",), ("pass", [])])
@settings(max_examples=400, deadline=None)
def test_queue_takes_what_a_full_scan_takes(ops: list[tuple[object, ...]]) -> None:
    queue = BindQueue()
    effective: dict[IPAddress, Advertisement] = {}
    bound: set[IPAddress] = set()
    failed: set[IPAddress] = set()
    changed: set[IPAddress] | None = None  # the first pass looks at everything
    for step in ops:
        match step:
            case ("want", int(index), int(med)):
                vip = VIPS[index]
                effective[vip] = Advertisement(vip, RouteAttributes(med=med))
                if changed is not None:
                    changed.add(vip)
            case ("drop", int(index)):
                if effective.pop(VIPS[index], None) is not None and changed is not None:
                    changed.add(VIPS[index])
            case ("unbind", int(index)):
                if VIPS[index] not in effective:
                    bound.discard(VIPS[index])
            case ("resync",):
                failed.clear()
                changed = None
            case ("pass", list(outcomes)):
                expected = reference(effective, bound, failed)
                chunk = queue.take(effective, changed, bound, failed, CHUNK)
                assert chunk == expected[:CHUNK]
                assert len(queue) == len(expected[CHUNK:])
                assert set(queue.held) == set(expected[CHUNK:])
                for vip, outcome in zip(chunk, outcomes + ["bound"] * CHUNK, strict=False):
                    (failed if outcome == "failed" else bound).add(vip)
                changed = set()
