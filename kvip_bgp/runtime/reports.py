"""What the cluster-state thread reports about its decisions, and asks to have written.

Log lines of decision changes; Warning Events and the invalid-annotation metric for
refusals a Service owner can fix; the ``status.loadBalancer.ingress`` this node wants.
Events and statuses are requests only (``write``): the elected writer thread acts.
Functions of the thread's own cache, called by that thread alone (``runtime.cluster``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter
from collections.abc import Callable
from typing import Final

import structlog

from kvip_bgp.domain.model import IPAddress
from kvip_bgp.domain.objects import ServiceInfo
from kvip_bgp.domain.policy import ServiceDecision, SharedVipConflict
from kvip_bgp.domain.reasons import Reason, Refusal, wire
from kvip_bgp.runtime.cache import ClusterCache
from kvip_bgp.runtime.messages import ServiceEvent, StatusWanted, WriteRequest
from kvip_bgp.runtime.metrics import Metrics

log = structlog.get_logger("kvip_bgp.cluster")

DETAILED_LOG_LIMIT: Final = 20  # above this many decision changes in a batch, summarise
Write = Callable[[WriteRequest], None] | None


def want_status(
    c: ClusterCache, write: Write, service: ServiceInfo, decision: ServiceDecision
) -> None:
    """Ask for ``status.loadBalancer.ingress`` when the VIP came from us, not an IPAM.

    A want is not asked again for the same Service object: the writer keeps it
    pending until written (retrying on its own), and a Service decided twice in a
    burst (before and after its slice) would ask twice for one PATCH.

    ``decision`` may be the prepared one (``policy.prepare``): what it wants is what
    every decision concluded from it wants (``status_ips``). Asked again with the same
    Service object and the same decision object as the last want, nothing is looked at
    again: a Service decided before its slice arrived and again after, from the kept
    prepared decision (~1 us of the ~25 us such a Service costs the thread).
    """
    if write is None or decision.vip_source is None:
        return
    last = c.status_wanted.get(service.key)
    if last is not None and last[0] is service and last[2] is decision:
        return  # the same inputs as the want in place: the same want
    ips = status_ips(decision)
    if ips and ips != service.ingress_ips:
        if last is None or last[0] is not service or last[1] != ips:
            write(StatusWanted(str(service.key), ips))
        c.status_wanted[service.key] = (service, ips, decision)
    elif last is not None:
        del c.status_wanted[service.key]
        write(StatusWanted(str(service.key), None))


def status_ips(decision: ServiceDecision) -> tuple[str, ...]:
    """The ``status.loadBalancer.ingress`` IPs ``decision`` asks for; () for none.

    Its VIPs but those refused as addresses, when they came from us (not from the
    status) and it has attributes. The endpoints never change this (their refusals are
    never of an address), so a prepared decision wants what its conclusions want.
    """
    if decision.vip_source == "status.loadBalancer.ingress" or not decision.attributes:
        return ()
    verdicts = decision.verdicts
    if len(verdicts) == 1:  # nearly every Service: no generator
        only = verdicts[0]
        return () if _address_refusal(only.reason) else (vip_text(only.vip),)
    return tuple([vip_text(v.vip) for v in verdicts if not _address_refusal(v.reason)])


def report(c: ClusterCache, write: Write, metrics: Metrics, decision: ServiceDecision) -> None:
    """A Warning Event and a metric for refusals a Service owner can fix."""
    refusal = decision.reason
    invalid = refusal is not None and refusal.reason is Reason.INVALID_ANNOTATION
    refused = [v for v in decision.verdicts if _address_refusal(v.reason)]
    if not invalid and not refused:
        return  # nearly every change: the Service is not even looked up
    service = c.services.get(decision.service)
    if service is None:
        return
    if invalid:
        assert refusal is not None
        metrics.invalid_annotations.labels(refusal.detail).inc()
        _event(write, service, "InvalidAnnotation", decision.message or refusal.wire)
    for verdict in refused:
        _event(write, service, "VIPRefused", f"VIP {verdict.vip} refused: {wire(verdict.reason)}")


def report_conflict(c: ClusterCache, write: Write, conflict: SharedVipConflict) -> None:
    loser = c.services.get(conflict.loser)
    if loser is not None:
        _event(
            write,
            loser,
            "SharedVIPConflict",
            f"VIP {conflict.vip} is shared with {conflict.winner}, whose "
            f"{conflict.attribute} is used (the Service first by namespace/name wins)",
        )


def _event(write: Write, service: ServiceInfo, reason: str, message: str) -> None:
    if write is not None:
        write(ServiceEvent(str(service.key), service.uid, reason, message))


def log_changes(changes: list[ServiceDecision]) -> None:
    """One line per decision change; a summary instead when a burst is large."""
    if len(changes) <= DETAILED_LOG_LIMIT:
        for d in changes:
            if d.reason is None:
                log.info(
                    "cluster.service_announced",
                    service=str(d.service),
                    vip=[str(v) for v in d.announced],
                    source=d.vip_source,
                )
            elif d.reason.reason is Reason.NOT_LOAD_BALANCER:
                continue
            else:
                log.info(
                    "cluster.service_not_announced",
                    service=str(d.service),
                    reason=d.reason.wire,
                    detail=d.message,
                    vip=[f"{v.vip} ({wire(v.reason)})" for v in d.verdicts if not v.announce],
                )
        return
    # A list, not a generator through ``wire()``: one frame per batch, not three per change.
    by_reason = Counter(["announced" if d.reason is None else d.reason.wire for d in changes])
    log.info("cluster.decisions_changed", count=len(changes), by_reason=dict(by_reason))


def vip_text(vip: IPAddress) -> str:
    """``str(vip)``, for IPv4 in C: ``ipaddress`` builds it in Python (~630 vs ~270 ns)."""
    return socket.inet_ntoa(vip.packed) if type(vip) is ipaddress.IPv4Address else str(vip)


def _address_refusal(refusal: Refusal | None) -> bool:
    """Refusals of the VIP itself (not of this node's state): the same on every node."""
    return refusal is not None and refusal.of_address
