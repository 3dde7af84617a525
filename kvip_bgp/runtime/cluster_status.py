"""The cluster thread's frozen view for /status and explain, and the refusal metrics."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from kvip_bgp.domain.objects import NodeInfo
from kvip_bgp.domain.policy import ServiceDecision
from kvip_bgp.domain.reasons import POLICY_REASONS
from kvip_bgp.runtime.cache import ClusterCache
from kvip_bgp.runtime.metrics import Metrics
from kvip_bgp.runtime.snapshot import Snapshot


@dataclass(frozen=True)
class ClusterStatus:
    """Frozen view of the decisions for /status and explain."""

    decisions: tuple[ServiceDecision, ...] = ()  # in no particular order
    synced: bool = False
    node: NodeInfo | None = None


def publish_status(c: ClusterCache, metrics: Metrics, status: Snapshot[ClusterStatus]) -> None:
    """The frozen view for /status and the refusal metrics, at most every 0.5 s."""
    c.status_dirty = False
    c.status_published_at = time.monotonic()
    refused = Counter(d.reason.reason for d in c.decisions.values() if d.reason is not None)
    for reason in POLICY_REASONS:
        metrics.services_refused.labels(reason.value).set(refused.get(reason, 0))
    status.publish(
        ClusterStatus(
            # Unsorted: the reader sorts (/status is read rarely, this runs every
            # 0.5 s under churn and the sort was most of its cost).
            decisions=tuple(c.decisions.values()),
            synced=True,
            node=c.node,
        )
    )
