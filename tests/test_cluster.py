"""The cluster-state thread on its own: parsed objects in, published VIPs and Events out."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvip_bgp.configfile import load as config_module
from kvip_bgp.domain.model import Advertisement, IPAddress
from kvip_bgp.domain.objects import parse_endpoint_slice, parse_node, parse_service
from kvip_bgp.ops.http import status_document
from kvip_bgp.runtime.cluster import FIRST_PASS_CHUNK, ClusterState
from kvip_bgp.runtime.cluster_status import ClusterStatus
from kvip_bgp.runtime.messages import Changed, Listed, ServiceEvent, WriteRequest
from kvip_bgp.runtime.messages import ClusterStop as Stop
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.reconciler import ReconcilerStatus
from kvip_bgp.runtime.snapshot import Snapshot
from kvip_bgp.testing.objects import endpoint_slice, node, service
from kvip_bgp.testing.scenario import daemon_config

SHARED = "198.51.100.200"


def _vip(index: int) -> str:
    return str(ipaddress.ip_address("10.40.0.1") + index)


def _first_pass(tmp_path: Path, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the thread over one complete listing; record what it published, in order."""
    raw = daemon_config(tmp_path / "kubeconfig")
    raw["vips"] = {"allowed": ["10.40.0.0/16", "198.51.100.0/24"]}
    (tmp_path / "kubeconfig").write_text("unused")
    config = config_module.parse(raw)
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    # ("vip", (vip, advert)), ("write", request) and ("synced", None), in call order.
    trace: list[tuple[str, Any]] = []
    writes: list[WriteRequest] = []

    def write(request: WriteRequest) -> None:
        writes.append(request)
        trace.append(("write", request))

    done = threading.Event()

    def publish(vip: IPAddress, advert: Advertisement | None) -> None:
        trace.append(("vip", (vip, advert)))

    def synced() -> None:
        trace.append(("synced", None))
        done.set()

    metrics = Metrics()
    status = Snapshot(ClusterStatus())
    state = ClusterState(config, events, publish, synced, metrics, status, write)
    kinds = {"Service": parse_service, "EndpointSlice": parse_endpoint_slice}
    events.put(Listed("nodes", (parse_node(node()),), "1"))
    for resource, kind in (("services", "Service"), ("endpointslices", "EndpointSlice")):
        parsed = tuple(kinds[kind](o) for o in objects if o["kind"] == kind)
        events.put(Listed(resource, parsed, "1"))
    thread = threading.Thread(target=state.run, daemon=True)
    thread.start()
    assert done.wait(30), "never synced"
    events.put(Stop())
    thread.join(5)
    return {"trace": trace, "writes": writes, "metrics": metrics, "status": status.read()}


def test_first_pass_publishes_each_vip_once_final_and_before_the_sync(tmp_path: Path) -> None:
    count = 2 * FIRST_PASS_CHUNK + 500
    objects: list[dict[str, Any]] = []
    for index in range(count):
        name = f"svc-{index:05d}"
        objects += [service(name, _vip(index)), endpoint_slice(name, ["node-1"])]
    # One VIP named by the first Service listed and by the last one: it must wait for
    # the last chunk, then carry both communities and the MED of "aaa/first" (the first
    # by namespace/name), and the conflict goes to "zzz/last" once.
    objects[:0] = [
        service(
            "last",
            SHARED,
            namespace="zzz",
            annotations={"kvip-bgp.io/communities": "64512:2", "kvip-bgp.io/med": "20"},
        ),
        endpoint_slice("last", ["node-1"], namespace="zzz"),
    ]
    objects += [
        service(
            "first",
            SHARED,
            namespace="aaa",
            annotations={"kvip-bgp.io/communities": "64512:1", "kvip-bgp.io/med": "10"},
        ),
        endpoint_slice("first", ["node-1"], namespace="aaa"),
    ]
    result = _first_pass(tmp_path, objects)
    trace = result["trace"]
    kinds = [kind for kind, _ in trace]
    assert kinds[-1] == "synced"
    # Chunked: routes were published while later Services were still being decided
    # (each decision asks for its status write); a single pass would publish after all.
    assert kinds.index("vip") < len(kinds) - 1 - kinds[::-1].index("write")
    published = [value for kind, value in trace if kind == "vip"]
    # Every VIP once, with its final value: nothing partial to overwrite later.
    assert len(published) == count + 1
    final = dict(published)
    assert len(final) == count + 1
    shared = final[ipaddress.ip_address(SHARED)]
    assert shared is not None
    assert {"64512:1", "64512:2"} <= {str(c) for c in shared.attributes.communities}
    assert shared.attributes.med == 10
    assert shared.sources == ("aaa/first", "zzz/last")
    conflicts = [
        w
        for w in result["writes"]
        if isinstance(w, ServiceEvent) and w.reason == "SharedVIPConflict"
    ]
    assert [(c.service, "aaa/first" in c.message) for c in conflicts] == [("zzz/last", True)]


