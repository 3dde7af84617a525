"""The Kubernetes side's hand-overs between threads.

An explain answer crosses back from the cluster thread in a one-shot box.
"""

from __future__ import annotations

import queue
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from kvip_bgp.configfile.load import load
from kvip_bgp.domain.explain import Explanation
from kvip_bgp.domain.objects import ObjectKey
from kvip_bgp.runtime.cluster import ClusterState, ClusterStatus
from kvip_bgp.runtime.messages import ClusterStop, ExplainRequest, ReplyBox
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot


def kube_config(tmp_path: Path, kubeconfig: Path) -> Any:
    path = tmp_path / "kvip-bgp.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            node_name: node-1
            bgp:
              asn: 64512
              router_id: 192.0.2.1
              peers: [{{address: 192.0.2.2, asn: 64500}}]
            vips: {{allowed: ["198.51.100.0/24"], interface: null}}
            kubernetes: {{enabled: true, kubeconfig: {str(kubeconfig)!r}}}
            """
        )
    )
    return load(path)


# -- explain: the reply box -------------------------------------------------------------


def test_reply_box_is_written_once_and_read_once() -> None:
    box: ReplyBox[str] = ReplyBox()
    assert box.get(0.05) is None  # nothing yet: the asker gives up after its timeout
    box.put("answer")
    assert box.get(0.05) == "answer"
    with pytest.raises(RuntimeError, match="written twice"):
        box.put("another")


def test_the_cluster_thread_answers_an_explain_request(tmp_path: Path) -> None:
    config = kube_config(tmp_path, tmp_path / "unused-kubeconfig")
    events: queue.Queue[Any] = queue.Queue()
    cluster = ClusterState(
        config, events, lambda vip, advert: None, lambda: None, Metrics(), Snapshot(ClusterStatus())
    )
    thread = threading.Thread(target=cluster.run, name="cluster-state", daemon=True)
    thread.start()
    try:
        box: ReplyBox[Explanation] = ReplyBox()
        events.put(ExplainRequest(ObjectKey("default", "web"), box))
        answer = box.get(5)
        assert isinstance(answer, Explanation)
    finally:
        events.put(ClusterStop())
        thread.join(5)
