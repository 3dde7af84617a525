"""A ``coordination.k8s.io`` Lease: at most one holder among the nodes, taken and renewed.

The status writer holds one so that 80 nodes do not all write the same status, and
allocates addresses while it holds it. A ``Lease`` is used by one thread only (the
one that renews it), through that thread's own API client.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from typing import Any, Final

from kvip_bgp.kube.client import ApiClient, ApiException, api_path, request_json

LEASES: Final = "/apis/coordination.k8s.io/v1/namespaces/{}/leases"


@dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str = "kvip-bgp-status-writer"
    duration: int = 15
    renew_every: float = 5.0


def now_micro() -> str:
    """The current time as the API's MicroTime (whole seconds are enough here)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None

    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None


class Lease:
    """Take or renew the Lease ``settings.name`` for ``identity``; say whether we hold it."""

    def __init__(self, api: ApiClient, identity: str, settings: LeaseSettings) -> None:
        self._api = api
        self.identity = identity
        self.settings = settings
        # The last successful try_acquire took the Lease from another holder (expired).
        self.taken_over = False

    def try_acquire(self) -> bool:
        """Create, renew or take over (once expired) the Lease; False if another holds it.

        Call it every ``settings.renew_every`` seconds. A conflict (409) means another
        node wrote it first: not ours this round. Other API errors propagate.
        """
        lease = self.settings
        self.taken_over = False
        now = now_micro()
        leases = api_path(LEASES, lease.namespace)
        this_lease = api_path(LEASES + "/{}", lease.namespace, lease.name)
        try:
            current = request_json(self._api, "GET", this_lease)
        except ApiException as error:
            if error.status != 404:
                raise
            body: Any = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": lease.name, "namespace": lease.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": lease.duration,
                    "acquireTime": now,
                    "renewTime": now,
                    "leaseTransitions": 0,
                },
            }
            try:
                request_json(self._api, "POST", leases, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False
                raise
            return True
        spec = current.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse_time(spec.get("renewTime"))
        duration = spec.get("leaseDurationSeconds") or lease.duration
        expired = renewed is None or renewed + float(duration) < time.time()
        if holder != self.identity and not expired:
            return False
        spec = dict(spec)
        if holder != self.identity:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        spec.update(
            {
                "holderIdentity": self.identity,
                "renewTime": now,
                "leaseDurationSeconds": lease.duration,
            }
        )
        current["spec"] = spec
        try:
            request_json(self._api, "PUT", this_lease, current)
        except ApiException as error:
            if error.status == 409:  # someone else renewed or took it first
                return False
            raise
        self.taken_over = holder is not None and holder != self.identity
        return True