def test_first_pass_of_a_small_cluster_is_one_chunk(tmp_path: Path) -> None:
    objects = [service("web", _vip(0)), endpoint_slice("web", ["node-1"])]
    trace = _first_pass(tmp_path, objects)["trace"]
    assert [kind for kind, _ in trace if kind != "write"] == ["vip", "synced"]


def test_refusals_reach_events_metrics_and_status_in_their_wire_form(tmp_path: Path) -> None:
    objects = [
        service("bad", _vip(0), annotations={"kvip-bgp.io/med": "ten"}),
        endpoint_slice("bad", ["node-1"]),
        service("evil", "203.0.113.5"),
        endpoint_slice("evil", ["node-1"]),
        service("loop", "127.0.0.1"),
        endpoint_slice("loop", ["node-1"]),
        service("idle", _vip(1)),
        service("web", _vip(2)),
        endpoint_slice("web", ["node-1"]),
    ]
    result = _first_pass(tmp_path, objects)
    events = {
        (w.service, w.reason, w.message) for w in result["writes"] if isinstance(w, ServiceEvent)
    }
    assert ("default/evil", "VIPRefused", "VIP 203.0.113.5 refused: outside-allowed-ranges") in (
        events
    )
    assert (
        "default/loop",
        "VIPRefused",
        "VIP 127.0.0.1 refused: forbidden-address:loopback",
    ) in events
    invalid = [e for e in events if e[1] == "InvalidAnnotation"]
    assert [e[0] for e in invalid] == ["default/bad"]
    assert invalid[0][2].startswith("kvip-bgp.io/med: ")
    registry = result["metrics"].registry
    refused = {
        reason: registry.get_sample_value("kvip_bgp_services_refused", {"reason": reason})
        for reason in (
            "invalid-annotation",
            "outside-allowed-ranges",
            "forbidden-address",
            "no-ready-endpoint",
            "node-excluded",
        )
    }
    assert refused == {
        "invalid-annotation": 1,
        "outside-allowed-ranges": 1,
        "forbidden-address": 1,
        "no-ready-endpoint": 1,
        "node-excluded": 0,
    }
    assert (
        registry.get_sample_value(
            "kvip_bgp_invalid_annotations_total", {"annotation": "kvip-bgp.io/med"}
        )
        == 1
    )
    status = result["status"]
    # The snapshot is unsorted (cheap under churn); /status lists by namespace/name.
    backwards = dataclasses.replace(status, decisions=status.decisions[::-1])
    document = status_document(ReconcilerStatus(), backwards)
    names = [s["service"] for s in document["services"]]
    assert names == sorted(names)
    reasons = {
        s["service"]: (s["reason"], [v["reason"] for v in s["vips"]]) for s in document["services"]
    }
    assert reasons == {
        "default/bad": ("invalid-annotation:kvip-bgp.io/med", []),
        "default/evil": ("outside-allowed-ranges", ["outside-allowed-ranges"]),
        "default/idle": ("no-ready-endpoint", ["no-ready-endpoint"]),
        "default/loop": ("forbidden-address:loopback", ["forbidden-address:loopback"]),
        "default/web": (None, [None]),
    }


