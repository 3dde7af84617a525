"""Kubernetes objects as the API server stores them: Service, EndpointSlice, Node.

One builder per kind, so the unit tests, the lab, the bench and the soak run feed the
speaker the same shapes; each keyword turns on one field a test needs to vary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

NODE_NAME = "node-1"
NODE_V4 = "192.0.2.1"  # the lab node's address (netlab.Lab.NODE_V4)
VIP_ANNOTATION = "kvip-bgp.io/loadbalancerIPs"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def service(
    name: str,
    vip: str | None = None,
    *,
    namespace: str = "default",
    annotations: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    type: str = "LoadBalancer",
    traffic_policy: str | None = "Cluster",
    lb_class: str | None = None,
    spec_ip: str | None = None,
    cluster_ip: str | None = None,
    uid: str | None = None,
    resource_version: str | None = None,
    ingress: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A Service; ``vip`` becomes the VIP annotation, ``traffic_policy=None`` leaves
    ``externalTrafficPolicy`` out, ``ingress`` adds a ``status.loadBalancer``."""
    notes = dict(annotations or {})
    if vip is not None:
        notes[VIP_ANNOTATION] = vip
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": notes}
    if labels is not None:
        metadata["labels"] = dict(labels)
    if uid is not None:
        metadata["uid"] = uid
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    spec: dict[str, Any] = {
        "type": type,
        "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}],
        "selector": {"app": name},
    }
    if traffic_policy is not None:
        spec["externalTrafficPolicy"] = traffic_policy
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if lb_class is not None:
        spec["loadBalancerClass"] = lb_class
    if spec_ip is not None:
        spec["loadBalancerIP"] = spec_ip
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": metadata}
    obj["spec"] = spec
    if ingress is not None:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return obj


def endpoint(
    node: str | None,
    *,
    address: str = "10.244.1.5",
    ready: bool | None = True,
    serving: bool | None = None,
    terminating: bool | None = None,
) -> dict[str, Any]:
    """One endpoint of a slice; a condition given as ``None`` is left out, as the API does."""
    conditions = {
        k: v
        for k, v in (("ready", ready), ("serving", serving), ("terminating", terminating))
        if v is not None
    }
    result: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if node is not None:
        result["nodeName"] = node
    return result


def endpoint_slice(
    service_name: str,
    nodes: Sequence[str | tuple[str, bool]] = (),
    *,
    namespace: str = "default",
    suffix: str = "a",
    endpoints: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """An EndpointSlice with one endpoint per node (``(node, ready)`` or ``node``), or
    with ``endpoints`` as given (see ``endpoint``)."""
    if endpoints is None:
        endpoints = []
        for index, entry in enumerate(nodes):
            node_name, ready = (entry, True) if isinstance(entry, str) else entry
            endpoints.append(
                endpoint(
                    node_name,
                    address=f"10.244.{index // 250}.{index % 250 + 1}",
                    ready=ready,
                    serving=ready,
                    terminating=False,
                )
            )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "endpoints": [*endpoints],
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],  # the API sets the name
    }


def node(
    name: str = NODE_NAME,
    labels: Mapping[str, str] | None = None,
    *,
    addresses: Sequence[str] = (NODE_V4,),
    hostname_address: bool = False,
    unschedulable: bool = False,
    network_unavailable: str | None = None,
) -> dict[str, Any]:
    """A ready Node; ``labels`` replaces the default ``kubernetes.io/hostname`` label."""
    conditions = [{"type": "Ready", "status": "True"}]
    if network_unavailable is not None:
        conditions.append({"type": "NetworkUnavailable", "status": network_unavailable})
    node_addresses = [{"type": "InternalIP", "address": a} for a in addresses]
    if hostname_address:
        node_addresses.append({"type": "Hostname", "address": name})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {"kubernetes.io/hostname": name})},
        "spec": {"unschedulable": True} if unschedulable else {},
        "status": {"addresses": node_addresses, "conditions": conditions},
    }