def _synced_thread(
    tmp_path: Path,
    count: int,
    gather: float,
    bulk_gather: float | None = None,
    on_bulk: Callable[[bool], None] = lambda bulk: None,
) -> tuple[queue.SimpleQueue[Any], list[tuple[float, IPAddress]], Callable[[], None]]:
    """A synced thread over ``count`` announced Services; its publishes, timed."""
    raw = daemon_config(tmp_path / "kubeconfig")
    raw["vips"] = {"allowed": ["10.40.0.0/16"]}
    (tmp_path / "kubeconfig").write_text("unused")
    events: queue.SimpleQueue[Any] = queue.SimpleQueue()
    published: list[tuple[float, IPAddress]] = []
    done = threading.Event()
    state = ClusterState(
        config_module.parse(raw),
        events,
        lambda vip, _advert: published.append((time.monotonic(), vip)),
        done.set,
        Metrics(),
        Snapshot(ClusterStatus()),
        gather=gather,
        bulk_gather=bulk_gather,
        on_bulk=on_bulk,
    )
    names = [f"svc-{index:05d}" for index in range(count)]
    events.put(Listed("nodes", (parse_node(node()),), "1"))
    events.put(
        Listed(
            "services", tuple(parse_service(service(n, _vip(i))) for i, n in enumerate(names)), "1"
        )
    )
    slices = tuple(parse_endpoint_slice(endpoint_slice(n, ["node-1"])) for n in names)
    events.put(Listed("endpointslices", slices, "1"))
    thread = threading.Thread(target=state.run, daemon=True)
    thread.start()
    assert done.wait(30), "never synced"

    def stop() -> None:
        events.put(Stop())
        thread.join(5)

    return events, published, stop


def _withdraw(events: queue.SimpleQueue[Any], index: int) -> None:
    """The Service's only endpoint goes: its VIP is published again (withdrawn)."""
    events.put(_withdrawal(index))


def _withdrawal(index: int) -> Changed:
    slice_ = parse_endpoint_slice(endpoint_slice(f"svc-{index:05d}", []))
    return Changed("endpointslices", "MODIFIED", slice_)


def _wait_for(published: list[Any], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(published) < count and time.monotonic() < deadline:
        time.sleep(0.002)
    assert len(published) >= count, f"{len(published)} of {count} published"


def test_a_stream_of_events_is_taken_in_batches_and_a_lone_event_at_once(
    tmp_path: Path,
) -> None:
    gather = 0.2
    events, published, stop = _synced_thread(tmp_path, 30, gather)
    try:
        time.sleep(gather)  # quiet: the next event must not wait for a gathering
        published.clear()
        sent = time.monotonic()
        _withdraw(events, 0)
        _wait_for(published, 1)
        assert published[0][0] - sent < gather / 2
        # One event every 20 ms for ~0.5 s: taken one batch per `gather`, not one each.
        time.sleep(gather)
        published.clear()
        for index in range(1, 26):
            _withdraw(events, index)
            time.sleep(0.02)
        _wait_for(published, 25)
        times = [at for at, _vip in published]
        batches = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 0.01)
        assert batches <= 8, f"{batches} batches for 25 events"
        assert sorted(str(v) for _at, v in published) == sorted(_vip(i) for i in range(1, 26))
    finally:
        stop()


def test_after_a_batch_of_bulk_route_changes_the_next_gathers_longer(tmp_path: Path) -> None:
    """100 withdrawals in one 0.1 s gather are 1,000 route changes a second, bulk
    (``runtime.pace.BULK_RATE``): the next batch waits ``bulk_gather``, and the streams
    are told. One change after that is churn again: the batch after it waits only
    ``gather``, and the streams are told that too."""
    gather, bulk = 0.1, 0.6
    turns: list[bool] = []  # what the stream threads are told (kube.threads)
    events, published, stop = _synced_thread(tmp_path, 200, gather, bulk, turns.append)
    bulk_batch = [_withdrawal(index) for index in range(1, 101)]
    try:
        time.sleep(gather)
        published.clear()
        _withdraw(events, 0)  # a lone change, taken at once; the thread then gathers
        _wait_for(published, 1)
        for event in bulk_batch:  # all waiting when the gather ends: one batch
            events.put(event)
        _wait_for(published, 101)
        bulk_done = published[-1][0]
        _withdraw(events, 101)
        _wait_for(published, 102)
        after_bulk = published[-1][0]
        assert after_bulk - bulk_done >= bulk - gather, "the change after bulk did not wait"
        _withdraw(events, 102)
        _wait_for(published, 103)
        assert published[-1][0] - after_bulk < bulk - gather, "churn waited as long as bulk"
        assert turns == [True, False]
    finally:
        stop()
